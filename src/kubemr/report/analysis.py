"""What a job report shows, computed from a ``_REPORT.json`` dict (format
``kubemr-report/1``): attempts laid out in worker slots, per-wave spans and spreads,
throughput over time, stragglers, reduce-side skew, and warnings that say what to try.

Pure and deterministic: the same report dict gives the same analysis. The thresholds are
defined once, here.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubemr.errors import KubemrError
from kubemr.sizes import format_size

FORMAT = "kubemr-report/1"

STRAGGLER_FACTOR = 2.0
"""An attempt is a straggler when it ran at least this many times its wave's median..."""
STRAGGLER_MIN_EXCESS = 5.0
"""...and at least this many seconds longer than the median (a 0.2 s task that took 0.5 s
is no problem worth a warning)."""
STRAGGLER_MIN_TASKS = 3
"""A median of fewer committed tasks says too little to call one slow."""
UNEVEN_INPUT = 1.5
"""A straggler whose input is this many times the wave's median was slow because of its
input size (the advice is a smaller split size), not because of its node or records."""
SKEW_FACTOR = 2.0
"""Reduce-side skew: the largest partition holds at least this many times the median..."""
SKEW_MIN_BYTES = 16 * 1024**2
"""...and at least this many bytes (below it every reducer is quick anyway)."""
HOT_KEY_SHARE = 0.3
"""A key holding this share of a skewed partition's records is a hot key."""
THROUGHPUT_BINS = 40
"""About this many bins over the job's span for throughput over time."""

WAVES = ("map", "reduce")
OUTCOMES = ("committed", "failed", "superseded")
DONE = ("committed", "superseded")
"""Outcomes of attempts that ran to the end (their durations and inputs are whole)."""


class ReportDataError(KubemrError):
    """A report dict that does not follow the ``kubemr-report/1`` format."""


@dataclass(frozen=True)
class Attempt:
    """One attempt row, with times in seconds since the job started."""

    row: int
    """Position in the report's ``attempts`` list."""
    step: int
    wave: str
    index: int
    attempt: str
    outcome: str
    start: float
    end: float
    worker: str
    node: str | None
    records_in: int
    bytes_in: int
    error: str | None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def wave_key(self) -> tuple[int, int]:
        return (self.step, WAVES.index(self.wave))


@dataclass(frozen=True)
class Spread:
    """Order statistics of a list of numbers (linear interpolation between ranks)."""

    count: int
    min: float
    p25: float
    median: float
    p75: float
    p90: float
    max: float

    @staticmethod
    def of(values: Iterable[float]) -> Spread | None:
        ordered = sorted(values)
        if not ordered:
            return None
        return Spread(
            count=len(ordered),
            min=ordered[0],
            p25=quantile(ordered, 0.25),
            median=quantile(ordered, 0.5),
            p75=quantile(ordered, 0.75),
            p90=quantile(ordered, 0.9),
            max=ordered[-1],
        )


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolating linearly between ranks."""
    if not ordered:
        raise ValueError("quantile of no values")
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Wave:
    step: int
    wave: str
    order: int
    """Position among the job's waves (0, 1, ...): the wave's colour."""
    tasks: int
    attempts: int
    failed: int
    superseded: int
    start: float
    end: float
    records_in: int
    bytes_in: int
    duration: Spread | None
    """Of attempts that ran to the end (committed or superseded)."""
    input_bytes: Spread | None

    @property
    def key(self) -> tuple[int, int]:
        return (self.step, WAVES.index(self.wave))


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline."""

    row: int
    attempt: Attempt
    wave_order: int
    straggler: bool


@dataclass(frozen=True)
class Timeline:
    rows: int
    row_labels: list[str]
    bars: list[Bar]
    end: float
    """Seconds from the job's start to the last attempt's end (or the job's end)."""


@dataclass(frozen=True)
class Throughput:
    bin_seconds: float
    starts: list[float]
    """Each bin's start, seconds since the job started."""
    bytes_per_second: dict[str, list[float]]
    """By wave kind (map, reduce): input bytes read per second in each bin."""
    records_per_second: dict[str, list[float]]


@dataclass(frozen=True)
class Straggler:
    attempt: Attempt
    wave_median: float
    factor: float | None
    """Its duration over the wave's median; None when the median is 0."""
    input_factor: float | None
    """Its input over the wave's median input, in bytes or records, whichever is more;
    None when the medians are 0."""


@dataclass(frozen=True)
class TopKey:
    key: str
    """As the report gives it: the key as JSON text."""
    count: int
    share: float | None
    """Of the partition's records; None when the partition's record count is 0."""


@dataclass(frozen=True)
class StepSkew:
    step: int
    partition_bytes: list[int]
    """By partition number: uncompressed when the report gives it (``raw_bytes``), else
    as stored."""
    partition_records: list[int]
    largest: int
    """The partition number of the largest partition."""
    max_bytes: int
    median_bytes: float
    ratio: float | None
    """Largest over median; None when the median partition is empty."""
    skewed: bool
    top_keys: list[TopKey]
    """Of the largest partition (estimated from a map-side sample)."""
    uncompressed: bool = False


@dataclass(frozen=True)
class ReportWarning:
    kind: str
    """skew, hot-key, stragglers, failed or omitted."""
    message: str
    """What was seen."""
    advice: str
    """What to try."""
    short: str
    """One clause for the command line's summary."""


@dataclass(frozen=True)
class Analysis:
    attempts: list[Attempt]
    waves: list[Wave]
    timeline: Timeline
    throughput: Throughput
    stragglers: list[Straggler]
    skew: list[StepSkew]
    warnings: list[ReportWarning]
    wall_seconds: float | None
    failed: list[Attempt] = field(default_factory=list)


# -- reading the dict ---------------------------------------------------------------------


def _field(row: dict[str, Any], name: str, where: str, kinds: tuple[type, ...]) -> Any:
    if name not in row:
        raise ReportDataError(f"{where}: {name!r} is missing")
    value = row[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise ReportDataError(f"{where}: {name!r} is {value!r}, not a {kinds[0].__name__}")
    return value


def _number(row: dict[str, Any], name: str, where: str) -> float:
    return float(_field(row, name, where, (int, float)))


def _count(row: dict[str, Any], name: str) -> int:
    """A count the report may leave out (0) or give as null (unknown: 0)."""
    value = row.get(name)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def read_attempts(report: dict[str, Any]) -> list[Attempt]:
    """The attempt rows, checked, with times relative to the job's start."""
    origin = job_start(report)
    rows = report.get("attempts")
    if not isinstance(rows, list):
        raise ReportDataError("report: 'attempts' is missing or not a list")
    attempts = []
    for i, row in enumerate(rows):
        where = f"report attempts[{i}]"
        if not isinstance(row, dict):
            raise ReportDataError(f"{where}: not an object")
        wave = _field(row, "wave", where, (str,))
        if wave not in WAVES:
            raise ReportDataError(f"{where}: wave {wave!r} is not one of {', '.join(WAVES)}")
        outcome = _field(row, "outcome", where, (str,))
        if outcome not in OUTCOMES:
            raise ReportDataError(
                f"{where}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}"
            )
        start = _number(row, "started", where) - origin
        end = _number(row, "finished", where) - origin
        if end < start:
            raise ReportDataError(f"{where}: finished before it started")
        error = row.get("error")
        node = row.get("node")
        attempts.append(
            Attempt(
                row=i,
                step=int(_field(row, "step", where, (int,))),
                wave=wave,
                index=int(_field(row, "index", where, (int,))),
                attempt=str(row.get("attempt", "")),
                outcome=outcome,
                start=start,
                end=end,
                worker=str(row.get("worker") or "?"),
                node=str(node) if node is not None else None,
                records_in=_count(row, "records_in"),
                bytes_in=_count(row, "bytes_in"),
                error=str(error) if error is not None else None,
            )
        )
    attempts.sort(key=lambda a: (a.start, a.end, a.step, WAVES.index(a.wave), a.index, a.row))
    return attempts


def job_start(report: dict[str, Any]) -> float:
    fmt = report.get("format")
    if fmt != FORMAT:
        raise ReportDataError(f"report: format {fmt!r} is not {FORMAT!r}")
    return _number(report, "started", "report")


def wall_seconds(report: dict[str, Any]) -> float | None:
    """The job's wall time; None while it runs."""
    finished = report.get("finished")
    if finished is None:
        return None
    return float(finished) - job_start(report)


# -- the parts ----------------------------------------------------------------------------


def waves_of(attempts: Sequence[Attempt]) -> list[Wave]:
    by_wave: dict[tuple[int, int], list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_wave[a.wave_key].append(a)
    waves = []
    for order, key in enumerate(sorted(by_wave)):
        group = by_wave[key]
        done = [a for a in group if a.outcome in DONE]
        chosen = [a for a in group if a.outcome == "committed"]
        waves.append(
            Wave(
                step=key[0],
                wave=WAVES[key[1]],
                order=order,
                tasks=len({a.index for a in group}),
                attempts=len(group),
                failed=sum(a.outcome == "failed" for a in group),
                superseded=sum(a.outcome == "superseded" for a in group),
                start=min(a.start for a in group),
                end=max(a.end for a in group),
                records_in=sum(a.records_in for a in chosen),
                bytes_in=sum(a.bytes_in for a in chosen),
                duration=Spread.of(a.duration for a in done),
                input_bytes=Spread.of(a.bytes_in for a in done),
            )
        )
    return waves


def slots(attempts: Sequence[Attempt]) -> tuple[list[int], int]:
    """The row of each attempt (by position in ``attempts``) and the number of rows.

    A worker (a local process, or a pod) runs its attempts one after the other, so its
    attempts share a row; workers whose lifetimes do not overlap share a row too, so pods
    that come and go fill as few rows as the peak parallelism needs. Greedy by start time,
    each worker into the lowest free row: the fewest rows for intervals, and deterministic.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(attempts):
        members[a.worker].append(i)
    units = sorted(
        (
            min(attempts[i].start for i in idx),
            worker,
            max(attempts[i].end for i in idx),
        )
        for worker, idx in members.items()
    )
    free: list[int] = []  # rows free for the next unit (a heap, lowest first)
    busy: list[tuple[float, int]] = []  # (end, row) of rows in use
    rows = 0
    row_of_worker: dict[str, int] = {}
    for start, worker, end in units:
        while busy and busy[0][0] <= start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            row = heapq.heappop(free)
        else:
            row, rows = rows, rows + 1
        heapq.heappush(busy, (end, row))
        row_of_worker[worker] = row
    return [row_of_worker[a.worker] for a in attempts], rows


def timeline_of(
    report: dict[str, Any],
    attempts: Sequence[Attempt],
    waves: Sequence[Wave],
    stragglers: Sequence[Straggler],
) -> Timeline:
    rows_of, rows = slots(attempts)
    order = {w.key: w.order for w in waves}
    slow = {s.attempt.row for s in stragglers}
    bars = [
        Bar(row=r, attempt=a, wave_order=order[a.wave_key], straggler=a.row in slow)
        for r, a in zip(rows_of, attempts)
    ]
    local = report.get("runner") == "local"
    labels = []
    for r in range(rows):
        workers = sorted({a.worker for row, a in zip(rows_of, attempts) if row == r})
        # A local worker process keeps its row: name it. Pods share rows: number them.
        labels.append(workers[0] if local and len(workers) == 1 else f"slot {r + 1}")
    last = max((a.end for a in attempts), default=0.0)
    wall = wall_seconds(report)
    return Timeline(rows=rows, row_labels=labels, bars=bars, end=max(last, wall or 0.0))


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``raw``."""
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw * (1 - 1e-9):
            return m * power
    return 10 * power


def throughput_of(attempts: Sequence[Attempt], span: float) -> Throughput:
    """Input bytes and records per second over time, by wave kind. An attempt's input is
    spread evenly over its run (the report has no finer timing)."""
    width = nice_step(max(span, 1e-3) / THROUGHPUT_BINS)
    bins = max(1, math.ceil(span / width - 1e-9))
    per_bytes = {w: [0.0] * bins for w in WAVES}
    per_records = {w: [0.0] * bins for w in WAVES}
    for a in attempts:
        if not a.bytes_in and not a.records_in:
            continue
        if a.duration <= 0:
            b = min(int(a.start / width), bins - 1)
            per_bytes[a.wave][b] += a.bytes_in / width
            per_records[a.wave][b] += a.records_in / width
            continue
        first = min(int(a.start / width), bins - 1)
        last = min(int(a.end / width), bins - 1)
        for b in range(first, last + 1):
            lo, hi = max(a.start, b * width), min(a.end, (b + 1) * width)
            if b == bins - 1:
                hi = a.end  # the last bin takes any rounding tail
            share = max(0.0, hi - lo) / a.duration
            per_bytes[a.wave][b] += a.bytes_in * share / width
            per_records[a.wave][b] += a.records_in * share / width
    return Throughput(
        bin_seconds=width,
        starts=[b * width for b in range(bins)],
        bytes_per_second=per_bytes,
        records_per_second=per_records,
    )


def stragglers_of(attempts: Sequence[Attempt]) -> list[Straggler]:
    """Attempts that ran to the end but took over ``STRAGGLER_FACTOR`` times their wave's
    median (of committed attempts) and ``STRAGGLER_MIN_EXCESS`` seconds more; slowest
    first."""
    by_wave: dict[tuple[int, int], list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_wave[a.wave_key].append(a)
    found = []
    for key in sorted(by_wave):
        group = by_wave[key]
        chosen = [a for a in group if a.outcome == "committed"]
        if len(chosen) < STRAGGLER_MIN_TASKS:
            continue
        median = quantile(sorted(a.duration for a in chosen), 0.5)
        median_in = quantile(sorted(a.bytes_in for a in chosen), 0.5)
        median_records = quantile(sorted(a.records_in for a in chosen), 0.5)
        for a in group:
            if a.outcome not in DONE:
                continue
            if a.duration >= STRAGGLER_FACTOR * median and (
                a.duration - median >= STRAGGLER_MIN_EXCESS
            ):
                found.append(
                    Straggler(
                        attempt=a,
                        wave_median=median,
                        factor=a.duration / median if median > 0 else None,
                        input_factor=_input_factor(a, median_in, median_records),
                    )
                )
    found.sort(key=lambda s: (-s.attempt.duration, s.attempt.row))
    return found


def _input_factor(a: Attempt, median_bytes: float, median_records: float) -> float | None:
    """How many times the wave's median input an attempt read, in bytes or in records,
    whichever is more (a reducer's compressed input hides one repeated key)."""
    factors = [
        value / median
        for value, median in ((a.bytes_in, median_bytes), (a.records_in, median_records))
        if median > 0
    ]
    return max(factors) if factors else None


def skew_of(report: dict[str, Any]) -> list[StepSkew]:
    rows = report.get("partitions") or []
    if not isinstance(rows, list):
        raise ReportDataError("report: 'partitions' is not a list")
    by_step: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for i, row in enumerate(rows):
        where = f"report partitions[{i}]"
        if not isinstance(row, dict):
            raise ReportDataError(f"{where}: not an object")
        step = int(_field(row, "step", where, (int,)))
        part = int(_field(row, "partition", where, (int,)))
        _field(row, "bytes", where, (int, float))
        by_step[step][part] = row
    result = []
    for step in sorted(by_step):
        parts = by_step[step]
        count = max(parts) + 1
        # What a reducer merges is the uncompressed size: a partition of one repeated key
        # compresses far better than the others, and its compressed size hides the skew.
        measure = "raw_bytes" if all("raw_bytes" in row for row in parts.values()) else "bytes"
        sizes = [int(parts[p][measure]) if p in parts else 0 for p in range(count)]
        records = [_count(parts[p], "records") if p in parts else 0 for p in range(count)]
        largest = min(range(count), key=lambda p: (-sizes[p], p))
        median = quantile(sorted(sizes), 0.5)
        biggest = sizes[largest]
        ratio = biggest / median if median > 0 else None
        skewed = count > 1 and biggest >= SKEW_MIN_BYTES and (ratio is None or ratio >= SKEW_FACTOR)
        keys = []
        for pair in (parts.get(largest) or {}).get("top_keys") or []:
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise ReportDataError(
                    f"report partitions step {step} partition {largest}: top_keys entry "
                    f"{pair!r} is not [key, count]"
                )
            key, n = str(pair[0]), int(pair[1])
            share = n / records[largest] if records[largest] > 0 else None
            keys.append(TopKey(key=key, count=n, share=share))
        keys.sort(key=lambda k: (-k.count, k.key))
        result.append(
            StepSkew(
                step=step,
                partition_bytes=sizes,
                partition_records=records,
                largest=largest,
                max_bytes=biggest,
                median_bytes=median,
                ratio=ratio,
                skewed=skewed,
                top_keys=keys,
                uncompressed=measure == "raw_bytes",
            )
        )
    return result


# -- words --------------------------------------------------------------------------------


def printable(text: str, limit: int = 40) -> str:
    """User text made safe for one terminal line: no control characters, shortened."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def task_name(step: int, wave: str, index: int, steps: int) -> str:
    """``map 3``, or ``step 1 map 3`` in a job of several steps."""
    return f"step {step} {wave} {index}" if steps > 1 else f"{wave} {index}"


def _wave_name(step: int, wave: str, steps: int) -> str:
    return f"the {wave} wave of step {step}" if steps > 1 else f"the {wave} wave"


def warnings_of(
    report: dict[str, Any],
    waves: Sequence[Wave],
    stragglers: Sequence[Straggler],
    skew: Sequence[StepSkew],
    failed: Sequence[Attempt],
) -> list[ReportWarning]:
    steps = max(len(report.get("steps") or []), len({w.step for w in waves}))
    found: list[ReportWarning] = []
    for s in skew:
        if not s.skewed:
            continue
        where = f"reducer {s.largest}" + (f" of step {s.step}" if steps > 1 else "")
        if s.ratio is None:
            seen = (
                f"{where} got {format_size(s.max_bytes)} while most reducers got nothing: "
                "too few distinct keys, or a partitioner that sends them to few reducers."
            )
            how = "reducers idle"
        else:
            seen = (
                f"{where} got {format_size(s.max_bytes)}, {s.ratio:.1f}x the median "
                f"partition ({format_size(s.median_bytes)})."
            )
            how = f"{s.ratio:.1f}x the median input"
        hot = s.top_keys[0] if s.top_keys else None
        if hot is not None and hot.share is not None and hot.share >= HOT_KEY_SHARE:
            key = printable(hot.key)
            found.append(
                ReportWarning(
                    kind="hot-key",
                    message=f"{seen} One key, {key}, is about {hot.share:.0%} of its records.",
                    advice=(
                        "A hot key: a combiner sends one partial value per key from each "
                        "map task instead of every value; where values cannot be combined, "
                        "a custom partitioner with a salted key (key#n) spreads it over "
                        "reducers and a second step merges the parts."
                    ),
                    short=(
                        f"hot key {key} (~{hot.share:.0%} of {where}, {how}): "
                        "add a combiner or a custom partitioner"
                    ),
                )
            )
        else:
            found.append(
                ReportWarning(
                    kind="skew",
                    message=seen,
                    advice=(
                        "Reduce-side skew: more reducers (--reducers) spread many keys "
                        "thinner; a custom partitioner places known heavy keys apart."
                    ),
                    short=f"skew: {where} got {how}: try more reducers or a custom partitioner",
                )
            )
    by_wave: dict[tuple[int, str], list[Straggler]] = defaultdict(list)
    for st in stragglers:
        by_wave[(st.attempt.step, st.attempt.wave)].append(st)
    for (step, wave), group in sorted(by_wave.items()):
        slowest = group[0]
        a = slowest.attempt
        big_input = [s for s in group if (s.input_factor or 0) >= UNEVEN_INPUT]
        inputs = "Its input was" if len(group) == 1 else "Their inputs were"
        if len(big_input) * 2 >= len(group):
            if wave == "map":
                advice = (
                    f"{inputs} larger than the others': a smaller --split-size evens the "
                    "map tasks out (a compressed file is read whole by one task: split it "
                    "into several files)."
                )
                short_advice = "try a smaller --split-size"
            else:
                advice = (
                    f"{inputs} larger than the others': see the skew below; more reducers "
                    "(--reducers) or a custom partitioner even them out."
                )
                short_advice = "try more reducers or a custom partitioner"
        else:
            advice = (
                f"{inputs} not larger: records that cost more to process, or a slow node "
                "(see the node column); a smaller --split-size limits what one slow task "
                "holds up."
            )
            short_advice = "look at the records and the node, or a smaller --split-size"
        tasks = "task" if len(group) == 1 else "tasks"
        name = task_name(a.step, a.wave, a.index, steps)
        found.append(
            ReportWarning(
                kind="stragglers",
                message=(
                    f"{len(group)} {tasks} of {_wave_name(step, wave, steps)} ran over "
                    f"{STRAGGLER_FACTOR:g}x the wave's median of {slowest.wave_median:.1f}s; "
                    f"the slowest, {name}, took {a.duration:.1f}s."
                ),
                advice=advice,
                short=(
                    f"{len(group)} straggling {wave} {tasks} ({name}: {a.duration:.0f}s vs "
                    f"median {slowest.wave_median:.0f}s): {short_advice}"
                ),
            )
        )
    if failed:
        tasks = len({(a.step, a.wave, a.index) for a in failed})
        attempts = "attempt" if len(failed) == 1 else "attempts"
        found.append(
            ReportWarning(
                kind="failed",
                message=f"{len(failed)} {attempts} of {tasks} "
                + ("task" if tasks == 1 else "tasks")
                + " failed.",
                advice="Their errors are listed under Failed attempts; `kubemr logs` has more.",
                short=f"{len(failed)} failed {attempts}",
            )
        )
    omitted = _count(report, "attempts_omitted")
    if omitted:
        found.append(
            ReportWarning(
                kind="omitted",
                message=(
                    f"{omitted:,} attempts are not in the report's data (it keeps the failed, "
                    "slowest and fastest attempts of large jobs): the timeline, throughput "
                    "and distributions show a part of the job."
                ),
                advice="The totals and the cost cover the whole job.",
                short=f"{omitted:,} attempts left out of the report",
            )
        )
    return found


SUMMARY_KINDS = ("hot-key", "skew", "stragglers")
"""The warnings the command line repeats after a run."""


def analyse(report: dict[str, Any]) -> Analysis:
    attempts = read_attempts(report)
    waves = waves_of(attempts)
    stragglers = stragglers_of(attempts)
    skew = skew_of(report)
    failed = [a for a in attempts if a.outcome == "failed"]
    timeline = timeline_of(report, attempts, waves, stragglers)
    return Analysis(
        attempts=attempts,
        waves=waves,
        timeline=timeline,
        throughput=throughput_of(attempts, timeline.end),
        stragglers=stragglers,
        skew=skew,
        warnings=warnings_of(report, waves, stragglers, skew, failed),
        wall_seconds=wall_seconds(report),
        failed=failed,
    )


def summary_warnings(analysis: Analysis) -> list[ReportWarning]:
    return [w for w in analysis.warnings if w.kind in SUMMARY_KINDS]
