"""The job report's data: every attempt's record and ``_REPORT.json``, from real small
jobs on the local runner (and ``kubemr worker`` as a pod runs it), checked against
what is known of the job apart from the report: its input, its counters, its shuffle
sizes, the clock around it, the attempt made to fail."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubemr.errors import JobFailed, OutputError
from kubemr.report.records import (
    FORMAT,
    ReportNotFound,
    bound_rows,
    failed_row,
    load_report,
    partition_rows,
    report_summary,
)
from kubemr.results import TaskResult
from kubemr.shuffle import SAMPLE_KEYS, top_sampled_keys
from tests.jobfiles import SKEWED_RETRIED, job_file, run_file, run_worker

LINES = ["hot hot" if i % 3 else f"k{i % 211} hot k{i % 7}" for i in range(3000)]
LINES.insert(1700, "trigger")
WORDS = Counter(w for line in LINES for w in line.split())


@pytest.fixture(scope="module")
def skewed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the skewed job with a failing first attempt; the work dir kept."""
    tmp = tmp_path_factory.mktemp("skewed")
    source = job_file(tmp, SKEWED_RETRIED.format(marker=str(tmp / "tried")))
    data = tmp / "in.txt"
    data.write_text("\n".join(LINES) + "\n")
    out = tmp / "out"
    before = time.time()
    summary = run_file(
        source,
        inputs=[str(data)],
        output=str(out),
        work_dir=str(tmp / "work"),
        keep_work=True,
        reducers=3,
        split_size=4096,
        workers=2,
        max_attempts=2,
    )
    after = time.time()
    report = json.loads((out / "_REPORT.json").read_text())
    return {
        "summary": summary,
        "report": report,
        "out": out,
        "work": tmp / "work" / summary["job_id"],
        "span": (before, after),
    }


def sorted_median(report: dict[str, Any]) -> float:
    sizes = sorted(p["bytes"] for p in report["partitions"])
    return sizes[len(sizes) // 2]  # three partitions


def rows_of(report: dict[str, Any], wave: str, outcome: str | None = None) -> list[dict]:
    return [
        r
        for r in report["attempts"]
        if r["wave"] == wave and (outcome is None or r["outcome"] == outcome)
    ]


# -- the attempts ------------------------------------------------------------------------------
def test_every_attempt_has_a_row_and_the_failed_one_its_error(skewed_run) -> None:
    summary, report = skewed_run["summary"], skewed_run["report"]
    assert report["format"] == FORMAT and report["status"] == "succeeded"
    assert report["job_id"] == summary["job_id"] and report["runner"] == "local"
    maps, reduces = summary["tasks"]["map"], summary["tasks"]["reduce"]
    assert maps > 2 and reduces == 3
    committed_maps = rows_of(report, "map", "committed")
    assert sorted(r["index"] for r in committed_maps) == list(range(maps))
    assert sorted(r["index"] for r in rows_of(report, "reduce", "committed")) == [0, 1, 2]
    failed = [r for r in report["attempts"] if r["outcome"] == "failed"]
    assert len(failed) == 1 and summary["attempts"] == {"total": maps + 3 + 1, "failed": 1}
    bad = failed[0]
    assert bad["wave"] == "map" and bad["attempt"] == "a1"
    assert "the first attempt of this task fails" in bad["error"]
    assert bad["error"].startswith("user-code: ")
    retried = [r for r in committed_maps if r["index"] == bad["index"]]
    assert [r["attempt"] for r in retried] == ["a2"]
    assert report["attempts_omitted"] == 0
    assert len(report["attempts"]) == maps + 3 + 1


def test_times_lie_within_the_job_and_workers_are_this_hosts_processes(skewed_run) -> None:
    report = skewed_run["report"]
    before, after = skewed_run["span"]
    assert before <= report["started"] < report["finished"] <= after
    for row in report["attempts"]:
        assert report["started"] <= row["started"] <= row["finished"] <= report["finished"]
        assert re.fullmatch(r".+:\d+", row["worker"]), row["worker"]
        assert row["node"] is None
        assert row["cpu_seconds"] >= 0 and row["peak_rss_bytes"] > 10 << 20
    # The pool has two processes; no more distinct workers than that.
    assert 1 <= len({r["worker"] for r in report["attempts"]}) <= 2
    assert report["workers"] == {"slots": 2, "cpu_request": None, "memory_request_bytes": None}


def test_records_in_and_out_are_the_counters(skewed_run) -> None:
    summary, report = skewed_run["summary"], skewed_run["report"]
    kub = summary["counters"]["kubemr"]
    maps = rows_of(report, "map", "committed")
    reduces = rows_of(report, "reduce", "committed")
    assert sum(r["records_in"] for r in maps) == kub["map_input_records"] == len(LINES)
    assert sum(r["records_out"] for r in maps) == kub["shuffle_records"] == sum(WORDS.values())
    assert sum(r["bytes_out"] for r in maps) == kub["shuffle_bytes"]
    assert sum(r["bytes_in"] for r in maps) == kub["map_input_bytes"]
    assert sum(r["records_in"] for r in reduces) == kub["reduce_input_records"]
    assert sum(r["records_out"] for r in reduces) == kub["output_records"] == len(WORDS)
    assert sum(r["bytes_out"] for r in reduces) == summary["output"]["bytes"]
    assert report["input"]["records"] == len(LINES)
    assert report["output"]["records"] == len(WORDS)
    for r in report["attempts"]:
        assert r["storage_requests"] > 0 or r["outcome"] == "failed"
    assert report["totals"]["storage_requests"] == sum(
        r["storage_requests"] for r in report["attempts"]
    )
    assert report["totals"]["cpu_seconds"] == pytest.approx(
        sum(r["cpu_seconds"] for r in report["attempts"]), abs=0.01
    )


def test_partitions_add_up_to_the_shuffle_and_to_what_reducers_fetched(skewed_run) -> None:
    summary, report = skewed_run["summary"], skewed_run["report"]
    kub = summary["counters"]["kubemr"]
    parts = report["partitions"]
    assert [(p["step"], p["partition"]) for p in parts] == [(0, 0), (0, 1), (0, 2)]
    assert sum(p["bytes"] for p in parts) == kub["shuffle_bytes"]
    assert sum(p["records"] for p in parts) == kub["shuffle_records"]
    reduces = {r["index"]: r for r in rows_of(report, "reduce", "committed")}
    for p in parts:
        assert reduces[p["partition"]]["shuffle_bytes_fetched"] == p["bytes"]
        assert reduces[p["partition"]]["bytes_in"] == p["bytes"]
        assert reduces[p["partition"]]["records_in"] == p["records"]


def test_the_hot_key_is_the_top_key_of_its_partition(skewed_run) -> None:
    report = skewed_run["report"]
    hot = max(report["partitions"], key=lambda p: p["bytes"])
    key, estimate = hot["top_keys"][0]
    assert key == '"hot"'
    assert estimate == pytest.approx(WORDS["hot"], rel=0.1)
    summary = skewed_run["summary"]["report"]
    assert summary["skew"]["partition"] == hot["partition"]
    assert summary["skew"]["top_key"] == [key, estimate]
    # Compressed, the run of "hot" is small; in records it is most of the partition.
    assert summary["skew"]["records_ratio"] > 2
    assert summary["skew"]["ratio"] == round(hot["bytes"] / sorted_median(report), 2)


def test_success_summarises_the_report(skewed_run) -> None:
    summary, report = skewed_run["summary"], skewed_run["report"]
    on_disk = json.loads((skewed_run["out"] / "_SUCCESS").read_text())
    assert on_disk["report"] == summary["report"] == report_summary(report)
    slowest = summary["report"]["slowest_task"]
    durations = [
        r["finished"] - r["started"] for r in report["attempts"] if r["outcome"] == "committed"
    ]
    assert slowest["seconds"] == pytest.approx(max(durations), abs=0.002)
    assert summary["report"]["cpu_seconds"] == report["totals"]["cpu_seconds"]


def test_load_report_reads_the_output_or_builds_from_the_work_dir(skewed_run) -> None:
    report = skewed_run["report"]
    assert load_report(str(skewed_run["out"])) == report
    built = load_report(str(skewed_run["work"]))
    assert built["status"] == "succeeded"  # the output's job record says so
    assert built["attempts"] == report["attempts"]
    assert built["partitions"] == report["partitions"]
    assert built["output"]["records"] == report["output"]["records"]
    assert built["totals"] == report["totals"]
    assert load_report(str(skewed_run["work"]), status="running")["finished"] is None


def test_a_failed_job_has_a_report_in_its_work_dir_only(tmp_path: Path) -> None:
    source = job_file(
        tmp_path,
        """
        import kubemr

        class AlwaysFails(kubemr.MapReduce):
            def mapper(self, line):
                raise RuntimeError("never works")

            reducer = kubemr.SUM
        """,
    )
    data = tmp_path / "in.txt"
    data.write_text("a\nb\n")
    out = tmp_path / "out"
    with pytest.raises(JobFailed):
        run_file(
            source,
            inputs=[str(data)],
            output=str(out),
            work_dir=str(tmp_path / "work"),
            keep_work=True,
            max_attempts=2,
        )
    assert not (out / "_REPORT.json").exists() and not (out / "_SUCCESS").exists()
    with pytest.raises(ReportNotFound, match="no report at"):
        load_report(str(out))
    (job_dir,) = os.listdir(tmp_path / "work")
    report = load_report(str(tmp_path / "work" / job_dir))
    assert report["status"] == "failed"
    failed = report["attempts"]
    assert [(r["wave"], r["index"], r["attempt"]) for r in failed] == [
        ("map", 0, "a1"),
        ("map", 0, "a2"),
    ]
    for row in failed:
        assert row["outcome"] == "failed" and "never works" in row["error"]
        assert row["started"] <= row["finished"] <= report["finished"]
        assert row["worker"] and row["storage_requests"] >= 0
    assert report["output"] == {"url": str(out), "bytes": 0, "records": 0, "files": 0}


def test_spill_bytes_are_counted_where_a_map_task_spilled(tmp_path: Path) -> None:
    source = job_file(
        tmp_path,
        """
        import kubemr

        class Words(kubemr.MapReduce):
            def mapper(self, line):
                for word in line.split():
                    yield word, 1

            def reducer(self, key, values):
                yield key, sum(values)
        """,
    )
    data = tmp_path / "in.txt"
    data.write_text("".join(f"w{i} x{i % 50} y{i % 7}\n" for i in range(20000)))
    out = tmp_path / "out"
    summary = run_file(
        source, inputs=[str(data)], output=str(out), memory="256Ki", reducers=2, workers=2
    )
    report = json.loads((out / "_REPORT.json").read_text())
    assert summary["counters"]["kubemr"]["map_spilled_records"] > 0
    maps = rows_of(report, "map", "committed")
    assert any(r["spill_bytes"] > 0 for r in maps)
    for r in rows_of(report, "reduce"):
        assert r["spill_bytes"] == 0
    # The key sample of spilled tasks is taken as their runs are merged: the y-words
    # (a seventh of the lines each) lead, with about their counts.
    top = [p["top_keys"][0] for p in report["partitions"] if p["top_keys"]]
    assert top and all(re.fullmatch(r'"y\d"', key) for key, _ in top), top
    for _, estimate in top:
        assert estimate == pytest.approx(20000 / 7, rel=0.15)


def test_an_output_with_a_report_is_kubemrs_to_overwrite(skewed_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    source = job_file(
        tmp_path,
        """
        import kubemr

        class Count(kubemr.MapReduce):
            def mapper(self, line):
                for word in line.split():
                    yield word, 1

            reducer = kubemr.SUM
        """,
    )
    first = run_file(source, inputs=[str(data)], output=str(out))
    with pytest.raises(OutputError, match="not empty"):
        run_file(source, inputs=[str(data)], output=str(out))
    second = run_file(source, inputs=[str(data)], output=str(out), overwrite=True)
    report = json.loads((out / "_REPORT.json").read_text())
    assert report["job_id"] == second["job_id"] != first["job_id"]


# -- kubemr worker, as a pod runs it ---------------------------------------------------------
WORDCOUNT = """
import kubemr

class WordCount(kubemr.MapReduce):
    def mapper(self, line):
        for word in line.split():
            yield word, 1

    def reducer(self, key, values):
        if key == "poison":
            raise KeyError("poisoned")
        yield key, sum(values)
"""


def test_a_worker_process_records_its_own_start_node_and_pod(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a b c a\n" * 100 + "poison\n")
    spec = {
        "name": "wc",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {
            "job": {"source": WORDCOUNT},
            "inputs": [str(data)],
            "output": str(tmp_path / "out"),
            "reducers": 1,
        },
    }
    code, _, err = run_worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(spec)}, pod="wc")
    assert code == 0, err
    node = {"KUBEMR_NODE_NAME": "node-7"}
    before = time.time()
    code, message, err = run_worker(tmp_path, "map-0", 0, env=node, pod="wc")
    after = time.time()
    assert code == 0, err
    work = tmp_path / "work"
    (marker,) = (work / "steps/0/tasks/map-00000").glob("*.json")
    result = TaskResult.from_json(json.loads(marker.read_text()))
    assert result.attempt == result.worker == "wc-map-0-0-pod"
    assert result.node == "node-7"
    # Its start is the process's, before the attempt itself began (its imports came
    # first), within the clock tick /proc counts in.
    began = result.finished - result.seconds
    assert before - 0.02 <= result.started <= began <= result.finished <= after
    assert result.cpu_seconds > 0 and result.peak_rss_bytes > 10 << 20
    # A failed attempt records the same.
    before = time.time()
    code, message, err = run_worker(tmp_path, "reduce-0", 0, env=node, pod="wc")
    after = time.time()
    assert code != 0 and message["ok"] is False
    (failed,) = (work / "steps/0/tasks/reduce-00000").glob("*.failed.json")
    marker = json.loads(failed.read_text())
    assert marker["worker"] == "wc-reduce-0-0-pod" and marker["node"] == "node-7"
    assert (marker["step"], marker["wave"], marker["index"]) == (0, "reduce", 0)
    assert before - 0.02 <= marker["started"] <= marker["finished"] <= after
    assert marker["cpu_seconds"] > 0 and marker["storage"]["requests"]
    row = failed_row(marker)
    assert "poisoned" in row["error"] and row["outcome"] == "failed"


# -- pure parts ------------------------------------------------------------------------------
def row(i: int, outcome: str, seconds: float) -> dict[str, Any]:
    return {
        "step": 0,
        "wave": "map",
        "index": i,
        "attempt": "a1",
        "outcome": outcome,
        "started": 100.0,
        "finished": 100.0 + seconds,
    }


def test_rows_past_the_bound_keep_the_failed_the_slowest_and_the_fastest() -> None:
    rows = [row(i, "committed", float(i)) for i in range(100)]
    rows += [row(100 + i, "failed", 0.5) for i in range(3)]
    kept, omitted = bound_rows(rows, 13)
    assert omitted == 90 and len(kept) == 13
    assert [r["index"] for r in kept if r["outcome"] == "failed"] == [100, 101, 102]
    committed = sorted(r["index"] for r in kept if r["outcome"] == "committed")
    assert committed == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert kept == sorted(kept, key=lambda r: r["index"])
    assert bound_rows(rows, 1000) == (rows, 0)


def test_older_markers_still_load() -> None:
    old = {
        "step": 0,
        "wave": "reduce",
        "index": 2,
        "attempt": "a1",
        "output_url": "file:///x",
        "output_bytes": 40,
        "partition_index": None,
        "counters": {"kubemr": {"reduce_input_records": 7, "reduce_output_records": 3}},
        "seconds": 1.0,
        "worker": "wc-reduce-0-2-x@node-1",
    }
    result = TaskResult.from_json(old)
    assert (result.records_in, result.records_out, result.bytes_out) == (7, 3, 40)
    assert (result.worker, result.node) == ("wc-reduce-0-2-x", "node-1")
    failed = failed_row(
        {"task": "map 1", "attempt": "a1", "kind": "user-code", "message": "boom\nmore",
         "traceback": "", "step": 0, "wave": "map", "index": 1}
    )  # fmt: skip
    assert failed["started"] is None and failed["error"] == "user-code: boom"


def test_sampled_keys_estimate_the_counts_of_a_sorted_partition() -> None:
    part = sorted(["hot"] * 5000 + [f"k{i}" for i in range(5000)] + ["warm"] * 800)
    stride = -(-len(part) // SAMPLE_KEYS)
    top = top_sampled_keys(part[::stride], stride)
    assert [k for k, _ in top[:2]] == ['"hot"', '"warm"']
    assert top[0][1] == pytest.approx(5000, abs=stride)
    assert top[1][1] == pytest.approx(800, abs=stride)
    assert all(n >= 2 * stride for _, n in top)  # no key seen once in the sample


def test_partition_top_keys_merge_over_map_tasks() -> None:
    from kubemr.report.records import WaveMarkers
    from kubemr.shuffle import PartitionIndex

    def result(i: int, sample: list) -> TaskResult:
        idx = PartitionIndex([0, 10, 30], [1, 2], [10, 20], ["str", "str"])
        r = TaskResult(0, "map", i, "a1", "u", 30, idx, {}, 0.0)
        r.key_sample = sample
        return r

    a = result(0, [[1, [['"x"', 10], ['"y"', 8]]]])
    b = result(1, [[1, [['"y"', 6], ['"z"', 2]]]])
    wave = WaveMarkers(0, "map", 2, {0: [a], 1: [b]}, [], {0: a, 1: b})
    parts = partition_rows([wave], [2])
    assert parts[0] == {
        "step": 0, "partition": 0, "bytes": 20, "raw_bytes": 20, "records": 2, "top_keys": []
    }  # fmt: skip
    assert parts[1]["bytes"] == 40 and parts[1]["records"] == 4
    assert parts[1]["top_keys"] == [['"y"', 14], ['"x"', 10], ['"z"', 2]]


def test_workers_of_a_resource_from_its_requests() -> None:
    from kubemr.report.records import quantity_value, workers_entry

    assert [quantity_value(q) for q in ("500m", "2", "1Gi", "1.5G", "", "lots")] == [
        0.5, 2.0, 1 << 30, 1.5e9, None, None
    ]  # fmt: skip
    assert workers_entry(4, {"cpu": "250m", "memory": "512Mi"}) == {
        "slots": 4, "cpu_request": 0.25, "memory_request_bytes": 512 << 20
    }  # fmt: skip
    assert workers_entry(2, None) == {"slots": 2, "cpu_request": None, "memory_request_bytes": None}


def test_partitions_past_the_bound_keep_the_largest_and_an_even_sample() -> None:
    from kubemr.report.records import LARGEST_PARTITIONS, bound_partitions

    rows = [
        {"step": s, "partition": p, "bytes": p * 10, "records": p}
        for s in (0, 1)
        for p in range(LARGEST_PARTITIONS * 3)
    ]
    step1 = [r for r in rows if r["step"] == 1][:50]
    kept, omitted = bound_partitions([r for r in rows if r["step"] == 0] + step1, 150)
    mine = [r for r in kept if r["step"] == 0]
    assert len(mine) == 150 and omitted == LARGEST_PARTITIONS * 3 - 150
    largest = {r["partition"] for r in mine if r["partition"] >= LARGEST_PARTITIONS * 2}
    assert len(largest) == LARGEST_PARTITIONS  # every one of the largest
    sampled = sorted(r["partition"] for r in mine if r["partition"] < LARGEST_PARTITIONS * 2)
    assert sampled == list(range(3, LARGEST_PARTITIONS * 2, 4))  # every 4th of the rest
    assert [r for r in kept if r["step"] == 1] == step1  # under the bound: all
