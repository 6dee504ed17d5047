"""What a worker pod tells the controller: its exit code and termination message.

The controller holds no storage credentials, so everything it learns about a stage comes
from the Kubernetes API: the Job's status and each pod's ``state.terminated``. The worker
writes one compact JSON object to its termination-message file (``/dev/termination-log``;
Kubernetes keeps at most 4 KiB of it):

success::

    {"ok": true, "stage": "plan", "index": 0, "attempt": "wc-plan-x7k2p",
     "steps": [{"maps": 12, "reducers": 4}], ...}

failure::

    {"ok": false, "stage": "map-0", "index": 3, "attempt": "wc-map-0-3-abcde",
     "reason": "UserCodeError", "message": "...", "traceback": "...", "log": "s3://..."}

The plan stage adds ``steps`` (every step's map and reduce task counts) and ``job_id``;
the commit stage adds ``result`` (records and bytes in and out, files, counters).
"""

from __future__ import annotations

import json
from typing import Any

EXIT_OK = 0
EXIT_RETRY = 1  # worth another attempt: storage, network, a user-code exception
EXIT_BAD_INPUT = 3  # retrying cannot help: fail the task at once
EXIT_VERSION_SKEW = 4  # the job was pickled by another Python, cloudpickle or kubemr
EXIT_TERMINATED = 143  # SIGTERM: the pod was deleted, evicted or the job suspended

MAX_MESSAGE_BYTES = 4096
"""What Kubernetes keeps of a termination message."""
MAX_TRACEBACK_CHARS = 1024

# Failure reasons, as they appear in the resource's status.
USER_CODE = "UserCodeError"
BAD_INPUT = "BadInput"
VERSION_SKEW = "VersionSkew"
CODE_INTEGRITY = "CodeIntegrityError"  # the job's code changed after submission
INFRASTRUCTURE = "InfrastructureError"
STORAGE = "StorageError"
OUTPUT = "OutputError"
INPUT = "InputError"
DEFINITION = "JobDefinitionError"
INTERRUPTED = "Terminated"
OUT_OF_MEMORY = "OutOfMemory"

MEMORY_ADVICE = (
    "raise spec.template.resources.limits.memory, or give each task less to hold: a "
    "smaller splitSize (map tasks) or more reducers (reduce tasks)"
)


def task_name(stage: str, index: int | None) -> str:
    """How a task is named in the status: ``map-0-00012``, or ``plan`` and ``commit``."""
    if index is None or stage in ("plan", "commit"):
        return stage
    return f"{stage}-{index:05d}"


def quantity(size: int) -> str:
    """A byte count as Kubernetes writes a memory quantity: ``768Mi``, ``2Gi``, or bytes."""
    for suffix, unit in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def out_of_memory_message(task: str, limit: str | None, how: str, detail: str = "") -> str:
    """The root cause of a task that ran out of memory: the task, the limit it ran under
    (``None``: none known), how it ended and what to do."""
    under = f"its memory limit of {limit}" if limit else "the memory it could get"
    text = f"{task} ran out of memory under {under} ({how})"
    if detail:
        text += f": {detail}"
    return f"{text}; {MEMORY_ADVICE}"


def encode(message: dict[str, Any]) -> str:
    """The message as JSON within :data:`MAX_MESSAGE_BYTES`: the traceback keeps its last
    lines, then the message its head, as room requires."""
    data = dict(message)
    if data.get("traceback"):
        data["traceback"] = data["traceback"][-MAX_TRACEBACK_CHARS:]
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    while len(text.encode()) > MAX_MESSAGE_BYTES:
        if data.get("traceback"):
            data["traceback"] = data["traceback"][len(data["traceback"]) // 2 :] or None
        elif isinstance(data.get("counters"), dict) and data["counters"]:
            data["counters"] = {}
        elif len(data.get("message") or "") > 200:
            data["message"] = data["message"][: len(data["message"]) // 2] + "…"
        else:
            data = {k: data[k] for k in ("ok", "stage", "index", "reason") if k in data}
            text = json.dumps(data, separators=(",", ":"))
            break
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text


def decode(text: str | None) -> dict[str, Any] | None:
    """A worker's message, or ``None`` when the text is not one (a log tail written by
    ``FallbackToLogsOnError``, or nothing)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "ok" in data else None
