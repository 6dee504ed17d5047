from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from kubemr import storage

from .minio import MinioServer, minio_binary

_buckets = itertools.count()


@pytest.fixture(scope="session")
def minio() -> Iterator[MinioServer]:
    server = MinioServer(minio_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_bucket(minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket, with the AWS environment pointing at the test server."""
    name = f"kubemr-test-{next(_buckets)}"
    minio.make_bucket(name)
    for key, value in minio.env().items():
        monkeypatch.setenv(key, value)
    storage._stores.clear()
    yield name
    storage._stores.clear()
