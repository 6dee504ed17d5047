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


def run_worker(
    tmp_path: Path, stage: str, index: int = 0, env: dict | None = None, pod: str = "job"
) -> tuple[int, dict, str]:
    """``kubemr worker`` run as a pod runs it, on the work dir ``tmp_path/work``: its exit
    code, its termination message and its stderr."""
    message = tmp_path / f"termination-{stage}-{index}"
    proc = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    return proc.returncode, json.loads(message.read_text()), proc.stderr
