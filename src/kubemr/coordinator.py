"""The job's state machine, pure: which stage runs next, given what has finished.

A job is a sequence of stages: ``plan``, then per step a ``map`` wave and (unless the
step is map-only) a ``reduce`` wave, then ``commit``. Both executors drive it: the local
runner runs each stage on its process pool as the decision comes; the Kubernetes
controller turns each stage into one Job and derives the decision from the Jobs it
observes, so a restarted controller arrives at the same decision.

Task counts: the plan stage learns the first step's map count (the splits) and every
step's reducer count. A later step has one map task per output of the wave before it
(its reducers, or its map tasks when that step is map-only), so the whole sequence is
known once the plan stage has finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class StageKind(StrEnum):
    PLAN = "plan"
    MAP = "map"
    REDUCE = "reduce"
    COMMIT = "commit"


@dataclass(frozen=True)
class StepShape:
    """What the plan stage decided for one step."""

    maps: int  # only the first step's count comes from the plan; later ones derive
    reducers: int  # 0: map-only


@dataclass(frozen=True)
class Stage:
    kind: StageKind
    step: int  # -1 for plan and commit
    tasks: int

    @property
    def name(self) -> str:
        """A short DNS-safe name, unique within a job: ``plan``, ``map-0``, ``commit``."""
        if self.step < 0:
            return self.kind.value
        return f"{self.kind.value}-{self.step}"

    def label(self, steps: int) -> str:
        """How the stage is named to users: ``map``, ``step 2/3 reduce``."""
        if self.step < 0 or steps <= 1:
            return self.kind.value
        return f"step {self.step + 1}/{steps} {self.kind.value}"

    @property
    def is_wave(self) -> bool:
        return self.kind in (StageKind.MAP, StageKind.REDUCE)


PLAN = Stage(StageKind.PLAN, -1, 1)
COMMIT = Stage(StageKind.COMMIT, -1, 1)


def step_map_counts(shapes: Sequence[StepShape]) -> list[int]:
    """Map tasks per step: the plan's count for the first, one per output of the wave
    before for the others."""
    counts: list[int] = []
    for i, shape in enumerate(shapes):
        if i == 0:
            counts.append(shape.maps)
        else:
            before = shapes[i - 1]
            counts.append(before.reducers if before.reducers > 0 else counts[i - 1])
    return counts


def job_stages(shapes: Sequence[StepShape] | None) -> list[Stage]:
    """Every stage of the job; before planning, only the plan stage is known."""
    if shapes is None:
        return [PLAN]
    stages = [PLAN]
    for i, (shape, maps) in enumerate(zip(shapes, step_map_counts(shapes))):
        stages.append(Stage(StageKind.MAP, i, maps))
        if shape.reducers > 0:
            stages.append(Stage(StageKind.REDUCE, i, shape.reducers))
    stages.append(COMMIT)
    return stages


@dataclass(frozen=True)
class StageState:
    """What an executor observed of one stage."""

    succeeded: int = 0  # tasks done
    failed: bool = False  # the stage cannot complete any more
    suspended: bool = False


@dataclass(frozen=True)
class Decision:
    """What to do next: ``start`` a stage, ``wait`` for the running one, or the job is
    ``done`` (every stage succeeded) or ``failed`` (at ``stage``)."""

    action: str  # "start" | "wait" | "done" | "failed"
    stage: Stage | None = None

    @classmethod
    def start(cls, stage: Stage) -> Decision:
        return cls("start", stage)

    @classmethod
    def wait(cls, stage: Stage) -> Decision:
        return cls("wait", stage)


DONE = Decision("done")


def decide(shapes: Sequence[StepShape] | None, observed: Mapping[str, StageState]) -> Decision:
    """The next action, from the plan's shapes (``None`` before planning) and the
    stages observed so far (by stage name; a stage not started is absent).

    Stages run strictly in order: a stage starts only when all before it succeeded.
    """
    for stage in job_stages(shapes):
        state = observed.get(stage.name)
        if state is None:
            return Decision.start(stage)
        if state.failed:
            return Decision("failed", stage)
        if state.succeeded < stage.tasks:
            return Decision.wait(stage)
    if shapes is None:  # the plan finished but its result is not known yet
        return Decision.wait(PLAN)
    return DONE


def progress(
    shapes: Sequence[StepShape] | None, observed: Mapping[str, StageState]
) -> tuple[int, int]:
    """Tasks done and tasks in all over the waves known so far (plan and commit not
    counted: users think in map and reduce tasks)."""
    done = total = 0
    for stage in job_stages(shapes):
        if not stage.is_wave:
            continue
        total += stage.tasks
        state = observed.get(stage.name)
        if state is not None:
            done += min(state.succeeded, stage.tasks)
    return done, total
