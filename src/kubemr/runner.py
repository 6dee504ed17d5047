"""The local runner: plans a job and runs its tasks on a process pool on this machine.

It runs exactly the task code a Kubernetes pod runs (``kubemr.task.run_task``): every
worker loads the plan and the job's code from the work dir, and commits through
markers. Only the scheduling differs: here a process pool, there one Indexed Job per
wave.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import pickle
import queue
import re
import select
import shutil
import signal
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

from kubemr import storage
from kubemr.errors import (
    InputError,
    Interrupted,
    JobFailed,
    OutputError,
    TaskFailure,
)
from kubemr.formats import (
    CSV,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    SplitReader,
    compression_of,
    output_line_encoder,
    read_csv_header,
)
from kubemr.job import Aggregate, MapReduce, MRStep, job_steps
from kubemr.keys import order_key
from kubemr.loader import dump_job_class
from kubemr.machine import available_cpus
from kubemr.output import OutputClaim, check_apart, discard_staging, publish
from kubemr.plan import (
    Plan,
    StepPlan,
    effective_split_size,
    internal_splits,
    make_splits,
    range_boundaries,
    task_name,
)
from kubemr.progress import Reporter
from kubemr.spec import LocalOptions
from kubemr.storage import ObjectInfo, StorageError, StorageOptions
from kubemr.task import MAP, REDUCE, TaskError, TaskResult, run_task, write_json

DEFAULT_SPLIT_SIZE = 64 << 20
PREFLIGHT_RECORDS = 200
PREFLIGHT_PAIRS = 1000
"""The preflight checks this many pairs of the first records' mapper output, no more."""
SAMPLE_PAIRS = 20_000
"""Keys sampled per split for a total order."""
EXIT_DRIVER_GONE = 70
"""How a worker exits when its driver process is gone."""


MAX_WORKERS_PER_CPU = 4
"""More worker processes than this per CPU only adds memory and start-up time."""


def run_job(
    job_cls: type[MapReduce], config: LocalOptions, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Run a job to completion; return the ``_SUCCESS`` summary or raise a KubemrError.

    SIGTERM and SIGHUP stop the job as Ctrl-C does (workers stopped, temporary files
    removed, no ``_SUCCESS``) when this runs on the main thread and the program has not
    set its own handlers; they surface as :class:`kubemr.errors.Interrupted`.
    """
    with _signals_interrupt():
        return _LocalJob(job_cls, config, reporter or Reporter()).run()


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def make_job_id(job_name: str, now: datetime | None = None) -> str:
    """A job id that is a valid Kubernetes name: lowercase, ``[a-z0-9-]``, 63 at most."""
    stem = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:36].strip("-") or "job"
    stamp = f"{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"
    return f"{stem}-{stamp}-{uuid.uuid4().hex[:6]}"


class _LocalJob:
    def __init__(self, job_cls: type[MapReduce], config: LocalOptions, reporter: Reporter) -> None:
        self.job_cls = job_cls
        self.config = config
        self.reporter = reporter
        self.warnings: list[str] = []
        self.workers = self._worker_count()
        self.options = StorageOptions(
            s3_endpoint=config.s3_endpoint, max_pool_connections=max(16, 4 * self.workers)
        )
        self.attempts_total = 0
        self.attempts_failed = 0
        self.failures: list[dict[str, str]] = []
        self.results: list[TaskResult] = []
        self.step_stats: list[dict[str, Any]] = []
        self.skipped_inputs: list[str] = []

    def _worker_count(self) -> int:
        cpus = available_cpus()
        asked = self.config.workers
        if asked is None:
            return cpus
        limit = MAX_WORKERS_PER_CPU * cpus
        if asked > limit:
            self._warn(
                f"--workers {asked} is more than {MAX_WORKERS_PER_CPU} per available CPU "
                f"({cpus}); using {limit}"
            )
            return limit
        return asked

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        self.reporter.message(f"[yellow]kubemr: {text}[/yellow]")

    # -- the whole job ----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.time()
        cfg = self.config
        job = self.job_cls()
        job.params = dict(cfg.params)
        steps = job_steps(job)
        input_format = cfg.input_format or self.job_cls.INPUT_FORMAT or "text"
        output_format = cfg.output_format or self.job_cls.OUTPUT_FORMAT or "jsonl"
        if input_format not in INPUT_FORMATS:
            raise InputError(
                f"unknown input format {input_format!r}: use {', '.join(INPUT_FORMATS)}"
            )
        if output_format not in OUTPUT_FORMATS:
            raise OutputError(
                f"unknown output format {output_format!r}: use {', '.join(OUTPUT_FORMATS)}"
            )
        files = self._resolve_inputs()
        out_url = cfg.output.rstrip("/")
        check_apart(out_url, cfg.inputs, files)
        job_code = dump_job_class(self.job_cls)

        reducers = cfg.reducers
        if reducers is None:
            # One reducer per worker, but no more than the input needs: three lines of
            # input make one part file, not one per core.
            total = sum(f.size for f in files)
            reducers = max(1, min(self.workers, math.ceil(total / DEFAULT_SPLIT_SIZE)))
        step_plans = []
        for i, step in enumerate(steps):
            total_order = self.job_cls.TOTAL_ORDER and i == len(steps) - 1
            if reducers == 0 or (not step.has_reducer() and not total_order):
                r = 0
            else:
                r = step.reducers or reducers
            step_plans.append(StepPlan(i, r, total_order=total_order and r > 0))

        own_work_dir = cfg.work_dir is None
        if cfg.work_dir is not None:
            storage.store_for(cfg.work_dir, self.options).check_access(cfg.work_dir, write=True)
        work_root = cfg.work_dir or tempfile.mkdtemp(prefix="kubemr-work-")
        job_id = make_job_id(self.job_cls.__name__)
        plan = Plan(
            job_id=job_id,
            job_name=self.job_cls.__name__,
            work_url=storage.join(work_root, job_id),
            output_url=out_url,
            input_format=input_format,
            output_format=output_format,
            steps=step_plans,
            memory=cfg.memory,
            chunk_bytes=cfg.chunk_bytes,
            skip_bad_records=cfg.skip_bad_records,
            s3_endpoint=cfg.s3_endpoint,
            created=datetime.now(UTC).isoformat(),
            params=dict(cfg.params),
        )
        self.plan = plan
        plan_url = plan.url("plan.json")
        claim = OutputClaim(out_url, job_id, self.options)
        succeeded = False
        try:
            claim.acquire(cfg.overwrite)
            storage.write_bytes(plan.job_code_url(), job_code, self.options)
            storage.write_bytes(plan_url, plan.to_json().encode(), self.options)
            # Workers start (and import) while this process plans and runs the preflight.
            with _WorkerPool(self.workers) as pool:
                splits = self._first_splits(files, input_format)
                self._preflight(job, steps, splits)
                for i in range(len(steps)):
                    splits = self._run_step(pool, plan_url, i, steps[i], splits)
            summary = self._commit(started, files, job_id, claim)
            succeeded = True
        finally:
            if not succeeded:
                discard_staging(claim)
            claim.finish("succeeded" if succeeded else "failed")
            claim.release()
            if not cfg.keep_work:
                self._cleanup(plan.work_url)
                if own_work_dir:
                    shutil.rmtree(work_root, ignore_errors=True)
            self.reporter.close()
        return summary

    # -- inputs -----------------------------------------------------------------------
    def _resolve_inputs(self) -> list[ObjectInfo]:
        if not self.config.inputs:
            raise InputError("no input given: pass --input PATH (a file, directory or glob)")
        files: list[ObjectInfo] = []
        seen: set[Any] = set()
        for pattern in self.config.inputs:
            skipped: list[str] = []
            try:
                store = storage.store_for(pattern, self.options)
                if storage.is_remote(pattern):
                    store.check_access(pattern, write=False)
                matched = next(
                    iter(storage.expand_inputs([pattern], self.options, skipped=skipped))
                )[1]
            except FileNotFoundError:
                raise InputError(f"input {pattern} does not exist") from None
            except PermissionError as exc:
                raise InputError(f"input {pattern} is not readable: {exc}") from None
            except StorageError as exc:
                raise InputError(f"input {pattern}: {exc}") from None
            except OSError as exc:
                raise InputError(f"input {pattern}: {exc}") from None
            for url in skipped:
                if url not in self.skipped_inputs:
                    self.skipped_inputs.append(url)
                    self._warn(
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
                    files.append(info)
        for info in files:
            if not storage.is_remote(info.url) and not os.access(
                storage.local_path(info.url), os.R_OK
            ):
                raise InputError(f"input file {info.url} is not readable (check its permissions)")
        return files

    # -- planning ---------------------------------------------------------------------------
    def _first_splits(self, files: list[ObjectInfo], fmt: str) -> list[Any]:
        cfg = self.config
        total = sum(f.size for f in files)
        split_size = effective_split_size(
            total,
            DEFAULT_SPLIT_SIZE if cfg.split_size is None else cfg.split_size,
            self.workers,
            auto=cfg.split_size is None,
        )
        headers = {}
        if fmt == CSV:
            for f in files:
                if f.size:
                    store = storage.store_for(f.url, self.options)
                    headers[f.url] = read_csv_header(store, f.url, compression_of(f.url))
        return make_splits(files, split_size, fmt, compression_of, headers)

    def _preflight(self, job: MapReduce, steps: list[MRStep], splits: list[Any]) -> None:
        """Run the mapper on the first records in this process, so that a broken mapper
        or a key that cannot be shuffled or written fails before any task starts."""
        if not splits:
            return
        step = steps[0]
        split = splits[0]
        store = storage.store_for(split.url, self.options)
        reader = SplitReader(store, split, 64 << 10, self.config.skip_bad_records)
        try:
            chunk = next(iter(reader.chunks()), None)
        except Exception as exc:
            raise InputError(str(exc)) from None
        if chunk is None:
            return
        records = chunk.records[:PREFLIGHT_RECORDS]
        try:
            job.setup()
            if step.mapper_batch is not None:
                out = step.mapper_batch(records)
                produced = out.items() if isinstance(out, Mapping) else (out or ())
            else:
                mapper = step.mapper
                assert mapper is not None
                produced = itertools.chain.from_iterable(mapper(rec) for rec in records)
            # Only a bounded number of pairs: one long record can yield millions.
            pairs = list(itertools.islice(produced, PREFLIGHT_PAIRS))
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            if isinstance(exc, Interrupted):
                raise
            return  # the task will fail on the same record and say where, with retries
        to_output = self._keys_reach_output(steps)
        encode = output_line_encoder(self.plan.output_format) if to_output else None
        for pair in pairs:
            if type(pair) not in (tuple, list) or len(pair) != 2:
                raise JobFailed(
                    TaskFailure(
                        "preflight",
                        "-",
                        "user-code",
                        f"the mapper yielded {pair!r:.200} (a {type(pair).__name__}); it must "
                        "yield (key, value) pairs, e.g. `yield word, 1`",
                    )
                )
            key, value = pair
            try:
                pickle.dumps(key)
                pickle.dumps(value)
                order_key(key)
            except Exception as exc:
                raise JobFailed(
                    TaskFailure(
                        "preflight",
                        "-",
                        "user-code",
                        f"the mapper emitted key {key!r:.200} / value {value!r:.200}, which "
                        f"cannot be shuffled ({type(exc).__name__}: {exc}). Keys and values must "
                        "be picklable; use str, int, float, bytes, tuples or lists of them",
                    )
                ) from None
            if encode is not None:
                probe = [(key, value)] if to_output == "pairs" else [(key, 0)]
                try:
                    encode(probe)
                except (TypeError, ValueError) as exc:
                    what = "pair" if to_output == "pairs" else "key"
                    shown = probe[0] if to_output == "pairs" else key
                    raise JobFailed(
                        TaskFailure(
                            "preflight",
                            "-",
                            "user-code",
                            f"the mapper's {what} {shown!r:.200} cannot be written as "
                            f"{self.plan.output_format} output ({type(exc).__name__}: {exc}): "
                            "convert it in the job (e.g. bytes.decode()), or choose another "
                            "--output-format",
                        )
                    ) from None

    def _keys_reach_output(self, steps: list[MRStep]) -> str | None:
        """Whether the first step's map output reaches the job's output as it is:
        "pairs" (map-only), "keys" (a built-in or identity reducer), or None."""
        if len(steps) != 1:
            return None
        if self.plan.steps[0].reducers == 0:
            return "pairs"
        reducer = steps[0].reducer
        if reducer is None or isinstance(reducer, Aggregate):
            return "keys"
        return None

    def _sample_boundaries(
        self, plan: Plan, step_index: int, step: MRStep, splits: list[Any]
    ) -> None:
        """TOTAL_ORDER: sample keys from the step's input to cut even key ranges."""
        keys: list[Any] = []
        chosen = splits[:: max(1, len(splits) // 16)][:16]
        for split in chosen:
            reader = SplitReader(
                storage.store_for(split.url, self.options), split, 1 << 20, 1 << 30
            )
            chunk = next(iter(reader.chunks()), None)
            if chunk is None:
                continue
            records = chunk.records[:5000]
            try:
                if step.mapper_batch is not None:
                    out = step.mapper_batch(records)
                    produced = out.items() if isinstance(out, Mapping) else (out or ())
                elif step.mapper is not None:
                    mapper = step.mapper
                    produced = itertools.chain.from_iterable(mapper(rec) for rec in records)
                else:
                    produced = records
                keys.extend(k for k, _ in itertools.islice(produced, SAMPLE_PAIRS))
            except (Exception, SystemExit) as exc:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                raise JobFailed(
                    TaskFailure(
                        f"key sampling for the total order (step {step_index + 1})",
                        "-",
                        "user-code",
                        f"the mapper raised {type(exc).__name__}: {exc} while its keys were "
                        f"sampled from {split.describe()}",
                        tb,
                    )
                ) from None
        try:
            keys.sort(key=order_key)
        except Exception as exc:
            raise JobFailed(
                TaskFailure(
                    f"key sampling for the total order (step {step_index + 1})",
                    "-",
                    "user-code",
                    f"the sampled keys cannot be ordered ({type(exc).__name__}: {exc})",
                )
            ) from None
        boundaries = range_boundaries(keys, plan.steps[step_index].reducers)
        storage.write_bytes(plan.boundaries_url(step_index), pickle.dumps(boundaries), self.options)

    # -- running waves ----------------------------------------------------------------------
    def _run_step(
        self, pool: _WorkerPool, plan_url: str, i: int, step: MRStep, splits: list[Any]
    ) -> list[Any]:
        plan = self.plan
        step_plan = plan.steps[i]
        step_plan.maps = len(splits)
        write_json(plan.splits_url(i), [s.to_json() for s in splits], self.options)
        if step_plan.total_order and splits:
            self._sample_boundaries(plan, i, step, splits)
        label = f"step {i + 1} " if len(plan.steps) > 1 else ""
        t0 = time.monotonic()
        total_bytes = sum(s.end - s.start for s in splits)
        maps = self._run_wave(pool, plan_url, i, MAP, len(splits), f"{label}map", total_bytes)
        t1 = time.monotonic()
        skipped = sum(r.counters.get("kubemr", {}).get("map_bad_records_skipped", 0) for r in maps)
        if skipped > self.config.skip_bad_records:
            raise JobFailed(
                TaskFailure(
                    f"{label}map",
                    "-",
                    "bad-record",
                    f"{skipped} bad records were skipped in all, more than --skip-bad-records "
                    f"{self.config.skip_bad_records}",
                )
            )
        outputs = maps
        if step_plan.reducers > 0:
            write_json(plan.map_outputs_url(i), [r.to_json() for r in maps], self.options)
            shuffle_bytes = sum(r.output_bytes for r in maps)
            outputs = self._run_wave(
                pool, plan_url, i, REDUCE, step_plan.reducers, f"{label}reduce", shuffle_bytes
            )
        self.step_stats.append(
            {
                "step": i,
                "maps": len(splits),
                "reduces": step_plan.reducers,
                "map_seconds": round(t1 - t0, 3),
                "reduce_seconds": round(time.monotonic() - t1, 3),
            }
        )
        if plan.is_last(i):
            return []
        return internal_splits([ObjectInfo(r.output_url, r.output_bytes) for r in outputs])

    def _run_wave(
        self,
        pool: _WorkerPool,
        plan_url: str,
        step: int,
        wave: str,
        count: int,
        label: str,
        total_bytes: int,
    ) -> list[TaskResult]:
        reporter = self.reporter
        reporter.wave_started(label, count, total_bytes)
        results: dict[int, TaskResult] = {}
        attempts = dict.fromkeys(range(count), 0)
        pending: dict[Future[TaskResult], tuple[int, int]] = {}
        steps = len(self.plan.steps)

        def submit(index: int) -> None:
            attempts[index] += 1
            self.attempts_total += 1
            attempt = f"a{attempts[index]}"
            fut, generation = pool.submit(plan_url, step, wave, index, attempt)
            pending[fut] = (index, generation)

        for index in range(count):
            submit(index)
        stop = threading.Event()
        drainer = threading.Thread(target=pool.drain_progress, args=(reporter, stop), daemon=True)
        drainer.start()
        try:
            while pending:
                done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    index, generation = pending.pop(fut)
                    try:
                        result = fut.result()
                    except TaskError as exc:
                        self._failed(exc.failure, attempts[index], submit, index)
                        continue
                    except BrokenProcessPool:
                        failure = TaskFailure(
                            task_name(step, steps, wave, index),
                            f"a{attempts[index]}",
                            "infrastructure",
                            "the worker process died (killed, or out of memory? try a smaller "
                            "--memory or fewer --workers)",
                        )
                        pool.restart(generation)
                        self._failed(failure, attempts[index], submit, index)
                        continue
                    results[index] = result
                    self.results.append(result)
                    reporter.task_done()
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown_now()
            raise
        finally:
            stop.set()
            drainer.join()
            pool.flush_progress(reporter)
        reporter.wave_finished()
        return [results[i] for i in range(count)]

    def _failed(
        self, failure: TaskFailure, attempt: int, submit: Callable[[int], None], index: int
    ) -> None:
        self.attempts_failed += 1
        self.failures.append(failure.to_json())
        limit = self.config.max_attempts
        if failure.retryable and attempt < limit:
            self.reporter.message(
                f"[yellow]{failure.task} attempt {failure.attempt} failed: "
                f"{failure.message.splitlines()[0][:300]} — retrying ({attempt + 1} of "
                f"{limit})[/yellow]"
            )
            submit(index)
            return
        if failure.retryable and attempt > 1:
            failure.message += (
                f" [failed on all {attempt} attempts; every failure is retried up to "
                "--max-attempts times, as it may depend on the machine]"
            )
        raise JobFailed(failure)

    # -- commit -----------------------------------------------------------------------------
    def _commit(
        self, started: float, files: list[ObjectInfo], job_id: str, claim: OutputClaim
    ) -> dict[str, Any]:
        plan = self.plan
        last = len(plan.steps) - 1
        final = [
            r
            for r in self.results
            if r.step == last and (r.wave == REDUCE or plan.steps[last].reducers == 0)
        ]
        final.sort(key=lambda r: r.index)
        out = plan.output_url
        counters: dict[str, dict[str, int]] = {}
        for r in self.results:
            for group, values in r.counters.items():
                target = counters.setdefault(group, {})
                for name, n in values.items():
                    target[name] = target.get(name, 0) + n
        requests: dict[str, int] = {}
        moved = {"bytes_read": 0, "bytes_written": 0}
        for snap in [r.storage for r in self.results] + [storage.all_stats()]:
            for kind, n in snap.get("requests", {}).items():
                requests[kind] = requests.get(kind, 0) + n
            for k in moved:
                moved[k] += snap.get(k, 0)
        kub = counters.get("kubemr", {})
        finished = time.time()
        summary = {
            "status": "succeeded",
            "job": plan.job_name,
            "job_id": job_id,
            "started": datetime.fromtimestamp(started, UTC).isoformat(),
            "finished": datetime.fromtimestamp(finished, UTC).isoformat(),
            "wall_seconds": round(finished - started, 3),
            "workers": self.workers,
            "input": {
                "files": len(files),
                "bytes": sum(f.size for f in files),
                "records": sum(
                    r.counters.get("kubemr", {}).get("map_input_records", 0)
                    for r in self.results
                    if r.step == 0 and r.wave == MAP
                ),
            },
            "output": {
                "url": out,
                "format": plan.output_format,
                "files": [{"name": f"part-{r.index:05d}", "bytes": r.output_bytes} for r in final],
                "records": kub.get("output_records", 0),
                "bytes": sum(r.output_bytes for r in final),
            },
            "steps": self.step_stats,
            "tasks": {
                "map": sum(s["maps"] for s in self.step_stats),
                "reduce": sum(s["reduces"] for s in self.step_stats),
            },
            "attempts": {"total": self.attempts_total, "failed": self.attempts_failed},
            "failed_attempts": self.failures,
            "bad_records": {
                "skipped": kub.get("map_bad_records_skipped", 0),
                "examples": [e for r in self.results for e in r.bad_records][:10],
            },
            "skipped_inputs": self.skipped_inputs,
            "warnings": self.warnings,
            "counters": counters,
            "storage": {"requests": requests, **moved},
        }
        parts = [(r.output_url, plan.published_part_url(r.index)) for r in final]
        try:
            publish(claim, parts, summary)
        except OSError as exc:
            raise OutputError(
                f"could not complete the output {out}: {exc}; no _SUCCESS was written, so "
                "the output is incomplete"
            ) from None
        return summary

    def _cleanup(self, work_url: str) -> None:
        try:
            storage.store_for(work_url, self.options).delete_prefix(work_url + "/")
        except Exception:
            pass


def _file_identity(url: str) -> Any:
    path = storage.local_path(url)
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


# --------------------------------------------------------------------------- the pool

_progress_queue: Any = None


def _init_worker(progress_queue: Any, environ: dict[str, str], driver_pid: int) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    # The forkserver was started by the first job of this process; workers must see
    # the environment as it is now (credentials, settings), as a fresh process would.
    os.environ.clear()
    os.environ.update(environ)
    _die_with(driver_pid)


def _die_with(driver_pid: int) -> None:
    """End this worker the moment the driver process ends, however it ends (SIGKILL
    included): a worker outliving its driver would go on taking tasks and writing."""
    try:
        fd = os.pidfd_open(driver_pid)
    except ProcessLookupError:
        os._exit(EXIT_DRIVER_GONE)
    except (AttributeError, OSError):
        fd = -1  # no pidfd (old kernel): poll the pid instead

    def watch() -> None:
        if fd >= 0:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(0.5)
                try:
                    os.kill(driver_pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(EXIT_DRIVER_GONE)

    threading.Thread(target=watch, name="kubemr-driver-watch", daemon=True).start()


def _warm_up() -> None:
    """Makes the pool start its processes now rather than at the first task."""


def _worker_run(plan_url: str, step: int, wave: str, index: int, attempt: str) -> TaskResult:
    """Runs in a worker process: one attempt, with progress sent to the parent."""
    q = _progress_queue
    pending = [0, 0]
    last = [time.monotonic()]

    def progress(nbytes: int, records: int) -> None:
        pending[0] += nbytes
        pending[1] += records
        now = time.monotonic()
        if q is not None and now - last[0] > 0.2:
            q.put((pending[0], pending[1]))
            pending[0] = pending[1] = 0
            last[0] = now

    storage.reset_stats()
    try:
        result = run_task(plan_url, step, wave, index, attempt, progress)
    finally:
        if q is not None and (pending[0] or pending[1]):
            q.put((pending[0], pending[1]))
    result.storage = storage.all_stats()
    return result


_launching = threading.local()
_original_preparation_data = multiprocessing.spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """What a new worker process is told to set up: for kubemr's own workers, never the
    user's ``__main__``. The job travels by cloudpickle, so re-running the user's script
    in every worker (what multiprocessing does by default) is never needed, and breaks a
    script that calls ``kubemr.map_reduce`` at top level without a ``__main__`` guard."""
    data = _original_preparation_data(name)
    if getattr(_launching, "active", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


multiprocessing.spawn.get_preparation_data = _preparation_data


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        _launching.active = True
        try:
            return multiprocessing.context.ForkServerProcess._Popen(process_obj)
        finally:
            _launching.active = False


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess


class _WorkerPool:
    """A process pool (forkserver: workers start clean, like pods) with a progress queue."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.ctx = _WorkerContext()
        self.ctx.set_forkserver_preload(["kubemr.task", "kubemr.runner"])
        self.queue = self.ctx.Queue()
        self.generation = 0
        self.pool = self._new_pool()
        for _ in range(workers):
            self.pool.submit(_warm_up)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self.ctx,
            initializer=_init_worker,
            initargs=(self.queue, dict(os.environ), os.getpid()),
        )

    def submit(
        self, plan_url: str, step: int, wave: str, index: int, attempt: str
    ) -> tuple[Future[TaskResult], int]:
        """Submit one attempt; return its future and the pool generation running it."""
        try:
            fut = self.pool.submit(_worker_run, plan_url, step, wave, index, attempt)
        except BrokenProcessPool:
            self.restart(self.generation)
            fut = self.pool.submit(_worker_run, plan_url, step, wave, index, attempt)
        return fut, self.generation

    def restart(self, generation: int) -> None:
        """Replace a broken pool once, however many of its futures report it."""
        if generation != self.generation:
            return
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        self.generation += 1

    def drain_progress(self, reporter: Reporter, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                nbytes, records = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            reporter.advance(nbytes, records)

    def flush_progress(self, reporter: Reporter) -> None:
        for _ in itertools.count():
            try:
                nbytes, records = self.queue.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            reporter.advance(nbytes, records)

    def shutdown_now(self) -> None:
        procs = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    def __enter__(self) -> _WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.queue.close()
