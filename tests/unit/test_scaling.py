"""The backlog scaling policy."""

from __future__ import annotations

import pytest

from kubemr.controller.scaling import Scaling, WaveLoad, Workers, scale

W = Workers(min=0, max=4, max_pending=2)
HELD = "waiting for pods to be scheduled (workers.maxPending)"


def load(total: int, succeeded: int, active: int, ready: int, scheduled: int = -1) -> WaveLoad:
    """A wave whose active pods are all on a node unless ``scheduled`` says otherwise."""
    return WaveLoad(total, succeeded, active, ready, active if scheduled < 0 else scheduled)


def test_starts_with_max_pending_pods_and_grows_as_they_are_placed() -> None:
    assert scale(load(20, 0, 0, 0), W, 0, None) == Scaling(2, HELD, True)
    assert scale(load(20, 0, 2, 2), W, 2, 10).parallelism == 4
    assert scale(load(20, 0, 4, 4), W, 4, 10) == Scaling(4, "capped by workers.max", False)


def test_pods_starting_on_a_node_do_not_hold_the_wave_back() -> None:
    w = Workers(min=0, max=200, max_pending=2)
    # 90 pods on a node, 80 of them running, 10 starting (a task just ended, its next
    # pod is starting): the wave still grows, by maxPending.
    grown = scale(load(3000, 500, 90, 80, scheduled=90), w, 90, 10)
    assert grown == Scaling(92, HELD, True)
    # Pods not on a node do hold it: 2 waiting for a node are maxPending already.
    assert scale(load(3000, 500, 92, 80, scheduled=90), w, 92, 10) == Scaling(92, HELD, False)
    # ... and so do pods that no node can take.
    assert not scale(load(3000, 500, 95, 90, scheduled=90), w, 95, 10).changed


def test_what_was_asked_for_is_not_withdrawn_while_its_pods_are_made() -> None:
    w = Workers(min=0, max=50, max_pending=2)
    # Parallelism 20, of which the Job controller has made 12 pods so far, 10 placed:
    # neither grow (2 wait for a node) nor shrink (8 more pods are on their way).
    assert scale(load(1000, 0, 12, 10, scheduled=10), w, 20, 10) == Scaling(20, HELD, False)


def test_never_more_than_the_backlog_or_max() -> None:
    assert scale(load(3, 0, 0, 5, scheduled=5), W, 0, None).parallelism == 3
    assert scale(load(100, 0, 0, 100, scheduled=100), W, 0, None).parallelism == 4


def test_never_lowered_below_active_pods() -> None:
    # 2 tasks left, 4 pods still active: keep 4 rather than delete running pods.
    result = scale(load(10, 8, 4, 4), W, 4, 10)
    assert result.parallelism == 4 and not result.changed
    # Once pods finish, it may go down.
    assert scale(load(10, 8, 2, 2), W, 4, 10).parallelism == 2
    # workers.max lowered below the pods running: they are kept, none more asked for.
    kept = scale(load(100, 0, 6, 6), Workers(0, 4, 2), 6, 10)
    assert kept == Scaling(6, "keeping running pods", False)


def test_min_workers_are_asked_for_at_once() -> None:
    w = Workers(min=3, max=8, max_pending=1)
    assert scale(load(20, 0, 0, 0), w, 0, None).parallelism == 3
    assert scale(load(2, 0, 0, 0), w, 0, None).parallelism == 2


def test_changes_are_rate_limited() -> None:
    held = scale(load(20, 0, 2, 2), W, 2, 1.0)
    assert held.parallelism == 2 and not held.changed
    assert held.retry_after == pytest.approx(4.0)
    assert scale(load(20, 0, 2, 2), W, 2, 6.0).parallelism == 4


def test_done_wave_keeps_its_value() -> None:
    assert scale(load(5, 5, 0, 0), W, 3, None) == Scaling(3, "all tasks done", False)
