"""``kubemr status`` and ``kubemr list``: where jobs are, as ``kubectl get mrj`` shows it."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from kubemr.cli.kubeopts import Context, Kubeconfig, Namespace, reported, session
from kubemr.cli.output import Format, dump, name_of
from kubemr.cli.tables import jobs_table

Output = Annotated[
    Format,
    typer.Option(
        "--output", "-o", help="table, wide (adds the failure's reason), json, yaml or name."
    ),
]


def status(
    name: Annotated[str, typer.Argument(help="The MapReduceJob's name.")],
    output: Output = Format.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Show a job's phase, wave, progress, workers and the reason it failed.

    -o json or yaml prints the resource's status. Example: kubemr status wordcount -n team-a
    """
    with reported():
        cluster = session(kubeconfig, context, namespace)
        resource = cluster.jobs.get(cluster.namespace, name)
    if output in (Format.json, Format.yaml):
        sys.stdout.write(dump(resource.get("status") or {}, output.value))
    elif output is Format.name:
        sys.stdout.write(name_of(resource) + "\n")
    else:
        now = datetime.now(UTC)
        sys.stdout.write(jobs_table([resource], now, wide=True))


def list_jobs(
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Jobs of every namespace.")
    ] = False,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Only jobs with these labels (a=b,c).")
    ] = None,
    output: Output = Format.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """List MapReduceJobs: name, phase, wave, progress, workers, age.

    Example: kubemr list -A
    """
    with reported():
        cluster = session(kubeconfig, context, namespace)
        jobs = cluster.jobs.list(None if all_namespaces else cluster.namespace, selector)
    if output in (Format.json, Format.yaml):
        listing = {"apiVersion": "v1", "kind": "List", "items": jobs}
        sys.stdout.write(dump(listing, output.value))
    elif output is Format.name:
        for job in jobs:
            ns = (job.get("metadata") or {}).get("namespace") if all_namespaces else None
            sys.stdout.write(f"{ns}/{name_of(job)}\n" if ns else f"{name_of(job)}\n")
    elif not jobs:
        where = "any namespace" if all_namespaces else f"namespace {cluster.namespace}"
        typer.echo(f"kubemr: no MapReduceJobs in {where}", err=True)
    else:
        now = datetime.now(UTC)
        table = jobs_table(jobs, now, wide=output is Format.wide, all_namespaces=all_namespaces)
        sys.stdout.write(table)
