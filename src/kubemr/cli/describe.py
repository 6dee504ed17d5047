"""``kubemr describe``: a job in full: its spec, waves, conditions, root cause, the
attempts that failed (from the pods still there and from storage) and its Events."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from kubemr.cli.kubeopts import Context, Kubeconfig, Namespace, reported, session
from kubemr.cli.views import describe as describe_text
from kubemr.cli.views import status_of, step_count
from kubemr.cluster.access import user_storage
from kubemr.cluster.attempts import failed_attempts
from kubemr.cluster.errors import ClusterError
from kubemr.cluster.resource import events_selector, owned_selector, work_url
from kubemr.cluster.tasklogs import FailureMarker, TaskLog, list_failure_markers, list_logs
from kubemr.errors import KubemrError

Obj = dict[str, Any]


def describe(
    name: Annotated[str, typer.Argument(help="The MapReduceJob's name.")],
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Describe a job: spec, waves, conditions, root cause, failed attempts, Events.

    The root cause comes with its traceback; each failed attempt with its cause and log.
    The pods' termination messages are read from the cluster; the failure markers and
    logs from storage, with this machine's own storage credentials.

    Example: kubemr describe wordcount -n team-a
    """
    notes: list[str] = []
    with reported():
        cluster = session(kubeconfig, context, namespace)
        resource = cluster.jobs.get(cluster.namespace, name)
        jobs, ns = cluster.jobs, cluster.namespace
        pods = _or_note(lambda: jobs.pods(ns, owned_selector(resource)), notes, "pods")
        events = _or_note(lambda: jobs.events(ns, events_selector(resource)), notes, "Events")
        markers, logs = _from_storage(resource, notes)
    status = status_of(resource)
    attempts = failed_attempts(pods, markers, logs, status.get("failure"))
    sys.stdout.write(describe_text(resource, attempts, events, notes, datetime.now(UTC)))


def _or_note(fetch: Any, notes: list[str], what: str) -> list[Obj]:
    try:
        return list(fetch())
    except ClusterError as exc:
        notes.append(f"{what} not read: {exc}")
        return []


def _from_storage(resource: Obj, notes: list[str]) -> tuple[list[FailureMarker], list[TaskLog]]:
    where = work_url(resource)
    if where is None:
        return [], []
    options = user_storage(((resource.get("spec") or {}).get("storage") or {}).get("endpoint"))
    try:
        logs = list_logs(where, options)
        markers = list_failure_markers(where, step_count(status_of(resource)), options)
    except (KubemrError, OSError) as exc:
        notes.append(f"the logs in storage ({where}) not read: {exc}")
        return [], []
    except Exception as exc:  # storage clients raise their own kinds
        notes.append(f"the logs in storage ({where}) not read: {type(exc).__name__}: {exc}")
        return [], []
    return markers, logs
