"""The backlog scaling policy."""

from __future__ import annotations

import pytest

from kubemr.controller.scaling import Scaling, WaveLoad, Workers, scale

W = Workers(min=0, max=4, max_pending=2)


def test_starts_with_max_pending_pods_and_grows_as_they_run() -> None:
    assert scale(WaveLoad(20, 0, 0, 0), W, 0, None) == Scaling(
        2, "waiting for pods to start (workers.maxPending)", True
    )
    assert scale(WaveLoad(20, 0, 2, 2), W, 2, 10).parallelism == 4
    assert scale(WaveLoad(20, 0, 4, 4), W, 4, 10) == Scaling(4, "capped by workers.max", False)


def test_never_more_than_the_backlog_or_max() -> None:
    assert scale(WaveLoad(3, 0, 0, 5), W, 0, None).parallelism == 3
    assert scale(WaveLoad(100, 0, 0, 100), W, 0, None).parallelism == 4


def test_never_lowered_below_active_pods() -> None:
    # 2 tasks left, 4 pods still active: keep 4 rather than delete running pods.
    result = scale(WaveLoad(10, 8, 4, 4), W, 4, 10)
    assert result.parallelism == 4 and not result.changed
    # Once pods finish, it may go down.
    assert scale(WaveLoad(10, 8, 2, 2), W, 4, 10).parallelism == 2


def test_min_workers_are_asked_for_at_once() -> None:
    w = Workers(min=3, max=8, max_pending=1)
    assert scale(WaveLoad(20, 0, 0, 0), w, 0, None).parallelism == 3
    assert scale(WaveLoad(2, 0, 0, 0), w, 0, None).parallelism == 2


def test_changes_are_rate_limited() -> None:
    held = scale(WaveLoad(20, 0, 2, 2), W, 2, 1.0)
    assert held.parallelism == 2 and not held.changed
    assert held.retry_after == pytest.approx(4.0)
    assert scale(WaveLoad(20, 0, 2, 2), W, 2, 6.0).parallelism == 4


def test_done_wave_keeps_its_value() -> None:
    assert scale(WaveLoad(5, 5, 0, 0), W, 3, None) == Scaling(3, "all tasks done", False)
