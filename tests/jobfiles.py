"""Job files written by a test, run with the local runner, and their outputs read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubemr
from kubemr.loader import load_job_class

ROOT = Path(__file__).resolve().parents[1]


# A word count without a combiner, so the shuffle holds one record per word (a frequent
# word is a hot key). The line "trigger" fails its map task's first attempt: a marker
# file, at the path given as ``marker`` (pods on this machine share it), says whether it
# was tried. With KUBEMR_TEST_FAIL set, the line "always" fails every attempt.
SKEWED_RETRIED = """
import os
import kubemr

MARKER = {marker!r}


class Skewed(kubemr.MapReduce):
    def mapper(self, line):
        if line == "trigger" and not os.path.exists(MARKER):
            open(MARKER, "w").close()
            raise ValueError("the first attempt of this task fails")
        if line == "always" and os.environ.get("KUBEMR_TEST_FAIL"):
            raise ValueError("this run fails")
        for word in line.split():
            yield word, 1

    def reducer(self, key, values):
        yield key, sum(values)
"""


def job_file(tmp_path: Path, source: str, name: str = "job.py") -> str:
    """``source`` (dedented) written as ``tmp_path/name``; returns its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def run_file(path: str, **options: Any) -> dict:
    """The job class of the file at ``path`` run with ``kubemr.run``; its summary."""
    return kubemr.run(load_job_class(path), **options)


def read_pairs(out: str | Path) -> list:
    """The JSON-lines pairs of an output directory's part files, in part order."""
    return [
        json.loads(line)
        for part in sorted(Path(out).glob("part-*"))
        for line in part.read_text().splitlines()
    ]


def start_worker(
    tmp_path: Path,
    stage: str,
    index: int = 0,
    env: dict | None = None,
    pod: str = "job",
    **popen: Any,
) -> tuple[subprocess.Popen, Path]:
    """``kubemr worker`` started as a pod starts it, on the work dir ``tmp_path/work``:
    the process and the path of its termination message."""
    message = tmp_path / f"termination-{stage}-{index}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubemr", "worker", "--work", str(tmp_path / "work"),
         "--stage", stage],
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "JOB_COMPLETION_INDEX": str(index),
            "KUBEMR_POD_NAME": f"{pod}-{stage}-{index}-pod",
            "KUBEMR_TERMINATION_LOG": str(message),
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )  # fmt: skip
    return proc, message


def run_worker(
    tmp_path: Path,
    stage: str,
    index: int = 0,
    env: dict | None = None,
    pod: str = "job",
    **popen: Any,
) -> tuple[int, dict, str]:
    """:func:`start_worker` run to its end: its exit code, its termination message and
    its stderr."""
    proc, message = start_worker(tmp_path, stage, index, env, pod, **popen)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, json.loads(message.read_text()), err
