"""The object-store interface every storage backend implements.

kubemr addresses data by URL: a local path (``/data/in.txt``, ``file:///data``) or an
object key (``s3://bucket/key``). Everything above this layer (planner, tasks, runner)
speaks only this interface, so the same task code runs on local disk and in S3.

Writes are atomic: an object opened with :meth:`ObjectStore.open_write` becomes visible
whole when the ``with`` block exits cleanly, and not at all when it raises. The commit
protocol (see ``kubemr.commit``) is built on that guarantee instead of on rename, which
object stores do not have.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from kubemr.errors import KubemrError


class StorageError(KubemrError):
    """A storage operation failed in a way the user must fix (credentials, bucket, path)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its URL and size in bytes."""

    url: str
    size: int


REQUEST_KINDS = ("GET", "PUT", "LIST", "DELETE", "HEAD")


@dataclass
class RequestStats:
    """Requests by kind and bytes moved, as reported in ``_SUCCESS``.

    Thread-safe: a store may be shared by the reader threads of one task.
    """

    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    bytes_read: int = 0
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + n

    def add_read(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    def add_written(self, n: int) -> None:
        with self._lock:
            self.bytes_written += n

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written,
            }

    def reset(self) -> None:
        with self._lock:
            self.requests = dict.fromkeys(REQUEST_KINDS, 0)
            self.bytes_read = 0
            self.bytes_written = 0


class ObjectStore(Protocol):
    """What kubemr needs from a storage backend."""

    stats: RequestStats

    def stat(self, url: str) -> ObjectInfo:
        """Return the object's size; raise ``FileNotFoundError`` when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (recursively), sorted by URL."""
        ...

    def open_read(self, url: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A streaming reader of bytes ``[start, end)`` (``end=None``: to the end)."""
        ...

    def open_write(self, url: str) -> AbstractContextManager[BinaryIO]:
        """A writer whose data appears atomically at ``url`` when the block exits cleanly."""
        ...

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """Write ``data`` at ``url`` unless an object is there already; return whether this
        call created it. Of writers racing for one name exactly one wins, which is how a
        value several tasks derive (the chosen map outputs) is decided once."""
        ...

    def delete(self, url: str) -> None:
        """Delete one object; a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were deleted."""
        ...

    def check_access(self, url: str, *, write: bool) -> None:
        """Fail early with a :class:`StorageError` that says what is wrong and how to fix it."""
        ...
