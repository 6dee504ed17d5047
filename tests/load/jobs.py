"""The load tests' jobs and how they watch many at once.

- :func:`small_job`: a word count of its own small input (one file, one map task, one
  reducer: four pods in a row) run by the real ``kubemr worker``, and its reference.
- :class:`Watcher`: lists every MapReduceJob of a namespace at a steady pace (one request
  for all of them, not one per job), keeps each one's last status, when it ended, and the
  largest status seen (its JSON size), until all have ended or a deadline passes.
- :func:`check_succeeded`: what a Succeeded job's status must hold, compared with what
  its reference says; a list of what is wrong, naming the job.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubemr.controller.conditions import BLOCKED, CAPACITY, SUSPENDED_CONDITION
from tests.e2e.datajobs import WORDCOUNT, Digest, real_job, word_counts, write_inputs
from tests.e2e.support import Cluster

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
STAGES = ["plan", "map", "reduce", "commit"]


@dataclass(frozen=True)
class SmallJob:
    name: str
    body: Obj
    lines: list[str]
    out_dir: Any

    def reference(self) -> Digest:
        return Digest.of_counts(word_counts(self.lines))


def small_lines(i: int) -> list[str]:
    """Lines of job ``i``: its own word (``jobNNN``) and a count of lines of its own."""
    return [f"job{i:03d} shared {'abcdefg'[(i + k) % 7]}x w{k % 5}" for k in range(10 + i % 13)]


def small_job(i: int, tmp_path: Any, **spec: Any) -> SmallJob:
    """Job ``i`` on its own one-file input under ``tmp_path/job-NNN``."""
    name = f"load-{i:03d}"
    where = tmp_path / name
    where.mkdir()
    lines = small_lines(i)
    body = real_job(name, where, WORDCOUNT, lines, reducers=1, splitSize=1 << 20, **spec)
    single = where / "one"
    single.mkdir()
    body["spec"]["inputs"] = [write_inputs(single, lines, files=1)]
    return SmallJob(name, body, lines, where / "out")


@dataclass
class Watcher:
    """Polls ``cluster``'s MapReduceJobs every ``every`` seconds in a thread."""

    cluster: Cluster
    names: set[str]
    every: float = 2.0
    statuses: dict[str, Obj] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    max_status_bytes: int = 0
    largest: str | None = None
    polls: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-watcher", daemon=True)

    def start(self) -> Watcher:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def poll(self) -> None:
        from kubemr.executors.k8s.manifests import GROUP, PLURAL, VERSION

        listing = self.cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.cluster.ns, PLURAL
        )
        now = time.monotonic()
        self.polls += 1
        for item in listing.get("items") or []:
            name = item["metadata"]["name"]
            if name not in self.names:
                continue
            status = item.get("status") or {}
            self.statuses[name] = status
            size = len(json.dumps(status, separators=(",", ":")))
            if size > self.max_status_bytes:
                self.max_status_bytes, self.largest = size, name
            if status.get("phase") in TERMINAL and name not in self.ended_at:
                self.ended_at[name] = now

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # the API server may be down on purpose: go on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            if self.done():
                return
            self._stop.wait(self.every)

    def done(self) -> bool:
        return len(self.ended_at) == len(self.names)

    def wait(self, timeout: float) -> None:
        """Until every job ended; a TimeoutError naming the ones that did not."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(10)
        if not self.done():
            left = sorted(self.names - set(self.ended_at))
            phases = {n: (self.statuses.get(n) or {}).get("phase") for n in left[:10]}
            raise TimeoutError(
                f"{len(left)} of {len(self.names)} jobs did not end in {timeout:.0f}s; "
                f"the first: {phases}"
            )

    def wall(self) -> float:
        """From :meth:`start` to the last job's end."""
        return max(self.ended_at.values(), default=self.started) - self.started


def check_succeeded(job: SmallJob, status: Obj, generation: int | None = None) -> list[str]:
    """What is wrong with a small job's final status and output; empty when all is right."""
    wrong: list[str] = []

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            wrong.append(f"{job.name}: {what} is {got!r}, expected {want!r}")

    expect("phase", status.get("phase"), "Succeeded")
    if status.get("phase") != "Succeeded":
        failure = status.get("failure") or {}
        wrong.append(f"{job.name}: failure {failure.get('reason')}: {failure.get('message')}")
        return wrong
    reference = job.reference()
    try:
        expect("the output's digest", Digest.of_dir(job.out_dir), reference)
    except FileNotFoundError as exc:
        wrong.append(f"{job.name}: no output: {exc}")
    result = status.get("result") or {}
    expect("result.recordsIn", result.get("recordsIn"), len(job.lines))
    expect("result.recordsOut", result.get("recordsOut"), reference.records)
    waves = status.get("waves") or []
    expect("the waves' kinds", [w.get("kind") for w in waves], STAGES)
    for wave in waves:
        if wave.get("succeeded") != wave.get("total") or not wave.get("completionTime"):
            wrong.append(f"{job.name}: wave {wave} did not end done")
    tasks = sum(w.get("total") or 0 for w in waves if w.get("kind") in ("map", "reduce"))
    expect("progress (map and reduce tasks)", status.get("progress"), f"{tasks}/{tasks}")
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    expect("condition Complete", (conditions.get("Complete") or {}).get("status"), "True")
    if (conditions.get("Failed") or {}).get("status") == "True":
        wrong.append(f"{job.name}: condition Failed is True")
    for kind in (CAPACITY, BLOCKED, SUSPENDED_CONDITION):
        if (conditions.get(kind) or {}).get("status") == "True":
            wrong.append(f"{job.name}: condition {kind} is still True after the end")
    expect("workers", status.get("workers"), 0)
    if not status.get("completionTime"):
        wrong.append(f"{job.name}: no completionTime")
    if generation is not None:
        expect("observedGeneration", status.get("observedGeneration"), generation)
    return wrong
