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
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import json
import lzma
import pickle
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import zstandard

from kubemr.errors import BadRecordError
from kubemr.storage import ObjectStore

TEXT = "text"
JSONL = "jsonl"
CSV = "csv"
INTERNAL = "internal"  # kubemr's own block format: a previous step's output
INPUT_FORMATS = (TEXT, JSONL, CSV)

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
    """One map task's input: a byte range of one file (or all of it)."""

    url: str
    start: int
    end: int
    file_size: int
    format: str = TEXT
    compression: str | None = None
    header: list[str] | None = None  # CSV column names, read once when planning

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "start": self.start,
            "end": self.end,
            "file_size": self.file_size,
            "format": self.format,
            "compression": self.compression,
            "header": self.header,
        }

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

    def line_of(self, i: int) -> int:
        return self.line_index[i] if self.line_index is not None else i

    def offset_of(self, i: int) -> int:
        """Byte offset (in the file) where record ``i`` starts."""
        if self.data is None:
            return self.offset
        pos = 0
        for _ in range(self.line_of(i)):
            pos = self.data.find(b"\n", pos) + 1
        return self.offset + pos


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
            "reads text as UTF-8; convert the file (e.g. with iconv -f UTF-16 -t UTF-8)"
        )
    return None


def _decode(block: bytes, url: str, offset: int, compression: str | None = None) -> str:
    """The block as text; at the start of a file, without its byte-order mark."""
    if offset == 0 and block.startswith(_ZIP_MAGIC):
        # checked before decoding: a stored (uncompressed) member can be valid UTF-8
        raise BadRecordError(
            f"{url} looks like a zip archive (by its first bytes): kubemr cannot read zip "
            "archives; unpack it"
        )
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = _not_text(block, url, compression) if offset == 0 else None
        if why is not None:
            raise BadRecordError(why) from None
        raise BadRecordError(
            f"{url}: invalid UTF-8 at byte offset {offset + exc.start}: {exc.reason}. "
            "kubemr reads text as UTF-8; convert the file (e.g. with iconv)"
        ) from None
    if offset == 0 and text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark is not part of the first record
    return text


def _split_lines(block: bytes, url: str, offset: int, compression: str | None = None) -> list[str]:
    text = _decode(block, url, offset, compression)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


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


# --------------------------------------------------------------------------- readers


@dataclass
class SplitReader:
    """Iterates a split's records chunk by chunk; counts bad records it may skip."""

    store: ObjectStore
    split: Split
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    skip_bad_records: int = 0
    bad_records: int = 0
    bad_examples: list[str] = field(default_factory=list)

    def chunks(self) -> Iterator[Chunk]:
        split = self.split
        if split.format == INTERNAL:
            yield from self._internal_chunks()
            return
        raw: _CountingReader | None = None
        fh: Any
        if split.compression:
            raw = _CountingReader(self.store.open_read(split.url))
            fh = _open_decompressed(raw, split.compression, split.url)
            start, end = 0, 1 << 62
        else:
            start, end = split.start, split.end
            fh = _Chained(self.store, split.url, max(start - 1, 0), end, split.file_size)
        line_no: int | None = 1 if start == 0 else None
        csv_reader = _CsvSplitReader(self, line_no) if split.format == CSV else None
        compressed_before = 0
        unreported = 0  # bytes read for lines that are not in a chunk yet
        try:
            for offset, block in line_blocks(fh, start, end, self.chunk_bytes):
                if raw is not None:
                    # progress in compressed bytes, so it adds up to the file size
                    unreported += raw.count - compressed_before
                    compressed_before = raw.count
                else:
                    unreported += len(block)
                if csv_reader is not None:
                    chunk = csv_reader.chunk(block, offset)
                    if chunk is None:
                        continue  # the whole block is one unfinished record
                else:
                    lines = _split_lines(block, split.url, offset, split.compression)
                    chunk = self._parse(lines, block, offset, line_no)
                    if line_no is not None:
                        line_no += len(lines)
                chunk.bytes_read = unreported
                unreported = 0
                yield chunk
            last = csv_reader.finish() if csv_reader is not None else None
            if last is not None:
                last.bytes_read = unreported
                yield last
        except (OSError, EOFError, zlib.error, zstandard.ZstdError, lzma.LZMAError) as exc:
            if split.compression and not isinstance(exc, FileNotFoundError):
                raise BadRecordError(
                    f"{split.url}: cannot decompress ({split.compression}): {exc}. "
                    "The file is damaged or not really compressed; fix or remove it"
                ) from None
            raise
        finally:
            fh.close()
            if raw is not None:
                raw.close()

    def _parse(self, lines: list[str], block: bytes, offset: int, line_no: int | None) -> Chunk:
        fmt = self.split.format
        if fmt == TEXT:
            return Chunk(lines, block, offset, line_no)
        if fmt != JSONL:
            raise ValueError(f"unknown input format {fmt!r}")
        records: list[Any] = []
        index: list[int] = []
        skipped_any = False
        loads = json_loads
        for i, line in enumerate(lines):
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
        return Chunk(records, block, offset, line_no, index if skipped_any else None)

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
        return locate(self.store, self.split, Chunk([], block, offset, line_no), i)

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

    def __init__(self, reader: SplitReader, line_no: int | None) -> None:
        split = reader.split
        self._reader = reader
        self._split = split
        self._whole = bool(split.compression) or (split.start == 0 and split.end >= split.file_size)
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
        text = _decode(block, self._split.url, offset, self._split.compression)
        quick = self._quick(text, offset)
        if quick is not None:
            records, index, lines = quick
            if self._line_no is not None:
                self._line_no += lines
            line_index = index if index and index[-1] != len(index) - 1 else None
            return Chunk(records, block, offset, line_no, line_index)
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
            cut = _line_start(block, unfinished, parsed.lines)
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
        return Chunk(records, block, offset, line_no, line_index)

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
                    if i or offset:  # not the header
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
        elif not row or (offset == 0 and first == 0):
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


def read_csv_header(store: ObjectStore, url: str, compression: str | None) -> list[str]:
    """The column names from a CSV file's first record (usually its first line)."""
    raw = _CountingReader(store.open_read(url))
    fh = _open_decompressed(raw, compression, url) if compression else raw
    try:
        data = b""
        rows: list[CsvRow] = []
        while True:
            more = fh.read(1 << 16)
            data += more
            if more and b"\n" not in more:
                continue
            whole = data if not more else data[: data.rfind(b"\n") + 1]
            if whole:
                # Where the first record ends, without failing on a later line that is
                # not UTF-8 (a replacement character is no quote or line break); then
                # that record alone, decoded strictly.
                found = _csv_rows(whole.decode("utf-8", "replace"))
                if found.rows:
                    first = whole[: _line_start(whole, found.ends[0], found.lines)]
                    rows = _csv_rows(_decode(first, url, 0, compression)).rows
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
