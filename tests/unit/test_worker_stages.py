"""`kubemr worker` as a pod runs it: every stage of a job in its own process, talking
only through the work dir, exit codes and the termination message."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

import kubemr
from kubemr.coordinator import StepShape, job_stages
from kubemr.termination import (
    EXIT_BAD_INPUT,
    EXIT_RETRY,
    EXIT_TERMINATED,
    EXIT_VERSION_SKEW,
)
from tests.jobfiles import run_worker, start_worker

from . import jobs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDCOUNT = """
import kubemr

class WordCount(kubemr.MapReduce):
    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in line.split():
            yield word, 1
"""

SLOW = """
import os
import time
import kubemr

class Slow(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        if os.environ.get("KUBEMR_TEST_SLOW"):
            time.sleep(30)
        yield line, 1
"""


def plan_input(tmp_path, source: str, inputs: list[str], **spec) -> dict:
    return {
        "name": "wc",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {
            "job": {"source": source},
            "inputs": inputs,
            "output": str(tmp_path / "out"),
            **spec,
        },
    }


def worker(tmp_path, stage: str, index: int = 0, env: dict | None = None, **kw):
    return start_worker(tmp_path, stage, index, env, pod="wc", **kw)


def run_stage(tmp_path, stage: str, index: int = 0, env: dict | None = None):
    return run_worker(tmp_path, stage, index, env, pod="wc")


def run_all(tmp_path, spec_input: dict) -> dict:
    env = {"KUBEMR_SPEC": json.dumps(spec_input)}
    code, msg, err = run_stage(tmp_path, "plan", env=env)
    assert code == 0, err
    assert msg["ok"] and msg["job_id"] == "wc-01234567"
    shapes = [StepShape(s["maps"], s["reducers"]) for s in msg["steps"]]
    final = None
    for stage in job_stages(shapes)[1:]:
        for index in range(stage.tasks):
            code, final, err = run_stage(tmp_path, stage.name, index)
            assert code == 0, err
            assert final["ok"] and final["stage"] == stage.name
    assert final is not None
    return final


def test_every_stage_in_its_own_process_gives_the_local_result(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a b c a\n" * 300 + "b c\n" * 200)
    final = run_all(
        tmp_path,
        plan_input(tmp_path, WORDCOUNT, [str(data)], splitSize=500, reducers=3),
    )
    assert final["result"]["recordsIn"] == 500
    assert final["result"]["filesOut"] == 3
    local = tmp_path / "local"
    kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(local), reducers=3, split_size=500)
    for name in ("part-00000", "part-00001", "part-00002"):
        assert (tmp_path / "out" / name).read_bytes() == (local / name).read_bytes()
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert success["job_id"] == "wc-01234567"
    record = json.loads((tmp_path / "out" / "_kubemr-job.json").read_text())
    assert record["owner"] == "default/wc" and record["state"] == "succeeded"
    # The work dir is cleaned after success, the task logs kept.
    left = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert left and all("/logs/" in str(p) for p in left)


def test_a_failing_mapper_reports_user_code_error_and_its_log(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("ok\nboom\n")
    source = WORDCOUNT.replace(
        "for word in line.split():",
        "if line == 'boom':\n            raise ValueError('no boom')\n"
        "        for word in line.split():",
    )
    env = {"KUBEMR_SPEC": json.dumps(plan_input(tmp_path, source, [str(data)]))}
    code, _, err = run_stage(tmp_path, "plan", env=env)
    assert code == 0, err
    code, msg, _ = run_stage(tmp_path, "map-0", 0)
    assert code == EXIT_RETRY
    assert msg["reason"] == "UserCodeError" and "no boom" in msg["message"]
    assert "in mapper" in msg["traceback"] and "ValueError: no boom" in msg["traceback"]
    # The line itself, though the map process never saw the source: it travels with the
    # pickled job.
    assert "raise ValueError('no boom')" in msg["traceback"]
    with open(msg["log"]) as fh:
        assert "no boom" in fh.read()


def test_bad_input_fails_at_once_with_exit_3(tmp_path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"a": 1}\n{broken\n')
    env = {
        "KUBEMR_SPEC": json.dumps(plan_input(tmp_path, WORDCOUNT, [str(data)], inputFormat="jsonl"))
    }
    code, msg, err = run_stage(tmp_path, "plan", env=env)
    # The preflight reads the first records as the tasks would.
    assert code == EXIT_BAD_INPUT, err
    assert msg["reason"] in ("BadInput", "InputError") and "in.jsonl:2" in msg["message"]


def test_code_pickled_by_another_version_is_refused(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    env = {"KUBEMR_SPEC": json.dumps(plan_input(tmp_path, WORDCOUNT, [str(data)]))}
    assert run_stage(tmp_path, "plan", env=env)[0] == 0
    meta = tmp_path / "work" / "job.meta.json"
    record = json.loads(meta.read_text())
    record["python"] = "3.99"
    meta.write_text(json.dumps(record))
    code, msg, _ = run_stage(tmp_path, "map-0", 0)
    assert code == EXIT_VERSION_SKEW
    assert msg["reason"] == "VersionSkew" and "python 3.99 (pickled)" in msg["message"]


def test_sigterm_stops_the_attempt_with_143(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a\n")
    env = {"KUBEMR_SPEC": json.dumps(plan_input(tmp_path, SLOW, [str(data)]))}
    assert run_stage(tmp_path, "plan", env=env)[0] == 0
    proc, message = worker(tmp_path, "map-0", 0, env={"KUBEMR_TEST_SLOW": "1"})
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == EXIT_TERMINATED
    assert json.loads(message.read_text())["reason"] == "Terminated"


@pytest.mark.parametrize("stage", ["bogus", "map-x"])
def test_unknown_stage_is_refused(tmp_path, stage) -> None:
    code = subprocess.run(
        [sys.executable, "-m", "kubemr", "worker", "--work", str(tmp_path), "--stage", stage],
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")},
        capture_output=True,
        timeout=60,
    ).returncode
    assert code == 2


HOARDING = """
import kubemr

class Hoards(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        if line == "hoard":
            cache = bytearray(4 * 2**30)
            cache[0] = 1
        yield line, 1
"""


def _address_space(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_a_mapper_past_the_memory_limit_reports_out_of_memory(tmp_path) -> None:
    """Under an address-space limit (how a node without cgroups enforces limits.memory)
    an allocation past it raises MemoryError: the worker reports OutOfMemory, naming the
    task, the limit and what to do, and still writes its log."""
    data = tmp_path / "in.txt"
    data.write_text("a\nhoard\n")
    env = {"KUBEMR_SPEC": json.dumps(plan_input(tmp_path, HOARDING, [str(data)]))}
    assert run_stage(tmp_path, "plan", env=env)[0] == 0
    proc, message = worker(tmp_path, "map-0", 0, preexec_fn=_address_space(1 << 30))
    _, err = proc.communicate(timeout=120)
    msg = json.loads(message.read_text())
    assert proc.returncode == EXIT_RETRY, err
    assert msg["reason"] == "OutOfMemory"
    assert msg["message"].startswith("map-0-00000 ran out of memory under its memory limit of 1Gi")
    assert "in.txt:2" in msg["message"]  # the record it was mapping
    assert "limits.memory" in msg["message"] and "splitSize" in msg["message"]
    assert "MemoryError" in msg["traceback"] and "bytearray" in msg["traceback"]
    with open(msg["log"]) as fh:
        assert "ran out of memory" in fh.read()


def test_memory_limit_from_the_address_space_or_the_cgroup(tmp_path, monkeypatch) -> None:
    from kubemr.cli import worker as worker_cli

    monkeypatch.setattr(worker_cli.resource, "getrlimit", lambda _: (768 << 20, 768 << 20))
    assert worker_cli.memory_limit() == 768 << 20
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    monkeypatch.setattr(worker_cli.resource, "getrlimit", lambda _: unlimited)
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    monkeypatch.setattr(worker_cli, "CGROUP_MEMORY_LIMITS", (str(v2), str(v1)))
    assert worker_cli.memory_limit() is None  # neither file
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")  # cgroup v1 for "no limit"
    assert worker_cli.memory_limit() is None
    v2.write_text("1073741824\n")
    assert worker_cli.memory_limit() == 1 << 30
