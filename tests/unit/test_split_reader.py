"""No record is lost or duplicated at a split boundary, whatever the split size."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemr.errors import BadRecordError
from kubemr.formats import CSV, JSONL, TEXT, SplitReader, compression_of, read_csv_header
from kubemr.plan import make_splits
from kubemr.storage import ObjectInfo
from kubemr.storage.local import LocalStore

store = LocalStore()


def read_all(path: str, split_size: int, fmt: str = TEXT, chunk_bytes: int = 1 << 20) -> list:
    info = ObjectInfo(path, os.path.getsize(path))
    headers = {path: read_csv_header(store, path, compression_of(path))} if fmt == CSV else None
    records = []
    for split in make_splits([info], split_size, fmt, compression_of, headers):
        reader = SplitReader(store, split, chunk_bytes)
        for chunk in reader.chunks():
            records.extend(chunk.records)
    return records


def expected_lines(text: str) -> list[str]:
    # A byte-order mark opening a file is not part of its first line.
    text = text.removeprefix("\ufeff")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


line_text = st.text(
    alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
    max_size=40,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = draw(st.lists(line_text, max_size=60))
    crlf = draw(st.booleans())
    sep = "\r\n" if crlf else "\n"
    text = sep.join(lines)
    if lines and draw(st.booleans()):
        text += sep  # with or without a trailing newline
    return text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=documents(), split_size=st.integers(1, 300), chunk=st.integers(1, 64))
def test_random_splits_match_one_split(tmp_path, doc: str, split_size: int, chunk: int) -> None:
    path = str(tmp_path / "in.txt")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(doc)
    whole = read_all(path, 0)
    assert whole == expected_lines(doc)
    assert read_all(path, split_size, chunk_bytes=chunk) == whole


@pytest.mark.parametrize("split_size", [1, 2, 3, 5, 7, 64])
def test_multibyte_utf8_across_boundaries(tmp_path, split_size: int) -> None:
    doc = "zürich ☃ 日本語\n\nünïcödé 🎉🎉\r\nlast line no newline ✓"
    path = str(tmp_path / "u.txt")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(doc)
    assert read_all(path, split_size, chunk_bytes=3) == expected_lines(doc)


def test_line_longer_than_chunk_and_split(tmp_path) -> None:
    lines = ["x" * 10_000, "", "y" * 3, "z" * 70_000]
    path = str(tmp_path / "long.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    for split_size in (1, 999, 10_001, 50_000):
        assert read_all(path, split_size, chunk_bytes=4096) == lines


def test_empty_file_has_no_splits(tmp_path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert make_splits([ObjectInfo(str(path), 0)], 10, TEXT, compression_of) == []


def test_bom_is_not_part_of_first_record(tmp_path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello\nworld\n".encode())
    assert read_all(str(path), 0) == ["hello", "world"]


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_compressed_files_are_one_split(tmp_path, kind: str) -> None:
    lines = [f"line {i} ✓" for i in range(20_000)]
    data = ("\n".join(lines) + "\n").encode()
    path = str(tmp_path / f"in.txt.{kind}")
    if kind == "gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        with open(path, "wb") as fh:
            fh.write(zstandard.ZstdCompressor().compress(data))
    info = ObjectInfo(path, os.path.getsize(path))
    splits = make_splits([info], 100, TEXT, compression_of)
    assert len(splits) == 1 and splits[0].compression in ("gzip", "zstd")
    assert read_all(path, 100, chunk_bytes=1000) == lines


def test_corrupt_gzip_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage-not-gzip" * 10)
    with pytest.raises(BadRecordError, match=r"bad\.txt\.gz.*cannot decompress"):
        read_all(str(path), 0)


def test_jsonl_records_and_blank_lines(tmp_path) -> None:
    objs = [{"a": i, "s": "✓" * (i % 3)} for i in range(500)]
    text = "".join(json.dumps(o) + ("\n\n" if i % 7 == 0 else "\n") for i, o in enumerate(objs))
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    for split_size in (0, 17, 500):
        assert read_all(str(path), split_size, JSONL, chunk_bytes=256) == objs


def test_bad_json_names_file_and_line(tmp_path) -> None:
    lines = [json.dumps({"i": i}) for i in range(100)]
    lines[73] = '{"i": 73,'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    for split_size in (0, 100):
        with pytest.raises(
            BadRecordError, match=r"bad\.jsonl:74 \(byte offset \d+\): malformed JSON"
        ):
            read_all(str(path), split_size, JSONL, chunk_bytes=64)


def test_skip_bad_records_counts(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n[1,\n')
    split = make_splits([ObjectInfo(str(path), path.stat().st_size)], 0, JSONL, compression_of)[0]
    reader = SplitReader(store, split, skip_bad_records=5)
    records = [r for c in reader.chunks() for r in c.records]
    assert records == [{"a": 1}, {"a": 2}]
    assert reader.bad_records == 2
    assert "bad.jsonl:2" in reader.bad_examples[0]


def test_csv_records_by_header_in_every_split(tmp_path) -> None:
    rows = [f'{i},"name, {i}",{i * 2}' for i in range(300)]
    path = tmp_path / "in.csv"
    path.write_text("id,name,double\r\n" + "\r\n".join(rows) + "\r\n")
    expected = [{"id": str(i), "name": f"name, {i}", "double": str(i * 2)} for i in range(300)]
    for split_size in (0, 50, 1000):
        assert read_all(str(path), split_size, CSV, chunk_bytes=128) == expected


def test_csv_wrong_field_count_is_a_bad_record(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(BadRecordError, match=r"in\.csv:3 .*1 fields, the header has 2"):
        read_all(str(path), 0, CSV)


def test_invalid_utf8_names_offset(tmp_path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(BadRecordError, match=r"latin1\.txt: invalid UTF-8 at byte offset 6"):
        read_all(str(path), 0)
