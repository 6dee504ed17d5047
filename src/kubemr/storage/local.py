"""Local filesystem backend: atomic writes by temp file + rename in the same directory."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal

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

    def create_exclusive(self, url: str, data: bytes) -> bool:
        path = local_path(url)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.stats.add_written(len(data))
            self.stats.count("PUT")
            try:
                os.link(tmp, path)  # fails if the name exists: the first link wins
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

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


# --------------------------------------------------------------------------- inputs
#
# Inputs are listed more strictly than LocalStore.list, which also serves the output and
# work directories: an input file that cannot be listed, cannot be read as a regular file
# or is reached twice would silently change the job's result, so each is an error (or
# is read once) here.

OUTPUT_MARKERS = frozenset({"_SUCCESS", "_kubemr-job.json"})
"""Names that make a directory a kubemr output directory: the commit marker, and the
run's ownership record, which is there while a run writes and before ``_SUCCESS``."""

FileKey = tuple[int, int] | str
"""A file's identity, the same for every path that reaches it: ``(st_dev, st_ino)``, or
its resolved path where the file system reports no inode numbers."""


@dataclass(frozen=True)
class GlobSegment:
    """One ``/``-separated part of a glob below its literal base directory.

    ``name``: a literal name. ``match``: wildcards within one name (``regex`` matches the
    name). ``dirs``: ``**``, zero or more directories. ``rest``: this part and every later
    one as one ``regex`` over the path below the directory where it starts (``**`` mixed
    with other characters, or ending the pattern, crosses directories); ``regex=None``
    takes every file.
    """

    kind: Literal["name", "match", "dirs", "rest"]
    text: str
    regex: re.Pattern[str] | None = None


class _Unreadable(StorageError):
    """A broken or looping symbolic link: an error only where a file was expected."""


_State = tuple[int, int]  # (segment index, depth where a "rest" segment started)


def local_input(
    url: str, *, stats: RequestStats | None = None, skipped: list[str] | None = None
) -> list[tuple[FileKey, ObjectInfo]]:
    """The files a literal input names: the file itself, or every file below a directory.

    Symbolic links are followed; each file comes with its identity so that the caller
    can read a file reached by two paths once. Raises ``FileNotFoundError`` when nothing
    is there, ``PermissionError`` for a directory that cannot be listed, and
    :class:`StorageError` for broken links, link loops and files that are not regular.
    """
    path = local_path(url)
    if not path:
        raise StorageError("the input path is empty: name a file, a directory or a glob")
    bare = path.rstrip("/") or path
    tidy = _tidy(url)
    if stats is not None:
        stats.count("HEAD")
    st = _stat_entry(bare, tidy)
    if st is None:
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", tidy)
    if bare != path and not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{url} ends with / but {tidy} is not a directory")
    if stat.S_ISREG(st.st_mode):
        return [(_file_key(st, bare), ObjectInfo(tidy, st.st_size))]
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(_not_regular(tidy, st.st_mode))
    walk = _Walk([GlobSegment("rest", "**")], stats, skipped)
    walk.start(bare, tidy)
    return walk.found


def local_glob(
    base_url: str,
    segments: list[GlobSegment],
    *,
    stats: RequestStats | None = None,
    skipped: list[str] | None = None,
) -> list[tuple[FileKey, ObjectInfo]]:
    """The files below the directory ``base_url`` that ``segments`` match, with their
    identities; only directories that can still hold a match are listed."""
    path = local_path(base_url) or "."
    url = _tidy(base_url)
    st = _stat_entry(path, url)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return []
    walk = _Walk(segments, stats, skipped)
    walk.start(path, url)
    return walk.found


def exists_literally(url: str) -> bool:
    """Whether a path names an entry as written (a broken link counts: it is named)."""
    path = local_path(url)
    if not path:
        return False
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


class _Walk:
    """A depth-first walk matching glob segments like an automaton.

    A directory below the base is listed only when a wildcard could match in it;
    directories holding an output marker are left out (their URL goes to ``skipped``);
    names starting with ``.`` or ``_`` are never matched. Every directory on the
    current path is remembered by identity, so a link back to one of them is reported
    instead of followed forever.
    """

    def __init__(
        self,
        segments: list[GlobSegment],
        stats: RequestStats | None,
        skipped: list[str] | None,
    ) -> None:
        self.segments = segments
        self.stats = stats
        self.skipped = skipped
        self.found: list[tuple[FileKey, ObjectInfo]] = []
        self._visited: set[tuple[FileKey, frozenset[_State]]] = set()
        self._ancestors: dict[FileKey, str] = {}

    def start(self, path: str, url: str) -> None:
        self._ancestors = _ancestors_of(path, url)
        try:
            self._visit(path, url, [], self._closure({(0, 0)}, 0))
        except RecursionError:
            raise StorageError(
                f"{url} holds directories nested too deeply to walk: name deeper inputs"
            ) from None

    def _closure(self, states: set[_State], depth: int) -> frozenset[_State]:
        # "**" also matches no directory at all: the next segment applies right here.
        out: set[_State] = set()
        todo = list(states)
        while todo:
            state = todo.pop()
            if state in out:
                continue
            out.add(state)
            j = state[0]
            if self.segments[j].kind == "dirs":
                todo.append((j + 1, depth))
        return frozenset(out)

    def _advance(
        self, states: frozenset[_State], parts: list[str], name: str
    ) -> tuple[frozenset[_State], bool]:
        """The states in the child directory ``name``, and whether a file ``name`` matches."""
        depth = len(parts) + 1
        nxt: set[_State] = set()
        is_match = False
        last = len(self.segments) - 1
        for j, begun in states:
            seg = self.segments[j]
            if seg.kind == "rest":
                nxt.add((j, begun))
                if seg.regex is None or seg.regex.match("/".join([*parts[begun:], name])):
                    is_match = True
            elif seg.kind == "dirs":
                nxt.add((j, 0))
            elif _name_matches(seg, name):
                if j == last:
                    is_match = True
                else:
                    nxt.add((j + 1, depth))
        return (self._closure(nxt, depth) if nxt else frozenset()), is_match

    def _scan(self, path: str, url: str) -> list[tuple[str, bool]]:
        if self.stats is not None:
            self.stats.count("LIST")
        try:
            with os.scandir(path) as it:
                entries = [(e.name, _is_dir(e)) for e in it]
        except FileNotFoundError:  # removed while listing
            return []
        except PermissionError:
            raise PermissionError(
                f"directory {url} cannot be listed: check its permissions, or name the "
                "inputs so that they leave it out"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot list directory {url}: {exc.strerror or exc}") from None
        entries.sort()
        return entries

    def _visit(self, path: str, url: str, parts: list[str], states: frozenset[_State]) -> None:
        if any(self.segments[j].kind != "name" for j, _ in states):
            entries = self._scan(path, url)
        else:
            # Only literal names can match here: look them up instead of listing.
            names = sorted({self.segments[j].text for j, _ in states})
            if parts:
                names += sorted(OUTPUT_MARKERS)
            entries = []
            for name in names:
                child = os.path.join(path, name)
                if _lexists(child, url):
                    entries.append((name, os.path.isdir(child)))
        if parts and any(name in OUTPUT_MARKERS for name, _ in entries):
            # Another job's output below the input: read only when named on its own.
            if self._would_read(states, parts, entries):
                self._skip(url)
            return
        for name, _ in entries:
            if name.startswith((".", "_")):
                continue
            child_states, is_match = self._advance(states, parts, name)
            if not child_states and not is_match:
                continue
            child_path = os.path.join(path, name)
            child_url = _child_url(url, name)
            try:
                st = _stat_entry(child_path, child_url)
            except _Unreadable:
                if is_match:
                    raise
                continue
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                if child_states:
                    self._descend(st, child_path, child_url, [*parts, name], child_states)
            elif stat.S_ISREG(st.st_mode):
                if is_match:
                    key = _file_key(st, child_path)
                    self.found.append((key, ObjectInfo(child_url, st.st_size)))
            elif is_match:
                raise StorageError(_not_regular(child_url, st.st_mode))

    def _descend(
        self,
        st: os.stat_result,
        path: str,
        url: str,
        parts: list[str],
        states: frozenset[_State],
    ) -> None:
        key = (st.st_dev, st.st_ino)
        unbounded = any(self.segments[j].kind in ("dirs", "rest") for j, _ in states)
        above = self._ancestors.get(key)
        if above is not None and unbounded:
            raise StorageError(
                f"{url} leads back to {above}, a directory that holds it (a symbolic link "
                "loop): remove the link or point it elsewhere"
            )
        # A directory reached again in the same state holds the same matches, except
        # where a crossing pattern matches the path itself.
        path_free = all(
            self.segments[j].kind != "rest" or self.segments[j].regex is None for j, _ in states
        )
        if path_free:
            if (key, states) in self._visited:
                return
            self._visited.add((key, states))
        if above is None:
            self._ancestors[key] = url
        try:
            self._visit(path, url, parts, states)
        finally:
            if above is None:
                del self._ancestors[key]

    def _would_read(
        self, states: frozenset[_State], parts: list[str], entries: list[tuple[str, bool]]
    ) -> bool:
        for name, is_dir in entries:
            if name.startswith((".", "_")):
                continue
            child_states, is_match = self._advance(states, parts, name)
            if (child_states and is_dir) or (is_match and not is_dir):
                return True
        return False

    def _skip(self, url: str) -> None:
        if self.skipped is not None and url not in self.skipped:
            self.skipped.append(url)


def _file_key(st: os.stat_result, path: str) -> FileKey:
    # Some FUSE and network file systems report inode 0 for every file: treating those
    # as one file would drop all but the first.
    if st.st_ino == 0:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def _name_matches(seg: GlobSegment, name: str) -> bool:
    if seg.kind == "name":
        return seg.text == name
    return seg.regex is not None and seg.regex.match(name) is not None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _lexists(path: str, directory_url: str) -> bool:
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        raise PermissionError(
            f"directory {directory_url} cannot be searched: check its permissions"
        ) from None
    return True


def _stat_entry(path: str, url: str) -> os.stat_result | None:
    """``stat`` through symbolic links; ``None`` when nothing is there."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        try:
            target = os.readlink(path)
        except OSError:
            return None  # absent, or removed while listing
        raise _Unreadable(
            f"{url} is a broken symbolic link to {target}: remove it or fix the target"
        ) from None
    except PermissionError:
        raise PermissionError(
            f"{url} cannot be reached: check the permissions of the directories above it"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Unreadable(
                f"{url} is a symbolic link loop (its links lead back to each other): "
                "remove it or fix the target"
            ) from None
        raise StorageError(f"cannot read {url}: {exc.strerror or exc}") from None


def _ancestors_of(path: str, url: str) -> dict[FileKey, str]:
    """The identities of a directory and of every directory above it, by name."""
    out: dict[FileKey, str] = {}
    real = os.path.realpath(path)
    name = url
    while True:
        try:
            st = os.stat(real)
        except OSError:
            break
        out.setdefault((st.st_dev, st.st_ino), name)
        parent = os.path.dirname(real)
        if parent == real:
            break
        real = name = parent
    return out


def _not_regular(url: str, mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    kind = next((k for test, k in kinds if test(mode)), "a special file")
    return f"{url} is {kind}, not a regular file: kubemr reads regular files"


def _tidy(url: str) -> str:
    """A local URL without ``.`` segments and repeated slashes, so that ``./d/x`` and
    ``d//x`` name a file as ``d/x`` does; ``..`` stays, as it may follow a link."""
    scheme = "file://" if url.startswith("file://") else ""
    path = url[len(scheme) :]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    tidy = ("/" if path.startswith("/") else "") + "/".join(parts)
    return scheme + (tidy or ".")


def _child_url(url: str, name: str) -> str:
    if url == ".":
        return name
    return url + name if url.endswith("/") else url + "/" + name
