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


def write_job_code(plan: Plan, code: bytes, options: StorageOptions) -> None:
    meta = {**runtime_versions(), "sha256": hashlib.sha256(code).hexdigest()}
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
    return cloudpickle.loads(code)
