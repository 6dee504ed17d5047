"""The resource's status conditions: the types this controller sets, the metav1 reason
format, and a set of conditions whose lastTransitionTime moves only with their status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kubemr.spec import MAX_CONDITIONS, Condition, MapReduceJobStatus

# Condition types, one entry each in status.conditions.
COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED_CONDITION = "Suspended"
CAPACITY = "CapacityConstrained"
BLOCKED = "WorkersBlocked"

OWN_CONDITIONS = frozenset({COMPLETE, FAILED, SUSPENDED_CONDITION, CAPACITY, BLOCKED})
"""The types above: past :data:`~kubemr.spec.MAX_CONDITIONS`, other types are dropped."""

_REASON_CHARS = re.compile(r"[^A-Za-z0-9_,:]")


def condition_reason(text: str | None, default: str = "Unknown") -> str:
    """``text`` as a metav1.Condition reason (CamelCase word), or ``default``."""
    word = _REASON_CHARS.sub("", text or "")
    word = word.lstrip("0123456789_,:").rstrip(",:")
    return word[:1024] if word else default


def is_true(status: MapReduceJobStatus, kind: str) -> bool:
    """Whether ``status`` has a condition of type ``kind`` that is True."""
    return any(c.type == kind and c.status == "True" for c in status.conditions)


class Conditions:
    """The conditions of one reconcile: those of the previous status, as set since.

    Args:
        previous: the previous status' conditions, in order.
        generation: the spec generation a condition set now is observed at.
        now: the lastTransitionTime of a condition whose status moves now.
    """

    def __init__(self, previous: Sequence[Condition], generation: Any, now: datetime) -> None:
        self.previous = list(previous)
        self.generation = generation
        self.now = now
        self.by_type: dict[str, Condition] = {c.type: c for c in self.previous}

    def __contains__(self, kind: str) -> bool:
        return kind in self.by_type

    def get(self, kind: str) -> Condition | None:
        return self.by_type.get(kind)

    def set(self, kind: str, status: str, reason: str, message: str) -> bool:
        """Set a condition; its lastTransitionTime moves only when its status does.
        Returns whether it moved (or is new)."""
        before = self.by_type.get(kind)
        moved = before is None or before.status != status
        self.by_type[kind] = Condition(
            type=kind,
            status=status,  # type: ignore[arg-type]
            observed_generation=self.generation,
            last_transition_time=self.now
            if moved or before is None
            else before.last_transition_time,
            reason=reason,
            message=message,
        )
        return moved

    def listing(self) -> list[Condition]:
        """The conditions to write: in the previous order, new ones after, at most
        :data:`~kubemr.spec.MAX_CONDITIONS` (ours are kept)."""
        order = [c.type for c in self.previous]
        order += [k for k in self.by_type if k not in order]
        conditions = [self.by_type[k] for k in order]
        if len(conditions) > MAX_CONDITIONS:
            extra = [c for c in conditions if c.type not in OWN_CONDITIONS]
            drop = {c.type for c in extra[: len(conditions) - MAX_CONDITIONS]}
            conditions = [c for c in conditions if c.type not in drop]
        return conditions
