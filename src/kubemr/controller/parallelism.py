"""How many pods a stage's Job runs: the policy of :func:`kubemr.controller.scaling.scale`
applied to what is observed of the wave (its Job, its pods, when it was last scaled).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kubemr.controller.actions import SCALED_AT
from kubemr.controller.observed import Obj, PodView, parse_time, seconds
from kubemr.controller.scaling import Scaling, WaveLoad, Workers, scale
from kubemr.coordinator import Stage
from kubemr.spec import WorkerRange


def initial_parallelism(stage: Stage, workers: WorkerRange, queue: str | None) -> tuple[int, str]:
    """The parallelism a stage's Job is created with, and why."""
    if not stage.is_wave:
        return 1, "one task"
    if queue:
        return min(stage.tasks, workers.max), f"admitted through Kueue queue {queue}"
    decision = scale(
        WaveLoad(total=stage.tasks, succeeded=0, active=0, ready=0, scheduled=0),
        Workers(workers.min, workers.max, workers.max_pending),
        current=0,
        seconds_since_change=None,
    )
    return max(1, decision.parallelism), decision.reason


def rescaling(
    stage: Stage,
    job: Obj,
    pods: Sequence[PodView],
    succeeded: int,
    current: int,
    workers: WorkerRange,
    now: datetime,
    scaled_here: datetime | None,
) -> Scaling:
    """The parallelism a running wave's Job should have now.

    Args:
        stage: the wave.
        job: its Job, with ``current`` parallelism.
        pods: its pods, those being deleted left out.
        succeeded: its tasks done.
        current: the Job's parallelism now.
        workers: the spec's worker range.
        now: the current time.
        scaled_here: when this controller last changed the Job's parallelism, if its
            :data:`~kubemr.controller.actions.SCALED_AT` annotation may not be seen yet.
    """
    status = job.get("status") or {}
    active = max(int(status.get("active") or 0), sum(1 for v in pods if v.active))
    ready = sum(1 for v in pods if v.ready)
    scheduled = sum(1 for v in pods if v.active and v.scheduled)
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    changed_at = [t for t in (parse_time(annotations.get(SCALED_AT)), scaled_here) if t is not None]
    since = seconds(now - max(changed_at)) if changed_at else None
    return scale(
        WaveLoad(
            total=stage.tasks,
            succeeded=succeeded,
            active=active,
            ready=ready,
            scheduled=scheduled,
        ),
        Workers(workers.min, workers.max, workers.max_pending),
        current,
        since,
    )
