"""``kubemr run``: a whole job on this machine."""

from __future__ import annotations

import json
import signal
import sys
from typing import Annotated

import typer

from kubemr import api, spec
from kubemr.cli.choices import InputFormat, OutputFormat
from kubemr.cli.exits import ExitCode, for_signal
from kubemr.errors import Interrupted, JobFailed, KubemrError
from kubemr.loader import load_job_class
from kubemr.sizes import format_size


def _help(name: str) -> str:
    """The option's help: the description of the setting in kubemr.spec, defined once."""
    return spec.LocalOptions.model_fields[name].description or ""


def _params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(
                f"{item!r}: give a job parameter as KEY=VALUE", param_hint="--param"
            )
        params[key] = value
    return params


def run(
    job: Annotated[
        str, typer.Argument(help="Job file (wc.py), wc.py:Class, or package.module:Class.")
    ],
    input: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            help="Input file, directory or glob (data/**/*.txt, s3://b/p/*.gz); repeatable.",
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output directory (local or s3://).")
    ],
    reducers: Annotated[int | None, typer.Option(help=_help("reducers"))] = None,
    workers: Annotated[int | None, typer.Option(help=_help("workers"))] = None,
    split_size: Annotated[str | None, typer.Option(help=_help("split_size"))] = None,
    memory: Annotated[str | None, typer.Option(help=_help("memory") + " [default: 512Mi]")] = None,
    format: Annotated[
        InputFormat | None, typer.Option("--format", help=_help("input_format"))
    ] = None,
    output_format: Annotated[OutputFormat | None, typer.Option(help=_help("output_format"))] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help=_help("max_attempts") + " [default: 3]")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help=_help("overwrite"))] = False,
    work_dir: Annotated[str | None, typer.Option(help=_help("work_dir"))] = None,
    keep_work: Annotated[bool, typer.Option(help=_help("keep_work"))] = False,
    skip_bad_records: Annotated[int | None, typer.Option(help=_help("skip_bad_records"))] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help=_help("s3_endpoint"))] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A job parameter KEY=VALUE, read as self.params[KEY] (repeatable).",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the _SUCCESS summary as JSON on stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run a MapReduce job on this machine, on all the CPUs it may use.

    Example: kubemr run examples/wordcount.py --input books/ --output counts/
    """
    try:
        job_cls = load_job_class(job)
        summary = api.run(
            job_cls,
            inputs=input,
            output=output,
            reducers=reducers,
            workers=workers,
            split_size=split_size,
            memory=memory,
            input_format=format.value if format else None,
            output_format=output_format.value if output_format else None,
            max_attempts=max_attempts,
            overwrite=overwrite or None,
            work_dir=work_dir,
            keep_work=keep_work or None,
            skip_bad_records=skip_bad_records,
            s3_endpoint=s3_endpoint,
            params=_params(param or []),
            progress=not quiet,
        )
    except JobFailed as exc:
        typer.echo(f"kubemr: job failed: {exc}", err=True)
        typer.echo("kubemr: no _SUCCESS was written; the output is incomplete.", err=True)
        raise typer.Exit(ExitCode.JOB_FAILED) from None
    except KubemrError as exc:
        typer.echo(f"kubemr: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        typer.echo(f"kubemr: stopped by {name}; no _SUCCESS was written.", err=True)
        raise typer.Exit(for_signal(signum)) from None
    if json_output:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    out = summary["output"]
    inp = summary["input"]
    secs = summary["wall_seconds"]
    rate = inp["bytes"] / secs if secs else 0.0
    typer.echo(
        f"kubemr: {summary['job']} succeeded in {secs:.2f}s: "
        f"{inp['records']:,} records ({format_size(inp['bytes'])}) in, "
        f"{out['records']:,} records in {len(out['files'])} files out "
        f"({format_size(rate)}/s, {summary['workers']} workers, "
        f"{summary['tasks']['map']} map + {summary['tasks']['reduce']} reduce tasks, "
        f"{summary['attempts']['failed']} failed attempts) -> {out['url']}",
        err=True,
    )
    bad = summary.get("bad_records") or {}
    if bad.get("skipped"):
        typer.echo(
            f"kubemr: skipped {bad['skipped']:,} bad input records (--skip-bad-records); "
            "the first of them:",
            err=True,
        )
        for example in bad.get("examples", [])[:5]:
            typer.echo(f"  {example}", err=True)
