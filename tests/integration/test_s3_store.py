"""The S3 backend against a real MinIO server."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from kubemr import storage
from kubemr.storage import StorageError, StorageOptions
from kubemr.storage import s3 as s3mod
from kubemr.storage.s3 import S3Store
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_round_trip_and_ranges(minio, s3_bucket, monkeypatch) -> None:
    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)
    store = S3Store(StorageOptions())
    data = os.urandom(12 << 20)  # three multipart parts
    url = f"s3://{s3_bucket}/big.bin"
    with store.open_write(url) as fh:
        for i in range(0, len(data), 3 << 20):
            fh.write(data[i : i + (3 << 20)])
    assert store.stat(url).size == len(data)
    for start, end in [
        (0, 10),
        (1, 5 << 20),
        ((5 << 20) - 1, (5 << 20) + 1),
        (len(data) - 1, len(data)),
    ]:
        with store.open_read(url, start, end) as fh:
            got = b""
            while chunk := fh.read(1 << 20):
                got += chunk
        assert got == data[start:end]
    small = f"s3://{s3_bucket}/small.txt"
    with store.open_write(small) as fh:
        fh.write(b"hello")
    assert storage.read_bytes(small) == b"hello"
    snap = store.stats.snapshot()
    assert snap["requests"]["PUT"] >= 5 and snap["bytes_written"] == len(data) + 5


def test_exception_leaves_no_object_and_no_upload(minio, s3_bucket) -> None:
    store = S3Store(StorageOptions())
    url = f"s3://{s3_bucket}/never.bin"
    with pytest.raises(ValueError), store.open_write(url) as fh:
        fh.write(b"x" * (9 << 20))
        raise ValueError("task failed half way")
    with pytest.raises(FileNotFoundError):
        store.stat(url)
    uploads = minio.client().list_multipart_uploads(Bucket=s3_bucket)
    assert not uploads.get("Uploads")


def test_list_paginates_and_delete_prefix(minio, s3_bucket) -> None:
    client = minio.client()
    keys = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=s3_bucket, Key=k, Body=b"."), keys))
    client.put_object(Bucket=s3_bucket, Key="manyother", Body=b".")
    store = S3Store(StorageOptions())
    listed = [i.url for i in store.list(f"s3://{s3_bucket}/many/")]
    assert listed == [f"s3://{s3_bucket}/{k}" for k in keys]
    assert store.stats.requests["LIST"] >= 2
    assert store.delete_prefix(f"s3://{s3_bucket}/many/") == 1100
    assert [i.url for i in store.list(f"s3://{s3_bucket}/many")] == [f"s3://{s3_bucket}/manyother"]


def test_globs_over_keys(minio, s3_bucket) -> None:
    client = minio.client()
    for key in ["logs/2026/a.txt", "logs/2026/b.gz", "logs/2025/c.txt", "logs/_tmp/d.txt"]:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x\n")
    ((_, found),) = storage.expand_inputs([f"s3://{s3_bucket}/logs/**/*.txt"])
    assert [i.url for i in found] == [
        f"s3://{s3_bucket}/logs/2025/c.txt",
        f"s3://{s3_bucket}/logs/2026/a.txt",
    ]


def test_check_access_errors_are_clear_and_keep_the_secret(minio, s3_bucket, monkeypatch) -> None:
    store = S3Store(StorageOptions())
    store.check_access(f"s3://{s3_bucket}/x", write=True)
    with pytest.raises(
        StorageError, match=r"bucket 'absent-bucket' at http://127\.0\.0\.1:\d+ does not exist"
    ):
        store.check_access("s3://absent-bucket/x", write=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-xyz")
    with pytest.raises(StorageError) as info:
        S3Store(StorageOptions()).check_access(f"s3://{s3_bucket}/x", write=False)
    assert "refused" in str(info.value) and s3_bucket in str(info.value)
    assert "wrong-secret-value-xyz" not in str(info.value)
    port = free_port()
    closed = S3Store(StorageOptions(s3_endpoint=f"http://127.0.0.1:{port}"))
    with pytest.raises(StorageError, match=rf"cannot reach http://127\.0\.0\.1:{port}"):
        closed.check_access(f"s3://{s3_bucket}/x", write=True)
