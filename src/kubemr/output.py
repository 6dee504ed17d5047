"""The job's output directory: kept apart from the inputs, owned by one run at a time,
and published only by that run.

Layout of an output directory (local or ``s3://``)::

    out/_kubemr-job.json            the owning run: job id, host, pid, state, heartbeat
    out/_temporary/<job-id>/part-N  final part files as tasks write them
    out/part-00000 ...              published by the owning run at commit
    out/_REPORT.json                the job report (kubemr.report.records), just before
    out/_SUCCESS                    written last, only when every part is published

Tasks never write final names: a worker left over from a killed run can only write under
its own ``_temporary/<job-id>/``, which nothing reads. ``--overwrite`` replaces only what
kubemr writes (these names) and refuses a directory holding anything else.

What a part file's lines hold is the job's output protocol (``--output-format``, or the
job class's ``OUTPUT_FORMAT`` / ``OUTPUT_PROTOCOL``): see :func:`line_encoder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import operator
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from kubemr import storage
from kubemr.errors import JobDefinitionError, OutputError
from kubemr.plan import STAGING
from kubemr.storage import ObjectInfo, StorageError, StorageOptions
from kubemr.storage.local import local_path

JOB_RECORD = "_kubemr-job.json"
SUCCESS = "_SUCCESS"
REPORT = "_REPORT.json"
HEARTBEAT_SECONDS = 20.0
"""How often a running job refreshes its record in object storage."""
STALE_AFTER_SECONDS = 90.0
"""A record in object storage not refreshed for this long belongs to a run that died."""

_PART = re.compile(r"part-\d{5,}\Z")
# LocalStore's temp files: ".<name>.<random>.tmp" beside the file being written.
_LOCAL_TEMP = re.compile(r"\.(part-\d{5,}|_SUCCESS|_REPORT\.json|_kubemr-job\.json)\.[^/]*\.tmp\Z")


def is_kubemr_file(relative: str) -> bool:
    """Whether a path relative to an output directory is one that kubemr writes."""
    first = relative.split("/", 1)[0]
    if first == STAGING:
        return True
    if "/" in relative:
        return False
    return (
        relative in (SUCCESS, REPORT, JOB_RECORD)
        or _PART.match(relative) is not None
        or _LOCAL_TEMP.match(relative) is not None
    )


def staging_url(output: str, job_id: str) -> str:
    return storage.join(output, STAGING, job_id)


# --------------------------------------------------------------------------- protocols

# json.dumps with its defaults, as mrjob's JSONProtocol writes (non-ASCII escaped).
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)
_ascii_json = json.JSONEncoder().encode
_utf8_json = json.JSONEncoder(ensure_ascii=False).encode


class JSONLinesProtocol:
    """``jsonl``: ``[key, value]``, a JSON array per line, UTF-8 (not mrjob's)."""

    format = "jsonl"

    def write(self, key: Any, value: Any) -> str:
        return _utf8_json([key, value])

    def lines(self, pairs: list[tuple[Any, Any]]) -> str:
        dumps = _utf8_json
        return "".join([dumps([k, v]) + "\n" for k, v in pairs])


class JSONProtocol:
    """``tsv``: the JSON key, a tab, the JSON value, byte for byte as mrjob's default
    output protocol (``JSONProtocol`` on the standard ``json`` module) writes them."""

    format = "tsv"

    def write(self, key: Any, value: Any) -> str:
        return _ascii_json(key) + "\t" + _ascii_json(value)

    def lines(self, pairs: list[tuple[Any, Any]]) -> str:
        dumps = _ascii_json
        return "".join([f"{dumps(k)}\t{dumps(v)}\n" for k, v in pairs])


class JSONValueProtocol:
    """``json-value``: the JSON value alone, as mrjob's ``JSONValueProtocol``."""

    format = "json-value"

    def write(self, key: Any, value: Any) -> str:
        return _ascii_json(value)

    def lines(self, pairs: list[tuple[Any, Any]]) -> str:
        dumps = _ascii_json
        return "".join([dumps(v) + "\n" for _, v in pairs])


class TextProtocol:
    """``text``: ``key<TAB>value`` with ``str()``, leaving out a None key or value (and
    the tab), as mrjob's ``RawProtocol``: ``(None, None)`` is an empty line."""

    format = "text"

    def write(self, key: Any, value: Any) -> str:
        _refuse_bytes({type(key), type(value)}, self.format)
        return "\t".join([f"{x}" for x in (key, value) if x is not None])

    def lines(self, pairs: list[tuple[Any, Any]]) -> str:
        if not pairs:
            return ""
        keys = list(map(_first, pairs))
        values = list(map(_second, pairs))
        key_types = set(map(type, keys))
        value_types = set(map(type, values))
        _refuse_bytes(key_types | value_types, self.format)
        # The common batches, joined in C: str() of a str is the str itself.
        if key_types == _STR:
            if value_types == _NONE:  # a sort's or a dedup's lines, written back
                return "\n".join(keys) + "\n"
            if value_types == _STR:
                return "\n".join(map("\t".join, zip(keys, values))) + "\n"
        elif key_types == _NONE and value_types == _STR:  # mrjob's `yield None, line`
            return "\n".join(values) + "\n"
        return "".join(
            [
                f"{k}\t{v}\n"
                if k is not None and v is not None
                else f"{'' if k is None else k}{'' if v is None else v}\n"
                for k, v in pairs
            ]
        )


class TextValueProtocol:
    """``raw-value``: the value alone with ``str()``, as mrjob's ``RawValueProtocol``; a
    None value is an empty line."""

    format = "raw-value"

    def write(self, key: Any, value: Any) -> str:
        _refuse_bytes({type(value)}, self.format)
        return "" if value is None else f"{value}"

    def lines(self, pairs: list[tuple[Any, Any]]) -> str:
        if not pairs:
            return ""
        values = list(map(_second, pairs))
        value_types = set(map(type, values))
        _refuse_bytes(value_types, self.format)
        if value_types == _STR:
            return "\n".join(values) + "\n"
        return "".join(["\n" if v is None else f"{v}\n" for v in values])


_STR = {str}
_NONE = {type(None)}


def _refuse_bytes(types: set[type], fmt: str) -> None:
    """A text format would write ``str(b"...")``, the repr, in place of the bytes: refuse
    it, as mrjob's text protocols do. Checked on the set of types of a batch of lines."""
    if bytes in types:
        raise TypeError(
            f"the {fmt} output format writes text, and a key or value is bytes: decode it "
            "in the job (value.decode(...), with the errors= handler that suits the data)"
        )


# mrjob's names for the same protocols (on Python 3, Raw* are its Text* classes).
RawProtocol = TextProtocol
RawValueProtocol = TextValueProtocol

BUILTIN_PROTOCOLS: dict[str, type] = {
    p.format: p
    for p in (JSONLinesProtocol, JSONProtocol, JSONValueProtocol, TextProtocol, TextValueProtocol)
}
OUTPUT_FORMATS = tuple(BUILTIN_PROTOCOLS)
"""Every ``--output-format`` name; ``jsonl`` is the default."""
PROTOCOL_PREFIX = "protocol:"
"""A plan's output format when the job class's ``OUTPUT_PROTOCOL`` writes the lines."""

LineEncoder = Callable[[list[tuple[Any, Any]]], bytes]


def output_format_of(job_cls: type, asked: str | None) -> str:
    """The output format a job gets: the one asked for (``--output-format``), else the
    class's ``OUTPUT_FORMAT`` or ``OUTPUT_PROTOCOL``, else ``jsonl``. A protocol of
    kubemr's own is named by its format; another is ``protocol:<its class name>``."""
    declared = getattr(job_cls, "OUTPUT_FORMAT", None)
    protocol = getattr(job_cls, "OUTPUT_PROTOCOL", None)
    name = job_cls.__name__
    if declared is not None and protocol is not None:
        raise JobDefinitionError(f"{name} sets both OUTPUT_FORMAT and OUTPUT_PROTOCOL: keep one")
    if protocol is not None:
        kind = protocol if isinstance(protocol, type) else type(protocol)
        if not callable(getattr(kind, "write", None)):
            raise JobDefinitionError(
                f"{name}.OUTPUT_PROTOCOL is {protocol!r}, which has no write(key, value) "
                "method: give a class or object whose write returns one line (str or bytes)"
            )
    fmt = asked or declared
    if fmt is None and protocol is not None:
        kind = protocol if isinstance(protocol, type) else type(protocol)
        builtin = BUILTIN_PROTOCOLS.get(getattr(kind, "format", ""))
        return kind.format if builtin is kind else PROTOCOL_PREFIX + kind.__qualname__
    fmt = fmt or "jsonl"
    if fmt not in BUILTIN_PROTOCOLS:
        raise OutputError(f"unknown output format {fmt!r}: use {', '.join(OUTPUT_FORMATS)}")
    return str(fmt)


def writes_keys(fmt: str) -> bool:
    """Whether lines of ``fmt`` hold the key (a value-only or custom format may not)."""
    return fmt in ("jsonl", "tsv", "text")


def line_encoder(fmt: str, job_cls: type | None = None) -> LineEncoder:
    """A function turning a list of ``(key, value)`` pairs into output lines (UTF-8).

    ``fmt`` is a plan's output format; ``protocol:...`` takes ``job_cls.OUTPUT_PROTOCOL``
    (a class is made once, here: one object per task, as mrjob makes one per job
    process). Its ``write(key, value)`` returns a line without its newline, as ``str``
    (written as UTF-8) or ``bytes`` (written as they are); the encoder has ``custom``
    set, so that its failures are reported as the user's code.
    """
    builtin = BUILTIN_PROTOCOLS.get(fmt)
    if builtin is not None:
        lines = builtin().lines

        def encode(pairs: list[tuple[Any, Any]]) -> bytes:
            return lines(pairs).encode("utf-8")

        encode.custom = False  # type: ignore[attr-defined]
        return encode
    protocol = getattr(job_cls, "OUTPUT_PROTOCOL", None) if job_cls is not None else None
    if not fmt.startswith(PROTOCOL_PREFIX) or protocol is None:
        raise OutputError(f"unknown output format {fmt!r}: use {', '.join(OUTPUT_FORMATS)}")
    if isinstance(protocol, type):
        protocol = protocol()
    write = protocol.write
    cls_name = type(protocol).__name__

    def encode_custom(pairs: list[tuple[Any, Any]]) -> bytes:
        out: list[bytes] = []
        for k, v in pairs:
            line = write(k, v)
            if type(line) is str:
                line = line.encode("utf-8")
            elif not isinstance(line, bytes | bytearray):
                raise TypeError(
                    f"{cls_name}.write returned {line!r:.100} (a {type(line).__name__}); "
                    "it must return the line as str or bytes"
                )
            out.append(line)
            out.append(b"\n")
        return b"".join(out)

    encode_custom.custom = True  # type: ignore[attr-defined]
    encode_custom.role = f"{cls_name}.write"  # type: ignore[attr-defined]
    return encode_custom


# --------------------------------------------------------------------------- overlap


def _real(url: str) -> str:
    """A comparable form of a URL: local paths resolved (symlinks, ``..``)."""
    if storage.is_remote(url):
        return url.rstrip("/")
    return os.path.realpath(local_path(url))


def _inside(path: str, parent: str) -> bool:
    """Whether ``path`` equals ``parent`` or lies below it."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_apart(output: str, patterns: Iterable[str], files: Iterable[ObjectInfo]) -> None:
    """Refuse an output that equals, contains or lies inside an input.

    An output containing an input would have the input deleted by ``--overwrite``; an
    output inside an input directory would be read back as input by the next run.
    """
    out = _real(output)
    for info in files:
        if _inside(_real(info.url), out):
            raise OutputError(
                f"output {output} holds the input file {info.url}: kubemr never writes "
                "where it reads; choose an output directory outside the inputs"
            )
    for pattern in patterns:
        if storage.is_remote(pattern) != storage.is_remote(output):
            continue
        if _is_glob(pattern) and not os.path.exists(local_path(pattern)):
            # Inside a glob's base directory is fine unless the glob would match the
            # files this job writes there.
            sample = storage.join(output, "part-00000")
            if _glob_matches(pattern, sample):
                raise OutputError(
                    f"output {output} lies where the input glob {pattern} would read it "
                    "back (its part files match the glob): choose an output outside it"
                )
            continue
        base = _real(pattern)
        if _inside(out, base):
            what = "is the input" if out == base else "lies inside the input"
            raise OutputError(
                f"output {output} {what} {pattern}: the next run would read the output as "
                "input; choose an output directory outside the inputs"
            )


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _glob_matches(pattern: str, url: str) -> bool:
    if storage.is_remote(pattern):
        return storage._glob_regex(pattern).match(url) is not None
    base = os.path.dirname(pattern.split("*")[0].split("?")[0].split("[")[0]) or "."
    real_base = os.path.realpath(base)
    rest = pattern[len(base) :] if pattern.startswith(base) else pattern
    regex = storage._glob_regex(real_base.rstrip("/") + "/" + rest.lstrip("/"))
    return regex.match(_real(url)) is not None


# --------------------------------------------------------------------------- ownership


class OutputClaim:
    """One run's hold on its output directory, from the checks before the job to
    ``_SUCCESS``.

    Local directories are locked with ``flock`` on the job record, which the kernel
    releases when the process dies, however it dies; a second run is refused while the
    first holds it. In object storage the record carries a heartbeat: a record not
    refreshed for :data:`STALE_AFTER_SECONDS` belongs to a dead run, and a run re-reads
    the record before it publishes anything, so a run that lost its output never commits.
    """

    def __init__(
        self, output: str, job_id: str, options: StorageOptions, owner: str | None = None
    ) -> None:
        self.owner = owner  # "namespace/name" of a MapReduceJob; None for a local run
        self.output = output.rstrip("/")
        self.job_id = job_id
        self.options = options
        self.remote = storage.is_remote(output)
        self.store = storage.store_for(self.output, options)
        self.record_url = storage.join(self.output, JOB_RECORD)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._held = False
        self.started = datetime.now(UTC).isoformat()

    # -- taking the output -------------------------------------------------------------
    def acquire(self, overwrite: bool) -> None:
        """Take the output or raise :class:`OutputError` saying why not."""
        try:
            self.store.check_access(self.output, write=True)
        except StorageError as exc:
            raise OutputError(f"output {self.output}: {exc}") from None
        if not self.remote:
            path = local_path(self.output)
            if os.path.isfile(path):
                raise OutputError(f"output {self.output} is a file; name a directory")
            try:
                os.makedirs(path, exist_ok=True)
                self._fd = os.open(os.path.join(path, JOB_RECORD), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write output {self.output}: {exc.strerror}") from None
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = self._read_record()
                os.close(self._fd)
                self._fd = None
                raise OutputError(
                    f"output {self.output} is being written by another kubemr run "
                    f"({_describe(other)}): wait for it to finish, or choose another output"
                ) from None
        else:
            other = self._read_record()
            if other.get("job_id") == self.job_id:
                self._held = True  # this job's own record: a retried plan stage
                return
            if other and other.get("state") == "running":
                if other.get("owner") and not overwrite:
                    # A job on Kubernetes keeps no heartbeat: it is taken as alive.
                    raise OutputError(
                        f"output {self.output} belongs to the MapReduceJob {other['owner']} "
                        f"({_describe(other)}), which has not finished: wait for it, delete "
                        "it, or set overwrite to take the output over"
                    )
                if not other.get("owner") and not _stale(other):
                    raise OutputError(
                        f"output {self.output} is being written by another kubemr run "
                        f"({_describe(other)}): wait for it to finish, or choose another "
                        f"output (a run that died is taken as gone after "
                        f"{STALE_AFTER_SECONDS:.0f}s)"
                    )
        try:
            self._check_contents(overwrite)
            self._write_record("running")
        except BaseException:
            self.release()
            raise
        self._held = True
        if self.remote and self.owner is None:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()

    def resume(self) -> None:
        """Act for the run that took the output in an earlier process (the commit stage
        of a job on Kubernetes); :meth:`check_owner` still guards every publish."""
        self._held = True
        self.check_owner()

    def _check_contents(self, overwrite: bool) -> None:
        prefix = self.output + "/"
        existing = [o for o in self.store.list(prefix) if not o.url.endswith("/" + JOB_RECORD)]
        if not existing:
            return
        foreign = [o.url for o in existing if not is_kubemr_file(o.url[len(prefix) :])]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputError(
                f"output {self.output} holds files kubemr did not write ({foreign[0]}{more}): "
                "kubemr only writes into an empty directory or, with --overwrite, replaces "
                "an earlier kubemr output; choose another output directory"
            )
        if not overwrite:
            raise OutputError(
                f"output {self.output} is not empty ({len(existing)} files of an earlier "
                "kubemr run): choose another directory, or pass --overwrite to replace them"
            )
        # The earlier output must not look complete while this run works, nor keep a
        # report of another run.
        self.store.delete(storage.join(self.output, SUCCESS))
        self.store.delete(storage.join(self.output, REPORT))

    # -- while running -----------------------------------------------------------------
    def check_owner(self) -> None:
        """Raise :class:`OutputError` unless this run still owns the output."""
        if not self.remote:
            return  # the flock is held for as long as this process lives
        record = self._read_record()
        if record.get("job_id") != self.job_id:
            raise OutputError(
                f"output {self.output} was taken over by another kubemr run "
                f"({_describe(record)}) while this one ran; nothing was published"
            )

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                if self._read_record().get("job_id") != self.job_id:
                    return
                self._write_record("running")
            except Exception:
                continue  # a missed beat is retried; staleness allows several

    # -- records -------------------------------------------------------------------------
    def _read_record(self) -> dict[str, Any]:
        try:
            if self._fd is not None and not self.remote:
                data = os.pread(self._fd, 1 << 16, 0)
            else:
                data = storage.read_bytes(self.record_url, self.options)
            record = json.loads(data or b"{}")
            return record if isinstance(record, dict) else {}
        except (FileNotFoundError, ValueError, OSError, StorageError):
            return {}

    def _write_record(self, state: str) -> None:
        record: dict[str, Any] = {
            "job_id": self.job_id,
            "state": state,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": None if self.owner else datetime.now(UTC).isoformat(),
        }
        if self.owner:
            record["owner"] = self.owner
        data = json.dumps(record, indent=1).encode()
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        else:
            storage.write_bytes(self.record_url, data, self.options)

    def finish(self, state: str) -> None:
        """Record how the run ended ("succeeded" or "failed")."""
        self._stop.set()
        if not self._held:
            return  # refused before taking the output: the record is another run's
        try:
            if not self.remote or self._read_record().get("job_id") == self.job_id:
                self._write_record(state)
        except (OSError, StorageError):
            pass  # the record is informative; _SUCCESS is what marks a complete output

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._stop.set()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # releases the flock
            self._fd = None


def _stale(record: dict[str, Any]) -> bool:
    try:
        beat = datetime.fromisoformat(record["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return True
    return (datetime.now(UTC) - beat).total_seconds() > STALE_AFTER_SECONDS


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "job unknown"
    return (
        f"job {record.get('job_id', '?')}, pid {record.get('pid', '?')} on "
        f"{record.get('host', '?')}, started {record.get('started', '?')}"
    )


# --------------------------------------------------------------------------- commit


def publish(
    claim: OutputClaim,
    parts: list[tuple[str, str]],
    summary: dict[str, Any],
    report: dict[str, Any] | None = None,
) -> None:
    """Move the chosen part files into place, remove older kubemr files, write the
    report (``_REPORT.json``) and then ``_SUCCESS``: an output with ``_SUCCESS`` has
    its report.

    ``parts`` are ``(staged_url, final_url)`` pairs. Only the run holding ``claim`` gets
    here; it checks it still does before the first byte is published.
    """
    claim.check_owner()
    store = claim.store
    keep = {final for _, final in parts}
    for staged, final in parts:
        _move(store, staged, final)
    prefix = claim.output + "/"
    for info in store.list(prefix):
        rel = info.url[len(prefix) :]
        if info.url in keep or rel in (JOB_RECORD,):
            continue
        stale = rel == REPORT and report is None  # else replaced below
        if stale or rel.split("/", 1)[0] == STAGING or _PART.match(rel) or _LOCAL_TEMP.match(rel):
            store.delete(info.url)
    if not claim.remote:
        # Empty staging directories of this and earlier runs.
        import shutil

        shutil.rmtree(os.path.join(local_path(claim.output), STAGING), ignore_errors=True)
    claim.check_owner()
    if report is not None:
        storage.write_bytes(
            storage.join(claim.output, REPORT),
            json.dumps(report, separators=(",", ":")).encode(),
            claim.options,
        )
    storage.write_bytes(
        storage.join(claim.output, SUCCESS),
        json.dumps(summary, indent=2).encode(),
        claim.options,
    )


def _move(store: Any, src: str, dst: str) -> None:
    if storage.is_remote(src):
        store.copy(src, dst)
        store.delete(src)
        return
    os.replace(local_path(src), local_path(dst))


def discard_staging(claim: OutputClaim) -> None:
    """Remove this run's staged files (a failed or interrupted run)."""
    if not claim.held:
        return
    with contextlib.suppress(Exception):
        claim.store.delete_prefix(staging_url(claim.output, claim.job_id) + "/")
        if not claim.remote:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(local_path(claim.output), STAGING))
