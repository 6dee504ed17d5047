"""Fixtures of the integration tier: one real MinIO server per session, a bucket per test.

Every test in this directory is marked ``integration``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from kubemr import storage

from .minio import MinioServer, minio_binary

_buckets = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def minio() -> Iterator[MinioServer]:
    """A MinIO server on 127.0.0.1 (``$KUBEMR_MINIO_BIN`` or ``scripts/install-minio``),
    stopped at the end of the session whatever the tests did."""
    server = MinioServer(minio_binary())
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_bucket(minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket, with the AWS environment pointing at the test server."""
    name = f"kubemr-test-{next(_buckets)}"
    minio.make_bucket(name)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in minio.env().items():
        monkeypatch.setenv(key, value)
    storage._stores.clear()
    yield name
    storage._stores.clear()
