"""What one worker pod costs on kubestack: a wave of tiny map tasks run by the real
``kubemr worker``, and waves run by the stand-in worker of tests/e2e/test_controller.py
(the pod contract, no job code), each timed from the wave's first pod to its last, with
the CPU time each part of the set-up spent over the whole job: the API server, etcd, the
controller manager, the scheduler, the nodes with their pods, and the kubemr controller.
Whatever else runs on the machine meanwhile adds to the API server's and etcd's share.

The figures size the load tier: whether thousands of real pods fit in its time.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from tests.e2e import support
from tests.e2e.datajobs import WORDCOUNT, Digest, real_job, word_counts, word_lines
from tests.e2e.support import Cluster, ControllerProcess
from tests.e2e.test_controller import FAKE_WORKER, fake_job
from tests.load.measure import report

pytestmark = [pytest.mark.load, pytest.mark.timeout(1200)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

TASKS = 24
WIDTH = 4
WIDE_TASKS = 160
WIDE = 32


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and of its children it has reaped (a node's pods)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system + t.children_user + t.children_system


def cpu_by_part(kube: Any, controller: ControllerProcess) -> dict[str, float]:
    parts = {name: cpu_of(proc.pid) for name, proc in kube.stack.procs.items()}
    # Every node with the pods it ran, as one part.
    parts["node"] += sum(cpu_of(pid) for pid in kube.extra_pids.values())
    assert controller.proc is not None
    parts["kubemr-controller"] = cpu_of(controller.proc.pid)
    return parts


def wave_seconds(cluster: Cluster, name: str, stage: str) -> tuple[float, int]:
    """From the wave's first pod's start to its last pod's end, and how many pods ran."""
    pods = cluster.pods(name, stage)
    starts, ends = [], []
    for pod in pods:
        state = (pod.status.container_statuses or [None])[0]
        term = state.state.terminated if state is not None else None
        if term is not None:
            starts.append(term.started_at)
            ends.append(term.finished_at)
    assert starts, f"no finished pod of {name} {stage}"
    return (max(ends) - min(starts)).total_seconds(), len(pods)


def measured(
    kube: Any, cluster: Cluster, controller: ControllerProcess, name: str, body: dict[str, Any]
) -> dict[str, Any]:
    before, t0 = cpu_by_part(kube, controller), time.monotonic()
    cluster.create(body)
    status = cluster.wait_phase(name, "Succeeded", timeout=900)
    after, t1 = cpu_by_part(kube, controller), time.monotonic()
    seconds, pods = wave_seconds(cluster, name, "map-0")
    everything = pods + 3  # the plan, reduce and commit pods
    cpu = {part: round((after[part] - before[part]) / everything, 3) for part in after}
    per_pod = sum(cpu.values())
    return {
        "status": status,
        "map_pods": pods,
        "workers_max": body["spec"]["workers"]["max"],
        "map_wave_seconds": round(seconds, 1),
        "map_pods_per_second": round(pods / max(seconds, 1e-3), 2),
        "job_seconds": round(t1 - t0, 1),
        "cpu_seconds_per_pod": round(per_pod, 3),
        "cpu_seconds_per_pod_by_part": cpu,
        "minutes_for_5000_pods_on_2_cores": round(5000 * per_pod / 2 / 60, 1),
    }


def test_what_one_worker_pod_costs(
    kube: Any, cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    figures: dict[str, Any] = {}
    # The real worker: one map task per tiny split.
    lines = word_lines(TASKS * 4)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    body = real_job(
        "real",
        real_dir,
        WORDCOUNT,
        lines,
        splitSize=64,
        reducers=1,
        workers={"max": WIDTH, "maxPending": WIDTH},
    )
    real = measured(kube, cluster, controller, "real", body)
    assert Digest.of_dir(real_dir / "out") == Digest.of_counts(word_counts(lines))
    maps = next(w for w in real.pop("status")["waves"] if w["kind"] == "map")["total"]
    assert maps == real["map_pods"] >= TASKS
    figures["real_worker"] = real

    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    for name, tasks, width in (("stand-in", maps, WIDTH), ("stand-in-wide", WIDE_TASKS, WIDE)):
        where = tmp_path / name
        where.mkdir()
        body = fake_job(
            name,
            str(worker),
            where,
            maps=tasks,
            reducers=1,
            workers={"max": width, "maxPending": width},
        )
        figures[name] = measured(kube, cluster, controller, name, body)
        figures[name].pop("status")
        assert figures[name]["map_pods"] == tasks
    report("pod_cost", figures)
