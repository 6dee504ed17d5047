"""Typed job options (``class Options(kubemr.options.Options)`` on the job class) and a job
file that runs itself (``WordCount.run()``): each job is a real file, run on the real
local runner (``kubemr.run``, ``kubemr run``, ``python job.py``) and, for the pod path,
stage by stage with ``kubemr worker`` as pods run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import kubemr
from kubemr.cli import app
from kubemr.coordinator import StepShape, job_stages
from kubemr.errors import KubemrError, OptionError
from kubemr.loader import load_job_class
from kubemr.options import JobOptionError, check_options
from kubemr.termination import EXIT_BAD_INPUT
from tests.jobfiles import run_worker

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

TOP_WORDS = '''
import re

from pydantic import Field

import kubemr
from kubemr.options import Options


class TopWords(kubemr.MapReduce):
    """The most frequent words matching a pattern, and where each option was seen."""

    class Options(Options):
        pattern: str = Field(description="Regular expression of a word.")
        top: int = Field(3, ge=1, description="How many words to keep.")
        lower: bool = Field(False, description="Fold case first.")
        parts: int = Field(2, ge=1, le=8, description="Reducers of the first step.")

    def setup(self):
        self.seen = (self.options.top, self.options.lower)

    def steps(self):
        return [
            kubemr.MRStep(
                mapper=self.words,
                mapper_final=self.map_seen,
                combiner=kubemr.SUM,
                reducer=kubemr.SUM,
                reducers=self.options.parts,
            ),
            kubemr.MRStep(mapper=self.to_one_key, reducer=self.top_n, reducer_final=self.red_seen),
        ]

    def words(self, line):
        assert self.seen == (self.options.top, self.options.lower)
        if self.options.lower:
            line = line.lower()
        for word in re.findall(self.options.pattern, line):
            yield word, 1

    def map_seen(self):
        yield ("seen", "map", self.options.top, self.options.lower, self.params.get("top")), 0

    def to_one_key(self, pair):
        word, count = pair
        if isinstance(word, tuple):  # the hooks' record of what they saw
            yield "seen", tuple(word)
        else:
            yield "words", (count, word)

    def top_n(self, key, values):
        if key == "seen":
            for value in sorted(set(values)):
                yield "seen", list(value)
        else:
            best = sorted(values, key=lambda cw: (-cw[0], cw[1]))[: self.options.top]
            for count, word in best:
                yield word, count

    def red_seen(self):
        top = self.options.top
        yield "seen", ["reduce", top, self.options.lower, type(top).__name__]


if __name__ == "__main__":
    TopWords.run()
'''

TEXT = "The cat and the dog\nA cat, a bird\nthe cat sat on THE mat\n" * 40


def job_file(tmp_path: Path, source: str = TOP_WORDS, name: str = "topwords.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(TEXT)
    return path


def read_parts(out: Path) -> list:
    return [
        json.loads(line)
        for part in sorted(out.glob("part-*"))
        for line in part.read_text().splitlines()
    ]


def test_typed_values_reach_every_task_hook_and_steps(tmp_path, data) -> None:
    job = load_job_class(job_file(tmp_path))
    out = tmp_path / "out"
    summary = kubemr.run(
        job,
        inputs=[str(data)],
        output=str(out),
        params={"pattern": r"[A-Za-z]+", "top": 2, "lower": True, "parts": "3"},
        split_size=400,
        workers=2,
    )
    pairs = read_parts(out)
    words = [p for p in pairs if p[0] != "seen"]
    seen = sorted(tuple(p[1]) for p in pairs if p[0] == "seen")
    assert words == [["the", 160], ["cat", 120]]
    # Every map task and the reducer saw the typed values; self.params keeps the string.
    assert seen == [("reduce", 2, True, "int"), ("seen", "map", 2, True, "2")]
    assert summary["tasks"]["map"] > 2
    assert summary["tasks"]["reduce"] == 3 + 1  # steps() read parts=3


def test_defaults_apply_and_params_stay_strings(tmp_path, data) -> None:
    job = load_job_class(job_file(tmp_path))
    out = tmp_path / "out"
    kubemr.run(job, inputs=[str(data)], output=str(out), params={"pattern": "[a-z]+"})
    pairs = read_parts(out)
    assert [p for p in pairs if p[0] != "seen"] == [["cat", 120], ["the", 80], ["a", 40]]
    assert ["seen", ["reduce", 3, False, "int"]] in pairs
    assert ["seen", ["seen", "map", 3, False, None]] in pairs


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"top": "5"}, "option pattern of TopWords is required: give --param pattern=TEXT"),
        (
            {"pattern": "x", "top": "many"},
            "invalid option top='many' of TopWords: input should be a valid integer",
        ),
        (
            {"pattern": "x", "top": "0"},
            "invalid option top='0' of TopWords: input should be greater than or equal to 1 "
            "(integer: How many words to keep)",
        ),
        ({"pattern": "x", "lower": "maybe"}, "invalid option lower='maybe'"),
        ({"pattern": "x", "topp": "3"}, "TopWords has no option 'topp' (its options: pattern,"),
        ({"pattern": "x", "kubemr.files": "[]"}, "names starting with 'kubemr.' are kubemr's"),
    ],
)
def test_bad_options_are_refused_before_any_task_starts(tmp_path, data, params, expected) -> None:
    job = load_job_class(job_file(tmp_path))
    out = tmp_path / "out"
    work = tmp_path / "work"
    with pytest.raises(JobOptionError) as info:
        kubemr.run(job, inputs=[str(data)], output=str(out), params=params, work_dir=str(work))
    assert expected in str(info.value)
    assert isinstance(info.value, OptionError)
    assert not out.exists()  # nothing planned, nothing written
    assert not any(work.iterdir()) if work.exists() else True


def test_every_problem_is_named_at_once(tmp_path) -> None:
    job = load_job_class(job_file(tmp_path))
    with pytest.raises(JobOptionError) as info:
        check_options(job, {"top": "x", "parts": "9"})
    message = str(info.value)
    for part in ("option pattern", "top='x'", "parts='9'", "less than or equal to 8"):
        assert part in message


def test_a_job_without_options_keeps_untyped_params(tmp_path, data) -> None:
    source = """
    import kubemr

    class Tag(kubemr.MapReduce):
        def mapper(self, line):
            yield self.params["tag"], dict(self.options)

        def reducer(self, key, values):
            yield key, len(list(values))
    """
    job = load_job_class(job_file(tmp_path, source, "tag.py"))
    out = tmp_path / "out"
    kubemr.run(job, inputs=[str(data)], output=str(out), params={"tag": "x", "any": "1"})
    assert read_parts(out) == [["x", 120]]


def test_options_that_allow_extra_params(tmp_path, data) -> None:
    source = """
    from pydantic import ConfigDict
    import kubemr
    from kubemr.options import Options

    class Loose(kubemr.MapReduce):
        class Options(Options):
            model_config = ConfigDict(extra="allow", frozen=True)
            n: int = 1

        def mapper(self, line):
            yield (self.options.n, self.params["free"]), 1

        reducer = kubemr.SUM
    """
    job = load_job_class(job_file(tmp_path, source, "loose.py"))
    out = tmp_path / "out"
    kubemr.run(job, inputs=[str(data)], output=str(out), params={"n": "7", "free": "yes"})
    assert read_parts(out) == [[[7, "yes"], 120]]


def test_list_literal_and_date_options(tmp_path) -> None:
    source = """
    import datetime
    from typing import Literal
    import kubemr
    from kubemr.options import Options

    class Kinds(kubemr.MapReduce):
        class Options(Options):
            words: list[str] = []
            sizes: list[int] = [1]
            mode: Literal["fast", "exact"] = "fast"
            day: datetime.date | None = None

        def mapper(self, line):
            yield line, 1
    """
    job = load_job_class(job_file(tmp_path, source, "kinds.py"))
    got = check_options(
        job, {"words": "a, b", "sizes": "[2, 3]", "mode": "exact", "day": "2024-02-29"}
    )
    assert got.words == ["a", "b"] and got.sizes == [2, 3] and got.mode == "exact"
    assert str(got.day) == "2024-02-29"
    with pytest.raises(JobOptionError, match=r"invalid option mode='slow' .*'fast' or 'exact'"):
        check_options(job, {"mode": "slow"})
    with pytest.raises(JobOptionError, match=r"sizes\.1='x'"):
        check_options(job, {"sizes": "1,x"})
    # kubemr.run writes Python values as parameters would be written
    assert check_options(job, {"words": kubemr.options.param_text(["x", "y"])}).words == ["x", "y"]


def test_an_options_attribute_that_is_not_a_model_is_refused(tmp_path) -> None:
    source = """
    import kubemr

    class Odd(kubemr.MapReduce):
        Options = {"top": 3}

        def mapper(self, line):
            yield line, 1
    """
    job = load_job_class(job_file(tmp_path, source, "odd.py"))
    with pytest.raises(KubemrError, match=r"Odd.Options must be a class deriving from"):
        check_options(job, {})


# -- the command line ------------------------------------------------------------------------


def test_kubemr_run_takes_options_as_params_and_exits_2_on_a_bad_one(tmp_path, data) -> None:
    path = job_file(tmp_path)
    out = tmp_path / "out"
    args = ["run", path, "-i", str(data), "-o", str(out), "-q"]
    good = runner.invoke(app, [*args, "-p", "pattern=[a-z]+", "--param", "top=1"])
    assert good.exit_code == 0, good.output
    assert [p for p in read_parts(out) if p[0] != "seen"] == [["cat", 120]]
    bad = runner.invoke(app, [*args, "--overwrite", "-p", "pattern=x", "-p", "top=-2"])
    assert bad.exit_code == 2
    assert "kubemr: invalid option top='-2' of TopWords" in bad.output
    assert "Traceback" not in bad.output


def test_help_after_the_job_lists_its_options(tmp_path) -> None:
    path = job_file(tmp_path)
    result = runner.invoke(app, ["run", path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "--input" in text  # kubemr run's own help first
    assert "Options of TopWords (give each as --param NAME=VALUE):" in text
    assert "--param pattern=TEXT" in text and "required. Regular expression of a word." in text
    assert "--param top=INTEGER" in text and "default: 3. How many words to keep." in text
    assert "--param lower=TRUE|FALSE" in text and "default: false." in text
    plain = runner.invoke(app, ["run", "--help"])
    assert plain.exit_code == 0 and "Options of" not in plain.output
    broken = tmp_path / "broken.py"
    broken.write_text("import nothing_of_that_name\n")
    shown = runner.invoke(app, ["run", str(broken), "--help"])
    assert shown.exit_code == 0
    assert "the job's options cannot be shown: job file" in shown.output


def test_submit_checks_options_before_anything_leaves_the_machine(tmp_path) -> None:
    path = job_file(tmp_path)
    code_dir = tmp_path / "code"
    common = ["submit", path, "-i", "s3://b/in", "--output", "s3://b/out"]
    common += ["--code-dir", str(code_dir), "--dry-run"]
    bad = runner.invoke(app, [*common, "-p", "pattern=x", "-p", "top=lots"])
    assert bad.exit_code == 2
    assert "--param: invalid option top='lots' of TopWords" in bad.output
    assert not code_dir.exists()  # refused before the code was uploaded
    good = runner.invoke(app, [*common, "-p", "pattern=x", "-p", "top=4", "-o", "yaml"])
    assert good.exit_code == 0, good.output
    resource = yaml.safe_load(good.stdout)
    assert resource["spec"]["params"] == {"pattern": "x", "top": "4"}
    help_ = runner.invoke(app, ["submit", path, "--help"])
    assert help_.exit_code == 0 and "--param top=INTEGER" in help_.output


# -- a job file that runs itself -------------------------------------------------------------


HELPER = """
def fold(word):
    return word.lower()
"""

SELF_RUNNING = """
import kubemr
from kubemr.options import Options

from helper import fold  # a module beside the job file travels with it


class Count(kubemr.MapReduce):
    class Options(Options):
        fold: bool = False
        fail_on: str = ""

    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in line.split():
            if word == self.options.fail_on:
                raise ValueError("poisoned word " + word)
            yield (fold(word) if self.options.fold else word), 1


if __name__ == "__main__":
    Count.run()
"""


def python(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, script, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_job_file_runs_itself_with_kubemr_runs_flags_and_exit_codes(tmp_path, data) -> None:
    (tmp_path / "jobdir").mkdir()
    script = job_file(tmp_path / "jobdir", SELF_RUNNING, "count.py")
    (tmp_path / "jobdir" / "helper.py").write_text(HELPER)
    out = tmp_path / "out"
    ok = python(
        script, "-i", str(data), "-o", str(out), "--workers", "2", "-p", "fold=true",
        "--split-size", "300", "--json", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["status"] == "succeeded" and summary["workers"] == 2
    assert summary["tasks"]["map"] > 1
    expected: dict[str, int] = {}
    for word in TEXT.split():
        expected[word.lower()] = expected.get(word.lower(), 0) + 1
    assert dict(read_parts(out)) == expected

    bad_option = python(script, "-i", str(data), "-o", str(tmp_path / "o2"), "-p", "fold=perhaps",
                        cwd=tmp_path)  # fmt: skip
    assert bad_option.returncode == 2
    assert "kubemr: invalid option fold='perhaps' of Count" in bad_option.stderr

    failed = python(script, "-i", str(data), "-o", str(tmp_path / "o3"), "-p", "fail_on=bird",
                    "--max-attempts", "1", "-q", cwd=tmp_path)  # fmt: skip
    assert failed.returncode == 1
    assert "poisoned word bird" in failed.stderr and "no _SUCCESS" in failed.stderr
    assert not (tmp_path / "o3" / "_SUCCESS").exists()

    usage = python(script, "-o", str(tmp_path / "o4"), cwd=tmp_path)
    assert usage.returncode == 2 and "Missing option '--input'" in usage.stderr

    helped = python(script, "--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "Usage: count.py [OPTIONS]" in helped.stdout
    assert "--param fold=TRUE|FALSE" in helped.stdout


# -- the pod path: kubemr worker, stage by stage ------------------------------------------------


def worker(tmp_path: Path, stage: str, index: int = 0, env: dict | None = None):
    return run_worker(tmp_path, stage, index, env, pod="top")


def spec_input(tmp_path: Path, params: dict, data: Path) -> dict:
    return {
        "name": "top",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {
            "job": {"source": textwrap.dedent(TOP_WORDS)},
            "inputs": [str(data)],
            "output": str(tmp_path / "out"),
            "params": params,
            "splitSize": 300,
        },
    }


def test_options_in_pods_are_the_specs_params_checked_by_the_plan_pod(tmp_path, data) -> None:
    env = {"KUBEMR_SPEC": json.dumps(spec_input(tmp_path, {"pattern": "[a-z]+", "top": "2"}, data))}
    code, message, err = worker(tmp_path, "plan", env=env)
    assert code == 0, err
    shapes = [StepShape(s["maps"], s["reducers"]) for s in message["steps"]]
    assert shapes[0].reducers == 2  # steps() read the default of parts
    for stage in job_stages(shapes)[1:]:
        for index in range(stage.tasks):
            code, message, err = worker(tmp_path, stage.name, index)
            assert code == 0, err
    pairs = read_parts(tmp_path / "out")
    assert [p for p in pairs if p[0] != "seen"] == [["cat", 120], ["the", 80]]
    assert ["seen", ["reduce", 2, False, "int"]] in pairs


def test_a_bad_option_fails_the_plan_pod_without_retry(tmp_path, data) -> None:
    bad = spec_input(tmp_path, {"pattern": "x", "top": "zero"}, data)
    code, message, _ = worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(bad)})
    assert code == EXIT_BAD_INPUT
    assert not message["ok"]
    assert "invalid option top='zero' of TopWords" in message["message"]
    assert not (tmp_path / "work" / "plan.json").exists()
