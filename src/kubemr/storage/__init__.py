"""Storage by URL: local paths and ``s3://bucket/key`` behind one interface.

``store_for(url)`` returns the backend for a URL; backends are cached per process so
that connection pools are reused across the tasks a worker runs.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from kubemr.storage.base import ObjectInfo, ObjectStore, RequestStats, StorageError
from kubemr.storage.local import LocalStore, local_path

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "RequestStats",
    "StorageError",
    "StorageOptions",
    "expand_inputs",
    "is_remote",
    "join",
    "read_bytes",
    "store_for",
    "write_bytes",
]


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage; credentials come from the standard AWS chain."""

    s3_endpoint: str | None = None
    max_pool_connections: int = 16


_stores: dict[tuple[str, StorageOptions], ObjectStore] = {}


def is_remote(url: str) -> bool:
    return url.startswith("s3://")


def store_for(url: str, options: StorageOptions | None = None) -> ObjectStore:
    """The (cached) backend that serves ``url``."""
    options = options or StorageOptions()
    scheme = "s3" if is_remote(url) else "file"
    key = (scheme, options if scheme == "s3" else StorageOptions())
    store = _stores.get(key)
    if store is None:
        if scheme == "s3":
            from kubemr.storage.s3 import S3Store

            store = S3Store(options)
        else:
            store = LocalStore()
        _stores[key] = store
    return store


def all_stats() -> dict[str, object]:
    """Requests and bytes summed over every backend this process used."""
    total = RequestStats()
    for store in _stores.values():
        snap = store.stats.snapshot()
        for kind, n in snap["requests"].items():  # type: ignore[union-attr]
            total.count(kind, n)
        total.add_read(snap["bytes_read"])  # type: ignore[arg-type]
        total.add_written(snap["bytes_written"])  # type: ignore[arg-type]
    return total.snapshot()


def reset_stats() -> None:
    for store in _stores.values():
        store.stats.reset()


def join(base: str, *parts: str) -> str:
    """Join URL path segments with ``/`` (local paths too)."""
    out = base
    for part in parts:
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out


def read_bytes(url: str, options: StorageOptions | None = None) -> bytes:
    with store_for(url, options).open_read(url) as fh:
        return fh.read()


def write_bytes(url: str, data: bytes, options: StorageOptions | None = None) -> None:
    with store_for(url, options).open_write(url) as fh:
        fh.write(data)


_GLOB_CHARS = re.compile(r"[*?\[]")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` matches across directories, ``*`` and ``?`` within one segment."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            j = i
            while j < len(pattern) and not pattern.startswith("**", j):
                j += 1
            chunk = fnmatch.translate(pattern[i:j])
            # fnmatch's '*' crosses '/', ours must not; strip its anchors too.
            chunk = chunk.removeprefix("(?s:").removesuffix(r")\Z").replace(".*", "[^/]*")
            out.append(chunk)
            i = j
    return re.compile("(?s:" + "".join(out) + r")\Z")


def expand_inputs(
    patterns: list[str], options: StorageOptions | None = None
) -> Iterator[tuple[str, list[ObjectInfo]]]:
    """Yield each input pattern with the files it names (a file, a directory, a glob).

    Hidden files and files starting with ``_`` (``_SUCCESS``, temp files) in a
    directory or glob are skipped, as Hadoop and Spark do.
    """
    for pattern in patterns:
        store = store_for(pattern, options)
        match = _GLOB_CHARS.search(pattern)
        if match is None:
            try:
                yield pattern, [store.stat(pattern)]
                continue
            except (FileNotFoundError, IsADirectoryError):
                prefix = pattern.rstrip("/") + "/"
                found = [i for i in store.list(prefix) if not _hidden(i.url, prefix)]
                if not found and not is_remote(pattern) and not _local_exists(pattern):
                    raise FileNotFoundError(pattern) from None
                yield pattern, found
                continue
        base = pattern[: match.start()]
        base = base[: base.rfind("/") + 1] if "/" in base else ("" if is_remote(base) else "./")
        regex = _glob_regex(pattern if base != "./" or pattern.startswith("./") else "./" + pattern)
        found = [
            i
            for i in store.list(base)
            if regex.match(_normal(i.url, base)) and not _hidden(i.url, base)
        ]
        yield pattern, found


def _normal(url: str, base: str) -> str:
    if base == "./" and not url.startswith("./"):
        return "./" + url
    return url


def _local_exists(path: str) -> bool:
    import os

    return os.path.exists(local_path(path))


def _hidden(url: str, base: str) -> bool:
    rel = url[len(base) :] if url.startswith(base) else posixpath.basename(url)
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)
