"""The ``kubemr`` command line."""

from __future__ import annotations

import typer

from kubemr.cli import cancel as cancel_cmd
from kubemr.cli import controller as controller_cmd
from kubemr.cli import crd as crd_cmd
from kubemr.cli import describe as describe_cmd
from kubemr.cli import logs as logs_cmd
from kubemr.cli import report as report_cmd
from kubemr.cli import run as run_cmd
from kubemr.cli import status as status_cmd
from kubemr.cli import submit as submit_cmd
from kubemr.cli import worker as worker_cmd
from kubemr.cli.kubeopts import OneLineCommand

app = typer.Typer(
    name="kubemr",
    help="MapReduce batch jobs on one machine or on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_cmd.run)
app.command("submit", cls=OneLineCommand)(submit_cmd.submit)
app.command("status", cls=OneLineCommand)(status_cmd.status)
app.command("list", cls=OneLineCommand)(status_cmd.list_jobs)
app.command("describe", cls=OneLineCommand)(describe_cmd.describe)
app.command("logs", cls=OneLineCommand)(logs_cmd.logs)
app.command("cancel", cls=OneLineCommand)(cancel_cmd.cancel)
app.command("report", cls=OneLineCommand)(report_cmd.report)
app.command("worker")(worker_cmd.worker)
app.command("crd")(crd_cmd.crd)
app.command("controller")(controller_cmd.controller)


def main() -> None:
    app()
