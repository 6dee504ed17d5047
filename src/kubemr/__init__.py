"""kubemr: MapReduce batch jobs on one machine or on Kubernetes.

The public API::

    import kubemr

    class WordCount(kubemr.MapReduce):
        combiner = kubemr.SUM
        reducer = kubemr.SUM

        def mapper(self, line):
            for word in line.split():
                yield word, 1

The names below are imported when first used (PEP 562): ``import kubemr`` costs
nothing, so a worker process or a pod imports only what its task needs, and the
``kubemr run`` command can start its worker pool before its own imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "map_reduce": "kubemr.api",
    "run": "kubemr.api",
    "cmd_line": "kubemr.commands",
    "BadRecordError": "kubemr.errors",
    "InputError": "kubemr.errors",
    "JobDefinitionError": "kubemr.errors",
    "JobFailed": "kubemr.errors",
    "KubemrError": "kubemr.errors",
    "OutputError": "kubemr.errors",
    "COUNT": "kubemr.job",
    "MAX": "kubemr.job",
    "MIN": "kubemr.job",
    "SUM": "kubemr.job",
    "Aggregate": "kubemr.job",
    "MapReduce": "kubemr.job",
    "MRStep": "kubemr.job",
    "order_key": "kubemr.keys",
    "stable_hash": "kubemr.keys",
    "File": "kubemr.options",
    "Options": "kubemr.options",
    "JSONProtocol": "kubemr.output",
    "JSONValueProtocol": "kubemr.output",
    "RawProtocol": "kubemr.output",
    "RawValueProtocol": "kubemr.output",
}

__all__ = [
    "COUNT",
    "MAX",
    "MIN",
    "SUM",
    "Aggregate",
    "BadRecordError",
    "File",
    "InputError",
    "JSONProtocol",
    "JSONValueProtocol",
    "JobDefinitionError",
    "JobFailed",
    "KubemrError",
    "MRStep",
    "MapReduce",
    "Options",
    "OutputError",
    "RawProtocol",
    "RawValueProtocol",
    "__version__",
    "cmd_line",
    "map_reduce",
    "order_key",
    "run",
    "stable_hash",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kubemr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from kubemr.api import map_reduce, run
    from kubemr.commands import cmd_line
    from kubemr.errors import (
        BadRecordError,
        InputError,
        JobDefinitionError,
        JobFailed,
        KubemrError,
        OutputError,
    )
    from kubemr.job import COUNT, MAX, MIN, SUM, Aggregate, MapReduce, MRStep
    from kubemr.keys import order_key, stable_hash
    from kubemr.options import File, Options
    from kubemr.output import JSONProtocol, JSONValueProtocol, RawProtocol, RawValueProtocol
