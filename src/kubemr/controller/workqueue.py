"""A de-duplicating work queue of keys, with timed and rate-limited requeues.

The semantics follow client-go's ``workqueue``: a key is queued at most once; a key being
processed is never handed to a second worker, and a key added while it is processed is
handed out again once the worker calls :meth:`WorkQueue.done` (the "dirty" set). Keys are
names of things to reconcile, never events, so collapsing duplicates loses nothing.

Example:
    queue = WorkQueue()
    queue.add("default/wordcount")
    key = queue.get(timeout=1.0)
    try:
        ...  # reconcile key
        queue.forget(key)
    except Exception:
        queue.add_rate_limited(key)
    finally:
        queue.done(key)
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class ExponentialBackoff:
    """Per-key delays for failures: ``base * 2**failures``, capped at ``cap`` seconds."""

    def __init__(self, base: float = 0.5, cap: float = 60.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        """The delay before the next retry of ``key``; counts one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        # Cap the exponent before computing: 2**n overflows a float past n=1023.
        return min(self.cap, self.base * float(2 ** min(n, 64)))

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class WorkQueue:
    """A thread-safe queue of keys. See the module docstring for the semantics.

    Args:
        clock: monotonic seconds, used for the due times of :meth:`add_after` and
            :meth:`add_rate_limited` (injectable so tests control time). The ``timeout``
            of :meth:`get` is always real time.
        backoff: the failure backoff; by default 0.5 s doubling to 60 s.
    """

    def __init__(
        self, *, clock: Clock = time.monotonic, backoff: ExponentialBackoff | None = None
    ) -> None:
        self._clock = clock
        self._backoff = backoff if backoff is not None else ExponentialBackoff()
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        # Timed adds: a heap of (due, seq, key) with lazy deletion; _due holds the live entry.
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, tuple[float, int]] = {}
        self._seq = itertools.count()
        self._shutting_down = False

    # -- adding ----------------------------------------------------------------------------
    def add(self, key: str) -> None:
        """Queue ``key`` now, unless it is already queued; a key being processed is queued
        again when its worker calls :meth:`done`."""
        with self._cond:
            self._add_locked(key)

    def add_after(self, key: str, seconds: float) -> None:
        """Queue ``key`` after ``seconds``. When the key already waits, the earlier due
        time wins; ``seconds <= 0`` is :meth:`add`."""
        with self._cond:
            if self._shutting_down:
                return
            if seconds <= 0:
                self._add_locked(key)
                return
            due = self._clock() + seconds
            current = self._due.get(key)
            if current is not None and current[0] <= due:
                return
            entry = (due, next(self._seq))
            self._due[key] = entry
            heapq.heappush(self._heap, (*entry, key))
            # A getter may be sleeping until a later due time (or indefinitely).
            self._cond.notify()

    def add_rate_limited(self, key: str) -> None:
        """Queue ``key`` after its backoff delay, which doubles with each call until
        :meth:`forget`."""
        with self._cond:
            delay = self._backoff.when(key)
        self.add_after(key, delay)

    def forget(self, key: str) -> None:
        """Reset the backoff of ``key`` (call it after a successful run)."""
        with self._cond:
            self._backoff.forget(key)

    def num_requeues(self, key: str) -> int:
        """How many rate-limited requeues ``key`` has had since it was last forgotten."""
        with self._cond:
            return self._backoff.failures(key)

    # -- taking ----------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> str | None:
        """The next key, marked as being processed; ``None`` when ``timeout`` (real
        seconds) passes first or the queue shuts down (see :attr:`shutting_down`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._shutting_down:
                    return None
                self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if self._due:
                    until_due = max(0.0, self._heap[0][0] - self._clock())
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        """Mark ``key`` as processed; if it was added meanwhile, queue it again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._shutting_down:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        """Stop handing out keys: waiting and later :meth:`get` calls return ``None``;
        adds are ignored."""
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    # -- looking ---------------------------------------------------------------------------
    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (not counting timed adds still waiting)."""
        with self._cond:
            self._promote_due_locked()
            return len(self._queue)

    def waiting(self) -> int:
        """Keys with a timed add still pending."""
        with self._cond:
            return len(self._due)

    def processing(self) -> int:
        with self._cond:
            return len(self._processing)

    # -- internals -------------------------------------------------------------------------
    def _add_locked(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._cond.notify()

    def _promote_due_locked(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, seq, key = heapq.heappop(self._heap)
            if self._due.get(key) != (due, seq):
                continue  # superseded by an earlier due time
            del self._due[key]
            self._add_locked(key)
