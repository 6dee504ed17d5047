"""Record readers and writers.

Input is read split by split. A split is a byte range ``[start, end)`` of one file; the
rule that keeps every record in exactly one split: **a line belongs to the split that
holds its first byte.** A reader that starts mid-file skips the partial line it lands in
(it begins at ``start - 1`` so that a line starting exactly at ``start`` is kept), and it
reads past ``end`` to finish the last line it owns. Lines end at ``\\n``; a ``\\r``
before it is dropped (CRLF files), and the last line may lack a newline. Splitting on the
``\\n`` byte is safe for UTF-8: that byte never occurs inside a multi-byte character.

Compressed files (``.gz``, ``.zst``) cannot be split and are read whole by one task.

Records reach the mapper in chunks (lists) of about ``chunk_bytes`` of input, which is
what lets ``mapper_batch`` work on many records per call.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
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


def compression_of(url: str) -> str | None:
    """The compression implied by a file name, or ``None``."""
    lower = url.lower()
    if lower.endswith(".gz") or lower.endswith(".gzip"):
        return "gzip"
    if lower.endswith(".zst") or lower.endswith(".zstd"):
        return "zstd"
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
    """Counts the compressed bytes a decompressor pulls, for progress."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()


def _open_decompressed(raw: Any, compression: str) -> Any:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
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


def _split_lines(block: bytes, url: str, offset: int) -> list[str]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecordError(
            f"{url}: invalid UTF-8 at byte offset {offset + exc.start}: {exc.reason}. "
            "kubemr reads text as UTF-8; convert the file (e.g. with iconv)"
        ) from None
    if offset == 0 and text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark is not part of the first record
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


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
        if split.compression:
            raw = _CountingReader(self.store.open_read(split.url))
            fh = _open_decompressed(raw, split.compression)
            start, end = 0, 1 << 62
        else:
            raw = None
            start, end = split.start, split.end
            fh = _Chained(self.store, split.url, max(start - 1, 0), end, split.file_size)
        line_no: int | None = 1 if start == 0 else None
        compressed_before = 0
        try:
            for offset, block in line_blocks(fh, start, end, self.chunk_bytes):
                lines = _split_lines(block, split.url, offset)
                chunk = self._parse(lines, block, offset, line_no)
                if raw is not None:
                    # progress in compressed bytes, so it adds up to the file size
                    chunk.bytes_read = raw.count - compressed_before
                    compressed_before = raw.count
                else:
                    chunk.bytes_read = len(block)
                if line_no is not None:
                    line_no += len(lines)
                yield chunk
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
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
        records: list[Any] = []
        index: list[int] = []
        skipped_any = False
        if fmt == JSONL:
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
        elif fmt == CSV:
            header = self.split.header or []
            first = 0
            if offset == 0 and lines:
                first = 1  # the header line itself
                skipped_any = True
            width = len(header)
            for i, row in enumerate(csv.reader(lines[first:]), start=first):
                if not row:
                    skipped_any = True
                    continue
                if len(row) != width:
                    self._bad(
                        block,
                        offset,
                        line_no,
                        i,
                        f"CSV record has {len(row)} fields, the header has {width} "
                        "(a quoted field with a line break? such files need --split-size 0)",
                    )
                    skipped_any = True
                    continue
                records.append(dict(zip(header, row)))
                index.append(i)
        else:
            raise ValueError(f"unknown input format {fmt!r}")
        return Chunk(records, block, offset, line_no, index if skipped_any else None)

    def _bad(self, block: bytes, offset: int, line_no: int | None, i: int, why: str) -> None:
        chunk = Chunk([], block, offset, line_no)
        where = locate(self.store, self.split, chunk, i)
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

    def _internal_chunks(self) -> Iterator[Chunk]:
        with self.store.open_read(self.split.url) as fh:
            for keys, values, nbytes in iter_blocks(fh):
                chunk = Chunk(list(zip(keys, values)), None, 0, None)
                chunk.bytes_read = nbytes
                yield chunk


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
    """The column names from a CSV file's first line."""
    raw = store.open_read(url)
    fh = _open_decompressed(raw, compression) if compression else raw
    try:
        first = b""
        while b"\n" not in first:
            data = fh.read(1 << 16)
            if not data:
                break
            first += data
    finally:
        fh.close()
    line = first.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    if not line:
        raise BadRecordError(f"{url}: the CSV file has no header line")
    return next(csv.reader([line]))


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


OUTPUT_FORMATS = ("jsonl", "tsv", "text")


def output_line_encoder(fmt: str) -> Any:
    """A function turning a list of ``(key, value)`` pairs into output text."""
    if fmt == "jsonl":
        dumps = json.JSONEncoder(ensure_ascii=False).encode

        def jsonl(pairs: list[tuple[Any, Any]]) -> str:
            return "".join([dumps([k, v]) + "\n" for k, v in pairs])

        return jsonl
    if fmt == "tsv":
        dumps = json.JSONEncoder(ensure_ascii=False).encode

        def tsv(pairs: list[tuple[Any, Any]]) -> str:
            return "".join([f"{dumps(k)}\t{dumps(v)}\n" for k, v in pairs])

        return tsv
    if fmt == "text":

        def text(pairs: list[tuple[Any, Any]]) -> str:
            # As Hadoop's TextOutputFormat: a None key or value is left out.
            return "".join(
                [
                    f"{v}\n" if k is None else f"{k}\n" if v is None else f"{k}\t{v}\n"
                    for k, v in pairs
                ]
            )

        return text
    raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")


def open_text_writer(raw: BinaryIO) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")  # type: ignore[type-var]
