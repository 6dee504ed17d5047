"""``kubemr submit``: create a MapReduceJob on a cluster, optionally wait for it.

Every value is checked by the spec models (:mod:`kubemr.spec`) before anything leaves the
machine; then the API server checks the resource with a dry run (rights, CRD, schema)
before the job's code is uploaded, so a refusal costs nothing.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubemr.cli import report as report_cmd
from kubemr.cli.choices import InputFormat, OutputFormat, PullPolicy
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
from kubemr.cli.output import ResourceFormat, dump, name_of
from kubemr.cli.report import REPORT_HELP
from kubemr.cli.run import DecodeErrors, HelpFlag, job_argument
from kubemr.cli.submit_spec import (
    JOB_PLACEHOLDER,
    FlagError,
    SubmitFlags,
    check_spec,
    key_values,
    spec_values,
)
from kubemr.cli.waiting import report_end, wait_for_end
from kubemr.cluster import jobcode
from kubemr.cluster.access import user_storage
from kubemr.cluster.errors import ApiRefused
from kubemr.cluster.resource import build_resource, check_name, name_from
from kubemr.formats import UNDECODABLE_LINES
from kubemr.jobfiles import LocalFile
from kubemr.loader import load_job_class
from kubemr.options import JobOptionError, check_options
from kubemr.spec import (
    JobOptions,
    LocalOptions,
    MapReduceJobSpec,
    StorageSpec,
    WorkerRange,
    WorkerTemplate,
)

if TYPE_CHECKING:
    from kubemr.cluster.client import JobsClient


class CodeForm(StrEnum):
    auto = "auto"
    pickle = "pickle"
    source = "source"


def _help(model: type[Any], name: str, extra: str = "") -> str:
    """A flag's help: the description of its setting in kubemr.spec, defined once."""
    return (model.model_fields[name].description or "") + extra


def submit(
    # Optional to click, so that `--help` alone shows the help; checked in its callback.
    job: Annotated[
        str | None,
        typer.Argument(
            help="Job file (wc.py, wc.py:Class), pickled and uploaded or sent inline "
            "(--code), or package.module:Class importable in the worker image.",
            is_eager=True,
            callback=job_argument,
            show_default=False,
        ),
    ] = None,
    *,
    input: Annotated[
        list[str],
        typer.Option("--input", "-i", help=_help(JobOptions, "inputs", " Repeatable.")),
    ],
    output: Annotated[str, typer.Option("--output", help=_help(JobOptions, "output"))],
    reducers: Annotated[int | None, typer.Option(help=_help(JobOptions, "reducers"))] = None,
    split_size: Annotated[str | None, typer.Option(help=_help(JobOptions, "split_size"))] = None,
    memory: Annotated[str | None, typer.Option(help=_help(JobOptions, "memory"))] = None,
    format: Annotated[
        InputFormat | None, typer.Option("--format", help=_help(JobOptions, "input_format"))
    ] = None,
    output_format: Annotated[
        OutputFormat | None, typer.Option(help=_help(JobOptions, "output_format"))
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help=_help(JobOptions, "encoding", " [default: utf-8]"))
    ] = None,
    decode_errors: Annotated[
        DecodeErrors | None,
        typer.Option(help=_help(JobOptions, "decode_errors", " [default: strict]")),
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help=_help(JobOptions, "max_attempts"))
    ] = None,
    skip_bad_records: Annotated[
        int | None, typer.Option(help=_help(JobOptions, "skip_bad_records"))
    ] = None,
    overwrite: Annotated[bool, typer.Option(help=_help(JobOptions, "overwrite"))] = False,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A job parameter or typed option KEY=VALUE (repeatable; `--help` after the "
            "job lists its options).",
        ),
    ] = None,
    file: Annotated[
        list[str] | None, typer.Option("--file", help=_help(LocalOptions, "files"))
    ] = None,
    workers_min: Annotated[int | None, typer.Option(help=_help(WorkerRange, "min"))] = None,
    workers_max: Annotated[int | None, typer.Option(help=_help(WorkerRange, "max"))] = None,
    workers_max_pending: Annotated[
        int | None, typer.Option(help=_help(WorkerRange, "max_pending"))
    ] = None,
    image: Annotated[str | None, typer.Option(help=_help(WorkerTemplate, "image"))] = None,
    image_pull_policy: Annotated[
        PullPolicy | None, typer.Option(help=_help(WorkerTemplate, "image_pull_policy"))
    ] = None,
    worker_command: Annotated[
        str | None,
        typer.Option(help=_help(WorkerTemplate, "command", " Split as a shell would.")),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="A worker environment variable NAME=VALUE (repeatable)."),
    ] = None,
    request: Annotated[
        list[str] | None,
        typer.Option(help="A worker resource request, e.g. cpu=1 or memory=1Gi (repeatable)."),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option(help="A worker resource limit, e.g. memory=2Gi (repeatable)."),
    ] = None,
    service_account: Annotated[
        str | None, typer.Option(help=_help(WorkerTemplate, "service_account_name"))
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help=_help(StorageSpec, "endpoint", " Used by the workers.")),
    ] = None,
    s3_region: Annotated[str | None, typer.Option(help=_help(StorageSpec, "region"))] = None,
    storage_secret: Annotated[
        str | None,
        typer.Option(
            help="The Secret (in the job's namespace) whose keys become the workers' "
            "environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ..."
        ),
    ] = None,
    work_dir: Annotated[str | None, typer.Option(help=_help(MapReduceJobSpec, "work_dir"))] = None,
    active_deadline: Annotated[
        str | None,
        typer.Option(
            help="How long the job may run before it fails (90s, 30m, 2h): activeDeadlineSeconds."
        ),
    ] = None,
    pending_deadline: Annotated[
        str | None,
        typer.Option(
            help="How long a wave may wait with no worker running before the job fails "
            "(default 10m): pendingDeadlineSeconds."
        ),
    ] = None,
    ttl_after_finished: Annotated[
        str | None,
        typer.Option(
            help="Delete the resource this long after it finished: ttlSecondsAfterFinished."
        ),
    ] = None,
    code: Annotated[
        CodeForm,
        typer.Option(
            help="How a job file travels: pickle (cloudpickled by value and uploaded to "
            "storage), or source (a self-contained file, inline in the resource)."
        ),
    ] = CodeForm.auto,
    code_dir: Annotated[
        str | None,
        typer.Option(
            help="Where pickled code is uploaded, as <sha256>.pkl (default: "
            "_kubemr/code in the output's bucket)."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The resource's name (default: from the job class, word-count)."),
    ] = None,
    generate_name: Annotated[
        bool,
        typer.Option(help="Let the API server add a random suffix to the name (word-count-x7k2p)."),
    ] = False,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="A label KEY=VALUE of the resource (repeatable)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end; exit 0 when it succeeds, 1 when not.")
    ] = False,
    timeout: Timeout = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Print the resource instead of creating it (no cluster needed); pickled code "
            "is still uploaded, so the printed resource can be applied as it is."
        ),
    ] = False,
    print_format: Annotated[
        ResourceFormat,
        typer.Option(
            "--print",
            "-o",
            help="What to print on stdout: the resource's name, or the resource as json or "
            "yaml (with --wait: as it ended).",
        ),
    ] = ResourceFormat.name,
    report: Annotated[bool, typer.Option("--report", help=REPORT_HELP)] = False,
    quiet: Quiet = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    help_: HelpFlag = False,
) -> None:
    """Submit a MapReduce job to Kubernetes: create a MapReduceJob resource.

    Example: kubemr submit wc.py -i s3://books/ --output s3://out/wc --storage-secret s3 --wait
    """
    with reported():
        seconds = timeout_seconds(timeout)
        flags = SubmitFlags(
            inputs=input,
            output=output,
            reducers=reducers,
            split_size=split_size,
            memory=memory,
            input_format=format.value if format else None,
            output_format=output_format.value if output_format else None,
            encoding=encoding,
            decode_errors=decode_errors.value if decode_errors else None,
            max_attempts=max_attempts,
            skip_bad_records=skip_bad_records,
            overwrite=overwrite,
            params=param or [],
            work_dir=work_dir,
            s3_endpoint=s3_endpoint,
            s3_region=s3_region,
            storage_secret=storage_secret,
            workers_min=workers_min,
            workers_max=workers_max,
            workers_max_pending=workers_max_pending,
            image=image,
            image_pull_policy=image_pull_policy.value if image_pull_policy else None,
            worker_command=worker_command,
            env=env or [],
            requests=request or [],
            limits=limit or [],
            service_account=service_account,
            active_deadline=active_deadline,
            pending_deadline=pending_deadline,
            ttl_after_finished=ttl_after_finished,
        )
        check_spec(spec_values(flags, JOB_PLACEHOLDER))  # the flags, before any user code runs
        labels = key_values(label or [], "--label")
        if name is not None and (problem := check_name(name)):
            raise FlagError(f"--name {name!r}: {problem}")
        assert job is not None  # its callback refuses a missing one
        code_dir = code_dir or jobcode.default_code_dir(output)
        job_code, class_name, pickled = _job_code(job, code, code_dir)
        files = _job_files(job, flags, file or [])
        if files:
            job_code["files"] = jobcode.spec_files(files, code_dir)
        spec = check_spec(spec_values(flags, job_code))
        base = name or name_from(class_name)
        written = {"split_size": split_size, "memory": memory}
        if dry_run:
            _upload(pickled, files, code_dir, spec, quiet)
            resource = build_resource(
                spec, name=base, generate=generate_name, namespace=namespace,
                labels=labels, written=written,
            )  # fmt: skip
            _print(resource, print_format)
            return
        cluster = session(kubeconfig, context, namespace)
        ns = cluster.namespace
        resource = build_resource(
            spec, name=base, generate=generate_name, namespace=ns, labels=labels, written=written
        )
        _check_create(cluster.jobs, resource, ns)  # rights, CRD, schema: before uploading
        _upload(pickled, files, code_dir, spec, quiet)
        created = cluster.jobs.create(resource, ns)
        made = name_of(created)
        hint = f" -n {ns}" if namespace else ""
        if not quiet:
            note(f"created mapreducejob {made} in namespace {ns} (kubemr status {made}{hint})")
        if not wait:
            _print(created, print_format)
            return
        if print_format is ResourceFormat.name:
            _print(created, print_format)
        ended = wait_for_end(cluster.jobs, ns, made, timeout=seconds, quiet=quiet, hint=hint)
        if print_format is not ResourceFormat.name:
            _print(ended, print_format)
        code_ = report_end(ended, quiet=quiet, hint=hint)
        if code_ == ExitCode.OK and not quiet:
            _note_undecodable(ended)
        if code_ == ExitCode.OK and (report or not quiet):
            storage_ = user_storage(spec.storage.endpoint)
            report_cmd.after_job(spec.output, storage_, write=report)
    raise typer.Exit(code_)


def _note_undecodable(resource: dict[str, Any]) -> None:
    """As ``kubemr run`` says after its summary: lines the --decode-errors fallback read."""
    result = (resource.get("status") or {}).get("result") or {}
    count = ((result.get("counters") or {}).get("kubemr") or {}).get(UNDECODABLE_LINES)
    if count:
        note(
            f"{count:,} input lines did not decode in the input's encoding and were decoded "
            f"with the --decode-errors fallback (counter {UNDECODABLE_LINES})"
        )


def _check_create(jobs: JobsClient, resource: dict[str, Any], namespace: str) -> None:
    """A server-side dry run of the create: everything is checked, nothing stored."""
    try:
        jobs.create(resource, namespace, dry_run=True)
    except ApiRefused as exc:
        if exc.status != 409:
            raise
        raise ApiRefused(f"{exc}; give another --name, or --generate-name", exc.status) from None


def _job_code(
    ref: str, form: CodeForm, code_dir: str
) -> tuple[dict[str, Any], str, jobcode.PickledCode | None]:
    """The spec's ``job``, the class's (or module's) name, and the pickle to upload to
    ``code_dir``."""
    if not jobcode.is_job_file(ref):
        if form is not CodeForm.auto:
            raise FlagError(
                f"--code {form.value} takes a job file (wc.py), and {ref!r} names a module: "
                "a module is referenced as it is, importable in the worker image"
            )
        module, _, class_name = ref.partition(":")
        return {"module": ref}, class_name or module, None
    if form is CodeForm.source:
        text, class_name, found = jobcode.source_code(ref)
        job: dict[str, Any] = {"source": text}
        if class_name:
            job["class_name"] = class_name
        return job, found, None
    pickled = jobcode.pickle_job(ref, code_dir)
    return {"pickle": {"url": pickled.url, "sha256": pickled.sha256}}, pickled.class_name, pickled


def _job_files(job: str, flags: SubmitFlags, paths: list[str]) -> list[LocalFile]:
    """The job's typed options checked (a job file is loaded here, a module is not: its
    plan pod checks them), and the files it ships, found and hashed."""
    job_cls = load_job_class(job) if jobcode.is_job_file(job) else None
    params = key_values(flags.params, "--param")
    if job_cls is not None:
        try:
            check_options(job_cls, params)
        except JobOptionError as exc:
            raise FlagError(f"--param: {exc}") from None
    return jobcode.job_files(job_cls, params, paths)


def _upload(
    pickled: jobcode.PickledCode | None,
    files: list[LocalFile],
    code_dir: str,
    spec: MapReduceJobSpec,
    quiet: bool,
) -> None:
    options = user_storage(spec.storage.endpoint)
    if files:
        uploaded_files = jobcode.upload_files(files, code_dir, options)
        if not quiet:
            note(
                f"shipped {len(files)} file(s) with the job to {jobcode.files_dir(code_dir)} "
                f"({uploaded_files} uploaded now, the others were there already)"
            )
    if pickled is None:
        return
    uploaded = jobcode.upload(pickled, options)
    if quiet:
        return
    if uploaded:
        note(f"uploaded the job's code to {pickled.url}")
    else:
        note(f"the job's code is in storage already: {pickled.url}")


def _print(resource: dict[str, Any], fmt: ResourceFormat) -> None:
    if fmt is ResourceFormat.name:
        sys.stdout.write(name_of(resource) or str(resource["metadata"].get("generateName")))
        sys.stdout.write("\n")
    else:
        sys.stdout.write(dump(resource, fmt.value))
    sys.stdout.flush()
