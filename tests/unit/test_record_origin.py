"""Where a record came from: ``self.input_file`` and Hadoop Streaming's environment
variables per map task (mrjob's ``mapreduce_map_input_file``), and, with
``INPUT_WITH_OFFSET``, each record's byte offset. Each job is a file run by value on the
real local runner, over real files that are split, compressed and encoded in the ways
that move offsets (multi-byte characters, CRLF, a byte-order mark)."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubemr.errors import JobFailed
from kubemr.formats import BYTES, CSV, JSONL, TEXT, compression_of
from kubemr.plan import make_splits
from kubemr.storage import ObjectInfo
from tests.jobfiles import job_file, read_pairs, run_file


def lines_text(n: int, seed: int) -> str:
    """Lines of varied length with multi-byte characters and empty lines."""
    words = ["naïve", "café", "日本語", "x", "", "the quick brown fox", "😀 emoji", "tab\there"]
    return "".join(
        " ".join(words[(i * seed + j) % len(words)] for j in range(i % 7)) + "\n" for i in range(n)
    )


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A directory of inputs: a file split into many tasks with CRLF lines and a
    byte-order mark, a gzip file (one task), and a small file in a subdirectory."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(
        codecs.BOM_UTF8 + lines_text(400, 3).replace("\n", "\r\n").encode()
    )
    (root / "b.txt.gz").write_bytes(gzip.compress(lines_text(300, 5).encode()))
    (root / "sub" / "c.txt").write_bytes(lines_text(7, 2).encode()[:-1])  # no final newline
    return root


def files_of(root: Path) -> dict[str, bytes]:
    """Each input file's URL and its (decompressed) bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found[str(path)] = gzip.decompress(data) if path.suffix == ".gz" else data
    return found


def line_records(data: bytes, bom: bool = True) -> list[tuple[int, bytes]]:
    """``(offset, line)`` for every line of a file, as a reader of plain Python would
    see them: split at ``\\n``, a ``\\r`` before it dropped, the byte-order mark left out."""
    pos = 3 if bom and data.startswith(codecs.BOM_UTF8) else 0
    found = []
    while pos < len(data):
        end = data.find(b"\n", pos)
        stop = len(data) if end < 0 else end + 1
        line = data[pos:stop]
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        found.append((pos, line))
        pos = stop
    return found


# -- mrjob's "count lines by file" -------------------------------------------------------------

COUNT_LINES_BY_FILE = """
    import os

    import kubemr


    class MRCountLinesByFile(kubemr.MapReduce):
        # mrjob's job, line by line: the input file from the environment, as Hadoop
        # Streaming sets it (mrjob.compat.jobconf_from_env reads the same variable).
        combiner = reducer = kubemr.SUM

        def setup(self):
            self.at_setup = self.input_file

        def mapper_init(self):
            assert self.at_setup == self.input_file
            start = int(os.environ["mapreduce_map_input_start"])
            length = int(os.environ["mapreduce_map_input_length"])
            yield ("task", os.environ["map_input_file"], start, start + length), 1

        def mapper(self, line):
            assert self.input_file == os.environ["mapreduce_map_input_file"]
            yield os.environ["mapreduce_map_input_file"], 1
"""


def test_count_lines_by_file(tmp_path: Path, inputs: Path) -> None:
    path = job_file(tmp_path, COUNT_LINES_BY_FILE)
    out = tmp_path / "out"
    summary = run_file(path, inputs=[str(inputs)], output=str(out), split_size="1KiB", workers=2)
    files = files_of(inputs)
    pairs = read_pairs(out)
    counts = {key: n for key, n in pairs if isinstance(key, str)}
    assert counts == {url: len(line_records(data)) for url, data in files.items()}
    # One ("task", file, start, end) per map task: the split each task read.
    tasks = sorted(tuple(key[1:]) for key, n in pairs if isinstance(key, list) for _ in range(n))
    infos = [ObjectInfo(str(p), p.stat().st_size) for p in sorted(inputs.rglob("*")) if p.is_file()]
    splits = make_splits(infos, 1024, TEXT, compression_of)
    assert tasks == sorted((s.url, s.start, s.end) for s in splits)
    assert summary["tasks"]["map"] == len(splits) > len(files)


# -- byte offsets -----------------------------------------------------------------------------

OFFSETS = """
    import kubemr


    class Offsets(kubemr.MapReduce):
        INPUT_WITH_OFFSET = True

        def mapper(self, record):
            offset, value = record
            if isinstance(value, bytes):
                value = value.hex()
            yield [self.input_file, offset], value
"""

OFFSETS_BATCH = """
    import kubemr


    class OffsetsBatch(kubemr.MapReduce):
        INPUT_WITH_OFFSET = True

        def mapper_batch(self, records):
            for offset, value in records:
                if isinstance(value, bytes):
                    value = value.hex()
                yield [self.input_file, offset], value
"""


def expected_offsets(files: dict[str, bytes], fmt: str) -> dict[tuple[str, int], Any]:
    """What each record is and where it starts, from plain Python."""
    expected: dict[tuple[str, int], Any] = {}
    for url, data in files.items():
        records = line_records(data, bom=fmt != BYTES)
        if fmt == BYTES:  # undecoded: the byte-order mark stays in the first line
            expected.update(((url, off), line.hex()) for off, line in records)
        elif fmt == TEXT:
            expected.update(((url, off), line.decode()) for off, line in records)
        elif fmt == JSONL:
            expected.update(((url, off), json.loads(line)) for off, line in records if line.strip())
        else:
            header = next(csv.reader([records[0][1].decode()]))
            for off, line in records[1:]:
                row = next(csv.reader([line.decode()]), None)
                if row:
                    expected[(url, off)] = dict(zip(header, row))
    return expected


def write_format_inputs(root: Path, fmt: str) -> None:
    """Inputs of one format, with multi-byte characters, CRLF and a byte-order mark."""
    root.mkdir()
    rows = [[f"k{i}", "café" * (i % 4), "日本" if i % 3 else ""] for i in range(300)]
    if fmt in (TEXT, BYTES):
        text = lines_text(300, 7)
    elif fmt == JSONL:
        text = "".join(
            json.dumps(r, ensure_ascii=i % 2 == 0) + "\n" + "\n" * (i % 5 == 0)  # blank lines
            for i, r in enumerate(rows)
        )
    else:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([["key", "word", "more"], *rows])
        text = buf.getvalue()
    (root / "crlf.txt").write_bytes(codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode())
    (root / "plain.txt.gz").write_bytes(gzip.compress(text.encode()))


@pytest.mark.parametrize("fmt", [TEXT, JSONL, CSV, BYTES])
@pytest.mark.parametrize("source", [OFFSETS, OFFSETS_BATCH], ids=["mapper", "mapper_batch"])
def test_offsets_are_where_records_start(tmp_path: Path, fmt: str, source: str) -> None:
    root = tmp_path / "in"
    write_format_inputs(root, fmt)
    path = job_file(tmp_path, source)
    out = tmp_path / "out"
    summary = run_file(
        path,
        inputs=[str(root)],
        output=str(out),
        input_format=fmt,
        split_size="1KiB",
        reducers=0,
        workers=2,
    )
    assert summary["tasks"]["map"] > 3  # the plain file is split at several places
    got = {(url, off): value for (url, off), value in read_pairs(out)}
    assert got == expected_offsets(files_of(root), fmt)


def test_an_offset_names_the_same_byte_as_an_error(tmp_path: Path) -> None:
    # The offset a mapper gets is the one kubemr's messages give for that record.
    (tmp_path / "in.txt").write_bytes("ok\nnaïve\ncafé\r\nboom\n".encode())
    path = job_file(
        tmp_path,
        """
        import kubemr


        class Fails(kubemr.MapReduce):
            INPUT_WITH_OFFSET = True

            def mapper(self, record):
                offset, line = record
                if line == "boom":
                    raise ValueError(f"record at {offset}")
                yield line, offset
        """,
    )
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[str(tmp_path / "in.txt")], output=str(tmp_path / "o"))
    message = str(info.value)
    offset = "ok\nnaïve\ncafé\r\n".encode().__len__()
    assert f"in.txt:4 (byte offset {offset})" in message
    assert f"ValueError: record at {offset}" in message


# -- later steps, and the worker processes that run many tasks --------------------------------

TWO_STEPS = """
    import os

    import kubemr


    class TwoSteps(kubemr.MapReduce):
        def steps(self):
            return [
                kubemr.MRStep(mapper=self.by_file, reducer=self.count),
                kubemr.MRStep(mapper=self.look, reducer=self.collect),
            ]

        def by_file(self, line):
            yield self.input_file, 1

        def count(self, url, ones):
            yield url, sum(ones)

        def look(self, pair):
            seen = (self.input_file, os.environ.get("mapreduce_map_input_file"))
            yield "later step", [pair[0], *seen]

        def collect(self, key, values):
            yield key, sorted(values)
"""


def test_a_later_step_reads_no_input_file(tmp_path: Path, inputs: Path) -> None:
    # One worker process runs every task: what a first-step task set must not leak.
    path = job_file(tmp_path, TWO_STEPS)
    out = tmp_path / "out"
    run_file(path, inputs=[str(inputs)], output=str(out), split_size="2KiB", workers=1)
    [(key, values)] = read_pairs(out)
    assert key == "later step"
    assert values == sorted([url, None, None] for url in files_of(inputs))


# -- the plan stage --------------------------------------------------------------------------

TOTAL_ORDER_BY_FILE = """
    import os

    import kubemr


    class SortedByFile(kubemr.MapReduce):
        TOTAL_ORDER = True

        def mapper(self, line):
            yield (os.path.basename(os.environ["mapreduce_map_input_file"]), line), None
"""


def test_the_key_sampling_of_a_total_order_sees_the_input_file(
    tmp_path: Path, inputs: Path
) -> None:
    path = job_file(tmp_path, TOTAL_ORDER_BY_FILE)
    out = tmp_path / "out"
    run_file(path, inputs=[str(inputs)], output=str(out), split_size="2KiB", reducers=3)
    keys = [tuple(key) for key, _ in read_pairs(out)]
    assert keys == sorted(keys)
    expected = Counter(
        (os.path.basename(url), line.decode())
        for url, data in files_of(inputs).items()
        for _, line in line_records(data)
    )
    assert Counter(keys) == expected
