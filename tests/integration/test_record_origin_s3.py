"""Where a record came from, with inputs in a real MinIO server: the input file's URL per
task (``self.input_file``, ``$mapreduce_map_input_file``), byte offsets of records in
split and compressed objects, and whole objects downloaded for the raw format."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import itertools
import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kubemr
from kubemr.loader import load_job_class

pytestmark = pytest.mark.integration


def job_file(tmp_path: Path, source: str) -> Any:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(source))
    return load_job_class(str(path))


def text(n: int) -> str:
    words = ["naïve", "café", "日本語", "", "the quick brown fox", "😀"]
    return "".join(" ".join(words[(i + j) % 6] for j in range(i % 5)) + "\n" for i in range(n))


def upload_inputs(client: Any, bucket: str) -> dict[str, bytes]:
    """Objects under in/: one split at many places (CRLF, a byte-order mark), one gzip,
    one in a deeper prefix; their URLs and (decompressed) bytes."""
    objects = {
        "in/a.txt": codecs.BOM_UTF8 + text(400).replace("\n", "\r\n").encode(),
        "in/b.txt.gz": gzip.compress(text(250).encode()),
        "in/deeper/c.txt": text(9).encode(),
    }
    found = {}
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
        found[f"s3://{bucket}/{key}"] = gzip.decompress(data) if key.endswith(".gz") else data
    return found


def read_output(client: Any, bucket: str, prefix: str) -> list:
    pairs = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for key in sorted(o["Key"] for page in pages for o in page.get("Contents", [])):
        if key.rsplit("/", 1)[-1].startswith("part-"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            pairs.extend(json.loads(line) for line in body.splitlines())
    return pairs


def line_records(data: bytes) -> list[tuple[int, str]]:
    """``(offset, line)`` of every line, the byte-order mark and line breaks left out."""
    pos = 3 if data.startswith(codecs.BOM_UTF8) else 0
    found = []
    for raw in data[pos:].split(b"\n")[:-1] if data.endswith(b"\n") else data[pos:].split(b"\n"):
        found.append((pos, raw.removesuffix(b"\r").decode()))
        pos += len(raw) + 1
    return found


COUNT_LINES_BY_FILE = """
    import os

    import kubemr


    class MRCountLinesByFile(kubemr.MapReduce):
        combiner = reducer = kubemr.SUM

        def mapper_init(self):
            start = int(os.environ["mapreduce_map_input_start"])
            end = start + int(os.environ["mapreduce_map_input_length"])
            yield ["task", self.input_file, start, end], 1

        def mapper(self, line):
            yield os.environ["mapreduce_map_input_file"], 1
"""


def test_count_lines_by_object(minio, s3_bucket, tmp_path) -> None:
    client = minio.client()
    files = upload_inputs(client, s3_bucket)
    summary = kubemr.run(
        job_file(tmp_path, COUNT_LINES_BY_FILE),
        inputs=[f"s3://{s3_bucket}/in/"],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        split_size="2KiB",
        workers=2,
    )
    pairs = read_output(client, s3_bucket, "out/")
    assert {k: n for k, n in pairs if isinstance(k, str)} == {
        url: len(line_records(data)) for url, data in files.items()
    }
    tasks = [k[1:] for k, _ in pairs if isinstance(k, list)]
    assert len(tasks) == summary["tasks"]["map"] > len(files)
    # The tasks of each object cover its bytes exactly once (a gzip object: one task).
    for url in files:
        ranges = sorted((start, end) for u, start, end in tasks if u == url)
        size = client.head_object(Bucket=s3_bucket, Key=url.split("/", 3)[3])["ContentLength"]
        assert ranges[0][0] == 0 and ranges[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


OFFSETS = """
    import kubemr


    class Offsets(kubemr.MapReduce):
        INPUT_WITH_OFFSET = True

        def mapper(self, record):
            offset, line = record
            yield [self.input_file, offset], line
"""


def test_offsets_of_records_in_objects(minio, s3_bucket, tmp_path) -> None:
    client = minio.client()
    files = upload_inputs(client, s3_bucket)
    kubemr.run(
        job_file(tmp_path, OFFSETS),
        inputs=[f"s3://{s3_bucket}/in/"],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        split_size="1KiB",
        reducers=0,
    )
    got = {(url, off): line for (url, off), line in read_output(client, s3_bucket, "out/")}
    expected = {(url, off): line for url, data in files.items() for off, line in line_records(data)}
    assert got == expected


RAW = """
    import hashlib
    import os
    import stat

    import kubemr


    class Downloaded(kubemr.MapReduce):
        INPUT_FORMAT = "raw"

        def mapper(self, record):
            path, url = record
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            writable = os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
            yield url, [digest, os.path.basename(path), bool(writable), path, self.input_file]
"""


def test_raw_objects_are_downloaded_read_only_and_removed(minio, s3_bucket, tmp_path) -> None:
    client = minio.client()
    upload_inputs(client, s3_bucket)
    blobs = {
        f"s3://{s3_bucket}/{k}": client.get_object(Bucket=s3_bucket, Key=k)["Body"].read()
        for k in ("in/a.txt", "in/b.txt.gz", "in/deeper/c.txt")
    }
    summary = kubemr.run(
        job_file(tmp_path, RAW),
        inputs=[f"s3://{s3_bucket}/in/"],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        reducers=0,
    )
    got = dict(read_output(client, s3_bucket, "out/"))
    assert sorted(got) == sorted(blobs)
    for url, (digest, name, writable, path, input_file) in got.items():
        # The object as stored (a gzip object still compressed), under its own name.
        assert digest == hashlib.sha256(blobs[url]).hexdigest()
        assert name == url.rsplit("/", 1)[1] and input_file == url
        assert not writable
        assert not Path(path).exists() and not Path(path).parent.exists()
    assert summary["tasks"]["map"] == 3


def test_utf16_and_undecodable_lines_in_objects(minio, s3_bucket, tmp_path) -> None:
    client = minio.client()
    lines = [f"line {i} ਅ一 naïve" for i in range(500)]
    client.put_object(
        Bucket=s3_bucket, Key="in/w.txt", Body="\r\n".join(lines).encode("utf-16") + b"\x00\xd8"
    )
    summary = kubemr.run(
        job_file(
            tmp_path,
            """
            import kubemr


            class Lines(kubemr.MapReduce):
                combiner = reducer = kubemr.SUM

                def mapper(self, line):
                    yield line, 1
            """,
        ),
        inputs=[f"s3://{s3_bucket}/in/w.txt"],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        encoding="utf-16",
        decode_errors="replace",
        split_size="1KiB",
    )
    expected = Counter([*lines[:-1], lines[-1] + "\ufffd"])
    assert dict(read_output(client, s3_bucket, "out/")) == dict(expected)
    assert summary["counters"]["kubemr"]["map_input_undecodable_lines"] == 1
    assert summary["tasks"]["map"] == 1
