"""Whole files as records, for formats kubemr cannot parse: the ``raw`` input format
(a record is ``(local path, url)``) and mrjob's ``mapper_raw(self, path, uri)``. One task
per file whatever its size, the file given as it is (compressed files too), with a
combiner and a reducer as usual. Jobs are files run by value on the real local runner."""

from __future__ import annotations

import gzip
import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubemr.cli import app
from kubemr.errors import InputError, JobDefinitionError, JobFailed
from tests.jobfiles import job_file, read_pairs, run_file


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Binary data with line breaks and NULs, a gzip file, an empty file and a text file
    many times the split size."""
    root = tmp_path / "in"
    root.mkdir()
    rng = random.Random(7)
    (root / "blob.bin").write_bytes(bytes(rng.randrange(256) for _ in range(20_000)))
    (root / "lines.txt.gz").write_bytes(gzip.compress(b"one\ntwo\r\nthree\n" * 500))
    (root / "empty.dat").write_bytes(b"")
    (root / "big.txt").write_text("a line of text\n" * 4000)
    return root


RAW_FORMAT = """
    import hashlib
    import os

    import kubemr


    class Digests(kubemr.MapReduce):
        INPUT_FORMAT = "raw"
        combiner = reducer = kubemr.SUM

        def mapper(self, record):
            path, url = record
            with open(path, "rb") as fh:
                data = fh.read()
            same = os.path.samefile(path, url) and self.input_file == url
            yield ["file", url, hashlib.sha256(data).hexdigest(), same], 1
            yield ["bytes", os.path.splitext(url)[1]], len(data)
"""


def expected_digests(root: Path) -> dict:
    expected: Counter = Counter()
    for path in sorted(root.iterdir()):
        data = path.read_bytes()
        expected[("file", str(path), hashlib.sha256(data).hexdigest(), True)] += 1
        expected[("bytes", path.suffix)] += len(data)
    return dict(expected)


def test_the_raw_format_gives_each_file_whole_as_it_is(tmp_path: Path, files: Path) -> None:
    path = job_file(tmp_path, RAW_FORMAT)
    out = tmp_path / "out"
    summary = run_file(path, inputs=[str(files)], output=str(out), split_size="1KiB", workers=2)
    assert {tuple(k): v for k, v in read_pairs(out)} == expected_digests(files)
    # One task per file, the empty one too; nothing cut, nothing decompressed.
    assert summary["tasks"]["map"] == 4
    assert summary["counters"]["kubemr"]["map_input_records"] == 4
    assert summary["counters"]["kubemr"]["map_input_bytes"] == sum(
        p.stat().st_size for p in files.iterdir()
    )


def test_format_raw_on_the_command_line(tmp_path: Path, files: Path) -> None:
    source = RAW_FORMAT.replace('        INPUT_FORMAT = "raw"\n', "")
    path = job_file(tmp_path, source)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["run", path, "-i", str(files), "-o", str(out), "--format", "raw", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert {tuple(k): v for k, v in read_pairs(out)} == expected_digests(files)


def test_a_raw_mapper_that_fails_names_the_file(tmp_path: Path, files: Path) -> None:
    path = job_file(
        tmp_path,
        """
        import kubemr


        class Fails(kubemr.MapReduce):
            INPUT_FORMAT = "raw"

            def mapper(self, record):
                path, url = record
                if url.endswith(".bin"):
                    raise ValueError("cannot parse " + path)
                yield url, 1
        """,
    )
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[str(files)], output=str(tmp_path / "o"), max_attempts=1)
    message = str(info.value)
    assert f"{files / 'blob.bin'} (the whole file, read raw)" in message
    assert f"ValueError: cannot parse {files / 'blob.bin'}" in message


# -- mapper_raw, as mrjob has it ---------------------------------------------------------------

WARC_STATS = """
    import gzip

    import kubemr


    def warc_records(fh):
        # WARC-like records: a version line, header lines, a blank line, then
        # Content-Length bytes of payload, which may hold anything.
        while True:
            line = fh.readline()
            if not line:
                return
            if not line.strip():
                continue
            assert line.startswith(b"WARC/1.0"), line
            headers = {}
            while line := fh.readline().strip():
                name, _, value = line.decode().partition(":")
                headers[name] = value.strip()
            yield headers, fh.read(int(headers["Content-Length"]))


    class MRWarcStats(kubemr.MapReduce):
        combiner = reducer = kubemr.SUM

        def mapper_raw(self, input_path, input_uri):
            # A .warc.gz holds one gzip member per record: it is given as it is.
            opener = gzip.open if input_path.endswith(".gz") else open
            with opener(input_path, "rb") as fh:
                for headers, payload in warc_records(fh):
                    yield ["records", headers["WARC-Type"]], 1
                    yield ["bytes", input_uri.rsplit("/", 1)[-1]], len(payload)
"""


def warc_files(root: Path) -> dict:
    """Three WARC-like files (one gzipped a record per member, as .warc.gz are) and what
    a job should count in them."""
    root.mkdir()
    rng = random.Random(3)
    expected: Counter = Counter()
    for name in ("a.warc", "b.warc.gz", "c.warc"):
        members = []
        for i in range(rng.randrange(20, 60)):
            kind = ("request", "response", "metadata")[i % 3]
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 900)))
            head = f"WARC/1.0\r\nWARC-Type: {kind}\r\nContent-Length: {len(payload)}\r\n\r\n"
            members.append(head.encode() + payload + b"\r\n\r\n")
            expected[("records", kind)] += 1
            expected[("bytes", name)] += len(payload)
        data = (
            b"".join(gzip.compress(m) for m in members)
            if name.endswith(".gz")
            else b"".join(members)
        )
        (root / name).write_bytes(data)
    return dict(expected)


def test_mapper_raw_reads_files_kubemr_cannot_parse(tmp_path: Path) -> None:
    expected = warc_files(tmp_path / "in")
    path = job_file(tmp_path, WARC_STATS)
    out = tmp_path / "out"
    summary = run_file(path, inputs=[str(tmp_path / "in")], output=str(out), split_size="1KiB")
    assert {tuple(k): v for k, v in read_pairs(out)} == expected
    assert summary["tasks"]["map"] == 3


def test_mapper_raw_in_the_first_of_several_steps(tmp_path: Path) -> None:
    expected = warc_files(tmp_path / "in")
    source = WARC_STATS.replace(
        "    class MRWarcStats(kubemr.MapReduce):\n        combiner = reducer = kubemr.SUM\n",
        """    class MRWarcStats(kubemr.MapReduce):
        def steps(self):
            return [
                kubemr.MRStep(mapper_raw=self.read_warc, combiner=kubemr.SUM, reducer=self.total),
                kubemr.MRStep(reducer=self.largest),
            ]

        def total(self, key, values):
            yield key[0], (sum(values), key[1])

        def largest(self, kind, totals):
            yield kind, max(totals)
""",
    ).replace(
        "def mapper_raw(self, input_path, input_uri):",
        "def read_warc(self, input_path, input_uri):",
    )
    path = job_file(tmp_path, source)
    out = tmp_path / "out"
    run_file(path, inputs=[str(tmp_path / "in")], output=str(out))
    largest = {
        kind: list(max((n, what) for (k, what), n in expected.items() if k == kind))
        for kind in ("records", "bytes")
    }
    assert dict(read_pairs(out)) == largest


def test_mapper_raw_is_refused_where_it_cannot_work(tmp_path: Path) -> None:
    warc_files(tmp_path / "in")
    path = job_file(tmp_path, WARC_STATS)
    with pytest.raises(InputError, match=r"reads whole files \(mapper_raw\): --format text"):
        run_file(
            path, inputs=[str(tmp_path / "in")], output=str(tmp_path / "o"), input_format="text"
        )
    later = job_file(
        tmp_path,
        """
        import kubemr


        class Later(kubemr.MapReduce):
            def steps(self):
                return [kubemr.MRStep(mapper=self.m), kubemr.MRStep(mapper_raw=self.raw)]

            def m(self, line):
                yield line, 1

            def raw(self, path, uri):
                yield uri, 1
        """,
        "later.py",
    )
    with pytest.raises(JobDefinitionError, match="only the first step can have one"):
        run_file(later, inputs=[str(tmp_path / "in")], output=str(tmp_path / "o2"))
