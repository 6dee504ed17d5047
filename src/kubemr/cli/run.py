"""``kubemr run``: a whole job on this machine."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer

from kubemr import api, spec, storage
from kubemr.cli import report as report_cmd
from kubemr.cli.choices import InputFormat, OutputFormat, choices
from kubemr.cli.exits import ExitCode, for_signal
from kubemr.cli.report import REPORT_HELP
from kubemr.errors import Interrupted, JobFailed, KubemrError, OptionError
from kubemr.formats import UNDECODABLE_LINES
from kubemr.job import MapReduce
from kubemr.loader import load_job_class
from kubemr.options import help_text
from kubemr.sizes import format_size
from kubemr.storage import StorageOptions

DecodeErrors = choices("DecodeErrors", spec.DecodeErrors)


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


JOB_CLASS = "kubemr.job_class"
"""``ctx.obj`` key of the job class a job file runs itself with (``WordCount.run()``)."""
HELP_WANTED = "kubemr.help"


def _help_option(ctx: typer.Context, _param: Any, value: bool) -> None:
    """``--help``: the command's help, then the job's options. The job argument is read
    after this (click handles options first), so its callback prints both."""
    if not value or ctx.resilient_parsing:
        return
    given = ctx.obj.get(JOB_CLASS) if isinstance(ctx.obj, dict) else None
    if given is not None or not any(p.name == "job" for p in ctx.command.params):
        print_help(ctx, given)
    ctx.meta[HELP_WANTED] = True


def job_argument(ctx: typer.Context, _param: Any, value: str | None) -> str | None:
    if ctx.meta.get(HELP_WANTED) and not ctx.resilient_parsing:
        print_help(ctx, value)
    if value is None and not ctx.resilient_parsing:
        raise typer.BadParameter(
            "give the job: a job file (wc.py), wc.py:Class, or package.module:Class",
            param_hint="'JOB'",
        )
    return value


def print_help(ctx: typer.Context, job: type[MapReduce] | str | None) -> NoReturn:
    """The command's help and, after it, the job's typed options and files."""
    typer.echo(ctx.get_help())
    if job is not None:
        try:
            job_cls = job if isinstance(job, type) else load_job_class(job)
        except KubemrError as exc:
            typer.echo(f"\n(the job's options cannot be shown: {exc})")
        else:
            typer.echo("\n" + help_text(job_cls))
    raise typer.Exit(0)


HelpFlag = Annotated[
    bool,
    typer.Option(
        "--help",
        is_eager=True,
        expose_value=False,
        callback=_help_option,
        help="Show this message and, after a job, the job's options; then exit.",
    ),
]


def run(
    # Optional to click, so that `--help` alone shows the help; checked in its callback.
    job: Annotated[
        str | None,
        typer.Argument(
            help="Job file (wc.py), wc.py:Class, or package.module:Class.",
            is_eager=True,
            callback=job_argument,
            show_default=False,
        ),
    ] = None,
    *,
    input: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            help="Input file, directory or glob (data/**/*.txt, s3://b/p/*.gz); repeatable. "
            "- reads standard input (copied to the work dir first).",
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
    encoding: Annotated[
        str | None, typer.Option(help=_help("encoding") + " [default: utf-8]")
    ] = None,
    decode_errors: Annotated[
        DecodeErrors | None, typer.Option(help=_help("decode_errors") + " [default: strict]")
    ] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help=_help("s3_endpoint"))] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A job parameter or typed option KEY=VALUE, read as self.params[KEY] and "
            "self.options.KEY (repeatable; `--help` after the job lists its options).",
        ),
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option("--file", help=_help("files")),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the _SUCCESS summary as JSON on stdout.")
    ] = False,
    report: Annotated[bool, typer.Option("--report", help=REPORT_HELP)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    help_: HelpFlag = False,
) -> None:
    """Run a MapReduce job on this machine, on all the CPUs it may use.

    Example: kubemr run examples/wordcount.py --input books/ --output counts/
    """
    stdin: _StdinSpool | None = None
    try:
        job_cls = job if isinstance(job, type) else load_job_class(job)
        if spec.STDIN in input:
            stdin = _StdinSpool(input, work_dir, s3_endpoint)
            input, work_dir = stdin.inputs, stdin.work_dir
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
            files=file or [],
            progress=not quiet,
            **_set(encoding=encoding, decode_errors=decode_errors and decode_errors.value),
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
    finally:
        if stdin is not None and not keep_work:
            stdin.remove()
    if json_output:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        _print_summary(summary)
    if report or not quiet:
        report_cmd.after_job(output, StorageOptions(s3_endpoint=s3_endpoint), write=report)


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
    undecodable = summary.get("counters", {}).get("kubemr", {}).get(UNDECODABLE_LINES)
    if undecodable:
        typer.echo(
            f"kubemr: {undecodable:,} input lines did not decode in the input's encoding and "
            f"were decoded with the --decode-errors fallback (counter {UNDECODABLE_LINES})",
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


def _set(**options: Any) -> dict[str, Any]:
    """The options given; those left out take the defaults of kubemr.spec."""
    return {name: value for name, value in options.items() if value is not None}


class _StdinSpool:
    """Standard input (``-i -``) copied to a file in the work dir before the job starts,
    so that its tasks split it and retry like any file's (a pipe can be read only once).
    The runner's own temporary work dir cannot be known beforehand, so without
    ``--work-dir`` the copy goes into a temporary work dir made here."""

    def __init__(self, inputs: list[str], work_dir: str | None, s3_endpoint: str | None) -> None:
        if inputs.count(spec.STDIN) > 1:
            raise OptionError("standard input (-i -) can be named once")
        self.own_dir = work_dir is None
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="kubemr-work-")
        self.url = storage.join(self.work_dir, f"stdin-{uuid.uuid4().hex[:8]}", "stdin")
        self.inputs = [self.url if i == spec.STDIN else i for i in inputs]
        self._store = storage.store_for(self.url, StorageOptions(s3_endpoint=s3_endpoint))
        try:
            with self._store.open_write(self.url) as out:
                shutil.copyfileobj(sys.stdin.buffer, out, 8 << 20)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        if self.own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._store.delete(self.url)


def run_itself(job_cls: type[MapReduce], args: Sequence[str] | None = None) -> NoReturn:
    """``WordCount.run()``: ``kubemr run`` with the job given, from the job's own file.

    The class is defined in ``__main__``, which cloudpickle ships by value, as
    :mod:`kubemr.loader` ships a job file: workers never import the script. Modules the
    script imports from its own directory travel by value too."""
    _ship_helpers_by_value(job_cls)
    command = typer.main.get_command(_itself_app())
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else job_cls.__name__
    command.main(
        args=list(sys.argv[1:] if args is None else args),
        prog_name=prog,
        obj={JOB_CLASS: job_cls},
    )
    raise SystemExit(0)  # main() exits by itself; this is for type checkers


def _itself_app() -> typer.Typer:
    """A one-command app: ``run``'s options, without its JOB argument."""

    def run_job_itself(ctx: typer.Context, **options: Any) -> None:
        run(job=ctx.obj[JOB_CLASS], **options)

    signature = inspect.signature(run, eval_str=True)
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    kept = [p for name, p in signature.parameters.items() if name != "job"]
    run_job_itself.__signature__ = signature.replace(parameters=[context, *kept])  # type: ignore[attr-defined]
    annotations = {k: v for k, v in run.__annotations__.items() if k != "job"}
    run_job_itself.__annotations__ = {"ctx": typer.Context, **annotations}
    run_job_itself.__doc__ = (run.__doc__ or "").replace("kubemr run examples/", "python ")
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(run_job_itself)
    return app


def _ship_helpers_by_value(job_cls: type[MapReduce]) -> None:
    """Modules imported from the job file's directory travel with the job by value."""
    import cloudpickle

    module = sys.modules.get(job_cls.__module__)
    filename = getattr(module, "__file__", None)
    if not filename:
        return
    directory = os.path.dirname(os.path.abspath(filename)) + os.sep
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if (
            name != "__main__"
            and name.partition(".")[0] != "kubemr"
            and os.path.abspath(path).startswith(directory)
            and "site-packages" not in path
        ):
            try:
                cloudpickle.register_pickle_by_value(mod)
            except ValueError:
                pass
