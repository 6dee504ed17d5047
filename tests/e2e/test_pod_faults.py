"""Faults that hit worker pods and the node, end to end on a real control plane: an
evicted pod, the node killed and restarted under a running wave, a worker that hangs
past the job's deadline, and a worker that runs out of memory.

Each case runs the real ``kubemr worker`` (``real_job``) and checks what a user sees:
the phase and reason ``kubectl get mrj`` prints, the status' failure fields, and, for a
job that succeeds through the fault, its output's :class:`Digest` against the reference
(nothing lost, nothing counted twice). Each fault is repeated ``RUNS`` times
(``KUBEMR_FAULT_RUNS``), with a job of its own each time.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from kubemr.executors.k8s.manifests import LABEL_JOB, LABEL_STAGE
from kubemr.planning import PREFLIGHT_RECORDS
from tests.e2e import support
from tests.e2e.datajobs import (
    WORDCOUNT,
    Digest,
    announcing,
    real_job,
    slowed,
    word_counts,
    word_lines,
)
from tests.e2e.support import Cluster, ControllerProcess, Obj, kubectl, wait_for

RUNS = int(os.environ.get("KUBEMR_FAULT_RUNS", "1"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240 * RUNS + 120)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

INDEX = "batch.kubernetes.io/job-completion-index"
SLOW_WORDCOUNT = slowed(WORDCOUNT, 0.3)

HANGING = """
import time
import kubemr

class Hangs(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        if "stuck" in line:
            time.sleep(10**6)  # waits for something that never comes
        yield line, 1
"""

HOARDING = """
import re
import kubemr

class Hoards(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        if "hoard" in line:
            cache = bytearray(4 * 2**30)  # far past the pod's memory limit
            cache[0] = 1
        for word in re.findall(r"[a-z']+", line.lower()):
            yield word, 1
"""


# -- watching pods ----------------------------------------------------------------------------
class PodHistory:
    """Every state the API server showed of a job's pods, from a watch begun before the
    fault: a failed pod whose finalizer the Job controller removed may be gone before a
    poll would see its last state."""

    def __init__(self, core: Any, ns: str, job: str) -> None:
        self.core, self.ns, self.selector = core, ns, f"{LABEL_JOB}={job}"
        self.last: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Each watch resumes where the last one ended: a watch begun afresh lists the pods
        # as they are now, and a pod that ended and was removed in between would keep its
        # running state here for ever.
        version: str | None = None
        while not self.stopped.is_set():
            watcher = watch.Watch()
            resume = {"resource_version": version} if version else {}
            try:
                stream = watcher.stream(
                    self.core.list_namespaced_pod, self.ns, label_selector=self.selector,
                    timeout_seconds=3, allow_watch_bookmarks=True, **resume,
                )  # fmt: skip
                for event in stream:
                    if event["type"] != "BOOKMARK":
                        pod = event["object"]
                        with self.lock:
                            self.last[pod.metadata.name] = pod
                    if self.stopped.is_set():
                        break
                version = watcher.resource_version or version
            except client.ApiException as exc:
                if exc.status == 410:  # too old to resume: list again
                    version = None
                time.sleep(0.2)
            except Exception:
                version = watcher.resource_version or version
                time.sleep(0.2)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def pod(self, name: str) -> Any:
        with self.lock:
            return self.last.get(name)

    def pods(self) -> list[Any]:
        with self.lock:
            return list(self.last.values())


@contextlib.contextmanager
def watching(cluster: Cluster, job: str) -> Iterator[PodHistory]:
    history = PodHistory(cluster.core, cluster.ns, job)
    try:
        yield history
    finally:
        history.stop()


# -- what is read ------------------------------------------------------------------------------
def index_of(pod: Any) -> int:
    return int((pod.metadata.annotations or {}).get(INDEX) or pod.metadata.labels[INDEX])


def running_map_pods(cluster: Cluster, name: str) -> Callable[[], list[Any]]:
    """A check for :func:`wait_for`: the job's map pods whose worker runs."""

    def check() -> list[Any]:
        out = []
        for pod in cluster.pods(name, "map-0"):
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.running and not pod.metadata.deletion_timestamp:
                out.append(pod)
        return out

    return check


def in_its_mapper(cluster: Cluster, name: str, started: Any) -> Callable[[], Any]:
    """A check for :func:`wait_for`: a running map pod of the job whose mapper has begun
    (it touched ``started/<host name>``, see :func:`datajobs.announcing`)."""

    def check() -> Any:
        pods = running_map_pods(cluster, name)()
        return next((p for p in pods if (started / host_name(p)).exists()), None)

    return check


def host_name(pod: Any) -> str:
    """The host name a pod's processes see: an Indexed Job names it ``<job>-<index>``."""
    return str(pod.spec.hostname or pod.metadata.name)


def terminated(pod: Any) -> Any:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def condition(pod: Any, kind: str) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def kubectl_row(cluster: Cluster, name: str) -> dict[str, str]:
    """``kubectl get mrj NAME -o wide`` as a user reads it: the printer columns by header."""
    out = kubectl(cluster.kubeconfig, "get", "mrj", name, "-n", cluster.ns, "-o", "wide")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(header.split(), cells, strict=True))


def of_stage(pods: list[Any], stage: str) -> list[Any]:
    return [p for p in pods if (p.metadata.labels or {}).get(LABEL_STAGE) == stage]


def wait_all_ended(history: PodHistory, stage: str, timeout: float) -> None:
    """Wait for every pod of ``stage`` to have ended; a timeout names the pods that had
    not, as last seen."""

    def check() -> bool:
        pods = of_stage(history.pods(), stage)
        return bool(pods) and all(p.status.phase in ("Failed", "Succeeded") for p in pods)

    try:
        wait_for(f"the {stage} pods to stop", check, timeout)
    except TimeoutError as exc:
        seen = [
            (p.metadata.name, p.status.phase, p.metadata.deletion_timestamp, terminated(p))
            for p in of_stage(history.pods(), stage)
        ]
        raise TimeoutError(f"{exc}; the pods as last seen: {seen}") from None


def attempt_log(status: Obj, index: int, attempt: str) -> str:
    """Where the worker keeps an attempt's log of a map task: in the work dir, which a
    job that succeeded keeps only the logs of."""
    return os.path.join(
        status["plan"]["workUrl"], "logs", "map-0", f"{index:05d}", f"{attempt}.log"
    )


def part_files(out_dir: Any) -> list[str]:
    return sorted(p for p in os.listdir(out_dir) if p.startswith("part-"))


# -- 1. eviction ------------------------------------------------------------------------------
def test_evicted_map_pod_is_not_a_failed_attempt(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    """An eviction (Eviction API) in the middle of a map task: the pod ends Failed with a
    DisruptionTarget condition, the podFailurePolicy ignores it, and the job succeeds with
    maxAttempts 1 and exactly the reference output."""
    lines = word_lines(48)
    for run in range(RUNS):
        name, work = f"evict-{run}", tmp_path / f"run-{run}"
        started = work / "started"
        started.mkdir(parents=True)
        source = announcing(SLOW_WORDCOUNT, str(started))
        body = real_job(name, work, source, lines, splitSize=512, maxAttempts=1, workers={"max": 2})
        with watching(cluster, name) as history:
            cluster.create(body)
            in_mapper = in_its_mapper(cluster, name, started)
            victim = wait_for("a map pod inside its mapper", in_mapper, 180)
            time.sleep(1.0)  # the task is under way
            cluster.core.create_namespaced_pod_eviction(
                victim.metadata.name,
                cluster.ns,
                client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=victim.metadata.name, namespace=cluster.ns)
                ),
            )
            status = cluster.wait_phase(name, "Succeeded", timeout=240)
            last = history.pod(victim.metadata.name)

        # What a kubelet reports for an evicted pod: phase Failed, DisruptionTarget kept.
        assert last.status.phase == "Failed", last.status
        disruption = condition(last, "DisruptionTarget")
        assert disruption is not None and disruption.status == "True", last.status.conditions
        assert disruption.reason == "EvictionByEvictionAPI"
        assert terminated(last).exit_code == 143  # the worker stopped on SIGTERM
        # Stopped in the middle of its task (its log, kept in the work dir, says so), which
        # ran again in a new pod that committed it.
        index = index_of(victim)
        with open(attempt_log(status, index, victim.metadata.name)) as fh:
            assert "stopped by signal 15" in fh.read()
        again = [
            p for p in of_stage(history.pods(), "map-0")
            if index_of(p) == index and p.metadata.name != victim.metadata.name
        ]  # fmt: skip
        assert any(p.status.phase == "Succeeded" for p in again), [p.metadata.name for p in again]
        assert Digest.of_dir(work / "out") == Digest.of_counts(word_counts(lines))
        assert status["result"]["recordsIn"] == len(lines)
        assert status.get("failure") is None
        row = kubectl_row(cluster, name)
        assert row["PHASE"] == "Succeeded" and row["REASON"] in ("", "<none>"), row


# -- 2. the node killed and restarted ---------------------------------------------------------
def test_node_killed_mid_map_and_restarted_retries_the_lost_tasks(
    kube: Any, cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    """The node dies (SIGKILL: every pod process with it) while map tasks run, and comes
    back. As a kubelet does for a restartPolicy Never pod whose container is gone, it
    reports the lost pods Failed (ContainerStatusUnknown, 137) rather than running them
    again under the same name; the Job controller retries those tasks in new pods and
    the output is the reference, each task counted once."""
    if kube.stack is None:
        pytest.skip("kills and restarts the kubestack node; the cluster in use is not kubestack")
    stack = kube.stack
    lines = word_lines(48)
    for run in range(RUNS):
        name, work = f"nodekill-{run}", tmp_path / f"run-{run}"
        work.mkdir()
        body = real_job(name, work, SLOW_WORDCOUNT, lines, splitSize=512, workers={"max": 2})
        with watching(cluster, name) as history:
            cluster.create(body)
            wait_for("a running map pod", running_map_pods(cluster, name), 120)
            time.sleep(1.5)  # inside the mapper
            lost = running_map_pods(cluster, name)()
            try:
                stack.kill("node")
                time.sleep(2)  # the API server still shows them Running
                assert all(cluster.core.read_namespaced_pod(p.metadata.name, cluster.ns)
                           .status.phase == "Running" for p in lost)  # fmt: skip
            finally:
                stack.restart("node")
            status = cluster.wait_phase(name, "Succeeded", timeout=240)
            finals = {p.metadata.name: history.pod(p.metadata.name) for p in lost}
            pods = history.pods()

        assert lost
        for pod_name, last in finals.items():
            # Reported as a kubelet would, never run a second time under its name.
            assert last.status.phase == "Failed", (pod_name, last.status)
            state = terminated(last)
            assert state.reason == "ContainerStatusUnknown" and state.exit_code == 137, state
            # Its worker never finished (so never saved its log), nor ran again.
            assert not os.path.exists(attempt_log(status, index_of(last), pod_name)), pod_name
            # Its task ran again in a new pod, which committed it.
            again = [
                p for p in of_stage(pods, "map-0")
                if index_of(p) == index_of(last) and p.metadata.name != pod_name
            ]  # fmt: skip
            done = [p for p in again if p.status.phase == "Succeeded"]
            assert done, pod_name
            assert os.path.exists(attempt_log(status, index_of(last), done[0].metadata.name))
        assert Digest.of_dir(work / "out") == Digest.of_counts(word_counts(lines))
        assert status["result"]["recordsIn"] == len(lines)
        assert status.get("failure") is None
        row = kubectl_row(cluster, name)
        assert row["PHASE"] == "Succeeded" and row["REASON"] in ("", "<none>"), row
    # The session's cluster goes on with its node Ready again.
    assert stack._node_ready()


# -- 3. a worker that hangs -------------------------------------------------------------------
def test_hanging_worker_fails_the_job_at_its_deadline(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    """A mapper that never returns: at spec.activeDeadlineSeconds the job fails with
    DeadlineExceeded, a message naming the deadline, what still ran and what to do; the
    wave's pods are stopped and nothing is published."""
    # Each of the 4 files ends with a line the mapper hangs on, past the records the plan
    # stage's preflight runs the mapper on.
    lines = [*word_lines(4 * (PREFLIGHT_RECORDS + 10)), *["stuck"] * 4]
    for run in range(RUNS):
        name, work = f"hang-{run}", tmp_path / f"run-{run}"
        work.mkdir()
        body = real_job(
            name, work, HANGING, lines, splitSize=1 << 20, maxAttempts=1,
            activeDeadlineSeconds=25,
        )  # fmt: skip
        with watching(cluster, name) as history:
            cluster.create(body)
            status = cluster.wait_phase(name, "Failed", timeout=150)

            wait_all_ended(history, "map-0", timeout=90)
            maps = of_stage(history.pods(), "map-0")

        failure = status["failure"]
        assert failure["reason"] == "DeadlineExceeded", failure
        assert failure.get("task") == "map-0", failure
        message = failure["message"]
        assert "activeDeadlineSeconds=25" in message, message
        assert "map-0" in message and "4 task" in message, message  # what still ran
        assert "spec.activeDeadlineSeconds" in message and "kubemr logs" in message, message
        assert status["wave"].startswith("map") and status["progress"] == "0/4", status
        # Stopped (SIGTERM, the worker's exit 143), none completed.
        assert len(maps) == 4 and all(terminated(p).exit_code == 143 for p in maps), [
            (p.metadata.name, terminated(p)) for p in maps
        ]
        out = work / "out"
        assert not (out / "_SUCCESS").exists()
        assert not out.exists() or part_files(out) == []
        row = kubectl_row(cluster, name)
        assert row["PHASE"] == "Failed" and row["REASON"] == "DeadlineExceeded", row


# -- 4. out of memory -------------------------------------------------------------------------
def test_worker_out_of_memory_names_the_task_and_the_limit(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    """A mapper that allocates past the pod's limits.memory: every attempt fails, and the
    job fails with OutOfMemory naming the task, the limit and what to change."""
    lines = [*word_lines(24), "this line makes the mapper hoard memory"]
    for run in range(RUNS):
        name, work = f"oom-{run}", tmp_path / f"run-{run}"
        work.mkdir()
        body = real_job(
            name, work, HOARDING, lines, splitSize=1 << 20, maxAttempts=2,
            template={
                "command": [sys.executable, "-m", "kubemr"],
                "resources": {"limits": {"memory": "768Mi"}},
            },
        )  # fmt: skip
        cluster.create(body)
        status = cluster.wait_phase(name, "Failed", timeout=180)

        failure = status["failure"]
        assert failure["reason"] == "OutOfMemory", failure
        assert re.fullmatch(r"map-0-\d{5}", failure["task"]), failure
        message = failure["message"]
        assert failure["task"] in message and "768Mi" in message, message
        assert "limits.memory" in message and "splitSize" in message, message
        assert "reducers" in message and "after 2 attempts" in message, message
        assert failure["exitCode"] == 1
        assert "MemoryError" in (failure.get("traceback") or ""), failure
        index = int(failure["task"].rsplit("-", 1)[1])
        tries = [p for p in cluster.pods(name, "map-0") if index_of(p) == index]
        assert len(tries) == 2 and all(p.status.phase == "Failed" for p in tries)
        assert not (work / "out" / "_SUCCESS").exists()
        row = kubectl_row(cluster, name)
        assert row["PHASE"] == "Failed" and row["REASON"] == "OutOfMemory", row
