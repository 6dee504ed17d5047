"""The versions a pickled job depends on, recorded beside it and checked before it is
unpickled.

cloudpickle output is tied to the Python minor version (bytecode) and to cloudpickle's
own version; kubemr's classes travel by reference. A job pickled by Python 3.12 and
unpickled by 3.11 can crash the interpreter (exit 139) rather than raise, so a worker
compares ``job.meta.json`` with itself first and refuses with the exact mismatch.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import sys
from typing import Any

import cloudpickle

from kubemr import storage
from kubemr.errors import VersionSkew
from kubemr.plan import Plan
from kubemr.storage import StorageOptions


def runtime_versions() -> dict[str, str]:
    from kubemr import __version__

    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "cloudpickle": cloudpickle.__version__,
        "kubemr": __version__,
    }


def mismatch(recorded: dict[str, Any], here: dict[str, str] | None = None) -> str | None:
    """What differs between the versions that pickled a job and this process, or None."""
    here = here or runtime_versions()
    diffs = [
        f"{name} {recorded.get(name)} (pickled) vs {value} (this worker)"
        for name, value in here.items()
        if recorded.get(name) != value
    ]
    return "; ".join(diffs) or None


MAX_RECORDED_SOURCE = 256 << 10
"""Source files larger than this are not recorded (a traceback then shows no lines)."""


def job_sources(job_cls: type) -> dict[str, str]:
    """The source of the files the job's classes were defined in, by the file name their
    code carries. The classes travel by value, their files do not: recorded with the
    pickle, they give a worker's tracebacks their lines."""
    sources: dict[str, str] = {}
    for cls in job_cls.__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or cls.__module__.split(".")[0] in ("kubemr", "builtins"):
            continue
        filename = getattr(module, "__file__", None)
        if not filename or filename in sources:
            continue
        text = getattr(module, "__kubemr_source__", None)
        if text is None:
            text = "".join(linecache.getlines(filename))
        if text and len(text.encode()) <= MAX_RECORDED_SOURCE:
            sources[filename] = text
    return sources


DYNAMIC_CODE = "<dynamic-code>"
"""The file name cloudpickle gives the code it pickles by value."""


def remember_sources(sources: Any) -> None:
    """Make recorded job sources what tracebacks show for their file names, unless a file
    of that name is here to read (``<...>`` names are never files). Code pickled by value
    carries cloudpickle's one file name, :data:`DYNAMIC_CODE`: it gets the lines of the
    one source recorded, and none when there are several (no lines rather than wrong
    ones)."""
    if not isinstance(sources, dict):
        sources = {}
    entries = {
        filename: (len(text), None, text.splitlines(keepends=True), filename)
        for filename, text in sources.items()
        if isinstance(filename, str) and isinstance(text, str)
    }
    for filename, entry in entries.items():
        pseudo = filename.startswith("<") and filename.endswith(">")
        if pseudo or not linecache.getlines(filename):
            linecache.cache[filename] = entry
    if len(entries) == 1:
        [(size, mtime, lines, _)] = entries.values()
        linecache.cache[DYNAMIC_CODE] = (size, mtime, lines, DYNAMIC_CODE)
    else:
        linecache.cache.pop(DYNAMIC_CODE, None)


def write_job_code(
    plan: Plan, code: bytes, options: StorageOptions, sources: dict[str, str] | None = None
) -> None:
    meta: dict[str, Any] = {**runtime_versions(), "sha256": hashlib.sha256(code).hexdigest()}
    if sources:
        meta["sources"] = sources
    storage.write_bytes(plan.job_code_url(), code, options)
    storage.write_bytes(plan.job_meta_url(), json.dumps(meta, indent=1).encode(), options)


def load_job_code(plan: Plan, options: StorageOptions) -> Any:
    """The job class, after its versions and checksum were checked."""
    try:
        meta = json.loads(storage.read_bytes(plan.job_meta_url(), options))
    except FileNotFoundError:
        raise VersionSkew(
            f"{plan.job_meta_url()} is missing: the job was stored by a kubemr that does not "
            "record its versions; plan it again with this one"
        ) from None
    problem = mismatch(meta)
    if problem:
        raise VersionSkew(
            f"the job's code was pickled by another version: {problem}. Run the workers with "
            "the same Python minor version, cloudpickle and kubemr as the client (the same "
            "image), or ship the job as an importable module"
        )
    code = storage.read_bytes(plan.job_code_url(), options)
    if hashlib.sha256(code).hexdigest() != meta.get("sha256"):
        raise VersionSkew(f"{plan.job_code_url()} does not match its recorded sha256")
    remember_sources(meta.get("sources"))
    return cloudpickle.loads(code)
