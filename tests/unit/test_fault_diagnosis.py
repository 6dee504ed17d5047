"""The root cause the controller reads from a stage's Job and pods when a worker ran out
of memory (its own report, a container the kernel OOM-killed, a log that ends in a
MemoryError) or the job passed its deadline while tasks still ran."""

from __future__ import annotations

import json
from typing import Any

from kubemr import termination
from kubemr.controller.diagnosis import (
    DEADLINE,
    SHOWN_TASKS,
    TASK_FAILED,
    deadline_cause,
    memory_limit,
    root_cause,
)
from kubemr.controller.observed import pod_view
from kubemr.coordinator import Stage, StageKind
from kubemr.executors.k8s.manifests import CONTAINER, LABEL_JOB, LABEL_STAGE

Obj = dict[str, Any]
MAP = Stage(StageKind.MAP, 0, 4)
INDEX = "batch.kubernetes.io/job-completion-index"
NOW = "2025-03-01T12:00:00Z"


def stage_job(memory: str | None = "768Mi", *, completed: str = "", failed: str = "") -> Obj:
    container: Obj = {"name": CONTAINER, "image": "kubemr"}
    if memory is not None:
        container["resources"] = {"limits": {"memory": memory}}
    status: Obj = {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedIndexes"}]}
    if completed:
        status["completedIndexes"] = completed
    if failed:
        status["failedIndexes"] = failed
    return {
        "metadata": {"name": "wc-map-0", "labels": {LABEL_JOB: "wc", LABEL_STAGE: "map-0"}},
        "spec": {"template": {"spec": {"containers": [container]}}},
        "status": status,
    }


def pod(
    index: int,
    n: int = 0,
    *,
    phase: str = "Failed",
    code: int = 1,
    reason: str = "Error",
    message: Obj | str | None = None,
) -> Any:
    state: Obj
    if phase == "Running":
        state = {"running": {"startedAt": NOW}}
    else:
        text = json.dumps(message) if isinstance(message, dict) else message
        state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "message": text,
                "startedAt": NOW,
                "finishedAt": f"2025-03-01T12:00:{10 + n:02d}Z",
            }
        }
    return pod_view(
        {
            "metadata": {
                "name": f"wc-map-0-{index}-{n:05x}",
                "labels": {LABEL_STAGE: "map-0", INDEX: str(index)},
                "annotations": {INDEX: str(index)},
            },
            "status": {
                "phase": phase,
                "containerStatuses": [{"name": CONTAINER, "state": state}],
            },
        }
    )


# -- out of memory ----------------------------------------------------------------------------
def test_an_oom_killed_container_is_out_of_memory_naming_the_task_and_the_limit() -> None:
    """On a cluster the kernel kills the container at its cgroup limit: reason OOMKilled,
    exit 137, no worker message (FallbackToLogsOnError leaves the log's tail)."""
    tail = "reading in/part-3.txt\nmapping 120000 records"
    pods = [pod(2, n, code=137, reason="OOMKilled", message=tail) for n in range(2)]
    failure = root_cause(MAP, stage_job("768Mi", failed="2"), pods)
    assert failure.reason == termination.OUT_OF_MEMORY == "OutOfMemory"
    assert failure.task == "map-0-00002" and failure.exit_code == 137
    assert failure.message.startswith("map-0-00002 ran out of memory under its memory limit")
    assert "768Mi" in failure.message and "OOMKilled" in failure.message
    assert "limits.memory" in failure.message and "splitSize" in failure.message
    assert "more reducers" in failure.message
    assert failure.message.endswith("(after 2 attempts)")
    assert failure.traceback == tail  # the log's tail stays in sight


def test_an_oom_kill_without_a_limit_says_so() -> None:
    failure = root_cause(MAP, stage_job(None), [pod(0, code=137, reason="OOMKilled")])
    assert failure.reason == "OutOfMemory"
    assert "under the memory it could get" in failure.message
    assert "limits.memory" in failure.message


def test_the_workers_out_of_memory_report_is_kept() -> None:
    message = termination.out_of_memory_message(
        "map-0-00001", "1Gi", "MemoryError", "mapper raised MemoryError (at in/a.txt:7)"
    )
    report = {
        "ok": False,
        "stage": "map-0",
        "index": 1,
        "attempt": "wc-map-0-1-a",
        "reason": termination.OUT_OF_MEMORY,
        "message": message,
        "traceback": "Traceback ...\nMemoryError",
    }
    failure = root_cause(MAP, stage_job("1Gi"), [pod(1, message=report)])
    assert failure.reason == "OutOfMemory" and failure.task == "map-0-00001"
    assert failure.message == message and "1Gi" in failure.message
    assert failure.exit_code == 1 and failure.traceback is not None


def test_a_log_ending_in_a_memory_error_is_out_of_memory() -> None:
    """A process that died of memory before the worker could report: its log's tail is
    all there is."""
    for last in ("MemoryError", "MemoryError: cannot allocate 4 GiB", "std::bad_alloc"):
        tail = f"Traceback (most recent call last):\n  File 'x'\n{last}"
        failure = root_cause(MAP, stage_job(), [pod(3, message=tail)])
        assert failure.reason == "OutOfMemory", last
        assert "768Mi" in failure.message and last in failure.message


def test_other_failures_are_not_taken_for_memory() -> None:
    tail = "Traceback (most recent call last):\nValueError: no MemoryError here"
    failure = root_cause(MAP, stage_job(), [pod(0, message=tail)])
    assert failure.reason == TASK_FAILED and "ValueError" in failure.message
    killed = root_cause(MAP, stage_job(), [pod(0, code=137, reason="Error")])
    assert killed.reason == TASK_FAILED


def test_memory_limit_is_read_from_the_worker_container() -> None:
    job = stage_job("2Gi")
    sidecar = {"name": "proxy", "resources": {"limits": {"memory": "64Mi"}}}
    job["spec"]["template"]["spec"]["containers"].insert(0, sidecar)
    assert memory_limit(job) == "2Gi"
    assert memory_limit(stage_job(None)) is None
    assert memory_limit({}) is None


def test_memory_quantities_and_task_names() -> None:
    assert termination.quantity(768 * 2**20) == "768Mi"
    assert termination.quantity(2 * 2**30) == "2Gi"
    assert termination.quantity(1000) == "1000"
    assert termination.task_name("map-1", 12) == "map-1-00012"
    assert termination.task_name("plan", 0) == "plan"


# -- deadline ---------------------------------------------------------------------------------
def test_deadline_names_the_wave_the_running_tasks_and_what_to_do() -> None:
    pods = [pod(i, phase="Running") for i in (0, 2, 3)] + [pod(1, phase="Succeeded", code=0)]
    failure = deadline_cause(25, MAP, stage_job(completed="1"), pods)
    assert failure.reason == DEADLINE and failure.task == "map-0"
    message = failure.message
    assert message.startswith("the job ran longer than activeDeadlineSeconds=25; ")
    assert "map-0 was running, 1 of 4 task(s) done" in message
    assert "still running: map-0-00000, map-0-00002, map-0-00003" in message
    assert "kubemr logs wc --task map-0-00000" in message
    assert "raise spec.activeDeadlineSeconds" in message


def test_deadline_names_a_few_running_tasks_and_counts_the_rest() -> None:
    wide = Stage(StageKind.REDUCE, 0, 40)
    pods = [pod(i, phase="Running") for i in range(12)]
    message = deadline_cause(60, wide, stage_job(), pods, resource="big").message
    assert "reduce-0 was running, 0 of 40 task(s) done" in message
    assert f"reduce-0-0000{SHOWN_TASKS - 1} and {12 - SHOWN_TASKS} more" in message
    assert "kubemr logs big --task reduce-0-00000" in message


def test_deadline_before_a_stage_started_or_with_no_stage() -> None:
    message = deadline_cause(10, MAP, {}, [], resource="wc").message
    assert "map-0 was about to start" in message and "--task map-0" in message
    bare = deadline_cause(10, None, {}, [], resource="wc")
    assert bare.task is None and bare.message.startswith(
        "the job ran longer than activeDeadlineSeconds=10. "
    )


def test_a_job_that_passed_its_own_deadline_gets_the_same_message() -> None:
    """The stage Job carries what was left of the job's deadline; the Job controller may
    end it first."""
    job = stage_job()
    job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}
    ]
    pods = [pod(0, phase="Running")]
    failure = root_cause(MAP, job, pods, active_deadline=25)
    assert failure.reason == DEADLINE
    assert "activeDeadlineSeconds=25" in failure.message
    assert "still running: map-0-00000" in failure.message
    unknown = root_cause(MAP, job, pods)
    assert "longer than activeDeadlineSeconds;" in unknown.message
