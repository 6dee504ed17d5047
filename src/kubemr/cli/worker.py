"""``kubemr worker``: run one stage of a job (a task attempt, the plan or the commit), as
a worker pod does.

The pod contract (:mod:`kubemr.termination`): exit 0 when committed, 1 when another
attempt may succeed, 3 for bad input, 4 for code pickled by another version, 143 when
stopped by SIGTERM (uploads aborted); a compact JSON result or root cause in the
termination-message file (a MemoryError is reported as OutOfMemory, with the limit the
process ran under); the attempt's log copied to the work dir, so it outlives the pod.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import signal
import socket
import sys
import traceback
from typing import Annotated, Any, TextIO

import typer

from kubemr import storage, termination
from kubemr.errors import (
    BadRecordError,
    CodeIntegrityError,
    InputError,
    Interrupted,
    JobDefinitionError,
    JobFailed,
    KubemrError,
    OutputError,
    VersionSkew,
)
from kubemr.results import MAP, REDUCE
from kubemr.storage import StorageError, StorageOptions
from kubemr.task import AttemptStart, TaskError, run_task

TERMINATION_LOG = "/dev/termination-log"
LOG_TAIL_BYTES = 1 << 20
"""How much of an attempt's output is kept in the work dir."""
_STAGE = re.compile(r"^(plan|commit|(map|reduce)-(\d+))$")


def worker(
    work: Annotated[str, typer.Option(help="The job's work dir URL (it holds plan.json).")],
    stage: Annotated[str, typer.Option(help="plan, map-N, reduce-N or commit (N: the step).")],
    index: Annotated[
        int | None, typer.Option(help="Task index (default: $JOB_COMPLETION_INDEX).")
    ] = None,
    attempt: Annotated[
        str | None, typer.Option(help="Attempt id (default: the pod's name, or host-pid).")
    ] = None,
) -> None:
    """Run one stage of a job and commit it: what a worker pod runs.

    Example: kubemr worker --work /tmp/work/wc-20260101-000000-abc123 --stage map-0 --index 3
    """
    match = _STAGE.match(stage)
    if match is None:
        raise typer.BadParameter("--stage must be plan, map-N, reduce-N or commit")
    if index is None:
        index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    attempt = (
        attempt or os.environ.get("KUBEMR_POD_NAME") or (f"{socket.gethostname()}-{os.getpid()}")
    )
    base: dict[str, Any] = {"stage": stage, "index": index, "attempt": attempt}
    log = _Tee()
    signal.signal(signal.SIGTERM, _interrupt)
    code = termination.EXIT_OK
    message: dict[str, Any]
    with log.capturing():
        try:
            fields = _run(work, match, index, attempt)
            message = {"ok": True, **base, **fields}
        except BaseException as exc:
            code, message = _failure(exc, base)
            sys.stderr.write(message.get("message", "") + "\n")
            if message.get("traceback"):
                sys.stderr.write(message["traceback"] + "\n")
    log_url = _save_log(work, stage, index, attempt, log.text())
    if log_url and not message["ok"]:
        message["log"] = log_url
    _write_termination_message(message)
    if message["ok"]:
        sys.stderr.write(json.dumps(message) + "\n")
    raise typer.Exit(code)


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def _run(work: str, match: re.Match[str], index: int, attempt: str) -> dict[str, Any]:
    stage = match.group(1)
    if stage == "plan":
        from kubemr.stages import plan_stage

        spec = os.environ.get("KUBEMR_SPEC")
        if not spec:
            raise JobDefinitionError("the plan stage needs the job's spec in $KUBEMR_SPEC")
        return plan_stage(json.loads(spec))
    if stage == "commit":
        from kubemr.stages import commit_stage

        return commit_stage(work)
    wave = MAP if match.group(2) == "map" else REDUCE
    step = int(match.group(3))
    # This process runs one attempt: its record starts when the process (the container)
    # did, and counts the start-up's CPU too.
    since = AttemptStart.of_process()
    result = run_task(storage.join(work, "plan.json"), step, wave, index, attempt, since=since)
    kub = result.counters.get("kubemr", {})
    return {
        "records_in": kub.get("map_input_records", kub.get("reduce_input_records", 0)),
        "bytes_out": result.output_bytes,
        "seconds": round(result.seconds, 3),
    }


def _failure(exc: BaseException, base: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The exit code and termination message of a failed stage."""
    if isinstance(exc, Interrupted):
        return termination.EXIT_TERMINATED, {
            "ok": False,
            **base,
            "reason": termination.INTERRUPTED,
            "message": f"stopped by signal {exc.signum}",
        }
    if _memory_error(exc) is not None:
        return _out_of_memory(exc, base)
    if isinstance(exc, TaskError):
        failure = exc.failure
        if failure.kind == "bad-record":
            return termination.EXIT_BAD_INPUT, {
                "ok": False,
                **base,
                "reason": termination.BAD_INPUT,
                "message": failure.message,
            }
        if failure.kind == "version-skew":
            reason, code = termination.VERSION_SKEW, termination.EXIT_VERSION_SKEW
        elif failure.kind == "code-integrity":
            reason, code = termination.CODE_INTEGRITY, termination.EXIT_VERSION_SKEW
        elif failure.kind == "user-code":
            reason, code = termination.USER_CODE, termination.EXIT_RETRY
        elif failure.kind == "storage":
            reason, code = termination.STORAGE, termination.EXIT_RETRY
        else:
            reason, code = termination.INFRASTRUCTURE, termination.EXIT_RETRY
        return code, {
            "ok": False,
            **base,
            "reason": reason,
            "message": failure.message,
            "traceback": failure.traceback,
        }
    reasons: list[tuple[type[BaseException], str, int]] = [
        (CodeIntegrityError, termination.CODE_INTEGRITY, termination.EXIT_VERSION_SKEW),
        (VersionSkew, termination.VERSION_SKEW, termination.EXIT_VERSION_SKEW),
        (BadRecordError, termination.BAD_INPUT, termination.EXIT_BAD_INPUT),
        (InputError, termination.INPUT, termination.EXIT_BAD_INPUT),
        (JobDefinitionError, termination.DEFINITION, termination.EXIT_BAD_INPUT),
        (OutputError, termination.OUTPUT, termination.EXIT_BAD_INPUT),
        (StorageError, termination.STORAGE, termination.EXIT_RETRY),
    ]
    if isinstance(exc, JobFailed):
        # The plan stage's checks (the preflight, sampling) are deterministic: no retry.
        bad = exc.failure.kind == "bad-record"
        return termination.EXIT_BAD_INPUT, {
            "ok": False,
            **base,
            "reason": termination.BAD_INPUT if bad else termination.USER_CODE,
            "message": exc.failure.describe(),
            "traceback": exc.failure.traceback,
        }
    for kind, reason, code in reasons:
        if isinstance(exc, kind):
            return code, {"ok": False, **base, "reason": reason, "message": str(exc)}
    if isinstance(exc, typer.Exit):
        raise exc
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    what = termination.INFRASTRUCTURE if not isinstance(exc, KubemrError) else type(exc).__name__
    return termination.EXIT_RETRY, {
        "ok": False,
        **base,
        "reason": what,
        "message": f"{type(exc).__name__}: {exc}",
        "traceback": tb,
    }


def _memory_error(exc: BaseException) -> MemoryError | None:
    """The MemoryError behind ``exc``: itself, its cause or context, or the user code's
    exception a task failure wraps."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, MemoryError):
            return err
        todo.extend((err.__cause__, err.__context__, getattr(err, "cause", None)))
    return None


def _out_of_memory(exc: BaseException, base: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A stage that ran out of memory: the task, the limit it ran under and what to do.
    Retryable: on a cluster another attempt may find a node with room."""
    if isinstance(exc, TaskError):
        detail, trace = exc.failure.message, exc.failure.traceback
    else:
        detail = ""
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    limit = memory_limit()
    message = termination.out_of_memory_message(
        termination.task_name(base["stage"], base["index"]),
        termination.quantity(limit) if limit else None,
        "MemoryError",
        detail,
    )
    _release_frames(exc)
    return termination.EXIT_RETRY, {
        "ok": False,
        **base,
        "reason": termination.OUT_OF_MEMORY,
        "message": message,
        "traceback": trace,
    }


def _release_frames(exc: BaseException) -> None:
    """Drop the local variables of the failed frames (what filled the memory), so that
    the log and the report can still be written."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if err.__traceback__ is not None:
            traceback.clear_frames(err.__traceback__)
        todo.extend((err.__cause__, err.__context__, getattr(err, "cause", None)))


CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit() -> int | None:
    """The memory this process may use, in bytes: its address-space limit (how a node
    without cgroups enforces limits.memory), else its cgroup's limit; None when neither
    is set."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft > 0:
        return soft
    for path in CGROUP_MEMORY_LIMITS:
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:  # cgroup v1 writes ~2**63 for none
            return int(text)
    return None


def _write_termination_message(message: dict[str, Any]) -> None:
    path = os.environ.get("KUBEMR_TERMINATION_LOG") or os.environ.get(
        "KUBESTACK_TERMINATION_LOG", TERMINATION_LOG
    )
    if path == TERMINATION_LOG and not os.path.exists(path):
        return  # not in a pod: the kubelet makes the file it reads; never litter /dev
    with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as fh:
        fh.write(termination.encode(message))


def _save_log(work: str, stage: str, index: int, attempt: str, text: str) -> str | None:
    """Copy the attempt's output to the work dir; its URL, or None when that failed."""
    url = storage.join(work, "logs", stage, f"{index:05d}", f"{attempt}.log")
    try:
        storage.write_bytes(url, text.encode("utf-8", "replace"), StorageOptions())
    except Exception:  # the log is a convenience: the stage's outcome stands without it
        return None
    return url


class _Tee:
    """Copies what the process writes to stdout and stderr into a bounded buffer."""

    def __init__(self) -> None:
        self._buf = io.StringIO()

    def text(self) -> str:
        return self._buf.getvalue()[-LOG_TAIL_BYTES:]

    @contextlib.contextmanager
    def capturing(self) -> Any:
        out, err = sys.stdout, sys.stderr
        sys.stdout = _TeeStream(out, self._buf)  # type: ignore[assignment]
        sys.stderr = _TeeStream(err, self._buf)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


class _TeeStream(io.TextIOBase):
    def __init__(self, stream: TextIO, buf: io.StringIO) -> None:
        self._stream = stream
        self._buf = buf

    def write(self, text: str) -> int:
        self._buf.write(text)
        if self._buf.tell() > 4 * LOG_TAIL_BYTES:  # keep the tail only
            tail = self._buf.getvalue()[-LOG_TAIL_BYTES:]
            self._buf.seek(0)
            self._buf.truncate()
            self._buf.write(tail)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
