"""Why a job failed or cannot run, as the status reports it: the failure reasons the
controller decides itself, the :class:`Failure` it writes, and the root cause read from a
stage's Job and pods (a worker's report, an exit code, pods no node fits or that cannot
start).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubemr import termination
from kubemr.controller.conditions import condition_reason
from kubemr.controller.observed import (
    Obj,
    PodView,
    job_failed,
    parse_indexes,
    seconds,
)
from kubemr.coordinator import Stage
from kubemr.executors.k8s.manifests import CONTAINER, LABEL_JOB
from kubemr.spec import FailureStatus

# Failure reasons the controller decides itself (the workers' are in kubemr.termination).
INVALID_SPEC = "InvalidSpec"
INVALID_PLAN = "InvalidPlan"
PLAN_MISSING = "PlanResultMissing"
DEADLINE = "DeadlineExceeded"
UNSCHEDULABLE = "Unschedulable"
PENDING_DEADLINE = "PendingDeadlineExceeded"
TASK_FAILED = "TaskFailed"
JOB_NAME_TAKEN = "JobNameTaken"
CANCELLED = "Cancelled"

_EXIT_REASONS = {
    termination.EXIT_BAD_INPUT: termination.BAD_INPUT,
    termination.EXIT_VERSION_SKEW: termination.VERSION_SKEW,
    termination.EXIT_TERMINATED: termination.INTERRUPTED,
}

CAPACITY_GRACE_SECONDS = 10.0
"""How long a pod may stay unschedulable before CapacityConstrained turns True."""


@dataclass
class Failure:
    """Why the job failed: what ``status.failure`` and the Failed condition say."""

    reason: str
    message: str
    task: str | None = None
    attempt: str | None = None
    exit_code: int | None = None
    traceback: str | None = None
    log: str | None = None

    def status(self) -> FailureStatus:
        return FailureStatus(
            reason=self.reason[:128],
            task=self.task[:128] if self.task else None,
            attempt=self.attempt[:253] if self.attempt else None,
            exit_code=self.exit_code,
            message=self.message,
            traceback=self.traceback or None,
            log=self.log[:2048] if self.log else None,
        )

    def summary(self) -> str:
        head = f"{self.task}: " if self.task else ""
        return f"{head}{self.message}" if self.message else f"{head}{self.reason}"


def task_name(stage: str, index: int | None) -> str:
    """How a task is named in the status: ``map-0-00012``, or ``plan``."""
    return termination.task_name(stage, index)


OOM_KILLED = "OOMKilled"
"""The container's terminated reason when the kernel killed it at its memory limit."""
_MEMORY_TAIL = re.compile(r"^MemoryError\b|std::bad_alloc|Cannot allocate memory")
"""A log's last line when a process died of memory before it could report (a C
extension's abort, an error before the worker started)."""
SHOWN_TASKS = 5
"""Running tasks a deadline's message names, at most."""


def memory_limit(job: Obj) -> str | None:
    """The worker container's ``limits.memory`` in a stage Job's pod template."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = template.get("containers") or []
    container: Any = next((c for c in containers if c.get("name") == CONTAINER), None)
    container = container or (containers[0] if containers else {})
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return str(limit) if limit not in (None, "") else None


def deadline_cause(
    limit: int | None,
    stage: Stage | None,
    job: Obj,
    pods: Sequence[PodView],
    resource: str | None = None,
) -> Failure:
    """The job ran past ``spec.activeDeadlineSeconds`` (``limit``; None: not known) in
    ``stage``, whose Job is ``job`` (``{}`` when not made yet): what still ran, and what
    to do. ``resource`` is the MapReduceJob's name (else read from the Job's labels)."""
    deadline = f"activeDeadlineSeconds={limit}" if limit is not None else "activeDeadlineSeconds"
    message = f"the job ran longer than {deadline}"
    name = resource or ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_JOB) or "NAME"
    first = stage.name if stage is not None else None
    if stage is not None and not job:
        message += f"; {stage.name} was about to start"
    elif stage is not None:
        done = parse_indexes((job.get("status") or {}).get("completedIndexes"))
        running = sorted(
            {v.index for v in pods if v.running and v.index is not None and v.index not in done}
        )
        message += f"; {stage.name} was running, {len(done)} of {stage.tasks} task(s) done"
        if running:
            names = [task_name(stage.name, i) for i in running]
            first = names[0]
            shown = ", ".join(names[:SHOWN_TASKS])
            more = len(names) - SHOWN_TASKS
            message += f"; still running: {shown}" + (f" and {more} more" if more > 0 else "")
    message += (
        ". A task that never ends waits on something or hangs in the job's code: see where "
        f"in its log (kubemr logs {name} --task {first or 'TASK'}); if the job only needs "
        "longer, raise spec.activeDeadlineSeconds"
    )
    return Failure(DEADLINE, message, task=stage.name if stage is not None else None)


def root_cause(
    stage: Stage, job: Obj, pods: Sequence[PodView], active_deadline: int | None = None
) -> Failure:
    """Why ``stage`` failed, from its Job (``{}`` when gone) and its pods: the worker's
    report of the most telling failed attempt, else its exit code, else the Job's word.
    ``active_deadline`` is the job's activeDeadlineSeconds, for a Job that passed it."""
    cond = job_failed(job) or {}
    job_reason = str(cond.get("reason") or "")
    job_message = str(cond.get("message") or "")
    if job_reason == "DeadlineExceeded":
        return deadline_cause(active_deadline, stage, job, pods)
    failed_indexes = parse_indexes((job.get("status") or {}).get("failedIndexes"))
    views = [v for v in pods if v.phase == "Failed" or v.exit_code]

    def score(v: PodView) -> tuple[int, int, datetime]:
        msg = v.message
        if msg and msg.get("ok") is False:
            rank = 2 if msg.get("reason") != termination.INTERRUPTED else 1
        else:
            rank = 1 if v.exit_code not in (None, 0, termination.EXIT_TERMINATED) else 0
        indexed = 1 if v.index is not None and v.index in failed_indexes else 0
        return rank, indexed, v.finished or datetime.min.replace(tzinfo=UTC)

    best = max(views, key=score, default=None)
    if best is None or score(best)[0] == 0:
        message = (
            job_message or f"the Job of {stage.name} failed ({job_reason or 'no reason given'})"
        )
        index = min(failed_indexes) if failed_indexes else None
        return Failure(TASK_FAILED, message, task_name(stage.name, index))
    attempts = sum(1 for v in views if v.index == best.index)
    msg = best.message or {}
    if msg.get("ok") is False:
        reason = str(msg.get("reason") or "") or _EXIT_REASONS.get(
            best.exit_code or -1, TASK_FAILED
        )
        message = str(msg.get("message") or "")
        trace = msg.get("traceback")
        index = msg.get("index") if isinstance(msg.get("index"), int) else best.index
        task = task_name(str(msg.get("stage") or stage.name), index)
        attempt = str(msg.get("attempt") or best.name)
        log = msg.get("log")
    else:
        reason = _EXIT_REASONS.get(best.exit_code or -1) or (
            condition_reason(best.terminated_reason, TASK_FAILED)
            if best.terminated_reason not in (None, "Error", "Completed")
            else TASK_FAILED
        )
        text = (best.text or "").strip()
        last = text.splitlines()[-1] if text else ""
        message = f"exit code {best.exit_code}" + (f": {last}" if last else "")
        trace = text or None
        task = task_name(stage.name, best.index)
        attempt = best.name
        log = None
        if best.terminated_reason == OOM_KILLED or _MEMORY_TAIL.search(last):
            # Killed at its limit (a cgroup), or died of memory before it could report.
            how = (
                f"{OOM_KILLED}: the kernel killed it, exit code {best.exit_code}"
                if best.terminated_reason == OOM_KILLED
                else f"exit code {best.exit_code}: {last[:200]}"
            )
            reason = termination.OUT_OF_MEMORY
            message = termination.out_of_memory_message(task, memory_limit(job), how)
    if attempts > 1 and message:
        message = f"{message} (after {attempts} attempts)"
    return Failure(
        reason=reason,
        message=message or job_message,
        task=task,
        attempt=attempt,
        exit_code=best.exit_code,
        traceback=str(trace) if trace else None,
        log=str(log) if isinstance(log, str) and log else None,
    )


def pending_cause(stage: Stage, deadline: int, pending: Sequence[PodView]) -> Failure:
    """Why no pod of ``stage`` ran within ``deadline`` seconds (pendingDeadlineSeconds),
    from its ``pending`` pods: no node fits them, they cannot start, or just that."""
    unschedulable = [v for v in pending if v.unschedulable_since is not None]
    blocked = [v for v in pending if v.blocked_reason]
    why = f"no worker pod of {stage.name} ran for {deadline}s (pendingDeadlineSeconds)"
    if unschedulable:
        return Failure(
            UNSCHEDULABLE,
            f"{why}: {unschedulable[0].unschedulable_message or 'no node fits them'}",
            task=stage.name,
            attempt=unschedulable[0].name,
        )
    if blocked:
        return Failure(
            condition_reason(blocked[0].blocked_reason),
            f"{why}: {blocked[0].blocked_message or blocked[0].blocked_reason}",
            task=stage.name,
            attempt=blocked[0].name,
        )
    return Failure(PENDING_DEADLINE, why, task=stage.name, attempt=pending[0].name)


def unschedulable(pods: Sequence[PodView], now: datetime) -> tuple[list[PodView], list[float]]:
    """The pending pods no node has fitted for :data:`CAPACITY_GRACE_SECONDS` or longer,
    and, for each of the other unschedulable ones, the seconds until it has been so long."""
    stuck = [v for v in pods if v.phase == "Pending" and v.unschedulable_since is not None]
    long_stuck = [
        v
        for v in stuck
        if seconds(now - v.unschedulable_since) >= CAPACITY_GRACE_SECONDS  # type: ignore[operator]
    ]
    waits: list[float] = []
    for v in stuck:
        if v not in long_stuck:
            left = CAPACITY_GRACE_SECONDS - seconds(now - v.unschedulable_since)  # type: ignore[operator]
            waits.append(max(0.5, left))
    return long_stuck, waits
