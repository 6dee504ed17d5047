"""The local runner end to end: results, counters, failures, retries and bad input."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

import kubemr
from kubemr.errors import InputError, JobDefinitionError, JobFailed, OutputError
from kubemr.loader import load_job_class

from . import jobs

TEXT = "the quick brown fox\njumps over the lazy dog\n\nthe end\n" * 50


def read_output(out) -> list:
    pairs = []
    for name in sorted(os.listdir(out)):
        if name.startswith("part-"):
            with open(os.path.join(out, name)) as fh:
                pairs.extend(json.loads(line) for line in fh)
    return pairs


@pytest.fixture
def text_input(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(TEXT)
    return str(path)


def expected_counts() -> dict:
    return dict(Counter(TEXT.split()))


@pytest.mark.parametrize("job", [jobs.WordCount, jobs.WordCountPython, jobs.WordCountBatch])
@pytest.mark.parametrize("workers,reducers", [(1, 1), (2, 3)])
def test_word_count_variants(tmp_path, text_input, job, workers, reducers) -> None:
    out = str(tmp_path / "out")
    summary = kubemr.run(
        job, inputs=[text_input], output=out, workers=workers, reducers=reducers, split_size=100
    )
    pairs = read_output(out)
    assert dict(pairs) == expected_counts()
    assert len(pairs) == len(expected_counts())
    assert summary["status"] == "succeeded"
    assert summary["input"]["records"] == TEXT.count("\n")
    assert summary["output"]["records"] == len(pairs)
    assert summary["tasks"]["reduce"] == reducers
    assert summary["tasks"]["map"] > 1
    success = json.loads(open(os.path.join(out, "_SUCCESS")).read())
    assert success["job_id"] == summary["job_id"]
    if job is jobs.WordCountPython:
        assert summary["counters"]["words"]["seen"] == len(TEXT.split())
    for name in os.listdir(out):
        if name.startswith("part-"):
            keys = [json.loads(line)[0] for line in open(os.path.join(out, name))]
            assert keys == sorted(keys)


def test_user_error_names_file_line_and_record(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("ok\n" * 1000 + "boom\n" + "ok\n" * 10)
    out = tmp_path / "out"
    with pytest.raises(JobFailed) as info:
        kubemr.run(
            jobs.FailsOnLine, inputs=[str(path)], output=str(out), split_size=1000, max_attempts=2
        )
    failure = info.value.failure
    assert failure.kind == "user-code"
    assert f"{path}:1001" in failure.message
    assert "mapper raised ValueError: cannot handle boom" in failure.message
    assert "raise ValueError" in failure.traceback
    assert "kubemr/task.py" not in failure.traceback  # only the user's frames
    assert not (out / "_SUCCESS").exists()


def test_reducer_error_names_key(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\nbad\nb\n")
    with pytest.raises(JobFailed, match=r"reducer raised KeyError.*key 'bad'"):
        kubemr.run(
            jobs.ReducerFails, inputs=[str(path)], output=str(tmp_path / "o"), max_attempts=1
        )


@pytest.mark.parametrize("die", [False, True])
def test_failed_attempt_is_retried(tmp_path, text_input, monkeypatch, die) -> None:
    monkeypatch.setenv("KUBEMR_TEST_MARKER", str(tmp_path / "marker"))
    if die:
        monkeypatch.setenv("KUBEMR_TEST_DIE", "1")
    out = str(tmp_path / "out")
    summary = kubemr.run(jobs.FailsFirstAttempt, inputs=[text_input], output=out, workers=2)
    assert summary["attempts"]["failed"] >= 1
    assert summary["attempts"]["total"] > summary["tasks"]["map"] + summary["tasks"]["reduce"] - 1
    assert dict(read_output(out)) == dict(Counter(TEXT.splitlines()))
    kinds = {f["kind"] for f in summary["failed_attempts"]}
    assert kinds == {"infrastructure" if die else "user-code"}


def test_bad_json_fails_with_file_line_unless_skipped(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"k": "a", "v": 1}\n{"k": oops}\n{"k": "b", "v": 2}\n')
    # found by the pre-flight read of the first records, before any task starts
    with pytest.raises(InputError, match=r"in\.jsonl:2 .*malformed JSON"):
        kubemr.run(jobs.JsonRecords, inputs=[str(path)], output=str(tmp_path / "o1"))
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"k": "a", "v": 1}\n' * 20_000 + "{oops\n")
    with pytest.raises(JobFailed, match=r"deep\.jsonl:20001 .*malformed JSON") as info:
        kubemr.run(jobs.JsonRecords, inputs=[str(deep)], output=str(tmp_path / "o3"))
    assert info.value.failure.kind == "bad-record"
    assert not (tmp_path / "o3" / "_SUCCESS").exists()
    summary = kubemr.run(
        jobs.JsonRecords, inputs=[str(path)], output=str(tmp_path / "o2"), skip_bad_records=1
    )
    assert summary["counters"]["kubemr"]["map_bad_records_skipped"] == 1
    assert dict(read_output(tmp_path / "o2")) == {"a": 1, "b": 2}


def test_missing_input_and_empty_glob(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        kubemr.run(jobs.WordCount, inputs=[str(tmp_path / "nope.txt")], output=str(tmp_path / "o"))
    with pytest.raises(InputError, match="matches no files"):
        kubemr.run(jobs.WordCount, inputs=[str(tmp_path / "*.txt")], output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_glob_and_directory_inputs(tmp_path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("x y\n")
    (tmp_path / "d" / "sub" / "b.txt").write_text("y z\n")
    (tmp_path / "d" / "sub" / "c.log").write_text("ignored\n")
    (tmp_path / "d" / "_SUCCESS").write_text("{}")
    out = tmp_path / "o"
    kubemr.run(jobs.WordCount, inputs=[str(tmp_path / "d" / "**" / "*.txt")], output=str(out))
    assert dict(read_output(out)) == {"x": 1, "y": 2, "z": 1}
    out2 = tmp_path / "o2"
    kubemr.run(jobs.WordCount, inputs=[str(tmp_path / "d")], output=str(out2))
    assert dict(read_output(out2)) == {"x": 1, "y": 2, "z": 1, "ignored": 1}


def test_non_empty_output_is_refused_unless_overwrite(tmp_path, text_input) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00007").write_text("stale\n")
    with pytest.raises(OutputError, match=r"not empty.*--overwrite"):
        kubemr.run(jobs.WordCount, inputs=[text_input], output=str(out))
    kubemr.run(jobs.WordCount, inputs=[text_input], output=str(out), overwrite=True, reducers=2)
    assert sorted(os.listdir(out)) == [
        "_REPORT.json",
        "_SUCCESS",
        "_kubemr-job.json",
        "part-00000",
        "part-00001",
    ]


def test_unpicklable_key_fails_before_tasks(tmp_path, text_input) -> None:
    with pytest.raises(JobFailed, match="cannot be shuffled"):
        kubemr.run(jobs.UnpicklableKey, inputs=[text_input], output=str(tmp_path / "o"))
    with pytest.raises(JobFailed, match="must yield \\(key, value\\) pairs"):
        kubemr.run(jobs.NotPairs, inputs=[text_input], output=str(tmp_path / "o"))


def test_mixed_type_keys(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\nbb\na\nccc\n\n")
    out = tmp_path / "o"
    kubemr.run(jobs.MixedKeys, inputs=[str(path)], output=str(out), reducers=1)
    pairs = read_output(out)
    assert pairs[0] == [None, 5]
    keys = [kubemr.order_key(tuple(k) if isinstance(k, list) else k) for k, _ in pairs]
    assert keys == sorted(keys)
    assert ["a", 2] in pairs and [1, 2] in pairs and [["a", 1], 2] in pairs


def test_secondary_sort(tmp_path) -> None:
    path = tmp_path / "in.txt"
    lines = ["b3", "a9", "b1", "a2", "b2", "a5"]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    kubemr.run(jobs.SecondarySort, inputs=[str(path)], output=str(out), split_size=4, reducers=2)
    assert dict(read_output(out)) == {"a": ["a2", "a5", "a9"], "b": ["b1", "b2", "b3"]}


def test_map_only(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("hay\nneedle 1\nhay\nneedle 2\n" * 20)
    out = tmp_path / "o"
    summary = kubemr.run(jobs.GrepMapOnly, inputs=[str(path)], output=str(out), split_size=30)
    assert summary["tasks"]["reduce"] == 0
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert len(parts) == summary["tasks"]["map"] > 1
    lines = [line for n in parts for line in open(out / n).read().splitlines()]
    assert lines == ["needle 1", "needle 2"] * 20


def test_two_steps(tmp_path, text_input) -> None:
    out = tmp_path / "o"
    summary = kubemr.run(jobs.TwoSteps, inputs=[text_input], output=str(out), reducers=2)
    by_count: dict = {}
    for word, n in expected_counts().items():
        by_count.setdefault(n, []).append(word)
    assert {k: v for k, v in read_output(out)} == {k: sorted(v) for k, v in by_count.items()}
    assert len(summary["steps"]) == 2


def test_job_file_errors(tmp_path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(JobDefinitionError, match="defines no job"):
        load_job_class(str(empty))
    two = tmp_path / "two.py"
    two.write_text(
        "import kubemr\n"
        "class A(kubemr.MapReduce):\n    def mapper(self, r):\n        yield r, 1\n"
        "class B(kubemr.MapReduce):\n    def mapper(self, r):\n        yield r, 1\n"
    )
    with pytest.raises(JobDefinitionError, match=r"several jobs \(A, B\).*two.py:A"):
        load_job_class(str(two))
    assert load_job_class(f"{two}:B").__name__ == "B"
    with pytest.raises(JobDefinitionError, match="does not exist"):
        load_job_class(str(tmp_path / "missing.py"))


def test_functional_api(tmp_path, text_input) -> None:
    def words(line):
        for w in line.split():
            yield w, 1

    out = tmp_path / "o"
    kubemr.map_reduce(words, kubemr.SUM, combiner=kubemr.SUM, inputs=text_input, output=str(out))
    assert dict(read_output(out)) == expected_counts()


def test_spills_under_a_tiny_memory_budget(tmp_path) -> None:
    path = tmp_path / "in.txt"
    words = [f"w{i % 40_000}" for i in range(200_000)]
    path.write_text("\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10)) + "\n")
    out = tmp_path / "o"
    summary = kubemr.run(
        jobs.WordCountPython, inputs=[str(path)], output=str(out), memory="256Ki", workers=2
    )
    assert summary["counters"]["kubemr"]["map_spilled_records"] > 0
    assert summary["counters"]["kubemr"]["reduce_spilled_to_disk"] > 0
    assert dict(read_output(out)) == dict(Counter(words))


@pytest.mark.parametrize("memory", ["512Mi", "2Mi"])
def test_identity_reduce_sorts_lines_and_counts_keys(tmp_path, memory) -> None:
    # 60k lines over 5k distinct values: groups straddle output batches, and with a
    # small memory budget the map tasks spill and the reducers merge from disk.
    import random

    rng = random.Random(7)
    lines = [f"{rng.randrange(5000):05d}-{'x' * rng.randrange(30)}" for _ in range(60_000)]
    path = tmp_path / "in.txt"
    path.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "out"
    summary = kubemr.run(
        jobs.SortLines,
        inputs=[str(path)],
        output=str(out),
        workers=2,
        reducers=2,
        split_size=200_000,
        memory=memory,
    )
    parts = sorted(name for name in os.listdir(out) if name.startswith("part-"))
    got = [line for name in parts for line in (out / name).read_text().splitlines()]
    assert got == sorted(lines)
    assert summary["counters"]["kubemr"]["reduce_input_groups"] == len(set(lines))
    if memory == "2Mi":
        assert summary["counters"]["kubemr"]["map_spilled_records"] > 0
        assert summary["counters"]["kubemr"]["reduce_spilled_to_disk"] > 0
