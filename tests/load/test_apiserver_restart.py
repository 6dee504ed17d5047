"""The API server killed and started again while thirty jobs run: the controller's
informers notice (their watches break, lists fail), list and watch again once it is back,
the controller keeps running, and every job still ends Succeeded with the right output
and a final status that lost nothing.

The controller runs without leader election here: with it, an outage longer than the
lease's renew deadline (10 s) makes the leader give up and exit on purpose, to be
restarted by its Deployment as a fresh candidate (tests/unit/test_controller_runtime.py
covers that); what this test looks at is the informers riding out the outage.

Figures: the outage (kill to the API server ready again), how long the controller took to
notice (kill to its first failed list or watch) and to recover (API server ready to every
informer listed and watching again, and to its next successful status write), wall time,
the controller's RSS and API requests.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.e2e import support
from tests.e2e.datajobs import slowed
from tests.e2e.support import Cluster, wait_for
from tests.load.jobs import Watcher, check_succeeded, small_job
from tests.load.measure import ControllerWatch, report, scrape

pytestmark = [pytest.mark.load, pytest.mark.timeout(2400)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

JOBS = 30
DOWN_SECONDS = 5.0
INFORMERS = ("mapreducejobs", "jobs", "pods")


def informer_state(port: int) -> dict[str, dict[str, float]]:
    """Per informer: lists, watches, failures (from the controller's metrics)."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in scrape(port, timeout=2).items():
        prefix = "kubemr_controller_informer_"
        if name.startswith(prefix):
            informer = dict(labels).get("informer", "?")
            out.setdefault(informer, {})[name[len(prefix) :]] = value
    return out


def status_writes(port: int) -> float:
    return sum(
        value
        for (name, labels), value in scrape(port, timeout=2).items()
        if name == "kubemr_controller_api_requests_by_resource_total"
        and dict(labels).get("resource") == "mapreducejobs/status"
        and dict(labels).get("code", "").startswith("2")
    )


class Timeline:
    """The controller's informers and status writes, sampled every 0.2 s."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, dict[str, dict[str, float]], float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (time.monotonic(), informer_state(self.port), status_writes(self.port))
                )
            except OSError:
                pass  # the controller's own endpoint is local: a miss is a slow scrape
            self._stop.wait(0.2)

    def first(self, after: float, check: Any) -> float | None:
        for t, state, writes in self.samples:
            if t >= after and check(state, writes):
                return t
        return None


def test_api_server_restarted_under_load(
    kube: Any, cluster: Cluster, start_controller: Any, tmp_path: Any
) -> None:
    controller = start_controller("--no-leader-elect")
    assert controller.proc is not None
    # Tasks long enough for the outage to fall in the middle of the jobs.
    jobs = [
        small_job(i, tmp_path, pendingDeadlineSeconds=3600, job={"source": slowed_wordcount()})
        for i in range(JOBS)
    ]
    wait_for("the controller's metrics", lambda: _up(controller.health_port), timeout=60)
    wait_for(
        "every informer synced",
        lambda: all(
            informer_state(controller.health_port).get(i, {}).get("synced") == 1 for i in INFORMERS
        ),
        timeout=60,
    )
    watch = ControllerWatch(controller.proc.pid, controller.health_port).start()
    timeline = Timeline(controller.health_port).start()
    watcher = Watcher(cluster, {j.name for j in jobs}, every=2.0).start()
    for job in jobs:
        cluster.create(job.body)

    def under_way() -> bool:
        phases = [s.get("phase") for s in watcher.statuses.values()]
        return phases.count("Running") >= 5

    wait_for("jobs running", under_way, timeout=900, every=0.5)
    ended_before = len(watcher.ended_at)
    before = informer_state(controller.health_port)
    writes_before = status_writes(controller.health_port)
    killed = time.monotonic()
    kube.stack.kill("apiserver")
    time.sleep(DOWN_SECONDS)
    kube.stack.restart("apiserver")
    back = time.monotonic()
    assert controller.proc.poll() is None, "the controller exited while the API was down"

    def relisted(state: dict[str, dict[str, float]], _: float) -> bool:
        return all(
            state.get(i, {}).get("lists", 0) > before[i]["lists"]
            and state.get(i, {}).get("watches", 0) > before[i]["watches"]
            for i in INFORMERS
        )

    wait_for("every informer listing and watching again", lambda: timeline.first(back, relisted),
             timeout=300)  # fmt: skip
    watcher.wait(timeout=1800)
    watch.stop()
    timeline.stop()
    assert controller.proc.poll() is None, "the controller exited"

    def noticed(state: dict[str, dict[str, float]], _: float) -> bool:
        return any(state.get(i, {}).get("failures", 0) > before[i]["failures"] for i in INFORMERS)

    def wrote(_: dict[str, dict[str, float]], writes: float) -> bool:
        return writes > writes_before

    noticed_at = timeline.first(killed, noticed)
    recovered_at = timeline.first(back, relisted)
    written_at = timeline.first(back, wrote)
    last = timeline.samples[-1][1]
    wrong = [w for j in jobs for w in check_succeeded(j, watcher.statuses[j.name], 1)]
    wall = watcher.wall()
    figures = {
        "jobs": JOBS,
        "jobs_ended_before_the_outage": ended_before,
        "outage_seconds": round(back - killed, 1),
        "noticed_after_seconds": round(noticed_at - killed, 1) if noticed_at else None,
        "relisted_and_watching_after_seconds": (
            round(recovered_at - back, 1) if recovered_at else None
        ),
        "first_status_write_after_seconds": round(written_at - back, 1) if written_at else None,
        "informers_before": before,
        "informers_after": last,
        "wall_seconds": round(wall, 1),
        "status_bytes_max": watcher.max_status_bytes,
        **watch.figures(wall, JOBS),
        "wrong": wrong[:20],
    }
    report("apiserver_restart", figures)
    assert noticed_at is not None, "no informer saw the API server go away"
    assert recovered_at is not None
    assert written_at is not None, "no status was written after the API server came back"
    assert not wrong, "\n".join(wrong[:20])


def slowed_wordcount() -> str:
    from tests.e2e.datajobs import WORDCOUNT

    return slowed(WORDCOUNT, 0.3)


def _up(port: int) -> bool:
    try:
        scrape(port, timeout=2)
    except OSError:
        return False
    return True
