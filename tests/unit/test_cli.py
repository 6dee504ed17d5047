"""The command line: exit codes, messages on stderr, the JSON summary on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from kubemr.cli import app

JOBS = os.path.join(os.path.dirname(__file__), "jobs.py")
runner = CliRunner()


def test_run_prints_json_summary(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("a b a\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "run",
            f"{JOBS}:WordCount",
            "-i",
            str(tmp_path / "in.txt"),
            "-o",
            str(out),
            "--json",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded"
    assert summary["output"]["records"] == 2


def test_missing_input_exits_2_with_a_clear_message(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubemr",
            "run",
            f"{JOBS}:WordCount",
            "-i",
            str(tmp_path / "missing.txt"),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"input {tmp_path / 'missing.txt'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_failed_job_exits_1_and_says_no_success(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("ok\nboom\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubemr",
            "run",
            f"{JOBS}:FailsOnLine",
            "-i",
            str(tmp_path / "in.txt"),
            "-o",
            str(tmp_path / "o"),
            "--max-attempts",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "in.txt:2" in proc.stderr and "cannot handle boom" in proc.stderr
    assert "no _SUCCESS was written" in proc.stderr
    assert not (tmp_path / "o" / "_SUCCESS").exists()


def test_bad_size_is_a_usage_error(tmp_path) -> None:
    result = runner.invoke(
        app, ["run", JOBS + ":WordCount", "-i", "x", "-o", str(tmp_path), "--memory", "lots"]
    )
    assert result.exit_code == 2
    assert "invalid size 'lots'" in result.output


def test_worker_runs_one_task_and_exits_by_kind(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("a b\n")
    work = tmp_path / "work"
    result = runner.invoke(
        app,
        [
            "run",
            f"{JOBS}:WordCount",
            "-i",
            str(tmp_path / "in.txt"),
            "-o",
            str(tmp_path / "o"),
            "--keep-work",
            "--work-dir",
            str(work),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    (plan,) = list(work.glob("*/plan.json"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubemr",
            "worker",
            "--work",
            str(plan.parent),
            "--stage",
            "map-0",
            "--attempt",
            "again",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, JOB_COMPLETION_INDEX="0"),
    )
    assert proc.returncode == 0, proc.stderr
    assert list(work.glob("*/steps/0/tasks/map-00000/again.json"))


def test_params_reach_every_task(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("a bb ccc dddd\nccc dddd eeeee\n" * 100)
    out = tmp_path / "out"
    args = ["run", f"{JOBS}:LongWords", "-i", str(tmp_path / "in.txt"), "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, "--param", "min_len=4", "--split-size", "500"])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for name in sorted(os.listdir(out)) if name.startswith("part-")
             for line in open(out / name)]  # fmt: skip
    assert dict(pairs) == {"dddd": 200, "eeeee": 100}
    bad = runner.invoke(app, [*args, "--overwrite", "--param", "min_len"])
    assert bad.exit_code == 2
    assert "KEY=VALUE" in bad.output


def test_run_help_after_a_job_shows_its_options_and_file_flag(tmp_path) -> None:
    job = tmp_path / "opts.py"
    job.write_text(
        "import kubemr\n"
        "from pydantic import Field\n"
        "from kubemr.options import Options\n\n"
        "class Opts(kubemr.MapReduce):\n"
        "    FILES = ['words.txt']\n\n"
        "    class Options(Options):\n"
        "        top: int = Field(10, description='How many to keep.')\n\n"
        "    def mapper(self, line):\n"
        "        yield line, self.options.top\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kubemr", "run", str(job), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--file" in proc.stdout
    assert "--param top=INTEGER  default: 10. How many to keep." in proc.stdout
    assert "(FILES, read as self.files[NAME]): words.txt" in proc.stdout
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubemr",
            "run",
            str(job),
            "-i",
            str(job),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "Opts.FILES: file words.txt does not exist" in missing.stderr
