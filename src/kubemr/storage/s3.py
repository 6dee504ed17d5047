"""S3-compatible object storage (AWS S3, MinIO, ...) through boto3.

Configuration follows the standard AWS chain (environment, profiles, instance roles) for
credentials; the endpoint is ``StorageOptions.s3_endpoint`` or else
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``. A custom endpoint gets path-style
addressing, which MinIO and most S3-compatible servers want.

Reads are streaming ranged GETs that resume from the current offset when a connection
breaks; writes buffer one part at a time and use a single PUT for small objects and a
multipart upload otherwise, completed on a clean exit and aborted on an exception, so
an object appears whole or not at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import boto3
import botocore.exceptions
from botocore.config import Config

from kubemr.storage.base import ObjectInfo, RequestStats, StorageError

PART_SIZE = 8 << 20
READ_RESUMES = 5
_STREAM_ERRORS = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionError,
    ConnectionError,
    TimeoutError,
)
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}
_MISSING_BUCKET = {"NoSuchBucket", "404", "NotFound"}


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url}")
    return bucket, key


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """An :class:`~kubemr.storage.base.ObjectStore` over S3 or a compatible server."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.stats = RequestStats()
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0

    # -- the client ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return (
            self.options.s3_endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or "AWS S3"
        )

    def _make_client(self, *, quick: bool = False) -> Any:
        endpoint = (
            self.options.s3_endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        config = Config(
            retries={"mode": "standard", "max_attempts": 2 if quick else 8},
            connect_timeout=3 if quick else 10,
            read_timeout=10 if quick else 120,
            max_pool_connections=self.options.max_pool_connections,
            s3={"addressing_style": "path"} if endpoint else {},
        )
        session = boto3.session.Session()
        region = session.region_name or "us-east-1"
        return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)

    @property
    def client(self) -> Any:
        # boto3 clients must not cross fork(): make a new one in each process.
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make_client()
                    self._pid = os.getpid()
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"])  # type: ignore[misc]

    # -- reading -----------------------------------------------------------------------------
    def stat(self, url: str) -> ObjectInfo:
        bucket, key = split_url(url)
        if not key or key.endswith("/"):
            raise IsADirectoryError(url)
        self.stats.count("HEAD")
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(url) from None
            raise
        return ObjectInfo(url, int(head["ContentLength"]))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, key_prefix = split_url(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[ObjectInfo] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
            self.stats.count("LIST")
            for obj in page.get("Contents", []):
                found.append(ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
        found.sort(key=lambda info: info.url)
        yield from found

    def open_read(self, url: str, start: int = 0, end: int | None = None) -> BinaryIO:
        return _RangeReader(self, url, start, end)  # type: ignore[return-value]

    def _get(self, bucket: str, key: str, start: int, end: int | None) -> Any:
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        self.stats.count("GET")
        try:
            return self.client.get_object(Bucket=bucket, Key=key, Range=rng)["Body"]
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{bucket}/{key}") from None
            if code == "InvalidRange":
                return None  # reading at or past the end
            raise

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def open_write(self, url: str) -> Iterator[BinaryIO]:
        writer = _MultipartWriter(self, *split_url(url))
        try:
            yield writer  # type: ignore[misc]
        except BaseException:
            writer.abort()
            raise
        writer.complete()

    def delete(self, url: str) -> None:
        bucket, key = split_url(url)
        self.stats.count("DELETE")
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = split_url(prefix)
        keys = [split_url(info.url)[1] for info in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            self.stats.count("DELETE")
            self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        return len(keys)

    # -- checks ------------------------------------------------------------------------------
    def check_access(self, url: str, *, write: bool) -> None:
        bucket, _ = split_url(url)
        where = f"bucket {bucket!r} at {self.endpoint}"
        client = self._make_client(quick=True)
        self.stats.count("HEAD")
        try:
            client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _MISSING_BUCKET:
                raise StorageError(
                    f"{where} does not exist: create it, or check the bucket name"
                ) from None
            if code in _AUTH_CODES:
                raise StorageError(
                    f"access to {where} was refused ({code}): check the credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and their rights"
                ) from None
            raise StorageError(f"{where}: {code or exc}") from None
        except botocore.exceptions.NoCredentialsError:
            raise StorageError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            ) from None
        except (botocore.exceptions.EndpointConnectionError, *_STREAM_ERRORS) as exc:
            raise StorageError(
                f"cannot reach {self.endpoint} for bucket {bucket!r} ({type(exc).__name__}): "
                "check --s3-endpoint / AWS_ENDPOINT_URL_S3 and that the server is up"
            ) from None


class _RangeReader:
    """A streaming ranged GET that resumes from its offset when the stream breaks."""

    def __init__(self, store: S3Store, url: str, start: int, end: int | None) -> None:
        self._store = store
        self._bucket, self._key = split_url(url)
        self._pos = start
        self._end = end
        self._body: Any = None
        self._done = end is not None and end <= start
        self._resumes = 0

    def _open(self) -> None:
        self._body = self._store._get(self._bucket, self._key, self._pos, self._end)
        if self._body is None:
            self._done = True

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if self._end is not None:
            left = self._end - self._pos
            n = left if n < 0 else min(n, left)
        while True:
            if self._body is None:
                self._open()
                if self._done:
                    return b""
            try:
                data = self._body.read() if n < 0 else self._body.read(n)
                break
            except _STREAM_ERRORS:
                self._resumes += 1
                self._body = None
                if self._resumes > READ_RESUMES:
                    raise
        if not data:
            self._done = True
            return b""
        self._pos += len(data)
        self._store.stats.add_read(len(data))
        if self._end is not None and self._pos >= self._end:
            self._done = True
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        self._done = True

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MultipartWriter:
    """Buffers one part; a single PUT when the object is small, multipart otherwise."""

    def __init__(self, store: S3Store, bucket: str, key: str, part_size: int = PART_SIZE) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buf += data
        self._written += len(data)
        if len(self._buf) >= self._part_size:
            self._flush_part()
        return len(data)

    def tell(self) -> int:
        return self._written

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def _flush_part(self) -> None:
        client = self._store.client
        if self._upload_id is None:
            self._store.stats.count("PUT")
            self._upload_id = client.create_multipart_upload(Bucket=self._bucket, Key=self._key)[
                "UploadId"
            ]
        number = len(self._parts) + 1
        self._store.stats.count("PUT")
        resp = client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(self._buf),
        )
        self._store.stats.add_written(len(self._buf))
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})
        self._buf = bytearray()

    def complete(self) -> None:
        client = self._store.client
        if self._upload_id is None:
            self._store.stats.count("PUT")
            client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buf))
            self._store.stats.add_written(len(self._buf))
            return
        if self._buf:
            self._flush_part()
        self._store.stats.count("PUT")
        client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        if self._upload_id is not None:
            try:
                self._store.client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
            except Exception:
                pass  # the original error is what matters; lifecycle rules reap leftovers
