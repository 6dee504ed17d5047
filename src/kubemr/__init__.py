"""kubemr: MapReduce batch jobs on one machine or on Kubernetes.

The public API::

    import kubemr

    class WordCount(kubemr.MapReduce):
        combiner = kubemr.SUM
        reducer = kubemr.SUM

        def mapper(self, line):
            for word in line.split():
                yield word, 1
"""

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

__version__ = "0.1.0"

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
