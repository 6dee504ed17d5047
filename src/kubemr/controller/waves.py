"""The stages' progress and the status' wave summaries, from the Jobs the resource owns and
the waves its previous status froze: a Job may be gone (deleted, TTL) once its wave ended,
and its summary in the status stands for it then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from kubemr.controller.observed import (
    Obj,
    count_indexes,
    job_failed,
    parse_time,
    stage_state,
)
from kubemr.coordinator import Stage, StageKind, StageState
from kubemr.executors.k8s.manifests import job_name
from kubemr.spec import WaveStatus


def observe(
    name: str,
    stages: Sequence[Stage],
    jobs: Mapping[str, Obj],
    frozen: Sequence[WaveStatus],
    planned: bool,
) -> dict[str, StageState]:
    """Each stage's state, by stage name, for :func:`kubemr.coordinator.decide`.

    Args:
        name: the resource's name (the Jobs' names derive from it).
        stages: the job's stages.
        jobs: the Jobs the resource owns, by name.
        frozen: the previous status' waves.
        planned: the status already holds the plan's steps (the plan Job may be gone).
    """
    by_job = {w.job_name: w for w in frozen}
    observed: dict[str, StageState] = {}
    for stage in stages:
        jname = job_name(name, stage)
        job = jobs.get(jname)
        if job is not None:
            observed[stage.name] = stage_state(job)
            continue
        wave = by_job.get(jname)
        if stage.kind is StageKind.PLAN and planned:
            observed[stage.name] = StageState(succeeded=1)  # its report is in the status
        elif wave is not None and wave.completion_time is not None:
            # The Job is gone (deleted, TTL) after its wave ended: its summary remains.
            observed[stage.name] = StageState(succeeded=wave.succeeded, failed=False)
        elif stage.tasks == 0:
            observed[stage.name] = StageState()  # nothing to run
    return observed


def record_waves(
    name: str,
    stages: Sequence[Stage],
    jobs: Mapping[str, Obj],
    frozen: Sequence[WaveStatus],
    now: datetime,
) -> list[WaveStatus]:
    """The status' waves: a frozen one as it was once it ended or its Job is gone, else
    the summary of its Job now."""
    by_job = {w.job_name: w for w in frozen}
    waves: list[WaveStatus] = []
    for stage in stages:
        jname = job_name(name, stage)
        before = by_job.get(jname)
        job = jobs.get(jname)
        if before is not None and (before.completion_time is not None or job is None):
            waves.append(before)
        elif job is not None:
            waves.append(wave_of(name, stage, job, now))
    return waves


def wave_of(name: str, stage: Stage, job: Obj, now: datetime) -> WaveStatus:
    """The summary of a stage's wave from its Job."""
    status = job.get("status") or {}
    end = parse_time(status.get("completionTime"))
    failed = job_failed(job)
    if end is None and failed is not None and failed.get("type") == "Failed":
        end = parse_time(failed.get("lastTransitionTime")) or now
    return WaveStatus(
        kind=stage.kind.value,
        step=stage.step if stage.step >= 0 else None,
        job_name=job_name(name, stage),
        total=stage.tasks,
        succeeded=min(count_indexes(status.get("completedIndexes")), stage.tasks),
        failed=int(status.get("failed") or 0),
        start_time=parse_time(status.get("startTime"))
        or parse_time((job.get("metadata") or {}).get("creationTimestamp")),
        completion_time=end,
    )


def with_wave(waves: Sequence[WaveStatus], wave: WaveStatus) -> list[WaveStatus]:
    """``waves`` with ``wave`` in place of the one of its Job, or after them."""
    out = [w for w in waves if w.job_name != wave.job_name]
    out.append(wave)
    order = {w.job_name: i for i, w in enumerate(waves)}
    out.sort(key=lambda w: order.get(w.job_name, len(order)))
    return out
