"""Input that cannot be read right fails loudly, naming the file and what to do:
truncated or damaged compressed files, compressed data under a plain name, and CSV
records with line breaks in quoted fields."""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemr import formats
from kubemr.errors import BadRecordError
from kubemr.formats import (
    CSV,
    JSONL,
    TEXT,
    Split,
    SplitReader,
    compression_of,
    locate,
    read_csv_header,
)
from kubemr.plan import make_splits
from kubemr.storage import ObjectInfo
from kubemr.storage.local import LocalStore

store = LocalStore()


def read_all(
    path: str | Path,
    split_size: int = 0,
    fmt: str = TEXT,
    chunk_bytes: int = 1 << 20,
    skip_bad_records: int = 0,
) -> list:
    path = str(path)
    info = ObjectInfo(path, os.path.getsize(path))
    headers = {path: read_csv_header(store, path, compression_of(path))} if fmt == CSV else None
    records = []
    for split in make_splits([info], split_size, fmt, compression_of, headers):
        reader = SplitReader(store, split, chunk_bytes, skip_bad_records)
        for chunk in reader.chunks():
            records.extend(chunk.records)
    return records


def text_lines(count: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "ünïcödé", "☃", "x" * 17]
    return [f"{i} " + " ".join(rnd.choices(words, k=rnd.randint(0, 12))) for i in range(count)]


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "zst":
        return zstandard.ZstdCompressor().compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    raise ValueError(kind)


# --------------------------------------------------------------------------- compression


def test_compression_of_knows_bz2_and_xz() -> None:
    assert compression_of("s3://b/logs/x.txt.bz2") == "bz2"
    assert compression_of("data/X.JSONL.XZ") == "xz"
    assert compression_of("a.csv.gz") == "gzip"
    assert compression_of("a.zstd") == "zstd"
    assert compression_of("a.txt") is None


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2", "xz"])
def test_compressed_kinds_are_read_whole_with_progress_in_compressed_bytes(
    tmp_path: Path, kind: str
) -> None:
    lines = text_lines(30_000)
    path = tmp_path / f"in.txt.{kind}"
    path.write_bytes(compress(("\n".join(lines) + "\n").encode(), kind))
    size = path.stat().st_size
    splits = make_splits([ObjectInfo(str(path), size)], 100, TEXT, compression_of)
    assert len(splits) == 1 and splits[0].compression == compression_of(str(path))
    reader = SplitReader(store, splits[0], 4096)
    records: list[str] = []
    progress = 0
    for chunk in reader.chunks():
        records.extend(chunk.records)
        progress += chunk.bytes_read
    assert records == lines
    assert progress == size


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2", "xz"])
def test_concatenated_streams_are_all_read(tmp_path: Path, kind: str) -> None:
    parts = [text_lines(2000, seed) for seed in range(3)]
    path = tmp_path / f"multi.jsonl.{kind}"
    path.write_bytes(b"".join(compress(("\n".join(p) + "\n").encode(), kind) for p in parts))
    assert read_all(path, chunk_bytes=1000) == [line for p in parts for line in p]


def test_zstd_skippable_and_empty_frames_are_read(tmp_path: Path) -> None:
    lines = text_lines(1000)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    cctx = zstandard.ZstdCompressor()
    data = (
        cctx.compress(b"")
        + skippable
        + cctx.compress(("\n".join(lines) + "\n").encode())
        + skippable
    )
    path = tmp_path / "frames.txt.zst"
    path.write_bytes(data)
    assert read_all(path) == lines


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"level": 19, "write_checksum": True},
        {"write_content_size": False},
        {"level": 1, "write_checksum": True, "write_content_size": False},
    ],
)
def test_truncated_zstd_fails_naming_the_byte(tmp_path: Path, options: dict) -> None:
    data = ("\n".join(text_lines(20_000)) + "\n").encode()
    full = zstandard.ZstdCompressor(**options).compress(data)
    path = tmp_path / "cut.txt.zst"
    rnd = random.Random(7)
    cuts = list(range(1, 40)) + rnd.sample(range(40, len(full)), 40) + [len(full) - 1]
    for cut in cuts:
        path.write_bytes(full[:cut])
        with pytest.raises(BadRecordError) as info:
            read_all(path, chunk_bytes=1 << 16)
        message = str(info.value)
        assert "cut.txt.zst" in message, cut
        if "cannot decompress" not in message:  # a cut in a header can also read as damage
            assert f"zstd stream ends in the middle of a frame at compressed byte {cut}:" in (
                message
            )
            assert "truncated or damaged" in message


def test_truncated_zstd_message(tmp_path: Path) -> None:
    data = ("\n".join(text_lines(50_000)) + "\n").encode()
    full = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / "x.zst"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(
        BadRecordError,
        match=rf"x\.zst: the zstd stream ends in the middle of a frame at compressed byte "
        rf"{len(full) // 2}: the file is truncated or damaged; re-create or remove it",
    ):
        read_all(path)


def test_truncated_multi_frame_zstd_fails(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    frames = [cctx.compress(("\n".join(text_lines(3000, s)) + "\n").encode()) for s in range(3)]
    data = b"".join(frames)
    path = tmp_path / "multi.txt.zst"
    cut = len(frames[0]) + len(frames[1]) // 2
    path.write_bytes(data[:cut])
    with pytest.raises(BadRecordError, match=rf"middle of a frame at compressed byte {cut}:"):
        read_all(path)


@pytest.mark.parametrize(("kind", "name"), [("gz", "gzip"), ("bz2", "bz2"), ("xz", "xz")])
def test_truncated_stdlib_compression_fails_naming_the_byte(
    tmp_path: Path, kind: str, name: str
) -> None:
    data = ("\n".join(text_lines(20_000)) + "\n").encode()
    full = compress(data, kind)
    path = tmp_path / f"cut.txt.{kind}"
    for cut in (len(full) // 3, len(full) - 1):
        path.write_bytes(full[:cut])
        with pytest.raises(
            BadRecordError,
            match=rf"cut\.txt\.{kind}: the {name} stream ends in the middle of a \w+ at "
            rf"compressed byte {cut}: the file is truncated or damaged",
        ):
            read_all(path)


@pytest.mark.parametrize("kind", ["bz2", "xz"])
def test_bytes_after_the_last_stream_are_an_error(tmp_path: Path, kind: str) -> None:
    # bz2.BZ2File and lzma.LZMAFile drop such bytes without a word, and with them a
    # damaged later stream and every record in it.
    first = compress(b"one\ntwo\n", kind)
    second = compress(b"three\nfour\n", kind)
    path = tmp_path / f"tail.txt.{kind}"
    for tail in (b"not compressed at all\n", b"\x01\x00garbage" + second[8:]):
        path.write_bytes(first + tail)
        with pytest.raises(
            BadRecordError,
            match=rf"tail\.txt\.{kind}: the bytes from compressed byte {len(first)} on, "
            rf"after a complete {kind} stream, are not another stream",
        ):
            read_all(path)


def test_xz_stream_padding_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "pad.txt.xz"
    path.write_bytes(compress(b"a\nb\n", "xz") + b"\0" * 8 + compress(b"c\n", "xz") + b"\0" * 4)
    assert read_all(path) == ["a", "b", "c"]


def test_gzip_trailing_garbage_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "tail.txt.gz"
    path.write_bytes(gzip.compress(b"a\nb\n") + b"garbage")
    with pytest.raises(BadRecordError, match=r"tail\.txt\.gz: cannot decompress \(gzip\)"):
        read_all(path)


def test_truncated_compressed_csv_header_fails(tmp_path: Path) -> None:
    path = tmp_path / "h.csv.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"a,b,c")[:-3])
    with pytest.raises(BadRecordError, match=r"h\.csv\.zst: the zstd stream ends"):
        read_csv_header(store, str(path), "zstd")


# --------------------------------------------------------------------------- not text


@pytest.mark.parametrize(
    ("kind", "name", "suffix"),
    [("gz", "gzip", ".gz"), ("zst", "zstd", ".zst"), ("bz2", "bz2", ".bz2"), ("xz", "xz", ".xz")],
)
@pytest.mark.parametrize("fmt", [TEXT, JSONL])
def test_compressed_data_under_a_plain_name_says_so(
    tmp_path: Path, kind: str, name: str, suffix: str, fmt: str
) -> None:
    path = tmp_path / "x.data"
    path.write_bytes(compress(("\n".join(text_lines(500)) + "\n").encode(), kind))
    with pytest.raises(
        BadRecordError,
        match=rf"x\.data looks {name}-compressed \(by its first bytes\) but its name does not "
        rf"end in {suffix}: rename it",
    ):
        read_all(path, fmt=fmt)


def test_compressed_csv_under_a_plain_name_says_so_when_planning(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(BadRecordError, match=r"x\.csv looks gzip-compressed"):
        read_csv_header(store, str(path), None)


def test_twice_compressed_data_says_so(tmp_path: Path) -> None:
    path = tmp_path / "x.txt.gz"
    path.write_bytes(gzip.compress(gzip.compress(b"a\nb\n" * 100)))
    with pytest.raises(BadRecordError, match=r"x\.txt\.gz: after gzip decompression the data"):
        read_all(path)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_archive_says_unpack(tmp_path: Path, method: int) -> None:
    path = tmp_path / "x.zip"
    for i in range(1000):
        with zipfile.ZipFile(path, "w", compression=method) as zf:
            info = zipfile.ZipInfo("in.txt", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, "".join(f"line {n} of {i}\n" for n in range(100)))
        data = path.read_bytes()
        try:
            data[: data.index(b"\n") + 1].decode("utf-8")
        except UnicodeDecodeError:
            if method == zipfile.ZIP_STORED:
                continue
        break  # stored: the archive's first line is valid UTF-8, so no decoding error
    else:
        pytest.fail("no zip archive that starts with a valid UTF-8 line")
    for fmt in (TEXT, CSV):
        with pytest.raises(
            BadRecordError,
            match=r"x\.zip looks like a zip archive \(by its first bytes\): kubemr cannot "
            r"read zip archives; unpack it",
        ):
            read_all(path, fmt=fmt, chunk_bytes=64)


def test_utf16_file_says_convert(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_bytes("hello\nworld\n".encode("utf-16"))
    with pytest.raises(BadRecordError, match=r"w\.txt looks UTF-16 encoded.*iconv"):
        read_all(path)


def test_non_utf8_text_keeps_the_iconv_hint(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nnaïve\n".encode("latin-1"))
    with pytest.raises(
        BadRecordError,
        match=r"latin1\.txt: invalid UTF-8 at byte offset 3: .*convert the file \(e\.g\. with "
        r"iconv\)",
    ):
        read_all(path)


# --------------------------------------------------------------------------- CSV


def write_csv(path: Path, rows: list[list[str]], lineterminator: str = "\n") -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator=lineterminator).writerows(rows)


def expected_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [row for row in csv.DictReader(fh) if row]


def test_csv_quoted_line_break_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b'id,text\n1,"x\ny"\n2,z\n')
    assert read_all(path, 0, CSV) == [{"id": "1", "text": "x\ny"}, {"id": "2", "text": "z"}]


def test_csv_quoted_crlf_as_the_csv_module_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(b'id,text\r\n1,"x\r\ny"\r\n\r\n2,"a ""b""\nc"\r\n')
    assert read_all(path, 0, CSV) == expected_csv(path)
    assert read_all(path, 0, CSV)[0]["text"] == "x\r\ny"


def test_csv_header_with_a_quoted_line_break(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b'"first\nname",age\n"a\nb",1\nc,2\n')
    assert read_csv_header(store, str(path), None) == ["first\nname", "age"]
    assert read_all(path, 0, CSV, chunk_bytes=4) == expected_csv(path)


def multiline_rows(count: int, seed: int) -> list[list[str]]:
    rnd = random.Random(seed)
    pieces = ["plain", "with, comma", 'say "hi"', "two\nlines", "three\r\nwin\nlines", "", "é☃"]
    return [[str(i), rnd.choice(pieces), rnd.choice(pieces)] for i in range(count)]


@pytest.mark.parametrize("chunk_bytes", [1, 16, 100, 1 << 20])
@pytest.mark.parametrize("compressed", [False, True])
def test_csv_records_straddling_chunks(tmp_path: Path, chunk_bytes: int, compressed: bool) -> None:
    path = tmp_path / "m.csv"
    write_csv(path, [["id", "a", "b"], *multiline_rows(300, chunk_bytes)])
    expected = expected_csv(path)
    assert any("\n" in r["a"] for r in expected)
    if compressed:
        data = path.read_bytes()
        path = tmp_path / "m.csv.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert read_all(path, 0, CSV, chunk_bytes=chunk_bytes) == expected


@pytest.mark.parametrize("chunk_bytes", [16, 1 << 20])
def test_csv_bad_record_after_multiline_records_names_its_true_line(
    tmp_path: Path, chunk_bytes: int
) -> None:
    path = tmp_path / "bad.csv"
    rows = [["id", "a", "b"], *multiline_rows(50, 1)]
    rows[30] = ["only", "two"]
    write_csv(path, rows)
    text = path.read_bytes().decode()
    line = text[: text.index("only,two")].count("\n") + 1
    offset = len(text[: text.index("only,two")].encode())
    with pytest.raises(
        BadRecordError,
        match=rf"bad\.csv:{line} \(byte offset {offset}\): CSV record has 2 fields, the header "
        r"has 3; fix the record",
    ):
        read_all(path, 0, CSV, chunk_bytes=chunk_bytes)
    reader = SplitReader(store, _whole_split(path), chunk_bytes, skip_bad_records=1)
    records = [r for c in reader.chunks() for r in c.records]
    assert len(records) == 49 and reader.bad_records == 1
    assert reader.bad_examples[0].startswith(f"{path}:{line} (byte offset {offset})")


def _whole_split(path: Path) -> Split:
    size = path.stat().st_size
    header = read_csv_header(store, str(path), None)
    return Split(str(path), 0, size, size, CSV, None, header)


def test_csv_chunk_locates_multiline_records(tmp_path: Path) -> None:
    path = tmp_path / "loc.csv"
    path.write_bytes(b'id,t\n1,"a\nb\nc"\n\n2,x\n3,"y\nz"\n4,w\n')
    reader = SplitReader(store, _whole_split(path), 8)
    where = {}
    for chunk in reader.chunks():
        for i, rec in enumerate(chunk.records):
            where[rec["id"]] = locate(store, reader.split, chunk, i)
    assert where == {
        "1": f"{path}:2 (byte offset 5)",
        "2": f"{path}:6 (byte offset 16)",
        "3": f"{path}:7 (byte offset 20)",
        "4": f"{path}:9 (byte offset 28)",
    }


@pytest.mark.parametrize("skip", [0, 1000])
def test_csv_line_break_in_a_partial_split_fails_loudly(tmp_path: Path, skip: int) -> None:
    path = tmp_path / "m.csv"
    rows = [["id", "a", "b"]] + [[str(i), f"v{i}", "w"] for i in range(200)]
    rows[120][1] = "two\nlines"
    write_csv(path, rows)
    text = path.read_text()
    line = text[: text.index("two\nlines")].count("\n") + 1
    with pytest.raises(
        BadRecordError,
        match=rf"m\.csv:{line} \(byte offset \d+\): the CSV file has a quoted field with a line "
        r"break, so it cannot be split at arbitrary bytes; pass --split-size 0 \(one task per "
        r"file\)",
    ):
        read_all(path, 500, CSV, chunk_bytes=64, skip_bad_records=skip)
    assert read_all(path, 0, CSV, chunk_bytes=64) == expected_csv(path)


def test_csv_line_break_in_the_last_line_of_a_split_fails(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b'a,b\n1,2\n3,"x\ny"\n5,6\n')
    size = path.stat().st_size
    header = read_csv_header(store, str(path), None)
    end = path.read_bytes().index(b"3,") + 1  # the split ends inside that record's first line
    split = Split(str(path), 0, end, size, CSV, None, header)
    with pytest.raises(BadRecordError, match=r"m\.csv:3 .*--split-size 0"):
        list(SplitReader(store, split).chunks())


def test_csv_literal_quotes_in_unquoted_fields_split_fine(tmp_path: Path) -> None:
    # A quote inside an unquoted field is an ordinary character (12" = 12 inches); such
    # lines have an odd count of quotes but no quoted field spanning lines.
    path = tmp_path / "inch.csv"
    lines = ["item,size,price"] + [f'pipe {i},{i % 30}" wide,{i}.5' for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    expected = expected_csv(path)
    for split_size in (0, 37, 500):
        assert read_all(path, split_size, CSV, chunk_bytes=64) == expected


def test_csv_unclosed_quote_at_the_end_fails(tmp_path: Path) -> None:
    # Read whole, a stray opening quote swallows every later line into one field.
    path = tmp_path / "stray.csv"
    path.write_bytes(b'a,b\n1,2\n3,"four\n5,6\n7,8\n')
    with pytest.raises(
        BadRecordError,
        match=r"stray\.csv:3 \(byte offset 8\): a quoted field opened in this record is not "
        r"closed by the end of the file",
    ):
        read_all(path, 0, CSV, chunk_bytes=4, skip_bad_records=10)


def test_csv_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes('\ufeffa,b\r\n\r\n1,"x\r\ny"\r\n\r\n2,3\r\n'.encode())
    assert read_all(path, 0, CSV, chunk_bytes=3) == [
        {"a": "1", "b": "x\r\ny"},
        {"a": "2", "b": "3"},
    ]


def test_csv_duplicate_column_names_fail(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_bytes(b"id,name,name\n1,a,b\n")
    with pytest.raises(BadRecordError, match=r"dup\.csv: the CSV header names the column 'name'"):
        read_csv_header(store, str(path), None)


csv_field = st.text(
    alphabet=st.sampled_from(list("ab ,\"'xé☃")), max_size=8
)  # no line breaks: such files can be split


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(csv_field, min_size=3, max_size=3), max_size=40),
    crlf=st.booleans(),
    split_size=st.integers(1, 200),
    chunk=st.integers(1, 64),
)
def test_csv_random_splits_match_the_csv_module(
    tmp_path: Path, rows: list[list[str]], crlf: bool, split_size: int, chunk: int
) -> None:
    path = tmp_path / "r.csv"
    write_csv(path, [["a", "b", "c"], *rows], "\r\n" if crlf else "\n")
    expected = expected_csv(path)
    assert read_all(path, 0, CSV, chunk_bytes=chunk) == expected
    assert read_all(path, split_size, CSV, chunk_bytes=chunk) == expected


# a lone \r is left out: csv.writer does not quote it, and csv.reader ends a record there
multiline_field = st.lists(
    st.sampled_from(["a", "b", " ", ",", '"', "\n", "\r\n", "é", "☃"]), max_size=8
).map("".join)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(multiline_field, min_size=3, max_size=3), max_size=30),
    crlf=st.booleans(),
    chunk=st.integers(1, 64),
)
def test_csv_whole_file_with_line_breaks_matches_the_csv_module(
    tmp_path: Path, rows: list[list[str]], crlf: bool, chunk: int
) -> None:
    path = tmp_path / "w.csv"
    write_csv(path, [["a", "b", "c"], *rows], "\r\n" if crlf else "\n")
    assert read_all(path, 0, CSV, chunk_bytes=chunk) == expected_csv(path)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.lists(multiline_field, min_size=3, max_size=3), max_size=30),
    split_size=st.integers(1, 300),
    chunk=st.integers(1, 64),
)
def test_csv_split_files_with_line_breaks_fail_and_never_yield_wrong_records(
    tmp_path: Path, rows: list[list[str]], split_size: int, chunk: int
) -> None:
    path = tmp_path / "s.csv"
    write_csv(path, [["a", "b", "c"], *rows])
    info = ObjectInfo(str(path), path.stat().st_size)
    split_up = len(make_splits([info], split_size, CSV, compression_of)) > 1
    if split_up and any("\n" in field for row in rows for field in row):
        with pytest.raises(BadRecordError, match=r"--split-size 0 \(one task per file\)"):
            read_all(path, split_size, CSV, chunk_bytes=chunk)
    else:
        assert read_all(path, split_size, CSV, chunk_bytes=chunk) == expected_csv(path)


def test_long_multiline_record_is_parsed_a_few_times_not_once_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.csv"
    field = "\n".join(f"line {i}" for i in range(10_000))  # under the 128 KiB field limit
    write_csv(path, [["a", "b"], ["1", field], ["2", "x"]])
    original = formats._csv_rows
    calls = []

    def counting(text: str) -> Any:
        calls.append(len(text))
        return original(text)

    monkeypatch.setattr(formats, "_csv_rows", counting)
    assert read_all(path, 0, CSV, chunk_bytes=64) == [{"a": "1", "b": field}, {"a": "2", "b": "x"}]
    assert len(calls) < 40


def test_csv_lone_carriage_return(tmp_path: Path) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(b'a,b\n1,"x\ry"\n2,x\ry\n3,z\n')
    with pytest.raises(
        BadRecordError,
        match=r"cr\.csv:3 \(byte offset 12\): malformed CSV record: a carriage return \(\\r\) "
        r"in an unquoted field; quote the field; fix the record",
    ):
        read_all(path, 0, CSV)
    reader = SplitReader(store, _whole_split(path), skip_bad_records=1)
    assert [r for c in reader.chunks() for r in c.records] == [
        {"a": "1", "b": "x\ry"},
        {"a": "3", "b": "z"},
    ]
    assert reader.bad_records == 1


def test_csv_stray_quote_that_swallows_the_file_is_not_skipped(tmp_path: Path) -> None:
    # The csv module stops a field at 128 KiB; after that error inside a record spanning
    # lines, where the next record starts is unknown.
    path = tmp_path / "stray.csv"
    lines = ["a,b", '1,"oops'] + [f"{i},{'x' * 50}" for i in range(5000)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        BadRecordError,
        match=r"stray\.csv:2 \(byte offset 4\): malformed CSV record spanning \d+ lines \(a "
        r"stray or missing quote\?\): field larger than field limit",
    ):
        read_all(path, 0, CSV, chunk_bytes=4096, skip_bad_records=100)


def test_csv_header_is_read_despite_bad_utf8_further_on(tmp_path: Path) -> None:
    # The task, not the planning, reports the bad byte, with its offset.
    path = tmp_path / "l1.csv"
    path.write_bytes(b"a,b\n1,caf\xe9\n")
    assert read_csv_header(store, str(path), None) == ["a", "b"]
    with pytest.raises(BadRecordError, match=r"l1\.csv: invalid UTF-8 at byte offset 9"):
        read_all(path, 0, CSV)


@pytest.mark.parametrize("chunk_bytes", [7, 64])
def test_csv_progress_adds_up_to_the_file_size(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "p.csv"
    write_csv(path, [["id", "a", "b"], *multiline_rows(100, 3)])
    reader = SplitReader(store, _whole_split(path), chunk_bytes)
    chunks = list(reader.chunks())
    assert all(chunk.records for chunk in chunks)  # no empty chunk for a carried record
    assert sum(chunk.bytes_read for chunk in chunks) == path.stat().st_size
