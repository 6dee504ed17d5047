"""List+watch of one resource kind into a local cache, calling handlers on each change.

Objects are the plain JSON dicts the API server sends (camelCase keys), for built-in
kinds and custom resources alike. :class:`KubeApi` is the runtime's one door to the API
server: raw JSON requests and watch streams through the official client's ``ApiClient``
(its auth, TLS and proxy settings), so a watch of ``batch/v1`` Jobs and one of a custom
resource are the same code.

An :class:`Informer` lists (in pages), then watches from the list's resourceVersion with
bookmarks, resuming from the last resourceVersion it saw. A watch ends on the server's
``timeoutSeconds`` (jittered, so many watches don't restart together) and is resumed; a
410 Gone relists at once; any other failure relists after an exponential backoff. A
relist diffs against the cache and calls add/update/delete for what changed, so nothing
missed while disconnected stays missed. A periodic resync calls the update handler for
every cached object, which heals a change a handler failed to act on.

Example:
    api = KubeApi(api_client)
    jobs = Informer(api, JOBS, namespace="default", label_selector="app=kubemr")
    jobs.add_handler(on_add=print, on_update=lambda old, new: print(new))
    jobs.start()
    jobs.wait_for_sync(30)
    jobs.get("default/wordcount-map-0")
    jobs.stop()
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from .workqueue import ExponentialBackoff

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Query = Sequence[tuple[str, str]]
AddHandler = Callable[[Obj], None]
UpdateHandler = Callable[[Obj, Obj], None]
DeleteHandler = Callable[[Obj], None]
IndexFunc = Callable[[Obj], Iterable[str]]


@dataclass(frozen=True)
class Resource:
    """A resource kind's address in the API: ``Resource("batch", "v1", "jobs", "Job")``;
    the core group is ``""``."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        """The list/watch/create path: one namespace, or all when ``namespace`` is None."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{quote(name, safe='')}"


PODS = Resource("", "v1", "pods", "Pod")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
EVENTS = Resource("events.k8s.io", "v1", "events", "Event")
JOBS = Resource("batch", "v1", "jobs", "Job")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def split_key(key: str) -> tuple[str | None, str]:
    """The inverse of :func:`object_key`: ``(namespace or None, name)``."""
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else (None, ns)


def strip_managed_fields(obj: Obj) -> Obj:
    """The object without ``metadata.managedFields``: server-side apply's bookkeeping,
    often the larger part of a small object, which the controller never reads."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        meta.pop("managedFields")
    return obj


def resource_version(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class WatchExpired(Exception):
    """The server no longer has the history from our resourceVersion (410 Gone): relist."""


class WatchError(Exception):
    """The watch stream carried an ERROR event other than 410."""


# -- talking to the API server -------------------------------------------------------------
class EventStream(Protocol):
    """Watch events as dicts; ``close()`` from any thread ends the iteration quietly."""

    def __iter__(self) -> Iterator[Obj]: ...

    def close(self) -> None: ...


class RawApi(Protocol):
    """What the runtime needs from the API server; :class:`KubeApi` in production."""

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Obj | None = None,
        timeout: float | None = None,
    ) -> Obj: ...

    def stream(self, path: str, *, query: Query = (), read_timeout: float) -> EventStream: ...


class KubeApi:
    """Raw JSON requests through the official client's ``ApiClient``.

    Errors raise the client's ``ApiException`` (``.status``, ``.reason``, ``.body``), as
    its typed APIs do. ``timeout`` is the whole-request limit for plain requests.
    """

    def __init__(
        self, api_client: ApiClient, *, timeout: float = 30.0, connect_timeout: float = 10.0
    ) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Obj | None = None,
        timeout: float | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """One request; ``content_type`` for a body that is a patch (merge-patch+json,
        apply-patch+yaml)."""
        response = self._call(
            method, path, query, body, (self.connect_timeout, timeout or self.timeout), content_type
        )
        data = response.read()
        _raise_for_status(response, data)
        return orjson.loads(data) if data else {}

    def stream(self, path: str, *, query: Query = (), read_timeout: float) -> WatchStream:
        """A watch: ``query`` should hold ``watch=true``. ``read_timeout`` bounds the wait
        for each read, so a connection that went silent fails instead of hanging."""
        response = self._call("GET", path, query, None, (self.connect_timeout, read_timeout))
        if not 200 <= response.status <= 299:
            _raise_for_status(response, response.read())
        return WatchStream(response.response)

    def _call(
        self,
        method: str,
        path: str,
        query: Query,
        body: Obj | None,
        timeout: tuple[float, float],
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*serialized, _request_timeout=timeout)


def _raise_for_status(response: Any, data: bytes) -> None:
    if 200 <= response.status <= 299:
        return
    text = data.decode("utf-8", errors="replace") if data else None
    raise ApiException.from_response(http_resp=response, body=text, data=None)


class WatchStream:
    """The newline-delimited JSON events of one watch response."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Iterator[Obj]:
        buffer = bytearray()
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                if self._closed.is_set():
                    return
                buffer.extend(chunk)
                while (newline := buffer.find(b"\n")) != -1:
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if line.strip():
                        yield orjson.loads(line)
            if buffer.strip() and not self._closed.is_set():
                yield orjson.loads(bytes(buffer))
        except Exception:
            if self._closed.is_set():
                return  # the read was cut by close(): not an error
            raise
        finally:
            self._release()

    def close(self) -> None:
        """End the stream; safe from another thread while one is blocked reading it."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            # Unblocks a read in progress; close() alone would wait for it.
            self._response.shutdown()
        except Exception:
            pass
        self._release()

    def _release(self) -> None:
        try:
            self._response.close()
        except Exception:
            pass


# -- the informer --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Handlers:
    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None


class Informer:
    """A cache of one resource kind kept current by list+watch.

    Cached objects are shared, not copied: treat them as read-only.

    Args:
        api: :class:`KubeApi` (or a fake with the same two methods).
        resource: the kind to watch.
        namespace: one namespace, or all namespaces when None.
        label_selector, field_selector: server-side filters.
        resync_seconds: call the update handler for every cached object this often
            (None: never).
        watch_timeout_seconds: the server ends each watch after this long plus up to
            ``watch_jitter`` of it, and it is resumed from the last resourceVersion.
        page_size: items per list request.
        backoff: delays between failed list/watch attempts (0.5 s doubling to 30 s).
        transform: applied to each object as it arrives, before it is cached and handed
            to handlers (default: :func:`strip_managed_fields`, which keeps a cache of
            thousands of pods a fraction of its size); None keeps objects as sent.
    """

    def __init__(
        self,
        api: RawApi,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resync_seconds: float | None = 300.0,
        watch_timeout_seconds: float = 240.0,
        watch_jitter: float = 0.25,
        page_size: int = 500,
        backoff: ExponentialBackoff | None = None,
        name: str | None = None,
        transform: Callable[[Obj], Obj] | None = strip_managed_fields,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_seconds = resync_seconds
        self.watch_timeout_seconds = watch_timeout_seconds
        self.watch_jitter = watch_jitter
        self.page_size = page_size
        self.transform = transform
        self.name = name or (resource.plural + (f"@{namespace}" if namespace else ""))
        self._backoff = backoff if backoff is not None else ExponentialBackoff(0.5, 30.0)
        self._lock = threading.RLock()
        self._cache: dict[str, Obj] = {}
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._handlers: list[_Handlers] = []
        self._resource_version: str | None = None
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._threads: list[threading.Thread] = []
        self._lists = 0
        self._watches = 0
        self._failures = 0
        self._expired = 0
        self._resyncs = 0
        self._last_error: str | None = None

    # -- set-up ----------------------------------------------------------------------------
    def add_handler(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Register callbacks. They run on the informer's threads and must be quick (map
        the object to a key and queue it); an exception is logged and dropped."""
        with self._lock:
            self._handlers.append(_Handlers(on_add, on_update, on_delete))

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Index cached objects by the values ``func`` returns, for :meth:`by_index`."""
        with self._lock:
            self._index_funcs[name] = func
            self._indexes[name] = self._build_index(func)

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._threads.append(
            threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        )
        if self.resync_seconds:
            self._threads.append(
                threading.Thread(target=self._resync_loop, name=f"resync-{self.name}", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait up to ``timeout`` seconds for the threads to end."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def has_synced(self) -> bool:
        """True once the first list is in the cache and its handlers were called."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def is_alive(self) -> bool:
        """The threads run (for a liveness probe)."""
        return (
            bool(self._threads)
            and not self._stop.is_set()
            and all(t.is_alive() for t in self._threads)
        )

    # -- reading the cache -----------------------------------------------------------------
    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._cache.get(key)

    def objects(self, namespace: str | None = None) -> list[Obj]:
        """The cached objects, of one namespace or all."""
        with self._lock:
            objs = list(self._cache.values())
        if namespace is None:
            return objs
        return [o for o in objs if (o.get("metadata") or {}).get("namespace") == namespace]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def by_index(self, name: str, value: str) -> list[Obj]:
        with self._lock:
            keys = self._indexes[name].get(value, ())
            return [self._cache[k] for k in keys]

    @property
    def resource_version(self) -> str | None:
        with self._lock:
            return self._resource_version

    @property
    def list_count(self) -> int:
        """Lists done: 1 after the first sync, one more per relist."""
        with self._lock:
            return self._lists

    @property
    def watch_count(self) -> int:
        """Watches opened: one more each time the watch is resumed or started again."""
        with self._lock:
            return self._watches

    @property
    def failure_count(self) -> int:
        """Lists and watches that failed (the API server unreachable, an error), each
        followed by a relist after a backoff; a 410 Gone is counted apart."""
        with self._lock:
            return self._failures

    @property
    def expired_count(self) -> int:
        """Watches ended by 410 Gone (history compacted), each followed by a relist."""
        with self._lock:
            return self._expired

    @property
    def resync_count(self) -> int:
        with self._lock:
            return self._resyncs

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    # -- the list/watch loop ---------------------------------------------------------------
    def _run(self) -> None:
        need_list = True
        expired_in_a_row = 0
        while not self._stop.is_set():
            try:
                if need_list:
                    self._list_and_replace()
                    need_list = False
                started = time.monotonic()
                events = self._watch_once()
                expired_in_a_row = 0
                if events or time.monotonic() - started >= 1.0:
                    self._backoff.forget("watch")
                elif not self._stop.is_set():
                    # A watch that ends at once, empty, would otherwise spin.
                    self._stop.wait(self._backoff.when("watch"))
            except WatchExpired as exc:
                need_list = True
                expired_in_a_row += 1
                with self._lock:
                    self._expired += 1
                log.info(
                    "watch expired, relisting",
                    extra={"informer": self.name, "reason": str(exc)},
                )
                # A fresh list's resourceVersion is current, so a second 410 in a row
                # means something else is wrong: back off then.
                if expired_in_a_row > 1:
                    self._stop.wait(self._backoff.when("watch"))
            except Exception as exc:
                if self._stop.is_set():
                    break
                need_list = True
                delay = self._backoff.when("watch")
                with self._lock:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._failures += 1
                log.warning(
                    "list/watch failed, relisting in %.1fs",
                    delay,
                    extra={"informer": self.name, "error": self._last_error},
                )
                self._stop.wait(delay)

    def _selectors(self) -> list[tuple[str, str]]:
        query = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    def _list_and_replace(self) -> None:
        path = self.resource.collection_path(self.namespace)
        items: list[Obj] = []
        token: str | None = None
        rv: str | None = None
        while True:
            query = [*self._selectors(), ("limit", str(self.page_size))]
            if token:
                query.append(("continue", token))
            page = self.api.request("GET", path, query=query)
            for item in page.get("items") or []:
                # Items of a built-in list come without apiVersion/kind; make every cached
                # object self-describing, as watch events are.
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                items.append(self.transform(item) if self.transform else item)
            meta = page.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            token = meta.get("continue") or None
            if not token:
                break
        fresh = {object_key(obj): obj for obj in items}
        with self._lock:
            old = self._cache
            self._cache = fresh
            self._resource_version = rv
            self._lists += 1
            self._rebuild_indexes()
            handlers = list(self._handlers)
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._notify(handlers, "add", obj)
            elif resource_version(before) != resource_version(obj):
                self._notify(handlers, "update", obj, before)
        for key, before in old.items():
            if key not in fresh:
                self._notify(handlers, "delete", before)
        self._synced.set()
        log.debug(
            "listed",
            extra={"informer": self.name, "objects": len(fresh), "resourceVersion": rv},
        )

    def _watch_once(self) -> int:
        """Watch until the stream ends; return the number of events seen."""
        timeout = int(self.watch_timeout_seconds * (1 + random.uniform(0, self.watch_jitter)))
        timeout = max(1, timeout)
        with self._lock:
            rv = self._resource_version
        query = [
            *self._selectors(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        if rv:
            query.append(("resourceVersion", rv))
        path = self.resource.collection_path(self.namespace)
        try:
            stream = self.api.stream(path, query=query, read_timeout=timeout + 30)
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(exc.reason or "Gone") from exc
            raise
        with self._lock:
            self._stream = stream
            self._watches += 1
        events = 0
        try:
            if self._stop.is_set():  # stop() ran before the stream was visible to it
                return 0
            for event in stream:
                events += 1
                self._apply(event)
                if self._stop.is_set():
                    break
        finally:
            stream.close()
            with self._lock:
                self._stream = None
        return events

    def _apply(self, event: Obj) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            message = f"{code} {obj.get('reason')}: {obj.get('message')}"
            if code == 410:
                raise WatchExpired(message)
            raise WatchError(message)
        rv = resource_version(obj)
        if kind == "BOOKMARK":
            if rv:
                with self._lock:
                    self._resource_version = rv
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("unknown watch event %r", kind, extra={"informer": self.name})
            return
        if self.transform is not None:
            obj = self.transform(obj)
        key = object_key(obj)
        with self._lock:
            before = self._cache.get(key)
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
            self._reindex(key, before, None if kind == "DELETED" else obj)
            if rv:
                self._resource_version = rv
            handlers = list(self._handlers)
        if kind == "DELETED":
            self._notify(handlers, "delete", obj)
        elif before is None:
            self._notify(handlers, "add", obj)
        else:
            self._notify(handlers, "update", obj, before)

    def _resync_loop(self) -> None:
        assert self.resync_seconds
        while not self._stop.wait(self.resync_seconds):
            if not self._synced.is_set():
                continue
            with self._lock:
                objs = list(self._cache.values())
                handlers = list(self._handlers)
                self._resyncs += 1
            for obj in objs:
                if self._stop.is_set():
                    return
                self._notify(handlers, "update", obj, obj)

    def _notify(
        self, handlers: list[_Handlers], kind: str, obj: Obj, old: Obj | None = None
    ) -> None:
        for h in handlers:
            try:
                if kind == "add" and h.on_add:
                    h.on_add(obj)
                elif kind == "update" and h.on_update:
                    h.on_update(old if old is not None else obj, obj)
                elif kind == "delete" and h.on_delete:
                    h.on_delete(obj)
            except Exception:
                log.exception(
                    "%s handler failed", kind, extra={"informer": self.name, "key": _safe_key(obj)}
                )

    # -- indexes (call with the lock held) -------------------------------------------------
    def _build_index(self, func: IndexFunc) -> dict[str, set[str]]:
        index: dict[str, set[str]] = {}
        for key, obj in self._cache.items():
            for value in _index_values(func, obj):
                index.setdefault(value, set()).add(key)
        return index

    def _rebuild_indexes(self) -> None:
        for name, func in self._index_funcs.items():
            self._indexes[name] = self._build_index(func)

    def _reindex(self, key: str, before: Obj | None, after: Obj | None) -> None:
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            if before is not None:
                for value in _index_values(func, before):
                    keys = index.get(value)
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del index[value]
            if after is not None:
                for value in _index_values(func, after):
                    index.setdefault(value, set()).add(key)


def _index_values(func: IndexFunc, obj: Obj) -> Iterable[str]:
    try:
        return list(func(obj))
    except Exception:
        log.exception("index function failed", extra={"key": _safe_key(obj)})
        return ()


def _safe_key(obj: Obj) -> str:
    try:
        return object_key(obj)
    except Exception:
        return "?"
