"""The job report on a real MinIO: ``_REPORT.json`` beside ``_SUCCESS`` in the bucket,
the attempts' storage requests and bytes as the S3 store counted them, the report
rebuilt from a work dir in the bucket, and an output holding a report replaced (or
refused) like any kubemr output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubemr.errors import JobFailed, OutputError
from kubemr.report.records import FORMAT, load_report
from tests.jobfiles import SKEWED_RETRIED, job_file, run_file

pytestmark = pytest.mark.integration


LINES = ["hot hot hot" if i % 4 else f"k{i % 97} hot" for i in range(4000)] + ["trigger"]
WORDS = Counter(w for line in LINES for w in line.split())


def put(client: Any, bucket: str, key: str, body: bytes) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body)


def keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def job(tmp_path: Path) -> str:
    return job_file(tmp_path, SKEWED_RETRIED.format(marker=str(tmp_path / "tried")))


def test_report_in_the_bucket_matches_the_job(minio, s3_bucket, job) -> None:
    client = minio.client()
    for i in range(3):
        put(client, s3_bucket, f"in/{i}.txt", ("\n".join(LINES[i::3]) + "\n").encode())
    out = f"s3://{s3_bucket}/out"
    summary = run_file(
        job,
        inputs=[f"s3://{s3_bucket}/in/*.txt"],
        output=out,
        work_dir=f"s3://{s3_bucket}/work",
        keep_work=True,
        split_size="8KiB",
        reducers=3,
        workers=2,
        max_attempts=2,
    )
    listed = keys(client, s3_bucket, "out/")
    assert "out/_REPORT.json" in listed and "out/_SUCCESS" in listed
    body = client.get_object(Bucket=s3_bucket, Key="out/_REPORT.json")["Body"].read()
    report = json.loads(body)
    assert report["format"] == FORMAT and report["job_id"] == summary["job_id"]
    assert load_report(out) == report

    rows = report["attempts"]
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert len(failed) == 1 and "first attempt of this task fails" in failed[0]["error"]
    committed = [r for r in rows if r["outcome"] == "committed"]
    assert len(committed) == summary["tasks"]["map"] + 3
    # Every attempt talked to MinIO: requests and bytes as the S3 store counted them.
    for r in committed:
        assert r["storage_requests"] >= 2 and r["bytes_read"] > 0 and r["bytes_written"] > 0
        assert r["bytes_written"] >= r["bytes_out"]
    totals = report["totals"]
    assert totals["storage_requests"] == sum(r["storage_requests"] for r in rows)
    assert totals["bytes_written"] == sum(r["bytes_written"] for r in rows)
    kub = summary["counters"]["kubemr"]
    maps = [r for r in committed if r["wave"] == "map"]
    reduces = {r["index"]: r for r in committed if r["wave"] == "reduce"}
    assert sum(r["bytes_in"] for r in maps) == kub["map_input_bytes"]
    assert sum(r["records_in"] for r in maps) == len(LINES)
    assert sum(p["bytes"] for p in report["partitions"]) == kub["shuffle_bytes"]
    for p in report["partitions"]:
        assert reduces[p["partition"]]["shuffle_bytes_fetched"] == p["bytes"]
    hot = max(report["partitions"], key=lambda p: p["records"])
    assert hot["top_keys"][0][0] == '"hot"'
    assert hot["top_keys"][0][1] == pytest.approx(WORDS["hot"], rel=0.1)
    assert sum(r["records_out"] for r in reduces.values()) == len(WORDS)

    # The work dir in the bucket gives the same attempts.
    built = load_report(f"s3://{s3_bucket}/work/{summary['job_id']}")
    assert built["status"] == "succeeded"
    assert built["attempts"] == rows and built["partitions"] == report["partitions"]


def test_an_output_with_a_report_is_replaced_or_refused_as_kubemrs(
    minio, s3_bucket, job, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = minio.client()
    put(client, s3_bucket, "in/a.txt", b"a b\nb\nalways\n")
    out = f"s3://{s3_bucket}/out"
    first = run_file(job, inputs=[f"s3://{s3_bucket}/in/"], output=out, reducers=1)
    assert "out/_REPORT.json" in keys(client, s3_bucket, "out/")
    with pytest.raises(OutputError, match="not empty"):
        run_file(job, inputs=[f"s3://{s3_bucket}/in/"], output=out)
    second = run_file(job, inputs=[f"s3://{s3_bucket}/in/"], output=out, overwrite=True)
    assert second["job_id"] != first["job_id"]
    assert load_report(out)["job_id"] == second["job_id"]
    # A run that takes the output and fails leaves neither the old report nor _SUCCESS.
    monkeypatch.setenv("KUBEMR_TEST_FAIL", "1")
    with pytest.raises(JobFailed):
        run_file(job, inputs=[f"s3://{s3_bucket}/in/"], output=out, overwrite=True, max_attempts=1)
    left = keys(client, s3_bucket, "out/")
    assert "out/_REPORT.json" not in left and "out/_SUCCESS" not in left
