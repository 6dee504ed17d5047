"""The versions a pickled job depends on, recorded beside it and checked before it is
unpickled.

cloudpickle output is tied to the Python minor version (bytecode) and to cloudpickle's
own version; kubemr's classes travel by reference. A job pickled by Python 3.12 and
unpickled by 3.11 can crash the interpreter (exit 139) rather than raise, so a worker
compares ``job.meta.json`` with itself first and refuses with the exact mismatch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import linecache
import sys
import types
from typing import Any

import cloudpickle

from kubemr import storage
from kubemr.errors import CodeIntegrityError, VersionSkew
from kubemr.plan import Plan
from kubemr.storage import StorageOptions


def check_code_digest(url: str, blob: bytes, expected: str | None, source: str) -> None:
    """Refuse ``blob`` unless its sha256 is ``expected``, which ``source`` recorded.

    Called on the bytes as read, before anything unpickles them.
    """
    found = hashlib.sha256(blob).hexdigest()
    if found != expected:
        raise CodeIntegrityError(
            f"job code {url} is not the code the job was submitted with: its sha256 is "
            f"{found}, but {source} says {expected}. It was changed or damaged after "
            "submission, and was not unpickled. Submit the job again (kubemr submit uploads "
            "the code anew), and find out who else can write to that storage location."
        )


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
    """The source of the files the job's code comes from, by file name: the modules of its
    classes, and the files of every function that travels with it by value (the job file,
    the helper modules beside it). Code pickled by value does not carry its files:
    recorded with the pickle, they give a worker's tracebacks their lines."""
    files: list[str] = []
    for cls in job_cls.__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or _is_kubemr(cls.__module__):
            continue
        filename = getattr(module, "__file__", None)
        if filename and filename not in files:
            files.append(filename)
    for fn in _functions_of(job_cls):
        filename = fn.__code__.co_filename
        if filename != DYNAMIC_CODE and filename not in files:
            files.append(filename)
    sources: dict[str, str] = {}
    for filename in files:
        module = _module_of_file(filename)
        text = getattr(module, "__kubemr_source__", None) if module is not None else None
        if text is None:
            text = "".join(linecache.getlines(filename))
        if text and len(text.encode()) <= MAX_RECORDED_SOURCE:
            sources[filename] = text
    return sources


DYNAMIC_CODE = "<dynamic-code>"
"""The file name cloudpickle gives the code it pickles by value."""


def remember_sources(sources: Any) -> None:
    """Make recorded job sources what tracebacks show for their file names, unless a file
    of that name is here to read (``<...>`` names are never files).

    Code unpickled by value names its file once :func:`restore_code_files` ran. Code
    that still carries cloudpickle's one file name, :data:`DYNAMIC_CODE` (a function
    whose module had no ``__file__``), gets the lines of the one source recorded, and
    none when there are several (no lines rather than wrong ones)."""
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


def restore_code_files(obj: Any) -> None:
    """Give the code of ``obj`` (a job class unpickled by value) the file names cloudpickle
    replaced by :data:`DYNAMIC_CODE`, taken from each function's module globals
    (``__file__``, which cloudpickle keeps): tracebacks then name the job file, or the
    helper module, each with its own lines. Code of installed modules is never touched,
    and running it twice changes nothing."""
    for fn in _functions_of(obj):
        code = fn.__code__
        filename = fn.__globals__.get("__file__")
        if isinstance(filename, str) and _has_dynamic_code(code):
            fn.__code__ = _renamed(code, filename)


def _has_dynamic_code(code: types.CodeType) -> bool:
    return code.co_filename == DYNAMIC_CODE or any(
        _has_dynamic_code(c) for c in code.co_consts if isinstance(c, types.CodeType)
    )


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code nested in it (lambdas, inner functions, comprehensions) with
    ``filename`` where cloudpickle put its placeholder."""
    consts = tuple(
        _renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    name = filename if code.co_filename == DYNAMIC_CODE else code.co_filename
    return code.replace(co_filename=name, co_consts=consts)


def _is_kubemr(module_name: str) -> bool:
    return module_name.split(".")[0] in ("kubemr", "builtins")


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj`` (a function or class) by value."""
    check = getattr(cloudpickle.cloudpickle, "_should_pickle_by_reference", None)
    if check is not None:
        try:
            return not check(obj)
        except Exception:
            pass
    module_name = getattr(obj, "__module__", None) or "__main__"
    return (
        module_name == "__main__"
        or module_name not in sys.modules
        or module_name in cloudpickle.list_registry_pickle_by_value()
    )


def _module_of_file(filename: str) -> types.ModuleType | None:
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == filename:
            return module
    return None


def _functions_of(root: Any) -> list[types.FunctionType]:
    """The plain functions reachable from ``root`` that travel by value: the methods of
    its classes (and their bases), what their code names in its globals (functions,
    classes, modules shipped by value), closures, nested classes. Installed code (kubemr,
    the standard library, packages) is neither returned nor walked into."""
    found: list[types.FunctionType] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, type):
            if _is_kubemr(obj.__module__) or not (obj is root or _by_value(obj)):
                continue
            stack.extend(obj.__mro__[1:])
            stack.extend(vars(obj).values())
        elif isinstance(obj, staticmethod | classmethod | types.MethodType):
            stack.append(obj.__func__)
        elif isinstance(obj, property):
            stack.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, functools.partial):
            stack.append(obj.func)
        elif isinstance(obj, types.FunctionType):
            module = getattr(obj, "__module__", None) or ""
            if _is_kubemr(module) or not (_has_dynamic_code(obj.__code__) or _by_value(obj)):
                continue
            found.append(obj)
            scope = obj.__globals__
            stack.extend(scope[name] for name in _names(obj.__code__) if name in scope)
            for cell in obj.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    stack.append(cell.cell_contents)
        elif (
            isinstance(obj, types.ModuleType)
            and not _is_kubemr(obj.__name__)
            and _module_by_value(obj)
        ):
            name = obj.__name__
            stack.extend(v for v in vars(obj).values() if getattr(v, "__module__", None) == name)
    return found


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _module_by_value(module: types.ModuleType) -> bool:
    """A module cloudpickle ships by value: registered so, ``__main__``, or one made from
    a pickle (not the installed module of that name)."""
    name = module.__name__
    return (
        name == "__main__"
        or sys.modules.get(name) is not module
        or name in cloudpickle.list_registry_pickle_by_value()
    )


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
    check_code_digest(plan.job_code_url(), code, meta.get("sha256"), plan.job_meta_url())
    remember_sources(meta.get("sources"))
    job_cls = cloudpickle.loads(code)
    restore_code_files(job_cls)
    return job_cls
