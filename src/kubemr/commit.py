"""The work dir as the source of truth: which attempt of each task counts, and the job's
commit.

Every task attempt writes its output under an attempt-scoped name and then a commit
marker (``steps/<s>/tasks/<wave>-<n>/<attempt>.json``, the attempt's result with its
counters and storage statistics) or a failure marker (``<attempt>.failed.json``). Readers
trust only committed attempts, and pick one per task the same way everywhere:

- the reduce wave reads the chosen map attempts from ``map-outputs.json``, written once by
  whichever reducer gets there first (``create_exclusive``), so every reducer reads the
  same attempt of every map task even when a late duplicate commits meanwhile;
- a later step's map task reads the chosen output of the task with its index in the
  wave before;
- the commit stage sums counters and statistics over the chosen attempts only, moves the
  chosen part files into the output, writes the job report (``_REPORT.json``, every
  attempt's record: :mod:`kubemr.report.records`) and then ``_SUCCESS``, last.

The local runner and the Kubernetes commit pod both call :func:`commit_job`.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from kubemr import storage
from kubemr.errors import JobFailed, TaskFailure
from kubemr.output import OutputClaim, publish
from kubemr.plan import Plan
from kubemr.report.records import WaveMarkers, epoch, job_report, report_summary
from kubemr.results import MAP, REDUCE, TaskResult
from kubemr.storage import StorageOptions

FAILED_SUFFIX = ".failed.json"


class MissingCommit(RuntimeError):
    """A task has no committed attempt where one must exist (retryable: the wave that
    made it may still be finishing, or its data was lost)."""


def _task_dir(plan: Plan, step: int, wave: str) -> str:
    return plan.url(f"steps/{step}/tasks/")


def list_markers(
    plan: Plan, step: int, wave: str, options: StorageOptions
) -> tuple[dict[int, list[TaskResult]], list[dict[str, Any]]]:
    """Committed results by task index, and the failure markers, of one wave (each with
    its step, wave, index and attempt, which older markers only had in their name)."""
    prefix = _task_dir(plan, step, wave)
    store = storage.store_for(prefix, options)
    committed: dict[int, list[TaskResult]] = {}
    failed: list[dict[str, Any]] = []
    for info in store.list(prefix):
        rel = info.url[len(prefix) :]
        task, _, name = rel.partition("/")
        kind, _, index = task.rpartition("-")
        if kind != wave or not index.isdigit() or "/" in name or not name.endswith(".json"):
            continue
        data = json.loads(storage.read_bytes(info.url, options))
        if name.endswith(FAILED_SUFFIX):
            data.setdefault("step", step)
            data.setdefault("wave", wave)
            data.setdefault("index", int(index))
            data.setdefault("attempt", name[: -len(FAILED_SUFFIX)])
            failed.append(data)
        else:
            committed.setdefault(int(index), []).append(TaskResult.from_json(data))
    return committed, failed


def choose(results: Iterable[TaskResult]) -> TaskResult:
    """The attempt that counts among a task's committed ones: the earliest to commit
    (then the smallest attempt id), the same choice wherever it is made."""
    return min(results, key=lambda r: (r.finished, r.attempt))


def chosen_wave(
    plan: Plan, step: int, wave: str, tasks: int, options: StorageOptions
) -> list[TaskResult]:
    """One committed attempt per task of a wave, in task order."""
    committed, _ = list_markers(plan, step, wave, options)
    return _chosen(committed, step, wave, tasks)


def _chosen(
    committed: dict[int, list[TaskResult]], step: int, wave: str, tasks: int
) -> list[TaskResult]:
    missing = [i for i in range(tasks) if i not in committed]
    if missing:
        raise MissingCommit(
            f"{wave} task {missing[0]} of step {step + 1} has no committed attempt "
            f"({len(missing)} tasks missing)"
        )
    return [choose(committed[i]) for i in range(tasks)]


def map_outputs(plan: Plan, step: int, options: StorageOptions) -> list[dict[str, Any]]:
    """The chosen map attempts of a step, decided once for all its reducers."""
    url = plan.map_outputs_url(step)
    try:
        return json.loads(storage.read_bytes(url, options))  # type: ignore[no-any-return]
    except FileNotFoundError:
        pass
    maps = plan.map_count(step)
    chosen = [r.to_json() for r in chosen_wave(plan, step, MAP, maps, options)]
    for c in chosen:
        del c["key_sample"]  # for the report only: every reducer reads this file
    data = json.dumps(chosen, sort_keys=True).encode()
    storage.create_exclusive(url, data, options)  # the first reducer's choice stands
    return json.loads(storage.read_bytes(url, options))  # type: ignore[no-any-return]


def previous_wave(plan: Plan, step: int, options: StorageOptions) -> list[TaskResult]:
    """The chosen outputs of the whole wave before step ``step``'s map wave."""
    before = plan.steps[step - 1]
    wave = REDUCE if before.reducers > 0 else MAP
    return chosen_wave(plan, step - 1, wave, plan.map_count(step), options)


def previous_output(plan: Plan, step: int, index: int, options: StorageOptions) -> TaskResult:
    """The chosen output of task ``index`` of the wave before step ``step``'s map wave."""
    before = plan.steps[step - 1]
    wave = REDUCE if before.reducers > 0 else MAP
    committed, _ = list_markers(plan, step - 1, wave, options)
    if index not in committed:
        raise MissingCommit(f"{wave} task {index} of step {step} has no committed attempt")
    return choose(committed[index])


# --------------------------------------------------------------------------- the commit


def _add_counters(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for group, values in more.items():
        target = into.setdefault(group, {})
        for name, n in values.items():
            target[name] = target.get(name, 0) + n


def _add_storage(into: dict[str, Any], snap: dict[str, Any]) -> None:
    requests = into.setdefault("requests", {})
    for kind, n in snap.get("requests", {}).items():
        requests[kind] = requests.get(kind, 0) + n
    for key in ("bytes_read", "bytes_written"):
        into[key] = into.get(key, 0) + snap.get(key, 0)


def collect_waves(plan: Plan, options: StorageOptions) -> list[WaveMarkers]:
    """The markers of every wave of the job, with the chosen attempt of each task that
    has a committed one."""
    waves: list[WaveMarkers] = []
    for s, step in enumerate(plan.steps):
        maps = plan.map_count(s)
        shapes = [(MAP, maps)] + ([(REDUCE, step.reducers)] if step.reducers else [])
        for wave, tasks in shapes:
            committed, failed = list_markers(plan, s, wave, options)
            chosen = {i: choose(rs) for i, rs in committed.items()}
            waves.append(WaveMarkers(s, wave, tasks, committed, failed, chosen))
    return waves


def summarize(
    plan: Plan, options: StorageOptions, extra: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[TaskResult]]:
    """The job's ``_SUCCESS`` summary from the markers, and the chosen final tasks."""
    return _summarize(plan, collect_waves(plan, options), extra, time.time())


def _summarize(
    plan: Plan, waves: list[WaveMarkers], extra: dict[str, Any] | None, finished: float
) -> tuple[dict[str, Any], list[TaskResult]]:
    extra = dict(extra or {})
    counters: dict[str, dict[str, int]] = {}
    moved: dict[str, Any] = {"requests": {}, "bytes_read": 0, "bytes_written": 0}
    for snap in extra.pop("storage", []):
        _add_storage(moved, snap)
    steps_out: list[dict[str, Any]] = [
        {"step": s, "maps": plan.map_count(s), "reduces": step.reducers}
        for s, step in enumerate(plan.steps)
    ]
    attempts = failed_attempts = 0
    failures: list[dict[str, Any]] = []
    records_in = 0
    bad_examples: list[str] = []
    final: list[TaskResult] = []
    for w in waves:
        s, wave, stat = w.step, w.wave, steps_out[w.step]
        chosen = _chosen(w.committed, s, wave, w.tasks)
        attempts += sum(len(v) for v in w.committed.values()) + len(w.failed)
        failed_attempts += len(w.failed)
        failures.extend(w.failed)
        for r in chosen:
            _add_counters(counters, r.counters)
            _add_storage(moved, r.storage)
        if chosen:
            stat[f"{wave}_seconds"] = round(
                max(r.finished for r in chosen) - min(r.started for r in chosen), 3
            )
        if s == 0 and wave == MAP:
            records_in = sum(
                r.counters.get("kubemr", {}).get("map_input_records", 0) for r in chosen
            )
            bad_examples = [e for r in chosen for e in r.bad_records][:10]
        if s == len(plan.steps) - 1:
            final = chosen  # the reduce wave comes after the map wave of its step
    kub = counters.get("kubemr", {})
    started = extra.pop("started", None)
    summary: dict[str, Any] = {
        "status": "succeeded",
        "job": plan.job_name,
        "job_id": plan.job_id,
        "started": datetime.fromtimestamp(started, UTC).isoformat() if started else plan.created,
        "finished": datetime.fromtimestamp(finished, UTC).isoformat(),
        "wall_seconds": round(finished - started, 3) if started else None,
        "input": {
            "files": extra.pop("input_files", None),
            "bytes": extra.pop("input_bytes", None),
            "records": records_in,
        },
        "output": {
            "url": plan.output_url,
            "format": plan.output_format,
            "files": [
                {"name": posixpath.basename(plan.published_part_url(r.index)), "bytes": b}
                for r, b in ((r, r.output_bytes) for r in final)
            ],
            "records": kub.get("output_records", 0),
            "bytes": sum(r.output_bytes for r in final),
        },
        "steps": steps_out,
        "tasks": {
            "map": sum(s["maps"] for s in steps_out),
            "reduce": sum(s["reduces"] for s in steps_out),
        },
        "attempts": {"total": attempts, "failed": failed_attempts},
        "failed_attempts": failures[:20],
        "bad_records": {
            "skipped": kub.get("map_bad_records_skipped", 0),
            "examples": bad_examples,
        },
        "counters": counters,
        "storage": moved,
    }
    summary.update(extra)
    return summary, final


def commit_job(
    plan: Plan, options: StorageOptions, claim: OutputClaim, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Publish the chosen part files, write the report and ``_SUCCESS``; return the
    summary."""
    waves = collect_waves(plan, options)
    finished = time.time()
    started = (extra or {}).get("started")
    summary, final = _summarize(plan, waves, extra, finished)
    skipped = summary["bad_records"]["skipped"]
    if skipped > plan.skip_bad_records:
        raise JobFailed(
            TaskFailure(
                "commit",
                "-",
                "bad-record",
                f"{skipped} bad records were skipped in all, more than --skip-bad-records "
                f"{plan.skip_bad_records} (each task may skip that many; the job as a whole "
                "too)",
            )
        )
    parts = [(r.output_url, plan.published_part_url(r.index)) for r in final]
    report = job_report(
        plan,
        waves,
        status="succeeded",
        started=started if started is not None else epoch(plan.created),
        finished=finished,
        input=summary["input"],
        output={
            "url": plan.output_url,
            "bytes": summary["output"]["bytes"],
            "records": summary["output"]["records"],
            "files": len(final),
        },
        steps=summary["steps"],
        local_slots=(extra or {}).get("workers"),
    )
    summary["report"] = report_summary(report)
    publish(claim, parts, summary, report)
    return summary
