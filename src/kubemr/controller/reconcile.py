"""One reconcile of a ``MapReduceJob``, pure: what is observed now -> actions and status.

The controller calls :func:`reconcile` with the resource, the batch/v1 Jobs it owns and
their pods, all as the API server's JSON dicts, and the current time. Nothing else is
remembered between calls: the stages' progress comes from the Jobs (found under their
deterministic names, :func:`kubemr.executors.k8s.manifests.job_name`), the plan's shape and
the job's result from the pods' termination messages (:mod:`kubemr.termination`), and what
must outlive the Jobs (the plan's shape, the frozen waves, the terminal state) from the
resource's own status. So a controller restarted at any moment, or two reconciles of the
same observations, arrive at the same actions.

Example:
    outcome = reconcile(resource, jobs, pods, datetime.now(UTC))
    for action in outcome.actions:
        ...  # CreateJob -> apply the manifest; ScaleJob -> patch parallelism; ...
    ...  # then write outcome.status, then the Events, then requeue after
    ...  # outcome.requeue_after seconds
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubemr import termination
from kubemr.controller.scaling import WaveLoad, Workers, scale
from kubemr.coordinator import (
    PLAN,
    Stage,
    StageKind,
    StageState,
    StepShape,
    decide,
    job_stages,
    progress,
)
from kubemr.executors.k8s.manifests import (
    CONTAINER,
    GROUP,
    KUEUE_QUEUE_LABEL,
    LABEL_STAGE,
    LABEL_UID,
    job_name,
    stage_job,
)
from kubemr.spec import (
    MAX_CONDITIONS,
    MAX_STEPS,
    Condition,
    FailureStatus,
    MapReduceJobSpec,
    MapReduceJobStatus,
    PlanSummary,
    ResultSummary,
    StepSummary,
    WaveStatus,
    default_work_dir,
)

Obj = dict[str, Any]

SCALED_AT = f"{GROUP}/scaled-at"
"""Annotation on a wave's Job: when the controller last changed its parallelism, so the
rate limit of :func:`kubemr.controller.scaling.scale` survives a restart."""
SUSPENDED = f"{GROUP}/suspended"
"""Annotation on a Job the controller suspended (``spec.suspend``): only such Jobs are
resumed by it, so a Job suspended by someone else (Kueue, before admission) stays so."""
JOB_INDEX = "batch.kubernetes.io/job-completion-index"

CAPACITY_GRACE_SECONDS = 10.0
"""How long a pod may stay unschedulable before CapacityConstrained turns True."""
RESULT_GRACE_SECONDS = 30.0
"""How long to wait for a finished plan or commit pod's termination message to be seen."""
RESYNC_SECONDS = 60.0
"""Requeue of a running job without any event: a safety net, events drive the rest."""
MAX_EVENT_MESSAGE = 1024

# Condition types, one entry each in status.conditions.
COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED_CONDITION = "Suspended"
CAPACITY = "CapacityConstrained"
BLOCKED = "WorkersBlocked"

# Failure reasons the controller decides itself (the workers' are in kubemr.termination).
INVALID_SPEC = "InvalidSpec"
INVALID_PLAN = "InvalidPlan"
PLAN_MISSING = "PlanResultMissing"
DEADLINE = "DeadlineExceeded"
UNSCHEDULABLE = "Unschedulable"
PENDING_DEADLINE = "PendingDeadlineExceeded"
TASK_FAILED = "TaskFailed"
JOB_NAME_TAKEN = "JobNameTaken"

BLOCKING_WAIT_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
_EXIT_REASONS = {
    termination.EXIT_BAD_INPUT: termination.BAD_INPUT,
    termination.EXIT_VERSION_SKEW: termination.VERSION_SKEW,
    termination.EXIT_TERMINATED: termination.INTERRUPTED,
}


# -- what a reconcile asks for -------------------------------------------------------------
@dataclass(frozen=True)
class CreateJob:
    """Create (server-side apply) the Job of a stage."""

    manifest: Obj

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class ScaleJob:
    """Set a wave Job's parallelism and its :data:`SCALED_AT` annotation to ``scaled_at``."""

    name: str
    parallelism: int
    scaled_at: str


@dataclass(frozen=True)
class SuspendJob:
    """Set a Job's ``spec.suspend``, and its :data:`SUSPENDED` annotation with it."""

    name: str
    suspend: bool


@dataclass(frozen=True)
class Event:
    """A core/v1 Event about the resource."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class DeleteResource:
    """Delete the resource itself (``ttlSecondsAfterFinished`` passed)."""

    reason: str


Action = CreateJob | ScaleJob | SuspendJob | Event | DeleteResource


@dataclass(frozen=True)
class Outcome:
    """The actions to take, in order (Job changes, then Events once the status is written,
    then the resource's deletion), the status to write (None: leave it), and when to look
    again without an event."""

    actions: tuple[Action, ...] = ()
    status: Obj | None = None
    requeue_after: float | None = None

    def of(self, kind: type[Any]) -> list[Any]:
        """The actions of one kind: ``outcome.of(CreateJob)``."""
        return [a for a in self.actions if isinstance(a, kind)]

    @property
    def job_actions(self) -> list[CreateJob | ScaleJob | SuspendJob]:
        return [a for a in self.actions if isinstance(a, CreateJob | ScaleJob | SuspendJob)]

    @property
    def events(self) -> list[Event]:
        return self.of(Event)

    @property
    def delete_resource(self) -> bool:
        return any(isinstance(a, DeleteResource) for a in self.actions)


# -- reading the observed objects -----------------------------------------------------------
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
    """A time as the :data:`SCALED_AT` annotation holds it (microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


@dataclass(frozen=True)
class PodView:
    """What reconcile reads of one worker pod."""

    name: str
    stage: str
    index: int | None
    phase: str
    terminating: bool
    ready: bool
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


# -- small helpers ----------------------------------------------------------------------------
_REASON_CHARS = re.compile(r"[^A-Za-z0-9_,:]")


def condition_reason(text: str | None, default: str = "Unknown") -> str:
    """``text`` as a metav1.Condition reason (CamelCase word), or ``default``."""
    word = _REASON_CHARS.sub("", text or "")
    word = word.lstrip("0123456789_,:").rstrip(",:")
    return word[:1024] if word else default


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def task_name(stage: str, index: int | None) -> str:
    """How a task is named in the status: ``map-0-00012``, or ``plan``."""
    if index is None or stage in (StageKind.PLAN.value, StageKind.COMMIT.value):
        return stage
    return f"{stage}-{index:05d}"


def _previous_status(resource: Obj) -> MapReduceJobStatus:
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


def _is_true(status: MapReduceJobStatus, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in status.conditions)


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


# -- the reconcile ----------------------------------------------------------------------------
def reconcile(
    resource: Obj,
    jobs: Iterable[Obj],
    pods: Iterable[Obj],
    now: datetime,
    last_scaled: Mapping[str, datetime] | None = None,
) -> Outcome:
    """The actions and status for one ``MapReduceJob``, from what is observed now.

    Args:
        resource: the MapReduceJob (metadata, spec, status) as the API server returns it.
        jobs: the batch/v1 Jobs labelled with the resource's name; Jobs another resource of
            the same name owned (another uid) are told apart and never adopted.
        pods: the pods of those Jobs.
        now: the current time (aware, or naive UTC).
        last_scaled: when this controller last changed the parallelism of a Job, by Job
            name: covers an informer cache that has not seen the :data:`SCALED_AT`
            annotation yet. The annotation is the durable record.
    """
    return _Reconcile(resource, list(jobs), list(pods), now, last_scaled or {}).run()


@dataclass
class _Failure:
    reason: str
    message: str
    task: str | None = None
    attempt: str | None = None
    exit_code: int | None = None
    traceback: str | None = None
    log: str | None = None

    def status(self) -> FailureStatus:
        return FailureStatus(
            reason=self.reason[:128],
            task=self.task[:128] if self.task else None,
            attempt=self.attempt[:253] if self.attempt else None,
            exit_code=self.exit_code,
            message=self.message,
            traceback=self.traceback or None,
            log=self.log[:2048] if self.log else None,
        )

    def summary(self) -> str:
        head = f"{self.task}: " if self.task else ""
        return f"{head}{self.message}" if self.message else f"{head}{self.reason}"


@dataclass
class _Reconcile:
    resource: Obj
    jobs: list[Obj]
    pods: list[Obj]
    now: datetime
    last_scaled: Mapping[str, datetime]
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    timers: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.now = parse_time(self.now) or datetime.now(UTC)
        meta = self.resource.get("metadata") or {}
        self.meta = meta
        self.name = str(meta.get("name") or "")
        self.namespace = str(meta.get("namespace") or "")
        self.uid = str(meta.get("uid") or "")
        self.generation = meta.get("generation")
        self.prev = _previous_status(self.resource)
        self.status = self.prev.model_copy(deep=True)
        self.status.observed_generation = self.generation
        self.conditions: dict[str, Condition] = {c.type: c for c in self.prev.conditions}
        self.own: dict[str, Obj] = {}
        self.foreign: set[str] = set()
        for job in self.jobs:
            jmeta = job.get("metadata") or {}
            owners = {r.get("uid") for r in jmeta.get("ownerReferences") or []}
            if self.uid in owners or (jmeta.get("labels") or {}).get(LABEL_UID) == self.uid:
                self.own[str(jmeta.get("name"))] = job
            else:
                self.foreign.add(str(jmeta.get("name")))
        self.pod_views: dict[str, list[PodView]] = {}
        for pod in self.pods:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_UID) != self.uid:
                continue
            view = pod_view(pod)
            self.pod_views.setdefault(view.stage, []).append(view)
        for views in self.pod_views.values():
            views.sort(key=lambda v: v.name)
        self.queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)

    # -- the outline ---------------------------------------------------------------------
    def run(self) -> Outcome:
        if self.meta.get("deletionTimestamp"):
            return Outcome()  # the garbage collector removes what it owns
        if _is_true(self.prev, COMPLETE) or _is_true(self.prev, FAILED):
            return self.finished()
        if self.status.start_time is None:
            self.status.start_time = self.now
        try:
            spec = MapReduceJobSpec.model_validate(self.resource.get("spec") or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            return self.fail(_Failure(INVALID_SPEC, f"spec.{where}: {err['msg']}"), None)
        self.spec = spec
        work_url = spec.work_dir or default_work_dir(
            spec.output, self.namespace, self.name, self.uid
        )
        self.work_url = work_url
        if self.status.plan is None or self.status.plan.work_url != work_url:
            steps = self.status.plan.steps if self.status.plan else []
            self.status.plan = PlanSummary(steps=steps, work_url=work_url)

        shapes, failure = self.shapes()
        if failure is not None:
            return self.fail(failure, PLAN)
        stages = job_stages(shapes)
        observed = self.observe(stages)
        self.record_waves(stages)
        decision = decide(shapes, observed)

        deadline_failure = self.check_deadline(decision.action in ("done", "failed"))
        if deadline_failure is not None:
            return self.fail(deadline_failure, decision.stage)
        if decision.action == "failed":
            assert decision.stage is not None
            return self.fail(self.root_cause(decision.stage), decision.stage)
        if decision.action == "done":
            return self.succeed(shapes, observed)
        assert decision.stage is not None
        stage = decision.stage
        if stage is PLAN and decision.action == "wait" and self.plan_done():
            # The plan Job finished but its pod's report is not seen yet.
            failure = self.plan_missing()
            if failure is not None:
                return self.fail(failure, PLAN)
        if decision.action == "start":
            self.start(stage, shapes)
        else:
            failure = self.watch(stage, shapes)
            if failure is not None:
                return self.fail(failure, stage)
        return self.outcome(RESYNC_SECONDS)

    # -- the plan ------------------------------------------------------------------------
    def shapes(self) -> tuple[list[StepShape] | None, _Failure | None]:
        plan = self.status.plan
        if plan is not None and plan.steps:
            return plan_shapes(plan.steps), None
        if job_name(self.name, PLAN) not in self.own:
            return None, None
        for pod in self.pod_views.get(PLAN.name, []):
            msg = pod.message
            if pod.phase != "Succeeded" or not msg or msg.get("ok") is not True:
                continue
            try:
                steps = read_plan(msg)
            except ValueError as exc:
                return None, _Failure(INVALID_PLAN, str(exc), task="plan", attempt=pod.name)
            self.status.plan = PlanSummary(steps=steps, work_url=self.work_url)
            shapes = plan_shapes(steps)
            waves = [s for s in job_stages(shapes) if s.is_wave]
            tasks = sum(s.tasks for s in waves)
            self.event(
                "Normal",
                "Planned",
                f"{len(steps)} step(s), {len(waves)} wave(s), {tasks} task(s); "
                f"work dir {self.work_url}",
            )
            return shapes, None
        return None, None

    def plan_done(self) -> bool:
        job = self.own.get(job_name(self.name, PLAN))
        return job is not None and job_complete(job)

    def plan_missing(self) -> _Failure | None:
        job = self.own[job_name(self.name, PLAN)]
        done = parse_time((job.get("status") or {}).get("completionTime")) or self.now
        waited = _seconds(self.now - done)
        if waited < RESULT_GRACE_SECONDS:
            self.timers.append(max(1.0, min(2.0, RESULT_GRACE_SECONDS - waited)))
            return None
        return _Failure(
            PLAN_MISSING,
            "the plan pod succeeded but its termination message (the plan's shape) is not "
            "there: the pod was deleted, or the worker did not write one",
            task="plan",
        )

    # -- what the Jobs say ----------------------------------------------------------------
    def observe(self, stages: Sequence[Stage]) -> dict[str, StageState]:
        frozen = {w.job_name: w for w in self.prev.waves}
        observed: dict[str, StageState] = {}
        for stage in stages:
            name = job_name(self.name, stage)
            job = self.own.get(name)
            if job is not None:
                observed[stage.name] = stage_state(job)
                continue
            wave = frozen.get(name)
            if stage.kind is StageKind.PLAN and self.status.plan and self.status.plan.steps:
                observed[stage.name] = StageState(succeeded=1)  # its report is in the status
            elif wave is not None and wave.completion_time is not None:
                # The Job is gone (deleted, TTL) after its wave ended: its summary remains.
                observed[stage.name] = StageState(succeeded=wave.succeeded, failed=False)
            elif stage.tasks == 0:
                observed[stage.name] = StageState()  # nothing to run
        return observed

    def record_waves(self, stages: Sequence[Stage]) -> None:
        frozen = {w.job_name: w for w in self.prev.waves}
        waves: list[WaveStatus] = []
        for stage in stages:
            name = job_name(self.name, stage)
            before = frozen.get(name)
            job = self.own.get(name)
            if before is not None and (before.completion_time is not None or job is None):
                waves.append(before)
            elif job is not None:
                waves.append(self.wave_of(stage, job))
        self.status.waves = waves

    def wave_of(self, stage: Stage, job: Obj) -> WaveStatus:
        status = job.get("status") or {}
        end = parse_time(status.get("completionTime"))
        failed = job_failed(job)
        if end is None and failed is not None and failed.get("type") == "Failed":
            end = parse_time(failed.get("lastTransitionTime")) or self.now
        return WaveStatus(
            kind=stage.kind.value,
            step=stage.step if stage.step >= 0 else None,
            job_name=job_name(self.name, stage),
            total=stage.tasks,
            succeeded=min(count_indexes(status.get("completedIndexes")), stage.tasks),
            failed=int(status.get("failed") or 0),
            start_time=parse_time(status.get("startTime"))
            or parse_time((job.get("metadata") or {}).get("creationTimestamp")),
            completion_time=end,
        )

    def set_wave(self, wave: WaveStatus) -> None:
        waves = [w for w in self.status.waves if w.job_name != wave.job_name]
        waves.append(wave)
        order = {w.job_name: i for i, w in enumerate(self.status.waves)}
        waves.sort(key=lambda w: order.get(w.job_name, len(order)))
        self.status.waves = waves

    # -- starting a stage -----------------------------------------------------------------
    def start(self, stage: Stage, shapes: Sequence[StepShape] | None) -> None:
        name = job_name(self.name, stage)
        steps = len(shapes) if shapes else 1
        self.status.wave = stage.label(steps)
        self.status.progress = f"0/{stage.tasks}"
        self.set_phase_for(stage, running=False)
        self.suspended_condition()
        if name in self.foreign:
            # A Job of an earlier resource of the same name, not yet garbage-collected.
            self.status.workers = 0
            self.status.parallelism_reason = (
                f"waiting for the Job {name} of an earlier resource to be deleted"
            )
            self.timers.append(2.0)
            return
        parallelism, reason = self.initial_parallelism(stage)
        remaining = self.remaining_seconds()
        manifest = stage_job(
            self.resource,
            self.spec,
            stage,
            self.work_url,
            parallelism,
            active_deadline_seconds=math.ceil(remaining) if remaining is not None else None,
        )
        job_spec = manifest["spec"]
        if self.spec.suspend:
            manifest["metadata"].setdefault("annotations", {})[SUSPENDED] = "true"
        else:
            # Left out rather than false, so applying again never undoes a suspension
            # someone else (Kueue) made.
            job_spec.pop("suspend", None)
        self.actions.append(CreateJob(manifest))
        self.status.workers = 0 if self.spec.suspend else job_spec["parallelism"]
        self.status.parallelism_reason = "suspended" if self.spec.suspend else reason
        self.set_wave(
            WaveStatus(
                kind=stage.kind.value,
                step=stage.step if stage.step >= 0 else None,
                job_name=name,
                total=stage.tasks,
                start_time=self.now,
            )
        )
        self.event(
            "Normal", "StageStarted", f"started {stage.name}: Job {name}, {stage.tasks} task(s)"
        )

    def initial_parallelism(self, stage: Stage) -> tuple[int, str]:
        if not stage.is_wave:
            return 1, "one task"
        workers = self.spec.workers
        if self.queue:
            return min(stage.tasks, workers.max), f"admitted through Kueue queue {self.queue}"
        decision = scale(
            WaveLoad(total=stage.tasks, succeeded=0, active=0, ready=0),
            Workers(workers.min, workers.max, workers.max_pending),
            current=0,
            seconds_since_change=None,
        )
        return max(1, decision.parallelism), decision.reason

    # -- a running stage ------------------------------------------------------------------
    def watch(self, stage: Stage, shapes: Sequence[StepShape] | None) -> _Failure | None:
        name = job_name(self.name, stage)
        job = self.own.get(name)
        steps = len(shapes) if shapes else 1
        self.status.wave = stage.label(steps)
        if job is None:  # the wave ended and its Job is gone: nothing to watch
            self.set_phase_for(stage, running=True)
            return None
        state = stage_state(job)
        self.status.progress = f"{min(state.succeeded, stage.tasks)}/{stage.tasks}"
        views = [v for v in self.pod_views.get(stage.name, []) if not v.terminating]
        self.set_phase_for(stage, running=any(v.started or v.running for v in views))
        self.suspended_condition()
        job_spec = job.get("spec") or {}
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        current = int(job_spec.get("parallelism") or 0)
        suspended = bool(job_spec.get("suspend"))
        if self.spec.suspend:
            if not suspended or SUSPENDED not in annotations:
                self.actions.append(SuspendJob(name, True))
            self.status.workers = 0
            self.status.parallelism_reason = "suspended"
            self.capacity_conditions([], stage)
            return None
        if suspended:
            if SUSPENDED in annotations:
                self.actions.append(SuspendJob(name, False))
            else:
                self.status.workers = 0
                self.status.parallelism_reason = (
                    f"the Job is suspended by another controller (Kueue queue {self.queue})"
                    if self.queue
                    else "the Job is suspended by someone else than kubemr"
                )
                self.capacity_conditions([], stage)
                return None
        self.status.workers = current
        self.status.parallelism_reason = "one task" if not stage.is_wave else None
        if stage.is_wave:
            self.rescale(stage, job, views, state, current)
        self.capacity_conditions(views, stage)
        return self.pending_deadline(stage, job, views)

    def rescale(
        self, stage: Stage, job: Obj, views: list[PodView], state: StageState, current: int
    ) -> None:
        name = job_name(self.name, stage)
        if self.queue:
            self.status.parallelism_reason = (
                f"fixed while admitted through Kueue queue {self.queue}"
            )
            return
        status = job.get("status") or {}
        active = max(int(status.get("active") or 0), sum(1 for v in views if v.active))
        ready = sum(1 for v in views if v.ready)
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        changed_at = [
            t
            for t in (parse_time(annotations.get(SCALED_AT)), self.last_scaled.get(name))
            if t is not None
        ]
        since = _seconds(self.now - max(changed_at)) if changed_at else None
        workers = self.spec.workers
        decision = scale(
            WaveLoad(total=stage.tasks, succeeded=state.succeeded, active=active, ready=ready),
            Workers(workers.min, workers.max, workers.max_pending),
            current,
            since,
        )
        self.status.parallelism_reason = decision.reason[:256]
        if decision.retry_after is not None:
            self.timers.append(max(0.5, decision.retry_after))
        if decision.changed:
            self.actions.append(ScaleJob(name, decision.parallelism, format_time(self.now)))
            self.status.workers = decision.parallelism
            self.event(
                "Normal",
                "Scaled",
                f"{stage.name}: parallelism {current} -> {decision.parallelism} "
                f"({decision.reason})",
            )

    def capacity_conditions(self, views: list[PodView], stage: Stage) -> None:
        stuck = [v for v in views if v.phase == "Pending" and v.unschedulable_since is not None]
        long_stuck = [
            v
            for v in stuck
            if _seconds(self.now - v.unschedulable_since) >= CAPACITY_GRACE_SECONDS  # type: ignore[operator]
        ]
        for v in stuck:
            if v not in long_stuck:
                left = CAPACITY_GRACE_SECONDS - _seconds(self.now - v.unschedulable_since)  # type: ignore[operator]
                self.timers.append(max(0.5, left))
        if long_stuck:
            first = long_stuck[0]
            message = (
                f"{len(long_stuck)} worker pod(s) of {stage.name} cannot be scheduled: "
                f"{first.unschedulable_message or 'no node fits them'}"
            )
            if self.set_condition(CAPACITY, "True", "Unschedulable", message):
                self.event("Warning", CAPACITY, message)
        elif CAPACITY in self.conditions:
            self.set_condition(CAPACITY, "False", "PodsScheduled", "every worker pod was scheduled")
        blocked = [v for v in views if v.phase == "Pending" and v.blocked_reason]
        if blocked:
            first = blocked[0]
            reason = condition_reason(first.blocked_reason)
            message = f"pod {first.name}: {first.blocked_message or first.blocked_reason}"
            before = self.conditions.get(BLOCKED)
            self.set_condition(BLOCKED, "True", reason, message)
            if before is None or before.status != "True" or before.reason != reason:
                self.event("Warning", reason, message)
        elif BLOCKED in self.conditions:
            self.set_condition(BLOCKED, "False", "PodsStarting", "no worker pod is blocked")

    def pending_deadline(self, stage: Stage, job: Obj, views: list[PodView]) -> _Failure | None:
        deadline = self.spec.pending_deadline_seconds
        pending = [v for v in views if v.phase == "Pending"]
        if deadline is None or not pending or any(v.running for v in views):
            return None
        status = job.get("status") or {}
        since = parse_time(status.get("startTime")) or parse_time(
            (job.get("metadata") or {}).get("creationTimestamp")
        )
        ends = [v.finished for v in self.pod_views.get(stage.name, []) if v.finished is not None]
        moments = [t for t in (since, *ends) if t is not None]
        if not moments:
            return None
        waited = _seconds(self.now - max(moments))
        if waited < deadline:
            self.timers.append(max(0.5, deadline - waited))
            return None
        unschedulable = [v for v in pending if v.unschedulable_since is not None]
        blocked = [v for v in pending if v.blocked_reason]
        why = f"no worker pod of {stage.name} ran for {deadline}s (pendingDeadlineSeconds)"
        if unschedulable:
            return _Failure(
                UNSCHEDULABLE,
                f"{why}: {unschedulable[0].unschedulable_message or 'no node fits them'}",
                task=stage.name,
                attempt=unschedulable[0].name,
            )
        if blocked:
            return _Failure(
                condition_reason(blocked[0].blocked_reason),
                f"{why}: {blocked[0].blocked_message or blocked[0].blocked_reason}",
                task=stage.name,
                attempt=blocked[0].name,
            )
        return _Failure(PENDING_DEADLINE, why, task=stage.name, attempt=pending[0].name)

    # -- deadlines -----------------------------------------------------------------------
    def remaining_seconds(self) -> float | None:
        limit = self.spec.active_deadline_seconds
        if limit is None:
            return None
        start = self.status.start_time or self.now
        return limit - _seconds(self.now - parse_time(start))  # type: ignore[operator]

    def check_deadline(self, finished: bool) -> _Failure | None:
        remaining = self.remaining_seconds()
        if remaining is None or finished:
            return None
        if remaining > 0:
            self.timers.append(max(0.5, remaining))
            return None
        return _Failure(
            DEADLINE,
            f"the job ran longer than activeDeadlineSeconds={self.spec.active_deadline_seconds}",
        )

    # -- failure -------------------------------------------------------------------------
    def root_cause(self, stage: Stage) -> _Failure:
        job = self.own.get(job_name(self.name, stage)) or {}
        cond = job_failed(job) or {}
        job_reason = str(cond.get("reason") or "")
        job_message = str(cond.get("message") or "")
        if job_reason == "DeadlineExceeded":
            return _Failure(
                DEADLINE, job_message or "the stage's Job passed its deadline", stage.name
            )
        failed_indexes = parse_indexes((job.get("status") or {}).get("failedIndexes"))
        views = [
            v for v in self.pod_views.get(stage.name, []) if v.phase == "Failed" or v.exit_code
        ]

        def score(v: PodView) -> tuple[int, int, datetime]:
            msg = v.message
            if msg and msg.get("ok") is False:
                rank = 2 if msg.get("reason") != termination.INTERRUPTED else 1
            else:
                rank = 1 if v.exit_code not in (None, 0, termination.EXIT_TERMINATED) else 0
            indexed = 1 if v.index is not None and v.index in failed_indexes else 0
            return rank, indexed, v.finished or datetime.min.replace(tzinfo=UTC)

        best = max(views, key=score, default=None)
        if best is None or score(best)[0] == 0:
            message = (
                job_message or f"the Job of {stage.name} failed ({job_reason or 'no reason given'})"
            )
            index = min(failed_indexes) if failed_indexes else None
            return _Failure(TASK_FAILED, message, task_name(stage.name, index))
        attempts = sum(1 for v in views if v.index == best.index)
        msg = best.message or {}
        if msg.get("ok") is False:
            reason = str(msg.get("reason") or "") or _EXIT_REASONS.get(
                best.exit_code or -1, TASK_FAILED
            )
            message = str(msg.get("message") or "")
            trace = msg.get("traceback")
            index = msg.get("index") if isinstance(msg.get("index"), int) else best.index
            task = task_name(str(msg.get("stage") or stage.name), index)
            attempt = str(msg.get("attempt") or best.name)
            log = msg.get("log")
        else:
            reason = _EXIT_REASONS.get(best.exit_code or -1) or (
                condition_reason(best.terminated_reason, TASK_FAILED)
                if best.terminated_reason not in (None, "Error", "Completed")
                else TASK_FAILED
            )
            text = (best.text or "").strip()
            last = text.splitlines()[-1] if text else ""
            message = f"exit code {best.exit_code}" + (f": {last}" if last else "")
            trace = text or None
            task = task_name(stage.name, best.index)
            attempt = best.name
            log = None
        if attempts > 1 and message:
            message = f"{message} (after {attempts} attempts)"
        return _Failure(
            reason=reason,
            message=message or job_message,
            task=task,
            attempt=attempt,
            exit_code=best.exit_code,
            traceback=str(trace) if trace else None,
            log=str(log) if isinstance(log, str) and log else None,
        )

    def fail(self, failure: _Failure, stage: Stage | None) -> Outcome:
        # Stop whatever still runs; the Jobs are kept for `kubectl describe`.
        for name, job in sorted(self.own.items()):
            if job_complete(job) or job_failed(job) is not None:
                continue
            if not (job.get("spec") or {}).get("suspend"):
                self.actions.append(SuspendJob(name, True))
        for i, wave in enumerate(self.status.waves):
            if wave.completion_time is None:
                self.status.waves[i] = wave.model_copy(update={"completion_time": self.now})
        self.status.phase = "Failed"
        self.status.failure = failure.status()
        self.status.completion_time = self.now
        self.status.workers = 0
        self.status.parallelism_reason = None
        if stage is not None:
            current = next(
                (w for w in self.status.waves if w.job_name == job_name(self.name, stage)), None
            )
            if current is not None:
                steps = (
                    len(self.status.plan.steps)
                    if self.status.plan and self.status.plan.steps
                    else 1
                )
                self.status.wave = stage.label(steps)
                self.status.progress = f"{current.succeeded}/{current.total}"
        self.set_condition(
            FAILED, "True", condition_reason(failure.reason, "Failed"), failure.summary()
        )
        self.event(
            "Warning",
            condition_reason(failure.reason, "Failed"),
            f"job failed: {failure.summary()}",
        )
        return self.outcome(self.ttl_timer())

    # -- success -------------------------------------------------------------------------
    def succeed(
        self, shapes: Sequence[StepShape] | None, observed: Mapping[str, StageState]
    ) -> Outcome:
        commit = next((s for s in job_stages(shapes) if s.kind is StageKind.COMMIT), None)
        result: ResultSummary | None = None
        if commit is not None:
            for pod in self.pod_views.get(commit.name, []):
                msg = pod.message
                if pod.phase == "Succeeded" and msg and msg.get("ok") is True:
                    result = read_result(msg.get("result"))
                    break
            job = self.own.get(job_name(self.name, commit))
            if result is None and job is not None:
                ended = parse_time((job.get("status") or {}).get("completionTime")) or self.now
                waited = _seconds(self.now - ended)
                if waited < RESULT_GRACE_SECONDS:
                    # Give the pod's termination message a moment to be seen.
                    self.status.wave = commit.label(len(shapes) if shapes else 1)
                    self.status.progress = "1/1"
                    self.timers.append(max(0.5, min(2.0, RESULT_GRACE_SECONDS - waited)))
                    return self.outcome(None)
        done, total = progress(shapes, observed)
        for i, wave in enumerate(self.status.waves):
            if wave.completion_time is None:  # Complete is not on the Job yet: it ends now
                self.status.waves[i] = wave.model_copy(
                    update={"completion_time": self.now, "succeeded": wave.total}
                )
        self.status.phase = "Succeeded"
        self.status.result = result
        self.status.completion_time = self.now
        self.status.wave = None
        self.status.progress = f"{done}/{total}"
        self.status.workers = 0
        self.status.parallelism_reason = None
        self.status.failure = None
        for kind in (CAPACITY, BLOCKED, SUSPENDED_CONDITION):
            if kind in self.conditions and self.conditions[kind].status == "True":
                self.set_condition(kind, "False", "JobFinished", "the job finished")
        written = ""
        if result is not None:
            written = f": {result.records_in} records in, {result.records_out} out"
        message = f"{total} task(s) committed, output in {self.spec.output}{written}"
        self.set_condition(COMPLETE, "True", "Succeeded", message)
        self.event("Normal", "Succeeded", f"job succeeded: {message}")
        return self.outcome(self.ttl_timer())

    # -- after the end -------------------------------------------------------------------
    def ttl_timer(self) -> float | None:
        ttl = (self.resource.get("spec") or {}).get("ttlSecondsAfterFinished")
        end = parse_time(self.status.completion_time) if self.status.completion_time else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or end is None:
            return None
        left = ttl - _seconds(self.now - end)
        if left <= 0:
            self.actions.append(DeleteResource(f"ttlSecondsAfterFinished={ttl} passed"))
            return None
        return max(0.5, left)

    def finished(self) -> Outcome:
        """A finished job's status stays as it was written; only its TTL runs."""
        return self.outcome(self.ttl_timer())

    # -- status pieces -------------------------------------------------------------------
    def set_phase_for(self, stage: Stage, running: bool) -> None:
        if self.spec.suspend:
            self.status.phase = "Suspended"
        elif stage is PLAN or stage.kind is StageKind.PLAN:
            self.status.phase = (
                "Planning" if running or self.status.phase == "Planning" else "Pending"
            )
        else:
            self.status.phase = "Running"

    def suspended_condition(self) -> None:
        if self.spec.suspend:
            message = "spec.suspend is true: no worker pod runs; finished tasks stay done"
            if self.set_condition(SUSPENDED_CONDITION, "True", "Suspended", message):
                self.event("Normal", "Suspended", message)
        elif SUSPENDED_CONDITION in self.conditions:
            was = self.conditions[SUSPENDED_CONDITION].status == "True"
            self.set_condition(SUSPENDED_CONDITION, "False", "Resumed", "spec.suspend is false")
            if was:
                self.event("Normal", "Resumed", "spec.suspend is false: the job runs again")

    def set_condition(self, kind: str, status: str, reason: str, message: str) -> bool:
        """Set a condition; its lastTransitionTime moves only when its status does.
        Returns whether it moved (or is new)."""
        before = self.conditions.get(kind)
        moved = before is None or before.status != status
        self.conditions[kind] = Condition(
            type=kind,
            status=status,  # type: ignore[arg-type]
            observed_generation=self.generation,
            last_transition_time=self.now
            if moved or before is None
            else before.last_transition_time,
            reason=reason,
            message=message,
        )
        return moved

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(
            Event(kind, condition_reason(reason, "Info"), _cut(message, MAX_EVENT_MESSAGE))
        )

    def outcome(self, requeue: float | None) -> Outcome:
        order = [c.type for c in self.prev.conditions]
        order += [k for k in self.conditions if k not in order]
        conditions = [self.conditions[k] for k in order]
        if len(conditions) > MAX_CONDITIONS:
            ours = {COMPLETE, FAILED, SUSPENDED_CONDITION, CAPACITY, BLOCKED}
            extra = [c for c in conditions if c.type not in ours]
            drop = {c.type for c in extra[: len(conditions) - MAX_CONDITIONS]}
            conditions = [c for c in conditions if c.type not in drop]
        self.status.conditions = conditions
        timers = [t for t in (*self.timers, requeue) if t is not None]
        return Outcome(
            actions=(*self.actions, *self.events),
            status=self.status.to_resource(),
            requeue_after=round(min(timers), 3) if timers else None,
        )


def event_name(resource: Obj, event: Event) -> str:
    """A deterministic name for an Event: the same fact about the same resource is one
    Event however many reconciles report it."""
    meta = resource.get("metadata") or {}
    digest = hashlib.sha256(
        "\0".join((str(meta.get("uid")), event.type, event.reason, event.message)).encode()
    ).hexdigest()[:16]
    return f"{meta.get('name')}.{digest}"
