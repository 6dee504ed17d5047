"""Local filesystem backend: atomic writes by temp file + rename in the same directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from kubemr.storage.base import ObjectInfo, RequestStats, StorageError


def local_path(url: str) -> str:
    """The filesystem path of a local URL (a plain path or ``file://``)."""
    return url[len("file://") :] if url.startswith("file://") else url


class _RangeReader:
    """A file object limited to ``[start, end)``, counting bytes read."""

    def __init__(self, path: str, start: int, end: int | None, stats: RequestStats) -> None:
        self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fh.seek(start)
        self._left = None if end is None else max(0, end - start)
        self._stats = stats

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            if n < 0 or n > self._left:
                n = self._left
            if n == 0:
                return b""
        data = self._fh.read(n) if n >= 0 else self._fh.read()
        if self._left is not None:
            self._left -= len(data)
        self._stats.add_read(len(data))
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _CountingWriter:
    def __init__(self, fh: BinaryIO, stats: RequestStats) -> None:
        self._fh = fh
        self._stats = stats

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self._fh.write(data)
        self._stats.add_written(n)
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._fh.flush()

    def tell(self) -> int:
        return self._fh.tell()


class LocalStore:
    """Files and directories on this machine."""

    def __init__(self) -> None:
        self.stats = RequestStats()

    def stat(self, url: str) -> ObjectInfo:
        self.stats.count("HEAD")
        path = local_path(url)
        st = os.stat(path)
        if not os.path.isfile(path):
            raise IsADirectoryError(f"{path} is a directory, not a file")
        return ObjectInfo(url, st.st_size)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.stats.count("LIST")
        root = local_path(prefix)
        if os.path.isfile(root):
            yield ObjectInfo(prefix, os.path.getsize(root))
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    found.append(ObjectInfo(path, os.path.getsize(path)))
                except FileNotFoundError:  # removed while listing
                    continue
        found.sort(key=lambda info: info.url)
        yield from found

    def open_read(self, url: str, start: int = 0, end: int | None = None) -> BinaryIO:
        self.stats.count("GET")
        return _RangeReader(local_path(url), start, end, self.stats)  # type: ignore[return-value]

    @contextmanager
    def open_write(self, url: str) -> Iterator[BinaryIO]:
        path = local_path(url)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
                yield _CountingWriter(fh, self.stats)  # type: ignore[misc]
            os.replace(tmp, path)
            self.stats.count("PUT")
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def delete(self, url: str) -> None:
        self.stats.count("DELETE")
        try:
            os.unlink(local_path(url))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        root = local_path(prefix)
        if os.path.isfile(root):
            self.delete(prefix)
            return 1
        if not os.path.isdir(root):
            return 0
        count = sum(len(files) for _, _, files in os.walk(root))
        self.stats.count("DELETE", count)
        shutil.rmtree(root, ignore_errors=True)
        return count

    def check_access(self, url: str, *, write: bool) -> None:
        path = local_path(url)
        if write:
            probe = path
            while probe and not os.path.exists(probe):
                probe = os.path.dirname(probe.rstrip("/")) or "."
            if not os.path.isdir(probe):
                raise StorageError(f"cannot write under {path}: {probe} is not a directory")
            if not os.access(probe, os.W_OK | os.X_OK):
                raise StorageError(f"cannot write under {path}: {probe} is not writable")
        elif not os.path.exists(path):
            raise StorageError(f"{path} does not exist")
        elif not os.access(path, os.R_OK):
            raise StorageError(f"{path} is not readable (check its permissions)")
