"""What the cluster commands print for people, from a MapReduceJob as the API server
returns it: pure functions of plain dicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from kubemr.cli.durations import format_duration
from kubemr.cli.output import name_of
from kubemr.cli.tables import age, parse_time, render_table
from kubemr.cluster.attempts import FailedAttempt
from kubemr.cluster.resource import work_url
from kubemr.report.analysis import printable
from kubemr.sizes import format_size

Obj = dict[str, Any]
Outcome = Literal["succeeded", "failed"]
CANCELLED = "Cancelled"
TRACEBACK_LINES = 12


def status_of(resource: Obj) -> Obj:
    return resource.get("status") or {}


def outcome(resource: Obj) -> Outcome | None:
    """How the job ended, from its conditions (as ``kubectl wait`` reads them), else its
    phase; None while it runs."""
    status = status_of(resource)
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return "failed"
    return {"Succeeded": "succeeded", "Failed": "failed"}.get(status.get("phase") or "")  # type: ignore[return-value]


def step_count(status: Obj) -> int:
    steps = len(((status.get("plan") or {}).get("steps")) or [])
    waves = [w.get("step") or 0 for w in status.get("waves") or []]
    return max(steps, max(waves, default=0) + 1)


def wave_label(wave: Obj, steps: int) -> str:
    """``map``, ``reduce``, ``step 2/3 map``; ``plan``, ``commit``."""
    kind = str(wave.get("kind") or "")
    if kind in ("map", "reduce") and steps > 1:
        return f"step {int(wave.get('step') or 0) + 1}/{steps} {kind}"
    return kind


def progress_line(resource: Obj) -> str:
    """One line of where the job is: ``Running: map 3/8, 5 workers``."""
    status = status_of(resource)
    parts = [str(status.get("phase") or "Pending")]
    where = " ".join(str(status[k]) for k in ("wave", "progress") if status.get(k))
    text = parts[0] + (f": {where}" if where else "")
    workers = status.get("workers")
    if workers is not None and outcome(resource) is None:
        text += f", {workers} worker" + ("" if workers == 1 else "s")
    failed = sum(int(w.get("failed") or 0) for w in status.get("waves") or [])
    if failed:
        text += f", {failed} failed attempts"
    return text


def is_cancelled(resource: Obj) -> bool:
    return (status_of(resource).get("failure") or {}).get("reason") == CANCELLED


def failure_lines(resource: Obj, namespace_flag: str = "") -> list[str]:
    """The root cause of a failed job, for stderr: reason, task, attempt, exit code,
    message, the traceback's last lines, and where the attempt's log is."""
    name = name_of(resource)
    failure = status_of(resource).get("failure") or {}
    reason = failure.get("reason") or "Failed"
    if reason == CANCELLED:
        head = f"kubemr: {name} was cancelled"
    else:
        head = f"kubemr: {name} failed: {reason}"
        if failure.get("task"):
            head += f" in task {failure['task']}"
        details = []
        if failure.get("attempt"):
            details.append(f"attempt {failure['attempt']}")
        if failure.get("exitCode") is not None:
            details.append(f"exit code {failure['exitCode']}")
        if details:
            head += f" ({', '.join(details)})"
    lines = [head]
    if failure.get("message"):
        lines += [f"kubemr: {line}" for line in str(failure["message"]).strip().splitlines()]
    traceback = str(failure.get("traceback") or "").rstrip()
    if traceback:
        tail = traceback.splitlines()[-TRACEBACK_LINES:]
        lines += [f"  {line}" for line in tail]
    if failure.get("log"):
        hint = f"kubemr logs {name}{namespace_flag}"
        if failure.get("task"):
            hint += f" --task {failure['task']}"
        lines.append(f"kubemr: the attempt's log: {failure['log']} ({hint})")
    return lines


def success_line(resource: Obj) -> str:
    """``kubemr: wc succeeded in 42s: 40 records (1.2 KiB) in, 12 records in 2 files
    (300 B) out -> s3://b/out``"""
    status = status_of(resource)
    result = status.get("result") or {}
    text = f"kubemr: {name_of(resource)} succeeded"
    started, ended = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    if started and ended:
        text += f" in {format_duration((ended - started).total_seconds())}"
    if result:
        text += f": {_read(result)} in, {_written(result)} out"
    output = (resource.get("spec") or {}).get("output")
    return text + (f" -> {output}" if output else "")


def _read(result: Obj) -> str:
    """``40 records (1.2 KiB)``: what a job's ``status.result`` says it read."""
    records, size = int(result.get("recordsIn") or 0), int(result.get("bytesIn") or 0)
    return f"{records:,} records ({format_size(size)})"


def _written(result: Obj) -> str:
    """``12 records in 2 files (300 B)``: what it wrote."""
    records, size = int(result.get("recordsOut") or 0), int(result.get("bytesOut") or 0)
    return f"{records:,} records in {int(result.get('filesOut') or 0)} files ({format_size(size)})"


# -- describe ----------------------------------------------------------------------------------
def describe(
    resource: Obj,
    attempts: Sequence[FailedAttempt],
    events: Iterable[Obj],
    notes: Sequence[str],
    now: datetime,
) -> str:
    """Everything ``kubemr describe`` shows, as text."""
    meta = resource.get("metadata") or {}
    spec = resource.get("spec") or {}
    status = status_of(resource)
    out: list[str] = []
    created = meta.get("creationTimestamp")
    field_lines = [
        ("Name", meta.get("name")),
        ("Namespace", meta.get("namespace")),
        ("Created", f"{created} ({age(created, now)} ago)" if created else None),
        ("Phase", status.get("phase") or "Pending"),
        ("Wave", status.get("wave")),
        ("Progress", status.get("progress")),
        ("Workers", _workers(status)),
        ("Started", status.get("startTime")),
        ("Finished", status.get("completionTime")),
    ]
    out += _fields(field_lines)
    out.append("Spec:")
    out += _fields(_spec_lines(spec, work_url(resource)), indent="  ")
    steps = step_count(status)
    waves = status.get("waves") or []
    if waves:
        out.append("Waves:")
        rows = [
            [
                wave_label(w, steps),
                str(w.get("jobName") or ""),
                f"{int(w.get('succeeded') or 0)}/{int(w.get('total') or 0)}",
                str(int(w.get("failed") or 0)),
                _took(w, now),
            ]
            for w in waves
        ]
        out += _indented(render_table(["WAVE", "JOB", "DONE", "FAILED", "TOOK"], rows))
    conditions = status.get("conditions") or []
    if conditions:
        out.append("Conditions:")
        rows = [
            [
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason") or ""),
                age(c.get("lastTransitionTime"), now),
                _one_line(c.get("message")),
            ]
            for c in conditions
        ]
        out += _indented(render_table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows))
    out += _result_lines(status.get("result"))
    failure = status.get("failure")
    if failure:
        out.append("Failure:")
        out += _fields(
            [
                ("Reason", failure.get("reason")),
                ("Task", failure.get("task")),
                ("Attempt", failure.get("attempt")),
                ("Exit code", failure.get("exitCode")),
                ("Message", failure.get("message")),
                ("Log", failure.get("log")),
            ],
            indent="  ",
        )
        if failure.get("traceback"):
            out.append("  Traceback (its end):")
            out += [f"    {line}" for line in str(failure["traceback"]).rstrip().splitlines()]
    if attempts:
        out.append("Failed attempts:")
        for found in attempts:
            exit_code = f"exit {found.exit_code}" if found.exit_code is not None else ""
            where = ", ".join(sorted(found.sources))
            head = "  ".join(
                p for p in (found.task, found.attempt, exit_code, found.reason, f"({where})") if p
            )
            out.append(f"  {head}")
            if found.message:
                out.append(f"    {_one_line(found.message, 300)}")
            if found.log:
                out.append(f"    log: {found.log}")
    shown = sorted(events, key=_event_time)
    out.append("Events:" if shown else "Events:  <none>")
    if shown:
        rows = [
            [
                str(e.get("type") or ""),
                str(e.get("reason") or ""),
                age(_event_time(e), now),
                _one_line(e.get("message"), 200),
            ]
            for e in shown
        ]
        out += _indented(render_table(["TYPE", "REASON", "AGE", "MESSAGE"], rows))
    for note in notes:
        out.append(f"Note: {note}")
    return "\n".join(out) + "\n"


def _result_lines(result: Obj | None) -> list[str]:
    """What a succeeded job read and wrote, and its counters (group, name, value; the
    names are the job's own, shown without control characters)."""
    if not result:
        return []
    out = ["Result:"]
    out += _fields([("Input", _read(result)), ("Output", _written(result))], indent="  ")
    counters = result.get("counters") or {}
    rows = [
        [printable(str(group), 60), printable(str(name), 60), f"{value:,}"]
        for group, names in sorted(counters.items())
        if isinstance(names, dict)
        for name, value in sorted(names.items())
        if isinstance(value, int)
    ]
    if rows:
        out.append("  Counters:")
        out += [f"  {line}" for line in _indented(render_table(["GROUP", "NAME", "VALUE"], rows))]
    return out


def _workers(status: Obj) -> str | None:
    if status.get("workers") is None:
        return None
    reason = status.get("parallelismReason")
    return f"{status['workers']}" + (f" ({reason})" if reason else "")


def _spec_lines(spec: Obj, work: str | None) -> list[tuple[str, Any]]:
    job = spec.get("job") or {}
    if job.get("module"):
        code = f"module {job['module']}"
    elif job.get("pickle"):
        pickled = job["pickle"]
        code = f"pickle {pickled.get('url')} (sha256 {str(pickled.get('sha256'))[:12]})"
    elif job.get("source") is not None:
        lines = len(str(job["source"]).splitlines())
        code = f"source, {lines} lines" + (
            f", class {job['className']}" if job.get("className") else ""
        )
    else:
        code = None
    workers = spec.get("workers") or {}
    template = spec.get("template") or {}
    storage = spec.get("storage") or {}
    secret = (storage.get("secretRef") or {}).get("name")
    storage_text = ", ".join(
        p
        for p in (
            storage.get("endpoint"),
            f"region {storage['region']}" if storage.get("region") else None,
            f"secret {secret}" if secret else None,
        )
        if p
    )
    deadlines = ", ".join(
        f"{label} {spec[key]}s"
        for key, label in (
            ("activeDeadlineSeconds", "active"),
            ("pendingDeadlineSeconds", "pending"),
            ("ttlSecondsAfterFinished", "ttl after finished"),
        )
        if spec.get(key) is not None
    )
    flags = ", ".join(k for k in ("suspend", "cancel", "overwrite") if spec.get(k))
    params = spec.get("params") or {}
    return [
        ("Job", code),
        ("Inputs", ", ".join(spec.get("inputs") or [])),
        ("Output", spec.get("output")),
        ("Formats", _formats(spec)),
        ("Reducers", spec.get("reducers")),
        ("Split size", _size(spec.get("splitSize"))),
        ("Memory", _size(spec.get("memory"))),
        ("Max attempts", spec.get("maxAttempts")),
        ("Params", ", ".join(f"{k}={v}" for k, v in params.items()) or None),
        ("Workers", _range(workers)),
        ("Image", template.get("image")),
        ("Command", " ".join(template["command"]) if template.get("command") else None),
        ("Storage", storage_text or None),
        ("Work dir", work),
        ("Deadlines", deadlines or None),
        ("Flags", flags or None),
    ]


def _size(value: Any) -> Any:
    """A size as written (``64Mi``), or a number of bytes made readable."""
    return format_size(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _formats(spec: Obj) -> str | None:
    given = [spec.get("inputFormat"), spec.get("outputFormat")]
    if not any(given):
        return None
    return f"in {given[0] or 'from the job'}, out {given[1] or 'from the job'}"


def _range(workers: Obj) -> str | None:
    if not workers:
        return None
    text = f"{workers.get('min', 0)}..{workers.get('max', '?')}"
    if workers.get("maxPending") is not None:
        text += f" (max pending {workers['maxPending']})"
    return text


def _took(wave: Obj, now: datetime) -> str:
    started = parse_time(wave.get("startTime"))
    if started is None:
        return ""
    ended = parse_time(wave.get("completionTime"))
    seconds = ((ended or now) - started).total_seconds()
    return format_duration(seconds) + ("" if ended else " so far")


def _event_time(event: Obj) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _fields(pairs: Sequence[tuple[str, Any]], indent: str = "") -> list[str]:
    shown = [(k, v) for k, v in pairs if v is not None and v != ""]
    width = max((len(k) for k, _ in shown), default=0) + 2
    lines = []
    for key, value in shown:
        text = str(value).rstrip().splitlines() or [""]
        lines.append(f"{indent}{(key + ':').ljust(width)}{text[0]}")
        lines += [f"{indent}{' ' * width}{more}" for more in text[1:]]
    return lines


def _indented(table: str) -> list[str]:
    return [f"  {line}" for line in table.rstrip("\n").splitlines()]


def _one_line(text: Any, limit: int = 120) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
