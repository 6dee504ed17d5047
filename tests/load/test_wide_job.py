"""One job of 5,000 tiny map tasks: it plans, runs its wave to the end and succeeds; the
resource's status stays under a fixed size on every poll, the controller's memory stays
bounded while its caches hold the wave's 5,000 retained pods, and the wave grows to
``workers.max`` at the default ``workers.maxPending`` (2).

The tasks run the stand-in worker of tests/e2e/test_controller.py (:data:`FAKE_WORKER`:
the pod contract, no job code), not the real ``kubemr worker``: 5,000 real worker pods do
not fit in about 25 minutes on this tier's 2 cores. One costs about 0.6 CPU-seconds of the
machine (tests/load/test_pod_cost.py; 0.47 s of it the worker's own Python start and
run), so 5,000 would keep both cores busy for 25 minutes with nothing else running; the
200 real jobs of test_many_jobs.py ran their 800 pods at about 1.6 a second, which puts
5,000 near 50 minutes. A stand-in pod costs about 0.15 CPU-seconds. The controller sees
the same pods, Job status and termination messages either way.

Figures: the wave's width over time (parallelism, active and ready pods from the Job,
sampled every second), when it reached ``workers.max``, wall time, the largest status,
the controller's peak and final RSS and its API requests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest

from tests.e2e import support
from tests.e2e.support import Cluster, ControllerProcess, wait_for
from tests.e2e.test_controller import FAKE_WORKER, fake_job
from tests.load.measure import ControllerWatch, report, scrape

pytestmark = [pytest.mark.load, pytest.mark.timeout(4800)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

TASKS = int(os.environ.get("KUBEMR_LOAD_WIDE_TASKS", "5000"))  # fewer for a quick look
WIDTH = 100
STATUS_BYTES_CEILING = 8192
"""The status of a job of any width stays under this (the simulated cluster's bound)."""
RSS_CEILING_MIB = 320
"""The controller's resident memory while its pod cache holds one wave's 5,000 pods
(measured: about 180 MiB)."""


class WaveSampler:
    """Every ``every`` seconds: the resource's status size and the map Job's width."""

    def __init__(self, cluster: Cluster, name: str, every: float = 1.0) -> None:
        self.cluster = cluster
        self.name = name
        self.every = every
        self.max_status_bytes = 0
        self.polls = 0
        self.series: list[tuple[float, int, int, int, int]] = []  # t, par., active, ready, done
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wave-sampler", daemon=True)
        self.started = time.monotonic()

    def start(self) -> WaveSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self._stop.wait(self.every)

    def sample(self) -> None:
        status = self.cluster.status(self.name)
        self.polls += 1
        self.max_status_bytes = max(
            self.max_status_bytes, len(json.dumps(status, separators=(",", ":")))
        )
        try:
            job = self.cluster.batch.read_namespaced_job(f"{self.name}-map-0", self.cluster.ns)
        except Exception:
            return  # not created yet
        js = job.status
        done = sum(
            int(b) - int(a) + 1 if b else 1
            for part in (js.completed_indexes or "").split(",")
            if part
            for a, _, b in [part.partition("-")]
        )
        self.series.append(
            (
                round(time.monotonic() - self.started, 1),
                job.spec.parallelism or 0,
                js.active or 0,
                js.ready or 0,
                done,
            )
        )

    def ramp(self, width: int) -> dict[str, Any]:
        """When the wave's Job was first seen, its widest parallelism and active pods, and
        seconds from the first sample to parallelism ``width`` (None: never)."""
        if not self.series:
            return {}
        first = self.series[0][0]
        reached = next((t for t, p, *_ in self.series if p >= width), None)
        running = [a for _, p, a, _, d in self.series if d < TASKS]
        return {
            "map_job_seen_at_seconds": first,
            "peak_parallelism": max(p for _, p, *_ in self.series),
            "peak_active_pods": max(a for _, _, a, _, _ in self.series),
            "peak_ready_pods": max(r for *_, r, _ in self.series),
            "seconds_to_workers_max": round(reached - first, 1) if reached is not None else None,
            "mean_active_pods_while_tasks_left": round(sum(running) / max(len(running), 1), 1),
            "width_every_30s": [
                {"t": t, "parallelism": p, "active": a, "ready": r, "done": d}
                for i, (t, p, a, r, d) in enumerate(self.series)
                if i % 30 == 0
            ],
        }


def test_one_job_of_5000_tiny_map_tasks(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    body = fake_job("wide", str(worker), tmp_path, maps=TASKS, reducers=1, workers={"max": WIDTH})
    assert body["spec"]["workers"] == {"max": WIDTH}  # maxPending: the default, 2
    assert controller.proc is not None
    wait_for("the controller's metrics", lambda: _up(controller.health_port), timeout=60)
    watch = ControllerWatch(controller.proc.pid, controller.health_port).start()
    sampler = WaveSampler(cluster, "wide").start()
    started = time.monotonic()
    cluster.create(body)
    try:
        status = cluster.wait_phase("wide", "Succeeded", timeout=4200)
    finally:
        wall = time.monotonic() - started
        sampler.stop()
        watch.stop()
    sampler.sample()  # the final status too
    assert controller.proc.poll() is None, "the controller exited"

    runs: dict[int, int] = {}
    for entry in os.listdir(tmp_path / "attempts"):
        stage, index, _ = entry.split(".", 2)
        if stage == "map-0":
            runs[int(index)] = runs.get(int(index), 0) + 1
    map_wave = next(w for w in status["waves"] if w["kind"] == "map")
    figures = {
        "tasks": TASKS,
        "workers_max": WIDTH,
        "workers_max_pending": 2,
        "worker": "stand-in (tests/e2e/test_controller.py FAKE_WORKER)",
        "wall_seconds": round(wall, 1),
        "map_wave_seconds": _seconds(map_wave),
        "status_bytes_max": sampler.max_status_bytes,
        "status_polls": sampler.polls,
        "tasks_run_more_than_once": sum(1 for n in runs.values() if n > 1),
        **sampler.ramp(WIDTH),
        **watch.figures(wall, 1),
        "sampler_errors": sampler.errors[:5],
    }
    report("wide_job", figures)
    assert sorted(runs) == list(range(TASKS)), "some map task never ran"
    assert status["progress"] == f"{TASKS + 1}/{TASKS + 1}"
    assert (map_wave["succeeded"], map_wave["total"]) == (TASKS, TASKS)
    assert status["result"]["recordsIn"] == 10  # the stand-in commit's report
    assert sampler.max_status_bytes < STATUS_BYTES_CEILING, figures
    assert watch.rss.peak < RSS_CEILING_MIB * 2**20, figures
    # Pods starting on a node do not hold the wave back: it grows past ready + maxPending,
    # where counting only ready pods held it (at 8 of 100 with 1,500 such tasks), and a
    # wave of 5,000 reaches workers.max.
    assert figures["peak_parallelism"] > figures["peak_ready_pods"] + 2, figures
    if TASKS >= 5000:
        assert figures["peak_parallelism"] == WIDTH, figures


def _seconds(wave: dict[str, Any]) -> float | None:
    from kubemr.controller.observed import parse_time

    start, end = parse_time(wave.get("startTime")), parse_time(wave.get("completionTime"))
    return (end - start).total_seconds() if start and end else None


def _up(port: int) -> bool:
    try:
        scrape(port, timeout=2)
    except OSError:
        return False
    return True
