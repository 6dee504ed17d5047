"""The ``kubemr`` command line."""

from __future__ import annotations

import typer

from kubemr.cli import controller as controller_cmd
from kubemr.cli import crd as crd_cmd
from kubemr.cli import run as run_cmd
from kubemr.cli import worker as worker_cmd

app = typer.Typer(
    name="kubemr",
    help="MapReduce batch jobs on one machine or on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run_cmd.run)
app.command("worker")(worker_cmd.worker)
app.command("crd")(crd_cmd.crd)
app.command("controller")(controller_cmd.controller)


def main() -> None:
    app()
