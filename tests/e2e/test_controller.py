"""The kubemr controller on a real control plane (kubestack): ``kubemr controller`` runs as
a subprocess under the ``kubemr-controller`` ServiceAccount's token, so manifests/rbac.yaml
is exercised as it is; the CRD is manifests/crd.yaml.

Most tests run a stand-in worker (:data:`FAKE_WORKER`, a small script used as
``spec.template.command``) that honours the worker contract of :mod:`kubemr.termination`:
it reads ``--stage`` and ``$JOB_COMPLETION_INDEX``, writes the JSON termination message
and exits 0, 1 or 3. That proves the controller's mechanics apart from the engine. The
tests at the end run the real ``kubemr worker`` end to end, on local files and on MinIO.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from kubemr.executors.k8s.manifests import GROUP, VERSION
from tests.e2e import support
from tests.e2e.datajobs import FAILING, WORDCOUNT, read_output, real_job, slowed
from tests.e2e.support import KUBECTL, Cluster, ControllerProcess, Obj, kubectl, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The installation, the controller, the namespace and the cluster are support's fixtures,
# made this module's by name (pytest finds fixtures among a module's globals).
globals().update({name: getattr(support, name) for name in support.FIXTURES})

INDEX = "batch.kubernetes.io/job-completion-index"

FAKE_WORKER = r'''
"""A stand-in for `kubemr worker --work URL --stage STAGE`: the pod contract, no job."""
import json
import os
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    if args[:1] != ["worker"] or "--stage" not in args or "--work" not in args:
        print(f"unexpected arguments: {args}", file=sys.stderr)
        return 2
    stage = args[args.index("--stage") + 1]
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    pod = os.environ.get("KUBEMR_POD_NAME", "?")
    env = os.environ
    if env.get("FAKE_LOG_DIR"):  # one file per attempt: stage.index.pod
        with open(os.path.join(env["FAKE_LOG_DIR"], f"{stage}.{index}.{pod}"), "w") as fh:
            fh.write(args[args.index("--work") + 1])
    path = env.get("KUBESTACK_TERMINATION_LOG", "/dev/termination-log")

    def report(message):
        with open(path, "w") as fh:
            json.dump({"stage": stage, "index": index, "attempt": pod, **message}, fh)

    if stage == "plan":
        time.sleep(float(env.get("FAKE_PLAN_SLEEP", "0")))
    elif stage != "commit":
        time.sleep(float(env.get("FAKE_SLEEP", "0")))
    for rule in filter(None, env.get("FAKE_FAIL", "").split(",")):
        where, task, code = rule.split(":")
        if where == stage and int(task) == index:
            report({
                "ok": False,
                "reason": "BadInput" if code == "3" else "UserCodeError",
                "message": f"fake failure of {stage} task {index}",
                "traceback": "Traceback (most recent call last):\n  File \"job.py\"\n"
                             "ValueError: boom",
                "log": f"file:///logs/{pod}.log",
            })
            return int(code)
    if stage == "plan":
        maps, reducers = int(env.get("FAKE_MAPS", "3")), int(env.get("FAKE_REDUCERS", "1"))
        report({"ok": True, "job_id": "fake", "steps": [{"maps": maps, "reducers": reducers}]})
    elif stage == "commit":
        report({"ok": True, "result": {
            "records_in": 10, "records_out": 5, "bytes_in": 100, "bytes_out": 50,
            "files_out": 1, "counters": {"fake": {"tasks": 1}},
        }})
    else:
        report({"ok": True})
    return 0


sys.exit(main())
'''


@pytest.fixture(scope="module")
def fake_worker(tmp_path_factory: Any) -> str:
    path = tmp_path_factory.mktemp("worker") / "fake_worker.py"
    path.write_text(FAKE_WORKER)
    return str(path)


def fake_job(
    name: str,
    worker: str,
    tmp_path: Any,
    *,
    maps: int = 3,
    reducers: int = 1,
    sleep: float = 0.0,
    plan_sleep: float = 0.0,
    fail: str = "",
    **spec: Any,
) -> Obj:
    """A MapReduceJob run by the stand-in worker; each attempt leaves a file in
    ``tmp_path/attempts``."""
    attempts = tmp_path / "attempts"
    attempts.mkdir(exist_ok=True)
    env = {
        "FAKE_MAPS": str(maps),
        "FAKE_REDUCERS": str(reducers),
        "FAKE_SLEEP": str(sleep),
        "FAKE_PLAN_SLEEP": str(plan_sleep),
        "FAKE_FAIL": fail,
        "FAKE_LOG_DIR": str(attempts),
    }
    template = {
        "command": [sys.executable, worker],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        **spec.pop("template", {}),
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": name},
        "spec": {
            "inputs": [str(tmp_path / "in" / "*.txt")],
            "output": str(tmp_path / "out"),
            "job": {"module": "fake.job:Fake"},
            "template": template,
            **spec,
        },
    }


def attempts(tmp_path: Any, stage: str) -> dict[int, int]:
    """Attempts per index of a stage, from the stand-in worker's files."""
    counts: dict[int, int] = {}
    for entry in os.listdir(tmp_path / "attempts"):
        where, index, _ = entry.split(".", 2)
        if where == stage:
            counts[int(index)] = counts.get(int(index), 0) + 1
    return counts


def active_pods(pods: list[Any]) -> list[Any]:
    return [p for p in pods if p.status.phase in ("Pending", "Running")]


def index_of(pod: Any) -> int:
    return int(pod.metadata.annotations[INDEX])


# -- the stages, in order ---------------------------------------------------------------------
def test_job_runs_its_stages_in_order_to_success(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job("wc", fake_worker, tmp_path, maps=5, reducers=2, sleep=0.5, plan_sleep=2)
    cluster.create(body)
    waiter = subprocess.Popen(
        [KUBECTL, "--kubeconfig", cluster.kubeconfig, "-n", cluster.ns, "wait",
         "--for=condition=Complete", "mapreducejob/wc", "--timeout=120s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    phases: list[str] = []

    def ended() -> bool:
        phase = cluster.phase("wc")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        return phase in ("Succeeded", "Failed")

    wait_for("the job to end", ended, timeout=120, every=0.1)
    assert phases[-1] == "Succeeded", (phases, cluster.status("wc"), controller.log()[-3000:])
    order = ["Pending", "Planning", "Running", "Succeeded"]
    assert "Planning" in phases and "Running" in phases, phases
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases), phases

    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert "condition met" in out

    status = cluster.status("wc")
    assert status["progress"] == "7/7"
    assert status["result"] == {
        "recordsIn": 10,
        "recordsOut": 5,
        "bytesIn": 100,
        "bytesOut": 50,
        "filesOut": 1,
        "counters": {"fake": {"tasks": 1}},
    }
    assert status["plan"]["steps"] == [{"maps": 5, "reducers": 2}]
    waves = status["waves"]
    assert [w["jobName"] for w in waves] == ["wc-plan", "wc-map-0", "wc-reduce-0", "wc-commit"]
    assert [(w["succeeded"], w["total"]) for w in waves] == [(1, 1), (5, 5), (2, 2), (1, 1)]
    assert all(w["completionTime"] for w in waves)
    assert status["observedGeneration"] == 1
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True"

    # One Job per stage, each created after the one before it finished.
    jobs = sorted(cluster.jobs("wc"), key=lambda j: j.metadata.creation_timestamp)
    assert [j.metadata.name for j in jobs] == [w["jobName"] for w in waves]
    for before, after in itertools.pairwise(jobs):
        assert after.metadata.creation_timestamp >= before.status.completion_time
    for j in jobs:
        assert j.metadata.owner_references[0].kind == "MapReduceJob"
        managers = {m.manager for m in j.metadata.managed_fields}
        assert "kubemr-controller" in managers
    # Each task ran once, and was told where the job's data goes.
    work_url = status["plan"]["workUrl"]
    assert attempts(tmp_path, "map-0") == dict.fromkeys(range(5), 1)
    for entry in os.listdir(tmp_path / "attempts"):
        assert (tmp_path / "attempts" / entry).read_text() == work_url
    reasons = {e.reason for e in cluster.events("wc")}
    assert {"StageStarted", "Planned", "Succeeded"} <= reasons


# -- failures ---------------------------------------------------------------------------------
def test_bad_input_fails_the_job_at_once_with_its_root_cause(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    cluster.create(fake_job("bad", fake_worker, tmp_path, maps=6, fail="map-0:3:3", sleep=0.3))
    status = cluster.wait_phase("bad", "Failed")
    failure = status["failure"]
    assert failure["reason"] == "BadInput"
    assert failure["task"] == "map-0-00003"
    assert failure["exitCode"] == 3
    assert failure["message"] == "fake failure of map-0 task 3"
    assert failure["traceback"].endswith("ValueError: boom")
    assert failure["attempt"].startswith("bad-map-0-3-")
    assert failure["log"] == f"file:///logs/{failure['attempt']}.log"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "BadInput"
    assert status["completionTime"]
    out = kubectl(
        cluster.kubeconfig, "-n", cluster.ns, "wait", "--for=condition=Failed",
        "mapreducejob/bad", "--timeout=10s",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Not retried: one attempt of the bad index.
    assert len([p for p in cluster.pods("bad", "map-0") if index_of(p) == 3]) == 1
    assert attempts(tmp_path, "map-0")[3] == 1
    assert {e.reason for e in cluster.events("bad")} >= {"BadInput"}


def test_retryable_failure_is_retried_max_attempts_times(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job("flaky", fake_worker, tmp_path, maps=4, fail="map-0:2:1", maxAttempts=3)
    cluster.create(body)
    status = cluster.wait_phase("flaky", "Failed", timeout=120)
    failure = status["failure"]
    assert failure["reason"] == "UserCodeError"
    assert failure["task"] == "map-0-00002"
    assert failure["exitCode"] == 1
    assert "after 3 attempts" in failure["message"]
    pods = [p for p in cluster.pods("flaky", "map-0") if index_of(p) == 2]
    assert len(pods) == 3, [p.metadata.name for p in pods]
    assert attempts(tmp_path, "map-0")[2] == 3
    assert not any(j.metadata.name == "flaky-reduce-0" for j in cluster.jobs("flaky"))


# -- restarts ---------------------------------------------------------------------------------
def test_controller_killed_mid_wave_resumes_without_duplicates(
    cluster: Cluster,
    start_controller: Callable[..., ControllerProcess],
    fake_worker: str,
    tmp_path: Any,
) -> None:
    first = start_controller()
    body = fake_job("restart", fake_worker, tmp_path, maps=10, sleep=1.5, workers={"max": 3})

    cluster.create(body)

    def map_started() -> bool:
        status = cluster.status("restart")
        return status.get("wave") == "map" and int(status["progress"].split("/")[0]) >= 2

    wait_for("the map wave to be under way", map_started, timeout=90)
    before = {j.metadata.name: j.metadata.uid for j in cluster.jobs("restart")}
    first.kill()
    time.sleep(2)  # the wave goes on without a controller
    second = start_controller()
    status = cluster.wait_phase("restart", "Succeeded", timeout=150)
    assert "became leader" in second.log()
    after = {j.metadata.name: j.metadata.uid for j in cluster.jobs("restart")}
    assert sorted(after) == ["restart-commit", "restart-map-0", "restart-plan", "restart-reduce-0"]
    for name, uid in before.items():
        assert after[name] == uid, f"{name} was created again"
    assert attempts(tmp_path, "map-0") == dict.fromkeys(range(10), 1)
    assert status["progress"] == "11/11"


# -- scaling ----------------------------------------------------------------------------------
def test_workers_max_bounds_the_pods_of_a_wave(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job(
        "wide", fake_worker, tmp_path, maps=20, sleep=1.0, workers={"max": 4, "maxPending": 2}
    )
    cluster.create(body)
    most_pods = 0
    most_workers = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal most_pods, most_workers
        while not done.is_set():
            most_pods = max(most_pods, len(active_pods(cluster.pods("wide", "map-0"))))
            most_workers = max(most_workers, cluster.status("wide").get("workers") or 0)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cluster.wait_phase("wide", "Succeeded", timeout=150)
    finally:
        done.set()
        sampler.join(10)
    assert most_pods == 4, most_pods  # reached, never passed
    assert most_workers == 4, most_workers
    # It started with maxPending pods and grew as they ran.
    jobs = {j.metadata.name: j for j in cluster.jobs("wide")}
    assert jobs["wide-map-0"].spec.parallelism <= 4  # and down with the backlog at the end
    assert "kubemr.dev/scaled-at" in (jobs["wide-map-0"].metadata.annotations or {})
    assert any("parallelism 2 -> " in e.message for e in cluster.events("wide"))


# -- suspend and resume -----------------------------------------------------------------------
def test_suspend_mid_wave_and_resume(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job("pause", fake_worker, tmp_path, maps=8, sleep=2.0, workers={"max": 2})
    cluster.create(body)

    def map_done() -> int:
        status = cluster.status("pause")
        return status.get("wave") == "map" and int(status["progress"].split("/")[0]) >= 2

    wait_for("two map tasks done", map_done, timeout=90)
    cluster.patch_spec("pause", {"suspend": True})
    cluster.wait_phase("pause", "Suspended", timeout=30)
    wait_for(
        "the wave's pods to stop",
        lambda: not active_pods(cluster.pods("pause", "map-0")),
        timeout=60,
    )
    suspended = cluster.condition("pause", "Suspended")
    assert suspended is not None and suspended["status"] == "True"
    job = cluster.batch.read_namespaced_job("pause-map-0", cluster.ns)
    assert job.spec is not None and job.status is not None
    assert job.spec.suspend is True
    done_then: set[int] = set()
    for part in (job.status.completed_indexes or "").split(","):
        low, _, high = part.partition("-")
        if low:
            done_then.update(range(int(low), int(high or low) + 1))
    assert done_then
    time.sleep(3)
    assert not active_pods(cluster.pods("pause", "map-0"))  # stays suspended
    assert cluster.status("pause")["workers"] == 0

    cluster.patch_spec("pause", {"suspend": False})
    status = cluster.wait_phase("pause", "Succeeded", timeout=120)
    resumed = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert resumed["status"] == "False" and resumed["reason"] == "Resumed"
    runs = attempts(tmp_path, "map-0")
    assert sorted(runs) == list(range(8))
    for index in done_then:
        assert runs[index] == 1, f"finished index {index} ran again: {runs}"
    assert [j.metadata.name for j in cluster.jobs("pause")].count("pause-map-0") == 1
    assert {"Suspended", "Resumed"} <= {e.reason for e in cluster.events("pause")}


# -- capacity ---------------------------------------------------------------------------------
def test_impossible_request_is_capacity_constrained_then_unschedulable(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job(
        "huge",
        fake_worker,
        tmp_path,
        pendingDeadlineSeconds=25,
        template={"resources": {"requests": {"cpu": "1000"}}},
    )
    cluster.create(body)
    constrained = wait_for(
        "CapacityConstrained",
        lambda: (
            (c := cluster.condition("huge", "CapacityConstrained")) and c["status"] == "True" and c
        ),
        timeout=40,
    )
    assert "Insufficient cpu" in constrained["message"]
    assert cluster.phase("huge") in ("Pending", "Planning")
    status = cluster.wait_phase("huge", "Failed", timeout=60)
    assert status["failure"]["reason"] == "Unschedulable"
    assert "Insufficient cpu" in status["failure"]["message"]
    started = time.monotonic()
    wait_for("the pending pod to go", lambda: not active_pods(cluster.pods("huge")), timeout=30)
    assert time.monotonic() - started < 30
    assert "CapacityConstrained" in {e.reason for e in cluster.events("huge")}


def test_a_node_with_room_for_two_pods_runs_two_and_holds_max_pending(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    # The kubestack node has 4 CPUs: pods asking for 1.6 fit twice, not three times.
    body = fake_job(
        "narrow",
        fake_worker,
        tmp_path,
        maps=6,
        sleep=12,
        workers={"max": 6, "maxPending": 1},
        template={"resources": {"requests": {"cpu": "1600m"}}},
    )
    cluster.create(body)
    most_running = 0
    most_unscheduled = 0
    most_active = 0
    constrained: list[Obj] = []
    done = threading.Event()

    def unscheduled(pod: Any) -> bool:
        return any(
            c.type == "PodScheduled" and c.status == "False" for c in (pod.status.conditions or [])
        )

    def sample() -> None:
        nonlocal most_running, most_unscheduled, most_active
        while not done.is_set():
            pods = active_pods(cluster.pods("narrow", "map-0"))
            most_running = max(most_running, sum(p.status.phase == "Running" for p in pods))
            most_unscheduled = max(most_unscheduled, sum(unscheduled(p) for p in pods))
            most_active = max(most_active, len(pods))
            cond = cluster.condition("narrow", "CapacityConstrained")
            if cond and cond["status"] == "True":
                constrained.append(cond)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        status = cluster.wait_phase("narrow", "Succeeded", timeout=240)
    finally:
        done.set()
        sampler.join(10)
    assert most_running == 2, most_running  # the node's room, used and never passed
    assert most_unscheduled == 1, most_unscheduled  # maxPending waiting, no more
    assert most_active <= 3, most_active
    assert constrained, "CapacityConstrained was never shown"
    assert "Insufficient cpu" in constrained[0]["message"]
    assert "CapacityConstrained" in {e.reason for e in cluster.events("narrow")}
    assert attempts(tmp_path, "map-0") == dict.fromkeys(range(6), 1)
    cond = next(c for c in status["conditions"] if c["type"] == "CapacityConstrained")
    assert cond["status"] == "False"  # cleared once the pods found room


def test_a_missing_storage_secret_blocks_the_workers_then_fails_the_job(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    body = fake_job(
        "nosecret",
        fake_worker,
        tmp_path,
        pendingDeadlineSeconds=20,
        storage={"endpoint": "http://127.0.0.1:9", "secretRef": {"name": "absent"}},
    )
    cluster.create(body)
    started = time.monotonic()
    blocked = wait_for(
        "WorkersBlocked",
        lambda: (
            (c := cluster.condition("nosecret", "WorkersBlocked")) and c["status"] == "True" and c
        ),
        timeout=30,
    )
    assert time.monotonic() - started < 15  # within seconds, not at the deadline
    assert blocked["reason"] == "CreateContainerConfigError"
    assert 'secret "absent" not found' in blocked["message"]
    status = cluster.wait_phase("nosecret", "Failed", timeout=60)
    failure = status["failure"]
    assert failure["reason"] == "CreateContainerConfigError"
    assert 'secret "absent" not found' in failure["message"]
    assert "pendingDeadlineSeconds" in failure["message"]
    assert "CreateContainerConfigError" in {e.reason for e in cluster.events("nosecret")}


# -- deletion ---------------------------------------------------------------------------------
def test_deleting_the_resource_collects_its_jobs_and_pods(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    cluster.create(fake_job("gone", fake_worker, tmp_path, maps=4, sleep=30))
    wait_for(
        "map pods",
        lambda: len(active_pods(cluster.pods("gone", "map-0"))) >= 1,
        timeout=60,
    )
    cluster.delete("gone")
    wait_for("the Jobs to be collected", lambda: not cluster.jobs("gone"), timeout=60)
    wait_for("the pods to be collected", lambda: not cluster.pods("gone"), timeout=60)
    assert not cluster.exists("gone")


def test_ttl_after_finished_deletes_the_resource(
    cluster: Cluster, controller: ControllerProcess, fake_worker: str, tmp_path: Any
) -> None:
    cluster.create(fake_job("brief", fake_worker, tmp_path, ttlSecondsAfterFinished=3))
    wait_for("the resource to be deleted", lambda: not cluster.exists("brief"), timeout=90)
    wait_for("its Jobs to be collected", lambda: not cluster.jobs("brief"), timeout=60)


# -- the real worker --------------------------------------------------------------------------
SLOW_WORDCOUNT = slowed(WORDCOUNT, 0.4)


def test_real_worker_counts_words_on_local_storage(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    lines = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(40)]
    cluster.create(real_job("words", tmp_path, WORDCOUNT, lines))
    status = cluster.wait_phase("words", "Succeeded", timeout=240)
    counts = read_output(tmp_path / "out")
    assert counts["the"] == 80 and counts["fox"] == 40
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert status["result"]["recordsIn"] == 40
    kinds = [w["kind"] for w in status["waves"]]
    assert kinds == ["plan", "map", "reduce", "commit"]


def test_real_worker_failure_reaches_the_status(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    lines = [f"line {i}" for i in range(20)] + ["poison here"]
    cluster.create(real_job("poison", tmp_path, FAILING, lines))
    status = cluster.wait_phase("poison", "Failed", timeout=240)
    failure = status["failure"]
    assert failure["reason"] == "UserCodeError"
    assert failure["task"].startswith("map-0-")
    assert "ZeroDivisionError" in (failure["message"] + (failure.get("traceback") or ""))
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # The work dir is kept for a look at what happened.
    work = status["plan"]["workUrl"]
    assert os.path.isdir(work)
    # Exactly maxAttempts (2) attempts of the poisoned task, each with its log kept.
    index = int(failure["task"].rsplit("-", 1)[1])
    pods = [p for p in cluster.pods("poison", "map-0") if index_of(p) == index]
    assert len(pods) == 2, [p.metadata.name for p in pods]
    logs = os.listdir(os.path.join(work, "logs", "map-0", f"{index:05d}"))
    assert sorted(logs) == sorted(f"{p.metadata.name}.log" for p in pods)
    assert "after 2 attempts" in failure["message"]


def test_worker_pod_deleted_mid_task_reruns_the_task(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    lines = [f"{'abcdefg'[i % 7]}x shared {'hij'[i % 3]}y" for i in range(48)]
    expected: dict[str, int] = {}
    for line in lines:
        for word in line.split():
            expected[word] = expected.get(word, 0) + 1
    body = real_job(
        "victim", tmp_path, SLOW_WORDCOUNT, lines, splitSize=256, maxAttempts=3, workers={"max": 2}
    )
    cluster.create(body)

    def a_running_task() -> Any:
        for pod in cluster.pods("victim", "map-0"):
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.running and not pod.metadata.deletion_timestamp:
                return pod
        return None

    victim = wait_for("a running map pod", a_running_task, timeout=120)
    time.sleep(1.5)  # inside the mapper: the task is half done
    cluster.core.delete_namespaced_pod(victim.metadata.name, cluster.ns)
    status = cluster.wait_phase("victim", "Succeeded", timeout=240)

    assert read_output(tmp_path / "out") == expected  # nothing lost, nothing counted twice
    assert status["result"]["recordsIn"] == len(lines)
    index = index_of(victim)
    again = [
        p for p in cluster.pods("victim", "map-0")
        if index_of(p) == index and p.metadata.name != victim.metadata.name
    ]  # fmt: skip
    assert again and again[0].status.phase == "Succeeded", [p.metadata.name for p in again]


def test_real_worker_on_minio(
    kube: Any, cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    from tests.integration.minio import MinioServer, minio_binary

    server = MinioServer(minio_binary())
    server.start()
    try:
        server.make_bucket("data")
        s3 = server.client()
        for i in range(3):
            s3.put_object(Bucket="data", Key=f"in/{i}.txt", Body=b"a b c\nb c\nc\n" * 5)
        env = server.env()
        cluster.core.create_namespaced_secret(
            cluster.ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="s3"),
                string_data={
                    "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
                    "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
                },
            ),
        )
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MapReduceJob",
            "metadata": {"name": "s3wc"},
            "spec": {
                "inputs": ["s3://data/in/*.txt"],
                "output": "s3://data/out",
                "job": {"source": WORDCOUNT},
                "reducers": 2,
                "storage": {
                    "endpoint": server.endpoint,
                    "region": "us-east-1",
                    "secretRef": {"name": "s3"},
                },
                "template": {"command": [sys.executable, "-m", "kubemr"]},
            },
        }
        cluster.create(body)
        status = cluster.wait_phase("s3wc", "Succeeded", timeout=240)
        assert status["plan"]["workUrl"].startswith("s3://data/_kubemr/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="out/")["Contents"]]
        assert "out/_SUCCESS" in keys
        counts: dict[str, int] = {}
        for key in keys:
            if "/part-" in key:
                for line in s3.get_object(Bucket="data", Key=key)["Body"].read().splitlines():
                    word, n = json.loads(line)
                    counts[word] = n
        assert counts == {"a": 15, "b": 30, "c": 45}
    finally:
        server.close()
