"""Errors users see, each saying what went wrong, where, and what to do."""

from __future__ import annotations

from dataclasses import dataclass


class KubemrError(Exception):
    """Base class: a problem reported to the user without a Python traceback."""


class JobDefinitionError(KubemrError):
    """The job file or class cannot be used (no job class, bad steps, unpicklable code)."""


class InputError(KubemrError):
    """Inputs are missing, empty or unreadable: found before any task starts."""


class OutputError(KubemrError):
    """The output location cannot be used (not empty, not writable)."""


class OptionError(KubemrError):
    """A job option has a value kubemr cannot use (``workers=0``, ``reducers=-3``)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT, SIGTERM, SIGHUP); cleanup runs as for
    Ctrl-C, and the command exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class VersionSkew(KubemrError):
    """The job's code or plan was made by another Python, cloudpickle or kubemr version
    than the worker's: refused before anything is unpickled."""


class CodeIntegrityError(VersionSkew):
    """The job's code is not the bytes it was submitted or stored with: refused before it
    is unpickled (unpickling runs code). Deterministic, as a version skew is: the task
    fails at once instead of being retried."""


class BadRecordError(KubemrError):
    """A malformed input record; deterministic, so retrying the task cannot help."""


class CarriesFailure(Exception):
    """An exception whose message is a :class:`TaskFailure`.

    Its args hold the failure itself, so it pickles across process boundaries.
    """

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure)
        self.failure = failure

    def __str__(self) -> str:
        return self.failure.describe()


class JobFailed(CarriesFailure, KubemrError):
    """The job failed; ``failure`` names the task, attempt and root cause."""


@dataclass
class TaskFailure:
    """Why one task attempt failed: plain data so it crosses process boundaries."""

    task: str
    attempt: str
    kind: str  # "user-code", "bad-record", "version-skew", "code-integrity", "storage",
    # or "infrastructure"
    message: str
    traceback: str = ""

    @property
    def retryable(self) -> bool:
        return self.kind not in ("bad-record", "version-skew", "code-integrity")

    def describe(self) -> str:
        text = f"task {self.task} (attempt {self.attempt}) failed: {self.message}"
        if self.traceback:
            text += "\n" + self.traceback.rstrip()
        return text

    def to_json(self) -> dict[str, str]:
        return {
            "task": self.task,
            "attempt": self.attempt,
            "kind": self.kind,
            "message": self.message,
            "traceback": self.traceback,
        }
