"""How many worker pods the running wave asks for: a pure policy.

The wave's Indexed Job runs ``parallelism`` pods at once. The policy:

- follow the backlog: the tasks not yet done, within ``workers.min .. workers.max``;
- never over-ask: grow to at most ``scheduled + maxPending``, so that at most
  ``maxPending`` of the wave's pods wait for a node at once and a cluster without room is
  not flooded with pods that only wait. A pod placed on a node and still starting does
  not hold the wave back (a wave whose tasks are short always has some pods starting);
  a pod not placed yet, or that no node can take, does;
- never lower below the pods already active: lowering makes the Job controller delete
  running pods, losing their work; nor below what was asked for while the backlog wants
  more (pods between one task and the next are not a reason to shrink);
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
    scheduled: int  # pods not finished that are on a node (starting or running)


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
    # Ask for more pods only as others find a node: at most maxPending waiting at once.
    room = max(load.scheduled + workers.max_pending, min(workers.min, remaining), 1)
    if want > room:
        # What was asked for already stays asked for: its pods may not exist yet.
        want = max(room, min(want, current))
        reason = "waiting for pods to be scheduled (workers.maxPending)"
    if want < load.active and want < current:
        want = min(current, load.active)  # lowering would delete running pods
        reason = "keeping running pods"
    if want == current:
        return Scaling(current, reason, False)
    if seconds_since_change is not None and seconds_since_change < min_interval:
        wait = min_interval - seconds_since_change
        return Scaling(current, f"{reason} (held {wait:.0f}s)", False, retry_after=wait)
    return Scaling(want, reason, True)
