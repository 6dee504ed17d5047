"""User code's mistakes fail the task with the cause and the record, never wrong output.

sys.exit() or KeyboardInterrupt in user code, NaN keys, items that are not pairs, list
keys under built-in reducers, spill files of failed attempts, skipped records' names.
Bad records sit past the runner's preflight (the first 200 records), so the tasks meet
them.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter

import pytest

import kubemr
from kubemr.errors import JobFailed
from kubemr.job import COUNT, MAX, MIN, SUM
from kubemr.keys import NaNKeyError, hash_partition, order_key, stable_hash
from kubemr.results import TaskResult
from kubemr.shuffle import (
    MapCollector,
    NotAPairError,
    UnhashableKeyError,
    UserCodeFailure,
    fold_records_into,
    read_segment,
    sorted_values,
    yields_only_pairs,
)

from . import jobs

PAST_PREFLIGHT = 300  # ordinary records before the bad one


def write_lines(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def read_jsonl(out) -> list:
    pairs = []
    for name in sorted(os.listdir(out)):
        if name.startswith("part-"):
            with open(os.path.join(out, name)) as fh:
                pairs.extend(json.loads(line) for line in fh)
    return pairs


def read_text(out) -> list[str]:
    return [
        line
        for name in sorted(os.listdir(out))
        if name.startswith("part-")
        for line in (out / name).read_text().splitlines()
    ]


def failure_of(job, tmp_path, inputs, **options):
    out = tmp_path / "out"
    with pytest.raises(JobFailed) as info:
        kubemr.run(job, inputs=inputs, output=str(out), max_attempts=1, **options)
    assert not (out / "_SUCCESS").exists()
    return info.value.failure


# -- 1. sys.exit() and KeyboardInterrupt in user code -----------------------------------------


@pytest.mark.parametrize("exc", ["exit", "interrupt"])
@pytest.mark.parametrize(
    "where", ["mapper", "combiner", "reducer", "partitioner", "setup", "teardown"]
)
def test_exit_or_interrupt_in_user_code_fails_the_task(tmp_path, where, exc) -> None:
    lines = ["aa", "b", "ccc"] * 100 + ["stop"] + ["aa"] * 10
    path = write_lines(tmp_path / "in.txt", lines)
    failure = failure_of(
        jobs.ExitsSomewhere, tmp_path, [path], reducers=2, params={"where": where, "exc": exc}
    )
    assert failure.kind == "user-code"
    raised = "SystemExit: 0" if exc == "exit" else "KeyboardInterrupt ("
    assert f"{where} raised {raised}" in failure.message
    if where == "mapper":
        assert f"{path}:{PAST_PREFLIGHT + 1} " in failure.message
        assert "record 'stop'" in failure.message
        assert failure.traceback.count("_raise_base(self.params") == 1  # shown once


def test_exit_in_mapper_batch_fails_the_task(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["a"] * PAST_PREFLIGHT + ["stop"])
    failure = failure_of(
        jobs.ExitsInMapperBatch, tmp_path, [path], params={"where": "mapper_batch"}
    )
    assert failure.kind == "user-code"
    assert "mapper_batch raised SystemExit: 0 (a chunk of" in failure.message


# -- 2. NaN keys --------------------------------------------------------------------------------


def nan_input(tmp_path, count: int = PAST_PREFLIGHT) -> str:
    lines = [str(i % 7 + 1) for i in range(count)] + ["nan"] + ["3"] * 50
    return write_lines(tmp_path / "in.txt", lines)


@pytest.mark.parametrize("memory", ["512Mi", "1Mi"])
@pytest.mark.parametrize("shape", ["float", "tuple"])
@pytest.mark.parametrize("mode", ["sum", "python", "combiner"])
def test_nan_keys_are_refused_naming_the_record(tmp_path, mode, shape, memory) -> None:
    # 20k records under 1Mi: the map task spills a sorted run before its last chunk.
    path = nan_input(tmp_path, PAST_PREFLIGHT if memory == "512Mi" else 20_000)
    failure = failure_of(
        jobs.NaNKeys,
        tmp_path,
        [path],
        reducers=2,
        memory=memory,
        params={"mode": mode, "shape": shape},
    )
    assert failure.kind == "user-code"
    key = "nan" if shape == "float" else "('k', nan)"
    what = "is NaN" if shape == "float" else "holds a NaN"
    assert f"the mapper yielded key {key}, which {what}" in failure.message
    assert "NaN is not equal to itself, so it cannot be grouped or sorted" in failure.message
    assert "map it to None or a string" in failure.message
    line = (PAST_PREFLIGHT if memory == "512Mi" else 20_000) + 1
    assert f"{path}:{line} " in failure.message
    assert "record 'nan'" in failure.message


def test_a_map_only_job_passes_nan_keys_through(tmp_path) -> None:
    # No sort and no grouping happen, so a NaN harms no other key.
    path = nan_input(tmp_path)
    out = tmp_path / "out"
    kubemr.run(jobs.NaNKeysMapOnly, inputs=[path], output=str(out))
    pairs = read_jsonl(out)
    assert len(pairs) == PAST_PREFLIGHT + 51
    assert sum(1 for k, _ in pairs if math.isnan(k)) == 1


def test_nan_keys_from_a_combiner_blame_the_combiner(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["a", "x", "b", "x"] * 100)
    failure = failure_of(jobs.NaNFromCombiner, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "the combiner yielded key nan, which is NaN" in failure.message


def test_nan_values_under_sort_values_are_refused(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["3", "1", "2"] * 100 + ["nan"])
    failure = failure_of(jobs.NaNValuesSorted, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "the values to sort (SORT_VALUES) include nan" in failure.message
    assert "key 'k'" in failure.message


def test_order_key_refuses_nan_anywhere() -> None:
    nan = float("nan")
    for key in (nan, ("a", nan), ["a", [1, nan]]):
        with pytest.raises(NaNKeyError):
            order_key(key)
    assert order_key(("a", 1.5)) < order_key(("a", 2))


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("combiner", [None, SUM])
def test_collector_refuses_nan_keys_and_names_the_whole_key(partitions, combiner) -> None:
    nan = float("nan")
    # Mixed keys overall, but one partition may hold only numbers (native sort there).
    for pairs, named in (
        ([(1.5, 1), ("s", 1), (nan, 1), (2, 1)], "key nan is NaN"),
        ([(("a", 1), 1), (("a", nan), 1)], "key ('a', nan) holds a NaN"),
    ):
        collector = MapCollector(num_partitions=partitions, combiner=combiner)
        collector.feed_output(pairs)
        with pytest.raises(NaNKeyError, match=named.replace("(", r"\(").replace(")", r"\)")):
            collector.write(io.BytesIO())


# -- 3. items that are not pairs -------------------------------------------------------------


def bare_input(tmp_path) -> str:
    return write_lines(tmp_path / "in.txt", ["cd", "ef", "gh"] * 100 + ["ab"] + ["cd"] * 10)


@pytest.mark.parametrize("mode", ["sum", "count", "min", "max", "python", "combiner", "map_only"])
def test_a_bare_string_is_not_a_pair(tmp_path, mode) -> None:
    path = bare_input(tmp_path)
    failure = failure_of(jobs.BareKeys, tmp_path, [path], params={"mode": mode})
    assert failure.kind == "user-code"
    assert "the mapper yielded 'ab' (a str); it must yield (key, value) pairs" in failure.message
    assert f"{path}:{PAST_PREFLIGHT + 1} " in failure.message
    assert "record 'ab'" in failure.message


def test_a_bare_bytes_is_not_a_pair(tmp_path) -> None:
    path = bare_input(tmp_path)
    failure = failure_of(jobs.BareBytesKeys, tmp_path, [path])
    assert "the mapper yielded b'ab' (a bytes)" in failure.message
    assert "record 'ab'" in failure.message


def test_mapper_batch_output_must_be_pairs(tmp_path) -> None:
    path = bare_input(tmp_path)
    failure = failure_of(jobs.BareKeysBatch, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "mapper_batch returned 'ab' (a str) among its pairs" in failure.message
    assert "a chunk of" in failure.message


def test_reducer_output_must_be_pairs(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["ab", "cd"] * 10)
    failure = failure_of(jobs.ReducerYieldsBareKey, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "the reducer yielded 'ab' (a str)" in failure.message
    assert "key 'ab'" in failure.message


def test_a_mapper_returning_a_list_still_works(tmp_path) -> None:
    text = ["the quick brown fox", "jumps over the lazy dog", "", "the end"] * 50
    path = write_lines(tmp_path / "in.txt", text)
    out = tmp_path / "out"
    kubemr.run(jobs.ListReturningMapper, inputs=[path], output=str(out), reducers=2)
    assert dict(read_jsonl(out)) == dict(Counter(" ".join(text).split()))


def test_yields_only_pairs_is_proven_from_bytecode() -> None:
    def words(line):
        for w in line.split():
            yield w, 1

    def constant(line):
        yield 1, 2

    def bare(line):
        yield line

    def some_bare(line):
        yield line, 1
        if line:
            yield line

    def conditional(line):
        yield (line, 1) if line else line

    def delegating(line):
        yield from [(line, 1)]

    def returning(line):
        return [(line, 1)]

    class Job:
        def mapper(self, line):
            yield line, 1

    assert yields_only_pairs(words) and yields_only_pairs(constant)
    assert yields_only_pairs(Job().mapper)
    for fn in (bare, some_bare, conditional, delegating, returning, print, len):
        assert not yields_only_pairs(fn), fn


@pytest.mark.parametrize("agg", ["sum", "count", "min", "max"])
def test_fold_checks_what_an_unproven_mapper_yields(agg) -> None:
    def mapper(line):
        yield from [(line, 1), line]

    with pytest.raises(NotAPairError, match="yielded 'ab' \\(a str\\)"):
        fold_records_into({}, ["ab"], mapper, agg)
    acc: dict = {}
    fold_records_into(acc, ["ab", "ab"], lambda line: [[line, 1]], agg)  # lists are pairs
    assert acc == {"ab": 2 if agg in ("sum", "count") else 1}


def _add(key, values):
    yield key, sum(values)


@pytest.mark.parametrize("combiner", [None, SUM, COUNT, MIN, MAX, _add])
def test_collector_refuses_non_pairs_from_mapper_batch_in_every_mode(combiner) -> None:
    for bad in ("ab", b"ab", {"a": 1, "b": 2}, ("a", 1, 2)):
        collector = MapCollector(num_partitions=2, combiner=combiner)
        with pytest.raises(NotAPairError, match=r"mapper_batch returned|the mapper yielded"):
            collector.feed_output([("x", 1), bad])
            collector.write(io.BytesIO())
        collector.close()


def test_a_combiner_yielding_a_bare_string_fails() -> None:
    def combiner(key, values):
        yield key

    collector = MapCollector(num_partitions=1, combiner=combiner)
    collector.feed_output([("ab", 1), ("ab", 2)])
    with pytest.raises(UserCodeFailure, match="the combiner yielded 'ab' \\(a str\\)"):
        collector.write(io.BytesIO())


# -- 4. spill directories of failed attempts --------------------------------------------------


@pytest.mark.parametrize(
    "where,exc",
    [
        ("mapper", "error"),
        ("mapper", "exit"),
        ("mapper", "interrupt"),
        ("reducer", "error"),
        ("reducer", "interrupt"),
    ],
)
def test_a_failed_task_leaves_no_spill_dirs(tmp_path, monkeypatch, where, exc) -> None:
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill))  # the workers' tempfile directory
    # Over one 4 MiB chunk, so the map task spills before it reads the line "fail".
    lines = [" ".join(f"w{(i * 7 + j) % 90_000}" for j in range(8)) for i in range(110_000)]
    path = write_lines(tmp_path / "in.txt", [*lines, "fail"])
    failure = failure_of(
        jobs.SpillThenFail,
        tmp_path,
        [path],
        workers=1,
        reducers=1,
        memory="1Mi",
        split_size="64Mi",
        params={"where": where, "exc": exc},
    )
    assert failure.kind == "user-code"
    # The failing code saw its task's temporary directories in TMPDIR...
    made = "kubemr-spill-" if where == "mapper" else "kubemr-reduce-"
    assert made in failure.message
    # ...and nothing is left of them.
    assert os.listdir(spill) == []


def test_collector_deletes_its_spills_when_writing_fails(tmp_path) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(28, "No space left on device")

    collector = MapCollector(num_partitions=2, memory_budget=1, spill_dir=str(tmp_path))
    for i in range(5):
        collector.feed_output([(f"k{i}-{j}", j) for j in range(200)])
        collector.maybe_spill()
    assert os.listdir(tmp_path)  # spilled
    with pytest.raises(OSError, match="No space"):
        collector.write(FullDisk())
    assert os.listdir(tmp_path) == []


def test_close_deletes_spills_of_an_abandoned_collector(tmp_path) -> None:
    collector = MapCollector(num_partitions=1, memory_budget=1, spill_dir=str(tmp_path))
    collector.feed_output([(str(i), i) for i in range(500)])
    collector.maybe_spill()
    assert os.listdir(tmp_path)
    collector.close()
    assert os.listdir(tmp_path) == []


# -- 5. list keys under built-in reducers -----------------------------------------------------


@pytest.mark.parametrize("reducer", ["sum", "count", "min", "max", "python"])
def test_list_keys_with_built_in_reducers(tmp_path, reducer) -> None:
    path = write_lines(tmp_path / "in.txt", ["aa", "ab", "a.", "bbb", "bcd", "c"] * 50)
    out = tmp_path / "out"
    kubemr.run(
        jobs.ListKeys, inputs=[path], output=str(out), reducers=1, params={"reducer": reducer}
    )
    expected = {
        "sum": (300, 300, 50),
        "count": (150, 100, 50),
        "min": (2, 3, 1),
        "max": (2, 3, 1),
        "python": (300, 300, 50),
    }[reducer]
    # Text output shows the key as the mapper gave it first: a list, not a tuple.
    keys = ["['a', [2]]", "['b', [3]]", "['c', [1]]"]
    assert read_text(out) == [f"{k}\t{v}" for k, v in zip(keys, expected)]


@pytest.mark.parametrize("agg", [SUM, COUNT, MIN, MAX])
def test_list_keys_survive_spills_in_the_collector(agg) -> None:
    pairs = [([f"k{i % 300}", [i % 2]], i) for i in range(3000)]
    collector = MapCollector(num_partitions=2, combiner=agg, memory_budget=2000)
    for i in range(0, len(pairs), 100):
        collector.feed_output(pairs[i : i + 100])
        collector.maybe_spill()
    assert collector.spilled_records > 0
    data = io.BytesIO()
    index = collector.write(data)
    got = []
    for p in range(2):
        raw = data.getvalue()[index.offsets[p] : index.offsets[p + 1]]
        part = list(read_segment(io.BytesIO(raw)))
        assert all(hash_partition(k, 2) == p for k, _ in part)
        got.extend(part)
    assert all(type(k) is list and type(k[1]) is list for k, _ in got)
    expected: dict = {}
    for k, v in pairs:
        expected.setdefault(repr(k), []).append(v)
    assert {repr(k): v for k, v in got} == {k: agg.fold(vs) for k, vs in expected.items()}


def test_many_list_keys_through_spills_and_an_external_reduce(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", [f"w{i}" for i in range(30_000)] * 2)
    out = tmp_path / "out"
    summary = kubemr.run(
        jobs.ListKeys,
        inputs=[path],
        output=str(out),
        reducers=1,
        memory="1Mi",
        params={"reducer": "count", "whole": "1"},
    )
    assert summary["counters"]["kubemr"]["map_spilled_records"] > 0
    assert summary["counters"]["kubemr"]["reduce_spilled_to_disk"] == 1
    lines = read_text(out)
    assert len(lines) == 30_000
    assert lines[0] == "['w0', [2]]\t2"
    assert all(line.startswith("['w") and line.endswith("]]\t2") for line in lines)


def test_a_dict_key_under_a_built_in_reducer_says_to_use_a_tuple(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["a", "b"] * 150 + ["dict"])
    failure = failure_of(jobs.DictKeys, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "the mapper yielded key {'line': 'dict'}, which holds a dict" in failure.message
    assert "use a tuple, str or number instead" in failure.message
    assert "record 'dict'" in failure.message
    with pytest.raises(UnhashableKeyError):
        fold_records_into({}, ["x"], lambda line: [({line}, 1)], "sum")


# -- 6. skipped records are named ---------------------------------------------------------------


def test_task_result_names_skipped_records(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"k": "a", "v": 1}\n{oops\n{"k": "b", "v": 2}\n[1,\n')
    summary = kubemr.run(
        jobs.JsonRecords, inputs=[str(path)], output=str(tmp_path / "o"), skip_bad_records=2
    )
    examples = summary["bad_records"]["examples"]
    assert [e.split(" ")[0] for e in examples] == [f"{path}:2", f"{path}:4"]
    assert all("malformed JSON" in e for e in examples)


def test_task_result_markers_without_bad_records_still_load() -> None:
    result = TaskResult(0, "map", 1, "a1", "file:///x", 10, None, {}, 1.0)
    result.bad_records = ["in.txt:3: malformed JSON"]
    data = result.to_json()
    assert TaskResult.from_json(data) == result
    del data["bad_records"]
    assert TaskResult.from_json(data).bad_records == []


# -- more of the same kind ----------------------------------------------------------------------


def test_incomparable_values_at_the_reducer_fail_as_user_code(tmp_path) -> None:
    # Each map task folds its own values fine; only the reducer meets ints and a str.
    ints = write_lines(tmp_path / "a.txt", ["xx", "yyy"] * 150)
    strs = write_lines(tmp_path / "b.txt", ["s"])
    failure = failure_of(jobs.MixedValuesMin, tmp_path, [ints, strs], reducers=1)
    assert failure.kind == "user-code"
    assert "reducer kubemr.MIN raised TypeError" in failure.message
    assert "key 'k'" in failure.message


def test_incomparable_values_in_one_map_task_name_the_record(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["xx", "yyy"] * 150 + ["s"])
    failure = failure_of(jobs.MixedValuesMin, tmp_path, [path])
    assert "kubemr.MIN on the mapper's values raised TypeError" in failure.message
    assert f"{path}:{PAST_PREFLIGHT + 1} " in failure.message


def test_incomparable_values_in_two_spilled_runs_are_user_code() -> None:
    collector = MapCollector(num_partitions=1, combiner=MIN, memory_budget=1)
    collector.feed_output([("k", 1), ("j", 1)])
    collector.maybe_spill()
    collector.feed_output([("k", "s"), ("j", 2)])
    collector.maybe_spill()
    with pytest.raises(UserCodeFailure, match=r"kubemr\.MIN on the mapper's values raised"):
        collector.write(io.BytesIO())


def test_int_enum_keys_hash_like_their_ints(tmp_path) -> None:
    assert stable_hash(jobs.Color.RED) == stable_hash(1)
    path = write_lines(tmp_path / "in.txt", ["a", "bb", "ccc"] * 10)
    out = tmp_path / "out"
    kubemr.run(jobs.IntEnumKeys, inputs=[path], output=str(out), reducers=2)
    assert dict(read_jsonl(out)) == {1: 10, 2: 20}


def test_a_generator_teardown_fails_instead_of_never_running(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["a", "b"])
    failure = failure_of(jobs.GeneratorTeardown, tmp_path, [path])
    assert failure.kind == "user-code"
    assert "teardown() contains `yield`" in failure.message


def test_a_failing_partitioner_is_user_code(tmp_path) -> None:
    path = write_lines(tmp_path / "in.txt", ["a", "b"])
    failure = failure_of(jobs.FailingPartitioner, tmp_path, [path], reducers=2)
    assert failure.kind == "user-code"
    assert "partitioner raised KeyError: 'b' (key 'b')" in failure.message


def test_sorted_values_refuses_nan() -> None:
    assert sorted_values([3.0, 1, 2.5]) == [1, 2.5, 3.0]
    assert sorted_values(["b", 1, None]) == [None, 1, "b"]
    for values in ([3.0, float("nan"), 1.0], ["a", 1, float("nan")]):
        with pytest.raises(ValueError, match="include nan"):
            sorted_values(values)
