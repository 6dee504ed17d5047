"""The MapReduceJob CRD against a real API server: it installs, takes the documented example,
refuses malformed resources with the rules' messages (as the pydantic models do), and
`kubectl get mrj` shows its columns."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client
from pydantic import ValidationError

from kubemr.crd import CRD_NAME, GROUP, PLURAL, VERSION, crd_yaml
from kubemr.spec import (
    Condition,
    FailureStatus,
    MapReduceJobSpec,
    MapReduceJobStatus,
    WaveStatus,
)

from ..unit.test_spec import largest_status

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def kubectl(kube: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", kube.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def documented_example() -> dict[str, Any]:
    """The first YAML block of docs/job-spec.md, so that the documented example is tested."""
    with open(os.path.join(ROOT, "docs", "job-spec.md")) as fh:
        text = fh.read()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    return yaml.safe_load(block.group(1))


@pytest.fixture(scope="module")
def crd(kube: Any) -> str:
    # Server-side apply with force: other test modules may have installed the CRD too.
    out = kubectl(kube, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=crd_yaml())
    assert out.returncode == 0, out.stderr
    out = kubectl(kube, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    assert out.returncode == 0, out.stderr
    return CRD_NAME


@pytest.fixture
def ns(kube: Any, crd: str) -> Iterator[str]:
    api = client.CoreV1Api(kube.api_client())
    name = f"crd-{uuid.uuid4().hex[:8]}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    api.delete_namespace(name)


def apply_dry_run(kube: Any, ns: str, resource: dict[str, Any]) -> subprocess.CompletedProcess:
    return kubectl(
        kube,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        ns,
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(resource),
    )


def test_crd_is_established(kube: Any, crd: str) -> None:
    ext = client.ApiextensionsV1Api(kube.api_client())
    got = ext.read_custom_resource_definition(crd)
    conditions = {c.type: c.status for c in got.status.conditions}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert got.status.accepted_names.short_names == ["mrj"]
    assert not got.status.accepted_names.categories


def test_documented_example_is_accepted_and_defaulted(kube: Any, ns: str) -> None:
    example = documented_example()
    out = apply_dry_run(kube, ns, example)
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)["spec"]
    assert stored["maxAttempts"] == 3
    assert stored["workers"] == {"min": 0, "max": 16, "maxPending": 2}
    assert stored["template"]["command"] == ["kubemr"]
    assert stored["memory"] == "1Gi"  # kept as written; kubemr reads it as bytes
    # The API server's defaults are the models' defaults.
    ours = MapReduceJobSpec.model_validate(example["spec"])
    assert MapReduceJobSpec.model_validate(stored) == ours
    assert ours.memory == 1 << 30


@pytest.mark.parametrize(
    "job",
    [
        {"module": "mycompany.jobs"},
        {"pickle": {"url": "s3://scratch/jobs/wc.pkl", "sha256": "ab" * 32}},
        {"source": "import kubemr\nclass WC(kubemr.MapReduce): ...\n", "className": "WC"},
        {"module": "a.b:C", "source": None, "pickle": None},
    ],
)
def test_each_form_of_job_code_is_accepted(kube: Any, ns: str, job: dict[str, Any]) -> None:
    resource = with_spec(job=job)
    out = apply_dry_run(kube, ns, resource)
    assert out.returncode == 0, out.stderr
    MapReduceJobSpec.model_validate(resource["spec"])


def with_spec(**changes: Any) -> dict[str, Any]:
    resource = copy.deepcopy(documented_example())
    resource["metadata"]["name"] = changes.pop("name", "bad")
    for key, value in changes.items():
        if value is DROP:
            resource["spec"].pop(key, None)
        else:
            resource["spec"][key] = value
    return resource


DROP = object()

MALFORMED = {
    "workers-min-over-max": (
        {"workers": {"min": 5, "max": 2}},
        "workers.min must not exceed workers.max",
    ),
    "no-job-code": ({"job": {}}, "give exactly one of job.module, job.pickle or job.source"),
    "two-job-code-forms": (
        {"job": {"module": "a.b:C", "source": "x = 1"}},
        "give exactly one of job.module, job.pickle or job.source",
    ),
    "class-name-without-source": (
        {"job": {"module": "a.b:C", "className": "C"}},
        "className goes with job.source",
    ),
    "source-over-64-KiB-of-UTF-8": (
        {"job": {"source": "é" * 40_000}},
        "job.source is limited to 64 KiB of UTF-8",
    ),
    "bad-sha256": (
        {"job": {"pickle": {"url": "s3://j", "sha256": "abc"}}},
        "spec.job.pickle.sha256",
    ),
    "negative-reducers": ({"reducers": -1}, "should be greater than or equal to 0"),
    "wrong-type": ({"reducers": "three"}, "must be of type integer"),
    "float-for-an-int": ({"maxAttempts": 2.5}, "must be of type integer"),
    "no-inputs": ({"inputs": []}, "give at least one input"),
    "missing-output": ({"output": DROP}, "spec.output: Required value"),
    "unknown-format": ({"inputFormat": "xml"}, 'Unsupported value: "xml"'),
    "memory-below-64-KiB": ({"memory": "63Ki"}, "must be at least 65536 bytes"),
    "memory-not-a-size": ({"memory": "lots"}, "spec.memory in body should match"),
    "secret-in-another-namespace": (
        {"storage": {"secretRef": {"name": "s3", "namespace": "kube-system"}}},
        'unknown field "spec.storage.secretRef.namespace"',
    ),
    "bad-quantity": (
        {"template": {"resources": {"requests": {"cpu": "lots"}}}},
        "spec.template.resources.requests.cpu",
    ),
    "name-too-long": ({"name": "x" * 51}, "metadata.name: at most 50 characters"),
    "unconfined-apparmor-annotation": (
        {
            "template": {
                "annotations": {
                    "container.apparmor.security.beta.kubernetes.io/worker": "unconfined"
                }
            }
        },
        "must not set the workers' AppArmor or seccomp profile",
    ),
    "env-secret-in-another-namespace": (
        {
            "template": {
                "env": [
                    {
                        "name": "K",
                        "valueFrom": {
                            "secretKeyRef": {"name": "s", "key": "k", "namespace": "kube-system"}
                        },
                    }
                ]
            }
        },
        'unknown field "spec.template.env[0].valueFrom.secretKeyRef.namespace"',
    ),
    "env-from-two-sources": (
        {
            "template": {
                "env": [
                    {
                        "name": "K",
                        "valueFrom": {
                            "secretKeyRef": {"name": "s", "key": "k"},
                            "fieldRef": {"fieldPath": "metadata.name"},
                        },
                    }
                ]
            }
        },
        "valueFrom takes exactly one of",
    ),
    "too-many-inputs": ({"inputs": ["s3://b/in/"] * 257}, "spec.inputs: Too many: 257"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_resources_are_refused(kube: Any, ns: str, case: str) -> None:
    changes, message = MALFORMED[case]
    resource = with_spec(**changes)
    out = apply_dry_run(kube, ns, resource)
    assert out.returncode != 0, f"the API server took {case}"
    assert message in out.stderr, out.stderr
    if case != "name-too-long":  # metadata is the API server's, not the model's
        with pytest.raises(ValidationError):
            MapReduceJobSpec.model_validate(resource["spec"])


def custom_objects(kube: Any) -> Any:
    return client.CustomObjectsApi(kube.api_client())


def create(kube: Any, ns: str, name: str) -> dict[str, Any]:
    resource = with_spec(name=name, job={"module": "mycompany.jobs:WordCount"})
    return custom_objects(kube).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, resource
    )


def write_status(kube: Any, ns: str, obj: dict[str, Any], status: MapReduceJobStatus) -> Any:
    obj = {**obj, "status": status.to_resource()}
    return custom_objects(kube).replace_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, obj["metadata"]["name"], obj
    )


def test_printer_columns_show_the_status(kube: Any, ns: str) -> None:
    obj = create(kube, ns, "wc")
    now = datetime.now(UTC)
    status = MapReduceJobStatus(
        observed_generation=1,
        phase="Failed",
        conditions=[
            Condition(
                type="Failed",
                status="True",
                observed_generation=1,
                last_transition_time=now,
                reason="TaskFailed",
                message="reduce-00001 failed 3 times",
            )
        ],
        wave="reduce 1/2",
        progress="12/20",
        workers=3,
        waves=[WaveStatus(kind="map", step=0, job_name="wc-s0-map", total=20, succeeded=20)],
        failure=FailureStatus(reason="TaskFailed", task="reduce-00001", exit_code=1),
    )
    written = write_status(kube, ns, obj, status)
    assert MapReduceJobStatus.model_validate(written["status"]).to_resource() == (
        status.to_resource()
    )

    out = kubectl(kube, "get", "mrj", "-n", ns)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "AGE"]
    assert row.split()[:6] == ["wc", "Failed", "reduce", "1/2", "12/20", "3"]

    out = kubectl(kube, "get", "mapreducejobs.kubemr.dev", "-n", ns, "-o", "wide")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "REASON", "AGE"]
    assert "TaskFailed" in row.split()

    out = kubectl(kube, "wait", "--for=condition=Failed", "mrj/wc", "-n", ns, "--timeout=10s")
    assert out.returncode == 0, out.stderr


def test_status_is_apart_from_the_spec(kube: Any, ns: str) -> None:
    """A write of the resource ignores its status, and a status write its spec."""
    obj = create(kube, ns, "apart")
    api = custom_objects(kube)
    obj["status"] = {"phase": "Running"}
    obj = api.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "apart", obj)
    assert "status" not in obj or not obj["status"].get("phase")
    obj["spec"]["reducers"] = 99
    obj = write_status(kube, ns, obj, MapReduceJobStatus(phase="Pending"))
    assert obj["status"]["phase"] == "Pending"
    assert obj["spec"]["reducers"] == 8


def test_the_largest_status_the_models_make_is_taken(kube: Any, ns: str) -> None:
    """The models' caps (cut texts, bounded lists) fit the CRD's limits."""
    obj = create(kube, ns, "big")
    written = write_status(kube, ns, obj, largest_status())
    assert len(written["status"]["waves"]) == len(largest_status().waves)
    assert len(json.dumps(written["status"])) < 160 << 10
