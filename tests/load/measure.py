"""What the load tests measure of the controller process, and where they report it.

- :class:`RssSampler`: the process's resident memory (``VmRSS`` of /proc/<pid>/status),
  sampled in a thread: peak and last value.
- :func:`scrape`: the controller's Prometheus metrics from its health endpoint, and
  :func:`api_requests`, its ``kubemr_controller_api_requests_by_resource_total`` by verb and
  resource.
- :func:`report`: prints a test's figures and writes them as JSON to
  ``$KUBEMR_LOAD_RESULTS/<name>.json`` (default ``$KUBEMR_CACHE/load-results``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
API_REQUESTS = "kubemr_controller_api_requests_by_resource_total"


def rss_bytes(pid: int) -> int | None:
    """The process's resident set size now, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``every`` seconds until :meth:`stop`."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0
        self.last = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> int | None:
        value = rss_bytes(self.pid)
        if value is not None:
            self.last = value
            self.peak = max(self.peak, value)
            self.samples += 1
        return value

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


Series = tuple[str, tuple[tuple[str, str], ...]]


def scrape(port: int, timeout: float = 10.0) -> dict[Series, float]:
    """The metrics on ``http://127.0.0.1:port/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[Series, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        out[(name, pairs)] = float(value)
    return out


def api_requests(port: int) -> dict[tuple[str, str], float]:
    """The controller's API requests so far, by (verb, resource), summed over codes."""
    out: dict[tuple[str, str], float] = {}
    for (name, labels), value in scrape(port).items():
        if name != API_REQUESTS:
            continue
        found = dict(labels)
        key = (found.get("verb", "?"), found.get("resource", "?"))
        out[key] = out.get(key, 0.0) + value
    return out


def request_figures(
    before: Mapping[tuple[str, str], float],
    after: Mapping[tuple[str, str], float],
    seconds: float,
    jobs: int,
) -> dict[str, Any]:
    """Requests made between two scrapes: totals, per second and per job, by verb and by
    verb and resource."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    delta = {k: v for k, v in delta.items() if v > 0}
    by_verb: dict[str, float] = {}
    for (verb, _), value in delta.items():
        by_verb[verb] = by_verb.get(verb, 0.0) + value
    total = sum(delta.values())
    return {
        "total": int(total),
        "per_second": round(total / max(seconds, 1e-9), 2),
        "per_job": round(total / max(jobs, 1), 2),
        "by_verb": {
            verb: {
                "total": int(n),
                "per_second": round(n / max(seconds, 1e-9), 2),
                "per_job": round(n / max(jobs, 1), 2),
            }
            for verb, n in sorted(by_verb.items())
        },
        "by_verb_and_resource": {
            f"{verb} {resource}": int(n) for (verb, resource), n in sorted(delta.items())
        },
    }


def results_dir() -> str:
    explicit = os.environ.get("KUBEMR_LOAD_RESULTS")
    if explicit:
        return explicit
    cache = os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr"))
    return os.path.join(cache, "load-results")


def report(name: str, figures: Mapping[str, Any]) -> str:
    """Print ``figures`` and write them to ``<results dir>/<name>.json``; returns the path."""
    directory = results_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.json")
    record = {"test": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
    print(f"\n== load figures: {name} ({path})")
    print(json.dumps(record, indent=1, sort_keys=True))
    return path


def mib(n: float) -> float:
    return round(n / (1024 * 1024), 1)


class ControllerWatch:
    """The controller process's figures over a test: its RSS sampled throughout, and its
    API requests and reconciles between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port
        self.rss = RssSampler(pid)
        self.before: dict[tuple[str, str], float] = {}
        self.after: dict[tuple[str, str], float] = {}
        self.reconciles = 0.0

    def start(self) -> ControllerWatch:
        self.before = api_requests(self.port)
        self._reconciles0 = _total(scrape(self.port), "kubemr_controller_reconcile_total")
        self.rss.start()
        return self

    def stop(self) -> None:
        self.rss.stop()
        self.after = api_requests(self.port)
        self.reconciles = (
            _total(scrape(self.port), "kubemr_controller_reconcile_total") - self._reconciles0
        )

    def figures(self, seconds: float, jobs: int) -> dict[str, Any]:
        return {
            "controller_rss_peak_mib": mib(self.rss.peak),
            "controller_rss_final_mib": mib(self.rss.last),
            "controller_rss_samples": self.rss.samples,
            "api_requests": request_figures(self.before, self.after, seconds, jobs),
            "reconciles": int(self.reconciles),
            "reconciles_per_job": round(self.reconciles / max(jobs, 1), 1),
        }

    def requests_per_job(self, jobs: int, *, watches: bool = False) -> float:
        """Requests per job between start and stop; watches (long-lived, not per job)
        left out unless asked for."""
        total = sum(
            after - self.before.get(key, 0.0)
            for key, after in self.after.items()
            if watches or key[0] != "WATCH"
        )
        return total / max(jobs, 1)


def _total(metrics: Mapping[Series, float], name: str) -> float:
    return sum(value for (n, _), value in metrics.items() if n == name)
