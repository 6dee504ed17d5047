"""``kubemr report``: a job's report as a page and a picture — which wave took the time,
which tasks straggled, which reducer got the hot key, what the run cost."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

from kubemr import spec
from kubemr.cli.kubeopts import Context, Kubeconfig, Namespace, note, reported
from kubemr.errors import KubemrError
from kubemr.report.analysis import analyse, printable, summary_warnings
from kubemr.report.cost import Prices, job_cost, load_prices
from kubemr.storage import StorageOptions


class ReportWriteError(KubemrError):
    """A report file that cannot be written."""


def _load(
    target: str, options: StorageOptions | None = None, status: str | None = None
) -> dict[str, Any]:
    # The one link to where reports are read from.
    from kubemr.report.records import load_report

    return load_report(target, options, status)


def is_job_name(target: str) -> bool:
    """A target that is no URL and no local path is the name of a MapReduceJob."""
    return "://" not in target and not os.path.exists(target) and "/" not in target


def _from_cluster(
    name: str, kubeconfig: str | None, context: str | None, namespace: str | None
) -> dict[str, Any]:
    """The report of the MapReduceJob ``name``: from its output once it succeeded, else
    built from its work dir, read with the user's own storage credentials."""
    from kubemr.cli.kubeopts import session
    from kubemr.cli.views import outcome
    from kubemr.cluster.access import user_storage
    from kubemr.cluster.resource import work_url

    cluster = session(kubeconfig, context, namespace)
    resource = cluster.jobs.get(cluster.namespace, name)
    job_spec = resource.get("spec") or {}
    options = user_storage((job_spec.get("storage") or {}).get("endpoint"))
    ended = outcome(resource)
    if ended == "succeeded":
        return _load(str(job_spec["output"]), options)
    from kubemr.report.records import ReportNotFound

    where = work_url(resource)
    if where is None:
        raise ReportNotFound(f"mapreducejob {name} has no work dir yet: it has not planned")
    return _load(where, options, ended or "running")


# The --report flag of `kubemr run` and `kubemr submit --wait`.
REPORT_HELP = (
    "After a job that succeeded: write its report, <job>-report.html and .png, in the "
    "current directory (needs kubemr[report]; see kubemr report)."
)


def default_name(report: dict[str, Any], suffix: str) -> str:
    """``<job>-report.html`` in the current directory; a job name that is no safe file
    name gives ``report.html``."""
    job = str(report.get("job") or "")
    safe = job and all(c.isalnum() or c in "-_." for c in job) and not job.startswith(".")
    return f"{job}-report{suffix}" if safe else f"report{suffix}"


def _write(path: str, data: bytes) -> None:
    """Whole or not at all: a temp file beside it, renamed into place."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ReportWriteError(
            f"cannot write the report to {path}: {exc.strerror or exc}"
        ) from None


def build(
    report: dict[str, Any],
    *,
    html: str | None,
    png: str | None,
    prices: Prices | None,
) -> dict[str, Any]:
    """Write the page and the picture asked for; the ``--json`` document of the report."""
    from kubemr.report import render

    analysis = analyse(report)
    cost = job_cost(report, prices)
    files: dict[str, str] = {}
    if html:
        page = render.render_html(report, analysis, cost, render.chart_svgs(report, analysis))
        _write(html, page.encode())
        files["html"] = html
    if png:
        _write(png, render.render_png(report, analysis))
        files["png"] = png
    return render.report_json(report, analysis, cost, files)


def report(
    target: Annotated[
        str,
        typer.Argument(
            help="A MapReduceJob's name (its output once it succeeded, else its work dir), "
            "a job's output directory or URL (which holds _REPORT.json once the job "
            "succeeded), or its work dir <work dir>/<job id> (a failed or running job).",
            show_default=False,
        ),
    ],
    html: Annotated[
        str | None,
        typer.Option("--html", help="Write the page here (default: <job>-report.html)."),
    ] = None,
    png: Annotated[
        str | None,
        typer.Option("--png", help="Write the picture here (default: <job>-report.png)."),
    ] = None,
    prices: Annotated[
        str | None,
        typer.Option(
            "--prices",
            help="A price table (JSON, or TOML for a .toml file) with vcpu_hour, gib_hour, "
            "per_1000_requests, per_gb_transferred and an optional currency: adds money.",
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the findings and the cost as JSON on stdout; with neither --html nor "
            "--png, write no files.",
        ),
    ] = False,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help=spec.LocalOptions.model_fields["s3_endpoint"].description or ""),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Write a job's report: an HTML page and a PNG of where its time and money went.

    Self-contained: timeline, throughput, task spreads, skew, cost, failed attempts.

    Examples: kubemr report counts/ --prices prices.toml; kubemr report word-count -n team
    """
    with reported():
        table = load_prices(prices) if prices else None
        if is_job_name(target):
            data = _from_cluster(target, kubeconfig, context, namespace)
        else:
            data = _load(target, StorageOptions(s3_endpoint=s3_endpoint))
        if not json_output:
            html = html or default_name(data, ".html")
            png = png or default_name(data, ".png")
        result = build(data, html=html, png=png, prices=table)
        if json_output:
            sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        for kind, path in result["files"].items():
            note(f"wrote the report's {'page' if kind == 'html' else 'picture'} to {path}")
        line = summary_line(data)
        if line:
            typer.echo(line, err=True)


def after_job(target: str, options: StorageOptions | None = None, *, write: bool) -> None:
    """What ``kubemr run`` and ``kubemr submit --wait`` print after a job that succeeded:
    the warning line when skew or stragglers crossed their thresholds, and with
    ``--report`` (``write``) the page and the picture in the current directory. The job is
    done by then, so a report that cannot be read or drawn is a note, not a failure."""
    try:
        data = _load(target, options)
        line = summary_line(data)
    except KubemrError as exc:
        note(f"no report: {exc}")
        return
    if line:
        typer.echo(line, err=True)
    if not write:
        return
    try:
        files = build(
            data,
            html=default_name(data, ".html"),
            png=default_name(data, ".png"),
            prices=None,
        )["files"]
    except KubemrError as exc:
        note(f"the report was not written: {exc}")
        return
    note(f"wrote the report to {files['html']} and {files['png']} (kubemr report --help)")


def summary_line(report: dict[str, Any]) -> str | None:
    """The one-line warning the command line prints after a run when skew or stragglers
    cross their thresholds, saying what to try; None when there is nothing to say."""
    found = summary_warnings(analyse(report))
    if not found:
        return None
    url = (report.get("output") or {}).get("url")
    see = f" (kubemr report {printable(str(url), 200)})" if url else ""
    return "kubemr: warning: " + "; ".join(w.short for w in found) + see
