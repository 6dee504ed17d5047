"""The CI examples (examples/ci/): both pipelines run examples/ci/submit.sh, which the
end-to-end tests run against a real cluster, with options ``kubemr submit`` takes, on the
worker image's Python."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import typer.main
import yaml

from kubemr.cli import app
from tests.support import ROOT

CI = os.path.join(ROOT, "examples", "ci")


def submit_options() -> set[str]:
    command = typer.main.get_command(app).commands["submit"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in param.opts}


def github_step() -> tuple[dict, str]:
    with open(os.path.join(CI, "github-actions.yml")) as fh:
        workflow = yaml.safe_load(fh)
    (job,) = workflow["jobs"].values()
    return job, next(s["run"] for s in job["steps"] if "submit.sh" in s.get("run", ""))


def gitlab_job() -> tuple[dict, str]:
    with open(os.path.join(CI, ".gitlab-ci.yml")) as fh:
        pipeline = yaml.safe_load(fh)
    job = pipeline["kubemr-wordcount"]
    return job, next(line for line in job["script"] if "submit.sh" in line)


def options(line: str) -> list[str]:
    return [word for word in shlex.split(line) if word.startswith("--")]


def test_both_pipelines_run_the_script_the_tests_run() -> None:
    _, github = github_step()
    _, gitlab = gitlab_job()
    for line in (github, gitlab):
        words = shlex.split(line)
        assert words[:2] == ["examples/ci/submit.sh", "examples/wordcount.py"]
        assert set(options(line)) <= submit_options(), options(line)
    assert options(github) == options(gitlab)


def test_the_script_waits_and_passes_the_exit_status_on() -> None:
    with open(os.path.join(CI, "submit.sh")) as fh:
        script = fh.read()
    assert "set -euo pipefail" in script
    last = script.strip().splitlines()[-1]
    assert last.startswith('kubemr submit "$@" --generate-name --wait --timeout')
    assert os.access(os.path.join(CI, "submit.sh"), os.X_OK)
    subprocess.run(["bash", "-n", os.path.join(CI, "submit.sh")], check=True)


def test_the_pipelines_use_the_worker_images_python() -> None:
    with open(os.path.join(ROOT, "Dockerfile")) as fh:
        image = re.search(r"python:(\d+\.\d+)", fh.read())
    assert image is not None
    github, _ = github_step()
    setup = next(s for s in github["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == image.group(1)
    gitlab, _ = gitlab_job()
    assert gitlab["image"] == f"python:{image.group(1)}-slim"
