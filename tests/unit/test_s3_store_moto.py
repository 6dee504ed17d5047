"""S3 backend edge cases against moto: resumed reads, multipart, aborts, errors."""

from __future__ import annotations

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws

from kubemr.storage import StorageError, StorageOptions
from kubemr.storage import s3 as s3mod
from kubemr.storage.s3 import S3Store

BUCKET = "unit"


@pytest.fixture
def store(monkeypatch):
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield S3Store(StorageOptions())


def test_small_and_multipart_round_trip(store, monkeypatch) -> None:
    monkeypatch.setattr(s3mod, "PART_SIZE", 5 << 20)
    big = bytes(range(256)) * (50_000)  # 12.8 MB: three parts
    url = f"s3://{BUCKET}/dir/big.bin"
    with store.open_write(url) as fh:
        for i in range(0, len(big), 1 << 20):
            fh.write(big[i : i + (1 << 20)])
        assert fh.tell() == len(big)
    assert store.stat(url).size == len(big)
    with store.open_read(url) as fh:
        assert fh.read() == big
    for start, end in [(0, 1), (5, 5), (100, 5_000_000), (len(big) - 3, len(big))]:
        with store.open_read(url, start, end) as fh:
            assert fh.read() == big[start:end]
    assert store.stats.requests["PUT"] >= 4  # create + 3 parts + complete


def test_failed_write_leaves_nothing(store) -> None:
    url = f"s3://{BUCKET}/partial"
    with pytest.raises(RuntimeError), store.open_write(url) as fh:
        fh.write(b"x" * (9 << 20))  # a part is already uploaded
        raise RuntimeError("task failed")
    with pytest.raises(FileNotFoundError):
        store.stat(url)
    uploads = boto3.client("s3", region_name="us-east-1").list_multipart_uploads(Bucket=BUCKET)
    assert not uploads.get("Uploads")


def test_broken_stream_resumes_from_offset(store, monkeypatch) -> None:
    data = b"0123456789" * 100_000
    url = f"s3://{BUCKET}/resume"
    with store.open_write(url) as fh:
        fh.write(data)
    real_get = store._get
    breaks = {"n": 0}

    class Flaky:
        def __init__(self, body):
            self.body = body
            self.reads = 0

        def read(self, n=-1):
            self.reads += 1
            if self.reads == 2 and breaks["n"] < 3:
                breaks["n"] += 1
                raise botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2)
            return self.body.read(n)

        def close(self):
            self.body.close()

    monkeypatch.setattr(store, "_get", lambda *a: Flaky(real_get(*a)))
    out = bytearray()
    with store.open_read(url, 10, len(data)) as fh:
        while chunk := fh.read(65536):
            out += chunk
    assert bytes(out) == data[10:]
    assert breaks["n"] == 3


def test_list_delete_prefix_and_missing(store) -> None:
    for i in range(30):
        with store.open_write(f"s3://{BUCKET}/p/{i:03d}") as fh:
            fh.write(b"x" * i)
    listed = list(store.list(f"s3://{BUCKET}/p/"))
    assert [i.url for i in listed] == [f"s3://{BUCKET}/p/{i:03d}" for i in range(30)]
    assert store.delete_prefix(f"s3://{BUCKET}/p/") == 30
    assert list(store.list(f"s3://{BUCKET}/p/")) == []
    with pytest.raises(FileNotFoundError):
        store.stat(f"s3://{BUCKET}/nope")


def test_check_access_names_missing_bucket(store) -> None:
    with pytest.raises(StorageError, match="bucket 'absent' at AWS S3 does not exist"):
        store.check_access("s3://absent/x", write=True)
    store.check_access(f"s3://{BUCKET}/x", write=True)


def test_store_pickles_without_its_client(store) -> None:
    import pickle

    store.stat  # noqa: B018
    _ = store.client
    clone = pickle.loads(pickle.dumps(store))
    assert clone._client is None


def test_throttling_and_server_errors_are_retried(store) -> None:
    from botocore.awsrequest import AWSResponse

    url = f"s3://{BUCKET}/retried"
    with store.open_write(url) as fh:
        fh.write(b"payload")
    failures = {"n": 0}

    class Raw:
        def stream(self, **_):
            yield b""

    def fail_twice(request, **_):
        if failures["n"] < 2:
            failures["n"] += 1
            status = 503 if failures["n"] == 1 else 500
            body = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
            response = AWSResponse(request.url, status, {}, Raw())
            response._content = body
            return response
        return None

    store.client.meta.events.register("before-send.s3.GetObject", fail_twice)
    with store.open_read(url) as fh:
        assert fh.read() == b"payload"
    assert failures["n"] == 2
