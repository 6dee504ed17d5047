"""One reconcile of a ``MapReduceJob``, pure: what is observed now -> actions and status.

The controller calls :func:`reconcile` with the resource, the batch/v1 Jobs it owns and
their pods, all as the API server's JSON dicts, and the current time. Nothing else is
remembered between calls: the stages' progress comes from the Jobs (found under their
deterministic names, :func:`kubemr.executors.k8s.manifests.job_name`), the plan's shape and
the job's result from the pods' termination messages (:mod:`kubemr.termination`), and what
must outlive the Jobs (the plan's shape, the frozen waves, the terminal state) from the
resource's own status. So a controller restarted at any moment, or two reconciles of the
same observations, arrive at the same actions. (What a pod says is read once per
resourceVersion and remembered, :class:`~kubemr.controller.observed.ViewCache`: the same
content gives the same view, so that changes nothing of the above; it only spares reading a
wave's thousands of finished pods on every call.)

This module is the state machine: which stage to start, watch, fail or finish. Its parts
live beside it:

- :mod:`~kubemr.controller.actions`: what a reconcile asks for (:class:`Outcome`);
- :mod:`~kubemr.controller.observed`: reading the resource, Jobs, pods and reports;
- :mod:`~kubemr.controller.waves`: the stages' progress and the status' wave summaries;
- :mod:`~kubemr.controller.parallelism`: the scaling policy applied to a running wave;
- :mod:`~kubemr.controller.diagnosis`: the root cause of a failure;
- :mod:`~kubemr.controller.conditions`: the status conditions.

Example:
    outcome = reconcile(resource, jobs, pods, datetime.now(UTC))
    for action in outcome.actions:
        ...  # CreateJob -> apply the manifest; ScaleJob -> patch parallelism; ...
    ...  # then write outcome.status, then the Events, then requeue after
    ...  # outcome.requeue_after seconds
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from kubemr.controller import waves
from kubemr.controller.actions import (
    SUSPENDED,
    Action,
    CreateJob,
    DeleteResource,
    Event,
    Outcome,
    ScaleJob,
    SuspendJob,
)
from kubemr.controller.conditions import (
    BLOCKED,
    CAPACITY,
    COMPLETE,
    FAILED,
    SUSPENDED_CONDITION,
    Conditions,
    condition_reason,
    is_true,
)
from kubemr.controller.diagnosis import (
    CANCELLED,
    INVALID_PLAN,
    INVALID_SPEC,
    PLAN_MISSING,
    Failure,
    deadline_cause,
    pending_cause,
    root_cause,
    unschedulable,
)
from kubemr.controller.observed import (
    Obj,
    PodView,
    StagePods,
    ViewCache,
    format_time,
    job_complete,
    job_failed,
    owned_jobs,
    parse_time,
    plan_shapes,
    previous_status,
    read_plan,
    read_result,
    reported,
    seconds,
    stage_state,
)
from kubemr.controller.parallelism import initial_parallelism, rescaling
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
    KUEUE_QUEUE_LABEL,
    job_name,
    stage_job,
)
from kubemr.spec import (
    JobDefaults,
    MapReduceJobSpec,
    PlanSummary,
    ResultSummary,
    WaveStatus,
    default_work_dir,
)

RESULT_GRACE_SECONDS = 30.0
"""How long to wait for a finished plan or commit pod's termination message to be seen."""
RESYNC_SECONDS = 60.0
"""Requeue of a running job without any event: a safety net, events drive the rest."""
MAX_EVENT_MESSAGE = 1024


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reconcile(
    resource: Obj,
    jobs: Iterable[Obj],
    pods: Iterable[Obj],
    now: datetime,
    last_scaled: Mapping[str, datetime] | None = None,
    defaults: JobDefaults | None = None,
    views: ViewCache | None = None,
) -> Outcome:
    """The actions and status for one ``MapReduceJob``, from what is observed now.

    Args:
        resource: the MapReduceJob (metadata, spec, status) as the API server returns it.
        jobs: the batch/v1 Jobs labelled with the resource's name; Jobs another resource of
            the same name owned (another uid) are told apart and never adopted.
        pods: the pods of those Jobs.
        now: the current time (aware, or naive UTC).
        last_scaled: when this controller last changed the parallelism of a Job, by Job
            name: covers an informer cache that has not seen the
            :data:`~kubemr.controller.actions.SCALED_AT` annotation yet. The annotation
            is the durable record.
        defaults: the installation's job defaults, filled in where the spec is silent.
        views: where the pods read are remembered, by uid and resourceVersion, which
            name one content of one pod (:data:`~kubemr.controller.observed.VIEWS`, the
            process's, by default); a pod without both is read each time.
    """
    return _Reconcile(
        resource,
        list(jobs),
        list(pods),
        now,
        last_scaled or {},
        defaults or JobDefaults(),
        views,
    ).run()


@dataclass
class _Reconcile:
    resource: Obj
    jobs: list[Obj]
    pods: list[Obj]
    now: datetime
    last_scaled: Mapping[str, datetime]
    defaults: JobDefaults
    views: ViewCache | None = None
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
        self.prev = previous_status(self.resource)
        self.status = self.prev.model_copy(deep=True)
        self.status.observed_generation = self.generation
        self.conditions = Conditions(self.prev.conditions, self.generation, self.now)
        self.own, self.foreign = owned_jobs(self.jobs, self.uid)
        self.pod_views = StagePods(self.pods, self.uid, self.views)
        self.queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)

    # -- the outline ---------------------------------------------------------------------
    def run(self) -> Outcome:
        if self.meta.get("deletionTimestamp"):
            return Outcome()  # the garbage collector removes what it owns
        if is_true(self.prev, COMPLETE) or is_true(self.prev, FAILED):
            return self.finished()
        if self.status.start_time is None:
            self.status.start_time = self.now
        try:
            spec = MapReduceJobSpec.model_validate(self.resource.get("spec") or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            return self.fail(Failure(INVALID_SPEC, f"spec.{where}: {err['msg']}"), None)
        spec = self.spec = self.defaults.apply(spec)
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
        observed = waves.observe(
            self.name,
            stages,
            self.own,
            self.prev.waves,
            planned=bool(self.status.plan and self.status.plan.steps),
        )
        self.status.waves = waves.record_waves(
            self.name, stages, self.own, self.prev.waves, self.now
        )
        decision = decide(shapes, observed)
        if spec.cancel and decision.action != "done":
            cancelled = Failure(CANCELLED, "spec.cancel is true: the job was stopped")
            return self.fail(cancelled, decision.stage)

        deadline_failure = self.check_deadline(
            decision.action in ("done", "failed"), decision.stage
        )
        if deadline_failure is not None:
            return self.fail(deadline_failure, decision.stage)
        if decision.action == "failed":
            assert decision.stage is not None
            return self.fail(self.stage_failure(decision.stage), decision.stage)
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
    def shapes(self) -> tuple[list[StepShape] | None, Failure | None]:
        plan = self.status.plan
        if plan is not None and plan.steps:
            return plan_shapes(plan.steps), None
        if job_name(self.name, PLAN) not in self.own:
            return None, None
        report = reported(self.pod_views.get(PLAN.name, []))
        if report is None:
            return None, None
        pod, msg = report
        try:
            steps = read_plan(msg)
        except ValueError as exc:
            return None, Failure(INVALID_PLAN, str(exc), task="plan", attempt=pod.name)
        self.status.plan = PlanSummary(steps=steps, work_url=self.work_url)
        shapes = plan_shapes(steps)
        wave_stages = [s for s in job_stages(shapes) if s.is_wave]
        tasks = sum(s.tasks for s in wave_stages)
        self.event(
            "Normal",
            "Planned",
            f"{len(steps)} step(s), {len(wave_stages)} wave(s), {tasks} task(s); "
            f"work dir {self.work_url}",
        )
        return shapes, None

    def plan_done(self) -> bool:
        job = self.own.get(job_name(self.name, PLAN))
        return job is not None and job_complete(job)

    def plan_missing(self) -> Failure | None:
        job = self.own[job_name(self.name, PLAN)]
        done = parse_time((job.get("status") or {}).get("completionTime")) or self.now
        waited = seconds(self.now - done)
        if waited < RESULT_GRACE_SECONDS:
            self.timers.append(max(1.0, min(2.0, RESULT_GRACE_SECONDS - waited)))
            return None
        return Failure(
            PLAN_MISSING,
            "the plan pod succeeded but its termination message (the plan's shape) is not "
            "there: the pod was deleted, or the worker did not write one",
            task="plan",
        )

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
        parallelism, reason = initial_parallelism(stage, self.spec.workers, self.queue)
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
        self.status.waves = waves.with_wave(
            self.status.waves,
            WaveStatus(
                kind=stage.kind.value,
                step=stage.step if stage.step >= 0 else None,
                job_name=name,
                total=stage.tasks,
                start_time=self.now,
            ),
        )
        self.event(
            "Normal", "StageStarted", f"started {stage.name}: Job {name}, {stage.tasks} task(s)"
        )

    # -- a running stage ------------------------------------------------------------------
    def watch(self, stage: Stage, shapes: Sequence[StepShape] | None) -> Failure | None:
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
        decision = rescaling(
            stage,
            job,
            views,
            state.succeeded,
            current,
            self.spec.workers,
            self.now,
            self.last_scaled.get(name),
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
        long_stuck, waits = unschedulable(views, self.now)
        self.timers.extend(waits)
        if long_stuck:
            first = long_stuck[0]
            message = (
                f"{len(long_stuck)} worker pod(s) of {stage.name} cannot be scheduled: "
                f"{first.unschedulable_message or 'no node fits them'}"
            )
            if self.conditions.set(CAPACITY, "True", "Unschedulable", message):
                self.event("Warning", CAPACITY, message)
        elif CAPACITY in self.conditions:
            self.conditions.set(
                CAPACITY, "False", "PodsScheduled", "every worker pod was scheduled"
            )
        blocked = [v for v in views if v.phase == "Pending" and v.blocked_reason]
        if blocked:
            first = blocked[0]
            reason = condition_reason(first.blocked_reason)
            message = f"pod {first.name}: {first.blocked_message or first.blocked_reason}"
            before = self.conditions.get(BLOCKED)
            self.conditions.set(BLOCKED, "True", reason, message)
            if before is None or before.status != "True" or before.reason != reason:
                self.event("Warning", reason, message)
        elif BLOCKED in self.conditions:
            self.conditions.set(BLOCKED, "False", "PodsStarting", "no worker pod is blocked")

    def pending_deadline(self, stage: Stage, job: Obj, views: list[PodView]) -> Failure | None:
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
        waited = seconds(self.now - max(moments))
        if waited < deadline:
            self.timers.append(max(0.5, deadline - waited))
            return None
        return pending_cause(stage, deadline, pending)

    # -- deadlines -----------------------------------------------------------------------
    def remaining_seconds(self) -> float | None:
        limit = self.spec.active_deadline_seconds
        if limit is None:
            return None
        start = self.status.start_time or self.now
        return limit - seconds(self.now - parse_time(start))  # type: ignore[operator]

    def check_deadline(self, finished: bool, stage: Stage | None) -> Failure | None:
        remaining = self.remaining_seconds()
        if remaining is None or finished:
            return None
        if remaining > 0:
            self.timers.append(max(0.5, remaining))
            return None
        job = self.own.get(job_name(self.name, stage)) if stage is not None else None
        pods = self.pod_views.get(stage.name, []) if stage is not None else []
        return deadline_cause(
            self.spec.active_deadline_seconds, stage, job or {}, pods, resource=self.name
        )

    # -- failure -------------------------------------------------------------------------
    def stage_failure(self, stage: Stage) -> Failure:
        job = self.own.get(job_name(self.name, stage)) or {}
        return root_cause(
            stage, job, self.pod_views.get(stage.name, []), self.spec.active_deadline_seconds
        )

    def fail(self, failure: Failure, stage: Stage | None) -> Outcome:
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
        self.conditions.set(
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
            report = reported(self.pod_views.get(commit.name, []))
            if report is not None:
                result = read_result(report[1].get("result"))
            job = self.own.get(job_name(self.name, commit))
            if result is None and job is not None:
                ended = parse_time((job.get("status") or {}).get("completionTime")) or self.now
                waited = seconds(self.now - ended)
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
            cond = self.conditions.get(kind)
            if cond is not None and cond.status == "True":
                self.conditions.set(kind, "False", "JobFinished", "the job finished")
        written = ""
        if result is not None:
            written = f": {result.records_in} records in, {result.records_out} out"
        message = f"{total} task(s) committed, output in {self.spec.output}{written}"
        self.conditions.set(COMPLETE, "True", "Succeeded", message)
        self.event("Normal", "Succeeded", f"job succeeded: {message}")
        return self.outcome(self.ttl_timer())

    # -- after the end -------------------------------------------------------------------
    def ttl_timer(self) -> float | None:
        ttl = (self.resource.get("spec") or {}).get("ttlSecondsAfterFinished")
        end = parse_time(self.status.completion_time) if self.status.completion_time else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or end is None:
            return None
        left = ttl - seconds(self.now - end)
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
            if self.conditions.set(SUSPENDED_CONDITION, "True", "Suspended", message):
                self.event("Normal", "Suspended", message)
        elif SUSPENDED_CONDITION in self.conditions:
            before = self.conditions.get(SUSPENDED_CONDITION)
            was = before is not None and before.status == "True"
            self.conditions.set(SUSPENDED_CONDITION, "False", "Resumed", "spec.suspend is false")
            if was:
                self.event("Normal", "Resumed", "spec.suspend is false: the job runs again")

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(
            Event(kind, condition_reason(reason, "Info"), _cut(message, MAX_EVENT_MESSAGE))
        )

    def outcome(self, requeue: float | None) -> Outcome:
        self.status.conditions = self.conditions.listing()
        timers = [t for t in (*self.timers, requeue) if t is not None]
        return Outcome(
            actions=(*self.actions, *self.events),
            status=self.status.to_resource(),
            requeue_after=round(min(timers), 3) if timers else None,
        )
