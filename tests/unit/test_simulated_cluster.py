"""The controller's reconcile and scaling policy driven through a simulated cluster
(:mod:`tests.sim.cluster`): runs of each scenario, sized for CI, that keep every invariant
on every tick and end as their plans make right; and proof that the checks can fail.

The full-scale runs are ``python -m bench.simulate`` (docs/benchmarks.md).
"""

from __future__ import annotations

import random

import pytest

from kubemr.controller import parallelism
from kubemr.controller.observed import parse_indexes
from kubemr.controller.scaling import Scaling, WaveLoad
from kubemr.controller.scaling import Workers as PolicyWorkers
from tests.sim.cluster import (
    STATUS_BOUND,
    Churn,
    IndexSet,
    InvariantError,
    Invariants,
    JobPlan,
    Report,
    Scenario,
    Simulation,
    Workers,
    scenario_a,
    scenario_b,
    scenario_c,
    scenario_d,
)

SPANS = {"plan": (3, 6), "map": (5, 12), "reduce": (5, 12), "commit": (2, 4)}


def clean(report: Report) -> None:
    assert not report.violations, "\n".join(str(v) for v in report.violations[:5])


def one_job(
    maps: int = 40,
    reducers: int = 4,
    workers: Workers | None = None,
    nodes: int = 4,
    seed: int = 7,
) -> Scenario:
    rng = random.Random(seed)
    plan = JobPlan("solo", maps, (reducers,), {}, workers or Workers(0, 8, 2))
    plan.durations = {
        stage: [rng.randint(*SPANS[stage.split("-")[0]]) for _ in range(tasks)]
        for stage, tasks in plan.stages()
    }
    return Scenario("solo", "one small job", nodes, 8, [plan], seed=seed)


# -- the simulator itself ----------------------------------------------------------------------
def test_index_sets_are_written_as_the_job_controller_writes_them() -> None:
    rng = random.Random(1)
    indexes = IndexSet()
    added: set[int] = set()
    for _ in range(500):
        i = rng.randrange(300)
        assert indexes.add(i) == (i not in added)
        added.add(i)
        assert parse_indexes(indexes.text) == added
    assert indexes.count == len(added)
    assert all((i in indexes) == (i in added) for i in range(-1, 301))


def test_a_seed_replays_the_same_run() -> None:
    def digest(report: Report) -> tuple[object, ...]:
        return (
            report.simulated_seconds,
            report.reconciles,
            report.status_writes_per_job,
            report.scale_patches_per_job,
            report.max_status_bytes,
            report.counters,
        )

    first = Simulation(scenario_c(jobs=8, nodes=2, task_range=(10, 30), seed=5)).run()
    again = Simulation(scenario_c(jobs=8, nodes=2, task_range=(10, 30), seed=5)).run()
    other = Simulation(scenario_c(jobs=8, nodes=2, task_range=(10, 30), seed=6)).run()
    assert digest(first) == digest(again)
    assert digest(first) != digest(other)


def test_reconcile_never_changes_what_it_is_given() -> None:
    report = Simulation(one_job(), check_purity=True).run()
    clean(report)
    assert report.succeeded == 1


# -- the scenarios, sized for CI -----------------------------------------------------------
def test_a_wide_job_keeps_every_invariant_and_a_bounded_status() -> None:
    report = Simulation(scenario_a(tasks=2000, map_seconds=(5, 15))).run()
    clean(report)
    assert report.succeeded == 1
    assert 100 < report.peak_wave_pods <= 200  # grown with the backlog, within workers.max
    assert report.counters.running_killed == 0
    small = Simulation(scenario_a(tasks=200, reducers=10, map_seconds=(5, 15))).run()
    clean(small)
    # Ten times the tasks: only the digits of the counts grow.
    assert report.max_status_bytes <= STATUS_BOUND
    assert report.max_status_bytes - small.max_status_bytes <= 32


def test_many_jobs_under_capacity_pressure_all_succeed_within_the_bound() -> None:
    scenario = scenario_b(jobs=60, nodes=4, task_range=(15, 40))
    demand = sum(min(p.workers.max, p.maps) for p in scenario.jobs)
    assert demand > 4 * scenario.cores  # the cluster holds only a part of the jobs
    report = Simulation(scenario).run()
    clean(report)
    assert report.succeeded == len(scenario.jobs)
    assert report.simulated_seconds <= report.bound
    assert report.counters.running_killed == 0


def test_node_churn_reruns_only_the_lost_tasks() -> None:
    churn = Churn(fraction=0.25, every=60, down_for=30, start=30)
    scenario = scenario_c(jobs=30, nodes=4, task_range=(15, 40), churn=churn)
    report = Simulation(scenario).run()
    clean(report)  # includes: no finished task ran again
    assert report.counters.nodes_lost >= 5
    assert report.counters.pods_disrupted > 0
    assert report.succeeded == len(scenario.jobs)


def test_task_failures_below_max_attempts_succeed_and_the_others_fail_with_their_cause() -> None:
    scenario = scenario_d(
        jobs=40, nodes=4, task_range=(10, 30), failure_rate=0.1, doomed_rate=0.25, seed=11
    )
    expected = {p.name: p.expected() for p in scenario.jobs}
    reasons = {e.reason for e in expected.values() if e.phase == "Failed"}
    assert reasons == {"UserCodeError", "BadInput"}
    retried = [p for p in scenario.jobs if p.fail_attempts and p.expected().phase == "Succeeded"]
    assert retried
    sim = Simulation(scenario)
    report = sim.run()
    clean(report)  # includes each job's phase, failure reason and task
    assert report.failed == report.expected_failed == len(scenario.jobs) - report.succeeded
    for plan in retried:
        status = sim.store.resources[plan.name]["status"]
        assert status["phase"] == "Succeeded"
        assert sum(w["failed"] for w in status["waves"]) > 0  # its retries are counted


def test_suspend_stops_the_wave_and_resume_reruns_only_unfinished_tasks() -> None:
    sim = Simulation(one_job(maps=60, workers=Workers(0, 6, 2)), check_purity=True)
    sim.at(40, lambda s: s.patch_spec("solo", {"suspend": True}))
    sim.at(100, lambda s: s.patch_spec("solo", {"suspend": False}))
    sim.run(until=99)
    status = sim.store.resources["solo"]["status"]
    assert status["phase"] == "Suspended"
    assert not [p for p in sim.cluster.pods.values() if p.phase in ("Pending", "Running")]
    report = sim.run()
    clean(report)  # includes: no finished task ran again
    assert report.succeeded == 1
    assert report.counters.deleted_by_suspend > 0
    assert report.suspend_patches == 2


def test_cancel_stops_the_running_wave_and_fails_the_job() -> None:
    sim = Simulation(one_job(maps=60))
    sim.at(40, lambda s: s.patch_spec("solo", {"cancel": True}))
    sim.run(until=60)
    status = sim.store.resources["solo"]["status"]
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "Cancelled"
    assert not [p for p in sim.cluster.pods.values() if p.phase in ("Pending", "Running")]
    clean(sim.report(0.0))


# -- the checks can fail ---------------------------------------------------------------------
def test_a_scale_below_the_running_pods_is_caught_with_its_numbers() -> None:
    checks = Invariants()
    checks.tick, checks.seconds = 12, 12.0
    with pytest.raises(InvariantError) as caught:
        checks.scale(
            "wc",
            "wc-map-0",
            Workers(0, 8, 2),
            6,
            3,
            running=5,
            active=6,
            ready=5,
            scheduled=6,
            remaining=40,
        )
    text = str(caught.value)
    assert "scaled-below-running at tick 12" in text
    assert "job wc" in text and "parallelism 6 -> 3 with 5 running" in text
    # The policy's own bounds, one by one.
    lenient = Invariants(strict=False)
    pods = {"running": 2, "active": 2, "ready": 2, "scheduled": 2, "remaining": 40}
    lenient.scale("wc", "j", Workers(0, 8, 2), 2, 9, **pods)
    lenient.scale("wc", "j", Workers(4, 8, 2), 2, 3, **pods)
    lenient.scale("wc", "j", Workers(0, 8, 2), 2, 6, **pods)
    # Pods starting on a node count as placed: growing past the running ones is right.
    starting = {**pods, "active": 6, "scheduled": 6}
    lenient.scale("wc", "j", Workers(0, 8, 2), 6, 8, **starting)
    # Pods not placed do not: with 4 of 6 waiting for a node, growing is an over-ask.
    waiting = {**pods, "active": 6, "scheduled": 2}
    lenient.scale("wc", "j", Workers(0, 8, 2), 6, 7, **waiting)
    assert [v.invariant for v in lenient.violations] == [
        "parallelism-above-max",
        "grown-past-scheduled-plus-maxPending",
        "parallelism-below-min",
        "grown-past-scheduled-plus-maxPending",
        "grown-past-scheduled-plus-maxPending",
    ]


def test_a_broken_scaling_policy_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    real = parallelism.scale

    def halving(
        load: WaveLoad, workers: PolicyWorkers, current: int, seconds_since_change: float | None
    ) -> Scaling:
        if load.active >= 4:
            return Scaling(load.active // 2, "broken: halve", True)
        return real(load, workers, current, seconds_since_change)

    monkeypatch.setattr(parallelism, "scale", halving)
    with pytest.raises(InvariantError, match=r"scaled-below-(running|active) at tick \d+"):
        Simulation(one_job(workers=Workers(0, 8, 4))).run()


def test_a_status_past_its_bound_fails_the_run() -> None:
    with pytest.raises(InvariantError, match=r"status-size .* job solo: status is \d+ bytes"):
        Simulation(one_job(), Invariants(status_bound=400)).run()


def test_a_job_that_cannot_end_in_time_is_reported_starved() -> None:
    scenario = one_job(maps=30, nodes=1)
    scenario.jobs[0].cpu = "16"  # no node has room for one pod: 8 cores each
    scenario.jobs[0].pending_deadline = None  # waits forever
    report = Simulation(scenario, Invariants(strict=False)).run()
    assert {v.invariant for v in report.violations} == {"starved", "wrong-outcome"}


# -- product bugs the simulator shows --------------------------------------------------------
def test_max_pending_one_grows_the_wave_on_an_empty_cluster() -> None:
    # maxPending 0 could never grow a wave (no more pods are ready than were asked for):
    # the spec refuses it (tests/unit/test_spec.py).
    sim = Simulation(one_job(maps=60, workers=Workers(0, 10, 1)), Invariants(strict=False))
    report = sim.run()
    assert report.peak_wave_pods == 10, report.peak_wave_pods
    clean(report)


def test_a_wide_wave_at_the_default_max_pending_reaches_workers_max() -> None:
    # Tasks of 20-40 s always have some pods starting: counted against maxPending (as
    # "not ready"), they held such a wave at about 78 of 100 pods; only pods waiting for a
    # node count now.
    scenario = scenario_a(
        tasks=1500, reducers=20, workers_max=100, max_pending=2, map_seconds=(20, 40)
    )
    report = Simulation(scenario).run()
    clean(report)  # includes: never grown past the pods on a node + maxPending
    assert report.peak_wave_pods == 100, report.peak_wave_pods
    assert report.counters.running_killed == 0
