"""Progress on stderr: bytes read by the map wave, tasks done in the reduce wave."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class Reporter:
    """Receives wave events from the runner; the base class prints nothing."""

    def wave_started(self, name: str, tasks: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int, records: int) -> None: ...

    def task_done(self) -> None: ...

    def wave_finished(self) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class RichReporter(Reporter):
    """A progress bar per wave with throughput, records/s and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description:<14}"),
            BarColumn(),
            TextColumn("{task.fields[tasks]}"),
            TransferSpeedColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            refresh_per_second=4,
        )
        self.progress.start()
        self._task: TaskID | None = None
        self._records = 0
        self._started = time.monotonic()
        self._done = 0
        self._tasks = 0
        self._by_bytes = False

    def wave_started(self, name: str, tasks: int, total_bytes: int) -> None:
        self._records = 0
        self._done = 0
        self._tasks = tasks
        self._started = time.monotonic()
        self._by_bytes = total_bytes > 0
        self._task = self.progress.add_task(
            name, total=total_bytes if self._by_bytes else tasks, tasks=f"0/{tasks} tasks", rate=""
        )

    def advance(self, nbytes: int, records: int) -> None:
        if self._task is None:
            return
        self._records += records
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = f"{self._records / elapsed:,.0f} rec/s" if self._records else ""
        self.progress.update(self._task, advance=nbytes if self._by_bytes else 0, rate=rate)

    def task_done(self) -> None:
        if self._task is None:
            return
        self._done += 1
        fields: dict[str, Any] = {"tasks": f"{self._done}/{self._tasks} tasks"}
        if not self._by_bytes:
            fields["advance"] = 1
        self.progress.update(self._task, **fields)

    def wave_finished(self) -> None:
        if self._task is not None:
            task = self.progress.tasks[-1]
            self.progress.update(self._task, completed=task.total)
        self._task = None

    def message(self, text: str) -> None:
        self.progress.console.print(text)

    def close(self) -> None:
        self.progress.stop()


def make_reporter(enabled: bool) -> Reporter:
    if enabled:
        return RichReporter()
    return Reporter()


def eprint(text: str) -> None:
    print(text, file=sys.stderr)
