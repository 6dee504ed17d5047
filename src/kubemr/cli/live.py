"""Live progress of a job on a cluster, fed from its status: a bar per wave (the bars of
``kubemr run``, :mod:`kubemr.progress`) on a terminal, a line per change elsewhere (CI
logs).

:func:`wave_states` and :class:`StatusProgress` are pure: they turn successive statuses
into wave events for a :class:`WaveReporter`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rich.progress import TransferSpeedColumn

from kubemr.cli.views import outcome, progress_line, step_count, wave_label
from kubemr.progress import RichReporter

Obj = dict[str, Any]


@dataclass(frozen=True)
class WaveState:
    """One wave as the status shows it."""

    key: tuple[str, int, str]
    label: str
    total: int
    done: int
    failed: int
    finished: bool


def wave_states(status: Obj) -> list[WaveState]:
    """The waves of a status, in the order they started."""
    steps = step_count(status)
    states = []
    for wave in status.get("waves") or []:
        kind = str(wave.get("kind") or "")
        key = (kind, int(wave.get("step") or 0), str(wave.get("jobName") or ""))
        states.append(
            WaveState(
                key,
                wave_label(wave, steps),
                int(wave.get("total") or 0),
                int(wave.get("succeeded") or 0),
                int(wave.get("failed") or 0),
                wave.get("completionTime") is not None,
            )
        )
    return states


def wave_note(workers: int | None, failed: int) -> str:
    """``3 workers, 2 failed``: the running wave's pods and its failed attempts."""
    parts = []
    if workers is not None:
        parts.append(f"{workers} worker" + ("" if workers == 1 else "s"))
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts)


class WaveReporter(Protocol):
    def wave_started(self, name: str, tasks: int, total_bytes: int) -> None: ...

    def wave_progress(self, done: int, total: int, note: str) -> None: ...

    def wave_finished(self) -> None: ...

    def close(self) -> None: ...


class StatusProgress:
    """Feeds a :class:`WaveReporter` from the statuses of one job, oldest first: a wave
    is started once, moved to its counts, and finished when it ends or the next starts."""

    def __init__(self, reporter: WaveReporter) -> None:
        self.reporter: WaveReporter | None = reporter
        self._open: tuple[str, int, str] | None = None
        self._started: set[tuple[str, int, str]] = set()
        self._last: WaveState | None = None

    def update(self, resource: Obj) -> None:
        reporter = self.reporter
        if reporter is None:
            return
        status = resource.get("status") or {}
        workers = status.get("workers")
        for wave in wave_states(status):
            if wave.key in self._started and wave.key != self._open:
                continue  # ended before
            if wave.key != self._open:
                self._finish()
                reporter.wave_started(wave.label, wave.total, 0)
                self._started.add(wave.key)
                self._open = wave.key
            running = None if wave.finished else workers
            reporter.wave_progress(wave.done, wave.total, wave_note(running, wave.failed))
            self._last = wave
            if wave.finished:
                self._finish()
        if outcome(resource) is not None:
            self._finish()

    def _finish(self) -> None:
        if self._open is not None and self.reporter is not None:
            if self._last is not None:  # no workers on a wave that ended
                last = self._last
                self.reporter.wave_progress(last.done, last.total, wave_note(None, last.failed))
            self.reporter.wave_finished()
            self._open = None

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None  # closed once, however often asked


class StatusBars(RichReporter):
    """``kubemr run``'s bars, moved by task counts from the status (no bytes/s: the
    status has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.progress.columns = tuple(
            c for c in self.progress.columns if not isinstance(c, TransferSpeedColumn)
        )

    def wave_progress(self, done: int, total: int, note: str) -> None:
        if self._task is None:
            return
        self.progress.update(
            self._task,
            total=max(total, 1),
            completed=done,
            tasks=f"{done}/{total} tasks",
            rate=note,
        )


class StatusLines:
    """A line on stderr each time where the job is changes: for logs that are not a
    terminal."""

    def __init__(self, name: str, write: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.write = write or (lambda text: print(text, file=sys.stderr, flush=True))
        self._last = ""

    def update(self, resource: Obj) -> None:
        line = f"kubemr: {self.name}: {progress_line(resource)}"
        if line != self._last:
            self.write(line)
            self._last = line

    def close(self) -> None:
        pass


class Quiet:
    def update(self, resource: Obj) -> None:
        pass

    def close(self) -> None:
        pass


class View(Protocol):
    def update(self, resource: Obj) -> None: ...

    def close(self) -> None: ...


def make_view(name: str, *, quiet: bool, terminal: bool | None = None) -> View:
    """Bars on a terminal, lines elsewhere, nothing with ``quiet``."""
    if quiet:
        return Quiet()
    if sys.stderr.isatty() if terminal is None else terminal:
        return StatusProgress(StatusBars())
    return StatusLines(name)
