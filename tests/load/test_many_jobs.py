"""Two hundred small jobs submitted at once, run by the real ``kubemr worker`` on local
files: every one ends Succeeded with the output its reference gives and a final status
that lost no update (result counts, every wave done, the conditions right), and the
controller stays within fixed bounds of memory and of API requests per job.

Figures (printed and written to the load results, see :mod:`tests.load.measure`): jobs,
wall time, the controller's peak and final RSS, its API requests per second and per job
by verb, reconciles per job, the largest status seen.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e import support
from tests.e2e.support import Cluster, ControllerProcess, wait_for
from tests.load.jobs import Watcher, check_succeeded, small_job
from tests.load.measure import ControllerWatch, report

pytestmark = [pytest.mark.load, pytest.mark.timeout(3600)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

JOBS = 200
RSS_CEILING_MIB = 256
"""The controller's resident memory with 200 jobs (their resources, Jobs and pods in its
caches) stays below this (measured: about 120 MiB)."""
REQUESTS_PER_JOB_CEILING = 40
"""API requests (watches left out) the controller makes per job of four stages: a Job
apply each, a status write per step of progress, an Event per stage, a few conflicts,
and its share of the lease renewals (measured: about 27)."""
STATUS_BYTES_CEILING = 4096


def test_200_small_jobs_at_once_all_succeed_with_their_outputs(
    cluster: Cluster, controller: ControllerProcess, tmp_path: Any
) -> None:
    jobs = [
        # Queued for the node's pods on purpose: wait for room rather than fail.
        small_job(i, tmp_path, pendingDeadlineSeconds=3600)
        for i in range(JOBS)
    ]
    assert controller.proc is not None
    wait_for("the controller's metrics", lambda: _metrics_up(controller), timeout=60)
    watch = ControllerWatch(controller.proc.pid, controller.health_port).start()
    watcher = Watcher(cluster, {j.name for j in jobs}, every=2.0).start()
    submitted = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: cluster.create(j.body), jobs))
    submit_seconds = time.monotonic() - submitted
    watcher.wait(timeout=3000)
    watch.stop()
    assert controller.proc.poll() is None, "the controller exited"

    wrong = [w for j in jobs for w in check_succeeded(j, watcher.statuses[j.name], 1)]
    wall = watcher.wall()
    figures = {
        "jobs": JOBS,
        "pods_per_job": 4,
        "submit_seconds": round(submit_seconds, 1),
        "wall_seconds": round(wall, 1),
        "jobs_per_minute": round(60 * JOBS / max(wall, 1e-3), 1),
        "status_bytes_max": watcher.max_status_bytes,
        "status_polls": watcher.polls,
        **watch.figures(wall, JOBS),
        "requests_per_job_without_watches": round(watch.requests_per_job(JOBS), 1),
        "wrong": wrong[:20],
    }
    report("many_jobs", figures)
    assert not wrong, "\n".join(wrong[:20])
    assert watch.rss.peak < RSS_CEILING_MIB * 2**20, figures
    assert watch.requests_per_job(JOBS) < REQUESTS_PER_JOB_CEILING, figures
    assert watcher.max_status_bytes < STATUS_BYTES_CEILING, figures


def _metrics_up(controller: ControllerProcess) -> bool:
    from tests.load.measure import scrape

    try:
        scrape(controller.health_port, timeout=2)
    except OSError:
        return False
    return True
