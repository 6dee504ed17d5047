"""Record readers and writers.

Input is read split by split. A split is a byte range ``[start, end)`` of one file; the
rule that keeps every record in exactly one split: **a line belongs to the split that
holds its first byte.** A reader that starts mid-file skips the partial line it lands in
(it begins at ``start - 1`` so that a line starting exactly at ``start`` is kept), and it
reads past ``end`` to finish the last line it owns. Lines end at ``\\n``; a ``\\r``
before it is dropped (CRLF files), and the last line may lack a newline. Splitting on the
``\\n`` byte is safe for UTF-8: that byte never occurs inside a multi-byte character.

Compressed files (``.gz``, ``.zst``, ``.bz2``, ``.xz``) cannot be split and are read
whole by one task. A compressed stream that stops before its end marker (a truncated
upload, a full disk) fails the task rather than yielding the records before the cut.

A CSV record ends at a line break outside quotes, so one record may span lines. Read
whole, a file is parsed as the ``csv`` module parses it; a split that covers only part
of a file cannot know whether it starts inside a quoted field, so there a record that
spans lines fails the task with a hint to keep such files whole.

Records reach the mapper in chunks (lists) of about ``chunk_bytes`` of input, which is
what lets ``mapper_batch`` work on many records per call.

Text is decoded a block of whole lines at a time with the split's encoding (UTF-8 unless
the job says otherwise). Only a block that does not decode whole is decoded again line by
line, so that the line at fault is failed, skipped as a bad record or decoded with the
job's fallback (``decode_errors``), and counted: valid input pays nothing for it. Any
encoding that writes a line break as the byte ``\\n`` is cut as UTF-8 is; UTF-16 and
UTF-32 files are cut at their own (aligned) line breaks and read whole, one task each.

The ``bytes`` format gives each line as ``bytes``, undecoded. The ``raw`` format gives a
whole file as one record, ``(local path, url)``: the file itself when it is local, else
a copy downloaded to the task's scratch directory; it is neither cut nor decompressed.
With ``with_offset``, each record reaches the mapper as ``(offset, record)``: the byte
offset of its first byte in the file (in the decompressed stream for compressed files).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import itertools
import json
import lzma
import operator
import os
import pickle
import posixpath
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import zstandard

from kubemr.errors import BadRecordError
from kubemr.storage import ObjectStore, is_remote, local_path

TEXT = "text"
JSONL = "jsonl"
CSV = "csv"
BYTES = "bytes"  # each line as bytes, undecoded
RAW = "raw"  # each file whole, as (local path, url)
INTERNAL = "internal"  # kubemr's own block format: a previous step's output
INPUT_FORMATS = (TEXT, JSONL, CSV, BYTES, RAW)
DECODED_FORMATS = (TEXT, JSONL, CSV)

UTF8 = "utf-8"
STRICT = "strict"
DECODE_ERRORS = (STRICT, "replace", "surrogateescape", "latin-1")
"""What a line that is not valid in the encoding becomes: ``strict`` fails the task (or,
with ``skip_bad_records``, skips the line as a bad record); the others decode it with
Python's error handler of that name, or as Latin-1 as a whole, and count it."""
UNDECODABLE_LINES = "map_input_undecodable_lines"
"""The counter of lines decoded with the fallback of ``decode_errors``."""
INPUT_FILE_ENV = ("mapreduce_map_input_file", "map_input_file")
INPUT_START_ENV = ("mapreduce_map_input_start", "map_input_start")
INPUT_LENGTH_ENV = ("mapreduce_map_input_length", "map_input_length")
"""The environment variables Hadoop Streaming (and so mrjob) sets in a map task: the
input file, and the split's first byte and length (both Hadoop 2 and Hadoop 1 names)."""

DEFAULT_CHUNK_BYTES = 4 << 20

_SUFFIXES = (
    (".gz", "gzip"),
    (".gzip", "gzip"),
    (".zst", "zstd"),
    (".zstd", "zstd"),
    (".bz2", "bz2"),
    (".xz", "xz"),
)


def compression_of(url: str) -> str | None:
    """The compression implied by a file name, or ``None``."""
    lower = url.lower()
    for suffix, compression in _SUFFIXES:
        if lower.endswith(suffix):
            return compression
    return None


@dataclass
class Split:
    """One map task's input: a byte range of one file (or all of it), and how to read it."""

    url: str
    start: int
    end: int
    file_size: int
    format: str = TEXT
    compression: str | None = None
    header: list[str] | None = None  # CSV column names, read once when planning
    encoding: str = UTF8
    decode_errors: str = STRICT
    with_offset: bool = False  # records reach the mapper as (offset, record)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": self.url,
            "start": self.start,
            "end": self.end,
            "file_size": self.file_size,
            "format": self.format,
            "compression": self.compression,
            "header": self.header,
        }
        # Written only when set, so that the splits of a job that sets none read the same
        # as before to every kubemr.
        if self.encoding != UTF8:
            data["encoding"] = self.encoding
        if self.decode_errors != STRICT:
            data["decode_errors"] = self.decode_errors
        if self.with_offset:
            data["with_offset"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Split:
        return cls(**data)

    def describe(self) -> str:
        if self.start == 0 and self.end >= self.file_size:
            return self.url
        return f"{self.url} bytes {self.start}-{self.end}"


@dataclass
class Chunk:
    """A list of records plus what is needed to say where record ``i`` came from."""

    records: list[Any]
    data: bytes | None  # the raw bytes of the lines (None for kubemr's block format)
    offset: int  # byte offset of ``data`` in the (decompressed) file
    first_line: int | None  # 1-based line number of the chunk's first line, if known
    line_index: list[int] | None = None  # line of record i within the chunk, when not i
    bytes_read: int = 0
    newline: bytes = b"\n"  # the encoded line break (UTF-16 and UTF-32: 2 or 4 bytes)
    _starts: list[int] | None = field(default=None, repr=False, compare=False)

    def line_of(self, i: int) -> int:
        return self.line_index[i] if self.line_index is not None else i

    def line_starts(self) -> list[int]:
        """The file offset where each line of ``data`` starts (and, last, where it ends)."""
        if self._starts is None:
            newline = self.newline
            data = self.data or b""
            parts = data.split(newline) if len(newline) == 1 else _split_aligned(data, newline)
            # len(part) + len(newline) per line, summed from the chunk's offset, all in C
            sizes = map(operator.add, map(len, parts), itertools.repeat(len(newline)))
            self._starts = list(itertools.accumulate(sizes, initial=self.offset))
        return self._starts

    def offset_of(self, i: int) -> int:
        """Byte offset (in the file) where record ``i`` starts."""
        if self.data is None:
            return self.offset
        return self.line_starts()[self.line_of(i)]

    def with_offsets(self) -> list[tuple[int, Any]]:
        """The records as ``(offset, record)``."""
        starts = self.line_starts()
        if self.line_index is None:
            return list(zip(starts, self.records))  # zip stops at the last record
        return list(zip(map(starts.__getitem__, self.line_index), self.records))


# --------------------------------------------------------------------------- encodings


@dataclass(frozen=True)
class LineCodec:
    """How the lines of one file are cut and decoded."""

    label: str  # the encoding as the job names it, for messages
    name: str  # the Python codec that decodes one line, without a byte-order mark
    newline: bytes  # the line break as encoded: lines are cut there
    bom: bytes = b""  # a byte-order mark dropped at the start of a file

    @property
    def wide(self) -> bool:
        """UTF-16 or UTF-32: a line break is several bytes, so a file is read whole."""
        return len(self.newline) > 1

    def shown(self) -> str:
        return "UTF-8" if self.name == UTF8 else self.label


_WIDE_FAMILIES = (("utf-16", codecs.BOM_UTF16_BE), ("utf-32", codecs.BOM_UTF32_BE))


def check_encoding(encoding: str) -> str:
    """The Python codec of ``encoding``, or a ``ValueError`` that says why kubemr cannot
    read lines in it."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"unknown encoding {encoding!r}: give a Python codec name, such as utf-8, "
            "latin-1, cp1252, shift_jis or utf-16"
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{encoding!r} is not a text encoding (it turns bytes into bytes)")
    name = info.name
    if name.startswith(("utf-16", "utf-32")):
        return name
    try:
        cuts_at_newline = "\n".encode(name) == b"\n" and b"a\nb".decode(name) == "a\nb"
    except (UnicodeError, ValueError):
        cuts_at_newline = False
    if name == "utf-8-sig":
        cuts_at_newline = True
    if not cuts_at_newline:
        raise ValueError(
            f"encoding {encoding!r} does not write a line break as the byte 0x0A (\\n), where "
            "kubemr cuts lines: convert the files to UTF-8 (e.g. with iconv)"
        )
    return name


def reads_whole_files(encoding: str) -> bool:
    """Whether files in ``encoding`` are read whole rather than cut at byte ranges."""
    return check_encoding(encoding).startswith(("utf-16", "utf-32"))


def line_codec(encoding: str, head: bytes = b"") -> LineCodec:
    """The codec of a file in ``encoding`` whose first bytes are ``head``: for ``utf-16``
    and ``utf-32``, its byte-order mark says which byte order (little-endian without one,
    as Python reads them)."""
    name = check_encoding(encoding)
    if name in (UTF8, "utf-8-sig"):
        return LineCodec(encoding, UTF8, b"\n", codecs.BOM_UTF8)
    for family, big_endian_bom in _WIDE_FAMILIES:
        if name.startswith(family):
            if name == family:
                order = "be" if head.startswith(big_endian_bom) else "le"
            else:
                order = name[-2:]
            line_name = f"{family}-{order}"
            return LineCodec(
                encoding, line_name, "\n".encode(line_name), "\ufeff".encode(line_name)
            )
    return LineCodec(encoding, name, b"\n")


def _split_aligned(data: bytes, newline: bytes) -> list[bytes]:
    """``data.split(newline)`` for a line break of several bytes, which only counts where
    it starts on a character boundary (a multiple of its size from the start)."""
    unit = len(newline)
    parts: list[bytes] = []
    start = pos = 0
    while True:
        j = data.find(newline, pos)
        if j < 0:
            break
        if j % unit:
            pos = j + 1
            continue
        parts.append(data[start:j])
        start = pos = j + unit
    parts.append(data[start:])
    return parts


def _last_aligned_end(data: bytes, newline: bytes) -> int:
    """Where the last whole line of ``data`` ends (after its aligned line break), or 0."""
    unit = len(newline)
    j = data.rfind(newline)
    while j > 0 and j % unit:
        j = data.rfind(newline, 0, j + unit - 1)
    return j + unit if j >= 0 and j % unit == 0 else 0


def _wide_line_blocks(fh: Any, newline: bytes, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, block)``: runs of whole lines of a whole UTF-16 or UTF-32 stream."""
    buf = b""
    base = 0
    while True:
        data = fh.read(max(chunk_bytes, 1 << 16))
        if not data:
            if buf:
                yield base, buf
            return
        buf += data
        cut = _last_aligned_end(buf, newline)
        if cut:
            yield base, buf[:cut]
            base += cut
            buf = buf[cut:]


class _Prefixed:
    """A stream with bytes already read from it put back in front."""

    def __init__(self, head: bytes, fh: Any) -> None:
        self._head = head
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head if n < 0 else head + self._fh.read(max(n - len(head), 0))
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()


def set_map_input(job: Any, split: Split | None) -> None:
    """Tell the job what a map task reads, as Hadoop Streaming tells mrjob jobs: the URL
    of the input file as ``job.input_file`` and as ``$mapreduce_map_input_file``, and the
    split's first byte and length as ``$mapreduce_map_input_start`` and
    ``$mapreduce_map_input_length`` (with their Hadoop 1 names, ``$map_input_file``, ...).
    A later step's task (``split`` None, or a previous step's output) reads no input
    file: ``input_file`` is None and the variables are unset, so that nothing is left from
    the task a worker process ran before."""
    names = INPUT_FILE_ENV + INPUT_START_ENV + INPUT_LENGTH_ENV
    if split is None or split.format == INTERNAL:
        job.input_file = None
        for name in names:
            os.environ.pop(name, None)
        return
    job.input_file = split.url
    values = (split.url, split.url, str(split.start), str(split.start))
    values += (str(split.end - split.start),) * 2
    os.environ.update(zip(names, values))


# --------------------------------------------------------------------------- raw lines


class _Chained:
    """Reads ``[start, end)`` of an object through a first ranged read that covers
    the split plus a little, then a second that runs to the end of the object only
    when the split's last line is longer than that."""

    LOOKAHEAD = 1 << 20

    def __init__(self, store: ObjectStore, url: str, start: int, end: int, size: int) -> None:
        self._store = store
        self._url = url
        self._first_end = min(size, end + self.LOOKAHEAD)
        self._size = size
        self._fh: BinaryIO | None = store.open_read(url, start, self._first_end)
        self._second = self._first_end < size

    def read(self, n: int) -> bytes:
        while self._fh is not None:
            data = self._fh.read(n)
            if data:
                return data
            self._fh.close()
            self._fh = None
            if self._second:
                self._second = False
                self._fh = self._store.open_read(self._url, self._first_end, self._size)
        return b""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _CountingReader:
    """Counts the compressed bytes a decompressor pulls, for progress and for naming
    where a damaged stream ends; ``tap``, if set, sees every piece read."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.count = 0
        self.eof = False
        self.tap: Callable[[bytes], None] | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if data:
            self.count += len(data)
            if self.tap is not None:
                self.tap(data)
        elif n != 0:
            self.eof = True
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()


def _truncated(url: str, compression: str, unit: str, offset: int) -> BadRecordError:
    return BadRecordError(
        f"{url}: the {compression} stream ends in the middle of a {unit} at compressed "
        f"byte {offset}: the file is truncated or damaged; re-create or remove it"
    )


class _GzipReader:
    """``gzip.GzipFile`` already refuses a truncated member (``EOFError``) and bytes
    after the last member that are not another one; this only says where."""

    def __init__(self, raw: _CountingReader, url: str) -> None:
        self._raw = raw
        self._url = url
        self._fh = gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, n: int = -1) -> bytes:
        try:
            return self._fh.read(n)
        except EOFError:
            raise _truncated(self._url, "gzip", "member", self._raw.count) from None

    def close(self) -> None:
        self._fh.close()


class _ZstdFrames:
    """Follows the frame layout of a zstd stream (RFC 8878) through its frame and block
    headers alone, to tell whether the stream stops between frames.

    zstandard's reader decodes frame after frame but, at the end of its input, returns
    what it has without saying whether the last frame was complete. Walking the headers
    costs a few steps per block (blocks hold up to 128 KiB), next to decoding them."""

    _FRAME = 0xFD2FB528
    _SKIPPABLE = 0x184D2A50  # the low 4 bits are free

    def __init__(self) -> None:
        self._kind = "magic"  # what the next header is
        self._need = 4  # its size
        self._head = b""  # its bytes so far, when it straddles two reads
        self._skip = 0  # payload bytes before it
        self._checksum = False  # the current frame ends with a 4-byte checksum
        self.unknown = False  # a frame this walker does not know: the decoder judges it

    def feed(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        while not self.unknown:
            if self._skip:
                step = min(self._skip, size - pos)
                pos += step
                self._skip -= step
                if self._skip:
                    return
            take = data[pos : pos + self._need - len(self._head)]
            pos += len(take)
            head = self._head + take
            if len(head) < self._need:
                self._head = head
                return
            self._head = b""
            self._header(int.from_bytes(head, "little"))

    def _header(self, value: int) -> None:
        kind = self._kind
        if kind == "magic":
            if value == self._FRAME:
                self._kind, self._need = "descriptor", 1
            elif value & ~0xF == self._SKIPPABLE:
                self._kind, self._need = "skippable", 4
            else:
                self.unknown = True
        elif kind == "skippable":
            self._skip = value
            self._kind, self._need = "magic", 4
        elif kind == "descriptor":
            single_segment = value >> 5 & 1
            content_size = (single_segment, 2, 4, 8)[value >> 6]
            dictionary_id = (0, 1, 2, 4)[value & 3]
            self._checksum = bool(value >> 2 & 1)
            self._skip = (1 - single_segment) + dictionary_id + content_size
            self._kind, self._need = "block", 3
        else:  # a block header: last-block bit, 2-bit type, 21-bit size
            block_type = value >> 1 & 3
            if block_type == 3:  # reserved: the decoder reports the damage
                self.unknown = True
                return
            self._skip = 1 if block_type == 1 else value >> 3  # an RLE block holds 1 byte
            if value & 1:
                self._skip += 4 if self._checksum else 0
                self._kind, self._need = "magic", 4

    def between_frames(self) -> bool:
        return self.unknown or (self._kind == "magic" and not self._head and not self._skip)


class _ZstdReader:
    """zstandard's streaming reader over all frames of a file (``zstd`` and ``pzstd``
    write several), with a check at the end that the last frame was complete."""

    READ_SIZE = 1 << 20

    def __init__(self, raw: _CountingReader, url: str) -> None:
        self._raw = raw
        self._url = url
        self._frames = _ZstdFrames()
        raw.tap = self._frames.feed
        self._fh = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=self.READ_SIZE, read_across_frames=True, closefd=False
        )

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if not data and n != 0:
            if not self._frames.between_frames():
                raise _truncated(self._url, "zstd", "frame", self._raw.count)
            if not self._raw.eof:  # the decoder stopped before the end of its input
                raise BadRecordError(
                    f"{self._url}: cannot decompress (zstd): decoding stopped at compressed "
                    f"byte {self._raw.count}, before the end of the file; fix or remove it"
                )
        return data

    def close(self) -> None:
        self._fh.close()


class _StreamsReader:
    """A bz2 or xz file: one or more concatenated streams (``pbzip2`` writes many).

    ``bz2.BZ2File`` and ``lzma.LZMAFile`` stop without a word at the first bytes after a
    stream that do not decode as another one, so a damaged later stream would drop the
    rest of the file; here that is an error, as is a stream cut short."""

    PIECE = 1 << 20

    def __init__(self, raw: _CountingReader, url: str, compression: str) -> None:
        self._raw = raw
        self._url = url
        self._compression = compression
        self._new: Callable[[], Any] = (
            bz2.BZ2Decompressor if compression == "bz2" else lzma.LZMADecompressor
        )
        self._padding = compression == "xz"  # xz allows NUL padding after a stream
        self._dec = self._new()

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return b"".join(iter(lambda: self.read(self.PIECE), b""))
        while True:
            dec = self._dec
            if dec.eof:
                data = dec.unused_data
                while True:
                    if self._padding:
                        data = data.lstrip(b"\0")
                    if data:
                        break
                    data = self._raw.read(self.PIECE)
                    if not data:
                        return b""
                at = self._raw.count - len(data)
                self._dec = dec = self._new()
                try:
                    out = dec.decompress(data, n)
                except (OSError, lzma.LZMAError):
                    raise BadRecordError(
                        f"{self._url}: the bytes from compressed byte {at} on, after a "
                        f"complete {self._compression} stream, are not another stream: the "
                        "file is damaged or has other data appended; fix or remove it"
                    ) from None
            else:
                data = b""
                if dec.needs_input:
                    data = self._raw.read(self.PIECE)
                    if not data:
                        raise _truncated(self._url, self._compression, "stream", self._raw.count)
                out = dec.decompress(data, n)
            if out:
                return out

    def close(self) -> None:
        pass


def _open_decompressed(raw: _CountingReader, compression: str, url: str) -> Any:
    if compression == "gzip":
        return _GzipReader(raw, url)
    if compression == "zstd":
        return _ZstdReader(raw, url)
    if compression in ("bz2", "xz"):
        return _StreamsReader(raw, url, compression)
    raise ValueError(f"unknown compression {compression!r}")


def line_blocks(fh: Any, start: int, end: int, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, block)``: runs of whole lines whose first byte is in ``[start, end)``.

    ``fh`` must be positioned at ``start - 1`` (or at 0 when ``start`` is 0). Each block
    ends with ``\\n`` except possibly the file's last line.
    """
    buf = b""
    if start > 0:
        skipped = 0
        while True:
            data = fh.read(chunk_bytes)
            if not data:
                return  # no line starts inside this split
            i = data.find(b"\n")
            if i >= 0:
                base = start - 1 + skipped + i + 1
                buf = data[i + 1 :]
                break
            skipped += len(data)
    else:
        base = 0
    eof = False
    want = chunk_bytes
    while base < end:
        while not eof and len(buf) < want:
            data = fh.read(max(want - len(buf), 1 << 16))
            if not data:
                eof = True
            else:
                buf += data
        if not buf:
            return
        if eof:
            cut = len(buf)
        else:
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # one line longer than the chunk: read on
                want = len(buf) * 2
                continue
        want = chunk_bytes
        limit = end - base  # lines starting before this index are ours
        if cut > limit:
            j = buf.find(b"\n", limit - 1)
            cut = len(buf) if j < 0 else j + 1
            yield base, buf[:cut]
            return
        yield base, buf[:cut]
        base += cut
        buf = buf[cut:]


# What a file's first bytes say it is, when it does not read as text.
_MAGIC_NUMBERS = (
    (b"\x1f\x8b", "gzip", ".gz"),
    (b"\x28\xb5\x2f\xfd", "zstd", ".zst"),
    (b"BZh", "bz2", ".bz2"),
    (b"\xfd7zXZ\x00", "xz", ".xz"),
)
_ZIP_MAGIC = b"PK\x03\x04"


def _not_text(head: bytes, url: str, compression: str | None) -> str | None:
    """Why data starting with ``head``, which is not UTF-8, is no text file, if its first
    bytes tell."""
    for magic, kind, suffix in _MAGIC_NUMBERS:
        if head.startswith(magic):
            if compression:
                return (
                    f"{url}: after {compression} decompression the data still looks "
                    f"{kind}-compressed (by its first bytes): it was compressed twice; "
                    "store it compressed once"
                )
            return (
                f"{url} looks {kind}-compressed (by its first bytes) but its name does "
                f"not end in {suffix}: rename it"
            )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return (
            f"{url} looks UTF-16 encoded (it starts with a UTF-16 byte-order mark): kubemr "
            "reads text as UTF-8 unless told otherwise; pass --encoding utf-16, or convert "
            "the file (e.g. with iconv -f UTF-16 -t UTF-8)"
        )
    return None


def _refuse_zip(block: bytes, url: str) -> None:
    """At the start of a file, before decoding: a stored (uncompressed) member of a zip
    archive can be valid text."""
    if block.startswith(_ZIP_MAGIC):
        raise BadRecordError(
            f"{url} looks like a zip archive (by its first bytes): kubemr cannot read zip "
            "archives; unpack it"
        )


def _decode(block: bytes, url: str, offset: int, codec: LineCodec) -> str:
    """The block as text, strictly; at the start of a file, without its byte-order mark."""
    if offset == 0:
        _refuse_zip(block, url)
        if codec.bom and block.startswith(codec.bom):
            block = block[len(codec.bom) :]
    try:
        return block.decode(codec.name)
    except UnicodeDecodeError as exc:
        why = _not_text(block, url, None) if offset == 0 else None
        if why is not None:
            raise BadRecordError(why) from None
        raise BadRecordError(
            f"{url}: invalid {codec.shown()} at byte offset {offset + exc.start}: {exc.reason}. "
            f"{_convert_hint(codec)}"
        ) from None


def _convert_hint(codec: LineCodec) -> str:
    return (
        f"The job reads its input as {codec.shown()}: pass --encoding NAME if the file is in "
        "another encoding, --decode-errors replace (or surrogateescape, latin-1) to decode "
        "such lines anyway or --skip-bad-records N to skip them; or convert the file (e.g. "
        "with iconv)"
    )


class _Decoder:
    """Decodes one split's blocks of whole lines (see the module doc): a block at a time,
    and line by line only where the block does not decode whole."""

    def __init__(self, reader: SplitReader, codec: LineCodec) -> None:
        self.reader = reader
        self.codec = codec
        self.errors = reader.split.decode_errors
        if self.errors not in DECODE_ERRORS:
            raise ValueError(f"unknown decode_errors {self.errors!r}: use {DECODE_ERRORS}")
        self.cr = "\r".encode(codec.name)
        self.fallbacks = 0  # lines decoded with the fallback of decode_errors
        # The file offset up to which such lines are counted: a CSV record carried over to
        # the next block is decoded again, and counted once.
        self._counted_to = 0

    def lines(
        self, block: bytes, offset: int, line_no: int | None
    ) -> tuple[list[str], list[int] | None, int]:
        """The block's lines without their line breaks; the line of the block each one
        is, when lines were skipped as bad records (else None); the block's line count."""
        try:
            text = block.decode(self.codec.name)
        except UnicodeDecodeError as exc:
            return self._line_by_line(block, offset, line_no, exc, False)[:3]
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines, None, len(lines)

    def text(self, block: bytes, offset: int, line_no: int | None) -> tuple[str, dict[int, str]]:
        """The block as text, line breaks kept (for CSV), and the lines that did not
        decode, each with why, which are to be skipped as bad records."""
        try:
            return block.decode(self.codec.name), {}
        except UnicodeDecodeError as exc:
            lines, _, _, bad = self._line_by_line(block, offset, line_no, exc, True)
        terminated = block.endswith(self.codec.newline) and (
            len(self.codec.newline) == 1 or len(block) % len(self.codec.newline) == 0
        )
        return "\n".join(lines) + ("\n" if terminated and lines else ""), bad

    def _line_by_line(
        self,
        block: bytes,
        offset: int,
        line_no: int | None,
        first_error: UnicodeDecodeError,
        keep_breaks: bool,
    ) -> tuple[list[str], list[int] | None, int, dict[int, str]]:
        reader = self.reader
        url = reader.split.url
        codec = self.codec
        if offset == 0:  # data that is no text at all fails whatever decode_errors says
            why = _not_text(block, url, reader.split.compression)
            if why is not None:
                raise BadRecordError(why) from None
        newline = codec.newline
        parts = block.split(newline) if len(newline) == 1 else _split_aligned(block, newline)
        terminated = parts[-1] == b""
        if terminated:
            parts.pop()
        name = codec.name
        cr = self.cr
        last = len(parts) - 1
        out: list[str] = []
        index: list[int] = []
        bad: dict[int, str] = {}
        pos = 0
        for i, raw in enumerate(parts):
            start = pos
            pos += len(raw) + len(newline)
            if not keep_breaks and (i < last or terminated) and raw.endswith(cr):
                raw = raw[: -len(cr)]
            try:
                line = raw.decode(name)
            except UnicodeDecodeError as exc:
                at = offset + start + exc.start
                why = f"invalid {codec.shown()} at byte offset {at}: {exc.reason}"
                fallback = self._fallback(raw, why, offset + start)
                if fallback is None:  # strict, with bad records to skip
                    if keep_breaks:  # the CSV reader skips the records this line is part of
                        bad[i] = why
                        fallback = raw.decode(name, "replace")
                    else:
                        reader._bad(block, offset, line_no, i, why)
                        continue
                line = fallback
            out.append(line)
            index.append(i)
        self._counted_to = max(self._counted_to, offset + len(block))
        return out, (index if len(index) != len(parts) else None), len(parts), bad

    def _fallback(self, raw: bytes, why: str, at: int) -> str | None:
        """A line that does not decode, decoded the way ``decode_errors`` says; None when
        it is a bad record (strict, with bad records to skip)."""
        mode = self.errors
        if mode == STRICT:
            if self.reader.skip_bad_records == 0:
                raise BadRecordError(f"{self.reader.split.url}: {why}. {_convert_hint(self.codec)}")
            return None
        if at >= self._counted_to:
            self.fallbacks += 1
        if mode == "latin-1":
            return raw.decode("latin-1")
        try:
            return raw.decode(self.codec.name, mode)
        except UnicodeDecodeError as exc:  # surrogateescape stands for bytes >= 128 only
            raise BadRecordError(
                f"{self.reader.split.url}: {why}, and --decode-errors {mode} cannot decode it "
                f"in {self.codec.label} ({exc.reason}): use --decode-errors replace"
            ) from None


class _CsvContinues(Exception):
    """The ``csv`` reader asked for a line past the end of a block."""


class _RaiseContinues:
    """The end of a block's lines, as an iterator that raises rather than ending, so a
    record cut off inside a quoted field does not come out as if it were complete."""

    def __iter__(self) -> _RaiseContinues:
        return self

    def __next__(self) -> str:
        raise _CsvContinues


_CSV_END = _RaiseContinues()

CsvRow = list[str] | csv.Error


@dataclass
class _CsvRows:
    """A block's text parsed as CSV: its complete records (or the ``csv.Error`` each
    raised), the lines each one spans (``starts[i]`` to before ``ends[i]``), the block's
    line count, and the line where a record the block ends inside starts (``lines`` when
    it ends between records)."""

    rows: list[CsvRow]
    starts: list[int]
    ends: list[int]
    lines: int
    unfinished: int


def _csv_rows(text: str) -> _CsvRows:
    """Parse ``text`` with lines keeping their line breaks, as from a file opened with
    ``newline=""``, which is what lets a quoted field hold a line break."""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    source: Iterator[str]
    if text.count("\r") == text.count("\r\n"):
        source = io.StringIO(text, newline="")  # splits at \n and \r\n, quickly
    else:  # a lone \r, which StringIO would also split at: line numbers count \n only
        parts = text.split("\n")
        last = parts.pop()
        source = iter([part + "\n" for part in parts] + ([last] if last else []))
    reader = csv.reader(itertools.chain(source, _CSV_END))
    rows: list[CsvRow] = []
    ends: list[int] = []
    unfinished = lines
    while True:
        try:
            for row in reader:
                rows.append(row)
                ends.append(reader.line_num)
            break
        except csv.Error as exc:
            rows.append(exc)
            ends.append(reader.line_num)
        except _CsvContinues:
            unfinished = ends[-1] if ends else 0  # == lines: the text ends between records
            break
    return _CsvRows(rows, [0, *ends[:-1]], ends, lines, unfinished)


def _line_start(block: bytes, k: int, lines: int) -> int:
    """Where line ``k`` of a block of ``lines`` lines starts, counted from the end: the
    lines carried over are few."""
    if k == 0:
        return 0
    if k >= lines:
        return len(block)
    pos = len(block)
    for _ in range((lines if block.endswith(b"\n") else lines - 1) - k + 1):
        pos = block.rfind(b"\n", 0, pos)
    return pos + 1


def _nth_line_start(data: bytes, k: int, newline: bytes) -> int:
    """Where line ``k`` of ``data`` starts (``len(data)`` past its last line)."""
    if len(newline) == 1:
        pos = 0
        for _ in range(k):
            pos = data.find(newline, pos) + 1
            if pos == 0:
                return len(data)
        return pos
    parts = _split_aligned(data, newline)
    return min(len(data), sum(len(part) + len(newline) for part in parts[:k]))


# --------------------------------------------------------------------------- readers


def _bytes_chunk(block: bytes, offset: int, line_no: int | None) -> Chunk:
    """The ``bytes`` format: each line as it is, without its ``\\n`` (or ``\\r\\n``)."""
    data = block.replace(b"\r\n", b"\n") if b"\r" in block else block
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return Chunk(lines, block, offset, line_no)


@dataclass
class SplitReader:
    """Iterates a split's records chunk by chunk; counts bad records it may skip."""

    store: ObjectStore
    split: Split
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    skip_bad_records: int = 0
    bad_records: int = 0
    bad_examples: list[str] = field(default_factory=list)
    scratch_dir: str | None = None  # where a raw split's remote file is downloaded
    undecodable_lines: int = 0  # lines decoded with the fallback of decode_errors
    _newline: bytes = field(default=b"\n", repr=False)
    _first_offset: int = field(default=0, repr=False)  # where the file's first line starts

    def chunks(self) -> Iterator[Chunk]:
        split = self.split
        if split.format == INTERNAL:
            yield from self._internal_chunks()
            return
        if split.format == RAW:
            yield from self._raw_chunks()
            return
        decoder: _Decoder | None = None
        codec: LineCodec | None = None
        if split.format in DECODED_FORMATS:
            codec = line_codec(split.encoding)
            if codec.wide and split.start > 0:
                return  # a UTF-16 or UTF-32 file is read whole, by the split at its start
        elif split.format != BYTES:
            raise ValueError(f"unknown input format {split.format!r}")
        raw: _CountingReader | None = None
        fh: Any
        if split.compression:
            raw = _CountingReader(self.store.open_read(split.url))
            fh = _open_decompressed(raw, split.compression, split.url)
            start, end = 0, 1 << 62
        elif codec is not None and codec.wide:
            fh = self.store.open_read(split.url)
            start, end = 0, 1 << 62
        else:
            start, end = split.start, split.end
            fh = _Chained(self.store, split.url, max(start - 1, 0), end, split.file_size)
        line_no: int | None = 1 if start == 0 else None
        whole = start == 0 and end >= split.file_size
        csv_reader = _CsvSplitReader(self, line_no, whole) if split.format == CSV else None
        compressed_before = 0
        unreported = 0  # bytes read for lines that are not in a chunk yet
        try:
            if codec is not None and codec.wide:
                head = _read_exact(fh, 4)
                codec = line_codec(split.encoding, head)
                self._newline = codec.newline
                blocks = _wide_line_blocks(_Prefixed(head, fh), codec.newline, self.chunk_bytes)
            else:
                blocks = line_blocks(fh, start, end, self.chunk_bytes)
            if codec is not None:
                decoder = _Decoder(self, codec)
                if csv_reader is not None:
                    csv_reader.decoder = decoder
            for offset, block in blocks:
                if raw is not None:
                    # progress in compressed bytes, so it adds up to the file size
                    unreported += raw.count - compressed_before
                    compressed_before = raw.count
                else:
                    unreported += len(block)
                if offset == 0 and codec is not None:  # the start of the file
                    _refuse_zip(block, split.url)
                    if codec.bom and block.startswith(codec.bom):
                        # a byte-order mark is not part of the first record
                        block = block[len(codec.bom) :]
                        offset = self._first_offset = len(codec.bom)
                if csv_reader is not None:
                    chunk = csv_reader.chunk(block, offset)
                    if chunk is None:
                        continue  # the whole block is one unfinished record
                elif decoder is not None:
                    lines, index, count = decoder.lines(block, offset, line_no)
                    chunk = self._parse(lines, index, block, offset, line_no)
                    if line_no is not None:
                        line_no += count
                else:
                    chunk = _bytes_chunk(block, offset, line_no)
                    if line_no is not None:
                        line_no += len(chunk.records)
                chunk.bytes_read = unreported
                unreported = 0
                if split.with_offset:
                    chunk.records = chunk.with_offsets()
                yield chunk
            last = csv_reader.finish() if csv_reader is not None else None
            if last is not None:
                last.bytes_read = unreported
                if split.with_offset:
                    last.records = last.with_offsets()
                yield last
        except (OSError, EOFError, zlib.error, zstandard.ZstdError, lzma.LZMAError) as exc:
            if split.compression and not isinstance(exc, FileNotFoundError):
                raise BadRecordError(
                    f"{split.url}: cannot decompress ({split.compression}): {exc}. "
                    "The file is damaged or not really compressed; fix or remove it"
                ) from None
            raise
        finally:
            if decoder is not None:
                self.undecodable_lines += decoder.fallbacks
            fh.close()
            if raw is not None:
                raw.close()

    def _parse(
        self,
        lines: list[str],
        given: list[int] | None,
        block: bytes,
        offset: int,
        line_no: int | None,
    ) -> Chunk:
        """``lines`` of the block parsed; ``given``: the line of the block each one is,
        when lines were skipped (else line ``i`` is ``lines[i]``)."""
        fmt = self.split.format
        newline = self._newline
        if fmt == TEXT:
            return Chunk(lines, block, offset, line_no, given, newline=newline)
        if fmt != JSONL:
            raise ValueError(f"unknown input format {fmt!r}")
        records: list[Any] = []
        index: list[int] = []
        skipped_any = given is not None
        loads = json_loads
        for i, line in zip(range(len(lines)) if given is None else given, lines):
            if not line or line.isspace():
                skipped_any = True
                continue
            try:
                records.append(loads(line))
            except ValueError as exc:
                self._bad(block, offset, line_no, i, f"malformed JSON: {exc}")
                skipped_any = True
                continue
            index.append(i)
        line_index = index if skipped_any else None
        return Chunk(records, block, offset, line_no, line_index, newline=newline)

    def _raw_chunks(self) -> Iterator[Chunk]:
        """One record, ``(local path, url)``: the file itself when it is local, else a
        read-only copy in a directory of its own under the scratch directory, removed when
        the record has been mapped. Compressed files are given as they are."""
        split = self.split
        if not is_remote(split.url):
            chunk = Chunk([(local_path(split.url), split.url)], None, 0, None)
            chunk.bytes_read = split.file_size
            yield chunk
            return
        where = tempfile.mkdtemp(prefix="kubemr-raw-", dir=self.scratch_dir)
        try:
            path = os.path.join(where, posixpath.basename(split.url.rstrip("/")) or "input")
            with self.store.open_read(split.url) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
                got = dst.tell()
            if got != split.file_size:
                raise BadRecordError(
                    f"{split.url}: downloaded {got} bytes, but the file had {split.file_size} "
                    "when the job was planned: was it changed while the job ran?"
                )
            os.chmod(path, 0o444)
            chunk = Chunk([(path, split.url)], None, 0, None)
            chunk.bytes_read = got
            yield chunk
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def _bad(self, block: bytes, offset: int, line_no: int | None, i: int, why: str) -> None:
        where = self._where(block, offset, line_no, i)
        self.bad_records += 1
        if self.bad_records > self.skip_bad_records:
            hint = (
                "fix the record, or pass --skip-bad-records N to skip and count up to N"
                if self.skip_bad_records == 0
                else f"more than --skip-bad-records {self.skip_bad_records} bad records"
            )
            raise BadRecordError(f"{where}: {why}; {hint}")
        if len(self.bad_examples) < 5:
            self.bad_examples.append(f"{where}: {why}")

    def _where(self, block: bytes, offset: int, line_no: int | None, i: int) -> str:
        chunk = Chunk([], block, offset, line_no, newline=self._newline)
        return locate(self.store, self.split, chunk, i)

    def _internal_chunks(self) -> Iterator[Chunk]:
        with self.store.open_read(self.split.url) as fh:
            for keys, values, nbytes in iter_blocks(fh):
                chunk = Chunk(list(zip(keys, values)), None, 0, None)
                chunk.bytes_read = nbytes
                yield chunk


class _CsvSplitReader:
    """Blocks of whole lines to chunks of CSV records, one record possibly spanning
    lines (a quoted field with a line break).

    Read whole, a record that runs past the end of a block is carried over to the next
    block, so that every chunk holds whole records. A split covering part of a file may
    start inside such a field without being able to tell, so there a record spanning
    lines is an error. The split that holds the line where the file's first such record
    starts always sees it start, so a file with one never passes unnoticed.
    """

    SPANS = (
        "the CSV file has a quoted field with a line break, so it cannot be split at "
        "arbitrary bytes; pass --split-size 0 (one task per file)"
    )

    def __init__(self, reader: SplitReader, line_no: int | None, whole: bool) -> None:
        split = reader.split
        self._reader = reader
        self._split = split
        self._whole = whole
        self.decoder: _Decoder | None = None
        self._bad_lines: dict[int, str] = {}  # lines of the block that did not decode
        self._header = split.header or []
        self._line_no = line_no
        self._carry: list[bytes] = []  # a record that goes on in the next block, and more
        self._carry_size = 0
        self._carry_offset = 0
        self._tried = 0  # carried bytes when last parsed: wait for twice that, so a very
        # long record is parsed a few times, not once per block

    def chunk(self, block: bytes, offset: int) -> Chunk | None:
        if self._carry:
            self._carry.append(block)
            self._carry_size += len(block)
            if self._carry_size < 2 * self._tried:
                return None
            block = b"".join(self._carry)
            offset = self._carry_offset
            self._carry = []
        return self._parse(block, offset, final=False)

    def finish(self) -> Chunk | None:
        """The records still carried after the last block; one still open then has a
        quote that is never closed."""
        if not self._carry:
            return None
        block = b"".join(self._carry)
        self._carry = []
        return self._parse(block, self._carry_offset, final=True)

    def _parse(self, block: bytes, offset: int, final: bool) -> Chunk | None:
        reader = self._reader
        line_no = self._line_no
        assert self.decoder is not None
        text, bad = self.decoder.text(block, offset, line_no)
        self._bad_lines = bad
        quick = self._quick(text, offset)
        if quick is not None:
            records, index, lines = quick
            if bad:  # the records on lines that did not decode are bad records
                kept = [(rec, i) for rec, i in zip(records, index) if i not in bad]
                for i in sorted(set(index) & bad.keys()):
                    reader._bad(block, offset, line_no, i, bad[i])
                records = [rec for rec, _ in kept]
                index = [i for _, i in kept]
            if self._line_no is not None:
                self._line_no += lines
            line_index = index if index and index[-1] != len(index) - 1 else None
            return Chunk(records, block, offset, line_no, line_index, newline=reader._newline)
        parsed = _csv_rows(text)
        unfinished = parsed.unfinished
        if unfinished < parsed.lines and self._whole:
            if final:
                where = reader._where(block, offset, line_no, unfinished)
                raise BadRecordError(
                    f"{where}: a quoted field opened in this record is not closed by the "
                    f"end of the file ({parsed.lines - unfinished} lines on); fix the file (a "
                    "stray or missing quote?)"
                )
            newline = reader._newline
            if len(newline) == 1:
                cut = _line_start(block, unfinished, parsed.lines)
            else:
                cut = _nth_line_start(block, unfinished, newline)
            self._carry = [block[cut:]]
            self._carry_size = self._tried = len(block) - cut
            self._carry_offset = offset + cut
            if unfinished == 0:
                return None
            block = block[:cut]
        records: list[dict[str, str]] = []
        index: list[int] = []
        for first, end, row in zip(parsed.starts, parsed.ends, parsed.rows):
            self._row(block, offset, line_no, first, end - first, row, records, index)
        if unfinished < parsed.lines and not self._whole:  # the last line opens a quoted field
            where = reader._where(block, offset, line_no, unfinished)
            raise BadRecordError(f"{where}: {self.SPANS}")
        if self._line_no is not None:
            self._line_no += unfinished
        line_index = index if index and index[-1] != len(index) - 1 else None
        return Chunk(records, block, offset, line_no, line_index, newline=reader._newline)

    def _quick(self, text: str, offset: int) -> tuple[list[dict[str, str]], list[int], int] | None:
        """The records, their lines and the line count, when every record is on one line
        and has the header's width: the usual case, parsed at the speed of the ``csv``
        module. ``None`` for anything else, before any side effect, and the block is
        parsed again record by record. Strict parsing only adds errors, among them one
        for text ending inside a quoted field."""
        if text.count("\r") != text.count("\r\n"):
            return None  # a lone \r: StringIO would split lines there
        header = self._header
        width = len(header)
        records: list[dict[str, str]] = []
        index: list[int] = []
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        i = 0
        try:
            for row in reader:
                if reader.line_num != i + 1:
                    return None  # a record spanning lines
                if len(row) == width:
                    if i or offset != self._reader._first_offset:  # not the header
                        records.append(dict(zip(header, row)))
                        index.append(i)
                elif row:
                    return None  # a bad record
                i += 1
        except csv.Error:
            return None
        return records, index, i

    def _row(
        self,
        block: bytes,
        offset: int,
        line_no: int | None,
        first: int,
        count: int,
        row: CsvRow,
        records: list[dict[str, str]],
        index: list[int],
    ) -> None:
        """Adds row ``first`` (of ``count`` lines) to the records, or reports it."""
        reader = self._reader
        if count > 1 and not self._whole:
            where = reader._where(block, offset, line_no, first)
            raise BadRecordError(f"{where}: {self.SPANS}")
        bad = self._bad_lines
        undecoded = [bad[j] for j in range(first, first + count) if j in bad]
        if undecoded:
            reader._bad(block, offset, line_no, first, undecoded[0])
            return
        if isinstance(row, csv.Error):
            if count > 1:
                # where the next record starts is unknown: the error stops the reader
                where = reader._where(block, offset, line_no, first)
                raise BadRecordError(
                    f"{where}: malformed CSV record spanning {count} lines (a stray or "
                    f"missing quote?): {row}"
                )
            why = str(row)
            if why.startswith("new-line character seen in unquoted field"):
                why = "a carriage return (\\r) in an unquoted field; quote the field"
            reader._bad(block, offset, line_no, first, f"malformed CSV record: {why}")
        elif not row or (offset == reader._first_offset and first == 0):
            return  # a blank line, or the header itself
        elif len(row) != len(self._header):
            hint = (
                ""
                if self._whole
                else " (a quoted field with a line break? such files need --split-size 0)"
            )
            why = f"CSV record has {len(row)} fields, the header has {len(self._header)}{hint}"
            reader._bad(block, offset, line_no, first, why)
        else:
            records.append(dict(zip(self._header, row)))  # a record spanning lines
            index.append(first)


def locate(store: ObjectStore, split: Split, chunk: Chunk, i: int) -> str:
    """``file:line (byte offset N)`` for record ``i`` of a chunk."""
    if split.format == RAW:
        return f"{split.url} (the whole file, read raw)"
    if chunk.data is None:
        return f"{split.url} (a record of a previous step's output)"
    offset = chunk.offset_of(i)
    if chunk.first_line is not None:
        line = chunk.first_line + chunk.line_of(i)
    else:
        line = count_lines_before(store, split.url, chunk.offset) + 1 + chunk.line_of(i)
    return f"{split.url}:{line} (byte offset {offset})"


def count_lines_before(store: ObjectStore, url: str, offset: int) -> int:
    """How many newlines precede ``offset``: only used to report an error's line number."""
    count = 0
    with store.open_read(url, 0, offset) as fh:
        while True:
            data = fh.read(8 << 20)
            if not data:
                return count
            count += data.count(b"\n")


def read_csv_header(
    store: ObjectStore, url: str, compression: str | None, encoding: str = UTF8
) -> list[str]:
    """The column names from a CSV file's first record (usually its first line)."""
    raw = _CountingReader(store.open_read(url))
    fh = _open_decompressed(raw, compression, url) if compression else raw
    try:
        data = b""
        rows: list[CsvRow] = []
        codec: LineCodec | None = None
        done = 0  # bytes of whole lines already looked at
        while True:
            more = fh.read(1 << 16)
            data += more
            if codec is None:
                if more and len(data) < 4:
                    continue
                codec = line_codec(encoding, data[:4])
            end = _last_aligned_end(data, codec.newline) if more else len(data)
            if more and end <= done:
                continue
            done = end
            whole = data[:end]
            body = whole[len(codec.bom) :] if codec.bom and whole.startswith(codec.bom) else whole
            if body:
                # Where the first record ends, without failing on a later line that does
                # not decode (a replacement character is no quote or line break); then
                # that record alone, decoded strictly.
                found = _csv_rows(body.decode(codec.name, "replace"))
                if found.rows:
                    ends = _nth_line_start(body, found.ends[0], codec.newline)
                    first = whole[: len(whole) - len(body) + ends]
                    rows = _csv_rows(_decode(first, url, 0, codec)).rows
            if rows or not more:
                break
    finally:
        if fh is not raw:
            fh.close()
        raw.close()
    if not rows:
        if not data:
            raise BadRecordError(f"{url}: the CSV file has no header line")
        raise BadRecordError(
            f"{url}: the CSV header has a quoted field that is not closed by the end of "
            "the file; fix the file (a stray or missing quote)"
        )
    header = rows[0]
    if isinstance(header, csv.Error):
        raise BadRecordError(f"{url}: cannot read the CSV header: {header}")
    if not header:
        raise BadRecordError(f"{url}: the CSV file has no header line")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise BadRecordError(
                f"{url}: the CSV header names the column {name!r} twice; records are dicts "
                "by column name, so one of the columns would be lost: rename one"
            )
        seen.add(name)
    return header


# --------------------------------------------------------------------------- blocks

# kubemr's block format, used for shuffle data and between steps: a block is
# <u32 payload length><u32 record count><u32 raw length> then a zstd frame holding
# pickle((keys, values)). Columns pickle smaller and faster than a list of pairs.
BLOCK_HEADER = struct.Struct("<III")
BLOCK_RECORDS = 32768

_compressor: zstandard.ZstdCompressor | None = None
_decompressor: zstandard.ZstdDecompressor | None = None


def encode_block(keys: list[Any], values: list[Any]) -> tuple[bytes, int]:
    """One block's bytes and the size of its uncompressed payload."""
    global _compressor
    if _compressor is None:
        _compressor = zstandard.ZstdCompressor(level=1)
    raw = pickle.dumps((keys, values), protocol=5)
    payload = _compressor.compress(raw)
    return BLOCK_HEADER.pack(len(payload), len(keys), len(raw)) + payload, len(raw)


def decode_payload(payload: bytes, raw_len: int) -> tuple[list[Any], list[Any]]:
    global _decompressor
    if _decompressor is None:
        _decompressor = zstandard.ZstdDecompressor()
    keys, values = pickle.loads(_decompressor.decompress(payload, max_output_size=raw_len))
    return keys, values


def iter_blocks(fh: Any) -> Iterator[tuple[list[Any], list[Any], int]]:
    """Yield ``(keys, values, bytes)`` for each block in a stream of blocks."""
    header_size = BLOCK_HEADER.size
    while True:
        header = _read_exact(fh, header_size)
        if not header:
            return
        if len(header) < header_size:
            raise OSError("truncated block header in shuffle data")
        length, _count, raw_len = BLOCK_HEADER.unpack(header)
        payload = _read_exact(fh, length)
        if len(payload) < length:
            raise OSError("truncated block in shuffle data")
        keys, values = decode_payload(payload, raw_len)
        yield keys, values, header_size + length


def _read_exact(fh: Any, n: int) -> bytes:
    data = fh.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = fh.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


# --------------------------------------------------------------------------- output

_LONG_DIGITS = re.compile(r"[0-9]{19}")


def _make_json_loads() -> Callable[[str], Any]:
    """``json.loads``, through orjson (several times faster) wherever orjson gives the
    very same result: orjson turns integers beyond 64 bits into floats, so a line with
    19 digits in a row goes to ``json``, and so does anything orjson rejects (``NaN``,
    ``Infinity``, lone surrogates), which ``json`` then accepts or words the error for."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return json.loads
    fast = orjson.loads
    std = json.loads
    long_digits = _LONG_DIGITS.search

    def loads(line: str) -> Any:
        if long_digits(line) is None:
            try:
                return fast(line)
            except ValueError:
                pass
        return std(line)

    return loads


json_loads = _make_json_loads()


def open_text_writer(raw: BinaryIO) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")  # type: ignore[type-var]
