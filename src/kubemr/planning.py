"""The plan stage: inputs listed and checked, splits cut, the job's code stored, the
mapper tried on the first records, total-order key ranges sampled, ``plan.json`` written.

It runs in the driver of ``kubemr run`` and in the plan pod of a job on Kubernetes: the
same code, whoever calls it. It is the only stage that reads the inputs as a whole.
Later steps' task inputs and key ranges are decided by their own tasks (see
:func:`step_boundaries` and :mod:`kubemr.commit`), so no stage waits on a driver.
"""

from __future__ import annotations

import functools
import itertools
import math
import pickle
import re
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubemr import storage
from kubemr.commands import (
    COMMAND_OUTPUT_FORMAT,
    input_problem,
    missing_program,
    writes_job_output,
)
from kubemr.errors import InputError, Interrupted, JobFailed, TaskFailure
from kubemr.formats import (
    CSV,
    DEFAULT_CHUNK_BYTES,
    INPUT_FORMATS,
    INTERNAL,
    RAW,
    Split,
    SplitReader,
    compression_of,
    read_csv_header,
    set_map_input,
)
from kubemr.job import Aggregate, MapReduce, MRStep, job_steps
from kubemr.jobfiles import MANIFEST_PARAM, Manifest
from kubemr.keys import order_key
from kubemr.loader import dump_job_class
from kubemr.options import check_options
from kubemr.output import check_apart, line_encoder, output_format_of, writes_keys
from kubemr.plan import (
    Plan,
    StepPlan,
    effective_split_size,
    make_splits,
    range_boundaries,
)
from kubemr.spec import JobOptions
from kubemr.storage import ObjectInfo, StorageError, StorageOptions
from kubemr.versions import job_sources, restore_code_files, write_job_code

DEFAULT_SPLIT_SIZE = 64 << 20
PREFLIGHT_RECORDS = 200
PREFLIGHT_PAIRS = 1000
"""The preflight checks this many pairs of the first records' mapper output, no more."""
SAMPLE_SPLITS = 16
SAMPLE_PAIRS = 20_000
"""Keys sampled per split for a total order."""

Warn = Callable[[str], None]


def make_job_id(job_name: str, now: datetime | None = None) -> str:
    """A job id that is a valid Kubernetes name: lowercase, ``[a-z0-9-]``, 63 at most."""
    stem = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:36].strip("-") or "job"
    stamp = f"{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"
    return f"{stem}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class Inputs:
    """The input files of a job, and what the listing left out."""

    files: list[ObjectInfo]
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def resolve_inputs(patterns: list[str], options: StorageOptions, warn: Warn) -> Inputs:
    """List every input pattern; an :class:`InputError` for one that names nothing."""
    if not patterns:
        raise InputError("no input given: pass --input PATH (a file, directory or glob)")
    found = Inputs([])
    seen: set[Any] = set()
    for pattern in patterns:
        skipped: list[str] = []
        try:
            store = storage.store_for(pattern, options)
            if storage.is_remote(pattern):
                store.check_access(pattern, write=False)
            expanded = storage.expand_inputs([pattern], options, skipped=skipped)
            matched = next(iter(expanded))[1]
        except FileNotFoundError:
            raise InputError(f"input {pattern} does not exist") from None
        except PermissionError as exc:
            raise InputError(f"input {pattern} is not readable: {exc}") from None
        except (StorageError, OSError) as exc:
            raise InputError(f"input {pattern}: {exc}") from None
        for url in skipped:
            if url not in found.skipped:
                found.skipped.append(url)
                warn(
                    f"input {pattern}: left out {url}, the output of another kubemr job "
                    "(name it as an input of its own to read it)"
                )
        if not matched:
            raise InputError(
                f"input {pattern} matches no files (an empty directory or a glob with no match)"
            )
        for info in matched:
            # The same file named by two patterns (absolute and relative, `..`) once.
            identity = info.url if storage.is_remote(info.url) else _file_identity(info.url)
            if identity not in seen:
                seen.add(identity)
                found.files.append(info)
    return found


def _file_identity(url: str) -> Any:
    import os

    path = storage.local_path(url)
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    if not os.access(path, os.R_OK):
        raise InputError(f"input file {url} is not readable (check its permissions)")
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


def new_plan(
    job_cls: type[MapReduce],
    options: JobOptions,
    *,
    job_id: str,
    work_url: str,
    inputs: Inputs,
    parallelism: int,
    s3_endpoint: str | None = None,
    chunk_bytes: int | None = None,
    files: Manifest | None = None,
) -> Plan:
    """The plan's settings (pure): formats, reducers per step, the work dir's place.

    ``parallelism`` is how many tasks can run at once (the local workers, or the most
    worker pods): the default reducer count and split size follow it. The job's typed
    options are checked against its ``Options`` here, before any task starts; ``files``
    (already stored) travel to every task in the plan's parameters.
    """
    check_options(job_cls, options.params)
    params = dict(options.params)
    if files is not None and files.files:
        params[MANIFEST_PARAM] = files.to_param()
    job = job_cls()
    job.params = params
    steps = job_steps(job)
    input_format = options.input_format or job_cls.INPUT_FORMAT or "text"
    if steps[0].mapper_raw is not None:
        if options.input_format not in (None, RAW):
            raise InputError(
                f"{job_cls.__name__} reads whole files (mapper_raw): --format "
                f"{options.input_format} does not apply"
            )
        input_format = RAW
    output_format = output_format_of(job_cls, options.output_format)
    if input_format not in INPUT_FORMATS:
        raise InputError(f"unknown input format {input_format!r}: use {', '.join(INPUT_FORMATS)}")
    reducers = options.reducers
    if reducers is None:
        # One reducer per worker, but no more than the input needs: three lines of
        # input make one part file, not one per core.
        reducers = max(1, min(parallelism, math.ceil(inputs.total_bytes / DEFAULT_SPLIT_SIZE)))
    step_plans = []
    for i, step in enumerate(steps):
        total_order = job_cls.TOTAL_ORDER and i == len(steps) - 1
        if reducers == 0 or (not step.has_reducer() and not total_order):
            r = 0
        else:
            r = step.reducers or reducers
        step_plans.append(StepPlan(i, r, total_order=total_order and r > 0))
    if options.output_format is None and writes_job_output(steps, [s.reducers for s in step_plans]):
        output_format = COMMAND_OUTPUT_FORMAT  # its lines as it writes them, as in mrjob
    return Plan(
        job_id=job_id,
        job_name=job_cls.__name__,
        work_url=work_url,
        output_url=options.output.rstrip("/"),
        input_format=str(input_format),
        output_format=str(output_format),
        steps=step_plans,
        memory=options.memory,
        skip_bad_records=options.skip_bad_records,
        s3_endpoint=s3_endpoint,
        created=datetime.now(UTC).isoformat(),
        params=params,
        chunk_bytes=chunk_bytes or DEFAULT_CHUNK_BYTES,
        encoding=options.encoding,
        decode_errors=options.decode_errors,
    )


class Planner:
    """Writes a job's plan into its work dir (see the module doc)."""

    def __init__(
        self,
        job_cls: type[MapReduce],
        plan: Plan,
        inputs: Inputs,
        options: StorageOptions,
        *,
        split_size: int | None,
        parallelism: int,
        costly_tasks: bool = False,
    ) -> None:
        self.costly_tasks = costly_tasks
        # A class unpickled by value (the plan pod) gets its files back in its code, so
        # that tracebacks and the sources recorded for the tasks name them.
        restore_code_files(job_cls)
        self.job_cls = job_cls
        self.plan = plan
        self.inputs = inputs
        self.options = options
        self.split_size = split_size
        self.parallelism = parallelism

    def check_output(self, patterns: list[str]) -> None:
        check_apart(self.plan.output_url, patterns, self.inputs.files)

    def write(self) -> list[Split]:
        """Store the job's code, the first step's splits and key ranges, and the plan;
        try the mapper on the first records. ``plan.json`` is written last: a work dir
        with one is complete."""
        plan = self.plan
        write_job_code(plan, dump_job_class(self.job_cls), self.options, job_sources(self.job_cls))
        splits = self.first_splits()
        plan.steps[0].maps = len(splits)
        write_json(plan.splits_url(0), [s.to_json() for s in splits], self.options)
        job = self.job_cls()
        job.params = dict(plan.params)
        steps = job_steps(job)
        preflight(plan, job, steps, splits, self.options)
        if plan.steps[0].total_order and splits:
            boundaries = sample_boundaries(plan, 0, self.job_cls, splits, self.options)
            storage.write_bytes(plan.boundaries_url(0), pickle.dumps(boundaries), self.options)
        storage.write_bytes(plan.url("plan.json"), plan.to_json().encode(), self.options)
        return splits

    def first_splits(self) -> list[Split]:
        plan = self.plan
        files = self.inputs.files
        split_size = effective_split_size(
            self.inputs.total_bytes,
            DEFAULT_SPLIT_SIZE if self.split_size is None else self.split_size,
            self.parallelism,
            auto=self.split_size is None,
            costly_tasks=self.costly_tasks,
        )
        headers = {}
        if plan.input_format == CSV:
            for f in files:
                if f.size:
                    store = storage.store_for(f.url, self.options)
                    headers[f.url] = read_csv_header(
                        store, f.url, compression_of(f.url), plan.encoding
                    )
        return make_splits(
            files,
            split_size,
            plan.input_format,
            compression_of,
            headers,
            encoding=plan.encoding,
            decode_errors=plan.decode_errors,
            with_offset=self.job_cls.INPUT_WITH_OFFSET,
        )


def write_json(url: str, data: Any, options: StorageOptions) -> None:
    import json

    storage.write_bytes(url, json.dumps(data, sort_keys=True).encode(), options)


# --------------------------------------------------------------------------- preflight


def _sample_pairs(
    step: MRStep, records: list[Any], limit: int, roles: list[str] | None = None
) -> list[Any]:
    """What a map task of ``step`` would emit for ``records``, its hooks included (the
    job's ``setup`` must have run), up to ``limit`` pairs from the mapper and from each
    hook: one long record can yield millions. The
    name of each user function is appended to ``roles`` as it starts, so the last one
    names the function that raised."""
    return [pair for _, pair in _sample_by_role(step, records, limit, roles)]


def _sample_by_role(
    step: MRStep, records: list[Any], limit: int, roles: list[str] | None = None
) -> list[tuple[str, Any]]:
    """:func:`_sample_pairs`, each pair with the name of the function that emitted it."""
    called = [] if roles is None else roles

    def mapped() -> Any:
        if step.mapper_batch is not None:
            out = step.mapper_batch(records)
            return out.items() if isinstance(out, Mapping) else (out or ())
        if step.mapper is not None:
            mapper = step.mapper
            return itertools.chain.from_iterable(mapper(rec) for rec in records)
        return records

    role = "mapper_batch" if step.mapper_batch is not None else "mapper"
    # Up to ``limit`` pairs from each, in a task's order: mapper_final is sampled even
    # when the mapper alone yields more than the limit.
    out: list[tuple[str, Any]] = []
    parts = [("mapper_init", step.mapper_init), (role, mapped), ("mapper_final", step.mapper_final)]
    for name, fn in parts:
        out.extend(itertools.islice(_started(name, fn, called), limit))
    return out


def _started(
    role: str, fn: Callable[[], Any] | None, roles: list[str]
) -> Iterator[tuple[str, Any]]:
    if fn is not None:
        roles.append(role)
        for pair in fn() or ():
            yield role, pair


def preflight(
    plan: Plan, job: MapReduce, steps: list[MRStep], splits: list[Split], options: StorageOptions
) -> None:
    """Run the map side on the first records here, so that a broken mapper or a key that
    cannot be shuffled or written fails before any task starts.

    The sample runs as a map task would, on this job instance: ``setup``, the step's
    ``mapper_init``, the mapper on up to :data:`PREFLIGHT_RECORDS` records,
    ``mapper_final``, ``teardown``; what the hooks yield is checked with the rest. User
    code that raises is left to the task, which says where, with retries. Of shell
    commands as steps, the programs are looked for on ``$PATH`` and a first-step mapper
    command's input format is checked; the command itself runs only in tasks."""
    problem = missing_program(steps) or (
        input_problem(steps[0], splits[0].format, splits[0].with_offset) if splits else None
    )
    if problem is not None:
        raise _preflight_failure(problem)
    if not splits or splits[0].format == RAW or steps[0].mapper_cmd is not None:
        # A raw record is a whole file: trying the mapper would map all of it. A command
        # runs once over a whole split, in its task.
        return
    split = splits[0]
    store = storage.store_for(split.url, options)
    reader = SplitReader(store, split, 64 << 10, plan.skip_bad_records)
    try:
        chunk = next(iter(reader.chunks()), None)
    except Exception as exc:
        raise InputError(str(exc)) from None
    if chunk is None:
        return
    # User code that raises is left to the task, which reports it with retries.
    pairs: list[tuple[str, Any]] = []
    set_map_input(job, split)  # as a map task of this split would see it
    if _completes(job.setup):
        sample = functools.partial(
            _sample_by_role, steps[0], chunk.records[:PREFLIGHT_RECORDS], PREFLIGHT_PAIRS
        )
        if not _completes(lambda: pairs.extend(sample())):
            pairs.clear()
        _completes(job.teardown)
    set_map_input(job, None)  # the driver's environment without them again
    to_output = _keys_reach_output(plan, steps)
    if to_output == "keys" and not writes_keys(plan.output_format):
        to_output = None  # a value-only or custom format: the keys are not written
    encode = line_encoder(plan.output_format, type(job)) if to_output else None
    for role, pair in pairs:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise _preflight_failure(
                f"the {role} yielded {pair!r:.200} (a {type(pair).__name__}); it must yield "
                "(key, value) pairs, e.g. `yield word, 1`"
            )
        key, value = pair
        try:
            pickle.dumps(key)
            pickle.dumps(value)
            if plan.steps[0].reducers > 0:  # a map-only step never sorts its keys
                order_key(key)
        except Exception as exc:
            raise _preflight_failure(
                f"the {role} emitted key {key!r:.200} / value {value!r:.200}, which cannot be "
                f"shuffled ({type(exc).__name__}: {exc}). Keys and values must be picklable "
                "and ordered; use str, int, float (not NaN), bytes, tuples or lists of them"
            ) from None
        if encode is not None:
            probe = [(key, value)] if to_output == "pairs" else [(key, 0)]
            try:
                encode(probe)
            except (TypeError, ValueError) as exc:
                what, shown = ("pair", probe[0]) if to_output == "pairs" else ("key", key)
                raise _preflight_failure(
                    f"the {role}'s {what} {shown!r:.200} cannot be written as "
                    f"{plan.output_format} output ({type(exc).__name__}: {exc}): convert it "
                    "in the job (e.g. bytes.decode()), or choose another --output-format"
                ) from None
            except Exception:
                return  # a custom protocol's own error: the task reports it with its traceback


def _completes(fn: Callable[[], Any]) -> bool:
    """Call ``fn``; whether it completed rather than raised (a signal to the process is
    raised again)."""
    try:
        fn()
    except Interrupted:
        raise
    except (Exception, SystemExit, KeyboardInterrupt):
        return False
    return True


def _preflight_failure(message: str) -> JobFailed:
    return JobFailed(TaskFailure("preflight", "-", "user-code", message))


def _keys_reach_output(plan: Plan, steps: list[MRStep]) -> str | None:
    """Whether the first step's map output reaches the job's output as it is: "pairs"
    (map-only), "keys" (a built-in or identity reducer), or None."""
    if len(steps) != 1:
        return None
    if plan.steps[0].reducers == 0:
        return "pairs"
    reducer = steps[0].reducer
    if reducer is None or isinstance(reducer, Aggregate):
        return "keys"
    return None


# --------------------------------------------------------------------------- total order


def sample_boundaries(
    plan: Plan,
    step: int,
    job_cls: type[MapReduce],
    splits: list[Split],
    options: StorageOptions,
) -> list[Any]:
    """TOTAL_ORDER: key ranges of even size, cut from keys sampled from the step's input.

    The sample is taken with a job instance of its own (``setup``, then per split
    ``mapper_init``, the mapper, ``mapper_final``; ``teardown``), so that a task that
    samples leaves its own state and counters as they were."""
    keys: list[Any] = []
    chosen = [s for s in splits if s.end > s.start]
    chosen = chosen[:: max(1, len(chosen) // SAMPLE_SPLITS)][:SAMPLE_SPLITS]
    where = f"key sampling for the total order (step {step + 1})"
    job = job_cls()
    job.params = dict(plan.params)
    step_fns = job_steps(job)[step]
    shown = "the step's input"

    def user_code(roles: list[str], fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Interrupted:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            message = (
                f"{roles[-1]} raised {type(exc).__name__}: {exc} while the keys were "
                f"sampled from {shown}"
            )
            raise JobFailed(TaskFailure(where, "-", "user-code", message, tb)) from None

    set_map_input(job, chosen[0] if chosen else None)
    user_code(["setup"], job.setup)
    for split in chosen:
        set_map_input(job, split)
        reader = SplitReader(storage.store_for(split.url, options), split, 1 << 20, 1 << 30)
        chunk = next(iter(reader.chunks()), None)
        if chunk is None:
            continue
        shown = split.describe()
        roles: list[str] = []
        sample = functools.partial(
            _sample_pairs, step_fns, chunk.records[:5000], SAMPLE_PAIRS, roles
        )
        pairs = user_code(roles, sample)
        keys.extend(k for k, _ in pairs)
    user_code(["teardown"], job.teardown)
    set_map_input(job, None)
    try:
        keys.sort(key=order_key)
    except Exception as exc:
        raise JobFailed(
            TaskFailure(where, "-", "user-code", f"the sampled keys cannot be ordered ({exc})")
        ) from None
    return range_boundaries(keys, plan.steps[step].reducers)


def step_boundaries(
    plan: Plan, step: int, job_cls: type[MapReduce], options: StorageOptions
) -> list[Any]:
    """The key ranges of a total-order step. The plan stage samples the first step's
    input; a later step's input exists only once the wave before it is done, so the
    first of its map tasks to get here samples it and stores the result exclusively:
    every task of the step then cuts at the same keys."""
    url = plan.boundaries_url(step)
    try:
        return pickle.loads(storage.read_bytes(url, options))  # type: ignore[no-any-return]
    except FileNotFoundError:
        if step == 0:
            raise
    from kubemr.commit import previous_wave

    outputs = previous_wave(plan, step, options)  # one listing, not one per task
    splits = [Split(r.output_url, 0, r.output_bytes, r.output_bytes, INTERNAL) for r in outputs]
    boundaries = sample_boundaries(plan, step, job_cls, splits, options)
    storage.create_exclusive(url, pickle.dumps(boundaries), options)
    return pickle.loads(storage.read_bytes(url, options))  # type: ignore[no-any-return]
