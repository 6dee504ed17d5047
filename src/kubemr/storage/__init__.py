"""Storage by URL: local paths and ``s3://bucket/key`` behind one interface.

``store_for(url)`` returns the backend for a URL; backends are cached per process so
that connection pools are reused across the tasks a worker runs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from kubemr.storage.base import ObjectInfo, ObjectStore, RequestStats, StorageError
from kubemr.storage.local import (
    OUTPUT_MARKERS,
    FileKey,
    GlobSegment,
    LocalStore,
    exists_literally,
    local_glob,
    local_input,
    local_path,
)

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "RequestStats",
    "StorageError",
    "StorageOptions",
    "create_exclusive",
    "expand_inputs",
    "is_remote",
    "join",
    "local_path",
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


def create_exclusive(url: str, data: bytes, options: StorageOptions | None = None) -> bool:
    """Create ``url`` with ``data`` unless it exists; whether this call created it."""
    return store_for(url, options).create_exclusive(url, data)


def write_bytes(url: str, data: bytes, options: StorageOptions | None = None) -> None:
    with store_for(url, options).open_write(url) as fh:
        fh.write(data)


_GLOB_CHARS = re.compile(r"[*?\[]")


def _wildcard_source(text: str) -> str:
    """Regex source for ``*``, ``?`` and ``[...]``, none of which matches ``/``.

    ``fnmatch.translate`` would let ``?`` and ``[!...]`` match ``/``, so that
    ``logs?x`` took ``logs/x``; the documented meaning is "within one path segment".
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i
            if j < n and text[j] == "!":
                j += 1
            if j < n and text[j] == "]":
                j += 1
            while j < n and text[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "[", as in fnmatch
                out.append(re.escape(c))
                continue
            body, i = text[i:j], j + 1
            negate = body.startswith("!")
            body = re.sub(r"([\\\[\]^&~|])", r"\\\1", body[1:] if negate else body)
            source = ("[^/" if negate else "(?!/)[") + body + "]"
            try:
                re.compile(source)
            except re.error:  # a reversed range matches nothing, as in fnmatch
                source = "(?!)"
            out.append(source)
        else:
            out.append(re.escape(c))
    return "".join(out)


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
            j = pattern.find("**", i)
            j = len(pattern) if j < 0 else j
            out.append(_wildcard_source(pattern[i:j]))
            i = j
    return re.compile("(?s:" + "".join(out) + r")\Z")


def expand_inputs(
    patterns: list[str],
    options: StorageOptions | None = None,
    *,
    skipped: list[str] | None = None,
) -> Iterator[tuple[str, list[ObjectInfo]]]:
    """Yield each input pattern with the files it names (a file, a directory, a glob),
    sorted by URL.

    A pattern that exists as written is taken literally, even with glob characters in
    its name. Hidden files and files starting with ``_`` (``_SUCCESS``, temp files) in
    a directory or glob are skipped, as Hadoop and Spark do. So are the files of a kubemr
    output directory (one holding ``_SUCCESS`` or ``_kubemr-job.json``) below the
    directory a pattern names or starts its glob in: each such directory's URL is
    appended once to ``skipped``, before its pattern is yielded.

    Every file is yielded once, under the first URL that reached it: local files by
    identity (a symbolic link, ``..``, a hard link or a second pattern reaching a file
    read before), objects by URL. A pattern whose files all came earlier yields an
    empty list. Local symbolic links are followed; a broken link, a link loop, a
    directory that cannot be listed, and a FIFO, socket or device where a file is
    expected are errors (:class:`StorageError`, ``PermissionError``), not skipped.
    """
    seen: set[object] = set()
    for pattern in patterns:
        store = store_for(pattern, options)
        keyed: list[tuple[object, ObjectInfo]] = []
        if is_remote(pattern):
            keyed.extend((info.url, info) for info in _expand_remote(pattern, store, skipped))
        else:
            keyed.extend(_expand_local(pattern, store.stats, skipped))
        found = []
        for key, info in keyed:
            if key not in seen:
                seen.add(key)
                found.append(info)
        found.sort(key=lambda info: info.url)
        yield pattern, found


def _expand_local(
    pattern: str, stats: RequestStats, skipped: list[str] | None
) -> list[tuple[FileKey, ObjectInfo]]:
    match = _GLOB_CHARS.search(pattern)
    if match is None or exists_literally(pattern):
        return local_input(pattern, stats=stats, skipped=skipped)
    cut = pattern.rfind("/", 0, match.start()) + 1
    segments = _glob_segments(pattern[cut:])
    if not segments:
        return []
    return local_glob(pattern[:cut], segments, stats=stats, skipped=skipped)


def _glob_segments(tail: str) -> list[GlobSegment]:
    """The parts of a glob below its literal base; none for a pattern ending in ``/``,
    which names directories and so matches no file."""
    parts = tail.split("/")
    if parts[-1] == "":
        return []
    segments = []
    for i, part in enumerate(parts):
        if not part:
            continue
        if "**" in part and (part != "**" or i == len(parts) - 1):
            rest = "/".join(parts[i:])
            segments.append(GlobSegment("rest", rest, _glob_regex(rest)))
            break
        if part == "**":
            segments.append(GlobSegment("dirs", part))
        elif _GLOB_CHARS.search(part):
            segments.append(GlobSegment("match", part, re.compile(_wildcard_source(part) + r"\Z")))
        else:
            segments.append(GlobSegment("name", part))
    return segments


def _expand_remote(pattern: str, store: ObjectStore, skipped: list[str] | None) -> list[ObjectInfo]:
    match = _GLOB_CHARS.search(pattern)
    if match is None:
        try:
            return [store.stat(pattern)]
        except (FileNotFoundError, IsADirectoryError):
            prefix = pattern.rstrip("/") + "/"
            return _visible(list(store.list(prefix)), prefix, None, skipped)
    base = pattern[: match.start()]
    base = base[: base.rfind("/") + 1]
    listed = list(store.list(base))
    # A key (or a "directory" of keys) named as written is taken literally.
    exact = [info for info in listed if info.url == pattern]
    if exact:
        return exact
    prefix = pattern.rstrip("/") + "/"
    under = [info for info in listed if info.url.startswith(prefix)]
    if under:
        return _visible(under, prefix, None, skipped)
    return _visible(listed, base, _glob_regex(pattern), skipped)


def _visible(
    listed: list[ObjectInfo],
    base: str,
    regex: re.Pattern[str] | None,
    skipped: list[str] | None,
) -> list[ObjectInfo]:
    """The listed objects an input reads: not hidden, matching ``regex``, and not in a
    kubemr output directory below ``base`` (found from markers the hidden-name rule
    would otherwise drop unseen)."""
    outputs = set()
    for info in listed:
        head, _, name = info.url.rpartition("/")
        if name in OUTPUT_MARKERS and (head + "/").startswith(base) and head + "/" != base:
            outputs.add(head)
    kept = []
    left_out: set[str] = set()
    for info in listed:
        if _hidden(info.url, base) or (regex is not None and not regex.match(info.url)):
            continue
        owner = _output_owner(info.url, base, outputs)
        if owner is not None:
            left_out.add(owner)
            continue
        kept.append(info)
    if skipped is not None:
        skipped.extend(url for url in sorted(left_out) if url not in skipped)
    return kept


def _output_owner(url: str, base: str, outputs: set[str]) -> str | None:
    if not outputs:
        return None
    head = base.rstrip("/")
    for part in url[len(base) :].split("/")[:-1]:
        head += "/" + part
        if head in outputs:
            return head
    return None


def _hidden(url: str, base: str) -> bool:
    rel = url[len(base) :] if url.startswith(base) else posixpath.basename(url)
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)
