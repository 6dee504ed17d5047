"""Run one task attempt end to end: the code every worker runs, locally or in a pod.

A task reads the plan and the job's code from the work dir, does its work, writes its
output under an attempt-scoped name, and commits by writing a small marker last
(``steps/<s>/tasks/<wave>-<n>/<attempt>.json``). A failed attempt writes a
``<attempt>.failed.json`` with the root cause instead. Readers only trust committed
attempts, so a retried or duplicated attempt is never counted twice.

Both markers carry the attempt's record (:mod:`kubemr.results`): its start and end, the
worker and node, its I/O, CPU seconds and peak memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import itertools
import json
import os
import pickle
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter, ne
from typing import Any

from kubemr import commit
from kubemr.commands import StepCommands, pre_collector, sorted_pairs, to_sink
from kubemr.errors import (
    BadRecordError,
    CarriesFailure,
    CodeIntegrityError,
    Interrupted,
    TaskFailure,
    VersionSkew,
)
from kubemr.formats import (
    INTERNAL,
    RAW,
    STRICT,
    UNDECODABLE_LINES,
    Split,
    SplitReader,
    encode_block,
    iter_blocks,
    locate,
    set_map_input,
)
from kubemr.job import Aggregate, MapReduce, MRStep, job_steps
from kubemr.keys import (
    KEY_CLASS_MIXED,
    NaNKeyError,
    RangePartitioner,
    merge_key_classes,
    order_key,
)
from kubemr.output import line_encoder
from kubemr.plan import Plan, task_name
from kubemr.planning import step_boundaries
from kubemr.results import MAP, REDUCE, TaskResult
from kubemr.shuffle import (
    USER_ERRORS,
    MapCollector,
    NaNValuesError,
    NotAPairError,
    UnhashableKeyError,
    UserCodeFailure,
    check_pairs,
    first_problem,
    fold_into,
    given_key,
    group_sorted,
    hook_pairs,
    is_pair,
    merge_sorted_blocks,
    read_segment_blocks,
    sort_pairs,
    sorted_values,
    table_key,
    yields_only_pairs,
)
from kubemr.storage import (
    StorageError,
    StorageOptions,
    all_stats,
    read_bytes,
    store_for,
    write_bytes,
)
from kubemr.versions import load_job_code

ProgressFn = Callable[[int, int], None]  # (bytes, records) since the last call

OUTPUT_BATCH = 16384
_first = itemgetter(0)
_second = itemgetter(1)


class TaskError(CarriesFailure):
    """A task attempt failed; carries the :class:`TaskFailure` to report."""


# --------------------------------------------------------------------------- loading

_loaded: dict[str, tuple[Plan, type[MapReduce]]] = {}


def load_job(plan_url: str, options: StorageOptions | None = None) -> tuple[Plan, type[MapReduce]]:
    """The plan and the job class, cached per process (a worker runs many tasks)."""
    cached = _loaded.get(plan_url)
    if cached is not None:
        return cached
    plan = Plan.from_json(read_bytes(plan_url, options))
    opts = StorageOptions(s3_endpoint=plan.s3_endpoint) if options is None else options
    job_cls = load_job_code(plan, opts)
    _loaded[plan_url] = (plan, job_cls)
    return plan, job_cls


def read_json(url: str, options: StorageOptions) -> Any:
    return json.loads(read_bytes(url, options))


def write_json(url: str, data: Any, options: StorageOptions) -> None:
    write_bytes(url, json.dumps(data, sort_keys=True).encode(), options)


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class AttemptStart:
    """Where an attempt's measures start: wall clock, the process's CPU time, and its
    storage counters."""

    wall: float
    cpu: float
    stats: dict[str, Any]

    @classmethod
    def now(cls) -> AttemptStart:
        """From now: an attempt in a process that runs many (the local pool)."""
        return cls(time.time(), time.process_time(), all_stats())

    @classmethod
    def of_process(cls) -> AttemptStart:
        """From this process's start: the one attempt of a worker pod, whose record
        then starts when its container did and counts the start-up it paid for."""
        return cls(process_start_time(), 0.0, {})


def process_start_time() -> float:
    """When this process started (epoch seconds), from ``/proc/self/stat``; now where
    that cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        # Field 22, counted after the parenthesised command name (which may hold spaces).
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        since_boot = ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux: KiB


def run_task(
    plan_url: str,
    step: int,
    wave: str,
    index: int,
    attempt: str,
    progress: ProgressFn | None = None,
    spill_dir: str | None = None,
    since: AttemptStart | None = None,
) -> TaskResult:
    """Run one attempt; commit it and return its result, or raise :class:`TaskError`.

    :class:`~kubemr.errors.Interrupted` (SIGTERM to a pod) is recorded as a failed
    attempt and raised again, so the process exits as terminated, not as failed.
    ``since``: where the attempt's time, CPU and storage counters start (default: now).
    """
    started = time.monotonic()
    since = since or AttemptStart.now()
    options: StorageOptions | None = None
    plan: Plan | None = None
    name = f"{wave} {index}"
    try:
        plan, job_cls = load_job(plan_url)
        options = StorageOptions(s3_endpoint=plan.s3_endpoint)
        name = task_name(step, len(plan.steps), wave, index)
        job = job_cls()
        job.params = dict(plan.params)
        job._job_scope = plan.job_id  # what load_once keeps lives as long as this job's tasks
        set_map_input(job, None)  # no input file, until a first-step map task sets its own
        step_fns = job_steps(job)[step]
        runner = _MapTask if wave == MAP else _ReduceTask
        task = runner(plan, options, job, step_fns, step, index, attempt, progress, spill_dir)
        result = task.run()
        result.seconds = time.monotonic() - started
        facts = attempt_facts(since)
        result.started = facts["started"]
        result.finished = facts["finished"]
        result.worker = facts["worker"]
        result.node = facts["node"]
        result.cpu_seconds = facts["cpu_seconds"]
        result.peak_rss_bytes = facts["peak_rss_bytes"]
        result.storage = facts["storage"]
        write_json(plan.marker_url(step, wave, index, attempt), result.to_json(), options)
        return result
    except Interrupted as exc:
        if plan is not None and options is not None:
            failure = TaskFailure(
                name, attempt, "infrastructure", f"stopped by signal {exc.signum}"
            )
            with contextlib.suppress(Exception):
                url = plan.marker_url(step, wave, index, attempt, failed=True)
                write_json(url, failure_marker(failure, step, wave, index, since), options)
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        # SystemExit and KeyboardInterrupt too: an attempt ends in a failure marker and a
        # TaskError, never in a process exit that a pod or the runner could read as success.
        failure = _failure(name, attempt, exc)
        if plan is not None and options is not None:
            try:
                url = plan.marker_url(step, wave, index, attempt, failed=True)
                write_json(url, failure_marker(failure, step, wave, index, since), options)
            except Exception:
                pass  # the failure itself is what matters; the marker is best effort
        raise TaskError(failure) from None


def attempt_facts(since: AttemptStart) -> dict[str, Any]:
    """Where and when an attempt ran and what it used, from ``since`` to now."""
    pod, node = worker_name()
    return {
        "started": since.wall,
        "finished": time.time(),
        "worker": pod,
        "node": node,
        "cpu_seconds": round(time.process_time() - since.cpu, 6),
        "peak_rss_bytes": peak_rss_bytes(),
        "storage": stats_delta(since.stats, all_stats()),
    }


def failure_marker(
    failure: TaskFailure, step: int, wave: str, index: int, since: AttemptStart
) -> dict[str, Any]:
    """A failed attempt's marker: its root cause, the task, and the attempt's record."""
    return {**failure.to_json(), "step": step, "wave": wave, "index": index, **attempt_facts(since)}


def worker_name() -> tuple[str, str | None]:
    """Who ran an attempt: the pod and its node, or this host's process (no node)."""
    pod = os.environ.get("KUBEMR_POD_NAME")
    if pod:
        return pod, os.environ.get("KUBEMR_NODE_NAME") or None
    return f"{socket.gethostname()}:{os.getpid()}", None


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Storage requests and bytes of one attempt: the process's counters grow over every
    task a worker runs, so an attempt reports the difference."""
    requests = {
        kind: n - before.get("requests", {}).get(kind, 0)
        for kind, n in after.get("requests", {}).items()
    }
    return {
        "requests": requests,
        "bytes_read": after.get("bytes_read", 0) - before.get("bytes_read", 0),
        "bytes_written": after.get("bytes_written", 0) - before.get("bytes_written", 0),
    }


def _failure(name: str, attempt: str, exc: BaseException) -> TaskFailure:
    if isinstance(exc, UserCodeFailure):
        cause = exc.cause
        if isinstance(cause, CodeIntegrityError):  # a shipped file changed: retrying cannot help
            return TaskFailure(name, attempt, "code-integrity", str(exc))
        if not exc.raised:  # found in what user code produced: no traceback to show
            return TaskFailure(name, attempt, "user-code", str(exc))
        tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        return TaskFailure(name, attempt, "user-code", str(exc), _user_frames(tb))
    if isinstance(exc, BadRecordError):
        return TaskFailure(name, attempt, "bad-record", str(exc))
    if isinstance(exc, CodeIntegrityError):
        return TaskFailure(name, attempt, "code-integrity", str(exc))
    if isinstance(exc, VersionSkew):
        return TaskFailure(name, attempt, "version-skew", str(exc))
    if isinstance(exc, StorageError):  # unreachable, no bucket: its message says what to do
        return TaskFailure(name, attempt, "storage", str(exc))
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskFailure(name, attempt, "infrastructure", f"{type(exc).__name__}: {exc}", tb)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frames(tb: str) -> str:
    """The traceback without kubemr's own frames, which only hide the user's code."""
    out: list[str] = []
    skip = False
    for line in tb.splitlines(keepends=True):
        if line.startswith('  File "'):
            skip = line[len('  File "') :].startswith(_PACKAGE_DIR)
        elif not line.startswith(" "):
            skip = False
        if not skip:
            out.append(line)
    return "".join(out)


def _call_user(role: str, where: Callable[[], str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UserCodeFailure:
        raise
    except Interrupted:  # a signal to the process, not an error of user code
        raise
    except USER_ERRORS as exc:
        raise UserCodeFailure(role, where(), exc) from exc


def _call_hook(role: str, where: Callable[[], str], fn: Callable[[], Any]) -> None:
    """Call ``setup`` or ``teardown``. One written as a generator would only make a
    generator: its body would never run, and whatever it meant to emit would be lost
    without a word."""
    result = _call_user(role, where, fn)
    if inspect.isgenerator(result):
        result.close()
        problem = TypeError(
            f"{role}() contains `yield`, so calling it only made a generator and its body "
            f"never ran; kubemr ignores what {role}() returns: drop the `yield`. To emit "
            "pairs once per task, yield them from mapper_final or reducer_final (or "
            "mapper_init / reducer_init), which run in every task of their step"
        )
        raise UserCodeFailure(role, where(), problem, raised=False)


# What a task finds wrong in the pairs user code produced, rather than an exception the
# code raised; found late (when the buffer is sorted), the task looks for the record.
_OUTPUT_PROBLEMS = (NotAPairError, NaNKeyError, UnhashableKeyError)


# --------------------------------------------------------------------------- map


class _TaskBase:
    def __init__(
        self,
        plan: Plan,
        options: StorageOptions,
        job: MapReduce,
        step_fns: MRStep,
        step: int,
        index: int,
        attempt: str,
        progress: ProgressFn | None,
        spill_dir: str | None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.job = job
        self.fns = step_fns
        self.step = step
        self.index = index
        self.attempt = attempt
        self.progress = progress
        self.spill_dir = spill_dir
        self.reducers = plan.steps[step].reducers
        self.counters: dict[str, int] = {}

    def all_counters(self) -> dict[str, dict[str, int]]:
        merged = {g: dict(c) for g, c in self.job._counters.items()}
        merged.setdefault("kubemr", {}).update(self.counters)
        return merged

    def final_output(self) -> tuple[str, bool]:
        """Where this task's output goes and whether it is the job's (user-format) output."""
        plan = self.plan
        if plan.is_last(self.step):
            return plan.final_part_url(self.index), True
        return plan.step_output_url(self.step, self.index, self.attempt), False

    def _commands(self, where: str) -> StepCommands:
        """The step's shell commands as this task runs them (:mod:`kubemr.commands`)."""
        reducers = [s.reducers for s in self.plan.steps]
        fmt = self.plan.output_format
        return StepCommands(self.job, reducers, fmt, self.step, where=where, scratch=self.spill_dir)


class _MapTask(_TaskBase):
    def run(self) -> TaskResult:
        plan = self.plan
        if self.step == 0:
            splits = read_json(plan.splits_url(self.step), self.options)
            split = self._with_offsets(Split.from_json(splits[self.index]))
        else:
            # A later step reads the chosen output of its task in the wave before.
            before = commit.previous_output(plan, self.step, self.index, self.options)
            size = before.output_bytes
            split = Split(before.output_url, 0, size, size, INTERNAL)
        set_map_input(self.job, split)  # before setup: mapper_init may read it
        reader = self._reader(split)
        _call_hook("setup", lambda: f"map task on {split.describe()}", self.job.setup)
        problem: Exception | None = None
        try:
            if self.reducers == 0:
                result = self._run_map_only(reader, split)
            else:
                result = self._run_shuffle(reader, split)
        except _OUTPUT_PROBLEMS as exc:
            problem = exc
        if problem is not None:  # outside the except block, as in _map_chunk
            raise self._locate_in_split(problem, split)
        _call_hook("teardown", lambda: f"map task on {split.describe()}", self.job.teardown)
        self.counters["map_bad_records_skipped"] = reader.bad_records
        if split.decode_errors != STRICT:
            self.counters[UNDECODABLE_LINES] = reader.undecodable_lines
        result.counters = self.all_counters()
        result.bad_records = list(reader.bad_examples)
        result.records_in = self.counters.get("map_input_records", 0)
        result.bytes_in = self.counters.get("map_input_bytes", 0)
        result.bytes_out = result.output_bytes
        return result

    def _with_offsets(self, split: Split) -> Split:
        """The split read as ``(offset, record)`` when the job asks for it
        (``INPUT_WITH_OFFSET``); a raw split's one record is a whole file."""
        wanted = bool(getattr(type(self.job), "INPUT_WITH_OFFSET", False))
        if wanted and not split.with_offset and split.format != RAW:
            return dataclasses.replace(split, with_offset=True)
        return split

    def _reader(self, split: Split) -> SplitReader:
        plan = self.plan
        store = store_for(split.url, self.options)
        return SplitReader(
            store, split, plan.chunk_bytes, plan.skip_bad_records, scratch_dir=self.spill_dir
        )

    def _records(self, reader: SplitReader) -> Iterator[Any]:
        """Chunks, with input counters and progress updated as they are read."""
        progress = self.progress
        records = 0
        nbytes = 0
        for chunk in reader.chunks():
            records += len(chunk.records)
            nbytes += chunk.bytes_read
            if progress is not None:
                progress(chunk.bytes_read, len(chunk.records))
            yield chunk
        self.counters["map_input_records"] = records
        self.counters["map_input_bytes"] = nbytes

    def _map_chunk(self, chunk: Any, split: Split, reader: SplitReader, feed: Any) -> None:
        fns = self.fns
        try:
            if fns.mapper_batch is not None:
                feed.feed_output(fns.mapper_batch(chunk.records))
            elif fns.mapper is not None:
                feed.feed_records(chunk.records, fns.mapper)
            else:
                feed.feed_output(chunk.records, trusted=True)  # a later step without a mapper
        except UserCodeFailure:
            raise
        except Interrupted:  # a signal to the process, not an error of user code
            raise
        except USER_ERRORS as exc:
            failed = exc
        else:
            return
        # Outside the except block, so that the mapper's second failure, found there, does
        # not carry its first as context (the traceback would show the error twice).
        raise self._locate_failure(failed, chunk, split, reader) from failed

    def _locate_failure(
        self, exc: BaseException, chunk: Any, split: Split, reader: SplitReader
    ) -> UserCodeFailure:
        # Find the record by running the mapper again, one record at a time.
        found = self._find_bad_record([chunk], split, reader, fold_values=True)
        if found is not None:
            return found
        raised = not isinstance(exc, _OUTPUT_PROBLEMS)
        fns = self.fns
        if fns.mapper_batch is not None or fns.mapper is None:
            first = locate(reader.store, split, chunk, 0) if chunk.records else split.url
            role = "mapper_batch" if fns.mapper_batch is not None else "shuffle"
            where = f"a chunk of {len(chunk.records)} records starting at {first}"
            return UserCodeFailure(role, where, exc, raised=raised)
        where = f"a record in the chunk starting at {locate(reader.store, split, chunk, 0)}"
        return UserCodeFailure("mapper", where, exc, raised=raised)

    def _locate_in_split(self, exc: Exception, split: Split) -> UserCodeFailure:
        """The record that produced what ``exc`` refuses, found by reading the split again
        and running the mapper record by record: a bad pair or a NaN key is only seen
        when the task's buffer is sorted, long after the record. A rare path, taken only
        by a task that fails anyway."""
        reader = self._reader(split)
        try:
            found = self._find_bad_record(reader.chunks(), split, reader, fold_values=False)
        except Exception:
            found = None  # the input cannot be read again: report what was found
        if found is not None:
            return found
        fns = self.fns
        role = "mapper_batch" if fns.mapper_batch is not None else "mapper"
        python_combiner = fns.combiner is not None and not isinstance(fns.combiner, Aggregate)
        if python_combiner and not isinstance(exc, NotAPairError):
            role = "combiner"  # the mapper's keys were fine: the combiner's are not
        exc.role = role  # type: ignore[union-attr]
        return UserCodeFailure(role, f"map task on {split.describe()}", exc, raised=False)

    def _find_bad_record(
        self, chunks: Iterable[Any], split: Split, reader: SplitReader, fold_values: bool
    ) -> UserCodeFailure | None:
        """The first record whose mapper raises or yields something the step refuses.

        ``fold_values``: also fold the pairs into a built-in combiner's accumulators, so
        that a value it cannot fold (SUM of a str) is pinned to its record.
        """
        fns = self.fns
        if fns.mapper_cmd is not None:
            return None  # a command's output is checked as it is read; it has no records
        grouped = self.reducers > 0  # a map-only step neither sorts nor groups its keys
        combiner = fns.map_side_combiner() if grouped else None
        hashed = combiner is not None
        agg = combiner if isinstance(combiner, Aggregate) and fold_values else None
        scratch: dict[Any, Any] = {}
        for chunk in chunks:
            if fns.mapper_batch is not None:
                first = locate(reader.store, split, chunk, 0) if chunk.records else split.url
                where = f"a chunk of {len(chunk.records)} records starting at {first}"
                try:
                    out = fns.mapper_batch(chunk.records)
                    items = list(out.items()) if isinstance(out, Mapping) else list(out or ())
                except Interrupted:  # a signal to the process, not an error of user code
                    raise
                except USER_ERRORS as exc:
                    return UserCodeFailure("mapper_batch", where, exc)
                problem = first_problem(items, "mapper_batch", grouped, hashed)
                if problem is not None:
                    return UserCodeFailure("mapper_batch", where, problem, raised=False)
                continue
            for i, rec in enumerate(chunk.records):
                role = "mapper"
                if fns.mapper is None:  # a later step: the records are the pairs
                    items, role = [rec], "previous step"
                else:
                    try:
                        items = list(fns.mapper(rec))
                    except Interrupted:  # a signal to the process, not an error of user code
                        raise
                    except USER_ERRORS as exc:
                        where = f"{locate(reader.store, split, chunk, i)}, record {rec!r:.200}"
                        return UserCodeFailure("mapper", where, exc)
                problem = first_problem(items, role, grouped, hashed)
                if problem is not None:
                    where = f"{locate(reader.store, split, chunk, i)}, record {rec!r:.200}"
                    return UserCodeFailure(role, where, problem, raised=False)
                if agg is not None:
                    try:
                        fold_into(scratch, items, agg.name)
                    except Exception as exc:
                        where = f"{locate(reader.store, split, chunk, i)}, record {rec!r:.200}"
                        return UserCodeFailure(f"{agg!r} on the mapper's values", where, exc)
        return None

    def _feed_hook(self, role: str, split: Split, feed: Any) -> None:
        """Run ``mapper_init`` or ``mapper_final``; its pairs go where the mapper's go."""
        where = f"map task on {split.describe()}"
        combiner = self.fns.map_side_combiner() if self.reducers > 0 else None
        hook = getattr(self.fns, role)
        pairs = hook_pairs(
            hook, role, where, grouped=self.reducers > 0, hashed=combiner is not None
        )
        if not pairs:
            return
        try:
            feed.feed_output(pairs, trusted=True)
        except Exception as exc:  # a built-in combiner that cannot fold these values
            raise UserCodeFailure(f"{combiner!r} on the {role}'s values", where, exc) from exc

    def _run_shuffle(self, reader: SplitReader, split: Split) -> TaskResult:
        plan = self.plan
        partitioner = self.fns.partitioner
        if plan.steps[self.step].total_order:
            boundaries = step_boundaries(plan, self.step, type(self.job), self.options)
            partitioner = RangePartitioner(boundaries)
        collector = MapCollector(
            num_partitions=self.reducers,
            combiner=self.fns.map_side_combiner(),
            partitioner=partitioner,
            memory_budget=plan.memory // 2,
            spill_dir=self.spill_dir,
            combiner_init=self.fns.combiner_init,
            combiner_final=self.fns.combiner_final,
            where=f"map task on {split.describe()}",
        )
        fns, where = self.fns, f"map task on {split.describe()}"
        cmds = self._commands(where) if fns.mapper_cmd or fns.combiner_cmd else None
        feed = collector  # a combiner command reads the mapper's pairs sorted: gather them
        if cmds is not None and fns.combiner_cmd is not None:
            feed = pre_collector(plan.memory // 2, self.spill_dir)
        try:
            self._feed_hook("mapper_init", split, feed)
            if cmds is not None and fns.mapper_cmd is not None:
                hashed = feed.mode != "plain"
                for pairs in cmds.mapper(self._records(reader), grouped=True, hashed=hashed):
                    feed.feed_output(pairs, trusted=True)
                    feed.maybe_spill()
            else:
                for chunk in self._records(reader):
                    self._map_chunk(chunk, split, reader, feed)
                    feed.maybe_spill()
            self._feed_hook("mapper_final", split, feed)
            if cmds is not None and feed is not collector:
                hashed = collector.mode != "plain"
                for pairs in cmds.combiner(sorted_pairs(feed, self.spill_dir), hashed=hashed):
                    collector.feed_output(pairs, trusted=True)
                    collector.maybe_spill()
            url = plan.shuffle_url(self.step, self.index, self.attempt)
            with store_for(url, self.options).open_write(url) as out:
                index = collector.write(out)
                size = out.tell()
        finally:
            collector.close()  # on every way out: a failed attempt's spills fill the disk
            feed.close()
        if collector.output_records_counted:
            self.counters["map_output_records"] = collector.output_records
        self.counters["map_spilled_records"] = collector.spilled_records
        self.counters["shuffle_records"] = sum(index.records)
        self.counters["shuffle_bytes"] = size
        result = TaskResult(self.step, MAP, self.index, self.attempt, url, size, index, {}, 0.0)
        result.records_out = sum(index.records)
        result.spill_bytes = collector.spilled_bytes
        result.key_sample = collector.key_sample
        return result

    def _run_map_only(self, reader: SplitReader, split: Split) -> TaskResult:
        # NaN keys pass through here: a map-only step neither sorts nor groups its keys, so
        # a NaN harms no other key (a later step that groups them refuses it there).
        url, final = self.final_output()
        sink = _PairSink(self.plan.output_format if final else INTERNAL, type(self.job))
        with store_for(url, self.options).open_write(url) as out:
            sink.out = out
            self._feed_hook("mapper_init", split, sink)
            if self.fns.mapper_cmd is not None:
                cmds = self._commands(f"map task on {split.describe()}")
                for made in cmds.mapper(self._records(reader), grouped=False, hashed=False):
                    to_sink(sink, made)
            else:
                for chunk in self._records(reader):
                    self._map_chunk(chunk, split, reader, sink)
                    sink.flush_if_full()
            self._feed_hook("mapper_final", split, sink)
            sink.flush()
            size = out.tell()
        self.counters["map_output_records"] = sink.records
        self.counters["output_records"] = sink.records
        self.counters["output_bytes"] = size
        result = TaskResult(self.step, MAP, self.index, self.attempt, url, size, None, {}, 0.0)
        result.records_out = sink.records
        return result


class _PairSink:
    """Where map-only and reduce output goes: user format or kubemr's block format.

    What the map-only mapper feeds is checked to be pairs when flushed, unless the
    mapper can only yield pairs; the reduce task checks what it appends itself.
    """

    def __init__(self, fmt: str, job_cls: type[MapReduce] | None = None) -> None:
        self.fmt = fmt
        self.encode = None if fmt == INTERNAL else line_encoder(fmt, job_cls)
        self.pending: list[tuple[Any, Any]] = []
        self.records = 0
        self.out: Any = None
        self.unchecked = False  # pending holds items not yet checked to be pairs
        self._mapper: Any = None
        self._trusted = False

    def feed_records(self, records: list[Any], mapper: Callable[[Any], Any]) -> None:
        if mapper is not self._mapper:
            self._mapper = mapper
            self._trusted = yields_only_pairs(mapper)
        self.unchecked |= not self._trusted
        extend = self.pending.extend
        for rec in records:
            extend(mapper(rec))

    def feed_output(self, out: Any, trusted: bool = False) -> None:
        if out is None:
            return
        if hasattr(out, "items"):
            trusted = trusted or isinstance(out, Mapping)
            out = out.items()
        self.unchecked |= not trusted
        self.pending.extend(out)

    def flush_if_full(self) -> None:
        if len(self.pending) >= OUTPUT_BATCH:
            self.flush()

    def flush(self) -> None:
        pairs = self.pending
        if not pairs:
            return
        if self.unchecked:
            check_pairs(pairs)  # a str "ab" would be written as the pair ("a", "b")
            self.unchecked = False
        self.pending = []
        encode = self.encode
        custom = getattr(encode, "custom", False)
        try:
            if encode is None:
                keys = []
                values = []
                for k, v in pairs:
                    keys.append(k)
                    values.append(v)
                data = encode_block(keys, values)[0]
            else:
                data = encode(pairs)
        except Interrupted:
            raise
        except USER_ERRORS as exc:
            if custom:  # the job's OUTPUT_PROTOCOL: its own error, with its traceback
                bad = _first_unencodable(pairs, encode)
                raise UserCodeFailure(encode.role, f"pair {bad!r:.200}", exc) from exc
            if not isinstance(exc, TypeError | ValueError):
                raise
            bad = _first_unencodable(pairs, encode)
            raise UserCodeFailure(
                "output", f"pair {bad!r:.200} cannot be written as {self.fmt}", exc
            ) from exc
        self.out.write(data)
        self.records += len(pairs)


def _first_unencodable(pairs: list[Any], encode: Any) -> Any:
    for pair in pairs:
        try:
            k, v = pair
            if encode is not None:
                encode([(k, v)])
            else:
                pickle.dumps((k, v))
        except Exception:
            return pair
    return None


# --------------------------------------------------------------------------- reduce


class _ReduceTask(_TaskBase):
    def run(self) -> TaskResult:
        plan = self.plan
        outputs = commit.map_outputs(plan, self.step, self.options)
        r = self.index
        segments = []
        for out in outputs:
            idx = out["partition_index"]
            start, end = idx["offsets"][r], idx["offsets"][r + 1]
            if end > start:
                segments.append((out["output_url"], start, end, idx["raw_bytes"][r]))
        classes = [o["partition_index"]["key_classes"][r] for o in outputs]
        cls = merge_key_classes(classes)
        raw_total = sum(s[3] for s in segments)
        _call_hook("setup", lambda: f"reduce task {r}", self.job.setup)
        url, final = self.final_output()
        sink = _PairSink(plan.output_format if final else INTERNAL, type(self.job))
        # Python objects take several times their pickled size in memory.
        in_memory = raw_total * 4 < plan.memory // 2
        where = f"reduce task {r}"
        with store_for(url, self.options).open_write(url) as out:
            sink.out = out
            sink.pending.extend(hook_pairs(self.fns.reducer_init, "reducer_init", where))
            if in_memory:
                self._reduce_in_memory(segments, cls, sink)
            else:
                self._reduce_external(segments, cls, sink)
            sink.pending.extend(hook_pairs(self.fns.reducer_final, "reducer_final", where))
            sink.flush()
            size = out.tell()
        _call_hook("teardown", lambda: f"reduce task {r}", self.job.teardown)
        self.counters["reduce_output_records"] = sink.records
        if final:
            self.counters["output_records"] = sink.records
            self.counters["output_bytes"] = size
        self.counters["reduce_spilled_to_disk"] = 0 if in_memory else 1
        result = TaskResult(self.step, REDUCE, r, self.attempt, url, size, None, {}, 0.0)
        result.counters = self.all_counters()
        fetched = sum(end - start for _, start, end, _ in segments)
        result.records_in = self.counters.get("reduce_input_records", 0)
        result.records_out = sink.records
        result.bytes_in = result.shuffle_bytes_fetched = fetched
        result.bytes_out = size
        return result

    # -- fetching ------------------------------------------------------------------------
    def _fetch_all(self, segments: list[tuple[str, int, int, int]]) -> Iterator[bytes]:
        """Segment bytes in map order, fetched a few at a time in parallel."""

        def fetch(seg: tuple[str, int, int, int]) -> bytes:
            url, start, end, _ = seg
            with store_for(url, self.options).open_read(url, start, end) as fh:
                return fh.read()

        with ThreadPoolExecutor(max_workers=8) as pool:
            window = 16
            futures = [pool.submit(fetch, s) for s in segments[:window]]
            next_seg = len(futures)
            for i in range(len(segments)):
                data = futures[i].result()
                futures[i] = None  # type: ignore[call-overload]
                if next_seg < len(segments):
                    futures.append(pool.submit(fetch, segments[next_seg]))
                    next_seg += 1
                if self.progress is not None:
                    self.progress(len(data), 0)
                yield data

    def _reduce_in_memory(self, segments: list[Any], cls: str, sink: _PairSink) -> None:
        reducer = self.fns.reducer
        records = 0
        if isinstance(reducer, Aggregate):
            agg = _reduce_aggregate(reducer, self.fns.map_side_combiner())
            acc: dict[Any, Any] = {}
            for data in self._fetch_all(segments):
                for keys, values, _ in iter_blocks(io.BytesIO(data)):
                    records += self._fold(acc, keys, values, agg)
            self.counters["reduce_input_records"] = records
            self.counters["reduce_input_groups"] = len(acc)
            keys_sorted = sorted(acc, key=order_key) if cls == KEY_CLASS_MIXED else sorted(acc)
            for i in range(0, len(keys_sorted), OUTPUT_BATCH):
                batch = keys_sorted[i : i + OUTPUT_BATCH]
                if cls == KEY_CLASS_MIXED:  # keys that held lists go out as they came in
                    sink.pending.extend((given_key(k), acc[k]) for k in batch)
                else:
                    sink.pending.extend((k, acc[k]) for k in batch)
                sink.flush()
            return
        pairs: list[tuple[Any, Any]] = []
        for data in self._fetch_all(segments):
            for keys, values, _ in iter_blocks(io.BytesIO(data)):
                pairs.extend(zip(keys, values))
        self.counters["reduce_input_records"] = len(pairs)
        # Sorted runs back to back: Timsort merges them in near-linear time.
        sort_pairs(pairs, cls)
        self._reduce_groups(_Counted(iter((pairs,))), cls, sink)

    def _reduce_external(self, segments: list[Any], cls: str, sink: _PairSink) -> None:
        """Copy each segment to local disk, then stream a k-way merge over them."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kubemr-reduce-", dir=self.spill_dir) as tmp:
            paths = []
            for i, data in enumerate(self._fetch_all(segments)):
                path = os.path.join(tmp, f"seg-{i:05d}")
                with open(path, "wb") as fh:
                    fh.write(data)
                paths.append(path)
                del data
            files = [open(p, "rb", buffering=1 << 20) for p in paths]  # noqa: SIM115
            try:
                counted = _Counted(
                    merge_sorted_blocks([read_segment_blocks(f) for f in files], cls)
                )
                reducer = self.fns.reducer
                if isinstance(reducer, Aggregate):
                    agg_name = _reduce_aggregate(reducer, self.fns.map_side_combiner())
                    groups = 0
                    for key, values in group_sorted(counted, cls):
                        # One group at a time, under one stand-in key: the key itself
                        # may be a list, which no dict can hold.
                        acc: dict[Any, Any] = {}
                        try:
                            fold_into(acc, ((None, v) for v in values), agg_name)
                        except Exception as exc:
                            where = f"reduce task {self.index}, key {key!r:.200}"
                            raise UserCodeFailure(f"reducer {reducer!r}", where, exc) from exc
                        sink.pending.append((key, acc[None]))
                        groups += 1
                        sink.flush_if_full()
                    self.counters["reduce_input_groups"] = groups
                else:
                    self._reduce_groups(counted, cls, sink)
                self.counters["reduce_input_records"] = counted.n
            finally:
                for f in files:
                    f.close()

    def _reduce_groups(self, pairs: _Counted, cls: str, sink: _PairSink) -> None:
        reducer = self.fns.reducer
        sort_values = self.fns.sort_values
        pending = sink.pending
        groups = 0
        if self.fns.reducer_cmd is not None:
            cmds = self._commands(f"reduce task {self.index}")
            keyed = group_sorted(pairs, cls)
            if sort_values:
                keyed = ((k, self._sorted_values(k, vals)) for k, vals in keyed)  # type: ignore[misc]
            for made in cmds.reducer(keyed):
                to_sink(sink, made)
            self.counters["reduce_input_groups"] = cmds.groups
            return
        if reducer is None and not sort_values:
            # Identity: the merged pairs are the output; only the groups are counted.
            self.counters["reduce_input_groups"] = _pass_through(pairs.batches(), cls, sink)
            return
        if reducer is None:  # identity with sorted values
            for key, values in group_sorted(pairs, cls):
                vals = self._sorted_values(key, values) if sort_values else values
                pending.extend((key, v) for v in vals)
                groups += 1
                if len(pending) >= OUTPUT_BATCH:
                    sink.flush()
                    pending = sink.pending
            self.counters["reduce_input_groups"] = groups
            return
        trusted = yields_only_pairs(reducer)
        # Plain keys in their natural order, values as they come: itertools.groupby's
        # groups themselves, without group_sorted's generator around them (a tenth of
        # a reduce task whose keys are all distinct, as in a sort or a dedup).
        grouped = cls != KEY_CLASS_MIXED and not sort_values
        keyed: Iterable[tuple[Any, Any]]
        if grouped:
            keyed = itertools.groupby(pairs, _first)
        else:
            keyed = group_sorted(pairs, cls)
            if sort_values:
                keyed = ((k, self._sorted_values(k, vals)) for k, vals in keyed)
        # A reducer proven to yield only pairs gets a loop without the per-group check:
        # one loop for both took 2.5 % longer on a 1 GB sort's reduce task (5 M groups).
        if trusted:
            second = _second
            for key, values in keyed:
                try:
                    pending.extend(reducer(key, map(second, values) if grouped else values))
                except Interrupted:  # a signal to the process, not an error of user code
                    raise
                except USER_ERRORS as exc:
                    raise self._reducer_failure(key, exc) from exc
                groups += 1
                if len(pending) >= OUTPUT_BATCH:
                    sink.flush()
                    pending = sink.pending
            self.counters["reduce_input_groups"] = groups
            return
        for key, values in keyed:
            start = len(pending)
            try:
                pending.extend(reducer(key, map(_second, values) if grouped else values))
            except Interrupted:  # a signal to the process, not an error of user code
                raise
            except USER_ERRORS as exc:
                raise self._reducer_failure(key, exc) from exc
            for i in range(start, len(pending)):
                if not is_pair(pending[i]):
                    raise self._reducer_failure(key, NotAPairError(pending[i], "reducer"))
            groups += 1
            if len(pending) >= OUTPUT_BATCH:
                sink.flush()
                pending = sink.pending
        self.counters["reduce_input_groups"] = groups

    def _reducer_failure(self, key: Any, exc: Exception) -> UserCodeFailure:
        """The reducer raised ``exc`` (or yielded what ``exc`` describes) for ``key``."""
        where = f"reduce task {self.index}, key {key!r:.200}"
        return UserCodeFailure("reducer", where, exc, raised=not isinstance(exc, NotAPairError))

    def _sorted_values(self, key: Any, values: Iterable[Any]) -> list[Any]:
        try:
            return sorted_values(values)
        except NaNValuesError as exc:
            where = f"reduce task {self.index}, key {key!r:.200}"
            raise UserCodeFailure("SORT_VALUES", where, exc, raised=False) from None

    def _fold(self, acc: dict[Any, Any], keys: list[Any], values: list[Any], agg: str) -> int:
        """Fold a block into a built-in reducer's accumulators, or fail naming the key whose
        values it cannot fold (MIN over ints from one map task and strs from another)."""
        try:
            return fold_into(acc, zip(keys, values), agg)
        except Exception as exc:
            where = f"reduce task {self.index}"
            for k, v in zip(keys, values):
                try:
                    tk = table_key(k)
                    fold_into({tk: acc[tk]} if tk in acc else {}, [(tk, v)], agg)
                except Exception:
                    where += f", key {k!r:.200}"
                    break
            raise UserCodeFailure(f"reducer {self.fns.reducer!r}", where, exc) from exc


def _pass_through(batches: Iterable[list[tuple[Any, Any]]], cls: str, sink: _PairSink) -> int:
    """Write batches of key-sorted pairs to the sink as they come; return the number of
    distinct keys (counted in C: one more wherever a key differs from the one before)."""
    groups = 0
    last: list[Any] = []  # the previous batch's last key, if any
    for batch in batches:
        if not batch:
            continue
        keys = list(map(_first, batch))
        if cls == KEY_CLASS_MIXED:
            keys = list(map(order_key, keys))
        groups += list(map(ne, keys[1:], keys[:-1])).count(True)
        groups += 0 if last and last[0] == keys[0] else 1
        last = keys[-1:]
        for i in range(0, len(batch), OUTPUT_BATCH):
            sink.pending.extend(batch[i : i + OUTPUT_BATCH])
            sink.flush()
    return groups


class _Counted:
    """The pairs of merged batches, counted a batch at a time; iterated pair by pair, or
    batch by batch with :meth:`batches`."""

    def __init__(self, batches: Iterator[list[Any]]) -> None:
        self._batches = batches
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        return itertools.chain.from_iterable(self.batches())

    def batches(self) -> Iterator[list[Any]]:
        for batch in self._batches:
            self.n += len(batch)
            yield batch


def _reduce_aggregate(reducer: Aggregate, combiner: Any) -> str:
    """How a built-in reducer folds its input: after a COUNT combiner the values are
    partial counts, which add up (``sum``); otherwise the reducer's own fold."""
    if reducer.name == "count" and isinstance(combiner, Aggregate) and combiner.name == "count":
        return "sum"
    return reducer.name


def decode_pairs(data: bytes) -> list[tuple[Any, Any]]:
    """All pairs of a run of blocks (used by tests and tools)."""
    pairs: list[tuple[Any, Any]] = []
    for keys, values, _ in iter_blocks(io.BytesIO(data)):
        pairs.extend(zip(keys, values))
    return pairs
