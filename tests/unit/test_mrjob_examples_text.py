"""mrjob's text examples ported to kubemr (examples/mrjob/) give the answer of a plain
single-process Python version of the same computation (the grep port: of grep itself),
over many map tasks and several reducers; the self-running form and ``--output-format
tsv`` write mrjob's bytes."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import kubemr
from kubemr.datagen import zipf_text
from kubemr.loader import load_job_class

ROOT = Path(__file__).resolve().parents[2]
PORTS = ROOT / "examples" / "mrjob"
BOOKS = ROOT / "examples" / "data" / "books"
WORD_RE = re.compile(r"[\w']+")

# Lines a port must treat as mrjob does: empty lines, tabs and runs of spaces, mixed
# case, apostrophes, words outside ASCII, and a last line without its newline.
EDGE_TEXT = (
    "The Captain's log: the whale, THE WHALE and the whale's calf.\n"
    "\n"
    "  tabs\tand   spaces\t\tbetween words  \n"
    "Café au lait; naïve façade — déjà vu.\n"
    "\n"
    "it's the end of the log, isn't it\n"
    "the last line has no newline"
)

# (split size, workers, reducers): dozens of map tasks on the sample input, then few.
LAYOUTS = [("2KiB", 2, 3), ("64KiB", 1, 1)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """The sample books, a file of edge cases and some generated Zipf text."""
    root = tmp_path_factory.mktemp("mrjob-text")
    (root / "edge.txt").write_text(EDGE_TEXT, encoding="utf-8")
    zipf_text(str(root / "zipf.txt"), 60_000, seed=7, vocabulary=300)
    return [str(BOOKS), str(root / "edge.txt"), str(root / "zipf.txt")]


def input_files(paths: list[str]) -> list[str]:
    files = []
    for path in paths:
        if os.path.isdir(path):
            files.extend(os.path.join(path, n) for n in sorted(os.listdir(path)))
        else:
            files.append(path)
    return files


def lines_by_file(paths: list[str]) -> dict[str, list[str]]:
    # str.splitlines would also split at \f, \x1c, ...: lines end at \n only, as in mrjob
    out = {}
    for path in input_files(paths):
        text = Path(path).read_text(encoding="utf-8")
        out[path] = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return out


def lines_of(paths: list[str]) -> list[str]:
    return [line for lines in lines_by_file(paths).values() for line in lines]


def run_port(name: str, inputs: list[str], out: Path, layout: tuple, **options) -> dict:
    split, workers, reducers = layout
    summary = kubemr.run(
        load_job_class(str(PORTS / f"{name}.py")),
        inputs=inputs,
        output=str(out),
        split_size=split,
        workers=workers,
        reducers=reducers,
        **options,
    )
    assert summary["status"] == "succeeded"
    assert summary["input"]["records"] == len(lines_of(inputs))
    if split == "2KiB":
        assert summary["tasks"]["map"] > 20
    return summary


def output_lines(out: Path) -> list[str]:
    return [
        line
        for part in sorted(out.glob("part-*"))
        for line in part.read_text(encoding="utf-8").splitlines()
    ]


def pairs(out: Path) -> list:
    return [json.loads(line) for line in output_lines(out)]


def tsv_line(key, value) -> str:
    """A pair as mrjob's default output protocol (JSONProtocol) writes it."""
    return f"{json.dumps(key)}\t{json.dumps(value)}"


# -- plain Python versions of the computations ----------------------------------------
def word_freq_count(lines: list[str]) -> dict:
    return dict(Counter(w.lower() for line in lines for w in WORD_RE.findall(line)))


def most_used_word(lines: list[str], stop_words: set[str]) -> str:
    counts = Counter(w for w in map(str.lower, WORD_RE.findall("\n".join(lines))))
    return max((n, w) for w, n in counts.items() if w not in stop_words)[1]


def next_word_stats(lines: list[str]) -> dict:
    follows: Counter = Counter()
    for line in lines:
        words = [w.lower() for w in WORD_RE.findall(line)]
        follows.update(itertools.pairwise(words))
    totals: Counter = Counter()
    for (first, _), n in follows.items():
        totals[first] += n
    return {(a, b): [totals[a], n, 100.0 * n / totals[a]] for (a, b), n in follows.items()}


def wc(lines: list[str]) -> dict:
    return {
        "chars": sum(len(line) + 1 for line in lines),
        "words": sum(len(line.split()) for line in lines),
        "lines": len(lines),
    }


# -- the ports ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_word_freq_count(tmp_path, inputs, layout) -> None:
    run_port("word_freq_count", inputs, tmp_path / "out", layout)
    got = pairs(tmp_path / "out")
    expected = word_freq_count(lines_of(inputs))
    assert dict(got) == expected
    assert len(got) == len(expected)  # each word once, in one part
    assert "whale's" in expected and "café" in expected


@pytest.mark.parametrize("layout", LAYOUTS)
def test_most_used_word(tmp_path, inputs, layout) -> None:
    run_port("most_used_word", inputs, tmp_path / "out", layout)
    stop_words = set((PORTS / "stop_words.txt").read_text().split())
    assert "the" in stop_words
    # JSONValueProtocol: the value alone, as JSON; the count (the key) is left out
    expected = most_used_word(lines_of(inputs), stop_words)
    assert output_lines(tmp_path / "out") == [json.dumps(expected)]


# The file named as FILES names its own (mrjob's `--stop-words-file /x/stop_words.txt`)
# gets a name of its own in the job; the option reads it, FILES its own file.
@pytest.mark.parametrize("name", ["my_stops.txt", "stop_words.txt"])
def test_most_used_word_with_another_stop_words_file(tmp_path, inputs, name) -> None:
    lines = lines_of(inputs)
    first = most_used_word(lines, set((PORTS / "stop_words.txt").read_text().split()))
    stops = tmp_path / name
    stops.write_text(f"the\nand\n{first}\n")
    run_port(
        "most_used_word",
        inputs,
        tmp_path / "out",
        ("4KiB", 2, 2),
        params={"stop_words_file": str(stops)},
    )
    expected = most_used_word(lines, {"the", "and", first})
    assert expected != first
    assert output_lines(tmp_path / "out") == [json.dumps(expected)]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_next_word_stats(tmp_path, inputs, layout) -> None:
    summary = run_port("next_word_stats", inputs, tmp_path / "out", layout)
    assert len(summary["steps"]) == 2
    got = pairs(tmp_path / "out")
    expected = next_word_stats(lines_of(inputs))
    assert {tuple(k): v for k, v in got} == expected
    assert len(got) == len(expected)
    assert expected["captain's", "log"] == [1, 1, 100.0]


def test_next_word_stats_tsv_is_mrjobs_bytes(tmp_path, inputs) -> None:
    run_port("next_word_stats", inputs, tmp_path / "out", ("4KiB", 2, 2), output_format="tsv")
    expected = {tsv_line(list(k), v) for k, v in next_word_stats(lines_of(inputs)).items()}
    got = output_lines(tmp_path / "out")
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wc(tmp_path, inputs, layout) -> None:
    summary = run_port("wc", inputs, tmp_path / "out", layout)
    assert dict(pairs(tmp_path / "out")) == wc(lines_of(inputs))
    # mapper_final yields three pairs once per map task, the mapper none
    assert summary["counters"]["kubemr"]["map_output_records"] == 3 * summary["tasks"]["map"]


def test_wc_runs_itself_and_writes_tsv(tmp_path, inputs) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(PORTS / "wc.py"), *(f"--input={i}" for i in inputs), "-o", str(out),
         "--output-format", "tsv", "--split-size", "2KiB", "--reducers", "2",
         "--workers", "2"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(output_lines(out)) == sorted(
        tsv_line(k, v) for k, v in wc(lines_of(inputs)).items()
    )
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["job"] == "MRWordCountUtility"
    assert success["tasks"]["map"] > 20


@pytest.mark.parametrize("layout", LAYOUTS)
# Quotes, brackets, a dollar and UTF-8: the expression reaches grep as it is.
@pytest.mark.parametrize("expression", ["whale", "the deck[?!]$", "it's the", "— déjà"])
def test_grep_writes_what_grep_writes(tmp_path, inputs, layout, expression) -> None:
    summary = run_port("grep", inputs, tmp_path / "out", layout, params={"expression": expression})
    # grep run directly on each input file in turn: the part files, in name order, hold
    # the map tasks' lines in input order, byte for byte.
    expected = b"".join(
        subprocess.run(["grep", "-e", expression, path], capture_output=True).stdout
        for path in input_files(inputs)
    )
    assert expected.count(b"\n") > 0
    got = b"".join(part.read_bytes() for part in sorted((tmp_path / "out").glob("part-*")))
    assert got == expected
    assert summary["counters"]["kubemr"]["output_records"] == expected.count(b"\n")


def test_grep_with_no_match_and_with_a_bad_expression(tmp_path, inputs) -> None:
    # grep's exit status 1 (nothing matched) is not a failure: an empty output
    run_port("grep", inputs, tmp_path / "none", ("64KiB", 1, 1), params={"expression": "zzqx"})
    assert output_lines(tmp_path / "none") == []
    with pytest.raises(kubemr.JobFailed, match=r"exited with status 2 .*\n.*grep: Unmatched"):
        run_port("grep", inputs, tmp_path / "bad", ("64KiB", 1, 1), params={"expression": "a\\{1"},
                 max_attempts=1)  # fmt: skip
    assert not (tmp_path / "bad" / "_SUCCESS").exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_count_lines(tmp_path, inputs, layout) -> None:
    run_port("count_lines", inputs, tmp_path / "out", layout)
    assert pairs(tmp_path / "out") == [[None, len(lines_of(inputs))]]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_count_lines_by_file(tmp_path, inputs, layout) -> None:
    run_port("count_lines_by_file", inputs, tmp_path / "out", layout)
    expected = {path: len(lines) for path, lines in lines_by_file(inputs).items()}
    assert len(expected) == 5
    assert dict(pairs(tmp_path / "out")) == expected
