"""Failed attempts from pods and storage, task log names, and ``kubemr describe``'s text:
pure, on the JSON a real API server and worker write."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from kubemr.cli.views import describe
from kubemr.cluster.attempts import failed_attempts, from_pod
from kubemr.cluster.tasklogs import (
    FailureMarker,
    TaskLog,
    parse_log_url,
    parse_marker_url,
    parse_stage,
    parse_task,
    selection,
    stage_key,
)
from kubemr.errors import OptionError

WORK = "s3://b/_kubemr/ns/wc/uid"
NOW = datetime(2026, 5, 1, 12, 10, tzinfo=UTC)


def pod(name: str, stage: str, index: int, exit_code: int, message: str | None) -> dict:
    terminated = {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {
            "name": name,
            "labels": {"kubemr.dev/stage": stage},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": "Failed" if exit_code else "Succeeded",
            "containerStatuses": [{"name": "worker", "state": {"terminated": terminated}}],
        },
    }


REPORT = json.dumps(
    {"ok": False, "stage": "map-0", "index": 3, "attempt": "wc-map-0-3-b",
     "reason": "UserCodeError", "message": "mapper raised ValueError: bad",
     "traceback": "Traceback ...\nValueError: bad",
     "log": f"{WORK}/logs/map-0/00003/wc-map-0-3-b.log"}
)  # fmt: skip


def test_a_pod_reports_its_failure_in_its_termination_message() -> None:
    found = from_pod(pod("wc-map-0-3-b", "map-0", 3, 1, REPORT))
    assert found is not None
    assert (found.task, found.attempt, found.exit_code) == ("map-0-00003", "wc-map-0-3-b", 1)
    assert (found.reason, found.message) == ("UserCodeError", "mapper raised ValueError: bad")
    assert found.log and found.log.endswith("wc-map-0-3-b.log")
    # No report (the kubelet kept the log's tail): its last line, and the pod's reason.
    tail = from_pod(pod("wc-plan-x", "plan", 0, 137, "starting\nKilled\n"))
    assert tail is not None and (tail.reason, tail.message) == ("Error", "Killed")
    assert from_pod(pod("wc-map-0-1-a", "map-0", 1, 0, '{"ok": true}')) is None


def test_attempts_from_pods_storage_and_status_are_merged_once() -> None:
    pods = [
        pod("wc-map-0-3-b", "map-0", 3, 1, REPORT),
        pod("wc-map-0-1-a", "map-0", 1, 0, '{"ok": true}'),
    ]
    markers = [
        FailureMarker("map-0", 3, "wc-map-0-3-a", "user-code", "mapper raised ValueError: bad", ""),
        FailureMarker("map-0", 3, "wc-map-0-3-b", "user-code", "from the marker", ""),
        FailureMarker("reduce-0", 0, "wc-reduce-0-0-z", "infrastructure", "disk full", ""),
    ]
    logs = [
        TaskLog("map-0", 3, "wc-map-0-3-a", f"{WORK}/logs/map-0/00003/wc-map-0-3-a.log", 9),
        TaskLog("plan", 0, "wc-plan-p", f"{WORK}/logs/plan/00000/wc-plan-p.log", 9),
    ]
    failure = {"reason": "UserCodeError", "task": "map-0-00003", "attempt": "wc-map-0-3-b"}
    found = failed_attempts(pods, markers, logs, failure)
    assert [(f.task, f.attempt) for f in found] == [
        ("map-0-00003", "wc-map-0-3-a"),
        ("map-0-00003", "wc-map-0-3-b"),
        ("reduce-0-00000", "wc-reduce-0-0-z"),
    ]
    gone, present, reduce = found
    assert gone.sources == {"storage"} and gone.log == logs[0].url
    assert gone.reason == "UserCodeError"
    assert present.sources == {"pod", "storage", "status"}
    assert present.message == "mapper raised ValueError: bad"  # the pod's report first
    assert present.exit_code == 1
    assert reduce.reason == "InfrastructureError"


def test_log_and_marker_urls() -> None:
    log = parse_log_url(f"{WORK}/logs/reduce-2/00012/wc-reduce-2-12-x.log")
    assert log is not None and (log.stage, log.index, log.attempt) == (
        "reduce-2",
        12,
        "wc-reduce-2-12-x",
    )
    assert log.task == "reduce-2-00012"
    assert parse_log_url(f"{WORK}/logs/plan/00000/wc-plan-q.log") is not None
    assert parse_log_url(f"{WORK}/plan.json") is None
    assert parse_log_url("/local/work/logs/other/00000/a.log") is None
    assert parse_marker_url(f"{WORK}/steps/1/tasks/map-00004/wc-map-1-4-a.failed.json") == (
        "map-1",
        4,
        "wc-map-1-4-a",
    )
    assert parse_marker_url(f"{WORK}/steps/1/tasks/map-00004/wc-map-1-4-a.json") is None


@pytest.mark.parametrize(
    ("text", "task"),
    [("plan", ("plan", 0)), ("commit", ("commit", 0)), ("map-3", ("map-0", 3)),
     ("map-0-00012", ("map-0", 12)), ("reduce-2-1", ("reduce-2", 1)), ("MAP-1-2", ("map-1", 2))],
)  # fmt: skip
def test_tasks_as_users_name_them(text: str, task: tuple[str, int]) -> None:
    assert parse_task(text) == task


def test_stages_selection_and_order() -> None:
    assert parse_stage("map") == "map-0" and parse_stage("reduce-3") == "reduce-3"
    with pytest.raises(OptionError, match="--stage 'shuffle'"):
        parse_stage("shuffle")
    with pytest.raises(OptionError, match="--task 'map-x'"):
        parse_task("map-x")
    with pytest.raises(OptionError, match="not both"):
        selection("map-1", "map-0", None)
    chosen = selection("map-0-3", None, "wc-map")
    assert chosen.matches("map-0", 3, "wc-map-0-3-a")
    assert not chosen.matches("map-0", 4, "wc-map-0-4-a")
    assert not chosen.matches("map-0", 3, "other")
    assert selection(None, None, None).matches("commit", 0, "x")
    stages = ["commit", "reduce-1", "map-1", "reduce-0", "plan", "map-0"]
    assert sorted(stages, key=stage_key) == [
        "plan",
        "map-0",
        "reduce-0",
        "map-1",
        "reduce-1",
        "commit",
    ]


def test_describe_shows_everything_there_is() -> None:
    resource = {
        "metadata": {"name": "wc", "namespace": "ns", "uid": "uid",
                     "creationTimestamp": "2026-05-01T12:00:00Z"},
        "spec": {
            "inputs": ["s3://b/in/"], "output": "s3://b/out", "memory": 536870912,
            "job": {"pickle": {"url": "s3://b/_kubemr/code/abc.pkl", "sha256": "abc" * 21 + "a"}},
            "workers": {"min": 0, "max": 8, "maxPending": 2},
            "storage": {"endpoint": "http://minio:9000", "secretRef": {"name": "s3"}},
        },
        "status": {
            "phase": "Failed", "wave": "map", "progress": "2/3", "workers": 0,
            "waves": [
                {"kind": "plan", "jobName": "wc-plan", "total": 1, "succeeded": 1,
                 "startTime": "2026-05-01T12:00:00Z", "completionTime": "2026-05-01T12:00:02Z"},
                {"kind": "map", "step": 0, "jobName": "wc-map-0", "total": 3, "succeeded": 2,
                 "failed": 2, "startTime": "2026-05-01T12:00:02Z",
                 "completionTime": "2026-05-01T12:01:02Z"},
            ],
            "conditions": [{"type": "Failed", "status": "True", "reason": "UserCodeError",
                            "message": "map-0-00003: boom",
                            "lastTransitionTime": "2026-05-01T12:01:02Z"}],
            "failure": {"reason": "UserCodeError", "task": "map-0-00003",
                        "attempt": "wc-map-0-3-b", "exitCode": 1, "message": "boom",
                        "traceback": "Traceback\nValueError: boom"},
        },
    }  # fmt: skip
    attempts = failed_attempts([pod("wc-map-0-3-b", "map-0", 3, 1, REPORT)])
    events = [{"type": "Warning", "reason": "UserCodeError", "message": "job failed: boom",
               "lastTimestamp": "2026-05-01T12:01:02Z"}]  # fmt: skip
    text = describe(resource, attempts, events, ["pods not read: no"], NOW)
    for expected in (
        "Name:      wc\n",
        "Phase:     Failed\n",
        "  Job:      pickle s3://b/_kubemr/code/abc.pkl (sha256 abcabcabcabc)\n",
        "  Memory:   512.0 MiB\n",
        "  Workers:  0..8 (max pending 2)\n",
        "  Storage:  http://minio:9000, secret s3\n",
        "  Work dir: s3://b/_kubemr/ns/wc/uid\n",
        "  map    wc-map-0   2/3    2        1m00s\n",
        "  Failed   True     UserCodeError   8m58s   map-0-00003: boom\n",
        "  Task:      map-0-00003\n",
        "    ValueError: boom\n",
        "  map-0-00003  wc-map-0-3-b  exit 1  UserCodeError  (pod)\n",
        "    mapper raised ValueError: bad\n",
        "    log: s3://b/_kubemr/ns/wc/uid/logs/map-0/00003/wc-map-0-3-b.log\n",
        "  Warning   UserCodeError   8m58s   job failed: boom\n",
        "Note: pods not read: no\n",
    ):
        assert expected in text, (expected, text)


def test_describe_shows_a_succeeded_jobs_result_and_counters() -> None:
    resource = {
        "metadata": {"name": "wc", "namespace": "ns", "uid": "uid",
                     "creationTimestamp": "2026-05-01T12:00:00Z"},
        "spec": {"inputs": ["s3://b/in/"], "output": "s3://b/out"},
        "status": {
            "phase": "Succeeded",
            "result": {
                "recordsIn": 1234567, "bytesIn": 2048, "recordsOut": 12, "filesOut": 2,
                "bytesOut": 300,
                "counters": {"words": {"stop": 40, "kept": 1200000},
                             "hooks": {"mapper_init": 3}, "x\x1b[31m": {"y\n": 1}},
            },
        },
    }  # fmt: skip
    text = describe(resource, [], [], [], NOW)
    for expected in (
        "Result:\n",
        "  Input:  1,234,567 records (2.0 KiB)\n",
        "  Output: 12 records in 2 files (300 B)\n",
        "  Counters:\n",
        "    GROUP    NAME          VALUE\n",
        "    hooks    mapper_init   3\n",
        "    words    kept          1,200,000\n",
        "    words    stop          40\n",
        "    x?[31m   y?            1\n",
    ):
        assert expected in text, (expected, text)
    assert text.index("    hooks") < text.index("    words    kept") < text.index("    x?")
    # A job without a result (running, failed) shows no such block.
    del resource["status"]["result"]
    assert "Result:" not in describe(resource, [], [], [], NOW)
