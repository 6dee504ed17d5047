"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Every write goes through a read and carries the read's resourceVersion, so of two
candidates writing at once one gets 409 Conflict: two never both hold the lease.

A lease held by someone else counts as expired when its record (holder, renewTime, ...)
has not changed for ``leaseDurationSeconds`` *as measured on this process's monotonic
clock* since we first saw that record. ``renewTime`` is written for people and tools,
but not compared with our wall clock: clocks of two machines differ, and a candidate
whose clock runs ahead would otherwise take a live lease. The cost is that a candidate
starting after the holder died waits up to one lease duration even if ``renewTime`` is
old. A released lease (empty ``holderIdentity``) is taken at once.

The leader renews every ``renew_seconds``; when no renewal has succeeded for
``renew_deadline`` seconds, or the lease shows another holder, it calls ``on_lost`` and
stops for good (the controller exits and is restarted as a fresh candidate). As
``renew_deadline < lease_seconds``, the old leader gives up before anyone else can take
over.

Example:
    elector = LeaderElector(api, "kubemr-controller", "kubemr-system", on_lost=exit_now)
    elector.start()
    if elector.wait_until_leader(timeout=60):
        ...  # lead
    elector.stop(release=True)
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .informer import LEASES, Obj, RawApi

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Callback = Callable[[], None]


def default_identity() -> str:
    """``hostname_pid_random``: unique per process, readable in ``kubectl get lease``."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def micro_time(t: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease's spec that election reads."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Mapping[str, Any] | None) -> LeaseRecord:
        spec = (lease or {}).get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def held_spec(
    record: LeaseRecord, identity: str, now: float, duration_seconds: int
) -> dict[str, Any]:
    """The spec to write so that ``identity`` holds the lease from ``now`` (wall seconds):
    a renewal keeps ``acquireTime``; taking over an existing lease sets it and counts a
    transition (a new lease starts at 0)."""
    if record.holder == identity and record.acquire_time:
        acquired, transitions = record.acquire_time, record.transitions
    else:
        acquired = micro_time(now)
        existed = bool(record.holder or record.acquire_time)
        transitions = record.transitions + 1 if existed else record.transitions
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": acquired,
        "renewTime": micro_time(now),
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now: float) -> dict[str, Any]:
    """The spec that gives the lease up: no holder, and a 1 s duration for any candidate
    that still compares times."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": record.transitions,
    }


class LeaderElector:
    """Campaigns for, holds and renews one Lease in a daemon thread.

    Args:
        api: the raw API (:class:`~kubemr.controller.informer.KubeApi`).
        name, namespace: the Lease.
        identity: this candidate; :func:`default_identity` by default.
        lease_seconds: how long a holder's claim lasts without renewal.
        renew_seconds: the period of renewals, and of attempts while not leading.
        renew_deadline: a leader that could not renew for this long gives up.
        on_started_leading, on_lost: called from the elector's thread.
        clock: monotonic seconds; wall_clock: epoch seconds for the timestamps written.
    """

    def __init__(
        self,
        api: RawApi,
        name: str,
        namespace: str,
        *,
        identity: str | None = None,
        lease_seconds: float = 15.0,
        renew_seconds: float = 2.0,
        renew_deadline: float = 10.0,
        on_started_leading: Callback | None = None,
        on_lost: Callback | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if not 0 < renew_seconds < renew_deadline < lease_seconds:
            raise ValueError(
                "need 0 < renew_seconds < renew_deadline < lease_seconds, got "
                f"{renew_seconds}, {renew_deadline}, {lease_seconds}"
            )
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.renew_deadline = renew_deadline
        self.on_started_leading = on_started_leading
        self.on_lost = on_lost
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._leader = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        # What we last read or wrote, and when (monotonic) that record first appeared.
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    # -- state -----------------------------------------------------------------------------
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def lost(self) -> bool:
        """True once leadership was lost (this elector never campaigns again)."""
        return self._lost.is_set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def holder(self) -> str:
        """The holder in the last record seen ('' when free or unknown)."""
        with self._lock:
            return self._observed.holder if self._observed else ""

    def wait_until_leader(self, timeout: float | None = None) -> bool:
        """Block until this instance leads, it stops, or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._leader.is_set():
            if self._stop.is_set() or self._lost.is_set():
                return False
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._leader.wait(0.2 if remaining is None else min(0.2, remaining))
        return True

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float = 5.0) -> None:
        """Stop campaigning or renewing; with ``release``, give the lease up so the next
        candidate takes over at once. Call it after this instance stopped acting."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if release:
            try:
                self.release()
            except Exception:
                log.warning("releasing the lease failed", exc_info=True)
        self._leader.clear()

    def run(self) -> None:
        """Campaign until leading, then renew until stopped or lost."""
        while not self._stop.is_set():
            if self._attempt(timeout=self.renew_deadline):
                # Set before looking at _stop: a stop() racing this win must still see
                # a lease to release.
                self._leader.set()
                break
            # Jitter keeps candidates that started together from colliding each time.
            self._stop.wait(self.renew_seconds * random.uniform(1.0, 1.2))
        if not self._leader.is_set() or self._stop.is_set():
            return
        log.info("became leader", extra={"lease": self.name, "identity": self.identity})
        self._call(self.on_started_leading)
        while not self._stop.wait(self.renew_seconds):
            deadline = self._last_renew + self.renew_deadline
            if self._attempt(timeout=max(0.5, deadline - self._clock())):
                continue
            with self._lock:
                taken = self._observed is not None and self._observed.holder not in (
                    "",
                    self.identity,
                )
            if self._stop.is_set():
                return
            if taken or self._clock() >= deadline:
                self._leader.clear()
                self._lost.set()
                log.error(
                    "lost the lease",
                    extra={
                        "lease": self.name,
                        "identity": self.identity,
                        "holder": self.holder,
                        "reason": "taken" if taken else "renew deadline passed",
                    },
                )
                self._call(self.on_lost)
                return

    def release(self) -> bool:
        """Give the lease up if this instance holds it; True when it did."""
        with self._lock:
            if not self._leader.is_set():
                return False
            self._leader.clear()
            path = LEASES.object_path(self.namespace, self.name)
            lease = self.api.request("GET", path, timeout=5.0)
            record = LeaseRecord.of(lease)
            if record.holder != self.identity:
                return False
            lease["spec"] = released_spec(record, self._wall())
            self.api.request("PUT", path, body=lease, timeout=5.0)
            log.info("released the lease", extra={"lease": self.name, "identity": self.identity})
            return True

    # -- one round -------------------------------------------------------------------------
    def try_acquire_or_renew(self, timeout: float = 10.0) -> bool:
        """One read-then-write round: True when this instance holds the lease after it.
        ``timeout`` bounds the round, not each request. Raises the API's errors other
        than 404 (absent) and 409 (lost a race)."""
        with self._lock:
            started = self._clock()

            def left() -> float:
                return max(0.1, started + timeout - self._clock())

            path = LEASES.object_path(self.namespace, self.name)
            try:
                lease: Obj | None = self.api.request("GET", path, timeout=left())
            except ApiException as exc:
                if exc.status != 404:
                    raise
                lease = None
            now = self._wall()
            duration = max(1, round(self.lease_seconds))
            if lease is None:
                record = LeaseRecord("", 0, None, None, 0)
                body = {
                    "apiVersion": LEASES.api_version,
                    "kind": LEASES.kind,
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": held_spec(record, self.identity, now, duration),
                }
                try:
                    created = self.api.request(
                        "POST", LEASES.collection_path(self.namespace), body=body, timeout=left()
                    )
                except ApiException as exc:
                    if exc.status == 409:  # another candidate created it first
                        return False
                    raise
                self._observe(LeaseRecord.of(created))
                self._last_renew = started
                return True
            record = LeaseRecord.of(lease)
            self._observe(record)
            if record.holder and record.holder != self.identity and not self._expired(record):
                return False
            lease["spec"] = held_spec(record, self.identity, now, duration)
            try:
                # The body keeps the read's metadata.resourceVersion: a write in between
                # makes this a 409.
                updated = self.api.request("PUT", path, body=lease, timeout=left())
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            self._observe(LeaseRecord.of(updated))
            self._last_renew = started
            return True

    def _attempt(self, timeout: float) -> bool:
        try:
            return self.try_acquire_or_renew(timeout=timeout)
        except Exception as exc:
            log.warning(
                "lease request failed",
                extra={"lease": self.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False

    def _observe(self, record: LeaseRecord) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()

    def _expired(self, record: LeaseRecord) -> bool:
        return self._clock() >= self._observed_at + record.duration_seconds

    def _call(self, callback: Callback | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("lease callback failed", extra={"lease": self.name})
