"""The report of a real job, as its user gets it: ``kubemr run --report`` warns about the
hot key and writes the page and the picture; ``kubemr report --json`` gives numbers that
are the task records' own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobfiles import job_file
from tests.support import ROOT

pytestmark = pytest.mark.timeout(300)

# No combiner: every "hot" pair reaches its reducer, which gets most of the shuffle.
SKEWED = """
import kubemr


class Skewed(kubemr.MapReduce):
    def mapper(self, line):
        for word in line.split():
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


def kubemr_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubemr", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")},
    )


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    here = tmp_path_factory.mktemp("report-cli")
    data = here / "in"
    data.mkdir()
    for i in range(4):
        lines = [f"hot hot hot hot hot k{(i * 7 + n) % 61}" for n in range(120_000)]
        (data / f"part-{i}.txt").write_text("\n".join(lines) + "\n")
    job = job_file(here, SKEWED, "skewed.py")
    run = kubemr_cli(
        here, "run", job, "-i", str(data), "-o", str(here / "out"), "--reducers", "4",
        "--workers", "2", "--split-size", "1MiB", "--report", "-q",
    )  # fmt: skip
    return here, run


def test_run_report_warns_about_the_hot_key_and_writes_the_page(ran) -> None:
    here, run = ran
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if "warning:" in line]
    assert len(warning) == 1 and 'hot key "hot"' in warning[0], run.stderr
    assert "combiner" in warning[0]  # says what to try
    page = (here / "Skewed-report.html").read_text()
    success = json.loads((here / "out" / "_SUCCESS").read_text())
    assert success["job_id"] in page
    assert page.count("<svg") >= 3 and "<script" not in page
    assert (here / "Skewed-report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_json_numbers_are_the_task_records(ran) -> None:
    here, run = ran
    assert run.returncode == 0, run.stderr
    shown = kubemr_cli(here, "report", str(here / "out"), "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    records = json.loads((here / "out" / "_REPORT.json").read_text())
    rows = records["attempts"]
    assert found["job_id"] == records["job_id"] and found["attempts"] == len(rows)
    assert found["totals"] == records["totals"]
    assert records["totals"]["cpu_seconds"] == pytest.approx(
        sum(r["cpu_seconds"] for r in rows), rel=1e-6
    )
    (step,) = records["steps"]
    waves = {w["wave"]: w for w in found["waves"]}
    assert waves["map"]["tasks"] == step["maps"] >= 4
    assert waves["reduce"]["tasks"] == step["reduces"] == 4
    for name, wave in waves.items():
        mine = [r for r in rows if r["wave"] == name]
        durations = [r["finished"] - r["started"] for r in mine]
        assert wave["duration"]["max"] == pytest.approx(max(durations), abs=1e-3)
        assert wave["duration"]["min"] == pytest.approx(min(durations), abs=1e-3)
        assert wave["input_bytes"]["max"] == max(r["bytes_in"] for r in mine)
    (skew,) = found["skew"]
    biggest = max(records["partitions"], key=lambda p: p.get("raw_bytes", p["bytes"]))
    assert skew["largest_partition"] == biggest["partition"] and skew["skewed"]
    assert skew["top_keys"][0]["key"] == '"hot"'
    assert not found["failed"]
    # Word counts: the output holds every word once with its count.
    counts = dict(
        json.loads(line)
        for part in sorted((here / "out").glob("part-*"))
        for line in part.read_text().splitlines()
    )
    assert counts["hot"] == 5 * 4 * 120_000
