"""Job files written by a test, run with the local runner, and their outputs read back."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import kubemr
from kubemr.loader import load_job_class


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
