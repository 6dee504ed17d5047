"""The job's code as ``kubemr submit`` ships it: a job file pickled by value and uploaded
to storage, content-addressed; a self-contained file inline; or a module reference.

A pickle goes to ``<code dir>/<sha256>.pkl`` with ``<sha256>.pkl.meta.json`` beside it
(the Python, cloudpickle and kubemr versions that made it, which a worker checks before
unpickling: :func:`kubemr.stages.load_code`). The default code dir is ``_kubemr/code`` in
the output's bucket, beside the default work dirs (:func:`default_code_dir`). An object
already there is not uploaded again: its name is its content's hash.

The files shipped with the job (its ``FILES``, file options, ``--file``) go beside the
code, to ``<code dir>/files/<sha256>/<name>``, listed in the resource's ``job.files``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import cloudpickle

from kubemr import storage
from kubemr.errors import JobDefinitionError, KubemrError
from kubemr.jobfiles import LocalFile, extra_files, local_files, needed_files, shipped
from kubemr.jobfiles import upload as upload_local_files
from kubemr.loader import dump_job_class, load_job_class
from kubemr.spec import default_work_dir
from kubemr.storage import StorageError, StorageOptions
from kubemr.versions import job_sources, runtime_versions

META_SUFFIX = ".meta.json"
"""What :func:`kubemr.stages.load_code` reads beside a pickle."""


def is_job_file(ref: str) -> bool:
    """Whether ``JOB`` names a file (``wc.py``, ``jobs/wc.py:WordCount``) rather than an
    importable module, by the rule of :func:`kubemr.loader.load_job_class`."""
    path = ref.partition(":")[0]
    return path.endswith(".py") or os.sep in path or os.path.exists(path)


@dataclass(frozen=True)
class PickledCode:
    """A job class pickled by value, with the versions a worker checks."""

    blob: bytes
    sha256: str
    class_name: str
    url: str
    """Where it goes: ``<code dir>/<sha256>.pkl``."""
    sources: dict[str, str] = field(default_factory=dict)
    """The job file's source, for the lines of tracebacks in pods."""

    def meta(self) -> bytes:
        meta = {**runtime_versions(), "sha256": self.sha256}
        if self.sources:
            meta["sources"] = self.sources  # type: ignore[assignment]
        return json.dumps(meta, indent=1).encode()


def pickle_job(ref: str, code_dir: str) -> PickledCode:
    """Load the job file's class and pickle it, its module and the helper modules beside it
    by value, for ``code_dir``: the same code pickles to the same bytes in every process."""
    before = cloudpickle.list_registry_pickle_by_value()
    cls = load_job_class(ref)
    _stable_class_ids(cloudpickle.list_registry_pickle_by_value() - before | {cls.__module__})
    blob = dump_job_class(cls)
    digest = hashlib.sha256(blob).hexdigest()
    return PickledCode(blob, digest, cls.__name__, code_url(code_dir, digest), job_sources(cls))


def default_code_dir(output: str) -> str:
    """``_kubemr/code`` beside the default work dirs: in the output's bucket, or beside a
    local output.

    Example:
        >>> default_code_dir("s3://data/counts/2024")
        's3://data/_kubemr/code'
    """
    # default_work_dir(output, "", "", "") is the "_kubemr" directory itself.
    return storage.join(default_work_dir(output, "", "", "").rstrip("/"), "code")


def code_url(code_dir: str, sha256: str) -> str:
    return storage.join(code_dir, f"{sha256}.pkl")


def upload(code: PickledCode, options: StorageOptions) -> bool:
    """Store the pickle at its URL unless it is there; whether it was uploaded now. The
    versions go first, so a pickle found is never without them."""
    url = code.url
    store = storage.store_for(url, options)
    store.check_access(url.rsplit("/", 1)[0], write=True)  # the code dir
    try:
        try:
            store.stat(url)
            return False
        except FileNotFoundError:
            pass
        storage.write_bytes(url + META_SUFFIX, code.meta(), options)
        storage.write_bytes(url, code.blob, options)
    except KubemrError:
        raise
    except Exception as exc:
        raise StorageError(
            f"cannot upload the job's code to {url}: {type(exc).__name__}: {exc}"
        ) from None
    return True


def files_dir(code_dir: str) -> str:
    return storage.join(code_dir, "files")


def job_files(job_cls: type | None, params: dict[str, str], paths: list[str]) -> list[LocalFile]:
    """The local files the job ships: what its class asks for (when it was loaded here)
    and ``--file`` paths, checked and hashed; an :class:`~kubemr.errors.InputError` naming
    a missing or oversized one."""
    refs = needed_files(job_cls, params) if job_cls is not None else []
    return local_files(refs + extra_files(paths))


def spec_files(files: list[LocalFile], code_dir: str) -> list[dict[str, str]]:
    """The resource's ``job.files`` for files uploaded by :func:`upload_files`."""
    return [
        {"name": f.name, "url": f.url, "sha256": f.sha256}
        for f in shipped(files, files_dir(code_dir))
    ]


def upload_files(files: list[LocalFile], code_dir: str, options: StorageOptions) -> int:
    """Store the job's files beside its code, each unless it is there; how many were
    uploaded now."""
    try:
        return sum(upload_local_files(files, files_dir(code_dir), options))
    except KubemrError:
        raise
    except Exception as exc:
        raise StorageError(
            f"cannot upload the job's files to {files_dir(code_dir)}: {type(exc).__name__}: {exc}"
        ) from None


def source_code(ref: str) -> tuple[str, str | None, str]:
    """For ``job.source``: the text of a self-contained job file, the class named after
    ``:`` (``job.className``) and the job class's name.

    The file is loaded here first, so a file that defines no job, or that imports helper
    modules from its directory (which a worker would not have), is refused now rather
    than in a pod."""
    path, _, class_name = ref.partition(":")
    before = cloudpickle.list_registry_pickle_by_value()
    cls = load_job_class(ref)
    helpers = cloudpickle.list_registry_pickle_by_value() - before - {cls.__module__}
    if helpers:
        names = ", ".join(sorted(h.rpartition(".")[2] for h in helpers))
        raise JobDefinitionError(
            f"--code source needs a self-contained job file, and {path} imports {names} from "
            "its directory: ship it with --code pickle (the default for a file)"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(), class_name or None, cls.__name__
    except (OSError, UnicodeDecodeError) as exc:
        raise JobDefinitionError(f"cannot read job file {path}: {exc}") from None


def _stable_class_ids(modules: Iterable[str]) -> None:
    """cloudpickle tags each class it pickles by value with a random id (so that one
    process unpickles it once); give the classes of the job's modules ids made from the
    module, the class and the module file's content instead, so that a pickle of the same
    code is the same bytes, and so the same object in storage. Left as it is when
    cloudpickle keeps its registry elsewhere (then each submit uploads anew)."""
    from cloudpickle import cloudpickle as internals

    by_class = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    by_id = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
    lock = getattr(internals, "_DYNAMIC_CLASS_TRACKER_LOCK", None)
    if by_class is None or by_id is None or lock is None:
        return
    for name in sorted(modules):
        module = sys.modules.get(name)
        if module is None:
            continue
        digest = _file_digest(getattr(module, "__file__", None))
        for cls in _classes(vars(module).values(), name, set()):
            ident = hashlib.sha256(f"{name}:{cls.__qualname__}:{digest}".encode()).hexdigest()
            with lock:
                if cls not in by_class and ident[:32] not in by_id:
                    by_class[cls] = ident[:32]
                    by_id[ident[:32]] = cls


def _classes(values: Iterable[object], module: str, seen: set[int]) -> Iterable[type]:
    for value in values:
        if isinstance(value, type) and value.__module__ == module and id(value) not in seen:
            seen.add(id(value))
            yield value
            yield from _classes(list(vars(value).values()), module, seen)


def _file_digest(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return ""
