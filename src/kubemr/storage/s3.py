"""S3-compatible object storage (AWS S3, MinIO, ...) through boto3.

Credentials come from the standard AWS chain (environment, profiles, instance and pod
roles). The endpoint is ``StorageOptions.s3_endpoint``, else ``AWS_ENDPOINT_URL_S3``,
else ``AWS_ENDPOINT_URL``, else whatever the AWS configuration names (AWS S3 by default).
A custom endpoint gets path-style addressing, which MinIO and most S3-compatible servers
want. The region defaults to ``us-east-1`` when none is configured.

Reads are streaming ranged GETs that resume from the current offset when a connection
breaks. Writes buffer one part at a time and use a single PUT for small objects and a
multipart upload otherwise, completed on a clean exit and aborted on an exception, so an
object appears whole or not at all.

Every request is counted in :attr:`S3Store.stats` by kind (``GET``, ``PUT``, ``LIST``,
``DELETE``, ``HEAD``); the multipart create, each part and the complete call count as
``PUT``, each resumed GET as ``GET`` and each ``DeleteObjects`` batch as one ``DELETE``.

The retry budget (:func:`retry_budget`) has two layers:

- botocore retries each call (standard mode, :data:`MAX_ATTEMPTS` attempts with a
  backoff under a second, :data:`CONNECT_TIMEOUT` and :data:`READ_TIMEOUT` per attempt),
  which absorbs a dropped connection, a 5xx or a throttled request;
- a call that still fails because the server cannot be reached (refused, timed out,
  reset) or answers 5xx / throttling is made again, 0.5 s later and then at most every
  4 s, until :data:`RETRY_SECONDS` have passed since the operation began; then it
  raises :class:`StorageUnavailable`, naming the endpoint, the request and what to do.
  A server restart or a short network cut is absorbed; a dead endpoint fails a task
  in about half a minute, not many minutes.

An operation that has to wait logs a warning when it starts waiting and when the server
answers again, so a task's log says why it stood still.

Once an operation has spent its whole budget on an endpoint, later ones in the same
process try that endpoint once, with no new budget, until a request to it succeeds:
what a failing task still writes (its failure marker, its log) fails at once instead of
waiting out the budget again.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO, TypeVar

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config

from kubemr.storage import StorageOptions
from kubemr.storage.base import ObjectInfo, RequestStats, StorageError

log = logging.getLogger(__name__)

PART_SIZE = 8 << 20
"""Bytes buffered per multipart part (S3 wants at least 5 MiB for all but the last part)."""
PARTS_PER_STEP = 1000
"""The part size doubles after every this many parts, so that one upload's 10,000 parts
reach S3's 5 TiB object limit while small objects keep small parts."""
READ_RESUMES = 5
"""How many times in a row a broken read stream is re-opened before the error is raised."""
MAX_ATTEMPTS = 3
"""botocore's attempts per call, the first one included (``AWS_MAX_ATTEMPTS`` overrides
it); longer trouble is the outer layer's (:data:`RETRY_SECONDS`)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection."""
READ_TIMEOUT = 30.0
"""Seconds to wait for the next bytes of a response: a server that accepts a request and
then says nothing is given up on, not waited for."""
RETRY_SECONDS = 30.0
"""How long one operation keeps trying while the server cannot be reached or answers
5xx / throttling (``KUBEMR_S3_RETRY_SECONDS`` overrides it): longer than a server restart
or a short network cut, short enough that a dead endpoint fails a task within a minute."""
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 4.0
"""The outer layer's waits between calls: 0.5 s, doubling, at most 4 s."""
RETRY_ENV = "KUBEMR_S3_RETRY_SECONDS"

_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    ConnectionError,
    TimeoutError,
)
# Failures of a call that mean the server is unreachable or overloaded for now, not that
# the request is wrong: worth the same call again later.
_UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # refused, connect timeout, proxy
    botocore.exceptions.HTTPClientError,  # connection closed, read timeout
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
_BUSY_STATUSES = frozenset({500, 502, 503, 504, 429})
_BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
        "XMinioServerNotInitialized",
    }
)
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
        "403",
        "Forbidden",
    }
)
_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})
_CREDENTIALS_HINT = (
    "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) "
    "and their rights on the bucket"
)
_ENDPOINT_HINT = "check --s3-endpoint / AWS_ENDPOINT_URL_S3 and that the server is up"
_UNAVAILABLE_HINT = (
    "check that the server is up and that the workers reach it (the endpoint is "
    "--s3-endpoint / AWS_ENDPOINT_URL_S3, spec.storage.endpoint on Kubernetes), then run "
    "the job again"
)

T = TypeVar("T")


class StorageUnavailable(StorageError):
    """The object store could not be reached, or kept failing, for a whole retry budget.

    ``tries`` is how many calls were made, ``seconds`` how long they took.
    """

    def __init__(self, message: str, *, endpoint: str, tries: int, seconds: float) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.tries = tries
        self.seconds = seconds


@dataclass(frozen=True)
class RetryBudget:
    """How long a storage operation may take before it fails (see the module's doc)."""

    attempts: int
    """botocore's attempts per call."""
    connect_timeout: float
    read_timeout: float
    retry_seconds: float
    """How long the outer layer calls again."""

    @property
    def call_seconds(self) -> float:
        """The longest one call can take: every attempt timing out, plus botocore's
        backoff between attempts (at most 0.05 * 2**i s before attempt i + 1)."""
        backoff = sum(0.05 * 2**i for i in range(1, self.attempts))
        return self.attempts * (self.connect_timeout + self.read_timeout) + backoff

    @property
    def worst_case_seconds(self) -> float:
        """The longest an operation can take before it raises: no new call starts after
        :attr:`retry_seconds`, and the last one may take :attr:`call_seconds`. A refused
        connection fails each call at once, so a server that is down (rather than hung)
        fails an operation after about :attr:`retry_seconds`."""
        return self.retry_seconds + RETRY_MAX_DELAY + self.call_seconds


def _env_attempts(env: Mapping[str, str]) -> int:
    try:
        return max(1, int(env.get("AWS_MAX_ATTEMPTS", MAX_ATTEMPTS)))
    except ValueError:
        return MAX_ATTEMPTS


def retry_budget(env: Mapping[str, str] | None = None) -> RetryBudget:
    """The budget of stores in a process with environment ``env`` (default: this one's);
    ``AWS_MAX_ATTEMPTS`` and ``KUBEMR_S3_RETRY_SECONDS`` change the defaults."""
    env = os.environ if env is None else env
    try:
        seconds = max(0.0, float(env.get(RETRY_ENV, RETRY_SECONDS)))
    except ValueError:
        seconds = RETRY_SECONDS
    return RetryBudget(_env_attempts(env), CONNECT_TIMEOUT, READ_TIMEOUT, seconds)


_clock = time.monotonic
_sleep = time.sleep
"""The retry loop's clock and wait (tests replace them)."""

_given_up: set[str] = set()
"""Endpoints this process spent a whole retry budget on, until a request succeeds."""


def _busy(exc: botocore.exceptions.ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status in _BUSY_STATUSES or _code(exc) in _BUSY_CODES


def _what_failed(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{status} {_code(exc)}".strip()
    return type(exc).__name__


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


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _is_aws(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


_live_stores: weakref.WeakSet[S3Store] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork time would never be released in the child.
    _given_up.clear()  # the child judges the endpoints by its own requests
    for store in list(_live_stores):
        store._lock = threading.Lock()
        store._client = None
        store.stats._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class S3Store:
    """An :class:`~kubemr.storage.base.ObjectStore` over S3 or a compatible server.

    ``part_size`` (bytes per multipart part, default :data:`PART_SIZE`),
    ``page_size`` (keys per LIST request, default the server's 1000) and
    ``retry_seconds`` (default :func:`retry_budget`'s) are tuning knobs for tests and
    benchmarks.

    The boto3 client is made lazily, once per process: a store copied into a forked
    worker makes its own client there, and a pickled store carries only its settings.
    """

    def __init__(
        self,
        options: StorageOptions | None = None,
        *,
        part_size: int | None = None,
        page_size: int | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self.options = options or StorageOptions()
        self.part_size = part_size
        self.page_size = page_size
        self.retry_seconds = retry_seconds
        self.stats = RequestStats()
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0
        _live_stores.add(self)

    # -- the client ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The endpoint URL this store talks to, for messages."""
        explicit = self.options.s3_endpoint or _env_endpoint()
        if explicit:
            return explicit
        try:
            return str(self.client.meta.endpoint_url)
        except Exception:  # a broken profile: the check names the problem itself
            return "AWS S3"

    def _make_client(self, *, quick: bool = False) -> Any:
        """A new client; ``quick`` ones fail fast (a short connect timeout, one retry)."""
        endpoint = self.options.s3_endpoint or _env_endpoint()
        mode = os.environ.get("AWS_RETRY_MODE", "standard")
        if mode not in ("standard", "adaptive"):
            mode = "standard"
        attempts = _env_attempts(os.environ)
        session = boto3.session.Session()
        region = session.region_name or os.environ.get("AWS_REGION") or "us-east-1"

        def make(path_style: bool) -> Any:
            retries: Any = {
                "mode": "standard" if quick else mode,
                "total_max_attempts": 2 if quick else attempts,
            }
            config = Config(
                retries=retries,
                connect_timeout=2 if quick else CONNECT_TIMEOUT,
                read_timeout=10 if quick else READ_TIMEOUT,
                max_pool_connections=self.options.max_pool_connections,
                s3={"addressing_style": "path"} if path_style else None,
            )
            return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)

        client = make(path_style=endpoint is not None)
        if endpoint is None and not _is_aws(str(client.meta.endpoint_url)):
            # an endpoint from the AWS config file (``endpoint_url``): a custom server too
            client = make(path_style=True)
        return client

    @property
    def client(self) -> Any:
        """This process's boto3 client (clients must not cross ``fork``)."""
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = self._make_client()
                    self._pid = pid
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "part_size": self.part_size,
            "page_size": self.page_size,
            "retry_seconds": self.retry_seconds,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["options"],
            part_size=state.get("part_size"),
            page_size=state.get("page_size"),
            retry_seconds=state.get("retry_seconds"),
        )

    def _retrying(self, request: str, url: str, call: Callable[[], T]) -> T:
        """``call()``, made again while the server is unreachable or busy, within the
        retry budget; other errors go to the caller as they are."""
        budget = retry_budget().retry_seconds if self.retry_seconds is None else self.retry_seconds
        started = _clock()
        delay = RETRY_FIRST_DELAY
        tries = 0
        while True:
            tries += 1
            try:
                result = call()
            except _UNREACHABLE_ERRORS as exc:
                last: BaseException = exc
            except botocore.exceptions.ClientError as exc:
                if not _busy(exc):
                    raise
                last = exc
            else:
                if tries > 1:
                    log.warning(
                        "the object store at %s answered again after %.1fs (%d tries) on %s %s",
                        self.endpoint,
                        _clock() - started,
                        tries,
                        request,
                        url,
                    )
                if tries > 1 or _given_up:
                    _given_up.discard(self.endpoint)
                return result
            endpoint = self.endpoint
            spent = _clock() - started
            if endpoint in _given_up or spent + delay > budget:
                _given_up.add(endpoint)
                raise self._unavailable(request, url, last, tries, spent) from last
            if tries == 1:
                # In the task's log: why it seems to stand still, and for how long at most.
                log.warning(
                    "%s on %s %s; trying again for up to %.0fs",
                    self._trouble(last),
                    request,
                    url,
                    budget,
                )
            _sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    def _trouble(self, exc: BaseException) -> str:
        what = _what_failed(exc)
        if isinstance(exc, botocore.exceptions.ClientError):
            return f"the object store at {self.endpoint} answered {what}"
        return f"cannot reach the object store at {self.endpoint} ({what})"

    def _unavailable(
        self, request: str, url: str, exc: BaseException, tries: int, spent: float
    ) -> StorageUnavailable:
        return StorageUnavailable(
            f"{self._trouble(exc)} for {spent:.0f}s, {tries} tries, on {request} {url}: "
            + _UNAVAILABLE_HINT,
            endpoint=self.endpoint,
            tries=tries,
            seconds=spent,
        )

    def _fail(self, exc: botocore.exceptions.ClientError, url: str) -> Exception:
        """The error to raise for a failed request: user-fixable problems become a
        :class:`StorageError` that says what to do; anything else stays as it is."""
        code = _code(exc)
        bucket = split_url(url)[0]
        where = f"bucket {bucket!r} at {self.endpoint}"
        if code in _AUTH_CODES:
            return StorageError(
                f"access to {url} at {self.endpoint} was refused ({code}): " + _CREDENTIALS_HINT
            )
        if code == "NoSuchBucket":
            return StorageError(f"{where} does not exist: create it, or check the bucket name")
        return exc

    # -- reading -------------------------------------------------------------------------
    def stat(self, url: str) -> ObjectInfo:
        bucket, key = split_url(url)
        if not key or key.endswith("/"):
            raise IsADirectoryError(url)
        self.stats.count("HEAD")
        try:
            head = self._retrying(
                "HEAD", url, lambda: self.client.head_object(Bucket=bucket, Key=key)
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                raise FileNotFoundError(url) from None
            raise self._fail(exc, url) from exc
        return ObjectInfo(url, int(head["ContentLength"]))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, key_prefix = split_url(prefix)
        pagination = {"PageSize": self.page_size} if self.page_size else {}

        def list_all() -> list[ObjectInfo]:
            # A listing broken off is started again: pages are not resumed.
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=bucket, Prefix=key_prefix, PaginationConfig=pagination
            )
            found: list[ObjectInfo] = []
            for page in pages:
                self.stats.count("LIST")
                for obj in page.get("Contents", []):
                    found.append(ObjectInfo(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
            return found

        try:
            found = self._retrying("LIST", prefix, list_all)
        except botocore.exceptions.ClientError as exc:
            raise self._fail(exc, prefix) from exc
        found.sort(key=lambda info: info.url)
        yield from found

    def open_read(self, url: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range [{start}, {end}) for {url}")
        return _RangeReader(self, url, start, end)  # type: ignore[return-value]

    def _get(
        self, bucket: str, key: str, start: int, end: int | None, etag: str | None = None
    ) -> dict[str, Any] | None:
        """One (ranged) GET; ``None`` when ``start`` is at or past the end of the object."""
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if start > 0 or end is not None:
            args["Range"] = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        if etag:
            args["IfMatch"] = etag
        url = f"s3://{bucket}/{key}"
        self.stats.count("GET")
        try:
            return self._retrying("GET", url, lambda: self.client.get_object(**args))  # type: ignore[no-any-return]
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _MISSING_KEY:
                raise FileNotFoundError(url) from None
            if code == "InvalidRange":
                return None
            if code in ("PreconditionFailed", "412"):
                raise StorageError(f"{url} was replaced while it was being read") from None
            raise self._fail(exc, url) from exc

    # -- writing -------------------------------------------------------------------------
    @contextmanager
    def open_write(self, url: str) -> Iterator[BinaryIO]:
        bucket, key = split_url(url)
        if not key or key.endswith("/"):
            raise IsADirectoryError(f"{url} names no object key")
        writer = _MultipartWriter(self, bucket, key, self.part_size or PART_SIZE)
        try:
            yield writer  # type: ignore[misc]
            writer.complete()
        except BaseException:
            writer.abort()
            raise

    def create_exclusive(self, url: str, data: bytes) -> bool:
        bucket, key = split_url(url)
        self.stats.count("PUT")
        try:
            self._retrying(
                "PUT",
                url,
                lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*"),
            )
        except botocore.exceptions.ClientError as exc:
            # 412: the object exists; 409: another conditional write to it is in flight.
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self._fail(exc, url) from exc
        self.stats.add_written(len(data))
        return True

    def copy(self, src: str, dst: str) -> None:
        """A server-side copy (multipart past 5 GiB): no data passes through this host."""
        src_bucket, src_key = split_url(src)
        bucket, key = split_url(dst)
        self.stats.count("PUT")
        try:
            self._retrying(
                "COPY",
                f"{src} to {dst}",
                lambda: self.client.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key),
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                raise FileNotFoundError(src) from None
            raise self._fail(exc, dst) from exc

    def delete(self, url: str) -> None:
        bucket, key = split_url(url)
        self.stats.count("DELETE")
        try:
            self._retrying("DELETE", url, lambda: self.client.delete_object(Bucket=bucket, Key=key))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_KEY:
                return
            raise self._fail(exc, url) from exc

    def delete_prefix(self, prefix: str) -> int:
        bucket, _ = split_url(prefix)
        keys = [split_url(info.url)[1] for info in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            self.stats.count("DELETE")
            objects = {"Objects": [{"Key": k} for k in batch], "Quiet": True}
            try:
                resp = self._retrying(
                    "DELETE",
                    prefix,
                    partial(self.client.delete_objects, Bucket=bucket, Delete=objects),
                )
            except botocore.exceptions.ClientError as exc:
                raise self._fail(exc, prefix) from exc
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                example = f"s3://{bucket}/{first.get('Key')}"
                raise StorageError(
                    f"could not delete {len(errors)} objects under {prefix}, e.g. {example}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                )
        return len(keys)

    # -- checks --------------------------------------------------------------------------
    def check_access(self, url: str, *, write: bool) -> None:
        """One quick ``HeadBucket`` that turns the usual set-up mistakes into a clear
        :class:`StorageError` naming the endpoint and bucket (never the secret key)."""
        bucket, _ = split_url(url)
        try:
            client = self._make_client(quick=True)
            endpoint = self.options.s3_endpoint or _env_endpoint() or client.meta.endpoint_url
        except botocore.exceptions.ProfileNotFound as exc:
            raise StorageError(f"{exc}: set AWS_PROFILE to a profile that exists") from None
        except ValueError as exc:  # a malformed endpoint URL
            raise StorageError(
                f"bad S3 endpoint {self.options.s3_endpoint or _env_endpoint()!r} ({exc}): "
                "give a URL such as http://host:9000 in --s3-endpoint / AWS_ENDPOINT_URL_S3"
            ) from None
        where = f"bucket {bucket!r} at {endpoint}"
        self.stats.count("HEAD")
        try:
            client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _MISSING_BUCKET:
                raise StorageError(
                    f"{where} does not exist: create it (for example "
                    f"`aws s3 mb s3://{bucket}`), or check the bucket name"
                ) from None
            if code in _AUTH_CODES:
                raise StorageError(
                    f"access to {where} was refused ({code}): " + _CREDENTIALS_HINT
                ) from None
            if code in ("301", "PermanentRedirect"):
                headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                region = headers.get("x-amz-bucket-region", "another region")
                raise StorageError(
                    f"{where} is in {region}: set AWS_DEFAULT_REGION={region}"
                ) from None
            raise StorageError(f"{where}: {code or exc}") from None
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
        ):
            raise StorageError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            ) from None
        except _STREAM_ERRORS as exc:
            raise StorageError(
                f"cannot reach {endpoint} for bucket {bucket!r} ({type(exc).__name__}): "
                + _ENDPOINT_HINT
            ) from None


class _RangeReader(io.RawIOBase):
    """A streaming ranged GET that resumes from its offset when the stream breaks.

    A resumed GET asks for the same version of the object (``If-Match`` its ETag), so a
    reader never stitches together two different objects.
    """

    def __init__(self, store: S3Store, url: str, start: int, end: int | None) -> None:
        super().__init__()
        self._store = store
        self._url = url
        self._bucket, self._key = split_url(url)
        self._pos = start
        self._end = end
        self._body: Any = None
        self._etag: str | None = None
        self._done = end is not None and end <= start

    def _open(self) -> bool:
        resp = self._store._get(self._bucket, self._key, self._pos, self._end, self._etag)
        if resp is None:
            self._done = True
            return False
        self._etag = self._etag or resp.get("ETag")
        self._body = resp["Body"]
        return True

    def _drop_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:
                pass

    def read(self, n: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed reader")
        if n is None:
            n = -1
        if self._done or n == 0:
            return b""
        if self._end is not None:
            left = self._end - self._pos
            n = left if n < 0 else min(n, left)
        failures = 0
        while True:
            if self._body is None and not self._open():
                return b""
            try:
                data: bytes = self._body.read() if n < 0 else self._body.read(n)
                break
            except _STREAM_ERRORS:
                self._drop_body()
                failures += 1
                if failures > READ_RESUMES:
                    raise
                time.sleep(min(0.05 * 2**failures, 1.0))
        if not data:
            self._done = True
            self._drop_body()
            return b""
        self._pos += len(data)
        self._store.stats.add_read(len(data))
        if self._end is not None and self._pos >= self._end:
            self._done = True
            self._drop_body()
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._drop_body()
        self._done = True
        super().close()


class _MultipartWriter(io.RawIOBase):
    """Buffers one part; a single PUT when the object is small, multipart otherwise."""

    def __init__(self, store: S3Store, bucket: str, key: str, part_size: int) -> None:
        super().__init__()
        self._store = store
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written = 0

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed writer")
        n = len(memoryview(data).cast("B"))
        self._buf += data
        self._written += n
        while len(self._buf) >= self._current_part_size():
            self._upload_part()
        return n

    def tell(self) -> int:
        return self._written

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Parts go out as the buffer fills; the object appears on close, not on flush."""

    def _current_part_size(self) -> int:
        return self._part_size << (len(self._parts) // PARTS_PER_STEP)

    @property
    def _url(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    def _upload_part(self) -> None:
        store = self._store
        stats = store.stats
        if self._upload_id is None:
            stats.count("PUT")
            created = store._retrying(
                "PUT",
                self._url,
                lambda: store.client.create_multipart_upload(Bucket=self._bucket, Key=self._key),
            )
            self._upload_id = created["UploadId"]
        upload_id = self._upload_id
        size = min(len(self._buf), self._current_part_size())
        body = bytes(self._buf[:size])
        number = len(self._parts) + 1
        stats.count("PUT")
        resp = store._retrying(
            "PUT",
            f"{self._url} (part {number})",
            lambda: store.client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            ),
        )
        stats.add_written(size)
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})
        del self._buf[:size]

    def complete(self) -> None:
        """Make the object appear (a PUT, or the multipart upload's completion)."""
        if self.closed:
            return
        store = self._store
        try:
            if self._upload_id is None:
                store.stats.count("PUT")
                body = bytes(self._buf)
                store._retrying(
                    "PUT",
                    self._url,
                    lambda: store.client.put_object(Bucket=self._bucket, Key=self._key, Body=body),
                )
                store.stats.add_written(len(body))
            else:
                if self._buf:
                    self._upload_part()
                store.stats.count("PUT")
                self._complete_upload(self._upload_id)
                self._upload_id = None
        except botocore.exceptions.ClientError as exc:
            raise store._fail(exc, self._url) from exc
        self._buf = bytearray()
        super().close()

    def _complete_upload(self, upload_id: str) -> None:
        store = self._store
        try:
            store._retrying(
                "PUT",
                self._url,
                lambda: store.client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": self._parts},
                ),
            )
        except botocore.exceptions.ClientError as exc:
            # A completion whose answer was lost (the server restarted after doing it) is
            # unknown to the server when made again: the object of this size is the proof.
            if _code(exc) != "NoSuchUpload":
                raise
            try:
                done = store.stat(self._url).size == self._written
            except FileNotFoundError:
                done = False
            if not done:
                raise

    def abort(self) -> None:
        """Drop everything written; nothing appears at the key."""
        self._buf = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            try:
                self._store.client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                )
            except Exception:
                pass  # the original error is what matters; lifecycle rules reap leftovers
        super().close()

    def close(self) -> None:
        """Closing inside the ``with`` block is a no-op: the block's exit decides."""
