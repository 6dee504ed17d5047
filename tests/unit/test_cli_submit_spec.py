"""``kubemr submit``'s flags as a spec and a resource: pure, no cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import get_args

import pytest
import typer

from kubemr.cli.submit_spec import (
    JOB_PLACEHOLDER,
    FlagError,
    SubmitFlags,
    check_spec,
    flag_for,
    key_values,
    spec_values,
)
from kubemr.cluster import jobcode
from kubemr.cluster.resource import (
    build_resource,
    check_name,
    events_selector,
    generate_name_base,
    name_from,
    owned_selector,
    work_url,
)
from kubemr.errors import JobDefinitionError
from kubemr.spec import MAX_ENCODING, MAX_NAME_LENGTH, MapReduceJobSpec
from tests.support import ROOT

MODULE = {"module": "jobs.wc:WordCount"}


def flags(**given: object) -> SubmitFlags:
    return SubmitFlags(inputs=["s3://b/in/"], output="s3://b/out", **given)  # type: ignore[arg-type]


def refused(**given: object) -> str:
    with pytest.raises(FlagError) as info:
        check_spec(spec_values(flags(**given), JOB_PLACEHOLDER))
    return str(info.value)


# -- flags to spec -----------------------------------------------------------------------------
def test_only_the_flags_given_reach_the_spec() -> None:
    values = spec_values(flags(), MODULE)
    assert values == {"inputs": ["s3://b/in/"], "output": "s3://b/out", "job": MODULE}
    spec = check_spec(values)
    assert spec.memory == MapReduceJobSpec.model_fields["memory"].default  # the model's default


def test_every_flag_lands_in_its_field() -> None:
    spec = check_spec(
        spec_values(
            flags(
                reducers=4, split_size="16Mi", memory="1Gi", input_format="jsonl",
                output_format="tsv", encoding="latin-1", decode_errors="replace",
                max_attempts=5, skip_bad_records=2, overwrite=True,
                params=["k=v", "empty="], work_dir="s3://b/work", s3_endpoint="http://m:9000",
                s3_region="eu-west-1", storage_secret="s3", workers_min=1, workers_max=3,
                workers_max_pending=1, image="reg/kubemr:1", image_pull_policy="Never",
                worker_command="python -m kubemr", env=["A=1"], requests=["cpu=1"],
                limits=["memory=2Gi"], service_account="runner", active_deadline="1h30m",
                pending_deadline="5m", ttl_after_finished="1d",
            ),
            MODULE,
        )
    )  # fmt: skip
    assert (spec.reducers, spec.split_size, spec.memory) == (4, 16 << 20, 1 << 30)
    assert (spec.input_format, spec.output_format) == ("jsonl", "tsv")
    assert (spec.encoding, spec.decode_errors) == ("latin-1", "replace")
    assert (spec.max_attempts, spec.skip_bad_records, spec.overwrite) == (5, 2, True)
    assert spec.params == {"k": "v", "empty": ""}
    assert spec.work_dir == "s3://b/work"
    assert spec.storage.endpoint == "http://m:9000" and spec.storage.region == "eu-west-1"
    assert spec.storage.secret_ref is not None and spec.storage.secret_ref.name == "s3"
    assert (spec.workers.min, spec.workers.max, spec.workers.max_pending) == (1, 3, 1)
    template = spec.template
    assert template.image == "reg/kubemr:1" and template.image_pull_policy == "Never"
    assert template.command == ["python", "-m", "kubemr"]
    assert [(e.name, e.value) for e in template.env] == [("A", "1")]
    assert template.resources.requests == {"cpu": "1"}
    assert template.resources.limits == {"memory": "2Gi"}
    assert template.service_account_name == "runner"
    assert spec.active_deadline_seconds == 5400
    assert spec.pending_deadline_seconds == 300
    assert spec.ttl_seconds_after_finished == 86400


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"workers_max": 0}, "--workers-max 0: input should be greater than or equal to 1"),
        ({"workers_min": 5, "workers_max": 2}, "--workers-min/--workers-max: workers.min (5)"),
        ({"memory": "1k"}, "--memory '1k': input should be greater than or equal to 65536"),
        ({"split_size": "lots"}, "--split-size 'lots': invalid size 'lots'"),
        ({"reducers": -1}, "--reducers -1: input should be greater than or equal to 0"),
        ({"storage_secret": "Not_A_Name"}, "--storage-secret 'Not_A_Name': string should"),
        ({"requests": ["cpu=lots"]}, "--request cpu='lots': string should match pattern"),
        ({"params": ["novalue"]}, "--param 'novalue': give KEY=VALUE"),
        ({"env": ["=x"]}, "--env '=x': give KEY=VALUE"),
        ({"active_deadline": "0"}, "--active-deadline 0: input should be greater than"),
        ({"active_deadline": "soon"}, "--active-deadline: invalid duration 'soon'"),
        ({"worker_command": "'open"}, '--worker-command "\'open": No closing quotation'),
        ({"worker_command": " "}, "--worker-command: give the worker's entry point"),
        ({"encoding": "nope"}, "--encoding 'nope': unknown encoding 'nope': give a Python"),
        ({"encoding": "rot13"}, "--encoding 'rot13': 'rot13' is not a text encoding"),
        ({"encoding": "cp037"}, "--encoding 'cp037': encoding 'cp037' does not write a line"),
        ({"encoding": "utf 8"}, "--encoding 'utf 8': string should match pattern"),
        ({"decode_errors": "ignore"}, "--decode-errors 'ignore': input should be 'strict',"),
        (
            {"encoding": "utf-16", "decode_errors": "surrogateescape"},
            "--decode-errors 'surrogateescape': surrogateescape stands for single bytes",
        ),
    ],
)
def test_a_bad_value_names_its_flag_in_one_line(given: dict[str, object], message: str) -> None:
    text = refused(**given)
    assert text.startswith(message), text
    assert "\n" not in text


def test_an_encoding_name_past_the_spec_limit_is_refused() -> None:
    text = refused(encoding="x" * (MAX_ENCODING + 1))
    assert text.startswith("--encoding 'xxx") and f"at most {MAX_ENCODING} characters" in text


def test_the_encoding_flags_of_the_command(tmp_path) -> None:
    """``kubemr submit --encoding/--decode-errors``: the spec's help, into the resource as
    ``encoding``/``decodeErrors``, a bad value refused naming the flag before any cluster
    is looked for (the kubeconfig names none)."""
    from typer.testing import CliRunner

    from kubemr.cli import app
    from kubemr.spec import DecodeErrors, JobOptions

    command = typer.main.get_command(app).commands["submit"]  # type: ignore[attr-defined]
    options = {p.opts[0]: p for p in command.params}
    for flag, name in (("--encoding", "encoding"), ("--decode-errors", "decode_errors")):
        assert options[flag].help.startswith(JobOptions.model_fields[name].description)

    runner = CliRunner()
    base = ["submit", "pkg.jobs:Job", "-i", "s3://b/in", "--output", "s3://b/out"]
    result = runner.invoke(
        app, [*base, "--encoding", "latin-1", "--decode-errors", "replace", "--dry-run", "-o",
              "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = json.loads(result.stdout)["spec"]
    assert (spec["encoding"], spec["decodeErrors"]) == ("latin-1", "replace")
    plain = runner.invoke(app, [*base, "--dry-run", "-o", "json"])
    assert "encoding" not in json.loads(plain.stdout)["spec"]  # the CRD's default applies

    nowhere = ["--kubeconfig", str(tmp_path / "absent")]
    for extra, message in (
        (["--encoding", "nope"], "kubemr: --encoding 'nope': unknown encoding 'nope'"),
        (
            ["--decode-errors", "ignore"],
            "kubemr: Invalid value for '--decode-errors': Value error, 'ignore' is not one of "
            + ", ".join(repr(v) for v in get_args(DecodeErrors)),
        ),
        (
            ["--encoding", "utf-32", "--decode-errors", "surrogateescape"],
            "kubemr: --decode-errors 'surrogateescape': surrogateescape stands for",
        ),
    ):
        result = runner.invoke(app, [*base, *nowhere, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert result.stderr.startswith(message), (extra, result.stderr)
        assert "kubeconfig" not in result.stderr


def test_after_wait_the_lines_read_with_the_fallback_are_counted(capsys) -> None:
    from kubemr.cli.submit import _note_undecodable
    from kubemr.formats import UNDECODABLE_LINES

    ended = {"status": {"result": {"counters": {"kubemr": {UNDECODABLE_LINES: 1234}}}}}
    _note_undecodable(ended)
    assert capsys.readouterr().err == (
        "kubemr: 1,234 input lines did not decode in the input's encoding and were decoded "
        f"with the --decode-errors fallback (counter {UNDECODABLE_LINES})\n"
    )
    for quiet in ({"status": {"result": {"counters": {"kubemr": {UNDECODABLE_LINES: 0}}}}}, {}):
        _note_undecodable(quiet)
        assert capsys.readouterr().err == ""


def test_no_input_names_the_flag() -> None:
    with pytest.raises(FlagError, match=r"^--input: list should have at least 1 item"):
        check_spec(spec_values(SubmitFlags(inputs=[], output="o"), MODULE))


def test_the_job_reference_is_checked_as_the_spec_checks_it() -> None:
    with pytest.raises(FlagError, match=r"^JOB 'not-a-module': string should match"):
        check_spec(spec_values(flags(), {"module": "not-a-module"}))


def test_flag_for_takes_the_longest_known_prefix() -> None:
    assert flag_for(("workers", "max")) == ("--workers-max", 2)
    assert flag_for(("template", "resources", "requests", "cpu")) == ("--request", 3)
    assert flag_for(("nothing",)) == ("nothing", 1)


def test_key_values() -> None:
    assert key_values(["a=1", "b=x=y", " c =3"], "--param") == {"a": "1", "b": "x=y", "c": "3"}


# -- the resource ---------------------------------------------------------------------------
def test_the_resource_holds_what_was_given_with_sizes_as_written() -> None:
    spec = check_spec(spec_values(flags(split_size="64Mi", workers_max=3), MODULE))
    resource = build_resource(
        spec, name="wc", namespace="team-a", labels={"k": "v"}, written={"split_size": "64Mi"}
    )
    assert resource == {
        "apiVersion": "kubemr.dev/v1alpha1",
        "kind": "MapReduceJob",
        "metadata": {"name": "wc", "namespace": "team-a", "labels": {"k": "v"}},
        "spec": {
            "inputs": ["s3://b/in/"],
            "output": "s3://b/out",
            "splitSize": "64Mi",
            "job": MODULE,
            "workers": {"max": 3},
        },
    }
    # What the API server receives reads back as the same spec.
    assert MapReduceJobSpec.model_validate(resource["spec"]) == spec


def test_a_generated_name_fits_the_limit() -> None:
    resource = build_resource(
        check_spec(spec_values(flags(), MODULE)), name="x" * 60, generate=True
    )
    base = resource["metadata"]["generateName"]
    assert base.endswith("-") and len(base) + 5 <= MAX_NAME_LENGTH
    assert generate_name_base("wc") == "wc-"
    assert "namespace" not in resource["metadata"]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("WordCount", "word-count"),
        ("HTTPLogs", "http-logs"),
        ("examples.top_k", "top-k"),
        ("wc", "wc"),
        ("___", "job"),
    ],
)
def test_names_made_from_the_job(text: str, name: str) -> None:
    assert name_from(text) == name
    assert check_name(name) is None


def test_names_the_controller_cannot_use_are_refused() -> None:
    assert "lowercase" in (check_name("Word.Count") or "")
    assert "more than the 50" in (check_name("a" * 51) or "")


def test_selectors_and_work_url_of_a_resource() -> None:
    resource = {
        "metadata": {"name": "wc", "namespace": "ns", "uid": "u1"},
        "spec": {"output": "s3://b/out"},
    }
    assert owned_selector(resource) == "kubemr.dev/job=wc,kubemr.dev/job-uid=u1"
    assert events_selector(resource) == (
        "involvedObject.kind=MapReduceJob,involvedObject.name=wc,involvedObject.uid=u1"
    )
    assert work_url(resource) == "s3://b/_kubemr/ns/wc/u1"
    resource["status"] = {"plan": {"workUrl": "s3://b/w"}}
    assert work_url(resource) == "s3://b/w"


# -- the job's code ---------------------------------------------------------------------------
def test_default_code_dir_is_beside_the_default_work_dirs() -> None:
    assert jobcode.default_code_dir("s3://data/counts/2024") == "s3://data/_kubemr/code"
    assert jobcode.default_code_dir("/shared/out") == "/shared/_kubemr/code"
    assert jobcode.code_url("s3://d/c", "ab") == "s3://d/c/ab.pkl"


def test_job_files_and_modules_are_told_apart() -> None:
    assert jobcode.is_job_file("wc.py") and jobcode.is_job_file("jobs/wc.py:WordCount")
    assert not jobcode.is_job_file("examples.wordcount:WordCount")


PICKLE = """
import hashlib, sys
from kubemr.cluster.jobcode import pickle_job
code = pickle_job(sys.argv[1], "s3://b/c")
print(code.sha256, hashlib.sha256(code.blob).hexdigest(), code.class_name, code.url)
"""


def test_the_same_job_file_pickles_to_the_same_bytes_in_every_process(tmp_path) -> None:
    # Content-addressed uploads rely on it: cloudpickle alone tags classes with random ids.
    job = os.path.join(ROOT, "examples", "wordcount.py")
    seen = set()
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", PICKLE, job],
            capture_output=True, text=True, check=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )  # fmt: skip
        sha, check, name, url = out.stdout.split()
        assert sha == check and name == "WordCount" and url == f"s3://b/c/{sha}.pkl"
        seen.add(sha)
    assert len(seen) == 1


def test_the_pickle_is_what_a_worker_loads(tmp_path) -> None:
    from kubemr.spec import JobCode
    from kubemr.stages import load_code
    from kubemr.storage import StorageOptions

    code = jobcode.pickle_job(os.path.join(ROOT, "examples", "wordcount.py"), str(tmp_path))
    assert jobcode.upload(code, StorageOptions()) is True
    assert jobcode.upload(code, StorageOptions()) is False  # there already
    meta = json.loads((tmp_path / f"{code.sha256}.pkl.meta.json").read_text())
    assert meta["sha256"] == code.sha256
    loaded = load_code(
        JobCode(pickle={"url": code.url, "sha256": code.sha256}),  # type: ignore[arg-type]
        StorageOptions(),
    )
    assert loaded.__name__ == "WordCount"


def test_inline_source_needs_a_self_contained_file(tmp_path) -> None:
    (tmp_path / "helper.py").write_text("WORDS = 1\n")
    job = tmp_path / "uses_helper.py"
    job.write_text("import kubemr\nimport helper\n\nclass J(kubemr.MapReduce):\n    pass\n")
    with pytest.raises(JobDefinitionError, match="imports helper from its directory"):
        jobcode.source_code(str(job))
    alone = tmp_path / "alone.py"
    alone.write_text("import kubemr\n\nclass Alone(kubemr.MapReduce):\n    pass\n")
    text, class_name, found = jobcode.source_code(f"{alone}:Alone")
    assert text == alone.read_text() and class_name == "Alone" and found == "Alone"
