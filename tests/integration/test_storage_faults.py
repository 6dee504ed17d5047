"""The S3 store's retry budget against a real MinIO that stops and starts again: an outage
shorter than the budget is ridden out by every kind of request, a longer one fails with
the endpoint named, and what follows in the same process fails at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubemr.storage import StorageOptions
from kubemr.storage import s3 as s3mod
from kubemr.storage.s3 import S3Store, StorageUnavailable

MiB = 1 << 20
DOWN_SECONDS = 2.0
"""How long an outage lasts here: a server restart."""


@pytest.fixture(autouse=True)
def trusted_endpoints() -> Iterator[None]:
    """No endpoint stays given up on past a test."""
    s3mod._given_up.clear()
    yield
    s3mod._given_up.clear()


def down_for_a_while(minio: Any) -> threading.Thread:
    """Stop the server now, and start it again (same port and data) in a while."""
    minio.stop()
    assert not minio.is_live()

    def back() -> None:
        threading.Event().wait(DOWN_SECONDS)
        minio.start()

    thread = threading.Thread(target=back)
    thread.start()
    return thread


def ride_out(minio: Any, request: Callable[[], Any]) -> Any:
    """``request()`` made while the server is down; what it returns once it is back."""
    thread = down_for_a_while(minio)
    try:
        return request()
    finally:
        thread.join(60)
        assert minio.is_live()


def test_every_kind_of_request_rides_out_a_server_restart(minio: Any, s3_bucket: str) -> None:
    store = S3Store(StorageOptions(), part_size=5 * MiB)
    data = os.urandom(12 * MiB)  # three parts
    url = f"s3://{s3_bucket}/restart/big.bin"
    with store.open_write(url) as fh:
        fh.write(data[: 5 * MiB])  # the first part goes out with the server up
        ride_out(minio, lambda: fh.write(data[5 * MiB :]))  # the second waits for it
    with store.open_read(url) as fh:
        assert ride_out(minio, fh.read) == data
    assert ride_out(minio, lambda: store.stat(url)).size == len(data)
    small = f"s3://{s3_bucket}/restart/small.json"
    assert ride_out(minio, lambda: store.create_exclusive(small, b"{}"))
    assert not store.create_exclusive(small, b"[]")  # the first write stands
    listed = ride_out(minio, lambda: [i.url for i in store.list(f"s3://{s3_bucket}/restart/")])
    assert listed == [url, small]
    ride_out(minio, lambda: store.delete(small))
    assert [i.url for i in store.list(f"s3://{s3_bucket}/restart/")] == [url]


def test_a_server_down_past_the_budget_is_named_and_then_fails_fast(
    minio: Any, s3_bucket: str
) -> None:
    budget = 3.0
    store = S3Store(StorageOptions(), retry_seconds=budget)
    url = f"s3://{s3_bucket}/down/part-0.txt"
    with store.open_write(url) as fh:
        fh.write(b"kept\n")
    with minio.stopped():
        with pytest.raises(StorageUnavailable) as info:
            store.stat(url)
        error = info.value
        message = str(error)
        assert f"cannot reach the object store at {minio.endpoint}" in message
        assert f"HEAD {url}" in message
        assert "check that the server is up" in message
        assert minio.secret_key not in message
        assert error.tries >= 2 and error.seconds <= budget
        # What a failing task writes next (its failure marker, its log) fails at once.
        marker_url = f"s3://{s3_bucket}/down/a1.failed.json"
        with pytest.raises(StorageUnavailable) as marker, store.open_write(marker_url) as fh:
            fh.write(b"{}")
        assert marker.value.tries == 1
        assert minio.endpoint in str(marker.value)
    # Back: one success, and the endpoint gets a whole budget again.
    assert store.stat(url).size == 5
    with minio.stopped(), pytest.raises(StorageUnavailable) as again:
        store.stat(url)
    assert again.value.tries >= 2
