"""``kubemr worker``: run one task attempt, as a Kubernetes pod does."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Annotated

import typer

from kubemr.results import MAP, REDUCE
from kubemr.task import TaskError, run_task

# Exit codes a pod's podFailurePolicy can tell apart.
EXIT_OK = 0
EXIT_INFRASTRUCTURE = 1  # retry: storage, network, a killed process
EXIT_BAD_INPUT = 3  # fail the task at once: retrying cannot help


def worker(
    plan: Annotated[str, typer.Option(help="URL of the job's plan.json.")],
    wave: Annotated[str, typer.Option(help="map or reduce.")],
    step: Annotated[int, typer.Option(help="Step number (0-based).")] = 0,
    index: Annotated[
        int | None, typer.Option(help="Task index (default: $JOB_COMPLETION_INDEX).")
    ] = None,
    attempt: Annotated[
        str | None, typer.Option(help="Attempt id (default: pod name + pid).")
    ] = None,
) -> None:
    """Run one map or reduce task attempt and commit it (what a worker pod runs)."""
    if wave not in (MAP, REDUCE):
        raise typer.BadParameter("--wave must be map or reduce")
    if index is None:
        env_index = os.environ.get("JOB_COMPLETION_INDEX")
        if env_index is None:
            raise typer.BadParameter("give --index or set JOB_COMPLETION_INDEX")
        index = int(env_index)
    attempt = attempt or f"{socket.gethostname()}-{os.getpid()}"
    try:
        result = run_task(plan, step, wave, index, attempt)
    except TaskError as exc:
        sys.stderr.write(exc.failure.describe() + "\n")
        code = EXIT_BAD_INPUT if not exc.failure.retryable else EXIT_INFRASTRUCTURE
        raise typer.Exit(code) from None
    sys.stderr.write(json.dumps({"committed": result.output_url, "seconds": result.seconds}) + "\n")
