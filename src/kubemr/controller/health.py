"""Probes and counters over HTTP: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers 200 while the controller's loops are alive (the kubelet restarts the
pod otherwise); ``/readyz`` 200 once the caches are synced and this instance leads or
stands by; ``/metrics`` the counters in the Prometheus text format.

Example:
    metrics = Metrics()
    server = HealthServer("127.0.0.1", 8081, live=lambda: True, ready=lambda: True,
                          metrics=metrics)
    server.start()
    ...
    server.stop()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

Probe = Callable[[], bool]
Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Thread-safe counters with labels, and gauges sampled when rendered.

    Names get ``prefix`` + ``_``; counters should end in ``_total``.
    """

    def __init__(self, prefix: str = "kubemr_controller") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = {}
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[Callable[[], float], str]] = {}
        self._families: dict[str, tuple[str, Callable[[], Mapping[str, float]], str]] = {}

    def describe(self, name: str, help_text: str) -> None:
        with self._lock:
            self._help[name] = help_text
            self._counters.setdefault(name, {})

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0) + n

    def value(self, name: str, **labels: str) -> float:
        """The counter's value for exactly these labels; 0 when never incremented."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0)

    def total(self, name: str) -> float:
        """The counter summed over all its labels."""
        with self._lock:
            return sum(self._counters.get(name, {}).values())

    def gauge(self, name: str, sample: Callable[[], float], help_text: str = "") -> None:
        with self._lock:
            self._gauges[name] = (sample, help_text)

    def gauge_family(
        self,
        name: str,
        label: str,
        sample: Callable[[], Mapping[str, float]],
        help_text: str = "",
    ) -> None:
        """Gauges sampled when rendered, one per value of ``label``: ``sample`` returns
        ``{label value: gauge value}``."""
        with self._lock:
            self._families[name] = (label, sample, help_text)

    def render(self) -> str:
        with self._lock:
            counters = {name: dict(series) for name, series in self._counters.items()}
            helps = dict(self._help)
            gauges = dict(self._gauges)
            families = dict(self._families)
        lines: list[str] = []
        for name in sorted(counters):
            full = f"{self.prefix}_{name}"
            if name in helps:
                lines.append(f"# HELP {full} {helps[name]}")
            lines.append(f"# TYPE {full} counter")
            for labels, value in sorted(counters[name].items()):
                lines.append(f"{full}{_labels(labels)} {_number(value)}")
        for name in sorted(gauges):
            sample, help_text = gauges[name]
            try:
                value = float(sample())
            except Exception:  # a broken gauge must not break the scrape
                log.debug("gauge %s failed", name, exc_info=True)
                continue
            full = f"{self.prefix}_{name}"
            if help_text:
                lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} gauge")
            lines.append(f"{full} {_number(value)}")
        for name in sorted(families):
            label, family, help_text = families[name]
            try:
                values = {str(k): float(v) for k, v in family().items()}
            except Exception:  # a broken gauge must not break the scrape
                log.debug("gauge family %s failed", name, exc_info=True)
                continue
            full = f"{self.prefix}_{name}"
            if help_text:
                lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} gauge")
            for key in sorted(values):
                lines.append(f"{full}{_labels(((label, key),))} {_number(values[key])}")
        return "\n".join(lines) + "\n"


class HealthServer:
    """A small HTTP server in a daemon thread. ``port=0`` binds a free port; read it back
    from :attr:`address` after :meth:`start`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        live: Probe,
        ready: Probe,
        metrics: Metrics | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.live = live
        self.ready = ready
        self.metrics = metrics
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return (self.host, self.port)
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address is taken."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        server.daemon_threads = True
        # Don't let a slow client hold up stop(): handler threads are daemons and
        # bounded by the handler's socket timeout.
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-server",
            daemon=True,
        )
        self._thread.start()
        log.info("health server listening", extra={"address": "{}:{}".format(*self.address)})

    def stop(self, timeout: float = 5.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout)
        self._server = None
        self._thread = None

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _handler_for(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5.0  # socket timeout: a stalled client can't pin a thread
        server_version = "kubemr-health"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/healthz", "/livez"):
                self._probe(owner.live)
            elif path == "/readyz":
                self._probe(owner.ready)
            elif path == "/metrics" and owner.metrics is not None:
                self._send(200, owner.metrics.render(), "text/plain; version=0.0.4")
            else:
                self._send(404, "not found\n")

        def _probe(self, probe: Probe) -> None:
            try:
                ok = bool(probe())
            except Exception:
                log.warning("probe %s raised", self.path, exc_info=True)
                ok = False
            if ok:
                self._send(200, "ok\n")
            else:
                self._send(503, "not ok\n")

        def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # Probes arrive every few seconds; keep them out of the controller's log.
            log.debug("health: " + format, *args)

    return Handler


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
