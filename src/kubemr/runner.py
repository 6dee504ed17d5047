"""``kubemr run``: a whole job on this machine.

The driver walks the job's stages (:mod:`kubemr.coordinator`) as the Kubernetes
controller does, running each where it belongs: the plan and commit stages here
(:mod:`kubemr.planning`, :mod:`kubemr.commit`), the map and reduce waves on the local
process pool (:mod:`kubemr.executors.local`), with the same task code, markers and
commit as worker pods.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubemr import storage
from kubemr.commit import commit_job
from kubemr.coordinator import StageKind, StageState, StepShape, decide
from kubemr.errors import Interrupted, OutputError
from kubemr.executors.local import LocalExecutor
from kubemr.job import MapReduce
from kubemr.jobfiles import (
    LocalFile,
    Manifest,
    extra_files,
    local_files,
    needed_files,
    remove_scratch,
    shipped,
    upload,
)
from kubemr.machine import available_cpus
from kubemr.options import check_options
from kubemr.output import OutputClaim, discard_staging
from kubemr.planning import Inputs, Planner, make_job_id, new_plan, resolve_inputs
from kubemr.progress import Reporter
from kubemr.spec import LocalOptions
from kubemr.storage import StorageOptions

MAX_WORKERS_PER_CPU = 4
"""More worker processes than this per CPU only adds memory and start-up time."""

__all__ = ["make_job_id", "run_job"]


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

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        # Only where the program keeps Python's defaults: its own handlers stay its own.
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(sig) is default:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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

    def run(self) -> dict[str, Any]:
        started = time.time()
        stats_before = storage.all_stats()
        cfg = self.config
        # Before anything is listed or written: the typed options, and the files to ship.
        check_options(self.job_cls, cfg.params)
        files = local_files(needed_files(self.job_cls, cfg.params) + extra_files(cfg.files))
        inputs = resolve_inputs(cfg.inputs, self.options, self._warn)
        if cfg.work_dir is not None:
            storage.store_for(cfg.work_dir, self.options).check_access(cfg.work_dir, write=True)
        own_work_dir = cfg.work_dir is None
        work_root = cfg.work_dir or tempfile.mkdtemp(prefix="kubemr-work-")
        job_id = make_job_id(self.job_cls.__name__)
        work_url = storage.join(work_root, job_id)
        try:
            return self._run(started, stats_before, inputs, job_id, work_url, files)
        finally:
            if not cfg.keep_work:
                _cleanup(work_url, self.options)
                if own_work_dir:
                    shutil.rmtree(work_root, ignore_errors=True)
            remove_scratch(job_id)
            self.reporter.close()

    def _ship(self, files: list[LocalFile], work_url: str, job_id: str) -> Manifest:
        """The job's files, stored in its work dir by content, as every task reads them."""
        directory = storage.join(work_url, "files")
        upload(files, directory, self.options)
        return Manifest(shipped(files, directory), job_id, self.config.s3_endpoint)

    def _run(
        self,
        started: float,
        stats_before: dict[str, Any],
        inputs: Inputs,
        job_id: str,
        work_url: str,
        files: list[LocalFile],
    ) -> dict[str, Any]:
        cfg = self.config
        plan = new_plan(
            self.job_cls,
            cfg,
            job_id=job_id,
            work_url=work_url,
            inputs=inputs,
            parallelism=self.workers,
            s3_endpoint=cfg.s3_endpoint,
            chunk_bytes=cfg.chunk_bytes,
            files=self._ship(files, work_url, job_id) if files else None,
        )
        planner = Planner(
            self.job_cls,
            plan,
            inputs,
            self.options,
            split_size=cfg.split_size,
            parallelism=self.workers,
        )
        planner.check_output(cfg.inputs)
        claim = OutputClaim(plan.output_url, job_id, self.options)
        succeeded = False
        try:
            claim.acquire(cfg.overwrite)
            # Workers start (and import) while this process plans and runs the preflight.
            with LocalExecutor(self.workers, self.reporter, cfg.max_attempts) as executor:
                splits = planner.write()
                observed = {"plan": StageState(1)}
                shapes = [StepShape(s.maps or 0, s.reducers) for s in plan.steps]
                input_bytes = sum(s.end - s.start for s in splits)
                while True:
                    decision = decide(shapes, observed)
                    stage = decision.stage
                    if decision.action == "done" or stage is None:
                        break
                    if stage.kind is StageKind.COMMIT:
                        break  # committed below, once the pool is down
                    first_map = stage.kind is StageKind.MAP and stage.step == 0
                    results = executor.run_wave(
                        plan,
                        stage,
                        total_bytes=input_bytes if first_map else None,
                    )
                    observed[stage.name] = StageState(len(results))
            extra = {
                "started": started,
                "workers": self.workers,
                "input_files": len(inputs.files),
                "input_bytes": inputs.total_bytes,
                "skipped_inputs": inputs.skipped,
                "warnings": self.warnings,
                "storage": [_delta(stats_before, storage.all_stats())],
            }
            try:
                summary = commit_job(plan, self.options, claim, extra)
            except OSError as exc:
                raise OutputError(
                    f"could not complete the output {plan.output_url}: {exc}; no _SUCCESS "
                    "was written, so the output is incomplete"
                ) from None
            succeeded = True
        finally:
            if not succeeded:
                discard_staging(claim)
            claim.finish("succeeded" if succeeded else "failed")
            claim.release()
        return summary


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    from kubemr.task import stats_delta

    return stats_delta(before, after)


def _cleanup(work_url: str, options: StorageOptions) -> None:
    with contextlib.suppress(Exception):
        storage.store_for(work_url, options).delete_prefix(work_url + "/")
