"""The controller's pure reconcile over hand-built resources, Jobs and pods, and the API
gateway and the action loop over a fake transport."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubemr import termination
from kubemr.controller import observed
from kubemr.controller.actions import (
    SCALED_AT,
    SUSPENDED,
    CreateJob,
    DeleteResource,
    Event,
    Outcome,
    ScaleJob,
    SuspendJob,
    event_name,
)
from kubemr.controller.diagnosis import INVALID_PLAN, INVALID_SPEC, PENDING_DEADLINE, PLAN_MISSING
from kubemr.controller.main import JobController
from kubemr.controller.observed import count_indexes, format_time, parse_indexes, read_result
from kubemr.controller.reconcile import RESULT_GRACE_SECONDS, reconcile
from kubemr.executors.k8s.api import (
    APPLY,
    MERGE_PATCH,
    Conflict,
    ControllerApi,
    PermissionDenied,
    merge_patch,
)
from kubemr.executors.k8s.manifests import (
    API_VERSION,
    KIND,
    KUEUE_QUEUE_LABEL,
    LABEL_JOB,
    LABEL_STAGE,
    LABEL_UID,
)
from kubemr.spec import (
    MAX_COUNTER_GROUPS,
    MAX_COUNTERS_PER_GROUP,
    MAX_STEPS,
    JobDefaults,
    MapReduceJobStatus,
)

Obj = dict[str, Any]

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
UID = "5e1a7c2e-0000-4000-8000-000000000001"
NAME = "wc"
NS = "team-a"


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# -- building the observed objects ------------------------------------------------------------
def resource(
    spec: Obj | None = None,
    status: Obj | None = None,
    labels: dict[str, str] | None = None,
    generation: int = 1,
) -> Obj:
    base = {
        "inputs": ["s3://books/*.txt"],
        "output": "s3://results/wc",
        "job": {"module": "jobs.wordcount:WordCount"},
        "workers": {"min": 0, "max": 8, "maxPending": 2},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": UID,
            "generation": generation,
            "resourceVersion": "100",
            "creationTimestamp": ts(NOW),
            "labels": labels or {},
        },
        "spec": {**base, **(spec or {})},
        "status": status or {},
    }


def with_status(res: Obj, outcome: Outcome) -> Obj:
    """The resource as the API server has it after the outcome's status was written."""
    out = copy.deepcopy(res)
    out["status"] = copy.deepcopy(outcome.status)
    return out


def job(
    stage: str,
    tasks: int,
    *,
    completed: str = "",
    active: int = 0,
    failed: int = 0,
    parallelism: int = 2,
    suspend: bool = False,
    annotations: dict[str, str] | None = None,
    conditions: list[Obj] | None = None,
    start: datetime = NOW,
    completion: datetime | None = None,
    owner_uid: str = UID,
) -> Obj:
    status: Obj = {"startTime": ts(start), "active": active, "failed": failed}
    if completed:
        status["completedIndexes"] = completed
    if completion is not None:
        status["completionTime"] = ts(completion)
        conditions = [*(conditions or []), {"type": "Complete", "status": "True"}]
    if conditions:
        status["conditions"] = conditions
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{NAME}-{stage}",
            "namespace": NS,
            "uid": f"job-{stage}",
            "creationTimestamp": ts(start),
            "labels": {LABEL_JOB: NAME, LABEL_UID: owner_uid, LABEL_STAGE: stage},
            "annotations": annotations or {},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": KIND, "name": NAME, "uid": owner_uid}
            ],
        },
        "spec": {
            "completions": tasks,
            "parallelism": parallelism,
            "completionMode": "Indexed",
            "suspend": suspend,
        },
        "status": status,
    }


def failed_condition(reason: str = "MaxFailedIndexesExceeded", message: str = "") -> Obj:
    return {
        "type": "Failed",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(NOW),
    }


def pod(
    stage: str,
    index: int,
    phase: str = "Running",
    *,
    attempt: int = 0,
    ready: bool = True,
    message: Obj | str | None = None,
    exit_code: int | None = None,
    started: datetime | None = NOW,
    finished: datetime | None = None,
    unschedulable_since: datetime | None = None,
    scheduler_message: str = "0/1 nodes are available: 1 Insufficient cpu.",
    waiting: tuple[str, str] | None = None,
) -> Obj:
    name = f"{NAME}-{stage}-{index}-{attempt:05x}"
    status: Obj = {"phase": phase, "conditions": []}
    container: Obj = {"name": "worker", "state": {}}
    if phase == "Running":
        container["state"] = {"running": {"startedAt": ts(started or NOW)}}
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False"})
    elif phase in ("Succeeded", "Failed"):
        text = json.dumps(message) if isinstance(message, dict) else message
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        container["state"] = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "message": text,
                "startedAt": ts(started or NOW),
                "finishedAt": ts(finished or NOW),
            }
        }
    elif phase == "Pending":
        if unschedulable_since is not None:
            status["conditions"].append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": scheduler_message,
                    "lastTransitionTime": ts(unschedulable_since),
                }
            )
            container = {}
        elif waiting is not None:
            container["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        else:
            container["state"] = {"waiting": {"reason": "ContainerCreating"}}
    if container:
        status["containerStatuses"] = [container]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": ts(NOW),
            "labels": {
                LABEL_JOB: NAME,
                LABEL_UID: UID,
                LABEL_STAGE: stage,
                "batch.kubernetes.io/job-completion-index": str(index),
            },
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": status,
    }


def plan_pod(steps: list[Obj]) -> Obj:
    msg = {"ok": True, "stage": "plan", "index": 0, "attempt": "wc-plan-x", "steps": steps}
    return pod("plan", 0, "Succeeded", message=msg)


def planned(steps: list[Obj] | None = None, **spec: Any) -> Obj:
    """A resource whose plan has run: status.plan set, plan wave frozen."""
    steps = steps or [{"maps": 10, "reducers": 2}]
    res = resource(spec or None)
    out = reconcile(res, [job("plan", 1, completed="0", completion=NOW)], [plan_pod(steps)], NOW)
    assert out.status is not None and out.status["plan"]["steps"]
    return with_status(res, out)


def conditions(outcome: Outcome) -> dict[str, Obj]:
    assert outcome.status is not None
    return {c["type"]: c for c in outcome.status.get("conditions", [])}


# -- parsing --------------------------------------------------------------------------------
def test_completed_indexes_are_counted_from_ranges() -> None:
    assert parse_indexes("0-3,5") == {0, 1, 2, 3, 5}
    assert parse_indexes("") == set() == parse_indexes(None)
    assert count_indexes("0-3,5") == 5
    assert count_indexes("0-9999") == 10_000
    assert count_indexes(None) == 0


# -- the stages in order ----------------------------------------------------------------------
def test_fresh_resource_creates_the_plan_job() -> None:
    out = reconcile(resource(), [], [], NOW)
    [create] = out.of(CreateJob)
    manifest = create.manifest
    assert manifest["metadata"]["name"] == "wc-plan"
    assert manifest["spec"]["completions"] == 1 and manifest["spec"]["parallelism"] == 1
    assert "suspend" not in manifest["spec"]  # never undoes someone else's suspension
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["worker", "--work", "s3://results/_kubemr/team-a/wc/" + UID, "--stage", "plan"]
    status = out.status
    assert status is not None
    assert status["phase"] == "Pending"
    assert status["startTime"] == ts(NOW)
    assert status["observedGeneration"] == 1
    assert status["plan"]["workUrl"] == f"s3://results/_kubemr/{NS}/{NAME}/{UID}"
    assert status["wave"] == "plan" and status["progress"] == "0/1"
    assert [w["jobName"] for w in status["waves"]] == ["wc-plan"]
    assert [e.reason for e in out.events] == ["StageStarted"]
    assert out.requeue_after is not None


def test_work_dir_from_the_spec_wins() -> None:
    out = reconcile(resource({"workDir": "s3://scratch/wc"}), [], [], NOW)
    assert out.status is not None and out.status["plan"]["workUrl"] == "s3://scratch/wc"
    args = out.of(CreateJob)[0].manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[2] == "s3://scratch/wc"


def test_running_plan_pod_is_planning() -> None:
    res = with_status(resource(), reconcile(resource(), [], [], NOW))
    out = reconcile(res, [job("plan", 1, active=1, parallelism=1)], [pod("plan", 0)], later(2))
    assert out.status is not None and out.status["phase"] == "Planning"
    assert not out.of(CreateJob)


def test_plan_result_is_stored_and_the_map_job_created() -> None:
    res = resource()
    steps = [{"maps": 10, "reducers": 2}]
    out = reconcile(res, [job("plan", 1, completed="0", completion=NOW)], [plan_pod(steps)], NOW)
    status = out.status
    assert status is not None
    assert status["plan"]["steps"] == [{"maps": 10, "reducers": 2}]
    [create] = out.of(CreateJob)
    spec = create.manifest["spec"]
    assert create.name == "wc-map-0"
    assert spec["completions"] == 10
    assert spec["parallelism"] == 2  # maxPending while nothing is ready
    assert spec["backoffLimitPerIndex"] == 2
    assert status["phase"] == "Running"
    assert status["wave"] == "map" and status["progress"] == "0/10"
    assert status["workers"] == 2
    assert [w["jobName"] for w in status["waves"]] == ["wc-plan", "wc-map-0"]
    assert status["waves"][0]["completionTime"] == ts(NOW)
    assert {e.reason for e in out.events} == {"Planned", "StageStarted"}

    # Once stored, the plan survives its pod (and its Job) being deleted.
    res = with_status(res, out)
    again = reconcile(res, [job("map-0", 10, active=2)], [], later(1))
    assert not again.of(CreateJob)
    assert again.status is not None and again.status["plan"] == status["plan"]


def test_multi_step_labels_and_stage_order() -> None:
    steps: list[Obj] = [{"maps": 4, "reducers": 3}, {"maps": None, "reducers": 2}]
    res = planned(steps)
    done = NOW
    jobs = [
        job("map-0", 4, completed="0-3", completion=done),
        job("reduce-0", 3, completed="0-2", completion=done),
    ]
    out = reconcile(res, jobs, [], later(5))
    [create] = out.of(CreateJob)
    assert create.name == "wc-map-1"
    assert create.manifest["spec"]["completions"] == 3  # one per reducer of step 1
    assert out.status is not None and out.status["wave"] == "step 2/2 map"


def test_invalid_plan_fails_the_job() -> None:
    res = resource()
    bad = plan_pod([{"reducers": 2}])  # no map count
    out = reconcile(res, [job("plan", 1, completed="0", completion=NOW)], [bad], NOW)
    assert out.status is not None
    assert out.status["phase"] == "Failed"
    assert out.status["failure"]["reason"] == INVALID_PLAN


def test_plan_without_a_report_waits_then_fails() -> None:
    res = with_status(resource(), reconcile(resource(), [], [], NOW))
    plan_job = job("plan", 1, completed="0", completion=NOW)
    out = reconcile(res, [plan_job], [], later(1))
    assert out.status is not None and out.status["phase"] != "Failed"
    assert out.requeue_after is not None and out.requeue_after <= 2
    out = reconcile(res, [plan_job], [], later(RESULT_GRACE_SECONDS + 1))
    assert out.status is not None and out.status["failure"]["reason"] == PLAN_MISSING


def test_invalid_spec_fails_without_creating_anything() -> None:
    res = resource({"workers": {"min": 5, "max": 2, "maxPending": 2}})
    out = reconcile(res, [], [], NOW)
    assert not out.of(CreateJob)
    assert out.status is not None and out.status["failure"]["reason"] == INVALID_SPEC
    assert conditions(out)["Failed"]["status"] == "True"


# -- scaling ----------------------------------------------------------------------------------
def test_partly_done_map_wave_scales_with_ready_pods() -> None:
    res = planned()
    pods = [pod("map-0", i, "Succeeded", message={"ok": True}) for i in range(3)]
    pods += [pod("map-0", 3), pod("map-0", 4)]
    out = reconcile(res, [job("map-0", 10, completed="0-2", active=2, parallelism=2)], pods, NOW)
    [scale] = out.of(ScaleJob)
    # 7 tasks left, 2 ready + maxPending 2 = 4
    assert (scale.name, scale.parallelism) == ("wc-map-0", 4)
    assert scale.scaled_at.startswith("2025-03-01T12:00:00")
    assert out.status is not None
    assert out.status["workers"] == 4
    assert "maxPending" in out.status["parallelismReason"]
    assert out.status["progress"] == "3/10"
    assert "Scaled" in {e.reason for e in out.events}


def test_scaling_is_held_after_a_recent_change() -> None:
    res = planned()
    pods = [pod("map-0", 3), pod("map-0", 4)]
    recent = {SCALED_AT: format_time(later(-2))}
    j = job("map-0", 10, completed="0-2", active=2, parallelism=2, annotations=recent)
    out = reconcile(res, [j], pods, NOW)
    assert not out.of(ScaleJob)
    assert out.requeue_after is not None and 2 <= out.requeue_after <= 3.5
    # The in-memory hint covers a cache that has not seen the annotation yet.
    bare = job("map-0", 10, completed="0-2", active=2, parallelism=2)
    out = reconcile(res, [bare], pods, NOW, last_scaled={"wc-map-0": later(-1)})
    assert not out.of(ScaleJob)
    out = reconcile(res, [j], pods, later(4))
    assert [s.parallelism for s in out.of(ScaleJob)] == [4]


def test_parallelism_is_never_lowered_below_active_pods() -> None:
    res = planned(workers={"max": 4, "maxPending": 2})  # lowered below the pods running
    pods = [pod("map-0", i, ready=False) for i in range(6)]
    out = reconcile(res, [job("map-0", 10, active=6, parallelism=6)], pods, NOW)
    assert not out.of(ScaleJob)
    assert out.status is not None and out.status["workers"] == 6


def test_pods_starting_on_a_node_do_not_hold_the_wave_back() -> None:
    res = planned(workers={"max": 8, "maxPending": 2})
    # 4 pods: 2 running, 2 placed on a node and still starting (not ready).
    pods = [pod("map-0", 0), pod("map-0", 1)]
    pods += [pod("map-0", i, "Pending") for i in (2, 3)]  # ContainerCreating
    out = reconcile(res, [job("map-0", 10, active=4, parallelism=4)], pods, NOW)
    [scale] = out.of(ScaleJob)
    assert scale.parallelism == 6  # 4 on a node + maxPending 2
    # Two of the pods waiting for a node instead: that is maxPending, no more is asked.
    stuck = [pod("map-0", i, "Pending", unschedulable_since=NOW) for i in (2, 3)]
    out = reconcile(res, [job("map-0", 10, active=4, parallelism=4)], pods[:2] + stuck, NOW)
    assert not out.of(ScaleJob)
    assert out.status is not None and "maxPending" in out.status["parallelismReason"]


def test_pods_of_ended_waves_are_not_read_and_read_pods_are_remembered() -> None:
    uid = "6f1c"

    def numbered(p: Obj, n: int) -> Obj:
        p["metadata"].update(uid=f"pod-{n}", resourceVersion=str(1000 + n))
        return p

    maps = [pod("map-0", i, "Succeeded", message={"ok": True}) for i in range(10)]
    reduces = [pod("reduce-0", 0), pod("reduce-0", 1, "Pending")]
    pods = [numbered(p, n) for n, p in enumerate(maps + reduces)]
    views = observed.StagePods(pods, UID, observed.ViewCache())
    assert sorted(views) == ["map-0", "reduce-0"] and views.parsed() == 0
    assert [v.index for v in views["reduce-0"]] == [0, 1]
    assert views.parsed() == 2  # the map wave's pods were not read
    assert observed.StagePods(pods, uid).get("map-0") is None  # another resource's
    # Read once per resourceVersion: a reconcile of the same pods reads none again.
    cache = observed.ViewCache()
    first = observed.StagePods(pods, UID, cache)["map-0"]
    again = observed.StagePods(pods, UID, cache)["map-0"]
    assert again == first and (cache.misses, cache.hits) == (10, 10)
    moved = copy.deepcopy(pods[0])
    moved["metadata"]["resourceVersion"] = "2000"
    moved["status"]["phase"] = "Failed"
    assert observed.StagePods([moved], UID, cache)["map-0"][0].phase == "Failed"
    small = observed.ViewCache(size=3)
    observed.StagePods(pods, UID, small)["map-0"]
    assert len(small) == 3  # bounded: the least recently read are dropped


def test_kueue_waves_ask_for_their_width_once() -> None:
    res = planned()
    res["metadata"]["labels"] = {KUEUE_QUEUE_LABEL: "batch"}
    out = reconcile(res, [job("plan", 1, completed="0", completion=NOW)], [], NOW)
    [create] = out.of(CreateJob)
    assert create.manifest["spec"]["parallelism"] == 8  # min(tasks, workers.max)
    assert create.manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "batch"
    out = reconcile(res, [job("map-0", 10, active=8, parallelism=8)], [], NOW)
    assert not out.of(ScaleJob)
    # Suspended by Kueue (not by kubemr): left alone.
    out = reconcile(res, [job("map-0", 10, parallelism=8, suspend=True)], [], NOW)
    assert not out.of(SuspendJob)
    assert out.status is not None and "Kueue" in out.status["parallelismReason"]


# -- failures ---------------------------------------------------------------------------------
def test_failed_job_reports_the_root_cause_from_the_pod() -> None:
    res = planned()
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 400 + "ZeroDivisionError: x"
    msg = {
        "ok": False,
        "stage": "map-0",
        "index": 7,
        "attempt": "wc-map-0-7-abcde",
        "reason": termination.USER_CODE,
        "message": "ZeroDivisionError: division by zero",
        "traceback": trace,
        "log": "s3://results/_kubemr/logs/wc-map-0-7-abcde.log",
    }
    pods = [
        pod("map-0", 7, "Failed", attempt=a, message=msg, exit_code=1, finished=later(a))
        for a in range(3)
    ]
    pods.append(pod("map-0", 2, "Failed", message="killed", exit_code=143))
    j = job(
        "map-0",
        10,
        completed="0-6",
        failed=4,
        conditions=[failed_condition(message="Job has exceeded the failed indexes")],
    )
    j["status"]["failedIndexes"] = "7"
    out = reconcile(res, [j], pods, later(10))
    status = out.status
    assert status is not None
    assert status["phase"] == "Failed"
    failure = status["failure"]
    assert failure["reason"] == "UserCodeError"
    assert failure["task"] == "map-0-00007"
    assert failure["attempt"] == "wc-map-0-7-abcde"
    assert failure["exitCode"] == 1
    assert failure["message"].startswith("ZeroDivisionError: division by zero")
    assert "after 3 attempts" in failure["message"]
    assert len(failure["traceback"].encode()) <= 1024
    assert failure["traceback"].endswith("ZeroDivisionError: x")
    assert failure["log"].endswith(".log")
    cond = conditions(out)["Failed"]
    assert cond["status"] == "True" and cond["reason"] == "UserCodeError"
    assert status["completionTime"] == ts(later(10))
    assert status["wave"] == "map" and status["progress"] == "7/10"
    assert status["waves"][-1]["completionTime"] is not None
    [event] = out.events
    assert event.type == "Warning" and event.reason == "UserCodeError"
    assert not out.of(CreateJob) and not out.of(SuspendJob)


def test_exit_code_without_a_message_names_the_reason() -> None:
    res = planned()
    text = "some log line\nValueError: bad record at line 3"
    pods = [pod("map-0", 4, "Failed", message=text, exit_code=termination.EXIT_BAD_INPUT)]
    j = job("map-0", 10, conditions=[failed_condition()])
    out = reconcile(res, [j], pods, NOW)
    failure = out.status["failure"]  # type: ignore[index]
    assert failure["reason"] == "BadInput"
    assert failure["exitCode"] == 3
    assert failure["task"] == "map-0-00004"
    assert "ValueError: bad record at line 3" in failure["message"]


def test_job_failure_without_pods_keeps_the_jobs_reason() -> None:
    res = planned()
    out = reconcile(
        res, [job("map-0", 10, conditions=[failed_condition("DeadlineExceeded")])], [], NOW
    )
    assert out.status["failure"]["reason"] == "DeadlineExceeded"  # type: ignore[index]
    j = job("map-0", 10, conditions=[failed_condition("BackoffLimitExceeded", "too many")])
    out = reconcile(res, [j], [], NOW)
    assert out.status["failure"]["reason"] == "TaskFailed"  # type: ignore[index]
    assert out.status["failure"]["message"] == "too many"  # type: ignore[index]


def test_failure_target_counts_as_failed() -> None:
    res = planned()
    cond = {"type": "FailureTarget", "status": "True", "reason": "MaxFailedIndexesExceeded"}
    out = reconcile(res, [job("map-0", 10, conditions=[cond])], [], NOW)
    assert out.status is not None and out.status["phase"] == "Failed"


def test_a_failed_job_stays_failed() -> None:
    res = planned()
    out = reconcile(res, [job("map-0", 10, conditions=[failed_condition()])], [], NOW)
    res = with_status(res, out)
    # Whatever is observed later (the Jobs gone, suspend toggled), nothing starts again.
    res["spec"]["suspend"] = True
    again = reconcile(res, [], [], later(60))
    assert not again.job_actions
    assert again.status == out.status


# -- capacity and the pending deadline ----------------------------------------------------------
def test_unschedulable_pods_raise_capacity_constrained_then_fail() -> None:
    res = planned(pendingDeadlineSeconds=60)
    j = job("map-0", 10, active=2)
    pods = [pod("map-0", i, "Pending", unschedulable_since=NOW) for i in range(2)]

    early = reconcile(res, [j], pods, later(5))
    assert "CapacityConstrained" not in conditions(early)
    assert early.requeue_after is not None and early.requeue_after <= 5

    out = reconcile(res, [j], pods, later(15))
    cond = conditions(out)["CapacityConstrained"]
    assert cond["status"] == "True"
    assert "Insufficient cpu" in cond["message"]
    assert cond["lastTransitionTime"] == ts(later(15))
    assert any(e.reason == "CapacityConstrained" and e.type == "Warning" for e in out.events)
    assert not out.of(ScaleJob)  # nothing ready: no more pods asked for
    res = with_status(res, out)

    # The condition's time stays while it holds.
    out = reconcile(res, [j], pods, later(30))
    assert conditions(out)["CapacityConstrained"]["lastTransitionTime"] == ts(later(15))
    assert not out.events

    out = reconcile(res, [j], pods, later(61))
    status = out.status
    assert status is not None
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "Unschedulable"
    assert "Insufficient cpu" in status["failure"]["message"]
    assert out.of(SuspendJob) == [SuspendJob("wc-map-0", True)]  # its pending pods go


def test_capacity_condition_clears_when_pods_schedule() -> None:
    res = planned()
    j = job("map-0", 10, active=2)
    stuck = [pod("map-0", 0, "Pending", unschedulable_since=NOW)]
    res = with_status(res, reconcile(res, [j], stuck, later(20)))
    out = reconcile(res, [j], [pod("map-0", 0)], later(25))
    cond = conditions(out)["CapacityConstrained"]
    assert cond["status"] == "False" and cond["lastTransitionTime"] == ts(later(25))


def test_pending_deadline_counts_from_the_last_running_pod() -> None:
    res = planned(pendingDeadlineSeconds=60)
    done = pod("map-0", 0, "Succeeded", message={"ok": True}, finished=later(50))
    waiting = pod("map-0", 1, "Pending", unschedulable_since=later(50))
    j = job("map-0", 10, completed="0", active=1)
    out = reconcile(res, [j], [done, waiting], later(100))
    assert out.status is not None and out.status["phase"] == "Running"
    out = reconcile(res, [j], [done, waiting], later(111))
    assert out.status is not None and out.status["failure"]["reason"] == "Unschedulable"


def test_image_pull_errors_show_at_once_and_fail_after_the_deadline() -> None:
    res = planned(pendingDeadlineSeconds=120)
    j = job("map-0", 10, active=1)
    stuck = [pod("map-0", 0, "Pending", waiting=("ImagePullBackOff", "Back-off pulling image"))]
    out = reconcile(res, [j], stuck, later(1))
    cond = conditions(out)["WorkersBlocked"]
    assert cond["status"] == "True" and cond["reason"] == "ImagePullBackOff"
    assert "Back-off pulling image" in cond["message"]
    assert any(e.reason == "ImagePullBackOff" for e in out.events)
    out = reconcile(res, [j], stuck, later(121))
    assert out.status is not None and out.status["failure"]["reason"] == "ImagePullBackOff"

    missing = [
        pod("map-0", 0, "Pending", waiting=("CreateContainerConfigError", 'secret "s3" not found'))
    ]
    out = reconcile(res, [j], missing, later(1))
    assert conditions(out)["WorkersBlocked"]["reason"] == "CreateContainerConfigError"


def test_pods_that_never_start_fail_with_the_pending_deadline() -> None:
    res = planned(pendingDeadlineSeconds=30)
    j = job("map-0", 10, active=1)
    out = reconcile(res, [j], [pod("map-0", 0, "Pending")], later(31))
    assert out.status is not None and out.status["failure"]["reason"] == PENDING_DEADLINE


def test_no_pending_deadline_when_it_is_null() -> None:
    res = planned(pendingDeadlineSeconds=None)
    j = job("map-0", 10, active=1)
    stuck = [pod("map-0", 0, "Pending", unschedulable_since=NOW)]
    out = reconcile(res, [j], stuck, later(100_000))
    assert out.status is not None and out.status["phase"] == "Running"


# -- the run deadline -------------------------------------------------------------------------
def test_active_deadline_is_passed_to_each_job_and_enforced() -> None:
    res = resource({"activeDeadlineSeconds": 600})
    out = reconcile(res, [], [], NOW)
    assert out.of(CreateJob)[0].manifest["spec"]["activeDeadlineSeconds"] == 600
    res = with_status(res, out)
    steps = [{"maps": 10, "reducers": 2}]
    plan_done = job("plan", 1, completed="0", completion=later(100))
    out = reconcile(res, [plan_done], [plan_pod(steps)], later(100))
    assert out.of(CreateJob)[0].manifest["spec"]["activeDeadlineSeconds"] == 500
    res = with_status(res, out)
    running = job("map-0", 10, active=2, start=later(100))
    out = reconcile(res, [plan_done, running], [], later(200))
    assert out.requeue_after is not None and out.requeue_after <= 400
    out = reconcile(res, [plan_done, running], [], later(600))
    assert out.status is not None and out.status["failure"]["reason"] == "DeadlineExceeded"
    assert out.of(SuspendJob) == [SuspendJob("wc-map-0", True)]


# -- suspend and resume -----------------------------------------------------------------------
def test_suspend_and_resume_the_running_wave() -> None:
    res = planned()
    res["spec"]["suspend"] = True
    res["metadata"]["generation"] = 2
    j = job("map-0", 10, completed="0-3", active=2)
    out = reconcile(res, [j], [pod("map-0", 4), pod("map-0", 5)], NOW)
    assert out.of(SuspendJob) == [SuspendJob("wc-map-0", True)]
    status = out.status
    assert status is not None
    assert status["phase"] == "Suspended"
    assert status["workers"] == 0
    assert status["progress"] == "4/10"  # done indexes stay done
    assert conditions(out)["Suspended"]["status"] == "True"
    assert [e.reason for e in out.events] == ["Suspended"]
    res = with_status(res, out)

    paused = job("map-0", 10, completed="0-3", suspend=True, annotations={SUSPENDED: "true"})
    out = reconcile(res, [paused], [], later(5))
    assert not out.job_actions and not out.events

    res["spec"]["suspend"] = False
    out = reconcile(res, [paused], [], later(10))
    assert SuspendJob("wc-map-0", False) in out.of(SuspendJob)
    assert not out.of(CreateJob)  # resumed, never re-created
    assert out.status is not None and out.status["phase"] == "Running"
    cond = conditions(out)["Suspended"]
    assert cond["status"] == "False" and cond["reason"] == "Resumed"
    assert "Resumed" in {e.reason for e in out.events}


def test_cancel_stops_the_running_wave_and_fails_the_job() -> None:
    res = planned()
    res["spec"]["cancel"] = True
    res["metadata"]["generation"] = 2
    j = job("map-0", 10, completed="0-3", active=2)
    out = reconcile(res, [j], [pod("map-0", 4), pod("map-0", 5)], NOW)
    assert out.of(SuspendJob) == [SuspendJob("wc-map-0", True)]  # its pods stop
    assert not out.of(CreateJob)
    status = out.status
    assert status is not None
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "Cancelled"
    assert "spec.cancel" in status["failure"]["message"]
    assert status["progress"] == "4/10"
    failed = conditions(out)["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "Cancelled"
    # It stays cancelled: clearing the flag does not bring it back.
    res = with_status(res, out)
    res["spec"]["cancel"] = False
    again = reconcile(res, [j], [], later(5))
    assert not again.job_actions
    assert again.status is not None and again.status["phase"] == "Failed"


def test_cancel_before_planning_creates_nothing() -> None:
    out = reconcile(resource({"cancel": True}), [], [], NOW)
    assert not out.job_actions
    assert out.status is not None and out.status["failure"]["reason"] == "Cancelled"


def test_cancel_after_the_commit_finished_is_too_late() -> None:
    res = planned()
    res["spec"]["cancel"] = True
    jobs = [
        job("map-0", 10, completed="0-9", completion=NOW),
        job("reduce-0", 2, completed="0-1", completion=NOW),
        job("commit", 1, completed="0", completion=NOW),
    ]
    out = reconcile(res, jobs, [], later(RESULT_GRACE_SECONDS + 1))
    assert out.status is not None and out.status["phase"] == "Succeeded"


def test_installation_defaults_reach_the_stage_job() -> None:
    defaults = JobDefaults.model_validate(
        {
            "storage": {"endpoint": "http://minio:9000", "secretRef": {"name": "s3"}},
            "template": {"image": "registry.local/kubemr:9", "serviceAccountName": "workers"},
        }
    )
    out = reconcile(resource(), [], [], NOW, defaults=defaults)
    (create,) = out.of(CreateJob)
    pod_spec = create.manifest["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "registry.local/kubemr:9"
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio:9000"} in container["env"]
    assert pod_spec["serviceAccountName"] == "workers"
    # The resource's own values win.
    own = resource({"template": {"image": "mine:1"}, "storage": {"endpoint": "http://s3:1"}})
    (create,) = reconcile(own, [], [], NOW, defaults=defaults).of(CreateJob)
    container = create.manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mine:1"
    assert {"name": "AWS_ENDPOINT_URL_S3", "value": "http://s3:1"} in container["env"]


def test_a_stage_started_while_suspended_is_created_suspended() -> None:
    res = resource({"suspend": True})
    out = reconcile(res, [], [], NOW)
    [create] = out.of(CreateJob)
    assert create.manifest["spec"]["suspend"] is True
    assert create.manifest["metadata"]["annotations"][SUSPENDED] == "true"
    assert out.status is not None and out.status["phase"] == "Suspended"


# -- success ----------------------------------------------------------------------------------
def finished_jobs(completion: datetime = NOW) -> list[Obj]:
    return [
        job("map-0", 10, completed="0-9", completion=completion),
        job("reduce-0", 2, completed="0-1", completion=completion),
        job("commit", 1, completed="0", completion=completion),
    ]


def test_commit_result_completes_the_job() -> None:
    res = planned()
    counters = {f"g{g}": {f"c{c}": c for c in range(50)} for g in range(30)}
    result = {
        "records_in": 1000,
        "records_out": 42,
        "bytes_in": 123_456,
        "bytes_out": 789,
        "files_out": 2,
        "counters": counters,
    }
    commit = pod("commit", 0, "Succeeded", message={"ok": True, "result": result})
    out = reconcile(res, finished_jobs(), [commit], later(3))
    status = out.status
    assert status is not None
    assert status["phase"] == "Succeeded"
    assert status["result"]["recordsIn"] == 1000 and status["result"]["filesOut"] == 2
    assert len(status["result"]["counters"]) == MAX_COUNTER_GROUPS
    assert all(len(c) <= MAX_COUNTERS_PER_GROUP for c in status["result"]["counters"].values())
    cond = conditions(out)["Complete"]
    assert cond["status"] == "True" and cond["reason"] == "Succeeded"
    assert status["completionTime"] == ts(later(3))
    assert status["progress"] == "12/12" and "wave" not in status
    assert [w["kind"] for w in status["waves"]] == ["plan", "map", "reduce", "commit"]
    assert all(w["completionTime"] for w in status["waves"])
    assert [e.reason for e in out.events] == ["Succeeded"]
    assert not out.job_actions


def test_result_as_the_commit_stage_writes_it_is_read() -> None:
    got = read_result(
        {"recordsIn": 7, "recordsOut": 2, "bytesIn": 70, "bytesOut": 20, "filesOut": 2}
    )
    assert got is not None
    assert got.model_dump(exclude={"counters"}) == {
        "records_in": 7,
        "records_out": 2,
        "bytes_in": 70,
        "bytes_out": 20,
        "files_out": 2,
    }
    assert read_result("not a result") is None


def test_result_in_the_success_summary_shape_is_read() -> None:
    summary = {
        "input": {"records": 5, "bytes": 50},
        "output": {"records": 3, "bytes": 30, "files": [{"name": "part-r-00000"}]},
        "counters": {"kubemr": {"map_input_records": 5}},
    }
    got = read_result(summary)
    assert got is not None
    assert (got.records_in, got.bytes_in, got.records_out, got.files_out) == (5, 50, 3, 1)


def test_waves_end_with_the_job_even_before_their_jobs_say_complete() -> None:
    res = planned()
    jobs = finished_jobs()
    jobs[-1] = job("commit", 1, completed="0")  # indexes done, Complete not set yet
    commit = pod("commit", 0, "Succeeded", message={"ok": True, "result": {}})
    out = reconcile(res, jobs, [commit], later(2))
    assert out.status is not None and out.status["phase"] == "Succeeded"
    assert out.status["waves"][-1]["completionTime"] == ts(later(2))


def test_commit_without_a_report_waits_a_little_then_succeeds() -> None:
    res = planned()
    out = reconcile(res, finished_jobs(), [], later(1))
    assert out.status is not None and out.status.get("phase") != "Succeeded"
    out = reconcile(res, finished_jobs(), [], later(RESULT_GRACE_SECONDS + 1))
    assert out.status is not None and out.status["phase"] == "Succeeded"
    assert "result" not in out.status


def test_ttl_deletes_the_finished_resource() -> None:
    res = planned(ttlSecondsAfterFinished=100)
    commit = pod("commit", 0, "Succeeded", message={"ok": True, "result": {}})
    out = reconcile(res, finished_jobs(), [commit], NOW)
    res = with_status(res, out)
    assert out.requeue_after == 100
    out = reconcile(res, finished_jobs(), [commit], later(50))
    assert not out.of(DeleteResource) and out.requeue_after == 50
    out = reconcile(res, [], [], later(100))
    assert out.of(DeleteResource)


def test_a_resource_being_deleted_is_left_to_the_garbage_collector() -> None:
    res = planned()
    res["metadata"]["deletionTimestamp"] = ts(NOW)
    out = reconcile(res, [job("map-0", 10, active=2)], [], NOW)
    assert out == Outcome()


# -- restarts and stale observations ----------------------------------------------------------
def test_same_observations_give_the_same_outcome() -> None:
    res = planned()
    jobs = [job("plan", 1, completed="0", completion=NOW), job("map-0", 10, completed="0-2")]
    pods = [pod("map-0", 3), pod("map-0", 4), pod("map-0", 5, "Pending", unschedulable_since=NOW)]
    first = reconcile(copy.deepcopy(res), copy.deepcopy(jobs), copy.deepcopy(pods), later(20))
    second = reconcile(res, jobs, pods, later(20))
    assert first == second


def test_an_existing_job_is_never_created_again() -> None:
    res = resource()
    jobs: list[Obj] = []
    pods: list[Obj] = []
    moment = NOW
    created: list[str] = []
    for _ in range(8):
        out = reconcile(res, jobs, pods, moment)
        res = with_status(res, out)
        for action in out.of(CreateJob):
            assert action.name not in created
            created.append(action.name)
            tasks = action.manifest["spec"]["completions"]
            stage = action.manifest["metadata"]["labels"][LABEL_STAGE]
            jobs.append(job(stage, tasks, active=1))
            # Reconciled again (a restarted controller, a requeue): nothing is created.
            for _ in range(2):
                again = reconcile(res, jobs, pods, moment)
                assert not again.of(CreateJob)
                res = with_status(res, again)
            jobs[-1] = job(stage, tasks, completed=f"0-{tasks - 1}", completion=moment)
            if stage == "plan":
                pods.append(plan_pod([{"maps": 3, "reducers": 1}]))
            if stage == "commit":
                pods.append(pod("commit", 0, "Succeeded", message={"ok": True, "result": {}}))
        moment += timedelta(seconds=1)
    assert created == ["wc-plan", "wc-map-0", "wc-reduce-0", "wc-commit"]
    assert res["status"]["phase"] == "Succeeded"


def test_condition_times_survive_repeated_reconciles() -> None:
    res = planned(suspend=True)
    j = job("map-0", 10, suspend=True, annotations={SUSPENDED: "true"})
    out = reconcile(res, [j], [], NOW)
    res = with_status(res, out)
    again = reconcile(res, [j], [], later(300))
    assert conditions(again)["Suspended"]["lastTransitionTime"] == ts(NOW)
    assert again.status == {**out.status, "observedGeneration": 1}  # type: ignore[dict-item]


def test_a_job_of_an_earlier_resource_is_not_adopted() -> None:
    stale = job("plan", 1, completed="0", completion=NOW, owner_uid="old-uid")
    out = reconcile(resource(), [stale], [], NOW)
    assert not out.of(CreateJob)
    assert out.status is not None and "earlier resource" in out.status["parallelismReason"]
    assert out.requeue_after is not None and out.requeue_after <= 2


# -- the status stays bounded -----------------------------------------------------------------
def test_status_is_bounded_with_ten_thousand_tasks() -> None:
    res = planned([{"maps": 10_000, "reducers": 10_000}])
    j = job("map-0", 10_000, completed=",".join(str(i) for i in range(0, 10_000, 2)), active=50)
    pods = [pod("map-0", i, "Pending", unschedulable_since=NOW) for i in range(1, 2000, 2)]
    pods += [
        pod("map-0", i, "Failed", message={"ok": False, "reason": "UserCodeError"}, exit_code=1)
        for i in range(0, 2000, 2)
    ]
    out = reconcile(res, [j], pods, later(20))
    size = len(json.dumps(out.status))
    assert size < 8 * 1024, size
    assert out.status is not None and out.status["progress"] == "5000/10000"


def test_status_is_bounded_with_the_most_steps() -> None:
    steps = [{"maps": 10_000, "reducers": 10_000}] + [{"reducers": 10_000}] * (MAX_STEPS - 1)
    res = planned(steps)
    jobs = []
    for s in range(MAX_STEPS):
        jobs.append(job(f"map-{s}", 10_000, completed="0-9999", completion=NOW))
        jobs.append(job(f"reduce-{s}", 10_000, completed="0-9999", completion=NOW))
    out = reconcile(res, jobs, [], NOW)
    assert out.status is not None
    assert len(out.status["waves"]) == 2 * MAX_STEPS + 2
    MapReduceJobStatus.model_validate(out.status)
    assert len(json.dumps(out.status)) < 64 * 1024


def test_too_many_steps_fail_the_plan() -> None:
    steps = [{"maps": 1, "reducers": 1}] * (MAX_STEPS + 1)
    out = reconcile(
        resource(), [job("plan", 1, completed="0", completion=NOW)], [plan_pod(steps)], NOW
    )
    assert out.status is not None and out.status["failure"]["reason"] == INVALID_PLAN


def test_waves_are_frozen_once_their_job_is_gone() -> None:
    res = planned()
    map_done = job("map-0", 10, completed="0-9", failed=3, completion=later(30), start=later(1))
    out = reconcile(res, [map_done], [], later(31))
    assert [c.name for c in out.of(CreateJob)] == ["wc-reduce-0"]
    res = with_status(res, out)
    frozen = out.status["waves"][1]  # type: ignore[index]
    assert frozen == {
        "kind": "map",
        "step": 0,
        "jobName": "wc-map-0",
        "total": 10,
        "succeeded": 10,
        "failed": 3,
        "startTime": ts(later(1)),
        "completionTime": ts(later(30)),
    }
    # The map Job is deleted (TTL, by hand): its wave stays, and it is not run again.
    out = reconcile(res, [job("reduce-0", 2, active=2)], [], later(40))
    assert not out.of(CreateJob)
    assert out.status is not None and out.status["waves"][1] == frozen
    # A finished wave's summary does not follow later changes of its Job either.
    changed = copy.deepcopy(map_done)
    changed["status"]["failed"] = 99
    out = reconcile(res, [changed, job("reduce-0", 2, active=2)], [], later(41))
    assert out.status is not None and out.status["waves"][1] == frozen


# -- the API gateway --------------------------------------------------------------------------
class FakeTransport:
    def __init__(self, fail: dict[tuple[str, str], int] | None = None) -> None:
        self.requests: list[tuple[str, str, list[tuple[str, str]], Obj | None, str]] = []
        self.fail = fail or {}

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        self.requests.append((method, path, list(query), body, content_type))
        for (m, fragment), status in self.fail.items():
            if m == method and fragment in path:
                raise ApiException(status=status, reason="nope")
        return {}


def test_merge_patch_removes_and_replaces() -> None:
    old = {"phase": "Running", "failure": {"reason": "x", "traceback": "t"}, "waves": [1]}
    new = {"phase": "Failed", "failure": {"reason": "y"}, "waves": [1, 2]}
    assert merge_patch(old, new) == {
        "phase": "Failed",
        "failure": {"reason": "y", "traceback": None},
        "waves": [1, 2],
    }
    assert merge_patch(new, new) == {}


def test_jobs_are_applied_server_side_and_patched_by_merge() -> None:
    transport = FakeTransport()
    api = ControllerApi(transport)
    manifest = reconcile(resource(), [], [], NOW).of(CreateJob)[0].manifest
    api.apply_job(manifest)
    method, path, query, body, ctype = transport.requests[-1]
    assert (method, path, ctype) == ("PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/wc-plan", APPLY)
    assert ("fieldManager", "kubemr-controller") in query and ("force", "true") in query
    assert body == manifest
    api.patch_job(NS, "wc-map-0", parallelism=4, annotations={SCALED_AT: "t"})
    _, _, _, body, ctype = transport.requests[-1]
    assert ctype == MERGE_PATCH
    assert body == {"spec": {"parallelism": 4}, "metadata": {"annotations": {SCALED_AT: "t"}}}


def test_status_patch_is_guarded_by_the_resource_version() -> None:
    transport = FakeTransport()
    api = ControllerApi(transport)
    res = resource(status={"phase": "Running", "wave": "map"})
    api.patch_status(res, {"phase": "Running", "progress": "1/2"})
    _, path, _, body, ctype = transport.requests[-1]
    assert path.endswith(f"/namespaces/{NS}/mapreducejobs/wc/status") and ctype == MERGE_PATCH
    assert body == {
        "status": {"progress": "1/2", "wave": None},
        "metadata": {"resourceVersion": "100"},
    }
    count = len(transport.requests)
    assert api.patch_status(res, res["status"]) is None and len(transport.requests) == count


def test_missing_rights_name_the_verb_and_the_resource() -> None:
    api = ControllerApi(FakeTransport({("PATCH", "/jobs/"): 403}))
    with pytest.raises(PermissionDenied) as err:
        api.patch_job(NS, "wc-map-0", parallelism=3)
    assert "may not patch jobs.batch in namespace team-a" in str(err.value)
    api = ControllerApi(FakeTransport({("PATCH", "/status"): 403}))
    with pytest.raises(PermissionDenied, match=r"patch mapreducejobs\.kubemr\.dev/status"):
        api.patch_status(resource(), {"phase": "Running"})


def test_repeated_events_and_vanished_objects_are_not_errors() -> None:
    api = ControllerApi(FakeTransport({("POST", "/events"): 409, ("PATCH", "/jobs/"): 404}))
    api.create_event(resource(), "wc.abc", "Normal", "Started", "hi")
    assert api.patch_job(NS, "gone", suspend=True) is None


# -- the action loop --------------------------------------------------------------------------
class FakeCache:
    def __init__(self, objs: list[Obj]) -> None:
        self.objs = objs

    def get(self, key: str) -> Obj | None:
        return next((o for o in self.objs if f"{NS}/{o['metadata']['name']}" == key), None)

    def by_index(self, name: str, value: str) -> list[Obj]:
        return [o for o in self.objs if o["metadata"]["labels"].get(LABEL_JOB) == NAME]


def test_controller_applies_jobs_then_status_then_events() -> None:
    transport = FakeTransport()
    controller = JobController(
        ControllerApi(transport),
        FakeCache([resource()]),  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    result = controller.reconcile(f"{NS}/{NAME}")
    assert result is not None and result.requeue_after is not None
    kinds = [(m, p.rsplit("/", 1)[-1]) for m, p, *_ in transport.requests]
    assert kinds == [("PATCH", "wc-plan"), ("PATCH", "status"), ("POST", "events")]
    assert controller.reconcile(f"{NS}/gone") is None


def test_a_stale_resource_requeues_without_events() -> None:
    transport = FakeTransport({("PATCH", "/status"): 409})
    controller = JobController(
        ControllerApi(transport),
        FakeCache([resource()]),  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    result = controller.reconcile(f"{NS}/{NAME}")
    assert result is not None and result.requeue_after == 0.5
    assert not any(p.endswith("/events") for _, p, *_ in transport.requests)
    with pytest.raises(Conflict):
        ControllerApi(transport).patch_status(resource(), {"phase": "Running"})


def test_event_names_are_stable_per_fact() -> None:
    res = resource()
    a = event_name(res, Event("Normal", "StageStarted", "started map-0"))
    b = event_name(res, Event("Normal", "StageStarted", "started map-0"))
    c = event_name(res, Event("Normal", "StageStarted", "started reduce-0"))
    assert a == b != c and a.startswith("wc.")


def test_a_cache_behind_our_own_status_write_is_waited_for() -> None:
    transport = FakeTransport()
    resources = FakeCache([resource()])
    controller = JobController(
        ControllerApi(transport),
        resources,  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        FakeCache([]),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    controller.reconcile(f"{NS}/{NAME}")
    count = len(transport.requests)
    result = controller.reconcile(f"{NS}/{NAME}")  # the cache still has resourceVersion 100
    assert result is not None and result.requeue_after is not None and result.requeue_after < 1
    assert len(transport.requests) == count
    resources.objs[0]["metadata"]["resourceVersion"] = "101"  # the write arrived
    controller.reconcile(f"{NS}/{NAME}")
    assert len(transport.requests) > count


def test_a_terminating_namespace_is_not_a_permission_problem() -> None:
    import json as _json

    from kubernetes.client.exceptions import ApiException

    from kubemr.executors.k8s.api import ControllerApi, NamespaceTerminating, PermissionDenied

    class Refusing:
        def __init__(self, message: str) -> None:
            self.message = message

        def send(self, method, path, *, query=(), body=None, content_type=""):
            exc = ApiException(status=403, reason="Forbidden")
            exc.body = _json.dumps({"message": self.message})
            raise exc

    manifest = {"metadata": {"namespace": "ns", "name": "wc-plan"}}
    gone = ControllerApi(
        Refusing(
            'jobs.batch "wc-plan" is forbidden: unable to create new '
            "content in namespace ns because it is being terminated"
        )
    )
    with pytest.raises(NamespaceTerminating):
        gone.apply_job(manifest)
    denied = ControllerApi(Refusing('jobs.batch "wc-plan" is forbidden: User cannot create'))
    with pytest.raises(PermissionDenied, match="grant 'create'"):
        denied.apply_job(manifest)
