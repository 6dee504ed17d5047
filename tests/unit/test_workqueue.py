"""The controller's work queue: de-duplication, the dirty set, timed and rate-limited
requeues, shutdown, and many threads at once."""

from __future__ import annotations

import random
import threading
import time

import pytest

from kubemr.controller.workqueue import ExponentialBackoff, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock=clock)


def drain(queue: WorkQueue) -> list[str]:
    """Everything ready now, each marked done."""
    out = []
    while (key := queue.get(timeout=0)) is not None:
        out.append(key)
        queue.done(key)
    return out


# -- de-duplication and the dirty set ------------------------------------------------------
def test_a_key_queued_twice_is_handed_out_once_in_fifo_order(queue: WorkQueue) -> None:
    for key in ["a", "b", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert drain(queue) == ["a", "b", "c"]
    assert queue.get(timeout=0) is None


def test_a_key_in_progress_is_not_handed_to_a_second_worker(queue: WorkQueue) -> None:
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0
    assert queue.get(timeout=0) is None  # not while "a" is processed
    assert queue.processing() == 1
    queue.done("a")
    assert queue.get(timeout=0) == "a"  # the adds made while processing: one more run
    queue.done("a")
    assert queue.get(timeout=0) is None


def test_done_without_a_new_add_does_not_requeue(queue: WorkQueue) -> None:
    queue.add("a")
    key = queue.get(timeout=0)
    assert key == "a"
    queue.done(key)
    assert len(queue) == 0
    assert queue.processing() == 0


def test_other_keys_flow_while_one_is_processed(queue: WorkQueue) -> None:
    queue.add("a")
    queue.add("b")
    assert queue.get(timeout=0) == "a"
    queue.add("a")
    assert queue.get(timeout=0) == "b"
    queue.done("b")
    assert queue.get(timeout=0) is None
    queue.done("a")
    assert drain(queue) == ["a"]


# -- timed adds ----------------------------------------------------------------------------
def test_add_after_becomes_ready_at_its_due_time(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("a", 5)
    assert queue.waiting() == 1
    assert queue.get(timeout=0) is None
    clock.advance(4.9)
    assert queue.get(timeout=0) is None
    clock.advance(0.2)
    assert queue.get(timeout=0) == "a"
    assert queue.waiting() == 0


def test_add_after_the_earliest_due_time_wins(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 20)  # later than pending: ignored
    assert queue.waiting() == 1
    clock.advance(5)
    assert drain(queue) == ["a"]
    # The superseded 10 s and 20 s entries don't fire later.
    clock.advance(30)
    assert drain(queue) == []


def test_add_after_zero_or_negative_is_an_add(queue: WorkQueue) -> None:
    queue.add_after("a", 0)
    queue.add_after("b", -3)
    assert drain(queue) == ["a", "b"]


def test_timed_keys_come_out_in_due_order(queue: WorkQueue, clock: FakeClock) -> None:
    queue.add_after("late", 3)
    queue.add_after("early", 1)
    queue.add_after("middle", 2)
    clock.advance(3)
    assert drain(queue) == ["early", "middle", "late"]


def test_a_timed_add_of_a_queued_key_does_not_duplicate_it(
    queue: WorkQueue, clock: FakeClock
) -> None:
    queue.add("a")
    queue.add_after("a", 1)
    clock.advance(1)
    assert drain(queue) == ["a"]


def test_a_timed_add_that_fires_during_processing_waits_for_done(
    queue: WorkQueue, clock: FakeClock
) -> None:
    queue.add("a")
    assert queue.get(timeout=0) == "a"
    queue.add_after("a", 1)
    clock.advance(2)
    assert queue.get(timeout=0) is None
    queue.done("a")
    assert drain(queue) == ["a"]


# -- rate limiting -------------------------------------------------------------------------
def test_backoff_doubles_to_the_cap_and_forget_resets() -> None:
    backoff = ExponentialBackoff(0.5, 60.0)
    delays = [backoff.when("a") for _ in range(10)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.when("b") == 0.5  # per key
    assert backoff.failures("a") == 10
    backoff.forget("a")
    assert backoff.failures("a") == 0
    assert backoff.when("a") == 0.5


def test_backoff_survives_very_many_failures() -> None:
    backoff = ExponentialBackoff(0.5, 60.0)
    for _ in range(5000):
        delay = backoff.when("a")
    assert delay == 60.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ExponentialBackoff(0, 1)
    with pytest.raises(ValueError):
        ExponentialBackoff(2, 1)


def test_add_rate_limited_uses_the_growing_delay(queue: WorkQueue, clock: FakeClock) -> None:
    for expected in [0.5, 1.0, 2.0]:
        queue.add_rate_limited("a")
        clock.advance(expected - 0.01)
        assert queue.get(timeout=0) is None
        clock.advance(0.02)
        assert queue.get(timeout=0) == "a"
        queue.done("a")
    assert queue.num_requeues("a") == 3
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")
    clock.advance(0.5)
    assert queue.get(timeout=0) == "a"


# -- get, timeouts and shutdown ------------------------------------------------------------
def test_get_times_out_in_real_time() -> None:
    queue = WorkQueue()
    started = time.monotonic()
    assert queue.get(timeout=0.05) is None
    assert 0.04 <= time.monotonic() - started < 1.0


def test_a_waiting_get_is_woken_by_an_add() -> None:
    queue = WorkQueue()
    got: list[str | None] = []
    getter = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    getter.start()
    time.sleep(0.05)
    queue.add("a")
    getter.join(2)
    assert got == ["a"]


def test_a_waiting_get_wakes_for_a_timed_add() -> None:
    queue = WorkQueue()
    got: list[str | None] = []
    getter = threading.Thread(target=lambda: got.append(queue.get(timeout=5)))
    getter.start()
    time.sleep(0.02)
    started = time.monotonic()
    queue.add_after("a", 0.1)
    getter.join(2)
    assert got == ["a"]
    assert 0.08 <= time.monotonic() - started < 1.5


def test_shutdown_wakes_waiting_getters_and_stops_adds() -> None:
    queue = WorkQueue()
    results: list[str | None] = []
    getters = [threading.Thread(target=lambda: results.append(queue.get())) for _ in range(3)]
    for t in getters:
        t.start()
    time.sleep(0.05)
    queue.shutdown()
    for t in getters:
        t.join(2)
        assert not t.is_alive()
    assert results == [None, None, None]
    assert queue.shutting_down
    queue.add("a")
    queue.add_after("b", 0.01)
    assert queue.get(timeout=0) is None


def test_shutdown_hands_out_nothing_more_even_if_queued() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.shutdown()
    assert queue.get(timeout=0) is None


# -- many threads --------------------------------------------------------------------------
def test_concurrent_producers_and_workers_never_overlap_and_miss_nothing() -> None:
    queue = WorkQueue()
    keys = [f"ns/job-{i}" for i in range(20)]
    lock = threading.Lock()
    stamp = iter(range(10**9))
    last_add: dict[str, int] = {}
    last_start: dict[str, int] = {}
    in_progress: set[str] = set()
    overlaps: list[str] = []
    runs = 0

    def producer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(500):
            key = rng.choice(keys)
            with lock:
                last_add[key] = next(stamp)
            if rng.random() < 0.2:
                queue.add_after(key, rng.random() * 0.01)
            else:
                queue.add(key)

    def worker() -> None:
        nonlocal runs
        while (key := queue.get()) is not None:
            with lock:
                if key in in_progress:
                    overlaps.append(key)
                in_progress.add(key)
                last_start[key] = next(stamp)
                runs += 1
            time.sleep(random.random() * 0.0005)
            with lock:
                in_progress.discard(key)
            queue.done(key)

    workers = [threading.Thread(target=worker) for _ in range(6)]
    producers = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
    for t in workers + producers:
        t.start()
    for t in producers:
        t.join(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(queue) or queue.processing() or queue.waiting()):
        time.sleep(0.01)
    queue.shutdown()
    for t in workers:
        t.join(5)
        assert not t.is_alive()
    assert not overlaps
    assert set(last_start) == set(last_add)
    # Every add was followed by a run of its key.
    for key, added in last_add.items():
        assert last_start[key] > added, key
    assert runs < 4 * 500  # duplicates were collapsed
