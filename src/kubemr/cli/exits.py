"""The exit codes of the ``kubemr`` command line, defined once.

``kubemr run`` and the cluster commands (``submit``, ``status``, ``list``, ``describe``,
``logs``, ``cancel``) share these. ``kubemr worker`` has its pod contract
(:mod:`kubemr.termination`: 0, 1 retry, 3 bad input, 4 version skew, 143 SIGTERM) and
``kubemr controller`` its own (0, 1 cannot start, 75 lost its lease), which these do not
reuse with another meaning.
"""

from __future__ import annotations

from enum import IntEnum

from kubemr.cluster.errors import (
    ApiRefused,
    CrdMissing,
    Forbidden,
    JobDeleted,
    NoCluster,
    NotAuthenticated,
    NotFound,
    Unreachable,
    WaitTimeout,
)
from kubemr.errors import JobFailed, KubemrError


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1
    """The job failed (or was cancelled, or deleted before it finished)."""
    USAGE = 2
    """A bad option or value, a job file that cannot be used, storage that refused."""
    NOT_FOUND = 5
    """The job (or its namespace) does not exist."""
    NO_CRD = 6
    """The MapReduceJob CRD is not installed in the cluster."""
    NOT_ALLOWED = 7
    """RBAC does not allow the request (403), or the credentials were refused (401)."""
    NO_CLUSTER = 8
    """No cluster is configured, or the API server cannot be reached."""
    API_ERROR = 9
    """The API server refused the request otherwise (exists already, invalid, 5xx)."""
    TIMEOUT = 124
    """``--timeout`` passed first (as ``timeout(1)``); the job keeps running."""
    SIGNAL_BASE = 128
    """Stopped by signal N: 128 + N (130 for Ctrl-C)."""


_BY_ERROR: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (WaitTimeout, ExitCode.TIMEOUT),
    (JobDeleted, ExitCode.JOB_FAILED),
    (JobFailed, ExitCode.JOB_FAILED),
    (NotFound, ExitCode.NOT_FOUND),
    (CrdMissing, ExitCode.NO_CRD),
    (Forbidden, ExitCode.NOT_ALLOWED),
    (NotAuthenticated, ExitCode.NOT_ALLOWED),
    (NoCluster, ExitCode.NO_CLUSTER),
    (Unreachable, ExitCode.NO_CLUSTER),
    (ApiRefused, ExitCode.API_ERROR),
    (KubemrError, ExitCode.USAGE),
)


def exit_code_for(error: BaseException) -> int:
    """The exit code of an error a command reports."""
    for kind, code in _BY_ERROR:
        if isinstance(error, kind):
            return int(code)
    raise TypeError(f"no exit code for {type(error).__name__}")


def for_signal(signum: int) -> int:
    return int(ExitCode.SIGNAL_BASE) + signum
