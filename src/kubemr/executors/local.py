"""The local executor: a pool of worker processes (forkserver) that run task attempts.

Workers start clean, like pods: each loads the plan and the job's code from the work dir
and runs ``kubemr.task.run_task``, the same function a worker pod runs. They end the
moment their driver ends, however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.context
import multiprocessing.spawn
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from kubemr.coordinator import Stage
from kubemr.errors import JobFailed, TaskFailure
from kubemr.executors import forkserver
from kubemr.plan import Plan, task_name
from kubemr.progress import Reporter
from kubemr.results import TaskResult
from kubemr.storage import StorageOptions
from kubemr.task import TaskError, run_task, write_json

EXIT_DRIVER_GONE = 70
"""How a worker exits when its driver process is gone."""

PROGRESS_SECONDS = 0.2
"""How often the driver reads the workers' progress while a wave runs."""


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

    try:
        return run_task(plan_url, step, wave, index, attempt, progress)
    finally:
        if q is not None and (pending[0] or pending[1]):
            q.put((pending[0], pending[1]))


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


class WorkerPool:
    """A process pool (forkserver: workers start clean, like pods) with a progress queue."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.ctx = _WorkerContext()
        self.ctx.set_forkserver_preload(forkserver.PRELOAD)
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

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.queue.close()


def record_failure(
    plan: Plan, stage: Stage, index: int, failure: TaskFailure, submitted: float
) -> None:
    """The failure marker of an attempt whose process died before it could write one.
    What the process measured died with it: the attempt ran between its submission and
    now (``started_estimated``), and its CPU and memory are unknown (0)."""
    url = plan.marker_url(stage.step, stage.kind.value, index, failure.attempt, failed=True)
    marker = {
        **failure.to_json(),
        "step": stage.step,
        "wave": stage.kind.value,
        "index": index,
        "started": submitted,
        "started_estimated": True,
        "finished": time.time(),
        "worker": "",
        "node": None,
    }
    with contextlib.suppress(Exception):
        write_json(url, marker, StorageOptions(s3_endpoint=plan.s3_endpoint))


class LocalExecutor:
    """Runs the waves of a job on a :class:`WorkerPool`, retrying failed attempts up to
    ``max_attempts`` (what a wave Job's ``backoffLimitPerIndex`` does on Kubernetes)."""

    def __init__(self, workers: int, reporter: Reporter, max_attempts: int) -> None:
        self.pool = WorkerPool(workers)
        self.reporter = reporter
        self.max_attempts = max_attempts
        self._last: list[TaskResult] = []

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.__exit__(*exc)

    def run_wave(self, plan: Plan, stage: Stage, total_bytes: int | None) -> list[TaskResult]:
        """Every task of a wave, each committed once; raise JobFailed when one cannot be."""
        if total_bytes is None:  # a later wave reads what the wave before it wrote
            total_bytes = sum(r.output_bytes for r in self._last)
        plan_url = plan.url("plan.json")
        step, wave, count = stage.step, stage.kind.value, stage.tasks
        steps = len(plan.steps)
        pool = self.pool
        reporter = self.reporter
        reporter.wave_started(stage.label(steps), count, total_bytes)
        results: dict[int, TaskResult] = {}
        attempts = dict.fromkeys(range(count), 0)
        pending: dict[Future[TaskResult], tuple[int, int, float]] = {}

        def submit(index: int) -> None:
            attempts[index] += 1
            attempt = f"a{attempts[index]}"
            submitted = time.time()
            fut, generation = pool.submit(plan_url, step, wave, index, attempt)
            pending[fut] = (index, generation, submitted)

        for index in range(count):
            submit(index)
        try:
            while pending:
                # Progress is read between waits, not by a thread: a thread blocked on the
                # queue held the end of every wave back by up to its poll interval.
                done, _ = wait(list(pending), timeout=PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
                pool.flush_progress(reporter)
                for fut in done:
                    index, generation, submitted = pending.pop(fut)
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
                        # The process could not record its own failure: the driver does,
                        # as the controller learns of a pod that died.
                        record_failure(plan, stage, index, failure, submitted)
                        self._failed(failure, attempts[index], submit, index)
                        continue
                    results[index] = result
                    reporter.task_done()
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown_now()
            raise
        finally:
            pool.flush_progress(reporter)
        reporter.wave_finished()
        self._last = [results[i] for i in range(count)]
        return self._last

    def _failed(
        self, failure: TaskFailure, attempt: int, submit: Callable[[int], None], index: int
    ) -> None:
        limit = self.max_attempts
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
