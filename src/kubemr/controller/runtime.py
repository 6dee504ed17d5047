"""The controller loop: informers feed keys into a work queue; workers reconcile keys.

Level-triggered: an event only says *which* resource to look at; ``reconcile(key)``
reads the current state (from the informers' caches or the API) and acts on it, so a
missed, duplicated or reordered event changes nothing, and a restart at any moment is
safe. The runtime never runs user code: ``reconcile`` is the controller's own logic.

Example:
    api_client = config.new_client_from_config()
    metrics = Metrics()
    count_api_requests(api_client, metrics)
    api = KubeApi(api_client)
    mr_jobs = Informer(api, Resource("kubemr.io", "v1alpha1", "mapreducejobs", "MapReduceJob"))
    owned = Informer(api, JOBS, label_selector="app.kubernetes.io/managed-by=kubemr")

    def reconcile(key: str) -> ReconcileResult:
        ...  # read mr_jobs.get(key), owned.by_index(...), act through the API
        return ReconcileResult(requeue_after=30)

    controller = Controller(reconcile, workers=4, metrics=metrics,
                            elector=LeaderElector(api, "kubemr", "kubemr-system"),
                            health_address=("0.0.0.0", 8081))
    controller.watch(mr_jobs)
    controller.watch(owned, owner_keys("MapReduceJob"))
    sys.exit(controller.run())
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .health import HealthServer, Metrics
from .informer import AddHandler, DeleteHandler, Obj, UpdateHandler, object_key, split_key
from .lease import LeaderElector
from .logs import log_context
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

EXIT_OK = 0
# The lease was lost: exit so the pod restarts as a fresh candidate (sysexits' EX_TEMPFAIL).
EXIT_LEASE_LOST = 75


@dataclass(frozen=True)
class ReconcileResult:
    """What a reconcile asks of the runtime: ``requeue_after`` seconds to look again even
    without an event (e.g. to check a deadline), or None."""

    requeue_after: float | None = None


Reconciler = Callable[[str], ReconcileResult | None]
KeyFunc = Callable[[Obj], Iterable[str]]


class Source(Protocol):
    """What the controller needs of an informer."""

    name: str

    def add_handler(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def has_synced(self) -> bool: ...

    def is_alive(self) -> bool: ...


# -- mapping objects to keys ---------------------------------------------------------------
def own_key(obj: Obj) -> list[str]:
    """The object's own ``namespace/name``: for the informer of the reconciled kind."""
    return [object_key(obj)]


def owner_keys(kind: str = "MapReduceJob", api_group: str | None = None) -> KeyFunc:
    """Keys of the object's owners of ``kind`` (and ``api_group`` when given), from
    ``metadata.ownerReferences``: for Jobs and pods a MapReduceJob owns."""

    def keys(obj: Obj) -> list[str]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        out = []
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") != kind or not ref.get("name"):
                continue
            if api_group is not None and ref.get("apiVersion", "").split("/")[0] != api_group:
                continue
            out.append(f"{ns}/{ref['name']}" if ns else ref["name"])
        return out

    return keys


def label_keys(label: str) -> KeyFunc:
    """The key ``namespace/<value of label>``: for objects that name their resource in a
    label (pods of a Job carry the Job's labels, not an owner reference to our resource)."""

    def keys(obj: Obj) -> list[str]:
        meta = obj.get("metadata") or {}
        value = (meta.get("labels") or {}).get(label)
        if not value:
            return []
        ns = meta.get("namespace")
        return [f"{ns}/{value}" if ns else value]

    return keys


def any_keys(*funcs: KeyFunc) -> KeyFunc:
    """The union of several key functions' keys."""

    def keys(obj: Obj) -> list[str]:
        out: dict[str, None] = {}
        for func in funcs:
            out.update(dict.fromkeys(func(obj)))
        return list(out)

    return keys


# -- counting API requests -----------------------------------------------------------------
def api_resource(path: str) -> str:
    """The resource a request's path names, as the counter labels it: ``pods``,
    ``mapreducejobs/status``, ``namespaces``; ``other`` for what is not a resource path
    (discovery, ``/version``)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return "other"
    if len(rest) >= 2 and rest[0] == "namespaces":
        rest = rest[2:]  # the namespace itself is rest[1]
        if not rest:
            return "namespaces"
    if not rest:
        return "other"
    return f"{rest[0]}/{rest[2]}" if len(rest) >= 3 else rest[0]


def count_api_requests(api_client: Any, metrics: Metrics) -> None:
    """Count every request made through ``api_client`` (typed APIs and :class:`KubeApi`
    alike) in ``api_requests_total{verb, code}`` and, with the resource it names, in
    ``api_requests_by_resource_total{verb, resource, code}``. A watch counts as verb
    ``WATCH``; ``code`` is ``error`` when no response came (refused, timed out)."""
    original = api_client.call_api
    if getattr(original, "_kubemr_counted", False):
        return
    metrics.describe("api_requests_total", "Requests to the Kubernetes API by verb and code.")
    metrics.describe(
        "api_requests_by_resource_total",
        "Requests to the Kubernetes API by verb, resource (plural/subresource) and code.",
    )

    def count(verb: str, resource: str, code: str) -> None:
        metrics.inc("api_requests_total", verb=verb, code=code)
        metrics.inc("api_requests_by_resource_total", verb=verb, resource=resource, code=code)

    @functools.wraps(original)
    def call_api(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        verb = "WATCH" if query.get("watch", [""])[0] in ("true", "1") else method.upper()
        resource = api_resource(parts.path)
        try:
            response = original(method, url, *args, **kwargs)
        except Exception:
            count(verb, resource, "error")
            raise
        count(verb, resource, str(getattr(response, "status", "")))
        return response

    call_api._kubemr_counted = True  # type: ignore[attr-defined]
    api_client.call_api = call_api


# -- the controller ------------------------------------------------------------------------
class Controller:
    """Informers, a work queue and worker threads calling ``reconcile(key)``.

    Args:
        reconcile: called with ``namespace/name``; returns a :class:`ReconcileResult` or
            None. An exception logs an error and requeues the key with backoff.
        workers: threads reconciling; a key is never reconciled by two at once.
        queue: the work queue (a fresh :class:`WorkQueue` by default).
        elector: with one, only the leader runs workers; losing the lease ends
            :meth:`run` with :data:`EXIT_LEASE_LOST`. Informers run on every instance,
            so a standby takes over with a warm cache.
        metrics: counters to update (reconciles, errors, duration, queue depth).
        health_address: ``(host, port)`` to serve ``/healthz``, ``/readyz``, ``/metrics``.
        handle_signals: SIGTERM/SIGINT stop :meth:`run` cleanly (when it runs in the main
            thread); a second signal exits at once.
        drain_seconds: on stop, how long to wait for reconciles in progress.
        stuck_seconds: a reconcile running longer than this fails the liveness probe, so
            a wedged controller gets restarted.
        key_field: the log field for the name part of the key.
    """

    def __init__(
        self,
        reconcile: Reconciler,
        *,
        workers: int = 2,
        queue: WorkQueue | None = None,
        elector: LeaderElector | None = None,
        metrics: Metrics | None = None,
        health_address: tuple[str, int] | None = None,
        handle_signals: bool = True,
        drain_seconds: float = 10.0,
        stuck_seconds: float = 300.0,
        key_field: str = "job",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.reconcile = reconcile
        self.workers = workers
        self.queue = queue if queue is not None else WorkQueue()  # an empty queue is falsy
        self.elector = elector
        self.metrics = metrics if metrics is not None else Metrics()
        self.handle_signals = handle_signals
        self.drain_seconds = drain_seconds
        self.stuck_seconds = stuck_seconds
        self.key_field = key_field
        self.sources: list[Source] = []
        self.health = (
            HealthServer(
                *health_address, live=self.is_alive, ready=self.is_ready, metrics=self.metrics
            )
            if health_address is not None
            else None
        )
        self._stop = threading.Event()
        self._exit_code = EXIT_OK
        self._workers: list[threading.Thread] = []
        self._busy: dict[int, tuple[str, float]] = {}  # thread ident -> (key, started)
        self._busy_lock = threading.Lock()
        self._running = threading.Event()
        self._workers_started = threading.Event()
        self._describe_metrics()
        if elector is not None:
            chained = elector.on_lost

            def lost() -> None:
                self._on_lease_lost()
                if chained is not None:
                    chained()

            elector.on_lost = lost

    # -- wiring ----------------------------------------------------------------------------
    def watch(self, source: Source, keys: KeyFunc = own_key) -> None:
        """Reconcile ``keys(obj)`` whenever an object of ``source`` is added, changed,
        deleted or resynced (on a change, the keys of the old and the new object)."""

        def on_add(obj: Obj) -> None:
            self._enqueue(keys(obj))

        def on_update(old: Obj, new: Obj) -> None:
            if old is new:
                self._enqueue(keys(new))
            else:
                self._enqueue([*keys(old), *keys(new)])

        def on_delete(obj: Obj) -> None:
            self._enqueue(keys(obj))

        source.add_handler(on_add=on_add, on_update=on_update, on_delete=on_delete)
        self.sources.append(source)

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def _enqueue(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.queue.add(key)

    # -- state -----------------------------------------------------------------------------
    @property
    def exit_code(self) -> int:
        return self._exit_code

    def has_synced(self) -> bool:
        return all(s.has_synced() for s in self.sources)

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    def is_alive(self) -> bool:
        """Liveness: every loop runs and no reconcile is stuck."""
        if not self._running.is_set() or self._stop.is_set():
            return False
        if not all(s.is_alive() for s in self.sources):
            return False
        if self.elector is not None and not self.elector.is_alive():
            return False
        if self._workers_started.is_set() and not all(w.is_alive() for w in self._workers):
            return False
        now = time.monotonic()
        with self._busy_lock:
            return all(now - started < self.stuck_seconds for _, started in self._busy.values())

    def is_ready(self) -> bool:
        """Readiness: caches synced, and leading or standing by for the lease."""
        if not self._running.is_set() or self._stop.is_set() or not self.has_synced():
            return False
        return self.elector is None or (self.elector.is_alive() and not self.elector.lost())

    # -- running ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run until :meth:`stop`, a signal, or the loss of the lease; return the exit code
        (:data:`EXIT_OK` or :data:`EXIT_LEASE_LOST`)."""
        previous = self._install_signal_handlers()
        self._running.set()
        try:
            if self.health is not None:
                self.health.start()
            for source in self.sources:
                source.start()
            if self.elector is not None:
                self.elector.start()
                log.info("waiting for the lease", extra={"identity": self.elector.identity})
                while not self._stop.is_set() and not self.elector.wait_until_leader(0.5):
                    if self.elector.lost() or not self.elector.is_alive():
                        break
            self._wait_for_sync()
            if not self._stop.is_set() and self.is_leader():
                self._start_workers()
                log.info("controller running", extra={"workers": self.workers})
            # A bounded wait keeps the main thread responsive to signals on every platform.
            while not self._stop.wait(1.0):
                pass
        finally:
            self._shutdown()
            self._restore_signal_handlers(previous)
        return self._exit_code

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread and from a signal handler."""
        self._stop.set()

    def _wait_for_sync(self) -> None:
        warned_at = time.monotonic()
        while not self._stop.is_set() and not self.has_synced():
            if time.monotonic() - warned_at > 30:
                pending = [s.name for s in self.sources if not s.has_synced()]
                log.warning("caches not synced yet", extra={"informers": pending})
                warned_at = time.monotonic()
            self._stop.wait(0.05)

    def _start_workers(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            self._workers.append(thread)
            thread.start()
        self._workers_started.set()

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                if self.queue.shutting_down:
                    return
                continue
            self._process(key)

    def _process(self, key: str) -> None:
        ns, name = split_key(key)
        rid = uuid.uuid4().hex[:8]
        started = time.monotonic()
        ident = threading.get_ident()
        with self._busy_lock:
            self._busy[ident] = (key, started)
        try:
            with log_context(namespace=ns, **{self.key_field: name}, reconcile_id=rid):
                try:
                    result = self.reconcile(key)
                except Exception as exc:
                    self.metrics.inc("reconcile_errors_total")
                    retries = self.queue.num_requeues(key)
                    log.error(
                        "reconcile failed, will retry",
                        exc_info=True,
                        extra={"error": f"{type(exc).__name__}: {exc}", "retries": retries},
                    )
                    self.queue.add_rate_limited(key)
                else:
                    self.queue.forget(key)
                    if result is not None and result.requeue_after is not None:
                        self.queue.add_after(key, max(0.0, result.requeue_after))
        finally:
            elapsed = time.monotonic() - started
            self.metrics.inc("reconcile_total")
            self.metrics.inc("reconcile_seconds_total", elapsed)
            with self._busy_lock:
                self._busy.pop(ident, None)
            self.queue.done(key)

    def _on_lease_lost(self) -> None:
        self._exit_code = EXIT_LEASE_LOST
        self._stop.set()

    def _shutdown(self) -> None:
        self._stop.set()
        self.queue.shutdown()
        lost = self._exit_code == EXIT_LEASE_LOST
        # After losing the lease another instance may already act: don't linger.
        drain = min(self.drain_seconds, 1.0) if lost else self.drain_seconds
        deadline = time.monotonic() + drain
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        drained = not any(w.is_alive() for w in self._workers)
        if not drained:
            with self._busy_lock:
                busy = [k for k, _ in self._busy.values()]
            log.warning("reconciles still running at exit", extra={"keys": busy})
        if self.elector is not None:
            # Release only when nothing acts any more, so the successor never overlaps.
            self.elector.stop(release=drained and not lost)
        for source in self.sources:
            source.stop()
        if self.health is not None:
            self.health.stop()
        self._running.clear()
        log.info("controller stopped", extra={"exit_code": self._exit_code})

    # -- signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signal_handlers(self, previous: Mapping[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            # A second signal: the operator wants out now.
            os._exit(128 + signum)
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        self.stop()

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("reconcile_total", "Reconciles run.")
        m.describe("reconcile_errors_total", "Reconciles that raised.")
        m.describe("reconcile_seconds_total", "Time spent in reconciles.")
        m.gauge("workqueue_depth", lambda: len(self.queue), "Keys ready to reconcile.")
        m.gauge("workqueue_waiting", self.queue.waiting, "Keys waiting for a timed requeue.")
        m.gauge("leader", lambda: 1.0 if self.is_leader() else 0.0, "1 when this one leads.")
        for name, attr, help_text in (
            ("informer_synced", "has_synced", "1 once the informer's first list is cached."),
            ("informer_lists", "list_count", "Lists done: the first, then one per relist."),
            ("informer_watches", "watch_count", "Watches opened (resumed or restarted)."),
            ("informer_failures", "failure_count", "Lists and watches that failed."),
            ("informer_expired", "expired_count", "Watches ended by 410 Gone (relisted)."),
        ):
            m.gauge_family(name, "informer", functools.partial(self._per_source, attr), help_text)

    def _per_source(self, attr: str) -> dict[str, float]:
        """Each informer's ``attr`` (a method is called), by name; 0 where it has none."""
        out: dict[str, float] = {}
        for source in self.sources:
            value = getattr(source, attr, 0)
            value = value() if callable(value) else value
            out[source.name] = out.get(source.name, 0.0) + float(value or 0)
        return out
