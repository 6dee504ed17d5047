"""The job report: layout into worker slots, spans, throughput, stragglers, skew, warnings
(pure), cost and price tables, and the page and picture drawn from a report dict in the
``kubemr-report/1`` format."""

from __future__ import annotations

import copy
import heapq
import io
import itertools
import json
import re
import struct
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from kubemr.cli import report as report_cli
from kubemr.report import analysis as an
from kubemr.report import render
from kubemr.report.cost import Prices, PriceTableError, job_cost, load_prices, parse_prices

T0 = 1764125000.0
MIB = 1024**2
EVIL = "</script><b>"
PRICES = Prices(vcpu_hour=0.04, gib_hour=0.005, per_1000_requests=0.005, per_gb_transferred=0.01)


# -- report dicts -------------------------------------------------------------------------


def attempt(
    step: int,
    wave: str,
    index: int,
    start: float,
    end: float,
    worker: str,
    *,
    outcome: str = "committed",
    bytes_in: int = 0,
    records_in: int = 0,
    name: str | None = None,
    error: str | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    return {
        "step": step,
        "wave": wave,
        "index": index,
        "attempt": name or f"{wave[0]}{step}{index}",
        "outcome": outcome,
        "started": T0 + start,
        "finished": T0 + end,
        "worker": worker,
        "node": node,
        "records_in": records_in,
        "records_out": records_in,
        "bytes_in": bytes_in,
        "bytes_out": bytes_in // 3,
        "spill_bytes": 0,
        "shuffle_bytes_fetched": bytes_in if wave == "reduce" else 0,
        "storage_requests": 6,
        "cpu_seconds": round((end - start) * 0.9, 3),
        "peak_rss_bytes": 300 * MIB,
        "error": error,
    }


def report_of(
    attempts: list[dict[str, Any]],
    *,
    runner: str = "local",
    partitions: list[dict[str, Any]] | None = None,
    steps: int = 1,
    finished: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    end = max((a["finished"] for a in attempts), default=T0) - T0 + 0.5
    base = {
        "format": "kubemr-report/1",
        "job": "wordcount",
        "job_id": "wordcount-7f3a",
        "runner": runner,
        "status": "succeeded",
        "started": T0,
        "finished": T0 + (end if finished is None else finished),
        "input": {"files": 3, "bytes": 500 * MIB, "records": 10_000_000},
        "output": {"url": "counts/", "bytes": 2 * MIB, "records": 84_000},
        "workers": {"slots": 4, "cpu_request": None, "memory_request_bytes": None},
        "steps": [{"step": s, "maps": 1, "reduces": 1} for s in range(steps)],
        "attempts": attempts,
        "attempts_omitted": 0,
        "partitions": partitions or [],
        "totals": {
            "cpu_seconds": 10.0,
            "memory_gib_seconds": 4.0,
            "worker_seconds": 12.0,
            "requested_cpu_seconds": None,
            "storage_requests": 100,
            "bytes_read": 1000,
            "bytes_written": 500,
        },
    }
    base.update(extra)
    return base


def realistic_report() -> dict[str, Any]:
    """A word count of two steps on 4 local workers: 8 maps and 3 reducers, then 3 maps and
    2 reducers; map 2's first attempt fails on a record, map 5 straggles, reducer 1 of
    step 0 gets the hot key "the"."""
    workers = [f"build-7:{pid}" for pid in (4101, 4102, 4103, 4104)]
    rows: list[dict[str, Any]] = []

    def wave(tasks: list[tuple[Any, ...]], begin: float) -> float:
        free = [(begin, w) for w in workers]
        heapq.heapify(free)
        end = begin
        for step, kind, index, seconds, size, extra in tasks:
            at, worker = heapq.heappop(free)
            rows.append(
                attempt(
                    step, kind, index, at, at + seconds, worker,
                    bytes_in=size, records_in=size // 48, **extra,
                )
            )  # fmt: skip
            heapq.heappush(free, (at + seconds + 0.05, worker))
            end = max(end, at + seconds)
        return end

    error = f"ValueError: line 1234 of books/a.txt: cannot parse {EVIL!r} (mapper)"
    maps = [
        (0, "map", i, d, 20 * MIB if i == 7 else 64 * MIB, {})
        for i, d in enumerate([9.1, 8.4, 2.7, 9.6, 8.8, 31.0, 9.9, 8.7])
    ]
    maps[2] = (0, "map", 2, 2.7, 64 * MIB, {"outcome": "failed", "name": "m02a", "error": error})
    maps.append((0, "map", 2, 10.2, 64 * MIB, {"name": "m02b"}))
    end = wave(maps, 1.5)
    sizes = [41 * MIB, 187 * MIB, 39 * MIB]
    end = wave([(0, "reduce", i, d, sizes[i], {}) for i, d in enumerate([4.0, 19.0, 4.2])], end)
    step1 = [(1.2, 2), (3.5, 9), (1.1, 2)]  # seconds, MiB
    end = wave([(1, "map", i, d, s * MIB, {}) for i, (d, s) in enumerate(step1)], end)
    end = wave([(1, "reduce", i, d, 3 * MIB, {}) for i, d in enumerate([1.5, 1.6])], end)
    partitions = [
        {"step": 0, "partition": p, "bytes": sizes[p], "records": r, "top_keys": []}
        for p, r in enumerate([2_100_000, 9_400_000, 2_000_000])
    ]
    partitions[1]["top_keys"] = [
        ['"the"', 5_200_000],
        ['"and"', 900_000],
        ['"of"', 610_000],
        [json.dumps(EVIL), 1000],
    ]
    partitions += [
        {"step": 1, "partition": p, "bytes": 3 * MIB, "records": 40_000, "top_keys": []}
        for p in range(2)
    ]
    rep = report_of(rows, partitions=partitions, steps=2, finished=end + 0.6)
    rep["steps"] = [{"step": 0, "maps": 8, "reduces": 3}, {"step": 1, "maps": 3, "reduces": 2}]
    rep["totals"] = {
        "cpu_seconds": round(sum(a["cpu_seconds"] for a in rows), 3),
        "memory_gib_seconds": round(
            sum((a["finished"] - a["started"]) * a["peak_rss_bytes"] / 1024**3 for a in rows), 3
        ),
        "worker_seconds": round(sum(a["finished"] - a["started"] for a in rows), 3),
        "requested_cpu_seconds": None,
        "storage_requests": sum(a["storage_requests"] for a in rows),
        "bytes_read": sum(a["bytes_in"] for a in rows),
        "bytes_written": sum(a["bytes_out"] for a in rows),
    }
    return rep


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    return realistic_report()


@pytest.fixture(scope="module")
def drawn(real: dict[str, Any]) -> tuple[an.Analysis, dict[str, str], str, bytes]:
    analysis = an.analyse(real)
    svgs = render.chart_svgs(real, analysis)
    page = render.render_html(real, analysis, job_cost(real, PRICES), svgs)
    return analysis, svgs, page, render.render_png(real, analysis)


# -- analysis -----------------------------------------------------------------------------


def _rows_never_overlap(timeline: an.Timeline) -> None:
    by_row: dict[int, list[an.Attempt]] = {}
    for bar in timeline.bars:
        by_row.setdefault(bar.row, []).append(bar.attempt)
    for row, items in by_row.items():
        items.sort(key=lambda a: a.start)
        for before, after in itertools.pairwise(items):
            assert before.end <= after.start, f"row {row}: {before} overlaps {after}"


def test_local_workers_keep_one_row_each() -> None:
    rows = [
        attempt(0, "map", 0, 0, 3, "h:1"),
        attempt(0, "map", 1, 0, 2, "h:2"),
        attempt(0, "map", 2, 2.1, 5, "h:2"),
        attempt(0, "map", 3, 3.1, 4, "h:1"),
        attempt(0, "reduce", 0, 5.2, 6, "h:1"),
    ]
    tl = an.analyse(report_of(rows)).timeline
    assert tl.rows == 2
    assert tl.row_labels == ["h:1", "h:2"]
    assert {(b.attempt.worker, b.row) for b in tl.bars} == {("h:1", 0), ("h:2", 1)}
    _rows_never_overlap(tl)


def test_pods_pack_into_the_fewest_rows() -> None:
    # Five pods, at most two at a time: two rows, each pod in the lowest free one.
    spans = [(0, 4), (1, 3), (3.5, 6), (4, 8), (6, 7)]
    rows = [attempt(0, "map", i, s, e, f"wc-map-0-{i}-x") for i, (s, e) in enumerate(spans)]
    tl = an.analyse(report_of(rows, runner="kubernetes")).timeline
    assert tl.rows == 2
    assert tl.row_labels == ["slot 1", "slot 2"]
    assert [b.row for b in sorted(tl.bars, key=lambda b: b.attempt.index)] == [0, 1, 1, 0, 1]
    _rows_never_overlap(tl)


def test_realistic_layout_waves_and_spans(real: dict[str, Any]) -> None:
    a = an.analyse(real)
    assert a.timeline.rows == 4  # the 4 local worker processes
    _rows_never_overlap(a.timeline)
    assert [(w.step, w.wave, w.tasks, w.attempts, w.failed) for w in a.waves] == [
        (0, "map", 8, 9, 1),
        (0, "reduce", 3, 3, 0),
        (1, "map", 3, 3, 0),
        (1, "reduce", 2, 2, 0),
    ]
    m0 = a.waves[0]
    assert m0.start == pytest.approx(1.5)
    assert m0.bytes_in == 7 * 64 * MIB + 20 * MIB  # committed attempts only
    assert m0.duration is not None and m0.duration.max == pytest.approx(31.0)
    assert m0.duration.median == pytest.approx((9.1 + 9.6) / 2)
    # Waves follow each other: a wave starts when the one before has ended.
    for before, after in zip(a.waves, a.waves[1:]):
        assert before.end <= after.start + 1e-9
    assert a.wall_seconds == pytest.approx(real["finished"] - T0)


def test_throughput_spreads_each_attempts_input_over_its_run(real: dict[str, Any]) -> None:
    a = an.analyse(real)
    tp = a.throughput
    assert tp.bin_seconds in (1.0, 2.0)  # ~40 bins over ~60 s
    assert tp.starts[-1] < a.timeline.end <= tp.starts[-1] + tp.bin_seconds + 1e-9
    for wave in an.WAVES:
        total = sum(x["bytes_in"] for x in real["attempts"] if x["wave"] == wave)
        assert sum(tp.bytes_per_second[wave]) * tp.bin_seconds == pytest.approx(total)
        records = sum(x["records_in"] for x in real["attempts"] if x["wave"] == wave)
        assert sum(tp.records_per_second[wave]) * tp.bin_seconds == pytest.approx(records)
    # No reducer reads before the first reduce wave starts.
    before = [b for b, start in enumerate(tp.starts) if start + tp.bin_seconds <= a.waves[1].start]
    assert len(before) > 5
    assert {tp.bytes_per_second["reduce"][b] for b in before} == {0.0}
    assert min(tp.bytes_per_second["map"][b] for b in before[1:]) > 0


def test_one_second_attempt_in_a_two_bin_job() -> None:
    rows = [
        attempt(0, "map", 0, 0, 1, "h:1", bytes_in=100),
        attempt(0, "map", 1, 0, 0, "h:2", bytes_in=7),
    ]
    tp = an.throughput_of(an.read_attempts(report_of(rows)), 1.0)
    assert sum(tp.bytes_per_second["map"]) * tp.bin_seconds == pytest.approx(107)


def test_stragglers_need_twice_the_median_and_five_seconds_more() -> None:
    durations = [10, 10, 10, 20, 19.9]  # median 10: 20 is 2x and 10 s more; 19.9 is not 2x
    rows = [attempt(0, "map", i, 0, d, f"h:{i}", bytes_in=1000) for i, d in enumerate(durations)]
    slow = an.stragglers_of(an.read_attempts(report_of(rows)))
    assert [(s.attempt.index, s.factor) for s in slow] == [(3, pytest.approx(2.0))]
    assert slow[0].input_factor == pytest.approx(1.0)
    # Short tasks: 3 s against a 1 s median is 3x, but only 2 s lost: not a straggler.
    quick = [attempt(0, "map", i, 0, d, f"h:{i}") for i, d in enumerate([1, 1, 1, 3])]
    assert an.stragglers_of(an.read_attempts(report_of(quick))) == []
    # Two committed tasks say too little.
    pair = [attempt(0, "map", i, 0, d, f"h:{i}") for i, d in enumerate([1, 60])]
    assert an.stragglers_of(an.read_attempts(report_of(pair))) == []


def test_realistic_stragglers_and_their_advice(real: dict[str, Any]) -> None:
    a = an.analyse(real)
    assert [(s.attempt.step, s.attempt.wave, s.attempt.index) for s in a.stragglers] == [
        (0, "map", 5),
        (0, "reduce", 1),
    ]
    map_warning, reduce_warning = [w for w in a.warnings if w.kind == "stragglers"]
    assert "1 task of the map wave of step 0" in map_warning.message
    assert "Its input was not larger" in map_warning.advice  # map 5 read a normal split
    assert "step 0 map 5" in map_warning.message and "31.0s" in map_warning.message
    assert "1 task of the reduce wave of step 0" in reduce_warning.message
    assert "more reducers" in reduce_warning.advice  # reducer 1 got 4.6x the median input


def test_big_inputs_make_the_advice_a_smaller_split_size() -> None:
    rows = [attempt(0, "map", i, 0, 10, f"h:{i}", bytes_in=64 * MIB) for i in range(4)]
    rows.append(attempt(0, "map", 4, 0, 80, "h:4", bytes_in=900 * MIB))  # a .gz read whole
    (warning,) = an.analyse(report_of(rows)).warnings
    assert warning.kind == "stragglers"
    assert "--split-size" in warning.advice and "compressed" in warning.advice
    assert "smaller --split-size" in warning.short


def test_skew_with_a_hot_key(real: dict[str, Any]) -> None:
    a = an.analyse(real)
    s0, s1 = a.skew
    assert s0.partition_bytes == [41 * MIB, 187 * MIB, 39 * MIB]
    assert s0.largest == 1 and s0.median_bytes == 41 * MIB
    assert s0.ratio == pytest.approx(187 / 41)
    assert s0.skewed and not s1.skewed
    assert s0.top_keys[0].key == '"the"'
    assert s0.top_keys[0].share == pytest.approx(5_200_000 / 9_400_000)
    (hot,) = [w for w in a.warnings if w.kind == "hot-key"]
    assert '"the"' in hot.message and "reducer 1 of step 0" in hot.message
    assert "combiner" in hot.advice and "custom partitioner" in hot.advice
    assert not [w for w in a.warnings if w.kind == "skew"]  # the hot key explains it


def test_skew_without_a_hot_key_advises_more_reducers() -> None:
    parts = [
        {"step": 0, "partition": p, "bytes": b, "records": 1000, "top_keys": [['"k"', 10]]}
        for p, b in enumerate([30 * MIB, 100 * MIB, 20 * MIB, 40 * MIB])
    ]
    rows = [attempt(0, "map", 0, 0, 1, "h:1")]
    (warning,) = an.analyse(report_of(rows, partitions=parts)).warnings
    assert warning.kind == "skew"
    assert "reducer 1 got 100.0 MiB, 2.9x the median" in warning.message
    assert "more reducers" in warning.short and "custom partitioner" in warning.short
    # The same shape in small: every reducer is quick, nothing to say.
    small = [dict(p, bytes=p["bytes"] // 1024) for p in parts]
    assert an.analyse(report_of(rows, partitions=small)).warnings == []


def test_skew_into_one_reducer_of_several() -> None:
    parts = [
        {"step": 0, "partition": p, "bytes": b, "records": 5, "top_keys": []}
        for p, b in enumerate([0, 0, 50 * MIB])
    ]
    a = an.analyse(report_of([attempt(0, "map", 0, 0, 1, "h:1")], partitions=parts))
    assert a.skew[0].ratio is None and a.skew[0].skewed
    (warning,) = a.warnings
    assert "most reducers got nothing" in warning.message


def test_skew_is_measured_uncompressed_where_the_report_has_it() -> None:
    # One repeated key compresses far better than the rest: stored sizes look even.
    parts = [
        {"step": 0, "partition": p, "bytes": 350_000, "raw_bytes": raw, "records": n,
         "top_keys": [['"the"', 1_750_000]] if p == 2 else []}
        for p, (raw, n) in enumerate([(8 * MIB, 800_000), (8 * MIB, 810_000),
                                      (22 * MIB, 2_560_000), (8 * MIB, 805_000)])
    ]  # fmt: skip
    rows = [attempt(0, "map", 0, 0, 1, "h:1")]
    (s,) = an.skew_of(report_of(rows, partitions=parts))
    assert s.uncompressed and s.largest == 2 and s.ratio == pytest.approx(22 / 8)
    (warning,) = an.analyse(report_of(rows, partitions=parts)).warnings
    assert warning.kind == "hot-key" and "about 68% of its records" in warning.message
    stored = [{k: v for k, v in p.items() if k != "raw_bytes"} for p in parts]
    (s,) = an.skew_of(report_of(rows, partitions=stored))
    assert not s.uncompressed and not s.skewed


def test_a_reducer_with_many_more_records_straggles_for_its_input() -> None:
    # Compressed inputs of the same size; one reducer got three times the records.
    rows = [
        attempt(0, "reduce", i, 0, d, f"h:{i}", bytes_in=350_000, records_in=n)
        for i, (d, n) in enumerate([(5, 800_000), (5, 810_000), (16, 2_560_000), (5, 805_000)])
    ]
    (slow,) = an.stragglers_of(an.read_attempts(report_of(rows)))
    assert slow.input_factor == pytest.approx(2_560_000 / 807_500)
    (warning,) = an.analyse(report_of(rows)).warnings
    assert "Its input was larger" in warning.advice and "more reducers" in warning.short


def test_summary_line(real: dict[str, Any]) -> None:
    line = report_cli.summary_line(real)
    assert line is not None and "\n" not in line
    assert line.startswith('kubemr: warning: hot key "the" (~55% of reducer 1 of step 0')
    assert "add a combiner or a custom partitioner" in line
    assert "1 straggling map task (step 0 map 5: 31s vs median 9s)" in line
    assert line.endswith("(kubemr report counts/)")
    assert "failed" not in line  # failures are reported by the run itself
    clean = report_of([attempt(0, "map", i, 0, 5, f"h:{i}") for i in range(4)])
    assert report_cli.summary_line(clean) is None


def test_summary_line_keeps_keys_on_one_harmless_line() -> None:
    key = json.dumps("\x1b[31mred\nline") + "x" * 80  # not JSON-escaped by whoever wrote it
    parts = [
        {
            "step": 0,
            "partition": p,
            "bytes": b,
            "records": 100,
            "top_keys": [[key.replace("\\u001b", "\x1b"), 90]],
        }
        for p, b in enumerate([10 * MIB, 90 * MIB, 10 * MIB])
    ]
    line = report_cli.summary_line(report_of([attempt(0, "map", 0, 0, 1, "h")], partitions=parts))
    assert line is not None
    assert "\x1b" not in line and "\n" not in line and "…" in line


def test_report_data_errors_name_the_record() -> None:
    rep = report_of([attempt(0, "map", 0, 0, 1, "h:1"), attempt(0, "map", 1, 0, 1, "h:1")])
    rows = rep["attempts"]
    del rows[1]["finished"]
    with pytest.raises(an.ReportDataError, match=r"attempts\[1\]: 'finished' is missing"):
        an.analyse(rep)
    rows[1]["finished"] = T0 - 5
    with pytest.raises(an.ReportDataError, match=r"attempts\[1\]: finished before it started"):
        an.analyse(rep)
    rows[1]["finished"], rows[1]["wave"] = T0 + 1, "shuffle"
    with pytest.raises(an.ReportDataError, match=r"attempts\[1\]: wave 'shuffle'"):
        an.analyse(rep)
    with pytest.raises(an.ReportDataError, match="format 'kubemr-report/9'"):
        an.analyse(report_of([], format="kubemr-report/9"))


def test_analysis_is_deterministic(real: dict[str, Any]) -> None:
    shuffled = copy.deepcopy(real)
    shuffled["attempts"].reverse()
    first, second = an.analyse(real), an.analyse(shuffled)
    assert [(b.row, b.attempt.attempt) for b in first.timeline.bars] == [
        (b.row, b.attempt.attempt) for b in second.timeline.bars
    ]
    assert first.warnings == second.warnings


def test_quantile_and_nice_step() -> None:
    assert an.quantile([1, 2, 3, 4], 0.5) == 2.5
    assert an.quantile([5], 0.9) == 5
    assert [an.nice_step(x) for x in (0.03, 0.7, 1.0, 1.2, 3, 7, 45)] == [
        0.05, 1, 1, 2, 5, 10, 50,
    ]  # fmt: skip


# -- cost ---------------------------------------------------------------------------------


def test_cost_local_bills_what_was_used() -> None:
    rep = report_of([])
    rep["totals"].update(cpu_seconds=7200.0, memory_gib_seconds=36000.0, storage_requests=4000,
                         bytes_read=3 * 10**9, bytes_written=10**9)  # fmt: skip
    cost = job_cost(rep, PRICES)
    amounts = {line.item: line.amount for line in cost.lines}
    assert amounts == {
        "worker time": None,
        "CPU used": pytest.approx(0.08),  # 2 vCPU-hours x 0.04
        "memory used": pytest.approx(0.05),  # 10 GiB-hours x 0.005
        "storage requests": pytest.approx(0.02),  # 4 x 0.005
        "bytes transferred": pytest.approx(0.04),  # 4 GB x 0.01
    }
    assert cost.total == pytest.approx(0.19) and cost.currency == "USD"
    assert cost.cpu_use is None
    assert job_cost(rep).total is None  # no prices: quantities only


def test_cost_on_kubernetes_bills_requests_and_shows_use() -> None:
    rep = report_of([], runner="kubernetes")
    rep["workers"] = {"slots": 4, "cpu_request": 2.0, "memory_request_bytes": 4 * 1024**3}
    rep["totals"].update(worker_seconds=1800.0, requested_cpu_seconds=3600.0, cpu_seconds=900.0,
                         memory_gib_seconds=1800.0)  # fmt: skip
    cost = job_cost(rep, PRICES)
    lines = {line.item: line for line in cost.lines}
    assert lines["CPU used"].amount is None and lines["memory used"].amount is None
    assert lines["CPU requested"].amount == pytest.approx(0.04)
    assert lines["memory requested"].quantity == pytest.approx(7200.0)  # 1800 pod-s x 4 GiB
    assert lines["memory requested"].amount == pytest.approx(0.01)
    assert lines["worker time"].unit == "pod-s"
    assert cost.cpu_use == pytest.approx(0.25) and cost.memory_use == pytest.approx(0.25)


def test_price_tables_from_json_and_toml(tmp_path: Any) -> None:
    table = {"vcpu_hour": 0.04, "gib_hour": 0.005, "per_1000_requests": 0.005,
             "per_gb_transferred": 0.01, "currency": "EUR"}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(table))
    (tmp_path / "p.toml").write_text(
        "vcpu_hour = 0.04\ngib_hour = 0.005\nper_1000_requests = 0.005\n"
        'per_gb_transferred = 0.01\ncurrency = "EUR"\n'
    )
    expected = Prices(0.04, 0.005, 0.005, 0.01, "EUR")
    assert load_prices(str(tmp_path / "p.json")) == expected
    assert load_prices(str(tmp_path / "p.toml")) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vcpu_hours": 1}, "unknown key 'vcpu_hours'; the keys are vcpu_hour, gib_hour"),
        ({"gib_hour": None}, "'gib_hour' is None; give a price per GiB-hour"),
        ({"gib_hour": -1}, "'gib_hour' is -1; give a price"),
        ({"per_1000_requests": True}, "'per_1000_requests' is True"),
        ({"per_gb_transferred": "0.01"}, "'per_gb_transferred' is '0.01'"),
        ({"currency": ""}, "'currency' is ''"),
    ],
)
def test_price_table_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    table = {"vcpu_hour": 0.04, "gib_hour": 0.005, "per_1000_requests": 0.005,
             "per_gb_transferred": 0.01} | change  # fmt: skip
    with pytest.raises(PriceTableError, match=re.escape(f"prices.toml: {message}")):
        parse_prices(table, "prices.toml")


def test_price_table_missing_key_and_bad_files(tmp_path: Any) -> None:
    with pytest.raises(PriceTableError, match=r"'per_gb_transferred' .* is missing; give 0"):
        parse_prices({"vcpu_hour": 1, "gib_hour": 1, "per_1000_requests": 1}, "p")
    (tmp_path / "bad.toml").write_text("vcpu_hour = = 1\n")
    with pytest.raises(PriceTableError, match=r"bad.toml: not valid TOML"):
        load_prices(str(tmp_path / "bad.toml"))
    (tmp_path / "bad.json").write_text("{vcpu_hour: 1}")
    with pytest.raises(PriceTableError, match=r"bad.json: not valid JSON"):
        load_prices(str(tmp_path / "bad.json"))
    with pytest.raises(PriceTableError, match=r"nope.json: No such file"):
        load_prices(str(tmp_path / "nope.json"))


# -- the page and the picture --------------------------------------------------------------


def test_page_has_the_charts_and_the_numbers(
    real: dict[str, Any], drawn: tuple[an.Analysis, dict[str, str], str, bytes]
) -> None:
    analysis, svgs, page, _png = drawn
    assert set(svgs) == {"timeline", "throughput", "distributions", "skew"}
    for name in svgs:
        assert f'<section id="{name}">' in page
    assert page.count("<svg ") == 4
    # The timeline: one bar per attempt (matplotlib draws a bar as a path with the wave's
    # fill), the failed one with a red edge, wave colours in the legend.
    timeline = svgs["timeline"]
    for order in range(4):
        assert render.wave_colour(order) in timeline
    assert render.FAILED_COLOUR in timeline
    bars = len(re.findall(r'<g id="timeline-patch_\d+">\s*<path [^>]*clip-path', timeline))
    assert bars == len(real["attempts"])
    for label in ("build-7:4101", "build-7:4104", "step 0 map", "step 1 reduce", "step 0 map 5"):
        assert label in timeline
    # Numbers from the dict.
    for text in (
        "<h1>wordcount</h1>",
        "500.0 MiB, 10,000,000 records",  # input
        "2.0 MiB, 84,000 records",  # output
        "17 (1 failed)",  # attempts
        '&quot;the&quot;</td><td class="n">5,200,000</td><td class="n">55.3%',
        "reducer 1: 187.0 MiB, 9,400,000 records",
        "31s",  # the slowest map
        "m02a",  # the failed attempt
        "CPU used",
    ):
        assert text in page, text
    total = job_cost(real, PRICES).total
    assert total is not None and f"<b>{total:.3g} USD</b>" in page
    for w in analysis.warnings:
        assert render._e(w.message) in page


def test_page_is_self_contained(drawn: tuple[an.Analysis, dict[str, str], str, bytes]) -> None:
    page = drawn[2]
    lowered = page.lower()
    for banned in ("<script", "<link", "<img", "<iframe", "@import", "url(http", "src="):
        assert banned not in lowered, banned
    # The only addresses are XML namespace names, which nothing fetches.
    addresses = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert addresses <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    # Ids are unique across the inlined charts.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_job_strings_are_escaped(real: dict[str, Any]) -> None:
    rep = copy.deepcopy(real)
    rep["job"] = f"wc{EVIL}<img src=x onerror=alert(1)>"
    for row in rep["attempts"]:  # one worker's row label
        if row["worker"] == "build-7:4101":
            row["worker"] = f"host{EVIL}:1"
    rep["attempts"][0]["node"] = f"node{EVIL}"
    analysis = an.analyse(rep)
    page = render.render_html(rep, analysis, job_cost(rep), render.chart_svgs(rep, analysis))
    assert EVIL not in page and "<img" not in page and "<b>wc" not in page
    assert "wc&lt;/script&gt;&lt;b&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    # The key holding it, in the top keys table, and the error message quoting it.
    assert f'<td class="key">{render._e(json.dumps(EVIL))}</td>' in page
    assert "cannot parse &#x27;&lt;/script&gt;&lt;b&gt;&#x27; (mapper)" in page
    # The worker name as a row label of the timeline (matplotlib's SVG escapes it).
    assert "host&lt;/script&gt;&lt;b&gt;:1" in page
    # Whatever the strings, the document has exactly the elements kubemr writes.
    assert page.count("<b>") == page.count("</b>")
    assert "</script" not in page.lower()


def test_dollar_signs_are_not_math(real: dict[str, Any]) -> None:
    rep = copy.deepcopy(real)
    for row in rep["attempts"]:
        row["worker"] = row["worker"].replace("build-7", "$x^2$")
    analysis = an.analyse(rep)
    assert "$x^2$:4101" in render.chart_svgs(rep, analysis)["timeline"]


def test_drawing_is_deterministic(real: dict[str, Any]) -> None:
    analysis = an.analyse(real)
    assert render.chart_svgs(real, analysis) == render.chart_svgs(real, analysis)
    cost = job_cost(real)
    svgs = render.chart_svgs(real, analysis)
    assert render.render_html(real, analysis, cost, svgs) == render.render_html(
        real, analysis, cost, svgs
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_is_the_charts(drawn: tuple[an.Analysis, dict[str, str], str, bytes]) -> None:
    from PIL import Image

    png = drawn[3]
    width, height = png_size(png)
    assert width == render.WIDTH_IN * render.PNG_DPI
    assert 900 <= height <= 2500
    assert 20_000 < len(png) < 1_500_000
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = {c for _n, c in image.getcolors(maxcolors=1 << 20) or []}
    for order in range(4):  # every wave's colour is drawn somewhere
        hexed = render.wave_colour(order)
        assert tuple(int(hexed[i : i + 2], 16) for i in (1, 3, 5)) in colours, hexed


def test_map_only_running_job_without_partitions() -> None:
    rows = [attempt(0, "map", i, i * 0.5, i * 0.5 + 2, f"pod-{i}") for i in range(3)]
    rep = report_of(rows, runner="kubernetes", status="running", partitions=[])
    rep["finished"] = None
    analysis = an.analyse(rep)
    svgs = render.chart_svgs(rep, analysis)
    assert "skew" not in svgs
    page = render.render_html(rep, analysis, job_cost(rep), svgs)
    assert "running (" in page and 'class="status running"' in page
    assert "Give a price table" in page
    assert png_size(render.render_png(rep, analysis))[0] == 1000


def test_omitted_attempts_are_said(real: dict[str, Any]) -> None:
    rep = dict(real, attempts_omitted=1234)
    analysis = an.analyse(rep)
    page = render.render_html(rep, analysis, job_cost(rep), {})
    assert "1,234 attempts are not in the report" in page
    assert "17 (1 failed), 1,234 more not in the data" in page


# -- the command ---------------------------------------------------------------------------


def _app() -> Any:
    import typer

    app = typer.Typer()
    app.command()(report_cli.report)
    return app


def _saved(tmp_path: Any, rep: dict[str, Any]) -> str:
    """``rep`` as the ``_REPORT.json`` of an output directory."""
    out = tmp_path / "counts"
    out.mkdir()
    (out / "_REPORT.json").write_text(json.dumps(rep))
    return str(out)


def test_report_command_writes_page_picture_and_json(
    real: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _saved(tmp_path, real)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES.__dict__))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), [out, "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wordcount-report.html").read_text().startswith("<!DOCTYPE html>")
    png_size((tmp_path / "wordcount-report.png").read_bytes())
    assert "wrote the report's page to wordcount-report.html" in result.stderr
    assert "kubemr: warning: hot key" in result.stderr

    result = CliRunner().invoke(_app(), [out, "--json", "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["files"] == {}
    assert doc["cost"]["total"] == pytest.approx(job_cost(real, PRICES).total)
    assert [w["kind"] for w in doc["warnings"]] == ["hot-key", "stragglers", "stragglers", "failed"]
    assert doc["failed"][0]["error"].startswith("ValueError: line 1234")
    assert doc["skew"][0]["top_keys"][0]["key"] == '"the"'


def test_report_command_errors(
    real: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _saved(tmp_path, real)
    bad = tmp_path / "prices.toml"
    bad.write_text("vcpu_hour = 1\n")
    result = CliRunner().invoke(_app(), [out, "--prices", str(bad)])
    assert result.exit_code == 2
    assert "'gib_hour' (per GiB-hour of memory) is missing" in result.stderr
    result = CliRunner().invoke(_app(), [out, "--html", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 2
    assert "cannot write the report to" in result.stderr
    result = CliRunner().invoke(_app(), [str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no report at" in result.stderr
    # Without matplotlib: say how to get it, and that --json works without it.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(_app(), [out])
    assert result.exit_code == 2
    assert "pip install 'kubemr[report]'" in result.stderr and "--json" in result.stderr
    assert CliRunner().invoke(_app(), [out, "--json"]).exit_code == 0


def test_after_a_real_run(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A word count whose reducer gets one hot key (no combiner), run for real: its
    _REPORT.json gives the warning line, and --report writes the page and the picture."""
    import kubemr

    class HotKeyCount(kubemr.MapReduce):
        def mapper(self, line: str) -> Any:
            for word in line.split():
                yield word, 1

        def reducer(self, word: str, counts: Any) -> Any:
            yield word, sum(counts)

    # 2.4 million "the" pairs: over SKEW_MIN_BYTES uncompressed in one reducer.
    lines = [" ".join(["the"] * 12 + [f"w{i % 5000}", f"v{i % 3000}"]) for i in range(200_000)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    kubemr.run(
        HotKeyCount, inputs=[str(tmp_path / "in.txt")], output=out, reducers=4,
        split_size="4MiB", workers=2, progress=False,
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    report_cli.after_job(out, write=True)
    err = capsys.readouterr().err
    assert 'kubemr: warning: hot key "the"' in err, err
    assert "add a combiner or a custom partitioner" in err
    assert "wrote the report to HotKeyCount-report.html and HotKeyCount-report.png" in err
    page = (tmp_path / "HotKeyCount-report.html").read_text()
    assert "<h1>HotKeyCount</h1>" in page and '<section id="skew">' in page
    png_size((tmp_path / "HotKeyCount-report.png").read_bytes())
    # A target with no report: a note, and the run is not failed by it.
    report_cli.after_job(str(tmp_path / "nowhere"), write=True)
    assert "kubemr: no report: no report at" in capsys.readouterr().err
