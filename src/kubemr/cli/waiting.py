"""Wait for a job on a cluster to end, showing its progress; say how it ended."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import typer

from kubemr.cli.durations import format_duration
from kubemr.cli.exits import ExitCode, for_signal
from kubemr.cli.live import make_view
from kubemr.cli.views import failure_lines, outcome, progress_line, success_line
from kubemr.cluster.errors import WaitTimeout

if TYPE_CHECKING:
    from kubemr.cluster.client import JobsClient

Obj = dict[str, Any]


def wait_for_end(
    jobs: JobsClient,
    namespace: str,
    name: str,
    *,
    timeout: float | None,
    quiet: bool = False,
    hint: str = "",
) -> Obj:
    """Follow the job until it succeeds or fails; the resource as it ended.

    Raises :class:`WaitTimeout` after ``timeout`` seconds; the job keeps running. ``hint``
    (`` -n NS``) goes into the commands suggested to the user.
    """
    from kubemr.cluster.follow import follow

    view = make_view(name, quiet=quiet)
    started = time.monotonic()
    until = started + timeout if timeout else None
    last: Obj | None = None
    try:
        for obj in follow(jobs, namespace, name, until=until):
            if obj is not None:
                last = obj
                view.update(obj)
                if outcome(obj) is not None:
                    return obj
            if until is not None and time.monotonic() >= until:
                where = f" ({progress_line(last)})" if last else ""
                raise WaitTimeout(
                    f"timed out after {format_duration(timeout or 0)} waiting for {name}{where}; "
                    f"it keeps running (kubemr status {name}{hint}; kubemr cancel {name}{hint})"
                )
    except KeyboardInterrupt:
        view.close()
        typer.echo(
            f"kubemr: stopped waiting; {name} keeps running (kubemr status {name}{hint}; "
            f"kubemr cancel {name}{hint})",
            err=True,
        )
        raise typer.Exit(for_signal(signal.SIGINT)) from None
    finally:
        view.close()
    raise AssertionError("follow() ended")  # pragma: no cover - it never does


def report_end(resource: Obj, *, quiet: bool = False, hint: str = "") -> int:
    """Print how the job ended (the root cause of a failure always); its exit code."""
    if outcome(resource) == "succeeded":
        if not quiet:
            typer.echo(success_line(resource), err=True)
        return int(ExitCode.OK)
    for line in failure_lines(resource, hint):
        typer.echo(line, err=True)
    return int(ExitCode.JOB_FAILED)
