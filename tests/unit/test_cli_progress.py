"""Progress and outcomes of a job on a cluster, from its status alone: pure."""

from __future__ import annotations

from typing import Any

from kubemr.cli.live import StatusLines, StatusProgress, wave_note, wave_states
from kubemr.cli.views import failure_lines, outcome, progress_line, success_line, wave_label


def wave(kind: str, total: int, done: int, step: int | None = None, ended: bool = False,
         failed: int = 0) -> dict[str, Any]:  # fmt: skip
    found: dict[str, Any] = {
        "kind": kind,
        "jobName": f"wc-{kind}" + (f"-{step}" if step is not None else ""),
        "total": total,
        "succeeded": done,
        "failed": failed,
        "startTime": "2026-05-01T12:00:00Z",
    }
    if step is not None:
        found["step"] = step
    if ended:
        found["completionTime"] = "2026-05-01T12:00:05Z"
    return found


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "wc"}, "spec": {"output": "s3://b/out"}, "status": status}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def wave_started(self, name: str, tasks: int, total_bytes: int) -> None:
        self.events.append(("start", name, tasks))

    def wave_progress(self, done: int, total: int, note: str) -> None:
        self.events.append(("progress", done, total, note))

    def wave_finished(self) -> None:
        self.events.append(("finish",))

    def close(self) -> None:
        self.events.append(("close",))


def test_wave_states_and_labels() -> None:
    status = {
        "plan": {"steps": [{"maps": 3, "reducers": 1}, {"maps": 1, "reducers": 1}]},
        "waves": [wave("plan", 1, 1, ended=True), wave("map", 3, 1, step=1)],
    }
    states = wave_states(status)
    assert [s.label for s in states] == ["plan", "step 2/2 map"]
    assert states[0].finished and not states[1].finished
    assert (states[1].total, states[1].done) == (3, 1)
    assert wave_label({"kind": "map", "step": 0}, 1) == "map"


def test_bars_follow_the_waves_as_the_statuses_come() -> None:
    rec = Recorder()
    progress = StatusProgress(rec)
    progress.update(job(phase="Pending"))
    progress.update(job(phase="Planning", workers=1, waves=[wave("plan", 1, 0)]))
    progress.update(
        job(
            phase="Running",
            workers=3,
            waves=[wave("plan", 1, 1, ended=True), wave("map", 3, 1, step=0)],
        )
    )
    progress.update(
        job(phase="Running", workers=2,
            waves=[wave("plan", 1, 1, ended=True), wave("map", 3, 2, step=0, failed=1)])
    )  # fmt: skip
    progress.update(
        job(phase="Succeeded", conditions=[{"type": "Complete", "status": "True"}],
            waves=[wave("plan", 1, 1, ended=True), wave("map", 3, 3, step=0, ended=True, failed=1)])
    )  # fmt: skip
    progress.close()
    progress.close()  # once is enough
    assert rec.events == [
        ("start", "plan", 1),
        ("progress", 0, 1, "1 worker"),
        ("progress", 1, 1, ""),
        ("progress", 1, 1, ""),
        ("finish",),
        ("start", "map", 3),
        ("progress", 1, 3, "3 workers"),
        ("progress", 2, 3, "2 workers, 1 failed"),
        ("progress", 3, 3, "1 failed"),
        ("progress", 3, 3, "1 failed"),
        ("finish",),
        ("close",),
    ]


def test_waves_that_ended_before_the_first_look_are_shown_once() -> None:
    rec = Recorder()
    progress = StatusProgress(rec)
    status = {"waves": [wave("plan", 1, 1, ended=True), wave("map", 2, 1, step=0)], "workers": 2}
    progress.update(job(**status))
    progress.update(job(**status))
    assert [e for e in rec.events if e[0] == "start"] == [("start", "plan", 1), ("start", "map", 2)]


def test_lines_for_logs_that_are_not_a_terminal() -> None:
    written: list[str] = []
    lines = StatusLines("wc", written.append)
    lines.update(job(phase="Running", wave="map", progress="1/3", workers=3))
    lines.update(job(phase="Running", wave="map", progress="1/3", workers=3))  # no change
    lines.update(job(phase="Running", wave="map", progress="2/3", workers=1,
                     waves=[wave("map", 3, 2, step=0, failed=2)]))  # fmt: skip
    assert written == [
        "kubemr: wc: Running: map 1/3, 3 workers",
        "kubemr: wc: Running: map 2/3, 1 worker, 2 failed attempts",
    ]
    assert wave_note(None, 0) == ""


def test_outcome_reads_conditions_first() -> None:
    assert outcome(job(phase="Running")) is None
    assert outcome(job(phase="Succeeded")) == "succeeded"
    complete = {"type": "Complete", "status": "True"}
    assert outcome(job(phase="Running", conditions=[complete])) == "succeeded"
    failed = {"type": "Failed", "status": "True"}
    assert outcome(job(conditions=[{"type": "Failed", "status": "False"}])) is None
    assert outcome(job(conditions=[failed])) == "failed"
    assert progress_line(job()) == "Pending"


def test_the_root_cause_of_a_failure() -> None:
    resource = job(
        phase="Failed",
        failure={
            "reason": "UserCodeError",
            "task": "map-0-00003",
            "attempt": "wc-map-0-3-abcde",
            "exitCode": 1,
            "message": "mapper raised ZeroDivisionError: boom (after 3 attempts)",
            "traceback": "Traceback (most recent call last):\n"
            + "".join(f'  File "job.py", line {i}\n' for i in range(20))
            + "ZeroDivisionError: boom\n",
            "log": "s3://b/_kubemr/ns/wc/u/logs/map-0/00003/wc-map-0-3-abcde.log",
        },
    )
    lines = failure_lines(resource, " -n team-a")
    assert lines[0] == (
        "kubemr: wc failed: UserCodeError in task map-0-00003 "
        "(attempt wc-map-0-3-abcde, exit code 1)"
    )
    assert lines[1] == "kubemr: mapper raised ZeroDivisionError: boom (after 3 attempts)"
    assert lines[-2] == "  ZeroDivisionError: boom"
    assert len([line for line in lines if line.startswith("  ")]) == 12  # the tail
    assert lines[-1] == (
        "kubemr: the attempt's log: s3://b/_kubemr/ns/wc/u/logs/map-0/00003/wc-map-0-3-abcde.log "
        "(kubemr logs wc -n team-a --task map-0-00003)"
    )
    cancelled = job(phase="Failed", failure={"reason": "Cancelled", "message": "spec.cancel"})
    assert failure_lines(cancelled) == ["kubemr: wc was cancelled", "kubemr: spec.cancel"]


def test_the_summary_of_a_success() -> None:
    resource = job(
        phase="Succeeded",
        startTime="2026-05-01T12:00:00Z",
        completionTime="2026-05-01T12:01:05Z",
        result={"recordsIn": 1500, "bytesIn": 2048, "recordsOut": 3, "filesOut": 2, "bytesOut": 30},
    )
    assert success_line(resource) == (
        "kubemr: wc succeeded in 1m05s: 1,500 records (2.0 KiB) in, 3 records in 2 files "
        "(30 B) out -> s3://b/out"
    )
