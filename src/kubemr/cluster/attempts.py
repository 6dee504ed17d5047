"""The failed attempts of a job, gathered from what is left of them: the pods still
present (their termination messages, :mod:`kubemr.termination`), the failure markers and
logs in storage (:mod:`kubemr.cluster.tasklogs`), and the root cause in the status. Pure:
the callers fetch, this merges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubemr import termination
from kubemr.cluster.tasklogs import FailureMarker, TaskLog, parse_task, stage_key, task_label
from kubemr.errors import OptionError
from kubemr.executors.k8s.manifests import CONTAINER, LABEL_STAGE

Obj = dict[str, Any]

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
KIND_REASONS = {
    "user-code": termination.USER_CODE,
    "bad-record": termination.BAD_INPUT,
    "version-skew": termination.VERSION_SKEW,
    "code-integrity": termination.CODE_INTEGRITY,
    "storage": termination.STORAGE,
    "infrastructure": termination.INFRASTRUCTURE,
}
"""A failure marker's ``kind`` as the reason a worker reports for it."""


@dataclass
class FailedAttempt:
    stage: str
    index: int
    attempt: str
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    traceback: str = ""
    log: str | None = None
    sources: set[str] = field(default_factory=set)
    """Where it was seen: ``pod``, ``storage``, ``status``."""

    @property
    def task(self) -> str:
        return task_label(self.stage, self.index)

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.stage, self.index, self.attempt)


def from_pod(pod: Obj) -> FailedAttempt | None:
    """The failed attempt a pod ran, or None when it did not fail (yet)."""
    meta = pod.get("metadata") or {}
    stage = (meta.get("labels") or {}).get(LABEL_STAGE)
    if not stage:
        return None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    first = statuses[0] if statuses else {}
    mine = next((s for s in statuses if s.get("name") == CONTAINER), first)
    terminated = (mine.get("state") or {}).get("terminated") or (
        (mine.get("lastState") or {}).get("terminated")
    )
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    index = int((meta.get("annotations") or {}).get(COMPLETION_INDEX) or 0)
    report = termination.decode(terminated.get("message"))
    found = FailedAttempt(stage, index, str(meta.get("name")), terminated.get("exitCode"))
    found.sources.add("pod")
    if report is not None:
        found.reason = str(report.get("reason") or "")
        found.message = str(report.get("message") or "")
        found.traceback = str(report.get("traceback") or "")
        found.log = report.get("log")
    else:
        found.reason = str(terminated.get("reason") or "")
        lines = [ln for ln in str(terminated.get("message") or "").splitlines() if ln.strip()]
        found.message = lines[-1] if lines else ""
    return found


def from_marker(marker: FailureMarker) -> FailedAttempt:
    found = FailedAttempt(
        marker.stage,
        marker.index,
        marker.attempt,
        reason=KIND_REASONS.get(marker.kind, marker.kind),
        message=marker.message,
        traceback=marker.traceback,
    )
    found.sources.add("storage")
    return found


def from_status(failure: Obj | None) -> FailedAttempt | None:
    """The root cause's attempt, when it names a task and an attempt."""
    if not failure or not failure.get("task") or not failure.get("attempt"):
        return None
    try:
        stage, index = parse_task(str(failure["task"]))
    except OptionError:
        return None
    found = FailedAttempt(
        stage,
        index,
        str(failure["attempt"]),
        failure.get("exitCode"),
        str(failure.get("reason") or ""),
        str(failure.get("message") or ""),
        str(failure.get("traceback") or ""),
        failure.get("log"),
    )
    found.sources.add("status")
    return found


def failed_attempts(
    pods: Iterable[Obj],
    markers: Iterable[FailureMarker] = (),
    logs: Iterable[TaskLog] = (),
    failure: Obj | None = None,
) -> list[FailedAttempt]:
    """Every failed attempt seen anywhere, once, in the order the stages ran; each with the
    most telling cause found (a pod's report first) and its log in storage when there."""
    merged: dict[tuple[str, int, str], FailedAttempt] = {}
    seen = [from_pod(p) for p in pods]
    seen += [from_marker(m) for m in markers]
    seen.append(from_status(failure))
    for found in seen:
        if found is None:
            continue
        have = merged.get(found.key)
        if have is None:
            merged[found.key] = found
            continue
        have.sources |= found.sources
        have.exit_code = have.exit_code if have.exit_code is not None else found.exit_code
        for name in ("reason", "message", "traceback", "log"):
            if not getattr(have, name) and getattr(found, name):
                setattr(have, name, getattr(found, name))
    by_key = {(log.stage, log.index, log.attempt): log.url for log in logs}
    for found in merged.values():
        found.log = found.log or by_key.get(found.key)
    return sorted(merged.values(), key=lambda f: (stage_key(f.stage), f.index, f.attempt))
