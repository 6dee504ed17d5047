"""Every example gives the same result as a plain Python reference, whatever the split
size, worker count and reducer count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import kubemr
from kubemr.loader import load_job_class

from . import reference

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
DATA = os.path.join(EXAMPLES, "data")
BOOKS = os.path.join(DATA, "books")
DOCS = os.path.join(DATA, "docs.jsonl")
JOIN = os.path.join(DATA, "join")
RECORDS = os.path.join(DATA, "records.txt")


def load(name: str) -> type[kubemr.MapReduce]:
    return load_job_class(os.path.join(EXAMPLES, f"{name}.py"))


def run_example(name: str, inputs: list[str], out: str, **options) -> dict:
    summary = kubemr.run(load(name), inputs=inputs, output=out, **options)
    check_success(out, summary, inputs)
    return summary


def parts(out: str) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


def check_success(out: str, summary: dict, inputs: list[str]) -> None:
    """``_SUCCESS`` holds the summary ``run`` returned, and its numbers add up."""
    with open(os.path.join(out, "_SUCCESS")) as fh:
        assert json.load(fh) == summary
    assert summary["status"] == "succeeded"
    assert summary["attempts"]["failed"] == 0
    # the sample inputs have no blank JSON lines, so every line is one record
    assert summary["input"]["records"] == len(reference.lines_of(inputs))
    files = summary["output"]["files"]
    assert [f["name"] for f in files] == parts(out)
    written = 0
    for f in files:
        with open(os.path.join(out, f["name"]), "rb") as fh:
            data = fh.read()
        assert f["bytes"] == len(data)
        written += data.count(b"\n")
    assert summary["output"]["bytes"] == sum(f["bytes"] for f in files)
    assert summary["output"]["records"] == written
    counters = summary["counters"]["kubemr"]
    assert counters["output_records"] == written
    assert counters["map_input_records"] >= summary["input"]["records"]
    assert counters["map_bad_records_skipped"] == 0
    assert summary["tasks"]["map"] == sum(s["maps"] for s in summary["steps"])
    assert summary["tasks"]["reduce"] == sum(s["reduces"] for s in summary["steps"])


def jsonl_pairs(out: str, check_sorted: bool = True) -> list:
    """All output pairs, part files in name order; each part checked sorted by key."""
    pairs = []
    for name in parts(out):
        with open(os.path.join(out, name)) as fh:
            part = [json.loads(line) for line in fh]
        if check_sorted:
            keys = [kubemr.order_key(k) for k, _ in part]
            assert keys == sorted(keys), f"{name} is not sorted by key"
        pairs.extend(part)
    return pairs


def text_lines(out: str) -> list[str]:
    lines = []
    for name in parts(out):
        with open(os.path.join(out, name)) as fh:
            lines.extend(fh.read().splitlines())
    return lines


# The full cross product for word count; a sampled list for the other examples.
# "200" bytes per split gives dozens of map tasks on the sample data, None the default.
GRID = [
    (split, workers, reducers)
    for split in ("200", None)
    for workers in (1, 2, 4)
    for reducers in (1, 3, 8)
]
SAMPLED = [("200", 2, 3), (None, 1, 1), ("1KiB", 4, 8)]


@pytest.mark.parametrize("split,workers,reducers", GRID)
def test_wordcount(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = run_example(
        "wordcount", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    expected = reference.wordcount([BOOKS])
    assert dict(jsonl_pairs(out)) == expected
    assert len(parts(out)) == reducers
    assert summary["output"]["records"] == len(expected)
    counters = summary["counters"]["kubemr"]
    assert counters["reduce_input_groups"] == len(expected)
    words = sum(expected.values())
    # a built-in combiner's fast path may fold pairs without counting them one by one
    assert counters.get("map_output_records", words) == words
    # the combiner folds each map task's words before the shuffle
    assert counters["shuffle_records"] < words
    if split == "200":
        assert summary["tasks"]["map"] > 20


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_wordcount_batch(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example(
        "wordcount_batch", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    assert dict(jsonl_pairs(out)) == reference.wordcount_batch([BOOKS])
    assert len(parts(out)) == reducers


@pytest.mark.parametrize("split,workers", [("300", 2), (None, 1), ("1KiB", 4)])
def test_grep_is_map_only(tmp_path, monkeypatch, split, workers) -> None:
    monkeypatch.setenv("GREP_PATTERN", "whale|storm")
    out = str(tmp_path / "out")
    summary = run_example("grep", [BOOKS], out, split_size=split, workers=workers)
    assert summary["tasks"]["reduce"] == 0
    assert len(parts(out)) == summary["tasks"]["map"]
    # map-only output keeps input order: part files follow the splits
    expected = reference.grep([BOOKS], "whale|storm")
    assert expected and text_lines(out) == expected
    assert summary["counters"]["grep"]["matches"] == len(expected)


def test_grep_default_pattern(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GREP_PATTERN", raising=False)
    out = str(tmp_path / "out")
    run_example("grep", [BOOKS], out, reducers=3)  # no reducer: still map-only
    expected = reference.grep([BOOKS])
    assert expected and text_lines(out) == expected


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_inverted_index(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example("inverted_index", [DOCS], out, split_size=split, workers=workers, reducers=reducers)
    assert dict(jsonl_pairs(out)) == reference.inverted_index([DOCS])


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_join(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = run_example("join", [JOIN], out, split_size=split, workers=workers, reducers=reducers)
    assert {k: list(v) for k, v in jsonl_pairs(out)} == reference.join([JOIN])
    assert len(summary["steps"]) == 2
    # events of users u40..u44, who are not in the users table, are dropped and counted
    assert summary["counters"]["join"]["events_without_user"] == reference.unmatched_events([JOIN])


@pytest.mark.parametrize("split,workers,reducers", [("2KiB", 2, 4), (None, 1, 1), ("1KiB", 4, 8)])
def test_total_sort(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example("total_sort", [RECORDS], out, split_size=split, workers=workers, reducers=reducers)
    # the part files, concatenated in name order, are the input sorted by key
    assert text_lines(out) == reference.total_sort([RECORDS])
    assert len(parts(out)) == reducers
    for name in parts(out):
        with open(os.path.join(out, name)) as fh:
            assert fh.read(), f"{name} is empty: sampled ranges give every reducer a share"


def test_total_sort_identity_reducer(tmp_path) -> None:
    # Without a reducer a TOTAL_ORDER job keeps its (key, value) pairs, globally sorted.
    identity = type("IdentitySort", (load("total_sort"),), {"reducer": None})
    out = str(tmp_path / "out")
    summary = kubemr.run(
        identity,
        inputs=[RECORDS],
        output=out,
        output_format="jsonl",
        split_size="2KiB",
        workers=2,
        reducers=3,
    )
    check_success(out, summary, [RECORDS])
    pairs = jsonl_pairs(out)
    assert [k + v for k, v in pairs] == reference.total_sort([RECORDS])
    assert summary["tasks"]["reduce"] == 3


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_topk(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example("topk", [BOOKS], out, split_size=split, workers=workers, reducers=reducers)
    got: dict = {}
    for letter, (count, word) in jsonl_pairs(out):
        got.setdefault(letter, []).append((count, word))
    assert {k: sorted(v, reverse=True) for k, v in got.items()} == reference.topk([BOOKS])


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_two_step(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = run_example(
        "two_step", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    pairs = jsonl_pairs(out)
    assert all(isinstance(k, int) for k, _ in pairs)  # counts stay numbers, not strings
    assert dict(pairs) == reference.two_step([BOOKS])
    assert len(summary["steps"]) == 2


def test_example_through_the_cli(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "kubemr", "run", os.path.join(EXAMPLES, "wordcount.py"),
         "--input", BOOKS, "--output", str(out), "--json", "--reducers", "2",
         "--split-size", "4KiB"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded"
    assert summary["job"] == "WordCount"
    assert summary["output"]["records"] == len(reference.wordcount([BOOKS]))
    assert len(summary["output"]["files"]) == 2
    check_success(str(out), summary, [BOOKS])
    assert dict(jsonl_pairs(str(out))) == reference.wordcount([BOOKS])
