"""Why a job failed or cannot run, as the status reports it: the failure reasons the
controller decides itself, the :class:`Failure` it writes, and the root cause read from a
stage's Job and pods (a worker's report, an exit code, pods no node fits or that cannot
start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kubemr import termination
from kubemr.controller.conditions import condition_reason
from kubemr.controller.observed import (
    Obj,
    PodView,
    job_failed,
    parse_indexes,
    seconds,
)
from kubemr.coordinator import Stage, StageKind
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
    if index is None or stage in (StageKind.PLAN.value, StageKind.COMMIT.value):
        return stage
    return f"{stage}-{index:05d}"


def root_cause(stage: Stage, job: Obj, pods: Sequence[PodView]) -> Failure:
    """Why ``stage`` failed, from its Job (``{}`` when gone) and its pods: the worker's
    report of the most telling failed attempt, else its exit code, else the Job's word."""
    cond = job_failed(job) or {}
    job_reason = str(cond.get("reason") or "")
    job_message = str(cond.get("message") or "")
    if job_reason == "DeadlineExceeded":
        return Failure(DEADLINE, job_message or "the stage's Job passed its deadline", stage.name)
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
