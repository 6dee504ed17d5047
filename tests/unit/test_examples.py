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


def run_example(name: str, inputs: list[str], out: str, **options) -> dict:
    job = load_job_class(os.path.join(EXAMPLES, f"{name}.py"))
    return kubemr.run(job, inputs=inputs, output=out, **options)


def parts(out: str) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


def jsonl_pairs(out: str, check_sorted: bool = True) -> list:
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


GRID = [
    (split, workers, reducers)
    for split in ("200", None)
    for workers in (1, 2, 4)
    for reducers in (1, 3, 8)
]


@pytest.mark.parametrize("split,workers,reducers", GRID)
def test_wordcount(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = run_example(
        "wordcount", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    assert dict(jsonl_pairs(out)) == reference.wordcount([BOOKS])
    assert len(parts(out)) == reducers
    assert summary["input"]["records"] == len(reference.lines_of([BOOKS]))
    assert os.path.exists(os.path.join(out, "_SUCCESS"))
    if split == "200":
        assert summary["tasks"]["map"] > 20


SAMPLED = [("200", 2, 3), (None, 1, 1), ("1KiB", 4, 8)]


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_wordcount_batch(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example(
        "wordcount_batch", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    assert dict(jsonl_pairs(out)) == reference.wordcount_batch([BOOKS])


@pytest.mark.parametrize("split,workers", [("300", 2), (None, 1)])
def test_grep_is_map_only(tmp_path, monkeypatch, split, workers) -> None:
    monkeypatch.setenv("GREP_PATTERN", "whale|storm")
    out = str(tmp_path / "out")
    summary = run_example("grep", [BOOKS], out, split_size=split, workers=workers)
    assert summary["tasks"]["reduce"] == 0
    assert len(parts(out)) == summary["tasks"]["map"]
    # map-only output keeps input order: part files follow the splits
    assert text_lines(out) == reference.grep([BOOKS], "whale|storm")
    assert summary["counters"]["grep"]["matches"] == len(text_lines(out))


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_inverted_index(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    docs = os.path.join(DATA, "docs.jsonl")
    run_example("inverted_index", [docs], out, split_size=split, workers=workers, reducers=reducers)
    assert dict(jsonl_pairs(out)) == reference.inverted_index([docs])


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_join(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    join = os.path.join(DATA, "join")
    summary = run_example("join", [join], out, split_size=split, workers=workers, reducers=reducers)
    assert {k: list(v) for k, v in jsonl_pairs(out)} == reference.join([join])
    assert summary["counters"]["join"]["events_without_user"] > 0  # users u40..u44 are unknown


@pytest.mark.parametrize("split,workers,reducers", [("2KiB", 2, 4), (None, 1, 1), ("1KiB", 4, 8)])
def test_total_sort(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    records = os.path.join(DATA, "records.txt")
    run_example("total_sort", [records], out, split_size=split, workers=workers, reducers=reducers)
    lines = text_lines(out)
    assert lines == reference.total_sort([records])
    assert len(parts(out)) == reducers
    sizes = [len(open(os.path.join(out, p)).read().splitlines()) for p in parts(out)]
    assert min(sizes) > 0  # sampled ranges give every reducer a share


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_topk(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    run_example("topk", [BOOKS], out, split_size=split, workers=workers, reducers=reducers)
    got: dict = {}
    for letter, (count, word) in jsonl_pairs(out):
        got.setdefault(letter, []).append((count, word))
    expected = reference.topk([BOOKS])
    assert {k: sorted(v, reverse=True) for k, v in got.items()} == expected


@pytest.mark.parametrize("split,workers,reducers", SAMPLED)
def test_two_step(tmp_path, split, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = run_example(
        "two_step", [BOOKS], out, split_size=split, workers=workers, reducers=reducers
    )
    assert dict(jsonl_pairs(out)) == reference.two_step([BOOKS])
    assert len(summary["steps"]) == 2


def test_example_through_the_cli(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "kubemr", "run", os.path.join(EXAMPLES, "wordcount.py"),
         "--input", BOOKS, "--output", str(out), "--json", "--reducers", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded"
    assert summary["output"]["records"] == len(reference.wordcount([BOOKS]))
    assert "succeeded" in proc.stderr
