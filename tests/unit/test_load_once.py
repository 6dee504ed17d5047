"""``MapReduce.load_once``: a side table read once per worker process and job, not once
per task; the job file is run by value on the real local runner, as `kubemr run` runs it."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

import kubemr
from tests.jobfiles import job_file, read_pairs, run_file

# A replicated join whose loader leaves a line per call in a log: which process loaded
# the table, and for how many of its map tasks.
JOIN = """
    import os

    import kubemr


    def load_countries(path, log):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        with open(path) as fh:
            return dict(line.rstrip("\\n").split(",") for line in fh)


    class Join(kubemr.MapReduce):
        reducer = kubemr.SUM

        def mapper_init(self):
            params = self.params
            self.countries = self.load_once(load_countries, params["users"], params["log"])
            with open(self.params["tasks"], "a") as fh:
                fh.write(f"{os.getpid()}\\n")

        def mapper(self, line):
            user, amount = line.split()
            yield self.countries[user], int(amount)
"""


def _join_inputs(tmp_path: Path) -> tuple[str, str, dict[str, int]]:
    users = {f"u{i}": ("NL", "DE", "FR")[i % 3] for i in range(50)}
    (tmp_path / "users.csv").write_text("".join(f"{u},{c}\n" for u, c in users.items()))
    lines = [f"u{i % 50} {i}" for i in range(3000)]
    (tmp_path / "events.txt").write_text("\n".join(lines) + "\n")
    want: dict[str, int] = collections.Counter()
    for line in lines:
        user, amount = line.split()
        want[users[user]] += int(amount)
    return str(tmp_path / "users.csv"), str(tmp_path / "events.txt"), dict(want)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_table_is_loaded_once_per_worker_process_not_per_task(tmp_path, workers) -> None:
    users, events, want = _join_inputs(tmp_path)
    log, tasks = tmp_path / "loads.log", tmp_path / "tasks.log"
    run_file(
        job_file(tmp_path, JOIN),
        inputs=[events],
        output=str(tmp_path / "out"),
        split_size=2000,
        workers=workers,
        params={"users": users, "log": str(log), "tasks": str(tasks)},
    )
    assert dict(read_pairs(tmp_path / "out")) == want
    # The driver's preflight runs mapper_init once too, outside any task: left out.
    driver = str(os.getpid())
    task_pids = [pid for pid in tasks.read_text().split() if pid != driver]
    load_pids = [pid for pid in log.read_text().split() if pid != driver]
    assert len(task_pids) >= 8, "the input should make many map tasks"
    # Every worker process that ran a map task loaded the table exactly once.
    assert sorted(load_pids) == sorted(set(task_pids))
    assert len(load_pids) <= workers < len(task_pids)


class _Job(kubemr.MapReduce):
    def mapper(self, line):
        yield line, 1


def test_the_values_belong_to_one_job_and_outside_a_task_the_loader_just_runs() -> None:
    calls: list[str] = []

    def load(name: str) -> str:
        calls.append(name)
        return name.upper()

    job = _Job()
    # The driver's preflight: no task, no job scope, nothing kept.
    assert job.load_once(load, "a") == "A"
    assert job.load_once(load, "a") == "A"
    assert calls == ["a", "a"]
    # The tasks of one job share what was loaded, per function and arguments.
    first, second = _Job(), _Job()
    first._job_scope = second._job_scope = "job-1"
    assert first.load_once(load, "a") == "A"
    assert second.load_once(load, "a") == "A"
    assert second.load_once(load, "b") == "B"
    assert calls == ["a", "a", "a", "b"]
    # A task of another job in the same process loads again.
    other = _Job()
    other._job_scope = "job-2"
    assert other.load_once(load, "a") == "A"
    assert calls == ["a", "a", "a", "b", "a"]


def test_a_method_of_the_job_is_one_key_across_instances() -> None:
    class Tables(kubemr.MapReduce):
        loads = 0

        def mapper(self, line):
            yield line, 1

        def table(self, path: str) -> dict:
            type(self).loads += 1
            return {"path": path}

    a, b = Tables(), Tables()
    a._job_scope = b._job_scope = "job-3"
    assert a.load_once(a.table, "x") is b.load_once(b.table, "x")
    assert Tables.loads == 1


def test_unhashable_arguments_are_refused_with_what_to_pass() -> None:
    job = _Job()
    job._job_scope = "job-4"
    with pytest.raises(TypeError, match="must be hashable"):
        job.load_once(json.loads, ["not", "hashable"])
