"""The job settings (kubemr.spec) and the MapReduceJob CRD generated from them (kubemr.crd)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

import kubemr
from kubemr.cli import app
from kubemr.crd import PRINTER_COLUMNS, crd_manifest, crd_yaml, openapi_schema
from kubemr.errors import OptionError
from kubemr.formats import DEFAULT_CHUNK_BYTES
from kubemr.sizes import _UNITS, parse_size
from kubemr.spec import (
    KUBEMR_IMAGE,
    MAX_CONDITION_MESSAGE,
    MAX_CONDITIONS,
    MAX_COUNTER_GROUPS,
    MAX_COUNTER_NAME,
    MAX_COUNTERS_PER_GROUP,
    MAX_FAILURE_MESSAGE,
    MAX_SOURCE_BYTES,
    MAX_STEPS,
    MAX_TRACEBACK_BYTES,
    MAX_URL,
    MAX_WAVES,
    SIZE_PATTERN,
    Condition,
    FailureStatus,
    JobDefaults,
    JobOptions,
    LocalOptions,
    MapReduceJob,
    MapReduceJobSpec,
    MapReduceJobStatus,
    PlanSummary,
    ResultSummary,
    StepSummary,
    WaveStatus,
    WorkerRange,
    default_work_dir,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED_CRD = os.path.join(ROOT, "manifests", "crd.yaml")
SHA = "0" * 64


def spec(**values: Any) -> MapReduceJobSpec:
    base: dict[str, Any] = {"inputs": ["s3://in/*.txt"], "output": "s3://out/wc"}
    base.setdefault("job", {"module": "examples.wordcount:WordCount"})
    return MapReduceJobSpec(**{**base, **values})


# -- defaults --------------------------------------------------------------------------------


def test_local_defaults() -> None:
    opts = LocalOptions(inputs=["in/"], output="out/")
    assert opts.memory == 512 << 20
    assert opts.max_attempts == 3
    assert opts.chunk_bytes == DEFAULT_CHUNK_BYTES == 4 << 20
    assert opts.split_size is None and opts.reducers is None and opts.workers is None
    assert opts.input_format is None and opts.output_format is None
    assert opts.skip_bad_records == 0 and opts.params == {} and opts.extra == {}
    assert not opts.overwrite and not opts.keep_work
    assert opts.work_dir is None and opts.s3_endpoint is None


def test_cluster_defaults() -> None:
    s = spec()
    assert s.workers == WorkerRange(min=0, max=8, max_pending=2)
    assert s.template.image is None and s.worker_image() == KUBEMR_IMAGE
    assert kubemr.__version__ == KUBEMR_IMAGE.rsplit(":", 1)[1]
    assert s.template.command == ["kubemr"]
    assert s.pending_deadline_seconds == 600
    assert s.active_deadline_seconds is None and s.ttl_seconds_after_finished is None
    assert not s.suspend and not s.cancel
    assert s.storage.secret_ref is None and s.work_dir is None


def test_job_defaults_fill_only_what_the_resource_leaves_out() -> None:
    defaults = JobDefaults.model_validate(
        {
            "storage": {"endpoint": "http://minio:9000", "secretRef": {"name": "s3"}},
            "template": {
                "image": "registry.local/kubemr:1",
                "serviceAccountName": "kubemr-worker",
                "resources": {"requests": {"cpu": "1"}},
                "nodeSelector": {"pool": "batch"},
                "tolerations": [{"key": "batch", "operator": "Exists"}],
            },
        }
    )
    bare = defaults.apply(spec())
    assert bare.storage.endpoint == "http://minio:9000"
    assert bare.storage.secret_ref is not None and bare.storage.secret_ref.name == "s3"
    assert bare.storage.region is None
    assert bare.worker_image() == "registry.local/kubemr:1"
    assert bare.template.service_account_name == "kubemr-worker"
    assert bare.template.resources.requests == {"cpu": "1"}
    assert bare.template.node_selector == {"pool": "batch"}
    assert [t.key for t in bare.template.tolerations] == ["batch"]
    assert bare.template.command == ["kubemr"]  # not a default of the installation's

    own = defaults.apply(
        spec(
            storage={"endpoint": "https://s3.example", "region": "eu-west-1"},
            template={
                "image": "mine:2",
                "resources": {"limits": {"memory": "1Gi"}},
                "nodeSelector": {"pool": "mine"},
            },
        )
    )
    assert own.storage.endpoint == "https://s3.example"  # the resource's own wins
    assert own.storage.region == "eu-west-1"
    assert own.storage.secret_ref is not None and own.storage.secret_ref.name == "s3"
    assert own.worker_image() == "mine:2"
    assert own.template.resources.requests == {} and own.template.resources.limits
    assert own.template.node_selector == {"pool": "mine"}
    # No defaults: the spec as it is, with the built-in image.
    assert JobDefaults().apply(spec()) == spec()
    assert spec().worker_image() == KUBEMR_IMAGE


def test_job_defaults_never_hold_a_secret() -> None:
    with pytest.raises(ValidationError):
        JobDefaults.model_validate({"storage": {"accessKey": "x"}})


def test_shared_settings_are_defined_once() -> None:
    for name, field in JobOptions.model_fields.items():
        assert LocalOptions.model_fields[name] is field or (
            LocalOptions.model_fields[name].description == field.description
        )
        assert MapReduceJobSpec.model_fields[name].description == field.description
        assert field.description, name


# -- names: snake_case in Python, camelCase in the resource ----------------------------------


def test_camel_case_round_trip() -> None:
    resource = {
        "inputs": ["s3://in/*.jsonl"],
        "inputFormat": "jsonl",
        "output": "s3://out/x",
        "outputFormat": "tsv",
        "splitSize": "16Mi",
        "maxAttempts": 5,
        "skipBadRecords": 2,
        "job": {"pickle": {"url": "s3://jobs/wc.pkl", "sha256": SHA}},
        "workDir": "s3://scratch/wc",
        "storage": {"endpoint": "http://minio:9000", "secretRef": {"name": "s3-creds"}},
        "workers": {"min": 1, "max": 4, "maxPending": 1},
        "template": {
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "serviceAccountName": "mr-workers",
        },
        "activeDeadlineSeconds": 3600,
        "ttlSecondsAfterFinished": 0,
    }
    s = MapReduceJobSpec.model_validate(resource)
    assert s.split_size == 16 << 20
    assert s.storage.secret_ref is not None and s.storage.secret_ref.name == "s3-creds"
    assert s.workers.max_pending == 1
    assert s.template.resources.requests == {"cpu": "1", "memory": "1Gi"}
    out = s.to_resource()
    assert out["splitSize"] == 16 << 20
    assert out["job"] == resource["job"]
    assert out["workers"] == resource["workers"]
    assert out["template"]["env"] == resource["template"]["env"]
    assert "reducers" not in out  # None by default: left out
    assert MapReduceJobSpec.model_validate(out) == s


def test_snake_case_names_are_accepted_too() -> None:
    s = spec(split_size="1Mi", max_attempts=2, workers={"max_pending": 1})
    assert (s.split_size, s.max_attempts, s.workers.max_pending) == (1 << 20, 2, 1)


def test_a_null_that_differs_from_the_default_is_kept() -> None:
    out = spec(pending_deadline_seconds=None, template={"command": None}).to_resource()
    assert out["pendingDeadlineSeconds"] is None
    assert out["template"]["command"] is None
    assert "activeDeadlineSeconds" not in out


def test_whole_resource_parses() -> None:
    obj = {
        "apiVersion": "kubemr.dev/v1alpha1",
        "kind": "MapReduceJob",
        "metadata": {"name": "wc", "namespace": "default", "uid": "u", "generation": 1},
        "spec": spec().to_resource(),
        "status": {"phase": "Running", "workers": 3, "wave": "map 1/1", "progress": "3/20"},
    }
    job = MapReduceJob.model_validate(obj)
    assert job.status is not None and job.status.phase == "Running"
    assert job.spec == spec()


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        (4096, 4096),
        ("4096", 4096),
        ("64Mi", 64 << 20),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("1G", 10**9),
        ("1.5Gi", 3 << 29),
        (" 2 kb ", 2000),
        ("0", 0),
    ],
)
def test_sizes_take_ints_and_strings(value: Any, expected: int) -> None:
    assert spec(split_size=value).split_size == expected
    assert LocalOptions(inputs=["i"], output="o", split_size=value).split_size == expected


@pytest.mark.parametrize("value", ["lots", "12XB", "-5", -5, 2.5, True, "1e6", ""])
def test_bad_sizes_are_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        spec(split_size=value)


def test_memory_has_a_floor_in_any_form() -> None:
    assert spec(memory="64Ki").memory == 64 << 10
    for value in ("63Ki", "1KiB", 1024):
        with pytest.raises(ValidationError, match="greater than or equal to 65536"):
            spec(memory=value)


def test_size_pattern_follows_parse_size() -> None:
    """The CRD checks size strings with SIZE_PATTERN; kubemr reads them with parse_size."""
    pattern = re.compile(SIZE_PATTERN)
    for unit in _UNITS:
        for written in (unit, unit.upper(), unit.capitalize()):
            text = f"3{written}"
            assert pattern.match(text), text
            assert parse_size(text) == 3 * _UNITS[unit]
    for bad in ("lots", "1 2", "1e3", "-1", "1Pi", "Mi", "1.Mi"):
        assert not pattern.match(bad), bad
        with pytest.raises(ValueError):
            parse_size(bad)


def test_max_pending_is_at_least_one() -> None:
    # With 0 a wave could never grow: no more pods are ready than were asked for.
    with pytest.raises(ValidationError, match=r"maxPending|max_pending"):
        spec(workers={"maxPending": 0})


def test_workers_min_must_not_exceed_max() -> None:
    with pytest.raises(ValidationError, match=r"workers.min \(5\) must not exceed workers.max"):
        spec(workers={"min": 5, "max": 2})
    assert spec(workers={"min": 3, "max": 3}).workers.min == 3


@pytest.mark.parametrize(
    "job,message",
    [
        ({}, "give exactly one of job.module, job.pickle or job.source"),
        ({"module": "a:B", "source": "x = 1"}, r"\(got module, source\)"),
        (
            {"module": "a:B", "pickle": {"url": "s3://j", "sha256": SHA}, "source": "x"},
            r"\(got module, pickle, source\)",
        ),
        ({"module": "a:B", "className": "B"}, "className goes with job.source"),
        ({"module": "not a module"}, "should match pattern"),
        ({"pickle": {"url": "s3://j", "sha256": "abc"}}, "should match pattern"),
        ({"source": "x", "className": "1st"}, "should match pattern"),
    ],
)
def test_job_code_takes_exactly_one_form(job: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(job=job)


def test_job_code_forms() -> None:
    assert spec(job={"module": "pkg.jobs"}).job.module == "pkg.jobs"
    assert spec(job={"source": "class A: ...", "className": "A"}).job.class_name == "A"
    assert spec(job={"pickle": {"url": "s3://j/x.pkl", "sha256": SHA}}).job.pickle is not None


def test_inline_source_is_capped_in_utf8_bytes() -> None:
    assert spec(job={"source": "#" * MAX_SOURCE_BYTES}).job.source is not None
    with pytest.raises(ValidationError, match="is 65537 bytes of UTF-8, more than the 65536"):
        spec(job={"source": "#" * (MAX_SOURCE_BYTES + 1)})
    # Under the character limit, over the byte limit: etcd stores bytes.
    with pytest.raises(ValidationError, match="is 80000 bytes of UTF-8, more than the 65536"):
        spec(job={"source": "é" * 40_000})


@pytest.mark.parametrize(
    "field,value",
    [
        ("reducers", -1),
        ("reducers", 2.0),
        ("reducers", "3"),
        ("max_attempts", 0),
        ("max_attempts", True),
        ("inputs", []),
        ("inputs", [""]),
        ("output", ""),
        ("input_format", "xml"),
        ("output_format", "csv"),
        ("active_deadline_seconds", 0),
        ("ttl_seconds_after_finished", -1),
        ("storage", {"secretRef": {"name": "Not_A_Name"}}),
        ("storage", {"secretRef": {"name": "s", "namespace": "other"}}),
        ("template", {"imagePullPolicy": "Sometimes"}),
        ("template", {"resources": {"limits": {"cpu": "lots"}}}),
        ("unknown_setting", 1),
    ],
)
def test_invalid_settings_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        spec(**{field: value})


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("workers", 0, "invalid workers=0: input should be greater than or equal to 1"),
        ("workers", 2.5, "invalid workers=2.5: input should be a valid integer"),
        ("reducers", -3, "invalid reducers=-3: input should be greater than or equal to 0"),
        ("memory", "lots", "invalid memory='lots': invalid size 'lots': use a number"),
        ("memory", 0, "invalid memory=0: input should be greater than or equal to 65536"),
        ("split_size", -5, "invalid split_size=-5: input should be greater than or equal to 0"),
        ("max_attempts", 0, "invalid max_attempts=0: input should be greater than or equal to 1"),
        ("input_format", "xml", "invalid input_format='xml': input should be 'text', 'jsonl'"),
        ("chunk_bytes", 0, "invalid chunk_bytes=0: input should be greater than or equal to 1"),
        ("bogus", 1, "invalid bogus=1: extra inputs are not permitted"),
    ],
)
def test_checked_names_the_option(option: str, value: Any, message: str) -> None:
    with pytest.raises(OptionError) as info:
        LocalOptions.checked(inputs=["in/"], output="out/", **{option: value})
    assert str(info.value).startswith(message)


def test_checked_names_a_nested_setting() -> None:
    with pytest.raises(OptionError, match=r"invalid job.module='a b': string should match"):
        MapReduceJobSpec.checked(inputs=["i"], output="o", job={"module": "a b"})


# -- status: bounded whatever the task count -------------------------------------------------


def test_traceback_keeps_its_last_bytes() -> None:
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 500 + "ValueError: boom"
    failure = FailureStatus(reason="TaskFailed", traceback=tb, message="m" * 10_000)
    assert failure.traceback is not None
    assert len(failure.traceback.encode()) <= MAX_TRACEBACK_BYTES
    assert failure.traceback.endswith("ValueError: boom")
    assert len(failure.message) == MAX_FAILURE_MESSAGE
    cut = FailureStatus(reason="X", traceback="é" * 1000)  # 2000 bytes
    assert cut.traceback is not None and len(cut.traceback.encode()) <= MAX_TRACEBACK_BYTES


def test_counters_are_capped() -> None:
    counters = {f"group{g}": {f"c{n}": n for n in range(100)} for g in range(50)}
    counters["x" * 500] = {"y" * 500: 1}
    capped = ResultSummary(counters=counters).counters
    assert len(capped) == MAX_COUNTER_GROUPS
    assert all(len(names) == MAX_COUNTERS_PER_GROUP for names in capped.values())


def test_status_times_are_written_as_kubernetes_writes_them() -> None:
    moment = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    wave = WaveStatus(kind="map", step=0, job_name="wc-s0-map", start_time=moment)
    assert wave.to_resource()["startTime"] == "2024-05-01T10:30:15Z"
    assert WaveStatus.model_validate(wave.to_resource()).start_time == moment.replace(microsecond=0)


def largest_status() -> MapReduceJobStatus:
    now = datetime.now(UTC)
    return MapReduceJobStatus(
        observed_generation=2**62,
        phase="Failed",
        conditions=[
            Condition(
                type=f"{'t' * 250}{i:02d}",
                status="Unknown",
                observed_generation=2**62,
                last_transition_time=now,
                reason="R" * 1024,
                message="m" * (2 * MAX_CONDITION_MESSAGE),
            )
            for i in range(MAX_CONDITIONS)
        ],
        wave="w" * 64,
        progress="p" * 64,
        workers=2**31,
        parallelism_reason="r" * 256,
        plan=PlanSummary(
            steps=[StepSummary(maps=2**31, reducers=2**31)] * MAX_STEPS, work_url="u" * MAX_URL
        ),
        waves=[
            WaveStatus(
                kind="reduce",
                step=MAX_STEPS - 1,
                job_name="j" * 63,
                total=2**31,
                succeeded=2**31,
                failed=2**31,
                start_time=now,
                completion_time=now,
            )
        ]
        * MAX_WAVES,
        failure=FailureStatus(
            reason="r" * 128,
            task="t" * 128,
            attempt="a" * 253,
            exit_code=255,
            message="m" * 10**5,
            traceback="t" * 10**5,
            log="l" * MAX_URL,
        ),
        result=ResultSummary(
            records_in=2**62,
            records_out=2**62,
            bytes_in=2**62,
            bytes_out=2**62,
            files_out=2**31,
            counters={
                f"{g:03d}" + "g" * 200: {f"{n:03d}" + "n" * 200: 2**62 for n in range(100)}
                for g in range(100)
            },
        ),
        start_time=now,
        completion_time=now,
    )


STATUS_BOUND = 160 << 10
"""The largest status in JSON, as docs/job-spec.md states it: a tenth of etcd's 1.5 MB."""


def test_status_size_is_bounded() -> None:
    status = largest_status()
    size = len(json.dumps(status.to_resource()))
    assert size <= STATUS_BOUND, size
    assert all(len(g) <= MAX_COUNTER_NAME for g in status.result.counters)  # type: ignore[union-attr]


def test_status_lists_are_bounded() -> None:
    with pytest.raises(ValidationError):
        PlanSummary(steps=[StepSummary(reducers=1)] * (MAX_STEPS + 1))
    with pytest.raises(ValidationError):
        MapReduceJobStatus(waves=[WaveStatus(kind="map", job_name="j")] * (MAX_WAVES + 1))


def test_default_work_dir() -> None:
    assert (
        default_work_dir("s3://data/out/wc", "ns", "wc", "1234") == "s3://data/_kubemr/ns/wc/1234"
    )
    assert default_work_dir("s3://data", "ns", "wc", "1234") == "s3://data/_kubemr/ns/wc/1234"
    assert default_work_dir("/shared/out/", "ns", "wc", "9") == "/shared/_kubemr/ns/wc/9"


# -- the CRD ---------------------------------------------------------------------------------


def walk(schema: dict[str, Any], path: str = "") -> Any:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def version() -> dict[str, Any]:
    (only,) = crd_manifest()["spec"]["versions"]
    return only


def test_crd_names() -> None:
    crd = crd_manifest()
    assert crd["metadata"]["name"] == "mapreducejobs.kubemr.dev"
    assert crd["spec"]["group"] == "kubemr.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "MapReduceJob",
        "mapreducejobs",
        "mapreducejob",
    )
    assert names["shortNames"] == ["mrj"]
    assert "categories" not in names  # kept out of `kubectl get all`
    assert version()["name"] == "v1alpha1" and version()["served"] and version()["storage"]
    assert version()["subresources"] == {"status": {}}


def test_crd_schema_is_structural() -> None:
    root = version()["schema"]["openAPIV3Schema"]
    text = json.dumps(root)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    assert '"type": "null"' not in text
    for path, node in walk(root):
        assert "type" in node or node.get("x-kubernetes-int-or-string") is True, (
            f"{path} has no type"
        )
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        if node.get("type") == "object" and path != ".metadata":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields") is True
            ), f"{path}: an object says what it holds or that anything goes"
            assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] is not None, path


def test_crd_schema_keeps_descriptions_defaults_and_constraints() -> None:
    root = version()["schema"]["openAPIV3Schema"]
    spec_schema = root["properties"]["spec"]
    props = spec_schema["properties"]
    assert spec_schema["required"] == ["inputs", "output", "job"]
    assert props["maxAttempts"] == {
        "type": "integer",
        "description": "Attempts per task before the job fails.",
        "default": 3,
        "minimum": 1,
    }
    assert props["reducers"]["nullable"] is True and props["reducers"]["minimum"] == 0
    assert props["inputFormat"]["enum"] == ["text", "jsonl", "csv", "bytes", "raw"]
    assert props["memory"]["x-kubernetes-int-or-string"] is True
    assert props["memory"]["minimum"] == 64 << 10
    assert props["workers"]["default"] == {"min": 0, "max": 8, "maxPending": 2}
    # No schema default: the installation's job defaults, then KUBEMR_IMAGE, fill it in.
    assert "default" not in props["template"]["properties"]["image"]
    # Typed as in a pod spec, so that every part has a limit; nothing in the spec is free-form.
    assert "nodeAffinity" in props["template"]["properties"]["affinity"]["properties"]
    assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(spec_schema)
    for path, node in walk(root):
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "[*]")):
            assert node.get("description"), f"{path} has no description"
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def rules(schema: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["message"] for r in schema.get("x-kubernetes-validations", [])}


def test_crd_has_the_cel_rules() -> None:
    props = version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "self.min <= self.max" in rules(props["workers"])
    job_rules = rules(props["job"])
    assert any("has(self.module)" in r and "== 1" in r for r in job_rules)
    assert any("size(bytes(self.source)) <= 65536" in r for r in job_rules)
    assert "size(self) >= 1" in rules(props["inputs"])


def test_crd_printer_columns() -> None:
    columns = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Wave", "Progress", "Workers", "Reason", "Age"]
    assert columns["Workers"]["type"] == "integer"
    assert columns["Reason"]["jsonPath"] == ".status.failure.reason"
    assert columns["Reason"]["priority"] == 1
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    assert version()["additionalPrinterColumns"] == PRINTER_COLUMNS


def test_openapi_schema_of_a_small_model() -> None:
    assert openapi_schema(WorkerRange)["properties"]["max"] == {
        "type": "integer",
        "description": "Most pods a wave runs at once.",
        "default": 8,
        "minimum": 1,
    }


def test_committed_crd_matches_the_models() -> None:
    with open(COMMITTED_CRD) as fh:
        committed = yaml.safe_load(fh)
    assert committed == crd_manifest(), (
        "manifests/crd.yaml differs from the models in kubemr.spec: regenerate it with "
        "`kubemr crd > manifests/crd.yaml`"
    )


def test_the_charts_crd_is_the_committed_one() -> None:
    """Helm installs charts/kubemr/crds/ as it is: the same bytes as `kubemr crd`."""
    chart_crd = os.path.join(ROOT, "charts", "kubemr", "crds", "mapreducejobs.kubemr.dev.yaml")
    with open(chart_crd) as fh:
        text = fh.read()
    assert text == crd_yaml(), (
        "charts/kubemr/crds/ differs from the models in kubemr.spec: regenerate it with "
        "scripts/render-manifests"
    )
    with open(COMMITTED_CRD) as fh:
        assert fh.read() == text


def test_crd_command_prints_yaml_or_json() -> None:
    cli = CliRunner()
    result = cli.invoke(app, ["crd"])
    assert result.exit_code == 0, result.output
    assert result.stdout == crd_yaml()
    assert yaml.safe_load(result.stdout) == crd_manifest()
    result = cli.invoke(app, ["crd", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == crd_manifest()
    assert cli.invoke(app, ["crd", "-o", "xml"]).exit_code == 2


def test_every_setting_is_documented() -> None:
    with open(os.path.join(ROOT, "docs", "job-spec.md")) as fh:
        doc = fh.read()
    root = version()["schema"]["openAPIV3Schema"]
    settings = [
        path.removeprefix(".spec.")
        for path, node in walk(root["properties"]["spec"], ".spec")
        if path != ".spec"
        and "[" not in path
        and "properties" not in node
        # Kubernetes' own type, documented as "as in a pod spec".
        and not path.startswith(".spec.template.affinity.")
    ]
    missing = [name for name in settings if f"`{name}`" not in doc]
    # Status fields are documented with their parts: `plan.steps[]`, `waves[]`.
    missing += [
        f"status.{name}"
        for name in root["properties"]["status"]["properties"]
        if not re.search(rf"`{name}[`.\[]", doc)
    ]
    assert not missing, f"docs/job-spec.md does not mention {missing}"
