"""The job report's data: ``_REPORT.json``, format ``kubemr-report/1``.

Built from the attempts' markers in the work dir (:mod:`kubemr.results`): a row per
attempt (committed, superseded by another attempt of its task, or failed), the reduce
side of each step (bytes and records per partition from the map tasks' partition
indexes, the top keys of the largest partitions from the map tasks' key samples), and
totals for cost. The commit writes it beside ``_SUCCESS``, so it outlives the work dir;
:func:`load_report` reads it back, or builds it from the work dir of a job that failed
or is still running.

Bounded: at most :data:`MAX_ATTEMPT_ROWS` attempt rows. Beyond that every failed
attempt is kept, then the slowest and the fastest of the others; the rest are counted in
``attempts_omitted`` (the totals still count every attempt). At most
:data:`MAX_PARTITION_ROWS` partitions of a step: its largest, then an even sample of the
rest by size (so their spread and median stay near the whole's); the rest are counted in
``partitions_omitted``, and the skew in ``_SUCCESS`` is computed over all of them.

Beyond the format's fields (a superset): attempt rows add ``bytes_read`` and
``bytes_written`` (the attempt's storage traffic, for cost) and ``started_estimated``
(true when the attempt's process died before it could record its start: its start is
then when it was submitted); partition rows add ``raw_bytes`` (uncompressed: a partition
of one repeated key compresses far better than it merges); the report adds
``partitions_omitted`` and ``skew`` (the step whose largest partition is furthest above
its median, as ``_SUCCESS`` has it). The ``top_keys`` counts are shuffle records after
the map-side combiner: what reducers receive. A failure marker written by a kubemr
before attempt records has no times: its row's ``started`` and ``finished`` are null.

The builders are pure; :func:`write_report` and :func:`load_report` do the I/O.
"""

from __future__ import annotations

import heapq
import json
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubemr import storage
from kubemr.errors import InputError
from kubemr.output import JOB_RECORD, REPORT, SUCCESS
from kubemr.plan import Plan
from kubemr.results import MAP, REDUCE, TaskResult
from kubemr.storage import StorageOptions

FORMAT = "kubemr-report/1"
MAX_ATTEMPT_ROWS = 20_000
TOP_KEYS = 10
"""Top keys kept per partition."""
TOP_KEY_PARTITIONS = 20
"""Per step, the partitions (the largest by bytes) whose top keys the report keeps."""
ERROR_CHARS = 300
MAX_PARTITION_ROWS = 10_000
"""Partition rows per step, at most."""
LARGEST_PARTITIONS = 100
"""Partition rows of a step always kept (its largest), however many it has."""

COMMITTED = "committed"
SUPERSEDED = "superseded"
FAILED = "failed"
STATUSES = ("succeeded", "failed", "running")


class ReportNotFound(InputError):
    """Neither a report nor a work dir to build one from is where the user pointed."""


@dataclass
class WaveMarkers:
    """The markers of one wave: committed attempts by task, the chosen one of each task
    that has one, and the failure markers."""

    step: int
    wave: str
    tasks: int
    committed: dict[int, list[TaskResult]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[int, TaskResult] = field(default_factory=dict)


# --------------------------------------------------------------------------- attempt rows

_WAVE_ORDER = {MAP: 0, REDUCE: 1}


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, int | float) and value > 0 else None


def committed_row(result: TaskResult, outcome: str) -> dict[str, Any]:
    """The row of a committed attempt (``committed`` when chosen, else ``superseded``)."""
    snap = result.storage or {}
    return {
        "step": result.step,
        "wave": result.wave,
        "index": result.index,
        "attempt": result.attempt,
        "outcome": outcome,
        "started": _seconds(result.started),
        "finished": _seconds(result.finished),
        "worker": result.worker,
        "node": result.node,
        "records_in": result.records_in,
        "records_out": result.records_out,
        "bytes_in": result.bytes_in,
        "bytes_out": result.bytes_out,
        "spill_bytes": result.spill_bytes,
        "shuffle_bytes_fetched": result.shuffle_bytes_fetched,
        "storage_requests": result.storage_requests,
        "bytes_read": snap.get("bytes_read", 0),
        "bytes_written": snap.get("bytes_written", 0),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "peak_rss_bytes": result.peak_rss_bytes,
        "error": None,
    }


def failed_row(marker: dict[str, Any]) -> dict[str, Any]:
    """The row of a failed attempt from its failure marker. Records and bytes are 0: a
    failed attempt committed nothing. A marker written before attempt records existed
    has no times (null) nor measures (0)."""
    snap = marker.get("storage") or {}
    worker = str(marker.get("worker") or "")
    node = marker.get("node")
    if "@" in worker and node is None:  # older markers: pod@node
        worker, _, node = worker.partition("@")
    message = str(marker.get("message") or "").strip().splitlines()
    kind = marker.get("kind") or "failed"
    error = f"{kind}: {message[0] if message else 'no message'}"
    row: dict[str, Any] = {
        "step": int(marker.get("step", 0)),
        "wave": str(marker.get("wave", "")),
        "index": int(marker.get("index", 0)),
        "attempt": str(marker.get("attempt", "")),
        "outcome": FAILED,
        "started": _seconds(marker.get("started")),
        "finished": _seconds(marker.get("finished")),
        "worker": worker,
        "node": node,
        "records_in": 0,
        "records_out": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "spill_bytes": 0,
        "shuffle_bytes_fetched": 0,
        "storage_requests": sum((snap.get("requests") or {}).values()),
        "bytes_read": snap.get("bytes_read", 0),
        "bytes_written": snap.get("bytes_written", 0),
        "cpu_seconds": round(float(marker.get("cpu_seconds") or 0.0), 3),
        "peak_rss_bytes": int(marker.get("peak_rss_bytes") or 0),
        "error": error[:ERROR_CHARS],
    }
    if marker.get("started_estimated"):
        row["started_estimated"] = True
    return row


def duration(row: dict[str, Any]) -> float:
    started, finished = row.get("started"), row.get("finished")
    if started is None or finished is None:
        return 0.0
    return max(0.0, finished - started)


def attempt_rows(waves: Iterable[WaveMarkers]) -> list[dict[str, Any]]:
    """Every recorded attempt of the job, in task order, then by start."""
    rows: list[dict[str, Any]] = []
    for w in waves:
        for index, results in w.committed.items():
            chosen = w.chosen.get(index)
            for r in results:
                rows.append(committed_row(r, COMMITTED if r is chosen else SUPERSEDED))
        rows.extend(failed_row(m) for m in w.failed)
    rows.sort(key=_row_order)
    return rows


def _row_order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["step"],
        _WAVE_ORDER.get(row["wave"], 2),
        row["index"],
        row["started"] or 0.0,
        row["attempt"],
    )


def bound_rows(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int]:
    """At most ``limit`` rows: every failed one first, then the slowest and the fastest
    of the others, half each; returns the rows kept (in order) and how many were left
    out."""
    if len(rows) <= limit:
        return rows, 0
    failed = [r for r in rows if r["outcome"] == FAILED][:limit]
    others = [r for r in rows if r["outcome"] != FAILED]
    room = limit - len(failed)
    by_time = sorted(others, key=duration)
    slow = (room + 1) // 2
    kept = failed + by_time[len(by_time) - slow :] + by_time[: room - slow]
    kept.sort(key=_row_order)
    return kept, len(rows) - len(kept)


# --------------------------------------------------------------------------- partitions


def partition_rows(waves: Iterable[WaveMarkers], reducers: list[int]) -> list[dict[str, Any]]:
    """Per step with reducers, each partition's bytes and records (summed over the
    chosen map attempts' partition indexes) and, for its largest partitions, the top
    keys of the map tasks' samples."""
    out: list[dict[str, Any]] = []
    for w in waves:
        parts = reducers[w.step] if w.step < len(reducers) else 0
        if w.wave != MAP or parts == 0:
            continue
        nbytes = [0] * parts
        raw = [0] * parts
        records = [0] * parts
        keys: list[Counter[str]] = [Counter() for _ in range(parts)]
        for r in w.chosen.values():
            idx = r.partition_index
            if idx is None or len(idx.records) != parts:
                continue
            for p in range(parts):
                nbytes[p] += idx.offsets[p + 1] - idx.offsets[p]
                raw[p] += idx.raw_bytes[p]
                records[p] += idx.records[p]
            for p, top in r.key_sample:
                if 0 <= p < parts:
                    for text, n in top:
                        keys[p][text] += n
        largest = set(heapq.nlargest(TOP_KEY_PARTITIONS, range(parts), key=nbytes.__getitem__))
        for p in range(parts):
            top_keys: list[list[Any]] = []
            if p in largest and keys[p]:
                ranked = sorted(keys[p].items(), key=lambda kv: (-kv[1], kv[0]))
                top_keys = [[text, n] for text, n in ranked[:TOP_KEYS]]
            out.append(
                {
                    "step": w.step,
                    "partition": p,
                    "bytes": nbytes[p],
                    "raw_bytes": raw[p],
                    "records": records[p],
                    "top_keys": top_keys,
                }
            )
    return out


def bound_partitions(
    rows: list[dict[str, Any]], limit: int = MAX_PARTITION_ROWS
) -> tuple[list[dict[str, Any]], int]:
    """At most ``limit`` partition rows per step: the largest by bytes, then every Nth of
    the others in size order; returns the rows kept (in order) and how many were not."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    kept: list[dict[str, Any]] = []
    for parts in by_step.values():
        if len(parts) <= limit:
            kept.extend(parts)
            continue
        ordered = sorted(parts, key=lambda r: (-r["bytes"], r["partition"]))
        top = min(LARGEST_PARTITIONS, limit)
        rest = ordered[top:]
        room = limit - top
        chosen = [rest[i * len(rest) // room] for i in range(room)] if room else []
        kept.extend(ordered[:top] + chosen)
    kept.sort(key=lambda r: (r["step"], r["partition"]))
    return kept, len(rows) - len(kept)


# --------------------------------------------------------------------------- the report


def totals(rows: list[dict[str, Any]], cpu_request: float | None) -> dict[str, Any]:
    """Sums over every recorded attempt (failed and superseded too: they were paid for)."""
    worker_seconds = sum(duration(r) for r in rows)
    gib_seconds = sum(r["peak_rss_bytes"] / (1 << 30) * duration(r) for r in rows)
    return {
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in rows), 3),
        "memory_gib_seconds": round(gib_seconds, 3),
        "worker_seconds": round(worker_seconds, 3),
        "requested_cpu_seconds": (
            round(worker_seconds * cpu_request, 3) if cpu_request is not None else None
        ),
        "storage_requests": sum(r["storage_requests"] for r in rows),
        "bytes_read": sum(r["bytes_read"] for r in rows),
        "bytes_written": sum(r["bytes_written"] for r in rows),
    }


def build_report(
    *,
    job: str,
    job_id: str,
    runner: str,
    status: str,
    started: float | None,
    finished: float | None,
    input: dict[str, Any],
    output: dict[str, Any],
    workers: dict[str, Any],
    steps: list[dict[str, Any]],
    waves: list[WaveMarkers],
    reducers: list[int],
    limit: int = MAX_ATTEMPT_ROWS,
) -> dict[str, Any]:
    """The report (format ``kubemr-report/1``) of a job from its waves' markers."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    rows = attempt_rows(waves)
    kept, omitted = bound_rows(rows, limit)
    partitions = partition_rows(waves, reducers)
    parts_kept, parts_omitted = bound_partitions(partitions)
    return {
        "format": FORMAT,
        "job": job,
        "job_id": job_id,
        "runner": runner,
        "status": status,
        "started": _seconds(started),
        "finished": _seconds(finished),
        "input": input,
        "output": output,
        "workers": workers,
        "steps": steps,
        "attempts": kept,
        "attempts_omitted": omitted,
        "partitions": parts_kept,
        "partitions_omitted": parts_omitted,
        "skew": skew(partitions),
        "totals": totals(rows, workers.get("cpu_request")),
    }


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of a report that ``_SUCCESS`` carries: the slowest task, the worst
    skew of a step's partitions (largest over median bytes), the CPU seconds."""
    chosen = [r for r in report["attempts"] if r["outcome"] == COMMITTED]
    slowest = max(chosen, key=duration, default=None)
    return {
        "file": REPORT,
        "slowest_task": (
            {
                "step": slowest["step"],
                "wave": slowest["wave"],
                "index": slowest["index"],
                "attempt": slowest["attempt"],
                "seconds": round(duration(slowest), 3),
                "worker": slowest["worker"],
            }
            if slowest is not None
            else None
        ),
        "skew": report["skew"],
        "cpu_seconds": report["totals"]["cpu_seconds"],
        "attempts": len(report["attempts"]) + report["attempts_omitted"],
    }


def skew(partitions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step whose largest partition is furthest above its median (by bytes), with
    the same ratio by records (compression hides a partition of one repeated key)."""
    worst: dict[str, Any] | None = None
    by_step: dict[int, list[dict[str, Any]]] = {}
    for p in partitions:
        by_step.setdefault(p["step"], []).append(p)
    for step, parts in sorted(by_step.items()):
        largest = max(parts, key=lambda p: p["bytes"])
        median = statistics.median(p["bytes"] for p in parts)
        ratio = round(largest["bytes"] / median, 2) if median > 0 else None
        median_records = statistics.median(p["records"] for p in parts)
        found = {
            "step": step,
            "partition": largest["partition"],
            "max_bytes": largest["bytes"],
            "median_bytes": median,
            "ratio": ratio,
            "records_ratio": (
                round(largest["records"] / median_records, 2) if median_records > 0 else None
            ),
            "top_key": largest["top_keys"][0] if largest["top_keys"] else None,
        }
        if worst is None or _worse(found, worst):
            worst = found
    return worst


def _worse(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["ratio"] is None or b["ratio"] is None:  # a zero median: all in few partitions
        return a["ratio"] is None and b["ratio"] is not None
    return bool(a["ratio"] > b["ratio"])


def runner_of(plan: Plan) -> str:
    """``kubernetes`` for a job planned by the plan pod of a resource, else ``local``."""
    return "kubernetes" if plan.extra.get("resource") else "local"


def workers_of(plan: Plan, local_slots: int | None) -> dict[str, Any]:
    """The report's ``workers``: the local worker processes, or what the plan stage
    recorded of the resource's workers (``plan.extra["workers"]``)."""
    recorded = plan.extra.get("workers")
    found: dict[str, Any] = {"slots": None, "cpu_request": None, "memory_request_bytes": None}
    if isinstance(recorded, dict):
        found.update({k: recorded.get(k) for k in found})
    elif local_slots is not None:
        found["slots"] = local_slots
    return found


_SUFFIXES = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def quantity_value(text: str | None) -> float | None:
    """A Kubernetes quantity as a number (``500m`` -> 0.5, ``1Gi`` -> 1073741824); None
    when absent or not one."""
    if not text:
        return None
    text = str(text).strip()
    number = text.rstrip("mkMGTPEi")
    suffix = text[len(number) :]
    if suffix not in _SUFFIXES:
        return None
    try:
        return float(number) * _SUFFIXES[suffix]
    except ValueError:
        return None


def workers_entry(slots: int | None, requests: dict[str, str] | None) -> dict[str, Any]:
    """The report's ``workers`` of a job on Kubernetes, as the plan stage records it in
    ``plan.extra["workers"]``: the most pods of a wave, and what each requests."""
    requests = requests or {}
    memory = quantity_value(requests.get("memory"))
    return {
        "slots": slots,
        "cpu_request": quantity_value(requests.get("cpu")),
        "memory_request_bytes": int(memory) if memory is not None else None,
    }


def epoch(iso: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time (a plan's ``created``), None when unreadable."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def job_report(
    plan: Plan,
    waves: list[WaveMarkers],
    *,
    status: str,
    started: float | None,
    finished: float | None,
    input: dict[str, Any],
    output: dict[str, Any],
    steps: list[dict[str, Any]],
    local_slots: int | None = None,
) -> dict[str, Any]:
    """:func:`build_report` with what the plan says of the job."""
    return build_report(
        job=plan.job_name,
        job_id=plan.job_id,
        runner=runner_of(plan),
        status=status,
        started=started,
        finished=finished,
        input=input,
        output=output,
        workers=workers_of(plan, local_slots),
        steps=steps,
        waves=waves,
        reducers=[s.reducers for s in plan.steps],
    )


def report_from_waves(plan: Plan, waves: list[WaveMarkers], status: str) -> dict[str, Any]:
    """The report of a job that has not committed (failed or still running), from what
    its markers hold so far: partial counts, no end time while it runs."""
    last = len(plan.steps) - 1
    first_maps = [r for w in waves if w.step == 0 and w.wave == MAP for r in w.chosen.values()]
    final_wave = REDUCE if plan.steps[last].reducers else MAP
    final = [r for w in waves if (w.step, w.wave) == (last, final_wave) for r in w.chosen.values()]
    steps = [
        {"step": s, "maps": plan.map_count(s), "reduces": st.reducers}
        for s, st in enumerate(plan.steps)
    ]
    ends = [r.finished for w in waves for rs in w.committed.values() for r in rs if r.finished] + [
        float(m["finished"]) for w in waves for m in w.failed if m.get("finished")
    ]
    return job_report(
        plan,
        waves,
        status=status,
        started=epoch(plan.created),
        finished=None if status == "running" else max(ends, default=None),
        input={
            "files": plan.extra.get("input_files"),
            "bytes": plan.extra.get("input_bytes"),
            "records": sum(r.records_in for r in first_maps),
        },
        output={
            "url": plan.output_url,
            "bytes": sum(r.bytes_out for r in final),
            "records": sum(r.records_out for r in final),
            "files": len(final),
        },
        steps=steps,
    )


# --------------------------------------------------------------------------- I/O


def encode(report: dict[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":")).encode()


def write_report(output_url: str, report: dict[str, Any], options: StorageOptions) -> str:
    """Write ``report`` as ``<output_url>/_REPORT.json``; return its URL."""
    url = storage.join(output_url, REPORT)
    storage.write_bytes(url, encode(report), options)
    return url


def _read(url: str, options: StorageOptions) -> bytes | None:
    try:
        return storage.read_bytes(url, options)
    except FileNotFoundError:
        return None


def load_report(
    target: str, options: StorageOptions | None = None, status: str | None = None
) -> dict[str, Any]:
    """The report of a job: ``target`` is its output directory (the ``_REPORT.json``
    its commit wrote) or its work dir (``<work>/<job-id>``, holding ``plan.json``), from
    whose markers the report of a failed or running job is built.

    ``status`` (for a work dir): ``failed`` or ``running`` as the caller knows it; by
    default the state the output's job record gives, when it is this job's (a job on
    Kubernetes that failed leaves it ``running``: pass the resource's phase).
    """
    options = options or StorageOptions()
    target = target.rstrip("/")
    data = _read(storage.join(target, REPORT), options)
    if data is not None:
        try:
            report = json.loads(data)
        except ValueError as exc:
            raise ReportNotFound(f"{storage.join(target, REPORT)} is not JSON: {exc}") from None
        if not (
            isinstance(report, dict) and str(report.get("format", "")).startswith("kubemr-report/")
        ):
            raise ReportNotFound(
                f"{storage.join(target, REPORT)} is not a kubemr report (no format {FORMAT!r})"
            )
        return report
    plan_data = _read(storage.join(target, "plan.json"), options)
    if plan_data is not None:
        plan = Plan.from_json(plan_data)
        return report_from_work(plan, options, status)
    if _read(storage.join(target, SUCCESS), options) is not None:
        raise ReportNotFound(
            f"{target} holds a _SUCCESS but no {REPORT}: its job was committed by a kubemr "
            "without reports; a report can still be built from the job's work dir, if it "
            "was kept (--keep-work): give <work dir>/<job id>"
        )
    raise ReportNotFound(
        f"no report at {target}: give a job's output directory (which holds {REPORT} once "
        "the job succeeded) or its work dir <work dir>/<job id> (which holds plan.json)"
    )


def report_from_work(
    plan: Plan, options: StorageOptions, status: str | None = None
) -> dict[str, Any]:
    """The report of the job planned as ``plan``, from the markers in its work dir."""
    from kubemr.commit import collect_waves

    if status is None:
        status = _recorded_status(plan, options)
    return report_from_waves(plan, collect_waves(plan, options), status)


def _recorded_status(plan: Plan, options: StorageOptions) -> str:
    """The job's state as its output's job record gives it, when the record is this
    job's; ``running`` otherwise."""
    data = _read(storage.join(plan.output_url, JOB_RECORD), options)
    try:
        record = json.loads(data) if data else {}
    except ValueError:
        record = {}
    if isinstance(record, dict) and record.get("job_id") == plan.job_id:
        state = record.get("state")
        if state in STATUSES:
            return str(state)
    return "running"
