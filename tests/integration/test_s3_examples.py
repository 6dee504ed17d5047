"""Every example, with inputs, work dir and output in MinIO, gives the local-disk output."""

from __future__ import annotations

import os

import pytest

import kubemr
from kubemr import storage
from kubemr.loader import load_job_class

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "examples", "data")

CASES = [
    ("wordcount", "books"),
    ("wordcount_batch", "books"),
    ("grep", "books"),
    ("inverted_index", "docs.jsonl"),
    ("join", "join"),
    ("total_sort", "records.txt"),
    ("topk", "books"),
    ("two_step", "books"),
]


def output_files(url: str) -> dict[str, bytes]:
    store = storage.store_for(url)
    files = {}
    for info in store.list(url.rstrip("/") + "/"):
        name = info.url.rsplit("/", 1)[-1]
        if name.startswith("part-"):
            with store.open_read(info.url) as fh:
                files[name] = fh.read()
    return files


@pytest.mark.parametrize("example,data", CASES)
def test_example_in_minio_matches_local(minio, s3_bucket, tmp_path, example, data) -> None:
    client = minio.client()
    local_input = os.path.join(DATA, data)
    paths = (
        [os.path.join(d, f) for d, _, fs in os.walk(local_input) for f in fs]
        if os.path.isdir(local_input)
        else [local_input]
    )
    for path in paths:
        key = "in/" + os.path.relpath(path, DATA)
        client.upload_file(path, s3_bucket, key)
    s3_input = f"s3://{s3_bucket}/in/{data}"
    job = load_job_class(os.path.join(ROOT, "examples", f"{example}.py"))
    options = {"split_size": "2KiB", "reducers": 3, "workers": 2}
    kubemr.run(job, inputs=[local_input], output=str(tmp_path / "local"), **options)
    summary = kubemr.run(
        job,
        inputs=[s3_input],
        output=f"s3://{s3_bucket}/out",
        work_dir=f"s3://{s3_bucket}/work",
        **options,
    )
    local = output_files(str(tmp_path / "local"))
    remote = output_files(f"s3://{s3_bucket}/out")
    assert remote == local
    assert local, "no output"
    assert summary["storage"]["requests"]["GET"] > 0
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="out/")["Contents"]]
    assert "out/_SUCCESS" in keys
