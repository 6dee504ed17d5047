"""Find the job class the user named: ``wc.py``, ``wc.py:WordCount`` or ``pkg.mod:Job``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from types import ModuleType

import cloudpickle

from kubemr.errors import JobDefinitionError
from kubemr.job import MapReduce


def load_job_class(ref: str) -> type[MapReduce]:
    """Import the job; a job file's code (and its sibling modules) ship by value."""
    path, _, class_name = ref.partition(":")
    if path.endswith(".py") or os.sep in path or os.path.exists(path):
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise JobDefinitionError(
                f"cannot import job module {path!r}: {exc}. Name a job file (wc.py) "
                "or an importable module (package.module:Class)"
            ) from exc
    return pick_job_class(module, path, class_name)


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise JobDefinitionError(f"job file {path} does not exist")
    path = os.path.abspath(path)
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"kubemr_job_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    directory = os.path.dirname(path)
    before = set(sys.modules)
    sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise JobDefinitionError(
            f"job file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.path.remove(directory)
    # The job's code and the helper modules beside it travel with the job, by value,
    # so workers need nothing but kubemr installed.
    cloudpickle.register_pickle_by_value(module)
    for mod_name in set(sys.modules) - before:
        mod = sys.modules.get(mod_name)
        mod_file = getattr(mod, "__file__", None) or ""
        if (
            mod is not None
            and mod_file.startswith(directory + os.sep)
            and "site-packages" not in mod_file
        ):
            try:
                cloudpickle.register_pickle_by_value(mod)
            except ValueError:
                pass
    return module


def pick_job_class(module: ModuleType, where: str, class_name: str) -> type[MapReduce]:
    if class_name:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, MapReduce)):
            raise JobDefinitionError(f"{where} has no MapReduce subclass named {class_name!r}")
        return cls
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, MapReduce)
        and obj is not MapReduce
        and obj.__module__ == module.__name__
    ]
    if not found:
        raise JobDefinitionError(
            f"{where} defines no job: add a class that subclasses kubemr.MapReduce"
        )
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise JobDefinitionError(
            f"{where} defines several jobs ({names}): name one, e.g. {where}:{found[0].__name__}"
        )
    return found[0]


def dump_job_class(cls: type[MapReduce]) -> bytes:
    """The job class as bytes for workers; a clear error when it cannot be shipped."""
    try:
        return cloudpickle.dumps(cls)
    except Exception as exc:
        raise JobDefinitionError(
            f"job class {cls.__name__} cannot be serialised for workers: {exc}. Keep "
            "open files, sockets and locks out of class attributes; create them in setup()"
        ) from exc
