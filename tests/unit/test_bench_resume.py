"""``python -m bench all --resume``: a stopped run of the peer benchmark goes on from its
progress file, keeping what it measured and running only the rest."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

import bench.__main__ as harness

ENGINES = ["kubemr-batch", "plain-Nproc", "lithops"]


class Stop(Exception):
    """Stands for the run being stopped (a signal, the machine going away)."""


def fake_harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, stop_after: int | None) -> list:
    """The harness with its engines replaced by a recorder: each measurement returns a
    fixed row (the same output for every engine) and is logged; after ``stop_after``
    measurements the run stops."""
    calls: list[tuple[str, str, str]] = []

    def measure(engine: str, job: str, data: str, args: Any, repeat: int, reference: dict):
        if stop_after is not None and len(calls) == stop_after:
            raise Stop
        calls.append((job, os.path.basename(data), engine))
        digest = harness.output_digest({"word": 1})
        if "digest" in reference:
            assert reference["digest"] == digest  # checked against the kept rows
        else:
            reference.update(engine=engine, digest=digest)
        return {"seconds": 1.0, "runs": 1, "all_seconds": [1.0], "peak_mb": 10.0,
                "output_digest": digest}  # fmt: skip

    monkeypatch.setattr(harness, "measure", measure)
    monkeypatch.setattr(harness, "make_data", lambda job, size, data_dir: f"{job}-{size}")
    monkeypatch.setattr(harness, "data_bytes", lambda data: int(data.rsplit("-", 1)[1]))
    monkeypatch.setattr(harness, "machine_facts", lambda engines: {"cores": 2})
    monkeypatch.setattr(harness, "compile_sources", lambda: None)
    # The peers never run here, so their virtualenvs are not installed either.
    monkeypatch.setattr(harness, "python_of", lambda engine: sys.executable)
    monkeypatch.setattr(harness, "RESULTS", str(tmp_path))
    return calls


def argv(*extra: str) -> list[str]:
    return ["all", "--size", "1MB", "--sizes", "1MB,2MB", "--repeat", "1", "--no-docs",
            "--engines", *ENGINES, *extra]  # fmt: skip


def run(*extra: str) -> None:
    with pytest.raises(SystemExit) as done:
        harness.main(argv(*extra))
    assert done.value.code == 0


def test_a_resumed_run_measures_only_what_the_stopped_run_had_not(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    first = fake_harness(monkeypatch, tmp_path, stop_after=4)
    with pytest.raises(Stop):
        harness.main(argv())
    progress = tmp_path / "peers-1MB-partial.inprogress.json"
    assert progress.exists()
    # The word count at 1 MB by all three engines, then its first engine at 2 MB.
    assert first == [("wordcount", "wordcount-1000000", e) for e in ENGINES] + [
        ("wordcount", "wordcount-2000000", "kubemr-batch")
    ]

    rest = fake_harness(monkeypatch, tmp_path, stop_after=None)
    run("--resume", str(progress))
    measured = set(first) | set(rest)
    assert not set(first) & set(rest)  # nothing measured twice
    every = {
        (job, f"{job}-{size}", engine)
        for job in harness.JOBS
        for size in (1000000, 2000000)
        for engine in ENGINES
    }
    assert measured == every
    assert not progress.exists()
    results = json.loads((tmp_path / "peers-1MB-partial.json").read_text())
    for size in ("1000000", "2000000"):
        for job in harness.JOBS:
            assert set(results["by_size"][size][job]["engines"]) == set(ENGINES)
    assert results["jobs"]["wordcount"] == results["by_size"]["1000000"]["wordcount"]
    assert results["scaling"]["wordcount"]["kubemr-batch"] == {"1000000": 1.0, "2000000": 1.0}
    assert len(results["resumed"]) == 1


def test_a_run_with_other_options_is_not_resumed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    fake_harness(monkeypatch, tmp_path, stop_after=None)
    stopped = tmp_path / "stopped.json"
    stopped.write_text(json.dumps({"size": "1MB", "sizes": "1MB,4MB", "workers": 2,
                                   "repeat": 1, "date": "x"}))  # fmt: skip
    with pytest.raises(SystemExit, match="that run had sizes '1MB,4MB'"):
        harness.main(argv("--workers", "2", "--resume", str(stopped)))


def test_the_output_digest_ignores_order_and_sees_values() -> None:
    a = harness.output_digest({"b": 2, "a": 1})
    assert a == harness.output_digest({"a": 1, "b": 2})
    assert a != harness.output_digest({"a": 1, "b": 3})
    assert harness.output_digest((3, "x")) != harness.output_digest((4, "x"))
