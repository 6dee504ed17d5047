"""How many worker pods the running wave asks for: a pure policy.

The wave's Indexed Job runs ``parallelism`` pods at once. The policy:

- follow the backlog: the tasks not yet done, within ``workers.min .. workers.max``;
- never over-ask: grow to at most ``ready + maxPending``, so a cluster without room is
  not flooded with pods that only wait (a new pod is asked for when another starts);
- never lower below the pods already active: lowering makes the Job controller delete
  running pods, losing their work;
- change at most once every ``min_interval`` seconds, so the Job is not patched on
  every pod event.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class WaveLoad:
    """What the controller observes of a running wave."""

    total: int  # tasks in the wave
    succeeded: int  # tasks done
    active: int  # pods not finished (pending or running)
    ready: int  # pods running


@dataclass(frozen=True)
class Workers:
    min: int
    max: int
    max_pending: int


@dataclass(frozen=True)
class Scaling:
    parallelism: int
    reason: str
    changed: bool
    retry_after: float | None = None  # when a held change may be made


def scale(
    load: WaveLoad,
    workers: Workers,
    current: int,
    seconds_since_change: float | None,
    min_interval: float = MIN_INTERVAL_SECONDS,
) -> Scaling:
    """The parallelism the wave's Job should have now, and why."""
    remaining = max(load.total - load.succeeded, 0)
    if remaining == 0:
        return Scaling(current, "all tasks done", False)
    want = min(remaining, workers.max)
    reason = "backlog" if want == remaining else "capped by workers.max"
    # Ask for more pods only as others start: at most maxPending waiting at once.
    room = max(load.ready + workers.max_pending, min(workers.min, remaining), 1)
    if want > room:
        want = room
        reason = "waiting for pods to start (workers.maxPending)"
    if want < load.active and want < current:
        want = min(current, load.active)  # lowering would delete running pods
        reason = "keeping running pods"
    if want == current:
        return Scaling(current, reason, False)
    if seconds_since_change is not None and seconds_since_change < min_interval:
        wait = min_interval - seconds_since_change
        return Scaling(current, f"{reason} (held {wait:.0f}s)", False, retry_after=wait)
    return Scaling(want, reason, True)
