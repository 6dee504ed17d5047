"""The S3 backend against a real MinIO server."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kubemr import storage
from kubemr.storage import StorageError, StorageOptions
from kubemr.storage.s3 import S3Store
from tests.support import free_port

pytestmark = pytest.mark.integration
MiB = 1 << 20
PART = 5 * MiB  # the smallest part S3 allows


def _requests(store: S3Store) -> dict[str, int]:
    return dict(store.stats.snapshot()["requests"])  # type: ignore[call-overload]


def test_small_and_multipart_round_trip(minio: Any, s3_bucket: str) -> None:
    store = S3Store(StorageOptions(), part_size=PART)
    data = os.urandom(13 * MiB)  # parts of 5 + 5 + 3 MiB
    url = f"s3://{s3_bucket}/dir/big.bin"
    with store.open_write(url) as fh:
        for i in range(0, len(data), 3 * MiB + 7):  # writes that straddle part boundaries
            fh.write(data[i : i + 3 * MiB + 7])
        assert fh.tell() == len(data)
        with pytest.raises(FileNotFoundError):
            store.stat(url)  # parts are out, but nothing appears before the close
    assert _requests(store)["PUT"] == 5  # create + 3 parts + complete
    head = minio.client().head_object(Bucket=s3_bucket, Key="dir/big.bin")
    assert head["ETag"].strip('"').endswith("-3")
    assert store.stat(url).size == len(data)
    with store.open_read(url) as fh:
        assert fh.read() == data

    small = f"s3://{s3_bucket}/small.txt"
    with store.open_write(small) as fh:
        fh.write(b"hello")
    assert storage.read_bytes(small) == b"hello"
    with store.open_write(small) as fh:  # replacing is whole, too
        fh.write(b"bye")
    assert minio.client().get_object(Bucket=s3_bucket, Key="small.txt")["Body"].read() == b"bye"
    snap = store.stats.snapshot()
    assert snap["requests"]["PUT"] == 7  # type: ignore[index]
    assert snap["bytes_written"] == len(data) + 5 + 3
    assert snap["bytes_read"] == len(data)


def test_ranged_reads_at_many_offsets_equal_local_slices(s3_bucket: str) -> None:
    store = S3Store(StorageOptions(), part_size=PART)
    data = os.urandom(11 * MiB)
    url = f"s3://{s3_bucket}/ranges.bin"
    with store.open_write(url) as fh:
        fh.write(data)
    rng = random.Random(7)
    edges = [0, 1, PART - 1, PART, PART + 1, 2 * PART, len(data) - 1, len(data)]
    ranges = [(a, b) for a in edges for b in edges if a <= b]
    ranges += sorted((rng.randrange(len(data)), rng.randrange(len(data))) for _ in range(40))
    ranges = [(min(a, b), max(a, b)) for a, b in ranges]
    before = _requests(store)["GET"]
    for start, end in ranges:
        with store.open_read(url, start, end) as fh:
            got = bytearray()
            while chunk := fh.read(rng.choice([1, 1000, 65536, MiB])):
                got += chunk
        assert bytes(got) == data[start:end], (start, end)
    # one GET per non-empty range; an empty range makes no request
    assert _requests(store)["GET"] - before == sum(1 for a, b in ranges if a < b)
    with store.open_read(url, len(data) - 10) as fh:
        assert fh.read() == data[-10:]
    with store.open_read(url, len(data) + 1) as fh:
        assert fh.read() == b""


def test_exception_leaves_no_object_and_no_upload(minio: Any, s3_bucket: str) -> None:
    store = S3Store(StorageOptions(), part_size=PART)
    url = f"s3://{s3_bucket}/never.bin"
    with pytest.raises(ValueError), store.open_write(url) as fh:
        fh.write(b"x" * (12 * MiB))  # two parts already uploaded
        raise ValueError("task failed half way")
    with pytest.raises(FileNotFoundError):
        store.stat(url)
    client = minio.client()
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    with pytest.raises(ValueError), store.open_write(f"s3://{s3_bucket}/small") as fh:
        fh.write(b"x")
        raise ValueError("before any part")
    assert client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_list_paginates_prefixes_and_delete_prefix(minio: Any, s3_bucket: str) -> None:
    client = minio.client()
    keys = [f"many/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=s3_bucket, Key=k, Body=b"."), keys))
    for key in ("manyother", "many-x/y", "other/z"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"..")
    store = S3Store(StorageOptions())
    listed = list(store.list(f"s3://{s3_bucket}/many/"))
    assert [i.url for i in listed] == [f"s3://{s3_bucket}/{k}" for k in keys]
    assert {i.size for i in listed} == {1}
    assert _requests(store)["LIST"] == 2  # 1000 keys a page
    paged = S3Store(StorageOptions(), page_size=100)
    assert [i.url for i in paged.list(f"s3://{s3_bucket}/many/")] == [i.url for i in listed]
    assert _requests(paged)["LIST"] in (11, 12)  # MinIO may end on an empty page
    # a prefix is a string prefix, not a directory
    wide = [i.url for i in store.list(f"s3://{s3_bucket}/many")]
    assert len(wide) == 1102
    assert wide[0] == f"s3://{s3_bucket}/many-x/y" and wide[-1] == f"s3://{s3_bucket}/manyother"
    assert [i.url for i in store.list(f"s3://{s3_bucket}/many-")] == [f"s3://{s3_bucket}/many-x/y"]
    deletes = _requests(store)["DELETE"]
    assert store.delete_prefix(f"s3://{s3_bucket}/many/") == 1100
    assert _requests(store)["DELETE"] - deletes == 2  # batches of 1000
    left = [i.url for i in store.list(f"s3://{s3_bucket}/")]
    assert left == [f"s3://{s3_bucket}/{k}" for k in ("many-x/y", "manyother", "other/z")]
    store.delete(f"s3://{s3_bucket}/other/z")
    store.delete(f"s3://{s3_bucket}/other/z")  # missing: not an error
    assert store.delete_prefix(f"s3://{s3_bucket}/nothing/") == 0


def test_globs_over_keys(minio: Any, s3_bucket: str) -> None:
    client = minio.client()
    for key in ["logs/2026/a.txt", "logs/2026/b.gz", "logs/2025/c.txt", "logs/_tmp/d.txt"]:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x\n")
    ((_, found),) = storage.expand_inputs([f"s3://{s3_bucket}/logs/**/*.txt"])
    assert [i.url for i in found] == [
        f"s3://{s3_bucket}/logs/2025/c.txt",
        f"s3://{s3_bucket}/logs/2026/a.txt",
    ]


def test_request_counters(s3_bucket: str) -> None:
    store = S3Store(StorageOptions())
    url = f"s3://{s3_bucket}/counted"
    with store.open_write(url) as fh:
        fh.write(b"0123456789")
    store.stat(url)
    with store.open_read(url, 2, 6) as fh:
        assert fh.read() == b"2345"
    list(store.list(f"s3://{s3_bucket}/"))
    store.delete(url)
    assert store.stats.snapshot() == {
        "requests": {"GET": 1, "PUT": 1, "LIST": 1, "DELETE": 1, "HEAD": 1},
        "bytes_read": 4,
        "bytes_written": 10,
    }


def test_check_access_errors_are_clear_and_keep_the_secret(
    minio: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store(StorageOptions())
    store.check_access(f"s3://{s3_bucket}/x", write=True)
    store.check_access(f"s3://{s3_bucket}/x", write=False)

    with pytest.raises(StorageError) as missing:
        store.check_access("s3://absent-bucket/x", write=True)
    assert f"bucket 'absent-bucket' at {minio.endpoint} does not exist" in str(missing.value)
    assert "create it" in str(missing.value)

    secret = "wrong-secret-value-xyz"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(StorageError) as wrong_secret:
        S3Store(StorageOptions()).check_access(f"s3://{s3_bucket}/x", write=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError) as wrong_key:
        S3Store(StorageOptions()).check_access(f"s3://{s3_bucket}/x", write=True)
    for info in (wrong_secret, wrong_key):
        message = str(info.value)
        assert f"bucket {s3_bucket!r} at {minio.endpoint}" in message
        assert "refused" in message and "AWS_SECRET_ACCESS_KEY" in message
        assert secret not in message and minio.secret_key not in message

    port = free_port()
    closed = S3Store(StorageOptions(s3_endpoint=f"http://127.0.0.1:{port}"))
    with pytest.raises(StorageError) as unreachable:
        closed.check_access(f"s3://{s3_bucket}/x", write=True)
    message = str(unreachable.value)
    assert f"cannot reach http://127.0.0.1:{port} for bucket {s3_bucket!r}" in message
    assert "--s3-endpoint" in message and secret not in message


def test_wrong_credentials_during_a_job_say_what_to_do(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-wrong-secret")
    store = S3Store(StorageOptions())
    with pytest.raises(StorageError, match=r"refused.*AWS_ACCESS_KEY_ID") as info:
        store.stat(f"s3://{s3_bucket}/anything")
    assert "another-wrong-secret" not in str(info.value)


def _read_in_child(store: S3Store, url: str, queue: Any) -> None:
    with store.open_read(url, 1, 4) as fh:
        queue.put((os.getpid(), fh.read(), store._pid == os.getpid()))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_store_works_in_forked_and_spawned_workers(s3_bucket: str, method: str) -> None:
    store = S3Store(StorageOptions())
    url = f"s3://{s3_bucket}/shared"
    with store.open_write(url) as fh:
        fh.write(b"abcdef")
    parent_client = store.client  # made in this process before the fork
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_in_child, args=(store, url, queue))
    proc.start()
    pid, data, own_client = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0 and pid != os.getpid()
    assert data == b"bcd" and own_client
    assert store.client is parent_client


def test_reader_resumes_across_a_server_restart(minio: Any, s3_bucket: str) -> None:
    store = S3Store(StorageOptions(), part_size=16 * MiB)
    data = os.urandom(48 * MiB)
    url = f"s3://{s3_bucket}/long-read"
    with store.open_write(url) as fh:
        fh.write(data)
    got = bytearray()
    with store.open_read(url) as fh:
        got += fh.read(64 * 1024)
        minio.stop()  # the open stream breaks with the server, most of it unsent
        restart = threading.Thread(target=minio.start)
        restart.start()
        while chunk := fh.read(64 * 1024):
            got += chunk
        restart.join()
    assert bytes(got) == data
    assert _requests(store)["GET"] >= 2  # resumed from where it broke


def test_concurrent_readers_share_one_store(s3_bucket: str) -> None:
    store = S3Store(StorageOptions())
    blobs = {f"s3://{s3_bucket}/c/{i}": os.urandom(100_000 + i) for i in range(24)}
    for url, blob in blobs.items():
        with store.open_write(url) as fh:
            fh.write(blob)

    def read(url: str) -> bytes:
        with store.open_read(url) as fh:
            return fh.read()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(read, blobs)) == list(blobs.values())
    assert store.stats.bytes_read == sum(len(b) for b in blobs.values())


def test_create_exclusive_one_winner_among_racers(minio: Any, s3_bucket: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = S3Store()
    url = f"s3://{s3_bucket}/decided.json"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: store.create_exclusive(url, str(i).encode()), range(16)))
    assert won.count(True) == 1
    with store.open_read(url) as fh:
        assert fh.read() == str(won.index(True)).encode()
