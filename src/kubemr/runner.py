"""The local runner: plans a job and runs its tasks on a process pool on this machine.

It runs exactly the task code a Kubernetes pod runs (``kubemr.task.run_task``): every
worker loads the plan and the job's code from the work dir, and commits through
markers. Only the scheduling differs: here a process pool, there one Indexed Job per
wave.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubemr import storage
from kubemr.errors import InputError, JobFailed, OutputError, TaskFailure
from kubemr.formats import (
    CSV,
    DEFAULT_CHUNK_BYTES,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    SplitReader,
    compression_of,
    read_csv_header,
)
from kubemr.job import MapReduce, MRStep, job_steps
from kubemr.keys import order_key
from kubemr.loader import dump_job_class
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
from kubemr.storage import ObjectInfo, StorageError, StorageOptions
from kubemr.task import MAP, REDUCE, TaskError, TaskResult, run_task, write_json

DEFAULT_SPLIT_SIZE = 64 << 20
DEFAULT_MEMORY = 512 << 20


@dataclass
class RunConfig:
    """Everything ``kubemr run`` takes (see ``kubemr run --help``)."""

    inputs: list[str]
    output: str
    reducers: int | None = None  # None: one per worker
    workers: int | None = None  # None: all cores
    split_size: int | None = None  # None: 64 MiB, lowered for small inputs
    memory: int = DEFAULT_MEMORY
    input_format: str | None = None
    output_format: str | None = None
    max_attempts: int = 3
    overwrite: bool = False
    work_dir: str | None = None
    keep_work: bool = False
    skip_bad_records: int = 0
    s3_endpoint: str | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    params: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def run_job(
    job_cls: type[MapReduce], config: RunConfig, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Run a job to completion; return the ``_SUCCESS`` summary or raise a KubemrError."""
    return _LocalJob(job_cls, config, reporter or Reporter()).run()


class _LocalJob:
    def __init__(self, job_cls: type[MapReduce], config: RunConfig, reporter: Reporter) -> None:
        self.job_cls = job_cls
        self.config = config
        self.reporter = reporter
        self.workers = max(1, config.workers or os.cpu_count() or 1)
        self.options = StorageOptions(
            s3_endpoint=config.s3_endpoint, max_pool_connections=max(16, 4 * self.workers)
        )
        self.attempts_total = 0
        self.attempts_failed = 0
        self.failures: list[dict[str, str]] = []
        self.results: list[TaskResult] = []
        self.step_stats: list[dict[str, Any]] = []

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
        self._check_output()
        job_code = dump_job_class(self.job_cls)

        reducers = cfg.reducers if cfg.reducers is not None else self.workers
        step_plans = []
        for i, step in enumerate(steps):
            total_order = self.job_cls.TOTAL_ORDER and i == len(steps) - 1
            if reducers == 0 or (not step.has_reducer() and not total_order):
                r = 0
            else:
                r = step.reducers or reducers
            step_plans.append(StepPlan(i, r, total_order=total_order and r > 0))

        own_work_dir = cfg.work_dir is None
        work_root = cfg.work_dir or tempfile.mkdtemp(prefix="kubemr-work-")
        stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
        job_id = f"{self.job_cls.__name__.lower()}-{stamp}-{uuid.uuid4().hex[:6]}"
        plan = Plan(
            job_id=job_id,
            job_name=self.job_cls.__name__,
            work_url=storage.join(work_root, job_id),
            output_url=cfg.output.rstrip("/"),
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
        try:
            storage.write_bytes(plan.job_code_url(), job_code, self.options)
            storage.write_bytes(plan_url, plan.to_json().encode(), self.options)
            # Workers start (and import) while this process plans and runs the preflight.
            with _WorkerPool(self.workers) as pool:
                splits = self._first_splits(files, input_format)
                self._preflight(job, steps[0], splits)
                self._delete_old_success()
                for i in range(len(steps)):
                    splits = self._run_step(pool, plan_url, i, steps[i], splits)
            summary = self._commit(started, files, job_id)
        finally:
            if not cfg.keep_work:
                self._cleanup(plan.work_url)
                if own_work_dir:
                    shutil.rmtree(work_root, ignore_errors=True)
            self.reporter.close()
        return summary

    # -- inputs and outputs -----------------------------------------------------------
    def _resolve_inputs(self) -> list[ObjectInfo]:
        if not self.config.inputs:
            raise InputError("no input given: pass --input PATH (a file, directory or glob)")
        files: list[ObjectInfo] = []
        seen: set[str] = set()
        for pattern in self.config.inputs:
            try:
                store = storage.store_for(pattern, self.options)
                if storage.is_remote(pattern):
                    store.check_access(pattern, write=False)
                matched = next(iter(storage.expand_inputs([pattern], self.options)))[1]
            except FileNotFoundError:
                raise InputError(f"input {pattern} does not exist") from None
            except PermissionError as exc:
                raise InputError(f"input {pattern} is not readable: {exc}") from None
            except StorageError as exc:
                raise InputError(f"input {pattern}: {exc}") from None
            if not matched:
                raise InputError(
                    f"input {pattern} matches no files (an empty directory or a glob with no match)"
                )
            for info in matched:
                if info.url not in seen:
                    seen.add(info.url)
                    files.append(info)
        for info in files:
            if not storage.is_remote(info.url) and not os.access(
                storage.local_path(info.url), os.R_OK
            ):
                raise InputError(f"input file {info.url} is not readable (check its permissions)")
        return files

    def _check_output(self) -> None:
        out = self.config.output.rstrip("/")
        store = storage.store_for(out, self.options)
        try:
            store.check_access(out, write=True)
        except StorageError as exc:
            raise OutputError(f"output {out}: {exc}") from None
        if not storage.is_remote(out) and os.path.isfile(storage.local_path(out)):
            raise OutputError(f"output {out} is a file; name a directory")
        existing = [o for o in store.list(out + "/")]
        if existing and not self.config.overwrite:
            raise OutputError(
                f"output {out} is not empty ({len(existing)} files): choose another "
                "directory, or pass --overwrite to replace its contents"
            )
        self._existing_output = existing

    def _delete_old_success(self) -> None:
        # A replaced output must not look complete while the new job runs.
        marker = storage.join(self.config.output.rstrip("/"), "_SUCCESS")
        storage.store_for(marker, self.options).delete(marker)

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

    def _preflight(self, job: MapReduce, step: MRStep, splits: list[Any]) -> None:
        """Run the mapper on the first records in this process, so that a broken mapper
        or an unpicklable key fails before any task starts."""
        if not splits:
            return
        split = splits[0]
        store = storage.store_for(split.url, self.options)
        reader = SplitReader(store, split, 64 << 10, self.config.skip_bad_records)
        try:
            chunk = next(iter(reader.chunks()), None)
        except Exception as exc:
            raise InputError(str(exc)) from None
        if chunk is None:
            return
        records = chunk.records[:200]
        try:
            job.setup()
            if step.mapper_batch is not None:
                out = step.mapper_batch(records)
                pairs = list(out.items()) if hasattr(out, "items") else list(out or ())
            else:
                pairs = [p for rec in records for p in step.mapper(rec)]  # type: ignore[misc]
        except (Exception, SystemExit):
            return  # the task will fail on the same record and say where, with retries
        for pair in pairs[:1000]:
            try:
                key, value = pair
            except (TypeError, ValueError):
                raise JobFailed(
                    TaskFailure(
                        "preflight",
                        "-",
                        "user-code",
                        f"the mapper yielded {pair!r:.200}; it must yield (key, value) pairs",
                    )
                ) from None
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
            if step.mapper_batch is not None:
                out = step.mapper_batch(records)
                pairs = list(out.items()) if hasattr(out, "items") else list(out or ())
            elif step.mapper is not None:
                pairs = [p for rec in records for p in step.mapper(rec)]
            else:
                pairs = records
            keys.extend(k for k, _ in pairs)
        keys.sort(key=order_key)
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
        if failure.retryable and attempt < self.config.max_attempts:
            self.reporter.message(
                f"[yellow]{failure.task} attempt {failure.attempt} failed: "
                f"{failure.message.splitlines()[0][:300]} — retrying[/yellow]"
            )
            submit(index)
            return
        raise JobFailed(failure)

    # -- commit -----------------------------------------------------------------------------
    def _commit(self, started: float, files: list[ObjectInfo], job_id: str) -> dict[str, Any]:
        plan = self.plan
        last = len(plan.steps) - 1
        final = [
            r
            for r in self.results
            if r.step == last and (r.wave == REDUCE or plan.steps[last].reducers == 0)
        ]
        final.sort(key=lambda r: r.index)
        keep = {r.output_url for r in final}
        out = plan.output_url
        store = storage.store_for(out, self.options)
        for info in self._existing_output:
            if info.url not in keep and not info.url.endswith("/_SUCCESS"):
                store.delete(info.url)
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
                "files": [
                    {"name": r.output_url.rsplit("/", 1)[-1], "bytes": r.output_bytes}
                    for r in final
                ],
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
            "counters": counters,
            "storage": {"requests": requests, **moved},
        }
        marker = storage.join(out, "_SUCCESS")
        storage.write_bytes(marker, json.dumps(summary, indent=2).encode(), self.options)
        return summary

    def _cleanup(self, work_url: str) -> None:
        try:
            storage.store_for(work_url, self.options).delete_prefix(work_url + "/")
        except Exception:
            pass


# --------------------------------------------------------------------------- the pool

_progress_queue: Any = None


def _init_worker(progress_queue: Any, environ: dict[str, str]) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    # The forkserver was started by the first job of this process; workers must see
    # the environment as it is now (credentials, settings), as a fresh process would.
    os.environ.clear()
    os.environ.update(environ)


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


class _WorkerPool:
    """A process pool (forkserver: workers start clean, like pods) with a progress queue."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.ctx = multiprocessing.get_context("forkserver")
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
            initargs=(self.queue, dict(os.environ)),
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
