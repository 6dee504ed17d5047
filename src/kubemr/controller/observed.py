"""Reading what a reconcile observes: the API server's JSON of the resource, its Jobs and
its pods, and the reports in the pods' termination messages, turned into plain values.

Nothing here decides anything: times, index sets, Job conditions, one :class:`PodView` per
pod, the resource's previous status, the plan's shape and the job's result.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubemr import termination
from kubemr.coordinator import StageState, StepShape
from kubemr.executors.k8s.manifests import CONTAINER, LABEL_STAGE, LABEL_UID
from kubemr.spec import (
    MAX_STEPS,
    MapReduceJobStatus,
    ResultSummary,
    StepSummary,
)

Obj = dict[str, Any]
"""An object as the API server's JSON."""

JOB_INDEX = "batch.kubernetes.io/job-completion-index"

BLOCKING_WAIT_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons that will not pass by themselves: the pod's worker is blocked."""


# -- times and indexes ----------------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it, or None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """A time as the :data:`~kubemr.controller.actions.SCALED_AT` annotation holds it
    (microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def parse_indexes(text: str | None) -> set[int]:
    """A Job's ``completedIndexes``/``failedIndexes``: ``"0-3,5"`` -> ``{0, 1, 2, 3, 5}``."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            if sep:
                out.update(range(int(low), int(high) + 1))
            else:
                out.add(int(low))
        except ValueError:
            continue
    return out


def count_indexes(text: str | None) -> int:
    """How many indexes a ``completedIndexes`` string names, without listing them."""
    total = 0
    for part in (text or "").split(","):
        low, sep, high = part.strip().partition("-")
        try:
            total += int(high) - int(low) + 1 if sep else (1 if low else 0)
        except ValueError:
            continue
    return total


# -- Jobs -----------------------------------------------------------------------------------
def _job_condition(job: Obj, kind: str) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def job_failed(job: Obj) -> Obj | None:
    """The Job's Failed (or, earlier, FailureTarget) condition when it cannot complete."""
    return _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")


def job_complete(job: Obj) -> bool:
    return _job_condition(job, "Complete") is not None


def stage_state(job: Obj) -> StageState:
    """A coordinator :class:`StageState` from a Job's status."""
    status = job.get("status") or {}
    return StageState(
        succeeded=count_indexes(status.get("completedIndexes")),
        failed=job_failed(job) is not None,
        suspended=bool((job.get("spec") or {}).get("suspend")),
    )


# -- pods -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodView:
    """What reconcile reads of one worker pod."""

    name: str
    stage: str
    index: int | None
    phase: str
    terminating: bool
    ready: bool
    scheduled: bool  # placed on a node (starting, running or ended there)
    created: datetime | None
    started: datetime | None  # the container started running
    finished: datetime | None  # the container terminated
    exit_code: int | None
    terminated_reason: str | None
    text: str | None  # the raw termination message
    message: Obj | None  # the decoded worker message
    unschedulable_since: datetime | None
    unschedulable_message: str | None
    blocked_reason: str | None  # a container waiting reason that will not pass by itself
    blocked_message: str | None

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running") and not self.terminating

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.terminating


def pod_view(pod: Obj) -> PodView:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    raw_index = annotations.get(JOB_INDEX) or labels.get(JOB_INDEX)
    try:
        index = int(raw_index) if raw_index is not None else None
    except ValueError:
        index = None
    statuses = status.get("containerStatuses") or []
    container = next((c for c in statuses if c.get("name") == CONTAINER), None)
    container = container or (statuses[0] if statuses else {})
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    waiting = state.get("waiting") or {}
    running = state.get("running") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    unschedulable = (
        scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
    )
    phase = status.get("phase") or "Pending"
    terminating = bool(meta.get("deletionTimestamp"))
    text = terminated.get("message") if terminated else None
    blocked = waiting.get("reason") if waiting.get("reason") in BLOCKING_WAIT_REASONS else None
    return PodView(
        name=str(meta.get("name") or ""),
        stage=str(labels.get(LABEL_STAGE) or ""),
        index=index,
        phase=phase,
        terminating=terminating,
        ready=phase == "Running"
        and not terminating
        and (conditions.get("Ready") or {}).get("status") == "True",
        scheduled=phase != "Pending"
        or bool((pod.get("spec") or {}).get("nodeName"))
        or scheduled.get("status") == "True"
        or bool(statuses),
        created=parse_time(meta.get("creationTimestamp")),
        started=parse_time(running.get("startedAt"))
        or parse_time((terminated or {}).get("startedAt")),
        finished=parse_time((terminated or {}).get("finishedAt")),
        exit_code=terminated.get("exitCode") if terminated else None,
        terminated_reason=terminated.get("reason") if terminated else None,
        text=text,
        message=termination.decode(text),
        unschedulable_since=(
            parse_time(scheduled.get("lastTransitionTime"))
            or parse_time(meta.get("creationTimestamp"))
            if unschedulable
            else None
        ),
        unschedulable_message=scheduled.get("message") if unschedulable else None,
        blocked_reason=blocked,
        blocked_message=waiting.get("message") if blocked else None,
    )


class ViewCache:
    """Pod views by the pod's uid and resourceVersion, the least recently used dropped past
    ``size``. A pod's view changes only with its resourceVersion, and a finished pod's never
    again, so a wave's thousands of finished pods are read once, not on every reconcile.
    A view of a finished task's pod takes about 1.4 KB, so the default bound holds two
    waves of 10,000 pods in under 30 MiB. Safe from several threads."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._views: OrderedDict[tuple[str, str], PodView] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def view(self, pod: Obj) -> PodView:
        meta = pod.get("metadata") or {}
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        if not uid or not version:
            return pod_view(pod)  # not from an API server: nothing identifies this copy
        key = (str(uid), str(version))
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                self.hits += 1
                return view
        view = pod_view(pod)
        with self._lock:
            self.misses += 1
            self._views[key] = view
            while len(self._views) > self.size:
                self._views.popitem(last=False)
        return view

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)

    def clear(self) -> None:
        with self._lock:
            self._views.clear()
            self.hits = self.misses = 0


VIEWS = ViewCache()
"""The views of the pods reconciles have read, shared by every reconcile of the process."""


# -- what belongs to the resource -----------------------------------------------------------
def owned_jobs(jobs: Iterable[Obj], uid: str) -> tuple[dict[str, Obj], set[str]]:
    """The Jobs the resource ``uid`` owns, by name, and the names of the others (an earlier
    resource's of the same name): those are never adopted."""
    own: dict[str, Obj] = {}
    foreign: set[str] = set()
    for job in jobs:
        jmeta = job.get("metadata") or {}
        owners = {r.get("uid") for r in jmeta.get("ownerReferences") or []}
        if uid in owners or (jmeta.get("labels") or {}).get(LABEL_UID) == uid:
            own[str(jmeta.get("name"))] = job
        else:
            foreign.add(str(jmeta.get("name")))
    return own, foreign


class StagePods(Mapping[str, list[PodView]]):
    """The resource ``uid``'s pods by stage name, each stage's sorted by pod name.

    The pods are only sorted into stages here; a stage's pods are read
    (:func:`pod_view`: times, conditions, the termination message decoded) when that stage
    is first looked up, through ``cache`` (:data:`VIEWS` by default). A reconcile looks at
    the stage it acts on and at the plan and commit reports, never at the retained pods of
    waves that ended, which a Job keeps until it is deleted: thousands, for a wide job.
    """

    def __init__(self, pods: Iterable[Obj], uid: str, cache: ViewCache | None = None) -> None:
        self._cache = cache if cache is not None else VIEWS
        self._raw: dict[str, list[Obj]] = {}
        for pod in pods:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_UID) != uid:
                continue
            self._raw.setdefault(str(labels.get(LABEL_STAGE) or ""), []).append(pod)
        self._views: dict[str, list[PodView]] = {}

    def __getitem__(self, stage: str) -> list[PodView]:
        views = self._views.get(stage)
        if views is None:
            views = sorted((self._cache.view(p) for p in self._raw[stage]), key=_by_name)
            self._views[stage] = views
        return views

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, stage: object) -> bool:
        return stage in self._raw

    def parsed(self) -> int:
        """How many pods have been read so far."""
        return sum(len(v) for v in self._views.values())


def _by_name(view: PodView) -> str:
    return view.name


# -- the resource ---------------------------------------------------------------------------
def previous_status(resource: Obj) -> MapReduceJobStatus:
    """The status the resource carries, or of it the parts that still read."""
    raw = resource.get("status")
    if not isinstance(raw, dict):
        return MapReduceJobStatus()
    try:
        return MapReduceJobStatus.model_validate(raw)
    except ValidationError:
        # Written by something else: keep the parts that still read.
        kept: Obj = {}
        for key, value in raw.items():
            try:
                MapReduceJobStatus.model_validate({key: value})
            except ValidationError:
                continue
            kept[key] = value
        return MapReduceJobStatus.model_validate(kept)


# -- the workers' reports -------------------------------------------------------------------
def reported(pods: Sequence[PodView]) -> tuple[PodView, Obj] | None:
    """The first of ``pods`` that succeeded with a worker's ok report, and that report."""
    for pod in pods:
        msg = pod.message
        if pod.phase == "Succeeded" and msg and msg.get("ok") is True:
            return pod, msg
    return None


def plan_shapes(steps: Sequence[StepSummary]) -> list[StepShape]:
    return [StepShape(s.maps or 0, s.reducers) for s in steps]


def read_plan(message: Mapping[str, Any]) -> list[StepSummary]:
    """The steps a plan pod reported; ValueError when they make no valid plan."""
    steps = message.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError("the plan reported no steps")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"the plan has {len(steps)} steps; at most {MAX_STEPS} run on Kubernetes")
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise ValueError(f"step {i} of the plan is not an object")
        maps = step.get("maps")
        if i == 0 and maps is None:
            raise ValueError("the plan does not say how many map tasks the first step has")
        try:
            out.append(StepSummary(maps=maps, reducers=step.get("reducers", 0)))
        except ValidationError as exc:
            raise ValueError(f"step {i} of the plan: {exc.errors()[0]['msg']}") from None
    return out


_RESULT_FIELDS = ("records_in", "records_out", "bytes_in", "bytes_out", "files_out")


def read_result(result: Any) -> ResultSummary | None:
    """The commit pod's ``result`` as the status keeps it: a :class:`ResultSummary`-shaped
    object (snake_case or camelCase), or the ``_SUCCESS`` summary's ``input``/``output``
    sections; counters are capped by the model."""
    if not isinstance(result, Mapping):
        return None
    values: Obj = {}
    for name in _RESULT_FIELDS:
        camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
        value = result.get(name, result.get(camel))
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            values[name] = value
    inp, out = result.get("input"), result.get("output")
    if isinstance(inp, Mapping):
        for key, name in (("records", "records_in"), ("bytes", "bytes_in")):
            if isinstance(inp.get(key), int):
                values.setdefault(name, inp[key])
    if isinstance(out, Mapping):
        for key, name in (("records", "records_out"), ("bytes", "bytes_out")):
            if isinstance(out.get(key), int):
                values.setdefault(name, out[key])
        files = out.get("files")
        if isinstance(files, list):
            values.setdefault("files_out", len(files))
        elif isinstance(files, int):
            values.setdefault("files_out", files)
    counters = result.get("counters")
    if isinstance(counters, Mapping):
        values["counters"] = {
            str(group): {str(k): v for k, v in names.items() if isinstance(v, int)}
            for group, names in counters.items()
            if isinstance(names, Mapping)
        }
    try:
        return ResultSummary.model_validate(values)
    except ValidationError:
        values.pop("counters", None)
        try:
            return ResultSummary.model_validate(values)
        except ValidationError:
            return None
