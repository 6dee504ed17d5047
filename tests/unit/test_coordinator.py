"""The job state machine: stages, task counts and decisions."""

from __future__ import annotations

from kubemr.coordinator import (
    COMMIT,
    DONE,
    PLAN,
    Stage,
    StageKind,
    StageState,
    StepShape,
    decide,
    job_stages,
    progress,
    step_map_counts,
)


def test_stages_of_a_multi_step_job_derive_later_map_counts() -> None:
    shapes = [StepShape(7, 3), StepShape(0, 0), StepShape(0, 2)]
    assert step_map_counts(shapes) == [7, 3, 3]
    assert [s.name for s in job_stages(shapes)] == [
        "plan",
        "map-0",
        "reduce-0",
        "map-1",
        "map-2",
        "reduce-2",
        "commit",
    ]
    assert [s.tasks for s in job_stages(shapes)] == [1, 7, 3, 3, 3, 2, 1]
    assert job_stages(None) == [PLAN]


def test_labels() -> None:
    assert Stage(StageKind.MAP, 0, 4).label(1) == "map"
    assert Stage(StageKind.REDUCE, 1, 4).label(3) == "step 2/3 reduce"
    assert COMMIT.label(3) == "commit"


def test_decisions_walk_the_stages_in_order() -> None:
    shapes = [StepShape(2, 1)]
    assert decide(None, {}) == Decision_start("plan")
    assert decide(None, {"plan": StageState(0)}).action == "wait"
    # The plan finished, its shapes not read yet: wait, never skip ahead.
    assert decide(None, {"plan": StageState(1)}).action == "wait"
    seen = {"plan": StageState(1)}
    assert decide(shapes, seen) == Decision_start("map-0", shapes)
    seen["map-0"] = StageState(1)
    assert decide(shapes, seen).action == "wait"
    seen["map-0"] = StageState(2)
    assert decide(shapes, seen) == Decision_start("reduce-0", shapes)
    seen["reduce-0"] = StageState(1)
    assert decide(shapes, seen) == Decision_start("commit", shapes)
    seen["commit"] = StageState(1)
    assert decide(shapes, seen) == DONE


def test_a_failed_stage_fails_the_job_and_nothing_after_it_starts() -> None:
    shapes = [StepShape(2, 1)]
    seen = {"plan": StageState(1), "map-0": StageState(1, failed=True)}
    decision = decide(shapes, seen)
    assert decision.action == "failed" and decision.stage is not None
    assert decision.stage.name == "map-0"


def test_progress_counts_wave_tasks_only() -> None:
    shapes = [StepShape(4, 2)]
    seen = {"plan": StageState(1), "map-0": StageState(3)}
    assert progress(shapes, seen) == (3, 6)
    assert progress(None, {}) == (0, 0)


def Decision_start(name: str, shapes: list[StepShape] | None = None):
    from kubemr.coordinator import Decision

    stage = next(s for s in job_stages(shapes) if s.name == name)
    return Decision.start(stage)
