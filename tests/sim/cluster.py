"""A deterministic, discrete-time simulated cluster that drives kubemr's reconcile at scale.

What one machine cannot run for real (ten thousand worker pods, a thousand jobs competing
for a cluster, nodes lost under them) is played here in simulated seconds against the
real :func:`kubemr.controller.reconcile.reconcile` and its scaling policy:

- :class:`Store`: the API server's objects (MapReduceJobs, Jobs, pods) as the JSON dicts
  reconcile reads, with watch events reduced to "this resource's objects changed";
- :class:`Cluster`: the Job controller (Indexed Jobs: completedIndexes, failedIndexes,
  backoffLimitPerIndex, the Job's podFailurePolicy, suspend, parallelism), the scheduler
  (CPU requests over nodes, oldest pod first, ``Unschedulable``), the kubelet (sampled run
  times, termination messages, exit codes), pod garbage collection and node churn;
- :class:`Simulation`: the controller loop (reconcile on a change or a due requeue, then
  apply the Outcome as ``kubemr.controller.main`` does), with :class:`Invariants` checked
  as it runs and the outcome of every job checked against what its plan makes right.

Nothing sleeps: ``now`` is :data:`T0` plus the simulated second. The same seed gives the
same run.

Example:
    report = Simulation(scenario_b(jobs=100, seed=3)).run()
    assert not report.violations
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubemr import termination
from kubemr.controller.actions import (
    SCALED_AT,
    SUSPENDED,
    CreateJob,
    DeleteResource,
    Event,
    Outcome,
    ScaleJob,
    SuspendJob,
)
from kubemr.controller.observed import ViewCache
from kubemr.controller.reconcile import reconcile
from kubemr.controller.scaling import MIN_INTERVAL_SECONDS
from kubemr.executors.k8s.manifests import (
    API_VERSION,
    CONTAINER,
    KIND,
    LABEL_STAGE,
)

Obj = dict[str, Any]

T0 = datetime(2030, 1, 1, tzinfo=UTC)
NAMESPACE = "sim"
JOB_INDEX = "batch.kubernetes.io/job-completion-index"
STATUS_BOUND = 8 * 1024
"""Bytes ``json.dumps`` of any resource's status may reach (jobs of one or two steps)."""
POD_GC_THRESHOLD = 12_500
"""kube-controller-manager's ``--terminated-pod-gc-threshold`` default."""
BACKOFF_BASE = 10.0
BACKOFF_CAP = 360.0
"""The Job controller's delay before a failed index gets a new pod: 10 s doubling, 6 min."""
SCALED_MEMORY = 300.0
"""``JobController`` forgets its own scale times after 5 minutes."""
SETTLE_TICKS = 3
"""Ticks played after the last job ended, before checking that nothing of it still runs."""
RESULT_SLACK = 35
"""Seconds reconcile may wait for a plan or commit report (RESULT_GRACE_SECONDS, 30)."""


def stamp(t: float) -> str:
    """A simulated second as the API server writes times."""
    return (T0 + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_millis(quantity: Any) -> int:
    """A CPU quantity (``500m``, ``1``, ``2.5``) in millicores; none counts as one core."""
    text = str(quantity) if quantity is not None else "1"
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def task_name(stage: str, index: int) -> str:
    """A task as the status names it: ``map-0-00012``, ``plan``."""
    return stage if stage in ("plan", "commit") else f"{stage}-{index:05d}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def _suffix(n: int) -> str:
    # Like the Job controller's random pod suffix, but from a counter: deterministic.
    out = []
    for _ in range(5):
        n, r = divmod(n, len(_SUFFIX))
        out.append(_SUFFIX[r])
    return "".join(out)


class IndexSet:
    """Task indexes as sorted runs, written as a Job's ``completedIndexes`` (``0-3,5``).

    Adding keeps the runs merged, so a wave of 10,000 tasks done in order is one run.
    """

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.count = 0
        self._text = ""

    def __contains__(self, index: int) -> bool:
        pos = bisect_right(self.starts, index) - 1
        return pos >= 0 and self.ends[pos] >= index

    def add(self, index: int) -> bool:
        pos = bisect_right(self.starts, index) - 1
        if pos >= 0 and self.ends[pos] >= index:
            return False
        left = pos >= 0 and self.ends[pos] == index - 1
        right = pos + 1 < len(self.starts) and self.starts[pos + 1] == index + 1
        if left and right:
            self.ends[pos] = self.ends[pos + 1]
            del self.starts[pos + 1], self.ends[pos + 1]
        elif left:
            self.ends[pos] = index
        elif right:
            self.starts[pos + 1] = index
        else:
            self.starts.insert(pos + 1, index)
            self.ends.insert(pos + 1, index)
        self.count += 1
        self._text = ",".join(
            str(s) if s == e else f"{s}-{e}" for s, e in zip(self.starts, self.ends)
        )
        return True

    @property
    def text(self) -> str:
        return self._text


# -- what is simulated: jobs and scenarios ---------------------------------------------------
@dataclass(frozen=True)
class Workers:
    min: int
    max: int
    max_pending: int


@dataclass(frozen=True)
class Expected:
    """The outcome a job's plan makes right: its phase and, failed, reason and task."""

    phase: str
    reason: str | None = None
    tasks: frozenset[str] = frozenset()


@dataclass
class JobPlan:
    """One MapReduceJob to submit, and what each of its tasks will do when it runs.

    Args:
        durations: seconds each task runs, by stage name and index (retries alike).
        fail_attempts: (stage, index) -> how many first attempts exit 1 (UserCodeError).
        bad_input: a task whose every attempt exits 3 (BadInput: FailIndex at once).
        pending_deadline: the spec's pendingDeadlineSeconds (None: wait forever).
    """

    name: str
    maps: int
    reducers: tuple[int, ...]
    durations: dict[str, list[int]]
    workers: Workers
    cpu: str = "1"
    max_attempts: int = 3
    submit_at: int = 0
    fail_attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    bad_input: tuple[str, int] | None = None
    pending_deadline: int | None = 600

    def stages(self) -> list[tuple[str, int]]:
        """(stage name, tasks) in the order they run."""
        out = [("plan", 1)]
        maps = self.maps
        for step, reducers in enumerate(self.reducers):
            out.append((f"map-{step}", maps))
            if reducers:
                out.append((f"reduce-{step}", reducers))
            maps = reducers or maps
        out.append(("commit", 1))
        return out

    @property
    def tasks(self) -> int:
        return sum(n for stage, n in self.stages() if stage not in ("plan", "commit"))

    def steps_report(self) -> list[Obj]:
        """The plan pod's ``steps``: every step's map and reduce task counts."""
        waves = dict(self.stages())
        return [
            {"maps": waves[f"map-{step}"], "reducers": reducers}
            for step, reducers in enumerate(self.reducers)
        ]

    def result(self) -> Obj:
        """The commit pod's ``result`` (the ``_SUCCESS`` summary's numbers)."""
        last = self.reducers[-1] or dict(self.stages())[f"map-{len(self.reducers) - 1}"]
        return {
            "recordsIn": self.maps * 1000,
            "recordsOut": last * 100,
            "bytesIn": self.maps * 64_000,
            "bytesOut": last * 4_000,
            "filesOut": last,
            "counters": {"kubemr": {"map_input_records": self.maps * 1000}},
        }

    def expected(self) -> Expected:
        """Failed at the first stage with a task that cannot succeed, else Succeeded."""
        for stage, _ in self.stages():
            if self.bad_input is not None and self.bad_input[0] == stage:
                return Expected(
                    "Failed", termination.BAD_INPUT, frozenset({task_name(*self.bad_input)})
                )
            doomed = [
                task_name(s, i)
                for (s, i), k in self.fail_attempts.items()
                if s == stage and k >= self.max_attempts
            ]
            if doomed:
                return Expected("Failed", termination.USER_CODE, frozenset(doomed))
        return Expected("Succeeded")

    def spec(self) -> Obj:
        return {
            "inputs": [f"s3://sim/in/{self.name}/*.txt"],
            "output": f"s3://sim/out/{self.name}",
            "job": {"module": "jobs.sim:Job"},
            "workers": {
                "min": self.workers.min,
                "max": self.workers.max,
                "maxPending": self.workers.max_pending,
            },
            "maxAttempts": self.max_attempts,
            "template": {"resources": {"requests": {"cpu": self.cpu}}},
            "pendingDeadlineSeconds": self.pending_deadline,
        }

    def critical_path(self, startup: int) -> int:
        """Seconds the job needs at its full width with room to spare: per stage, rounds
        of its longest task, the ramp to full width (``maxPending`` more pods per scaling
        interval), and its retries at the longest backoff."""
        total = 0
        for stage, tasks in self.stages():
            wave = stage not in ("plan", "commit")
            width = min(tasks, self.workers.max) if wave else 1
            longest = max(self.durations[stage])
            total += math.ceil(tasks / width) * (longest + startup + 2)
            if wave:
                steps = math.ceil(width / max(1, self.workers.max_pending))
                total += steps * (int(MIN_INTERVAL_SECONDS) + startup + 1)
            retries = max((k for (s, _), k in self.fail_attempts.items() if s == stage), default=0)
            total += min(retries, self.max_attempts) * (longest + startup + int(BACKOFF_CAP))
            total += RESULT_SLACK if not wave else 2
        return total


@dataclass(frozen=True)
class Churn:
    """Every ``every`` seconds from ``start``, ``fraction`` of the nodes are lost (their
    pods fail with a DisruptionTarget condition) and return ``down_for`` seconds later."""

    fraction: float = 0.1
    every: int = 180
    down_for: int = 90
    start: int = 120


@dataclass
class Scenario:
    name: str
    title: str
    nodes: int
    node_cpu: int  # cores per node
    jobs: list[JobPlan]
    startup: tuple[int, int] = (1, 3)  # seconds from binding to the container running
    churn: Churn | None = None
    seed: int = 0
    pod_gc_threshold: int = POD_GC_THRESHOLD

    @property
    def cores(self) -> int:
        return self.nodes * self.node_cpu

    def work(self) -> float:
        """CPU-seconds of every attempt of every task, counting each pod's start."""
        total = 0.0
        startup = self.startup[1]
        for plan in self.jobs:
            cpu = cpu_millis(plan.cpu) / 1000
            for stage, _ in plan.stages():
                for index, seconds in enumerate(plan.durations[stage]):
                    attempts = 1 + min(plan.fail_attempts.get((stage, index), 0), plan.max_attempts)
                    total += attempts * (seconds + startup) * cpu
        return total

    def bound(self) -> int:
        """The simulated second by which every job must have ended, derived from capacity:
        the last submission, twice the cluster's time for all the work at the capacity
        left under churn (room for packing and the scaling ramp), and the longest job's
        own critical path (twice under churn, where tasks are lost and rerun)."""
        cores = self.cores * (1 - self.churn.fraction if self.churn else 1)
        path = max(p.critical_path(self.startup[1]) for p in self.jobs)
        last = max(p.submit_at for p in self.jobs)
        return int(last + 2 * self.work() / cores + path * (2 if self.churn else 1)) + 60


# -- the API server ---------------------------------------------------------------------------
class Store:
    """The API server's objects, and which resources' objects changed since the controller
    last looked (its watch events, reduced to keys)."""

    def __init__(self) -> None:
        self.resources: dict[str, Obj] = {}
        self.jobs: dict[str, Obj] = {}
        self.pods: dict[str, Obj] = {}
        self.jobs_of: dict[str, dict[str, None]] = {}
        self.pods_of: dict[str, dict[str, None]] = {}
        self.dirty: dict[str, None] = {}  # an ordered set: iteration must not depend on hashing
        self.version = 0

    def changed(self, obj: Obj, owner: str) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.dirty[owner] = None


# -- invariants -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    invariant: str
    tick: int
    seconds: float
    resource: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.invariant} at tick {self.tick} (t={self.seconds:.0f}s), "
            f"job {self.resource}: {self.detail}"
        )


class InvariantError(AssertionError):
    """An invariant did not hold; the message names the job, the tick and the numbers."""


class Invariants:
    """The properties every tick of a run must keep. ``strict`` raises at the first
    violation; otherwise they are collected in :attr:`violations`."""

    def __init__(self, strict: bool = True, status_bound: int = STATUS_BOUND) -> None:
        self.strict = strict
        self.status_bound = status_bound
        self.violations: list[Violation] = []
        self.max_status_bytes = 0
        self.tick = 0
        self.seconds = 0.0

    def fail(self, invariant: str, resource: str, detail: str) -> None:
        violation = Violation(invariant, self.tick, self.seconds, resource, detail)
        self.violations.append(violation)
        if self.strict:
            raise InvariantError(str(violation))

    def scale(
        self,
        resource: str,
        job: str,
        workers: Workers,
        current: int,
        new: int,
        *,
        running: int,
        active: int,
        ready: int,
        scheduled: int,
        remaining: int,
    ) -> None:
        """A parallelism change, against the pods of the Job at that moment."""
        what = (
            f"{job}: parallelism {current} -> {new} with {running} running, {active} active, "
            f"{ready} ready, {scheduled} on a node, {remaining} tasks left, workers "
            f"{workers.min}..{workers.max} maxPending {workers.max_pending}"
        )
        if new < running:
            self.fail("scaled-below-running", resource, f"{what}: lowering kills running tasks")
        if new < min(current, active):
            self.fail("scaled-below-active", resource, f"{what}: deletes placed pods")
        if new > workers.max:
            self.fail("parallelism-above-max", resource, what)
        floor = min(workers.min, remaining)
        if new < floor:
            self.fail("parallelism-below-min", resource, what)
        # Grown only while at most maxPending of its pods would wait for a node.
        if new > current and new > max(scheduled + workers.max_pending, floor, 1):
            self.fail("grown-past-scheduled-plus-maxPending", resource, what)

    def created(
        self, resource: str, job: str, *, parallelism: int, tasks: int, workers: Workers | None
    ) -> None:
        """A new stage Job's parallelism (``workers`` None for plan and commit)."""
        if parallelism < 1 or parallelism > max(1, tasks):
            self.fail("created-parallelism", resource, f"{job}: {parallelism} for {tasks} tasks")
        if workers is None:
            return
        cap = max(workers.max_pending, min(workers.min, tasks), 1)
        if parallelism > min(workers.max, cap):
            self.fail(
                "created-parallelism",
                resource,
                f"{job}: {parallelism} for {tasks} tasks, workers {workers.min}..{workers.max} "
                f"maxPending {workers.max_pending}: at most {min(workers.max, cap)}",
            )

    def duplicate_job(self, resource: str, job: str, created_before: int) -> None:
        self.fail(
            "duplicate-job",
            resource,
            f"{job} asked for again after {created_before} creation(s) of the stage",
        )

    def wave(self, resource: str, job: str, *, active: int, incomplete: int) -> None:
        if active > incomplete:
            self.fail(
                "pods-beyond-incomplete-tasks",
                resource,
                f"{job}: {active} active pods for {incomplete} incomplete tasks",
            )

    def parallelism(self, resource: str, job: str, parallelism: int, workers: Workers) -> None:
        if parallelism > workers.max:
            self.fail(
                "parallelism-above-max",
                resource,
                f"{job}: parallelism {parallelism} > workers.max {workers.max}",
            )

    def rerun(self, resource: str, stage: str, index: int, reason: str) -> None:
        self.fail(
            "finished-task-rerun", resource, f"{task_name(stage, index)} finished, yet {reason}"
        )

    def killed_running(self, resource: str, job: str, pod: str, parallelism: int) -> None:
        self.fail(
            "running-pod-killed",
            resource,
            f"{job}: pod {pod} deleted while running, parallelism {parallelism}",
        )

    def status_size(self, resource: str, size: int) -> None:
        self.max_status_bytes = max(self.max_status_bytes, size)
        if size > self.status_bound:
            self.fail(
                "status-size", resource, f"status is {size} bytes > bound {self.status_bound}"
            )

    def starved(self, resource: str, bound: int, phase: str | None) -> None:
        self.fail(
            "starved", resource, f"still {phase or 'new'} past the bound of {bound}s from capacity"
        )

    def outcome(self, resource: str, detail: str) -> None:
        self.fail("wrong-outcome", resource, detail)


# -- the cluster: Job controller, scheduler, kubelet, pod GC, churn ---------------------------
@dataclass
class Node:
    name: str
    cpu: int  # millicores
    used: int = 0
    up: bool = True
    pods: dict[str, None] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.cpu - self.used


@dataclass
class PodState:
    name: str
    resource: str
    uid: str
    job: str
    stage: str
    index: int
    cpu: int
    seq: int
    node: str | None = None
    phase: str = "Pending"
    started: int | None = None
    exit_code: int | None = None  # what the attempt will end with, decided at start


@dataclass
class JobState:
    """The Job controller's memory of one Indexed Job (its finalizer-tracked counts)."""

    name: str
    uid: str
    resource: str
    owner_uid: str
    stage: str
    completions: int
    backoff_limit: int
    max_failed: int
    rules: list[Obj]
    cpu: int
    labels: dict[str, str]
    completed: IndexSet = field(default_factory=IndexSet)
    failed: IndexSet = field(default_factory=IndexSet)
    failures: dict[int, int] = field(default_factory=dict)
    active: dict[int, str] = field(default_factory=dict)  # index -> its pod
    retry: list[int] = field(default_factory=list)  # a heap of indexes needing a new pod
    not_before: dict[int, float] = field(default_factory=dict)
    ended: list[tuple[str, int, str, int | None, bool]] = field(default_factory=list)
    cursor: int = 0  # the lowest index never given a pod
    failed_pods: int = 0
    fail_job: bool = False
    start: int | None = None
    finished: bool = False
    conditions: list[Obj] = field(default_factory=list)
    completion: str | None = None
    created: int = 0
    first_running: int | None = None
    peak_active: int = 0


@dataclass
class Counters:
    pods_created: int = 0
    pods_disrupted: int = 0
    deleted_by_suspend: int = 0
    deleted_by_scale_down: int = 0
    running_killed: int = 0
    gc_deleted: int = 0
    nodes_lost: int = 0


class Cluster:
    """Everything on the cluster's side of the API: it reads and writes :class:`Store`."""

    def __init__(
        self,
        store: Store,
        scenario: Scenario,
        plans: dict[str, JobPlan],
        rng: random.Random,
        checks: Invariants,
    ) -> None:
        self.store = store
        self.scenario = scenario
        self.plans = plans
        self.rng = rng
        self.checks = checks
        self.nodes = {
            f"node-{i:03d}": Node(f"node-{i:03d}", scenario.node_cpu * 1000)
            for i in range(scenario.nodes)
        }
        self.free_heap: list[tuple[int, str]] = [(-n.free, n.name) for n in self.nodes.values()]
        heapq.heapify(self.free_heap)
        self.pods: dict[str, PodState] = {}
        self.jobs: dict[str, JobState] = {}
        self.dirty_jobs: dict[str, None] = {}
        self.wakeups: list[tuple[float, str]] = []
        self.kubelet: list[tuple[int, int, str, str]] = []
        self.pending: dict[int, deque[str]] = {}  # unbound pods by CPU request, oldest first
        self.tried: list[str] = []  # pods not yet tried by the scheduler
        self.terminated: deque[str] = deque()
        self.n_terminated = 0
        self.doomed: list[str] = []  # pods of lost nodes, deleted once accounted for
        self.returns: list[tuple[int, str]] = []
        self.next_churn = scenario.churn.start if scenario.churn else None
        self.seq = itertools.count()
        # Ground truth, kept apart from the Job controller's own counts.
        self.done: dict[tuple[str, str], set[int]] = {}  # (resource uid, stage) -> succeeded
        self.failures_done: dict[tuple[str, str, int], int] = {}
        self.active_of_job: dict[str, int] = {}
        self.counters = Counters()

    # -- one tick ---------------------------------------------------------------------------
    def step(self, t: int) -> None:
        self._churn(t)
        self._run_kubelet(t)
        while self.wakeups and self.wakeups[0][0] <= t:
            _, name = heapq.heappop(self.wakeups)
            self.dirty_jobs[name] = None
        while self.dirty_jobs:
            name = next(iter(self.dirty_jobs))
            del self.dirty_jobs[name]
            js = self.jobs.get(name)
            if js is not None:
                self._sync(js, t)
        self._schedule(t)
        self._collect_garbage()

    # -- Jobs -------------------------------------------------------------------------------
    def add_job(self, job: Obj, resource: str, owner_uid: str, t: int) -> None:
        spec = job["spec"]
        template = spec["template"]
        container = template["spec"]["containers"][0]
        requests = (container.get("resources") or {}).get("requests") or {}
        labels = dict(template["metadata"]["labels"])
        js = JobState(
            name=job["metadata"]["name"],
            uid=job["metadata"]["uid"],
            resource=resource,
            owner_uid=owner_uid,
            stage=labels[LABEL_STAGE],
            completions=int(spec["completions"]),
            backoff_limit=int(spec.get("backoffLimitPerIndex", 6)),
            max_failed=int(spec.get("maxFailedIndexes", spec["completions"])),
            rules=list((spec.get("podFailurePolicy") or {}).get("rules") or []),
            cpu=cpu_millis(requests.get("cpu")),
            labels=labels,
            created=t,
        )
        self.jobs[js.name] = js
        self.dirty_jobs[js.name] = None

    def _sync(self, js: JobState, t: int) -> None:
        """One sync of the Job controller for an Indexed Job."""
        job = self.store.jobs.get(js.name)
        if job is None or js.finished:
            return
        for pod, index, phase, code, disrupted in js.ended:
            if js.active.get(index) == pod:
                del js.active[index]
            if phase == "Succeeded":
                js.completed.add(index)
                continue
            action = self._failure_action(js, code, disrupted)
            if action == "Ignore":
                self._requeue(js, index, t, t)
            elif action in ("FailIndex", "FailJob"):
                js.failed_pods += 1
                js.failed.add(index)
                js.fail_job = js.fail_job or action == "FailJob"
            else:
                js.failed_pods += 1
                n = js.failures[index] = js.failures.get(index, 0) + 1
                if n > js.backoff_limit:
                    js.failed.add(index)
                else:
                    self._requeue(js, index, t + min(BACKOFF_BASE * 2 ** (n - 1), BACKOFF_CAP), t)
        js.ended.clear()
        spec = job["spec"]
        deadline = spec.get("activeDeadlineSeconds")
        if js.fail_job:
            self._end(js, t, "Failed", "PodFailurePolicy", "Container worker failed a FailJob rule")
        elif js.failed.count > js.max_failed:
            self._end(
                js,
                t,
                "Failed",
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        elif js.completed.count >= js.completions:
            self._end(
                js, t, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
            )
        elif js.failed.count and js.completed.count + js.failed.count >= js.completions:
            self._end(js, t, "Failed", "FailedIndexes", "Job has failed indexes")
        elif deadline and js.start is not None and t - js.start >= int(deadline):
            self._end(
                js, t, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
            )
        elif spec.get("suspend"):
            for index, pod in list(js.active.items()):
                self._delete_pod(pod)
                self._requeue(js, index, t, t)
                self.counters.deleted_by_suspend += 1
            self._condition(js, t, "Suspended", "True", "JobSuspended", "Job suspended")
        else:
            if any(c["type"] == "Suspended" and c["status"] == "True" for c in js.conditions):
                self._condition(js, t, "Suspended", "False", "JobResumed", "Job resumed")
            if js.start is None:
                js.start = t
            parallelism = int(spec.get("parallelism", 1))
            if len(js.active) > parallelism:
                self._scale_down(js, parallelism, t)
            want = min(parallelism, js.completions - js.completed.count)
            for _ in range(want - len(js.active)):
                index = self._next_index(js, t)
                if index is None:
                    break
                self._create_pod(js, index, t)
        self._write_status(js, job)

    def _failure_action(self, js: JobState, code: int | None, disrupted: bool) -> str:
        """The Job's podFailurePolicy for a failed pod: the first rule that matches."""
        for rule in js.rules:
            exits = rule.get("onExitCodes")
            if exits is not None and code is not None:
                values = set(exits.get("values") or [])
                if (code in values) == (exits.get("operator", "In") == "In") and code != 0:
                    return str(rule["action"])
            for cond in rule.get("onPodConditions") or []:
                if cond.get("type") == "DisruptionTarget" and disrupted:
                    return str(rule["action"])
        return "Count"

    def _requeue(self, js: JobState, index: int, not_before: float, t: int) -> None:
        js.not_before[index] = not_before
        heapq.heappush(js.retry, index)
        if not_before > t:  # a backoff: sync the Job again when it is over
            heapq.heappush(self.wakeups, (not_before, js.name))

    def _next_index(self, js: JobState, t: int) -> int | None:
        """The lowest index with no pod, not done, not failed and out of its backoff."""
        held: list[int] = []
        pick = None
        while js.retry:
            index = heapq.heappop(js.retry)
            if index in js.active or index in js.completed or index in js.failed:
                continue
            if js.not_before.get(index, 0) > t:
                held.append(index)
                continue
            pick = index
            break
        fresh = js.cursor if js.cursor < js.completions else None
        if fresh is not None and (pick is None or fresh < pick):
            js.cursor += 1
            held.extend([pick] if pick is not None else [])
            pick = fresh
        elif pick is not None:
            js.not_before.pop(pick, None)
        for index in held:
            heapq.heappush(js.retry, index)
        return pick

    def _scale_down(self, js: JobState, parallelism: int, t: int) -> None:
        # The Job controller deletes the pods with the least done first: unscheduled,
        # then not yet running, then the most recently started.
        def rank(item: tuple[int, str]) -> tuple[int, int]:
            ps = self.pods[item[1]]
            if ps.node is None:
                return 0, 0
            if ps.phase == "Pending":
                return 1, 0
            return 2, -(ps.started or 0)

        victims = sorted(js.active.items(), key=rank)[: len(js.active) - parallelism]
        for index, pod in victims:
            ps = self.pods[pod]
            if ps.phase == "Running":
                self.counters.running_killed += 1
                self.checks.killed_running(js.resource, js.name, pod, parallelism)
            self._delete_pod(pod)
            self._requeue(js, index, t, t)
            self.counters.deleted_by_scale_down += 1

    def _end(self, js: JobState, t: int, kind: str, reason: str, message: str) -> None:
        for pod in list(js.active.values()):
            self._delete_pod(pod)
        js.active.clear()
        js.finished = True
        target = "SuccessCriteriaMet" if kind == "Complete" else "FailureTarget"
        self._condition(js, t, target, "True", reason, message)
        self._condition(js, t, kind, "True", reason, message)
        if kind == "Complete":
            js.completion = stamp(t)

    def _condition(
        self, js: JobState, t: int, kind: str, status: str, reason: str, message: str
    ) -> None:
        for cond in js.conditions:
            if cond["type"] == kind:
                if cond["status"] != status:
                    cond.update(status=status, reason=reason, message=message)
                    cond["lastTransitionTime"] = stamp(t)
                return
        js.conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastProbeTime": stamp(t),
                "lastTransitionTime": stamp(t),
            }
        )

    def _write_status(self, js: JobState, job: Obj) -> None:
        ready = sum(1 for pod in js.active.values() if self.pods[pod].phase == "Running")
        status: Obj = {
            "active": len(js.active),
            "ready": ready,
            "failed": js.failed_pods,
            "succeeded": js.completed.count,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        }
        if js.start is not None:
            status["startTime"] = stamp(js.start)
        if js.completed.text:
            status["completedIndexes"] = js.completed.text
        if js.failed.text:
            status["failedIndexes"] = js.failed.text
        if js.completion is not None:
            status["completionTime"] = js.completion
        if js.conditions:
            status["conditions"] = [dict(c) for c in js.conditions]
        if status != job.get("status"):
            job["status"] = status
            self.store.changed(job, js.resource)

    # -- pods -------------------------------------------------------------------------------
    def _create_pod(self, js: JobState, index: int, t: int) -> None:
        if index in self.done.get((js.owner_uid, js.stage), ()):
            self.checks.rerun(js.resource, js.stage, index, f"{js.name} made a new pod for it")
        seq = next(self.seq)
        name = f"{js.name}-{index}-{_suffix(seq)}"
        labels = {
            **js.labels,
            JOB_INDEX: str(index),
            "batch.kubernetes.io/job-name": js.name,
            "batch.kubernetes.io/controller-uid": js.uid,
        }
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"pod-{seq}",
                "creationTimestamp": stamp(t),
                "labels": labels,
                "annotations": {JOB_INDEX: str(index)},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": js.name, "uid": js.uid}
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": CONTAINER, "resources": {"requests": {"cpu": f"{js.cpu}m"}}}
                ],
            },
            "status": {"phase": "Pending"},
        }
        self.store.pods[name] = pod
        self.store.pods_of.setdefault(js.resource, {})[name] = None
        self.store.changed(pod, js.resource)
        self.pods[name] = PodState(
            name, js.resource, js.owner_uid, js.name, js.stage, index, js.cpu, seq
        )
        js.active[index] = name
        js.peak_active = max(js.peak_active, len(js.active))
        self.active_of_job[js.name] = self.active_of_job.get(js.name, 0) + 1
        self.pending.setdefault(js.cpu, deque()).append(name)
        self.tried.append(name)
        self.counters.pods_created += 1

    def _delete_pod(self, name: str) -> None:
        pod = self.store.pods.pop(name, None)
        ps = self.pods.pop(name, None)
        if pod is None or ps is None:
            return
        self.store.pods_of.get(ps.resource, {}).pop(name, None)
        self.store.dirty[ps.resource] = None
        if ps.phase in ("Pending", "Running"):
            self._release(ps)
            self.active_of_job[ps.job] -= 1
        else:
            self.n_terminated -= 1
        js = self.jobs.get(ps.job)
        if js is not None and js.active.get(ps.index) == name:
            del js.active[ps.index]

    def _release(self, ps: PodState) -> None:
        node = self.nodes.get(ps.node or "")
        if node is not None and ps.name in node.pods:
            del node.pods[ps.name]
            node.used -= ps.cpu
            if node.up:
                heapq.heappush(self.free_heap, (-node.free, node.name))

    def _ended(self, ps: PodState, phase: str, code: int | None, disrupted: bool) -> None:
        """A pod just reached ``phase``: the Job controller accounts for it next sync."""
        ps.phase = phase
        self._release(ps)
        self.active_of_job[ps.job] -= 1
        self.terminated.append(ps.name)
        self.n_terminated += 1
        js = self.jobs.get(ps.job)
        if js is not None:
            js.ended.append((ps.name, ps.index, phase, code, disrupted))
            self.dirty_jobs[js.name] = None

    # -- the scheduler ----------------------------------------------------------------------
    def _roomiest(self) -> Node | None:
        heap = self.free_heap
        if len(heap) > 8 * len(self.nodes):
            heap[:] = [(-n.free, n.name) for n in self.nodes.values() if n.up]
            heapq.heapify(heap)
        while heap:
            free, name = heap[0]
            node = self.nodes[name]
            if node.up and node.free == -free:
                return node
            heapq.heappop(heap)
        return None

    def _schedule(self, t: int) -> None:
        """Bind pending pods, oldest first, each to the node with the most free CPU (the
        default scorer's spreading); a pod no node fits is marked Unschedulable."""
        while True:
            node = self._roomiest()
            if node is None:
                break
            best: PodState | None = None
            for cpu, queue in self.pending.items():
                while queue and self._bound_or_gone(queue[0]):
                    queue.popleft()
                if queue and cpu <= node.free:
                    ps = self.pods[queue[0]]
                    if best is None or ps.seq < best.seq:
                        best = ps
            if best is None:
                break
            self.pending[best.cpu].popleft()
            self._bind(best, node, t)
        if not self.tried:
            return
        up = sum(1 for n in self.nodes.values() if n.up)
        message = (
            f"0/{up} nodes are available: {up} Insufficient cpu. preemption: 0/{up} nodes are "
            f"available: {up} No preemption victims found for incoming pod."
        )
        for name in self.tried:
            ps = self.pods.get(name)
            if ps is None or ps.node is not None:
                continue
            pod = self.store.pods[name]
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": stamp(t),
                }
            ]
            self.store.changed(pod, ps.resource)
        self.tried.clear()

    def _bound_or_gone(self, name: str) -> bool:
        ps = self.pods.get(name)
        return ps is None or ps.node is not None or ps.phase != "Pending"

    def _bind(self, ps: PodState, node: Node, t: int) -> None:
        node.used += ps.cpu
        node.pods[ps.name] = None
        heapq.heappush(self.free_heap, (-node.free, node.name))
        ps.node = node.name
        pod = self.store.pods[ps.name]
        pod["spec"]["nodeName"] = node.name
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(t)}
        ]
        pod["status"]["containerStatuses"] = [
            {
                "name": CONTAINER,
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
        ]
        self.store.changed(pod, ps.resource)
        start = t + self.rng.randint(*self.scenario.startup)
        heapq.heappush(self.kubelet, (start, ps.seq, ps.name, "start"))

    # -- the kubelet ------------------------------------------------------------------------
    def _run_kubelet(self, t: int) -> None:
        while self.kubelet and self.kubelet[0][0] <= t:
            _, _, name, what = heapq.heappop(self.kubelet)
            ps = self.pods.get(name)
            if ps is None or ps.node is None:
                continue  # deleted or lost with its node
            if what == "start" and ps.phase == "Pending":
                self._start(ps, t)
            elif what == "finish" and ps.phase == "Running":
                self._finish(ps, t)

    def _start(self, ps: PodState, t: int) -> None:
        plan = self.plans[ps.resource]
        seconds = plan.durations[ps.stage][ps.index]
        failed_before = self.failures_done.get((ps.uid, ps.stage, ps.index), 0)
        if plan.bad_input == (ps.stage, ps.index):
            ps.exit_code, end = termination.EXIT_BAD_INPUT, t + max(1, seconds // 4)
        elif failed_before < plan.fail_attempts.get((ps.stage, ps.index), 0):
            ps.exit_code, end = termination.EXIT_RETRY, t + self.rng.randint(1, seconds)
        else:
            ps.exit_code, end = termination.EXIT_OK, t + seconds
        ps.phase, ps.started = "Running", t
        js = self.jobs.get(ps.job)
        if js is not None and js.first_running is None:
            js.first_running = t
        pod = self.store.pods[ps.name]
        status = pod["status"]
        status["phase"] = "Running"
        status["startTime"] = stamp(t)
        status["conditions"] = [
            *status["conditions"],
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp(t)},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": stamp(t)},
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(t)},
        ]
        status["containerStatuses"] = [
            {
                "name": CONTAINER,
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": stamp(t)}},
            }
        ]
        self.store.changed(pod, ps.resource)
        self.dirty_jobs[ps.job] = None  # its ready count moved
        heapq.heappush(self.kubelet, (end, ps.seq, ps.name, "finish"))

    def _finish(self, ps: PodState, t: int) -> None:
        code = ps.exit_code if ps.exit_code is not None else termination.EXIT_OK
        message = self._message(ps, code)
        phase = "Succeeded" if code == termination.EXIT_OK else "Failed"
        pod = self.store.pods[ps.name]
        status = pod["status"]
        status["phase"] = phase
        status["conditions"] = [
            c if c["type"] not in ("Ready", "ContainersReady") else {**c, "status": "False"}
            for c in status["conditions"]
        ]
        status["containerStatuses"] = [
            {
                "name": CONTAINER,
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "message": message,
                        "startedAt": stamp(ps.started or t),
                        "finishedAt": stamp(t),
                    }
                },
            }
        ]
        self.store.changed(pod, ps.resource)
        if code == termination.EXIT_OK:
            done = self.done.setdefault((ps.uid, ps.stage), set())
            if ps.index in done:
                self.checks.rerun(ps.resource, ps.stage, ps.index, f"pod {ps.name} ran it again")
            done.add(ps.index)
        elif code == termination.EXIT_RETRY:
            key = (ps.uid, ps.stage, ps.index)
            self.failures_done[key] = self.failures_done.get(key, 0) + 1
        self._ended(ps, phase, code, disrupted=False)

    def _message(self, ps: PodState, code: int) -> str:
        """The worker's termination message (:mod:`kubemr.termination`)."""
        plan = self.plans[ps.resource]
        base: Obj = {"stage": ps.stage, "index": ps.index, "attempt": ps.name}
        if code == termination.EXIT_BAD_INPUT:
            body: Obj = {
                "ok": False,
                **base,
                "reason": termination.BAD_INPUT,
                "message": f"input record {ps.index * 7}: not valid JSON",
            }
        elif code != termination.EXIT_OK:
            attempt = self.failures_done.get((ps.uid, ps.stage, ps.index), 0) + 1
            body = {
                "ok": False,
                **base,
                "reason": termination.USER_CODE,
                "message": f"ValueError: injected failure (attempt {attempt})",
                "traceback": 'Traceback (most recent call last):\n  File "job.py", line 7, '
                "in mapper\nValueError: injected failure",
            }
        elif ps.stage == "plan":
            body = {"ok": True, **base, "job_id": f"{ps.resource}-1", "steps": plan.steps_report()}
        elif ps.stage == "commit":
            body = {"ok": True, **base, "result": plan.result()}
        else:
            seconds = plan.durations[ps.stage][ps.index]
            body = {"ok": True, **base, "records_in": 1000, "bytes_out": 4000, "seconds": seconds}
        return termination.encode(body)

    # -- nodes lost and returned; garbage -------------------------------------------------
    def _churn(self, t: int) -> None:
        churn = self.scenario.churn
        while self.returns and self.returns[0][0] <= t:
            _, name = heapq.heappop(self.returns)
            node = self.nodes[name]
            node.up, node.used = True, 0
            heapq.heappush(self.free_heap, (-node.free, node.name))
        if churn is None or self.next_churn is None or t < self.next_churn:
            return
        self.next_churn += churn.every
        up = [n for n in self.nodes.values() if n.up]
        count = min(len(up), max(1, round(len(self.nodes) * churn.fraction)))
        for node in self.rng.sample(up, count):
            self._lose(node, t)
            heapq.heappush(self.returns, (t + churn.down_for, node.name))

    def _lose(self, node: Node, t: int) -> None:
        """The node is gone: pod GC fails its running pods with a DisruptionTarget condition
        (the Job's podFailurePolicy ignores those) and deletes all of its pods."""
        node.up = False
        self.counters.nodes_lost += 1
        for name in list(node.pods):
            ps = self.pods[name]
            if ps.phase in ("Pending", "Running"):
                pod = self.store.pods[name]
                status = pod["status"]
                status["phase"] = "Failed"
                status["conditions"] = [
                    *(
                        c if c["type"] != "Ready" else {**c, "status": "False"}
                        for c in status["conditions"]
                    ),
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                        "lastTransitionTime": stamp(t),
                    },
                ]
                self.store.changed(pod, ps.resource)
                self.counters.pods_disrupted += 1
                self._ended(ps, "Failed", None, disrupted=True)
            self.doomed.append(name)
        node.pods.clear()
        node.used = 0

    def _collect_garbage(self) -> None:
        for name in self.doomed:
            self._delete_pod(name)
        self.doomed.clear()
        # Past the threshold, the oldest terminated pods go (the Job controller has
        # already counted them: its finalizer is off).
        while self.n_terminated > self.scenario.pod_gc_threshold and self.terminated:
            name = self.terminated.popleft()
            ps = self.pods.get(name)
            if ps is not None and ps.phase in ("Succeeded", "Failed"):
                self._delete_pod(name)
                self.counters.gc_deleted += 1


# -- the controller loop ----------------------------------------------------------------------
def _message_only(old: Obj, new: Obj) -> bool:
    """Whether a status write changes only texts: a condition's message (same type, status
    and reason) or ``parallelismReason``."""
    keys = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    if not keys <= {"conditions", "parallelismReason"}:
        return False

    def states(status: Obj) -> list[tuple[Any, ...]]:
        return [(c["type"], c["status"], c["reason"]) for c in status.get("conditions") or []]

    return states(old) == states(new)


@dataclass
class ResourceStats:
    reconciles: int = 0
    seconds: float = 0.0
    status_writes: int = 0
    jobs_created: int = 0
    scale_patches: int = 0
    suspend_patches: int = 0
    events: int = 0
    message_only_writes: int = 0
    max_pods: int = 0
    pods: int = 0  # handed to its reconciles, summed
    finished: int | None = None


@dataclass
class Report:
    scenario: str
    title: str
    seed: int
    jobs: int
    tasks: int
    nodes: int
    cores: int
    simulated_seconds: int
    bound: int
    succeeded: int
    failed: int
    expected_failed: int
    reconciles: int
    reconcile_us_mean: float
    reconcile_us_p99: float
    job_ms_mean: float
    job_ms_p99: float
    status_writes_per_job: float
    message_only_writes: float  # share of the status writes
    jobs_created_per_job: float
    scale_patches_per_job: float
    suspend_patches: int
    events_per_job: float
    max_status_bytes: int
    max_pods_per_reconcile: int
    reconciles_per_job: float
    pods_per_reconcile: float  # pods handed to a reconcile, on average
    pods_read_per_reconcile: float  # of them, read (not remembered from an earlier call)
    max_wave_wait: int  # seconds from a wave's Job to its first running pod
    peak_wave_pods: int
    counters: Counters
    wall_seconds: float
    violations: list[Violation]


class Simulation:
    """A scenario played tick by tick: the cluster, then the controller, then the checks.

    Args:
        scenario: the cluster and the jobs.
        checks: the invariants (default: strict, raising at the first violation).
        tick: simulated seconds per tick; the controller reconciles a changed resource at
            most once per tick.
        check_purity: compare reconcile's inputs before and after each call (slow).
    """

    def __init__(
        self,
        scenario: Scenario,
        checks: Invariants | None = None,
        tick: int = 1,
        check_purity: bool = False,
    ) -> None:
        self.scenario = scenario
        self.checks = checks or Invariants()
        self.tick = tick
        self.check_purity = check_purity
        self.rng = random.Random(scenario.seed)
        self.store = Store()
        self.plans = {p.name: p for p in scenario.jobs}
        self.cluster = Cluster(self.store, scenario, self.plans, self.rng, self.checks)
        self.bound = scenario.bound()
        self.t = 0
        self.ticks = 0
        self.arrivals = sorted(scenario.jobs, key=lambda p: (p.submit_at, p.name))
        self.arrived = 0
        self.due: dict[str, float] = {}
        self.due_heap: list[tuple[float, str]] = []
        self.last_scaled: dict[str, datetime] = {}
        self.stats: dict[str, ResourceStats] = {}
        self.call_seconds: list[float] = []
        # Pod views remembered as the controller's process does, for this cluster only:
        # another simulation's pods have the same uids and resourceVersions.
        self.views = ViewCache()
        self.created_stages: dict[str, int] = {}
        self.finished = 0
        self.starved: dict[str, None] = {}
        self.hooks: list[tuple[int, int, Callable[[Simulation], None]]] = []
        self._hook_seq = itertools.count()

    # -- driving ----------------------------------------------------------------------------
    def at(self, t: int, hook: Callable[[Simulation], None]) -> None:
        """Run ``hook(self)`` at simulated second ``t``, before the cluster moves."""
        heapq.heappush(self.hooks, (t, next(self._hook_seq), hook))

    def patch_spec(self, name: str, changes: Obj) -> None:
        """Change a resource's spec, as ``kubectl patch`` would (a new generation)."""
        res = self.store.resources[name]
        res["spec"].update(changes)
        res["metadata"]["generation"] += 1
        self.store.changed(res, name)

    def run(self, until: int | None = None) -> Report:
        """Play until every job has ended (or ``until``); a job not ended by the bound
        derived from capacity is a violation."""
        started = time.perf_counter()
        if until is not None:
            while self.t < until:
                self.step()
            return self.report(time.perf_counter() - started)
        while self.t <= self.bound:
            self.step()
            if self.arrived == len(self.arrivals) and self.finished == len(self.arrivals):
                break
        for _ in range(SETTLE_TICKS):  # what the last reconciles asked for takes effect
            self.step()
        self.verify()
        return self.report(time.perf_counter() - started)

    def step(self) -> None:
        self.t += self.tick
        self.ticks += 1
        t = self.t
        self.checks.tick, self.checks.seconds = self.ticks, float(t)
        while self.hooks and self.hooks[0][0] <= t:
            heapq.heappop(self.hooks)[2](self)
        while self.arrived < len(self.arrivals) and self.arrivals[self.arrived].submit_at <= t:
            self._submit(self.arrivals[self.arrived], t)
            self.arrived += 1
        self.cluster.step(t)
        todo = dict(self.store.dirty)
        self.store.dirty.clear()
        while self.due_heap and self.due_heap[0][0] <= t:
            due, name = heapq.heappop(self.due_heap)
            if self.due.get(name) == due:
                del self.due[name]
                todo[name] = None
        now = T0 + timedelta(seconds=t)
        for name in sorted(todo):
            if name in self.store.resources:
                self._reconcile(name, t, now)
        self._check_tick(t)

    def _submit(self, plan: JobPlan, t: int) -> None:
        n = len(self.store.resources) + 1
        resource: Obj = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": plan.name,
                "namespace": NAMESPACE,
                "uid": f"00000000-0000-4000-8000-{n:012d}",
                "generation": 1,
                "creationTimestamp": stamp(t),
                "labels": {},
            },
            "spec": plan.spec(),
        }
        self.store.resources[plan.name] = resource
        self.stats[plan.name] = ResourceStats()
        self.store.changed(resource, plan.name)

    # -- one reconcile, applied as kubemr.controller.main.JobController.apply does -----------
    def _reconcile(self, name: str, t: int, now: datetime) -> None:
        store = self.store
        resource = store.resources[name]
        jobs = [store.jobs[j] for j in store.jobs_of.get(name, ())]
        pods = [store.pods[p] for p in store.pods_of.get(name, ())]
        if len(self.last_scaled) > 64:
            horizon = now - timedelta(seconds=SCALED_MEMORY)
            self.last_scaled = {k: v for k, v in self.last_scaled.items() if v >= horizon}
        before = json.dumps([resource, jobs, pods], sort_keys=True) if self.check_purity else ""
        started = time.perf_counter()
        outcome = reconcile(resource, jobs, pods, now, self.last_scaled, views=self.views)
        elapsed = time.perf_counter() - started
        if self.check_purity and json.dumps([resource, jobs, pods], sort_keys=True) != before:
            self.checks.fail("reconcile-mutated-input", name, "its inputs changed")
        stats = self.stats[name]
        stats.reconciles += 1
        stats.seconds += elapsed
        stats.max_pods = max(stats.max_pods, len(pods))
        stats.pods += len(pods)
        self.call_seconds.append(elapsed)
        self._apply(resource, outcome, t, now)

    def _apply(self, resource: Obj, outcome: Outcome, t: int, now: datetime) -> None:
        name = resource["metadata"]["name"]
        stats = self.stats[name]
        for action in outcome.job_actions:
            if isinstance(action, CreateJob):
                self._create_job(resource, action, t)
                stats.jobs_created += 1
            elif isinstance(action, ScaleJob):
                self._scale_job(resource, action, now)
                stats.scale_patches += 1
            elif isinstance(action, SuspendJob):
                job = self.store.jobs[action.name]
                job["spec"]["suspend"] = action.suspend
                annotations = job["metadata"].setdefault("annotations", {})
                if action.suspend:
                    annotations[SUSPENDED] = "true"
                else:
                    annotations.pop(SUSPENDED, None)
                self.store.changed(job, name)
                self.cluster.dirty_jobs[action.name] = None
                stats.suspend_patches += 1
        if outcome.status is not None and outcome.status != resource.get("status"):
            if _message_only(resource.get("status") or {}, outcome.status):
                stats.message_only_writes += 1
            text = json.dumps(outcome.status)
            self.checks.status_size(name, len(text.encode()))
            resource["status"] = json.loads(text)  # as the API server stores and returns it
            self.store.changed(resource, name)  # our own write comes back as an event
            stats.status_writes += 1
            phase = resource["status"].get("phase")
            if phase in ("Succeeded", "Failed") and stats.finished is None:
                stats.finished = t
                self.finished += 1
        for action in outcome.actions:
            if isinstance(action, Event):
                stats.events += 1
            elif isinstance(action, DeleteResource):
                self._delete_resource(name)
                return
        if outcome.requeue_after is not None:
            due = t + outcome.requeue_after
            self.due[name] = due
            heapq.heappush(self.due_heap, (due, name))
        else:
            self.due.pop(name, None)

    def _workers(self, resource: Obj) -> Workers:
        w = resource["spec"]["workers"]
        return Workers(int(w["min"]), int(w["max"]), int(w["maxPending"]))

    def _create_job(self, resource: Obj, action: CreateJob, t: int) -> None:
        name = resource["metadata"]["name"]
        job: Obj = json.loads(json.dumps(action.manifest))
        spec = job["spec"]
        stage = spec["template"]["metadata"]["labels"][LABEL_STAGE]
        key = f"{resource['metadata']['uid']}/{stage}"
        before = self.created_stages.get(key, 0)
        if action.name in self.store.jobs or before:
            self.checks.duplicate_job(name, action.name, before)
            return  # a server-side apply of the same Job: nothing new runs
        self.created_stages[key] = before + 1
        wave = stage not in ("plan", "commit")
        self.checks.created(
            name,
            action.name,
            parallelism=int(spec["parallelism"]),
            tasks=int(spec["completions"]),
            workers=self._workers(resource) if wave else None,
        )
        n = len(self.created_stages)
        job["metadata"].update(
            uid=f"job-{n:08d}", creationTimestamp=stamp(t), generation=1, resourceVersion="0"
        )
        job["status"] = {}
        self.store.jobs[action.name] = job
        self.store.jobs_of.setdefault(name, {})[action.name] = None
        self.store.changed(job, name)
        self.cluster.add_job(job, name, resource["metadata"]["uid"], t)

    def _scale_job(self, resource: Obj, action: ScaleJob, now: datetime) -> None:
        name = resource["metadata"]["name"]
        job = self.store.jobs[action.name]
        js = self.cluster.jobs[action.name]
        pods = [self.cluster.pods[p] for p in js.active.values()]
        running = sum(1 for ps in pods if ps.phase == "Running")
        placed = sum(1 for ps in pods if ps.node is not None)
        done = len(self.cluster.done.get((js.owner_uid, js.stage), ()))
        self.checks.scale(
            name,
            action.name,
            self._workers(resource),
            int(job["spec"].get("parallelism", 1)),
            action.parallelism,
            running=running,
            active=self.cluster.active_of_job.get(action.name, 0),
            ready=running,
            scheduled=placed,
            remaining=js.completions - done,
        )
        job["spec"]["parallelism"] = action.parallelism
        job["metadata"].setdefault("annotations", {})[SCALED_AT] = action.scaled_at
        self.store.changed(job, name)
        self.cluster.dirty_jobs[action.name] = None
        self.last_scaled[action.name] = now

    def _delete_resource(self, name: str) -> None:
        for job in list(self.store.jobs_of.pop(name, {})):
            self.store.jobs.pop(job, None)
            self.cluster.jobs.pop(job, None)
        for pod in list(self.store.pods_of.get(name, {})):
            self.cluster._delete_pod(pod)
        self.store.pods_of.pop(name, None)
        self.store.resources.pop(name, None)
        self.due.pop(name, None)

    # -- checks -----------------------------------------------------------------------------
    def _check_tick(self, t: int) -> None:
        cluster = self.cluster
        for job_name, active in list(cluster.active_of_job.items()):
            if active == 0:
                del cluster.active_of_job[job_name]
                continue
            js = cluster.jobs[job_name]
            done = len(cluster.done.get((js.owner_uid, js.stage), ()))
            self.checks.wave(js.resource, job_name, active=active, incomplete=js.completions - done)
            if js.stage not in ("plan", "commit"):
                parallelism = int(self.store.jobs[job_name]["spec"].get("parallelism", 1))
                resource = self.store.resources[js.resource]
                self.checks.parallelism(js.resource, job_name, parallelism, self._workers(resource))
        if t > self.bound:
            for plan in self.arrivals[: self.arrived]:
                stats = self.stats[plan.name]
                if stats.finished is None and plan.name not in self.starved:
                    status = self.store.resources.get(plan.name, {}).get("status") or {}
                    self.checks.starved(plan.name, self.bound, status.get("phase"))
                    self.starved[plan.name] = None  # reported once

    def verify(self) -> None:
        """Every job ended as its plan makes right, and none left a pod running."""
        for ps in self.cluster.pods.values():
            if ps.phase in ("Pending", "Running") and self.stats[ps.resource].finished is not None:
                self.checks.fail(
                    "pods-left-running",
                    ps.resource,
                    f"pod {ps.name} is {ps.phase} after the job ended",
                )
                break
        for plan in self.scenario.jobs:
            resource = self.store.resources.get(plan.name)
            status = (resource or {}).get("status") or {}
            want = plan.expected()
            phase = status.get("phase")
            if phase != want.phase:
                failure = status.get("failure") or {}
                self.checks.outcome(
                    plan.name,
                    f"ended {phase} ({failure.get('reason')}: {failure.get('message')}), "
                    f"expected {want.phase}",
                )
                continue
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if phase == "Failed":
                failure = status.get("failure") or {}
                if failure.get("reason") != want.reason or failure.get("task") not in want.tasks:
                    self.checks.outcome(
                        plan.name,
                        f"failed with {failure.get('reason')} at {failure.get('task')}, "
                        f"expected {want.reason} at one of {sorted(want.tasks)}",
                    )
                if conditions.get("Failed") != "True":
                    self.checks.outcome(plan.name, f"Failed without its condition: {conditions}")
                continue
            tasks = plan.tasks
            result = status.get("result") or {}
            if status.get("progress") != f"{tasks}/{tasks}":
                self.checks.outcome(plan.name, f"progress {status.get('progress')} of {tasks}")
            if conditions.get("Complete") != "True":
                self.checks.outcome(plan.name, f"Succeeded without Complete: {conditions}")
            if result.get("recordsIn") != plan.result()["recordsIn"]:
                self.checks.outcome(plan.name, f"result {result} is not the commit pod's")
            for wave in status.get("waves") or []:
                if wave.get("succeeded") != wave.get("total"):
                    self.checks.outcome(plan.name, f"wave {wave} did not finish")

    # -- the report -------------------------------------------------------------------------
    def report(self, wall: float) -> Report:
        n = max(1, len(self.stats))
        phases = [
            ((self.store.resources.get(p.name) or {}).get("status") or {}).get("phase")
            for p in self.scenario.jobs
        ]
        stats = list(self.stats.values())
        writes = sum(s.status_writes for s in stats)
        waves = [js for js in self.cluster.jobs.values() if js.stage not in ("plan", "commit")]
        return Report(
            scenario=self.scenario.name,
            title=self.scenario.title,
            seed=self.scenario.seed,
            jobs=len(self.scenario.jobs),
            tasks=sum(p.tasks for p in self.scenario.jobs),
            nodes=self.scenario.nodes,
            cores=self.scenario.cores,
            simulated_seconds=self.t,
            bound=self.bound,
            succeeded=phases.count("Succeeded"),
            failed=phases.count("Failed"),
            expected_failed=sum(1 for p in self.scenario.jobs if p.expected().phase == "Failed"),
            reconciles=len(self.call_seconds),
            reconcile_us_mean=1e6 * sum(self.call_seconds) / max(1, len(self.call_seconds)),
            reconcile_us_p99=1e6 * percentile(self.call_seconds, 0.99),
            job_ms_mean=1e3 * sum(s.seconds for s in stats) / n,
            job_ms_p99=1e3 * percentile([s.seconds for s in stats], 0.99),
            status_writes_per_job=writes / n,
            message_only_writes=sum(s.message_only_writes for s in stats) / max(1, writes),
            jobs_created_per_job=sum(s.jobs_created for s in stats) / n,
            scale_patches_per_job=sum(s.scale_patches for s in stats) / n,
            suspend_patches=sum(s.suspend_patches for s in stats),
            events_per_job=sum(s.events for s in stats) / n,
            max_status_bytes=self.checks.max_status_bytes,
            max_pods_per_reconcile=max((s.max_pods for s in stats), default=0),
            reconciles_per_job=len(self.call_seconds) / n,
            pods_per_reconcile=sum(s.pods for s in stats) / max(1, len(self.call_seconds)),
            pods_read_per_reconcile=self.views.misses / max(1, len(self.call_seconds)),
            max_wave_wait=max(
                (js.first_running - js.created for js in waves if js.first_running is not None),
                default=0,
            ),
            peak_wave_pods=max((js.peak_active for js in waves), default=0),
            counters=self.cluster.counters,
            wall_seconds=wall,
            violations=list(self.checks.violations),
        )


# -- scenarios --------------------------------------------------------------------------------
def _durations(rng: random.Random, plan_stages: Iterable[tuple[str, int]], spans: Obj) -> Obj:
    out: dict[str, list[int]] = {}
    for stage, tasks in plan_stages:
        kind = stage.split("-")[0]
        low, high = spans[kind]
        out[stage] = [rng.randint(low, high) for _ in range(tasks)]
    return out


def _plan(
    rng: random.Random,
    name: str,
    maps: int,
    reducers: tuple[int, ...],
    spans: Obj,
    workers: Workers,
    **extra: Any,
) -> JobPlan:
    plan = JobPlan(name, maps, reducers, {}, workers, **extra)
    plan.durations = _durations(rng, plan.stages(), spans)
    return plan


def scenario_a(
    tasks: int = 10_000,
    reducers: int = 100,
    workers_max: int = 200,
    max_pending: int = 20,
    nodes: int = 50,
    node_cpu: int = 8,
    map_seconds: tuple[int, int] = (20, 40),
    seed: int = 1,
) -> Scenario:
    """One wide job: ``tasks`` map tasks and ``reducers`` reducers on a roomy cluster."""
    rng = random.Random(seed)
    spans = {"plan": (5, 10), "map": map_seconds, "reduce": (30, 60), "commit": (5, 10)}
    workers = Workers(0, workers_max, max_pending)
    job = _plan(rng, "wide", tasks, (reducers,), spans, workers)
    return Scenario(
        "a",
        f"one job, {tasks:,} maps + {reducers} reducers, workers.max {workers_max}",
        nodes,
        node_cpu,
        [job],
        seed=seed,
    )


def _many_jobs(
    rng: random.Random,
    count: int,
    task_range: tuple[int, int],
    spans: Obj,
    arrival_window: int,
) -> list[JobPlan]:
    jobs = []
    for i in range(count):
        total = rng.randint(*task_range)
        shape = rng.random()
        if shape < 0.2:  # map-only
            maps, reducers = total, (0,)
        elif shape < 0.3:  # two steps: map, reduce, map (one per reducer), reduce
            r1 = max(1, total // 6)
            r2 = max(1, total // 20)
            maps, reducers = max(1, total - 2 * r1 - r2), (r1, r2)
        else:
            r = max(1, total // 10)
            maps, reducers = total - r, (r,)
        workers = Workers(
            rng.choice((0, 0, 0, 2)), rng.choice((4, 8, 16, 32)), rng.choice((1, 2, 2, 4))
        )
        jobs.append(
            _plan(
                rng,
                f"job-{i:04d}",
                maps,
                reducers,
                spans,
                workers,
                cpu=rng.choice(("500m", "1", "1", "2")),
                submit_at=rng.randint(0, arrival_window),
            )
        )
    return jobs


MANY_SPANS = {"plan": (3, 8), "map": (5, 20), "reduce": (10, 30), "commit": (2, 5)}


def scenario_b(
    jobs: int = 1000,
    nodes: int = 100,
    node_cpu: int = 8,
    task_range: tuple[int, int] = (20, 200),
    arrival_window: int = 60,
    seed: int = 2,
) -> Scenario:
    """``jobs`` concurrent jobs of 20-200 tasks on a cluster that holds a part of them."""
    rng = random.Random(seed)
    plans = _many_jobs(rng, jobs, task_range, MANY_SPANS, arrival_window)
    return Scenario(
        "b",
        f"{jobs:,} concurrent jobs of {task_range[0]}-{task_range[1]} tasks, capacity pressure",
        nodes,
        node_cpu,
        plans,
        seed=seed,
    )


def scenario_c(
    jobs: int = 1000,
    nodes: int = 100,
    node_cpu: int = 8,
    task_range: tuple[int, int] = (20, 200),
    churn: Churn | None = None,
    seed: int = 3,
) -> Scenario:
    """Scenario (b) with 10% of the nodes lost and returned every few minutes."""
    scenario = scenario_b(jobs, nodes, node_cpu, task_range, seed=seed)
    scenario.name = "c"
    churn = churn or Churn()
    scenario.title = (
        f"(b) with {churn.fraction:.0%} of nodes lost every {churn.every}s for {churn.down_for}s"
    )
    scenario.churn = churn
    return scenario


def scenario_d(
    jobs: int = 1000,
    nodes: int = 100,
    node_cpu: int = 8,
    task_range: tuple[int, int] = (20, 200),
    failure_rate: float = 0.08,
    doomed_rate: float = 0.03,
    seed: int = 4,
) -> Scenario:
    """Scenario (b) with random task failures below maxAttempts (each job must still
    succeed), and a few jobs with a task that cannot succeed (exhausted attempts, or bad
    input failing its index at once): those must fail with the right reason and task."""
    rng = random.Random(seed)
    plans = _many_jobs(rng, jobs, task_range, MANY_SPANS, 60)
    for plan in plans:
        for stage, tasks in plan.stages():
            if stage in ("plan", "commit"):
                continue
            for index in range(tasks):
                if rng.random() < failure_rate:
                    plan.fail_attempts[(stage, index)] = rng.randint(1, plan.max_attempts - 1)
        if rng.random() < doomed_rate:
            stage, tasks = rng.choice([s for s in plan.stages() if s[0] not in ("plan", "commit")])
            index = rng.randrange(tasks)
            if rng.random() < 0.5:
                plan.fail_attempts[(stage, index)] = plan.max_attempts
            else:
                plan.fail_attempts.pop((stage, index), None)
                plan.bad_input = (stage, index)
    return Scenario(
        "d",
        f"{jobs:,} jobs, {failure_rate:.0%} of tasks failing 1-2 of 3 attempts, "
        f"{doomed_rate:.0%} of jobs with a task that cannot succeed",
        nodes,
        node_cpu,
        plans,
        seed=seed,
    )


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "a": scenario_a,
    "b": scenario_b,
    "c": scenario_c,
    "d": scenario_d,
}
