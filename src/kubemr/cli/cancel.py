"""``kubemr cancel``: end a job for good, keeping the resource and its status as a record.

The same as ``kubectl patch mrj NAME --type=merge -p '{"spec":{"cancel":true}}'``: the
controller stops the job's running stage Jobs and fails it with the reason ``Cancelled``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kubemr.cli.exits import ExitCode
from kubemr.cli.kubeopts import (
    Context,
    Kubeconfig,
    Namespace,
    Quiet,
    Timeout,
    note,
    reported,
    session,
    timeout_seconds,
)
from kubemr.cli.views import CANCELLED, is_cancelled, outcome
from kubemr.cli.waiting import wait_for_end
from kubemr.cluster.errors import ApiRefused

CANCEL_PATCH = {"spec": {"cancel": True}}


def cancel(
    name: Annotated[str, typer.Argument(help="The MapReduceJob's name.")],
    wait: Annotated[
        bool, typer.Option(help="Wait until the job has ended (its pods are stopped).")
    ] = False,
    timeout: Timeout = None,
    quiet: Quiet = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Cancel a job: its running pods are stopped and it fails with reason Cancelled.

    A job that has ended already is left as it is. The work dir in storage is kept.

    Example: kubemr cancel wordcount --wait
    """
    with reported():
        seconds = timeout_seconds(timeout)
        cluster = session(kubeconfig, context, namespace)
        ns = cluster.namespace
        resource = cluster.jobs.get(ns, name)
        hint = f" -n {ns}" if namespace else ""
        ended = outcome(resource)
        if ended is not None:
            note(f"{name} has {ended} already: nothing to cancel")
            raise typer.Exit(ExitCode.OK)
        try:
            cluster.jobs.patch(ns, name, CANCEL_PATCH)
        except ApiRefused as exc:
            if "cancel" in str(exc) and exc.status in (400, 422):
                raise ApiRefused(
                    f"{exc} (the installed CRD predates spec.cancel: update it with "
                    "kubemr crd | kubectl apply --server-side -f -)",
                    exc.status,
                ) from None
            raise
        note(f"asked {name} to cancel")
        if not wait:
            raise typer.Exit(ExitCode.OK)
        resource = wait_for_end(cluster.jobs, ns, name, timeout=seconds, quiet=quiet, hint=hint)
        if is_cancelled(resource):
            note(f"{name} is cancelled ({CANCELLED})")
        else:
            note(f"{name} ended before it could be cancelled: {outcome(resource)}")
