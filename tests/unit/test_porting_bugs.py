"""What used to stop mrjob jobs from being ported line by line, each with its regression
test: SORT_VALUES under steps(), functions that return None, tracebacks of code that
travelled by value, and the text line of a (None, None) pair."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import kubemr
from kubemr.cluster.jobcode import pickle_job, upload
from kubemr.errors import JobFailed
from kubemr.loader import load_job_class
from kubemr.storage import StorageOptions
from tests.jobfiles import job_file, read_pairs, run_worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- (a) SORT_VALUES = True with steps() ---------------------------------------------------------

SORTED_VALUES = """
    import kubemr


    class Secondary(kubemr.MapReduce):
        SORT_VALUES = True

        def steps(self):
            return [
                kubemr.MRStep(mapper=self.parse, reducer=self.collect),
                kubemr.MRStep(mapper=self.regroup, reducer=self.collect),
                kubemr.MRStep(mapper=self.regroup, reducer=self.collect, sort_values=False),
            ]

        def parse(self, line):
            key, value = line.split()
            yield key, int(value)

        def collect(self, key, values):
            yield key, list(values)

        def regroup(self, pair):
            key, values = pair
            for value in values:
                yield key[0], value
"""


def test_sort_values_applies_to_the_steps_of_steps(tmp_path) -> None:
    # Values in the input in descending order: without the secondary sort they reach the
    # reducer in input order.
    data = tmp_path / "in.txt"
    lines = [
        f"{k}{i % 3} {v}" for i, (k, v) in enumerate((k, v) for v in range(30, 0, -1) for k in "ab")
    ]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    job = load_job_class(job_file(tmp_path, SORTED_VALUES))
    kubemr.run(job, inputs=[str(data)], output=str(out), reducers=1, split_size=0)
    expected: dict = defaultdict(list)
    for line in lines:
        key, value = line.split()
        expected[key[0]].append(int(value))
    got = dict(read_pairs(out))
    assert set(got) == {"a", "b"}
    for key, values in got.items():
        assert sorted(values) == sorted(expected[key])
        # Step 2 gets the values of "a0", "a1", "a2" one list after the other: only its
        # own secondary sort orders them all; step 3 (sort_values=False) keeps that order.
        assert values == sorted(values)

    # Step 1 alone, where the input order is descending: sorted only by SORT_VALUES.
    one_step = SORTED_VALUES.replace(
        "                kubemr.MRStep(mapper=self.regroup, reducer=self.collect),\n"
        "                kubemr.MRStep(mapper=self.regroup, reducer=self.collect, "
        "sort_values=False),\n",
        "",
    )
    assert one_step != SORTED_VALUES
    for sort_values, name in ((True, "on"), (False, "off")):
        source = one_step if sort_values else one_step.replace("SORT_VALUES = True", "pass")
        out = tmp_path / name
        job = load_job_class(job_file(tmp_path, source, f"{name}.py"))
        kubemr.run(job, inputs=[str(data)], output=str(out), reducers=1, split_size=0)
        for key, values in read_pairs(out):
            in_input = [int(line.split()[1]) for line in lines if line.split()[0] == key]
            assert values == (sorted(in_input) if sort_values else in_input)
            assert in_input != sorted(in_input)


def test_an_mrstep_can_turn_the_jobs_sort_values_off(tmp_path) -> None:
    source = SORTED_VALUES.replace(
        "kubemr.MRStep(mapper=self.parse, reducer=self.collect)",
        "kubemr.MRStep(mapper=self.parse, reducer=self.collect, sort_values=False)",
    ).replace(
        "                kubemr.MRStep(mapper=self.regroup, reducer=self.collect),\n"
        "                kubemr.MRStep(mapper=self.regroup, reducer=self.collect, "
        "sort_values=False),\n",
        "",
    )
    data = tmp_path / "in.txt"
    data.write_text("k 3\nk 1\nk 2\n")
    out = tmp_path / "out"
    kubemr.run(load_job_class(job_file(tmp_path, source)), inputs=[str(data)], output=str(out))
    assert read_pairs(out) == [["k", [3, 1, 2]]]


# -- (b) a mapper, combiner or reducer that returns None -------------------------------------

RETURNS_NONE = """
    import kubemr


    class Filters(kubemr.MapReduce):
        def mapper(self, line):
            words = line.split()
            if not words:
                return None  # mrjob: no output for this record
            if words[0] == "skip":
                return
            return [(w, 1) for w in words]

        def combiner(self, word, counts):
            if word == "dropped":
                self.increment_counter("combiner", "returned None")
                return None
            return [(word, sum(counts))]

        def reducer(self, word, counts):
            total = sum(counts)
            if total < 2 or word == "dropped":
                return None
            return [(word, total)]
"""


def test_functions_that_return_none_emit_nothing(tmp_path) -> None:
    data = tmp_path / "in.txt"
    lines = ["a b a", "", "skip a a a", "c dropped d dropped", "b c c", "e"]
    data.write_text("\n".join(lines * 20) + "\n")
    out = tmp_path / "out"
    job = load_job_class(job_file(tmp_path, RETURNS_NONE))
    summary = kubemr.run(job, inputs=[str(data)], output=str(out), split_size=60, workers=2)
    counts: dict = defaultdict(int)
    for line in lines * 20:
        words = line.split()
        if words and words[0] != "skip":
            for w in words:
                counts[w] += 1
    expected = {w: n for w, n in counts.items() if n >= 2 and w != "dropped"}
    assert dict(read_pairs(out)) == expected
    assert summary["attempts"]["failed"] == 0
    # the combiner did return None (for a key it saw more than once in a map task)
    assert summary["counters"]["combiner"]["returned None"] > 0


def test_a_map_only_mapper_that_returns_none(tmp_path) -> None:
    source = """
        import kubemr


        class Keep(kubemr.MapReduce):
            OUTPUT_FORMAT = "text"

            def mapper(self, line):
                if "x" in line:
                    return [(line, None)]
    """
    data = tmp_path / "in.txt"
    data.write_text("ax\nb\ncx\n")
    out = tmp_path / "out"
    kubemr.run(
        load_job_class(job_file(tmp_path, source)), inputs=[str(data)], output=str(out), reducers=0
    )
    assert (out / "part-00000").read_text() == "ax\ncx\n"


# -- (c) tracebacks of code that travelled by value name its files ----------------------------

HELPER = """
    def explode(x):
        return 1 / x  # the helper's line
"""

BASE = """
    import kubemr


    class Base(kubemr.MapReduce):
        reducer = kubemr.SUM

        def check(self, line):
            if line == "base":
                raise ValueError("refused by the base class")  # the base's line
"""

JOB = """
    import porting_helper as helper
    from porting_base import Base


    class Job(Base):
        def mapper(self, line):
            self.check(line)
            if line == "zero":
                helper.explode(0)  # the job's line
            yield line, 1
"""


@pytest.fixture
def three_files(tmp_path: Path):
    """A job file importing a helper module and a base class from files beside it. Each
    test imports its own: a module name is imported once per process."""
    for name in ("porting_helper", "porting_base"):
        sys.modules.pop(name, None)
    yield _three_files(tmp_path)
    for name in ("porting_helper", "porting_base"):
        sys.modules.pop(name, None)


def _three_files(tmp_path: Path) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir()
    return {
        "helper": job_file(code, HELPER, "porting_helper.py"),
        "base": job_file(code, BASE, "porting_base.py"),
        "job": job_file(code, JOB, "job.py"),
    }


def assert_names_files_and_lines(traceback: str, files: dict[str, str], record: str) -> None:
    """The frames of the job file and of the helper or base module, each with its line."""
    assert "<dynamic-code>" not in traceback
    if record == "zero":
        frames = [
            (files["job"], 10, "mapper", "helper.explode(0)  # the job's line"),
            (files["helper"], 3, "explode", "return 1 / x  # the helper's line"),
        ]
    else:
        frames = [
            (files["job"], 8, "mapper", "self.check(line)"),
            (files["base"], 10, "check", 'raise ValueError("refused by the base class")'),
        ]
    for path, line, function, text in frames:
        assert f'File "{path}", line {line}, in {function}\n    {text}' in traceback


@pytest.mark.parametrize("record", ["zero", "base"])
def test_local_tracebacks_name_the_job_files(tmp_path, three_files, record) -> None:
    files = three_files
    data = tmp_path / "in.txt"
    data.write_text(f"ok\n{record}\n")
    job = load_job_class(files["job"])
    with pytest.raises(JobFailed) as info:
        kubemr.run(job, inputs=[str(data)], output=str(tmp_path / "out"), max_attempts=1)
    assert_names_files_and_lines(info.value.failure.traceback, files, record)


def worker(tmp_path: Path, stage: str, env: dict[str, str]) -> tuple[int, dict]:
    # cwd: the pod has no copy of the job's files beside it
    code, message, _ = run_worker(tmp_path, stage, 0, env, cwd=tmp_path)
    return code, message


@pytest.mark.parametrize("record", ["zero", "base"])
def test_pod_tracebacks_name_the_job_files_without_them(tmp_path, three_files, record) -> None:
    """The path of a job submitted as a pickle: the plan pod and the map pod unpickle it
    (kubemr worker, as pods run it) where none of the job's files exist."""
    files = three_files
    code = pickle_job(files["job"], str(tmp_path / "code-dir"))
    upload(code, StorageOptions())
    shutil.rmtree(tmp_path / "code")  # the pods have only the pickle and its sources
    data = tmp_path / "in.txt"
    data.write_text(f"ok\n{record}\n")
    spec = {
        "name": "job",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {
            "job": {"pickle": {"url": code.url, "sha256": code.sha256}},
            "inputs": [str(data)],
            "output": str(tmp_path / "out"),
        },
    }
    code_, message = worker(tmp_path, "plan", {"KUBEMR_SPEC": json.dumps(spec)})
    assert code_ == 0, message
    meta = json.loads((tmp_path / "work" / "job.meta.json").read_text())
    assert set(meta["sources"]) == set(files.values())  # recorded again by the plan pod
    code_, message = worker(tmp_path, "map-0", {})
    assert message["reason"] == "UserCodeError", message
    assert_names_files_and_lines(message["traceback"], files, record)


# -- (d) the text line of a (None, None) pair --------------------------------------------------


def test_text_output_of_a_none_pair_is_an_empty_line(tmp_path) -> None:
    source = """
        import kubemr


        class Nones(kubemr.MapReduce):
            OUTPUT_FORMAT = "text"

            def mapper(self, line):
                yield (None if line == "-" else line), None
    """
    data = tmp_path / "in.txt"
    data.write_text("a\n-\nb\n")
    out = tmp_path / "out"
    summary = kubemr.run(
        load_job_class(job_file(tmp_path, source)), inputs=[str(data)], output=str(out), reducers=0
    )
    assert (out / "part-00000").read_text() == "a\n\nb\n"  # was "a\nNone\nb\n"
    assert summary["output"]["records"] == 3
