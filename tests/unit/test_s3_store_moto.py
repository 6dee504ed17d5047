"""S3 backend edge cases against moto: resumed reads, multipart, aborts, retries, errors."""

from __future__ import annotations

import os
import pickle
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from kubemr.storage import StorageError, StorageOptions
from kubemr.storage import s3 as s3mod
from kubemr.storage.s3 import S3Store
from tests.support import free_port

BUCKET = "unit"
MiB = 1 << 20


def _clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(key, raising=False)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield S3Store(StorageOptions(), part_size=5 * MiB)


def _client() -> Any:
    return boto3.client("s3", region_name="us-east-1")


def _put(store: S3Store, key: str, data: bytes) -> str:
    url = f"s3://{BUCKET}/{key}"
    with store.open_write(url) as fh:
        fh.write(data)
    return url


def _error_response(request: Any, status: int, code: str) -> AWSResponse:
    class Raw:
        def stream(self, **_: Any) -> Any:
            yield b""

    response = AWSResponse(request.url, status, {}, Raw())
    response._content = f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()
    return response


# -- writing ---------------------------------------------------------------------------
def test_small_object_is_one_put(store: S3Store) -> None:
    url = f"s3://{BUCKET}/small.txt"
    with store.open_write(url) as fh:
        fh.write(b"hello ")
        fh.write(memoryview(b"world"))
        assert fh.tell() == 11
    assert store.stats.requests["PUT"] == 1
    assert store.stats.bytes_written == 11
    assert _client().get_object(Bucket=BUCKET, Key="small.txt")["Body"].read() == b"hello world"


def test_multipart_round_trip_splits_big_writes_into_parts(store: S3Store) -> None:
    big = os.urandom(13 * MiB)  # parts of 5 + 5 + 3 MiB, from one write
    url = f"s3://{BUCKET}/dir/big.bin"
    with store.open_write(url) as fh:
        fh.write(big)
        assert fh.tell() == len(big)
        # two full parts went out while writing; the rest waits for the close
        assert store.stats.requests["PUT"] == 3
    assert store.stats.requests["PUT"] == 5  # create + 3 parts + complete
    assert store.stats.bytes_written == len(big)
    assert store.stat(url).size == len(big)
    with store.open_read(url) as fh:
        assert fh.read() == big


def test_part_size_grows_after_many_parts(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3mod, "PARTS_PER_STEP", 2)
    sizes: list[int] = []
    real = store.client.upload_part

    def spy(**kwargs: Any) -> Any:
        sizes.append(len(kwargs["Body"]))
        return real(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", spy)
    data = os.urandom(31 * MiB)
    url = _put(store, "grow.bin", data)
    assert sizes == [5 * MiB, 5 * MiB, 10 * MiB, 10 * MiB, 1 * MiB]
    with store.open_read(url) as fh:
        assert fh.read() == data


def test_failed_write_leaves_no_object_and_no_upload(store: S3Store) -> None:
    url = f"s3://{BUCKET}/partial"
    with pytest.raises(RuntimeError), store.open_write(url) as fh:
        fh.write(b"x" * (11 * MiB))  # two parts are already uploaded
        raise RuntimeError("task failed")
    with pytest.raises(FileNotFoundError):
        store.stat(url)
    assert not _client().list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    with pytest.raises(KeyError), store.open_write(f"s3://{BUCKET}/small-partial") as fh:
        fh.write(b"abc")
        raise KeyError("small")
    assert list(store.list(f"s3://{BUCKET}/")) == []


def test_failed_complete_aborts_the_upload(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: Any) -> Any:
        error = {"Error": {"Code": "InvalidPart", "Message": "m"}}
        raise botocore.exceptions.ClientError(error, "CompleteMultipartUpload")

    monkeypatch.setattr(store.client, "complete_multipart_upload", refuse)
    url = f"s3://{BUCKET}/incomplete"
    with pytest.raises(botocore.exceptions.ClientError), store.open_write(url) as fh:
        fh.write(b"y" * (6 * MiB))
    assert not _client().list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    with pytest.raises(FileNotFoundError):
        store.stat(url)


def test_writer_refuses_writes_after_the_block(store: S3Store) -> None:
    with store.open_write(f"s3://{BUCKET}/done") as fh:
        fh.write(b"1")
    with pytest.raises(ValueError):
        fh.write(b"2")
    with pytest.raises(IsADirectoryError), store.open_write(f"s3://{BUCKET}/dir/"):
        pass


# -- reading ---------------------------------------------------------------------------
def test_ranged_reads_equal_slices(store: S3Store) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = _put(store, "ranges", data)
    offsets = [0, 1, 255, 256, 4095, 65536, 500_000, len(data) - 1, len(data)]
    for start in offsets:
        for end in {start, start + 1, min(start + 70_000, len(data)), len(data)}:
            if end < start or end > len(data):
                continue
            with store.open_read(url, start, end) as fh:
                got = bytearray()
                while chunk := fh.read(10_000):
                    got += chunk
            assert bytes(got) == data[start:end], (start, end)
    with store.open_read(url, 100) as fh:  # no end: to the end of the object
        assert fh.read() == data[100:]
    with store.open_read(url, len(data) + 10) as fh:  # past the end: nothing
        assert fh.read() == b""
    buf = bytearray(16)
    with store.open_read(url, 16, 32) as fh:
        assert fh.readinto(buf) == 16
    assert bytes(buf) == data[16:32]


def test_empty_range_and_empty_object_make_no_error(store: S3Store) -> None:
    url = _put(store, "empty", b"")
    before = store.stats.requests["GET"]
    with store.open_read(url, 5, 5) as fh:
        assert fh.read() == b""
    assert store.stats.requests["GET"] == before  # no request for an empty range
    with store.open_read(url) as fh:
        assert fh.read() == b""
    with pytest.raises(FileNotFoundError):
        store.open_read(f"s3://{BUCKET}/missing").read()


class _Flaky:
    """A response body that breaks on its second read."""

    def __init__(self, body: Any, error: Exception) -> None:
        self.body = body
        self.error = error
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:
            raise self.error
        return self.body.read(n) if n >= 0 else self.body.read()

    def close(self) -> None:
        self.body.close()


def _flaky_gets(
    store: S3Store, monkeypatch: pytest.MonkeyPatch, breaks: int, error: Exception
) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    real = store.client.get_object

    def get_object(**kwargs: Any) -> Any:
        calls.append(kwargs)
        resp = real(**kwargs)
        if len(calls) <= breaks:
            resp["Body"] = _Flaky(resp["Body"], error)
        return resp

    monkeypatch.setattr(store.client, "get_object", get_object)
    monkeypatch.setattr(s3mod.time, "sleep", lambda _s: None)
    return calls


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        botocore.exceptions.ResponseStreamingError(error="connection reset by peer"),
        ConnectionResetError("reset"),
    ],
    ids=["incomplete-read", "streaming-error", "connection-reset"],
)
def test_broken_stream_resumes_from_offset(
    store: S3Store, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    data = b"0123456789" * 100_000
    url = _put(store, "resume", data)
    calls = _flaky_gets(store, monkeypatch, breaks=3, error=error)
    out = bytearray()
    with store.open_read(url, 10, len(data)) as fh:
        while chunk := fh.read(65536):
            out += chunk
    assert bytes(out) == data[10:]
    assert len(calls) == 4 and store.stats.requests["GET"] == 4
    # each resume asks for the rest of the range, of the same version of the object
    assert calls[0]["Range"] == f"bytes=10-{len(data) - 1}"
    assert [c["Range"] for c in calls[1:]] == [
        f"bytes={10 + 65536 * k}-{len(data) - 1}" for k in (1, 2, 3)
    ]
    assert all(c["IfMatch"] == calls[1]["IfMatch"] for c in calls[1:])
    assert store.stats.bytes_read == len(data) - 10


def test_a_stream_that_keeps_breaking_gives_up(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _put(store, "hopeless", b"z" * 100_000)
    real = store.client.get_object

    class Broken:
        def read(self, n: int = -1) -> bytes:
            raise botocore.exceptions.ResponseStreamingError(error="reset")

        def close(self) -> None:
            pass

    def get_object(**kwargs: Any) -> Any:
        resp = real(**kwargs)
        resp["Body"] = Broken()
        return resp

    monkeypatch.setattr(store.client, "get_object", get_object)
    monkeypatch.setattr(s3mod.time, "sleep", lambda _s: None)
    with pytest.raises(botocore.exceptions.ResponseStreamingError), store.open_read(url) as fh:
        fh.read(10)
    assert store.stats.requests["GET"] == 1 + s3mod.READ_RESUMES


def test_object_replaced_mid_read_is_an_error(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _put(store, "replaced", b"a" * 200_000)
    _flaky_gets(store, monkeypatch, breaks=1, error=ConnectionResetError("reset"))
    with store.open_read(url) as fh:
        assert fh.read(1000) == b"a" * 1000
        _client().put_object(Bucket=BUCKET, Key="replaced", Body=b"b" * 200_000)
        with pytest.raises(StorageError, match="replaced while it was being read"):
            fh.read(1000)


# -- listing and deleting ----------------------------------------------------------------
def test_list_pages_and_prefix_semantics(store: S3Store) -> None:
    client = _client()
    keys = [f"p/{i:03d}" for i in range(30)] + ["p2/x", "q/y"]
    for key in reversed(keys):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * len(key))
    store.page_size = 7
    listed = list(store.list(f"s3://{BUCKET}/p/"))
    assert [i.url for i in listed] == [f"s3://{BUCKET}/p/{i:03d}" for i in range(30)]
    assert all(i.size == 5 for i in listed)
    assert store.stats.requests["LIST"] == 5  # ceil(30 / 7)
    assert [i.url for i in store.list(f"s3://{BUCKET}/p")][-1] == f"s3://{BUCKET}/p2/x"
    assert list(store.list(f"s3://{BUCKET}/none/")) == []


def test_delete_prefix_batches_of_1000(store: S3Store) -> None:
    client = _client()
    for i in range(1001):
        client.put_object(Bucket=BUCKET, Key=f"d/{i:04d}", Body=b"")
    client.put_object(Bucket=BUCKET, Key="keep", Body=b"")
    assert store.delete_prefix(f"s3://{BUCKET}/d/") == 1001
    assert store.stats.requests["DELETE"] == 2
    assert [i.url for i in store.list(f"s3://{BUCKET}/")] == [f"s3://{BUCKET}/keep"]
    store.delete(f"s3://{BUCKET}/keep")
    store.delete(f"s3://{BUCKET}/keep")  # a missing object is not an error
    assert store.delete_prefix(f"s3://{BUCKET}/d/") == 0


def test_stat(store: S3Store) -> None:
    url = _put(store, "s/obj", b"12345")
    assert store.stat(url).size == 5
    assert store.stats.requests["HEAD"] == 1
    with pytest.raises(FileNotFoundError):
        store.stat(f"s3://{BUCKET}/nope")
    with pytest.raises(IsADirectoryError):
        store.stat(f"s3://{BUCKET}/s/")


# -- retries -----------------------------------------------------------------------------
def test_throttling_and_server_errors_are_retried(store: S3Store) -> None:
    url = _put(store, "retried", b"payload")
    failures = {"n": 0}

    def fail_three_times(request: Any, **_: Any) -> AWSResponse | None:
        if failures["n"] < 3:
            failures["n"] += 1
            status, code = [(503, "SlowDown"), (500, "InternalError"), (429, "Throttling")][
                failures["n"] - 1
            ]
            return _error_response(request, status, code)
        return None

    store.client.meta.events.register("before-send.s3.GetObject", fail_three_times)
    with store.open_read(url) as fh:
        assert fh.read() == b"payload"
    assert failures["n"] == 3
    assert store.stats.requests["GET"] == 1  # one logical request, retried by botocore


def test_retry_settings_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    config = S3Store(StorageOptions(max_pool_connections=40)).client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": s3mod.MAX_ATTEMPTS}
    assert config.max_pool_connections == 40
    assert config.connect_timeout == s3mod.CONNECT_TIMEOUT
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert S3Store().client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}


# -- configuration -------------------------------------------------------------------------
def test_endpoint_region_and_addressing(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    aws = S3Store().client
    assert aws.meta.region_name == "us-east-1"  # nothing configured
    assert (aws.meta.config.s3 or {}).get("addressing_style") != "path"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    env = S3Store()
    assert env.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert env.client.meta.region_name == "eu-west-3"
    assert env.client.meta.config.s3["addressing_style"] == "path"
    explicit = S3Store(StorageOptions(s3_endpoint="http://minio.example:9001"))
    assert explicit.client.meta.endpoint_url == "http://minio.example:9001"
    assert explicit.endpoint == "http://minio.example:9001"


def test_client_is_per_process_and_store_pickles(store: S3Store) -> None:
    first = store.client
    assert store.client is first
    store._pid = -1  # as seen from a forked child
    assert store.client is not first
    clone = pickle.loads(pickle.dumps(store))
    assert clone._client is None and clone.part_size == 5 * MiB
    assert clone.stat(_put(store, "pickled", b"abc")).size == 3


def test_a_forked_child_gets_fresh_locks_and_its_own_client(store: S3Store) -> None:
    _ = store.client
    with store._lock:  # held by this process at the moment of the fork
        pid = os.fork()
        if pid == 0:  # the child
            ok = store._lock.acquire(timeout=5) and store._client is None
            store._lock.release()
            ok = ok and store.stat(_put(store, "from-child", b"xy")).size == 2
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- checks ----------------------------------------------------------------------------
def test_check_access_names_missing_bucket(store: S3Store) -> None:
    store.check_access(f"s3://{BUCKET}/x", write=True)
    with pytest.raises(StorageError) as info:
        store.check_access("s3://absent/x", write=True)
    message = str(info.value)
    assert "bucket 'absent' at https://s3.amazonaws.com does not exist" in message
    assert "create it" in message


@pytest.mark.parametrize("status,code", [(403, "InvalidAccessKeyId"), (403, "AccessDenied")])
def test_check_access_wrong_credentials(
    store: S3Store, monkeypatch: pytest.MonkeyPatch, status: int, code: str
) -> None:
    real = S3Store._make_client

    def make(self: S3Store, *, quick: bool = False) -> Any:
        client = real(self, quick=quick)
        client.meta.events.register(
            "before-send.s3.HeadBucket", lambda request, **_: _error_response(request, status, code)
        )
        return client

    monkeypatch.setattr(S3Store, "_make_client", make)
    with pytest.raises(StorageError) as info:
        store.check_access(f"s3://{BUCKET}/x", write=False)
    message = str(info.value)
    assert "refused" in message and repr(BUCKET) in message and "AWS_ACCESS_KEY_ID" in message
    assert "testing-secret" not in message


def test_check_access_unreachable_endpoint_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setattr(s3mod.time, "sleep", lambda _s: None)
    port = free_port()
    store = S3Store(StorageOptions(s3_endpoint=f"http://127.0.0.1:{port}"))
    with pytest.raises(StorageError) as info:
        store.check_access("s3://bkt/x", write=True)
    message = str(info.value)
    assert f"cannot reach http://127.0.0.1:{port} for bucket 'bkt'" in message
    assert "--s3-endpoint" in message and "testing-secret" not in message


def test_check_access_bad_endpoint_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    store = S3Store(StorageOptions(s3_endpoint="minio:9000"))
    with pytest.raises(StorageError, match="bad S3 endpoint 'minio:9000'"):
        store.check_access("s3://bkt/x", write=True)


def test_check_access_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=r"no credentials for bucket 'bkt'.*AWS_ACCESS_KEY_ID"):
        S3Store().check_access("s3://bkt/x", write=False)


def test_errors_during_a_job_say_what_to_do(store: S3Store) -> None:
    with pytest.raises(StorageError, match=r"'absent' at .* does not exist"):
        list(store.list("s3://absent/x/"))
    with pytest.raises(StorageError, match="does not exist"), store.open_write("s3://absent/k"):
        pass


def test_create_exclusive_first_writer_wins(store: S3Store) -> None:
    url = f"s3://{BUCKET}/choice.json"
    assert store.create_exclusive(url, b"first")
    assert not store.create_exclusive(url, b"second")
    with store.open_read(url) as fh:
        assert fh.read() == b"first"


# -- the retry budget --------------------------------------------------------------------
class _FakeClock:
    """The retry loop's clock, moved on only by its waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    fake = _FakeClock()
    monkeypatch.setattr(s3mod, "_clock", fake)
    monkeypatch.setattr(s3mod, "_sleep", fake.sleep)
    monkeypatch.setattr(s3mod, "_given_up", set())
    return fake


def _outage_waits(budget: float) -> list[float]:
    """The waits of the outer loop before it gives up, by its documented rule."""
    waits: list[float] = []
    delay = s3mod.RETRY_FIRST_DELAY
    while sum(waits) + delay <= budget:
        waits.append(delay)
        delay = min(delay * 2, s3mod.RETRY_MAX_DELAY)
    return waits


def test_the_retry_budget_absorbs_a_restart_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.delenv(s3mod.RETRY_ENV, raising=False)
    budget = s3mod.retry_budget()
    assert budget.retry_seconds >= 20  # a server restart, a short network cut
    assert budget.worst_case_seconds <= 180  # a hung server: minutes at most, not many
    backoff = sum(0.05 * 2**i for i in range(1, budget.attempts))
    timeouts = budget.connect_timeout + budget.read_timeout
    assert budget.call_seconds == pytest.approx(budget.attempts * timeouts + backoff)
    assert budget.worst_case_seconds == pytest.approx(
        budget.retry_seconds + s3mod.RETRY_MAX_DELAY + budget.call_seconds
    )
    config = S3Store().client.meta.config
    assert config.retries["total_max_attempts"] == budget.attempts
    assert (config.connect_timeout, config.read_timeout) == (
        budget.connect_timeout,
        budget.read_timeout,
    )
    monkeypatch.setenv(s3mod.RETRY_ENV, "5")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    assert (s3mod.retry_budget().retry_seconds, s3mod.retry_budget().attempts) == (5.0, 2)
    monkeypatch.setenv(s3mod.RETRY_ENV, "soon")
    assert s3mod.retry_budget().retry_seconds == s3mod.RETRY_SECONDS


def test_an_unreachable_server_is_retried_for_the_budget_then_named(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    clock: _FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _clean_aws_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the outer loop alone, for speed
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3Store(StorageOptions(s3_endpoint=endpoint))
    with pytest.raises(s3mod.StorageUnavailable) as info:
        store.stat("s3://bkt/in/part-0.txt")
    error = info.value
    assert clock.waits == _outage_waits(s3mod.RETRY_SECONDS)
    assert error.tries == len(clock.waits) + 1
    assert error.seconds == sum(clock.waits) <= s3mod.RETRY_SECONDS
    message = str(error)
    assert f"cannot reach the object store at {endpoint} (EndpointConnectionError)" in message
    assert "HEAD s3://bkt/in/part-0.txt" in message
    assert "check that the server is up" in message and "testing-secret" not in message
    assert isinstance(error, StorageError)
    # One warning when the waiting began, not one per try.
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot reach the object store at {endpoint} (EndpointConnectionError) on HEAD "
        f"s3://bkt/in/part-0.txt; trying again for up to {s3mod.RETRY_SECONDS:.0f}s"
    ]

    # What else this process tries there fails at once, until a request succeeds.
    waited = len(clock.waits)
    for attempt in (lambda: store.stat("s3://bkt/x"), lambda: list(store.list("s3://bkt/"))):
        with pytest.raises(s3mod.StorageUnavailable) as again:
            attempt()
        assert again.value.tries == 1
    with pytest.raises(s3mod.StorageUnavailable), store.open_write("s3://bkt/marker.json") as fh:
        fh.write(b"{}")
    assert len(clock.waits) == waited


def test_a_success_ends_the_fail_fast_and_short_outages_are_ridden_out(
    store: S3Store, clock: _FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = {"n": 0}

    def down_for(n: int) -> Any:
        def call() -> str:
            calls["n"] += 1
            if calls["n"] <= n:
                raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")
            return "done"

        calls["n"] = 0
        return call

    assert store._retrying("GET", "s3://b/k", down_for(2)) == "done"
    assert clock.waits == [0.5, 1.0]
    assert "answered again after 1.5s (3 tries) on GET s3://b/k" in caplog.text
    with pytest.raises(s3mod.StorageUnavailable):
        store._retrying("GET", "s3://b/k", down_for(1000))
    with pytest.raises(s3mod.StorageUnavailable) as fast:
        store._retrying("GET", "s3://b/k", down_for(1000))
    assert fast.value.tries == 1
    assert store._retrying("GET", "s3://b/k", down_for(0)) == "done"  # back: trusted again
    with pytest.raises(s3mod.StorageUnavailable) as full:
        store._retrying("GET", "s3://b/k", down_for(1000))
    assert full.value.tries == len(_outage_waits(s3mod.RETRY_SECONDS)) + 1


def test_a_server_that_keeps_failing_is_named_with_its_answer(
    store: S3Store, monkeypatch: pytest.MonkeyPatch, clock: _FakeClock
) -> None:
    url = _put(store, "busy", b"payload")
    store.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **_: _error_response(request, 503, "SlowDown")
    )
    with pytest.raises(s3mod.StorageUnavailable) as info, store.open_read(url) as fh:
        fh.read()
    message = str(info.value)
    assert "answered 503 SlowDown for" in message and f"GET {url}" in message
    assert clock.waits == _outage_waits(s3mod.RETRY_SECONDS)


def test_request_errors_are_not_retried(store: S3Store, clock: _FakeClock) -> None:
    with pytest.raises(FileNotFoundError):
        store.stat(f"s3://{BUCKET}/absent")
    with pytest.raises(StorageError, match="does not exist"):
        list(store.list("s3://absent-bucket/x/"))
    store.client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: _error_response(request, 403, "AccessDenied"),
    )
    with pytest.raises(StorageError, match="refused"), store.open_write(f"s3://{BUCKET}/k") as fh:
        fh.write(b"x")
    assert clock.waits == []


def _no_such_upload() -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": "NoSuchUpload"}, "ResponseMetadata": {"HTTPStatusCode": 404}},
        "CompleteMultipartUpload",
    )


@pytest.mark.parametrize("done_before", [True, False], ids=["answer-lost", "never-done"])
def test_a_completion_whose_answer_was_lost_is_not_an_error(
    store: S3Store, monkeypatch: pytest.MonkeyPatch, clock: _FakeClock, done_before: bool
) -> None:
    data = os.urandom(6 * MiB)  # two parts
    real = store.client.complete_multipart_upload
    calls = []

    def complete(**kwargs: Any) -> Any:
        calls.append(kwargs["UploadId"])
        if len(calls) == 1:  # the answer lost on the way back, the work done or not
            if done_before:
                real(**kwargs)
            raise botocore.exceptions.ConnectionClosedError(endpoint_url="http://x")
        raise _no_such_upload()  # as MinIO answers for an upload it no longer has

    monkeypatch.setattr(store.client, "complete_multipart_upload", complete)
    if done_before:
        _put(store, "completed-once", data)
        assert _client().get_object(Bucket=BUCKET, Key="completed-once")["Body"].read() == data
    else:
        with pytest.raises(botocore.exceptions.ClientError, match="NoSuchUpload"):
            _put(store, "completed-once", data)
        with pytest.raises(FileNotFoundError):
            store.stat(f"s3://{BUCKET}/completed-once")
    assert len(calls) == 2 and clock.waits == [0.5]
