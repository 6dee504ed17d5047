"""What a reconcile asks for: the Job changes, Events and deletion it wants done, in an
:class:`Outcome` with the status to write, and the annotations those Job changes leave on
the Jobs. Plain data: :class:`kubemr.controller.main.JobController` carries it out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kubemr.controller.observed import Obj
from kubemr.executors.k8s.manifests import GROUP

SCALED_AT = f"{GROUP}/scaled-at"
"""Annotation on a wave's Job: when the controller last changed its parallelism, so the
rate limit of :func:`kubemr.controller.scaling.scale` survives a restart."""
SUSPENDED = f"{GROUP}/suspended"
"""Annotation on a Job the controller suspended (``spec.suspend``): only such Jobs are
resumed by it, so a Job suspended by someone else (Kueue, before admission) stays so."""


@dataclass(frozen=True)
class CreateJob:
    """Create (server-side apply) the Job of a stage."""

    manifest: Obj

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class ScaleJob:
    """Set a wave Job's parallelism and its :data:`SCALED_AT` annotation to ``scaled_at``."""

    name: str
    parallelism: int
    scaled_at: str


@dataclass(frozen=True)
class SuspendJob:
    """Set a Job's ``spec.suspend``, and its :data:`SUSPENDED` annotation with it."""

    name: str
    suspend: bool


@dataclass(frozen=True)
class Event:
    """A core/v1 Event about the resource."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class DeleteResource:
    """Delete the resource itself (``ttlSecondsAfterFinished`` passed)."""

    reason: str


Action = CreateJob | ScaleJob | SuspendJob | Event | DeleteResource


@dataclass(frozen=True)
class Outcome:
    """The actions to take, in order (Job changes, then Events once the status is written,
    then the resource's deletion), the status to write (None: leave it), and when to look
    again without an event."""

    actions: tuple[Action, ...] = ()
    status: Obj | None = None
    requeue_after: float | None = None

    def of(self, kind: type[Any]) -> list[Any]:
        """The actions of one kind: ``outcome.of(CreateJob)``."""
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def job_actions(self) -> list[CreateJob | ScaleJob | SuspendJob]:
        return [a for a in self.actions if isinstance(a, CreateJob | ScaleJob | SuspendJob)]

    @property
    def events(self) -> list[Event]:
        return self.of(Event)

    @property
    def delete_resource(self) -> bool:
        return any(isinstance(a, DeleteResource) for a in self.actions)


def event_name(resource: Obj, event: Event) -> str:
    """A deterministic name for an Event: the same fact about the same resource is one
    Event however many reconciles report it."""
    meta = resource.get("metadata") or {}
    digest = hashlib.sha256(
        "\0".join((str(meta.get("uid")), event.type, event.reason, event.message)).encode()
    ).hexdigest()[:16]
    return f"{meta.get('name')}.{digest}"
