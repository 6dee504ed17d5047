"""The attempts' logs and failure markers a job leaves in its work dir, read with the
local user's storage credentials.

A worker copies each attempt's output to ``<work>/logs/<stage>/<index:05d>/<attempt>.log``
(:meth:`kubemr.plan.Plan.log_url`), so the logs outlive the pods; a failed map or reduce
attempt also writes ``<work>/steps/<s>/tasks/<wave>-<index:05d>/<attempt>.failed.json``
with its root cause (:mod:`kubemr.task`). After a job succeeds only the logs stay.

Stages are named as the Jobs are: ``plan``, ``map-S``, ``reduce-S``, ``commit``; a task
is a stage and an index (``map-0-00012``, as ``status.failure.task`` writes it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from kubemr import storage
from kubemr.errors import OptionError
from kubemr.storage import StorageOptions

_STAGE = re.compile(r"^(plan|commit|(map|reduce)-(\d+))$")
_TASK = re.compile(r"^(?:(plan|commit)|(map|reduce)(?:-(\d+))?-(\d+))$")


@dataclass(frozen=True)
class TaskLog:
    """One attempt's log in storage."""

    stage: str
    index: int
    attempt: str
    url: str
    size: int

    @property
    def task(self) -> str:
        return task_label(self.stage, self.index)


@dataclass(frozen=True)
class FailureMarker:
    """A failed attempt's root cause, as the attempt recorded it."""

    stage: str
    index: int
    attempt: str
    kind: str
    message: str
    traceback: str


def task_label(stage: str, index: int) -> str:
    """``map-0-00012``; ``plan`` and ``commit`` alone."""
    return stage if stage in ("plan", "commit") else f"{stage}-{index:05d}"


def stage_key(stage: str) -> tuple[int, int, int]:
    """Stages in the order a job runs them: plan, map-0, reduce-0, map-1, ..., commit."""
    if stage == "plan":
        return (0, 0, 0)
    if stage == "commit":
        return (2, 0, 0)
    match = _STAGE.match(stage)
    if match is None:
        return (3, 0, 0)
    return (1, int(match.group(3)), 0 if match.group(2) == "map" else 1)


def parse_stage(text: str) -> str:
    """A ``--stage``: ``plan``, ``commit``, ``map-S``, ``reduce-S``; ``map`` and ``reduce``
    are step 0's."""
    text = text.strip().lower()
    if text in ("map", "reduce"):
        return f"{text}-0"
    if _STAGE.match(text) is None:
        raise OptionError(f"--stage {text!r}: give plan, map-S, reduce-S or commit (S: the step)")
    return text


def parse_task(text: str) -> tuple[str, int]:
    """A ``--task``: ``plan``, ``commit``, ``map-I`` (step 0), ``map-S-I``, ``reduce-...``;
    the index may be zero-padded as in ``status.failure.task`` (``map-0-00012``)."""
    match = _TASK.match(text.strip().lower())
    if match is None:
        raise OptionError(
            f"--task {text!r}: give plan, commit, map-I or reduce-I (step 0), or map-S-I / "
            "reduce-S-I (S: the step, I: the task's index), e.g. map-0-00012"
        )
    if match.group(1):
        return match.group(1), 0
    return f"{match.group(2)}-{int(match.group(3) or 0)}", int(match.group(4))


def parse_log_url(url: str) -> TaskLog | None:
    parts = url.rstrip("/").split("/")
    if len(parts) < 4 or parts[-4] != "logs" or not parts[-1].endswith(".log"):
        return None
    stage, index = parts[-3], parts[-2]
    if _STAGE.match(stage) is None or not index.isdigit():
        return None
    return TaskLog(stage, int(index), parts[-1][: -len(".log")], url, 0)


def parse_marker_url(url: str) -> tuple[str, int, str] | None:
    """``(stage, index, attempt)`` of a ``.failed.json`` marker's URL."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 5 or parts[-5] != "steps" or parts[-3] != "tasks":
        return None
    step, task, name = parts[-4], parts[-2], parts[-1]
    wave, _, index = task.partition("-")
    if not (step.isdigit() and index.isdigit() and wave in ("map", "reduce")):
        return None
    if not name.endswith(".failed.json"):
        return None
    return f"{wave}-{int(step)}", int(index), name[: -len(".failed.json")]


def list_logs(work_url: str, options: StorageOptions) -> list[TaskLog]:
    """Every attempt's log under the work dir, in the order the stages ran."""
    prefix = storage.join(work_url, "logs") + "/"
    found: list[TaskLog] = []
    try:
        listed = list(storage.store_for(prefix, options).list(prefix))
    except FileNotFoundError:
        return []
    for info in listed:
        log = parse_log_url(info.url)
        if log is not None:
            found.append(TaskLog(log.stage, log.index, log.attempt, info.url, info.size))
    found.sort(key=lambda log: (stage_key(log.stage), log.index, log.attempt))
    return found


def list_failure_markers(work_url: str, steps: int, options: StorageOptions) -> list[FailureMarker]:
    """The ``.failed.json`` markers of every step's tasks (the work dir of a failed job
    keeps them)."""
    found: list[FailureMarker] = []
    for step in range(steps):
        prefix = storage.join(work_url, "steps", str(step), "tasks") + "/"
        try:
            listed = list(storage.store_for(prefix, options).list(prefix))
        except FileNotFoundError:
            continue
        for info in listed:
            where = parse_marker_url(info.url)
            if where is None:
                continue
            try:
                data = json.loads(storage.read_bytes(info.url, options))
            except (FileNotFoundError, ValueError):
                continue
            found.append(
                FailureMarker(
                    *where,
                    kind=str(data.get("kind") or ""),
                    message=str(data.get("message") or ""),
                    traceback=str(data.get("traceback") or ""),
                )
            )
    return found


def read_log(url: str, options: StorageOptions) -> bytes:
    return storage.read_bytes(url, options)


@dataclass(frozen=True)
class Selection:
    """Which attempts' logs: a stage, or a task (stage and index), and an attempt."""

    stage: str | None = None
    index: int | None = None
    attempt: str | None = None

    def matches(self, stage: str, index: int, attempt: str) -> bool:
        if self.stage is not None and stage != self.stage:
            return False
        if self.index is not None and index != self.index:
            return False
        return self.attempt is None or attempt == self.attempt or attempt.startswith(self.attempt)

    def describe(self) -> str:
        if self.stage is None:
            what = "the job"
        elif self.index is None:
            what = f"stage {self.stage}"
        else:
            what = f"task {task_label(self.stage, self.index)}"
        return what + (f", attempt {self.attempt}" if self.attempt else "")


def selection(task: str | None, stage: str | None, attempt: str | None) -> Selection:
    """The selection the ``--task``, ``--stage`` and ``--attempt`` flags make."""
    if task is not None and stage is not None:
        raise OptionError("give --task or --stage, not both")
    if task is not None:
        parsed_stage, index = parse_task(task)
        return Selection(parsed_stage, index, attempt)
    return Selection(parse_stage(stage) if stage is not None else None, None, attempt)
