"""What a user who may create a MapReduceJob can and cannot do to the cluster, read from
the objects kubemr renders (no cluster): worker pods hardened whatever the spec says, no
field that weakens them or reaches another namespace, every free-form field bounded, the
controller's own pod hardened as the chart renders it, and job code checked against its
sha256 before anything unpickles it.

The same oversized cases are sent to a real API server in tests/e2e/test_security.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from kubemr.cli import app
from kubemr.coordinator import COMMIT, PLAN, Stage, StageKind
from kubemr.crd import crd_manifest
from kubemr.errors import CodeIntegrityError
from kubemr.executors.k8s.manifests import (
    LABEL_JOB,
    LABEL_STAGE,
    LABEL_UID,
    stage_job,
)
from kubemr.spec import (
    FORBIDDEN_ANNOTATION_PREFIXES,
    MAX_SOURCE_BYTES,
    JobCode,
    MapReduceJobSpec,
    PickledJob,
)
from kubemr.stages import load_code
from kubemr.storage import StorageOptions
from kubemr.termination import CODE_INTEGRITY, EXIT_VERSION_SKEW
from tests.jobfiles import run_worker
from tests.support import ROOT, helm_binary

Obj = dict[str, Any]

RESOURCE: Obj = {
    "apiVersion": "kubemr.dev/v1alpha1",
    "kind": "MapReduceJob",
    "metadata": {"name": "wc", "namespace": "team-a", "uid": "u-1", "labels": {}},
}
STAGES = [PLAN, Stage(StageKind.MAP, 0, 4), Stage(StageKind.REDUCE, 0, 2), COMMIT]
STAGE_IDS = ["plan", "map", "reduce", "commit"]
BASE: Obj = {
    "inputs": ["s3://in/*.txt"],
    "output": "s3://out/wc",
    "job": {"module": "jobs.wc:WordCount"},
    "storage": {"endpoint": "http://minio:9000", "region": "eu-1", "secretRef": {"name": "s3"}},
}
# Everything the worker template takes, filled in as a user might.
FULL_TEMPLATE: Obj = {
    "image": "registry.example/team/worker:1.2",
    "imagePullPolicy": "Always",
    "command": ["python", "-m", "kubemr"],
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    "env": [
        {"name": "MODE", "value": "fast"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        {"name": "LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ],
    "nodeSelector": {"pool": "batch"},
    "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "db"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    },
    "priorityClassName": "batch-low",
    # A user's labels may try kubemr's own: kubemr's win.
    "labels": {"team": "a", LABEL_JOB: "someone-else", LABEL_STAGE: "commit"},
    "annotations": {"example.com/owner": "team-a"},
    "serviceAccountName": "team-a-workers",
}


def spec_of(**values: Any) -> MapReduceJobSpec:
    return MapReduceJobSpec.model_validate({**BASE, **values})


def pods(**values: Any) -> Iterator[tuple[str, Obj]]:
    for stage, name in zip(STAGES, STAGE_IDS):
        yield name, stage_job(RESOURCE, spec_of(**values), stage, "s3://out/_kubemr/w", 3)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def assert_hardened(job: Obj) -> None:
    """The restricted Pod Security Standard and more, on a stage Job's pod template."""
    template = job["spec"]["template"]
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
    assert isinstance(context["runAsGroup"], int) and context["runAsGroup"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for flag in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(flag), flag
    assert "initContainers" not in pod and "ephemeralContainers" not in pod
    for volume in pod["volumes"]:
        assert set(volume) == {"name", "emptyDir"}, volume  # no hostPath, no projected token
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged") and sc.get("runAsUser", 1) != 0
        assert not container.get("ports")  # hostPort included
        for mount in container["volumeMounts"]:
            assert mount["name"] in {v["name"] for v in pod["volumes"]}
    for key in template["metadata"].get("annotations") or {}:
        assert not key.startswith(FORBIDDEN_ANNOTATION_PREFIXES), key


# -- 1. worker pods hardened, whatever the template says ---------------------------------------
@pytest.mark.parametrize("template", [{}, FULL_TEMPLATE], ids=["defaults", "full-template"])
def test_every_stage_pod_is_hardened(template: Obj) -> None:
    for name, job in pods(template=template):
        try:
            assert_hardened(job)
        except AssertionError as exc:
            raise AssertionError(f"the {name} stage's pod: {exc}") from exc


def test_the_full_template_reaches_the_pod_and_kubemr_labels_win() -> None:
    _, job = next(pods(template=FULL_TEMPLATE))
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    # The template did arrive, so the hardening above was checked on a filled-in pod.
    assert container["image"] == FULL_TEMPLATE["image"]
    assert pod["serviceAccountName"] == "team-a-workers"
    assert pod["affinity"] == FULL_TEMPLATE["affinity"]
    assert pod["tolerations"] == FULL_TEMPLATE["tolerations"] and pod["nodeSelector"]
    assert {"name": "TOKEN", "valueFrom": FULL_TEMPLATE["env"][1]["valueFrom"]} in container["env"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels[LABEL_JOB] == "wc" and labels[LABEL_UID] == "u-1"
    assert labels[LABEL_STAGE] == "plan" and labels["team"] == "a"


WEAKENING = {
    "securityContext": {"privileged": True, "runAsUser": 0},
    "podSecurityContext": {"runAsNonRoot": False},
    "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    "volumeMounts": [{"name": "root", "mountPath": "/host"}],
    "hostNetwork": True,
    "hostPID": True,
    "hostIPC": True,
    "hostUsers": True,
    "shareProcessNamespace": True,
    "automountServiceAccountToken": True,
    "initContainers": [{"name": "x", "image": "busybox"}],
    "containers": [{"name": "x", "image": "busybox"}],
    "ports": [{"containerPort": 80, "hostPort": 80}],
    "capabilities": {"add": ["SYS_ADMIN"]},
    "runtimeClassName": "unconfined",
    "nodeName": "control-plane-1",
}


@pytest.mark.parametrize("field", list(WEAKENING))
def test_no_template_field_can_weaken_the_pod(field: str) -> None:
    """Fields that would weaken a pod are not in the spec: the models refuse them, and the
    CRD's schema (structural, nothing free-form) drops or refuses them at the API server."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        spec_of(template={field: WEAKENING[field]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        spec_of(**{field: WEAKENING[field]})
    spec = crd_spec_schema()
    assert field not in spec["properties"]["template"]["properties"]
    assert field not in spec["properties"]


def crd_spec_schema() -> Obj:
    root = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root["properties"]["spec"]


def test_nothing_in_the_spec_schema_is_free_form() -> None:
    """The API server prunes (or, with strict field validation, refuses) any field the
    schema does not name; a free-form part would carry anything into the pod."""
    for path, node in walk(crd_spec_schema()):
        if isinstance(node, dict):
            assert "x-kubernetes-preserve-unknown-fields" not in node, path


@pytest.mark.parametrize("prefix", FORBIDDEN_ANNOTATION_PREFIXES)
def test_annotations_cannot_unconfine_the_workers(prefix: str) -> None:
    key = prefix + ("worker" if prefix.startswith("container.") else "pod")
    with pytest.raises(ValidationError, match="AppArmor or seccomp profile"):
        spec_of(template={"annotations": {key: "unconfined"}})
    rules = crd_spec_schema()["properties"]["template"]["properties"]["annotations"]
    [rule] = [r for r in rules["x-kubernetes-validations"] if "startsWith" in r["rule"]]
    assert f"!k.startsWith('{prefix}')" in rule["rule"]


# -- 2. credentials from the job's own namespace only ------------------------------------------
def test_a_secret_in_another_namespace_cannot_be_named() -> None:
    for where in (
        {"storage": {"secretRef": {"name": "s3", "namespace": "kube-system"}}},
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
    ):
        with pytest.raises(ValidationError, match="namespace"):
            spec_of(**where)
    schema = crd_spec_schema()["properties"]
    assert set(schema["storage"]["properties"]["secretRef"]["properties"]) == {"name"}
    env_from = schema["template"]["properties"]["env"]["items"]["properties"]["valueFrom"]
    for source in ("secretKeyRef", "configMapKeyRef"):
        assert "namespace" not in env_from["properties"][source]["properties"]


@pytest.mark.parametrize("template", [{}, FULL_TEMPLATE], ids=["defaults", "full-template"])
def test_stage_objects_live_in_the_resources_namespace_only(template: Obj) -> None:
    for name, job in pods(template=template):
        assert job["metadata"]["namespace"] == "team-a", name
        # Nothing inside names a namespace: a pod can only refer to its own.
        found = [p for p, _ in walk(job["spec"]) if p.endswith(".namespace")]
        assert not found, (name, found)
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]


# -- 1b. the controller's own pod, as the chart renders it ---------------------------------------
def helm_template(*args: str) -> list[Obj]:
    out = subprocess.run(
        [helm_binary(), "template", "mr", os.path.join(ROOT, "charts", "kubemr"),
         "--namespace", "kubemr-system", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["cluster-wide", "namespaced"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    if request.param == "cluster-wide":
        return helm_template()
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": ["team-a", "team-b"]}))
    return helm_template("-f", str(values))


def test_the_controller_pod_is_hardened_as_rendered(rendered: list[Obj]) -> None:
    [deployment] = [d for d in rendered if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    for volume in pod["volumes"]:
        assert "hostPath" not in volume, volume
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
        assert sc["capabilities"] == {"drop": ["ALL"]}
        # No storage credentials reach the controller, by value or by reference.
        assert not container.get("envFrom")
        for env in container.get("env") or []:
            assert "secretKeyRef" not in (env.get("valueFrom") or {}), env


def test_the_rendered_rbac_grants_no_secret_exec_or_wildcard(rendered: list[Obj]) -> None:
    roles = [d for d in rendered if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            resources = set(rule.get("resources") or [])
            assert "*" not in resources and "*" not in rule["verbs"], rule
            assert not resources & {"secrets", "pods/exec", "pods/attach", "serviceaccounts/token"}
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
            if "pods" in resources:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    accounts = [d for d in rendered if d["kind"] == "ServiceAccount"]
    worker = [a for a in accounts if a["metadata"]["name"].endswith("-worker")]
    assert worker and all(a["automountServiceAccountToken"] is False for a in worker)


# -- 3. job code checked before it is unpickled --------------------------------------------------
class _RunsCode:
    """Unpickling this creates a file: what a blob swapped in by an attacker would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def booby_trapped(marker: Any) -> bytes:
    return pickle.dumps(_RunsCode(str(marker)))


def test_the_booby_trap_runs_code_when_unpickled(tmp_path: Any) -> None:
    """The control: the blob the tests below refuse does run code when unpickled."""
    marker = tmp_path / "ran"
    pickle.loads(booby_trapped(marker)).close()
    assert marker.exists()


def test_a_changed_pickle_is_refused_before_unpickling(tmp_path: Any) -> None:
    blob = tmp_path / "code" / "wc.pkl"
    blob.parent.mkdir()
    blob.write_bytes(b"the bytes that were submitted")
    submitted = hashlib.sha256(blob.read_bytes()).hexdigest()
    marker = tmp_path / "ran"
    blob.write_bytes(booby_trapped(marker))  # changed after submission
    code = JobCode(pickle=PickledJob(url=str(blob), sha256=submitted))
    with pytest.raises(CodeIntegrityError) as info:
        load_code(code, StorageOptions())
    assert not marker.exists(), "the changed pickle was unpickled"
    message = str(info.value)
    changed = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert str(blob) in message and submitted in message and changed in message
    assert "spec.job.pickle.sha256" in message and "Submit the job again" in message


WORDCOUNT = """
import kubemr

class WordCount(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in line.split():
            yield word, 1
"""


def worker(tmp_path: Any, stage: str, env: dict[str, str] | None = None) -> tuple[int, Obj]:
    """``kubemr worker`` as a pod runs it, in a process of its own."""
    code, message, _ = run_worker(tmp_path, stage, 0, env)
    return code, message


def plan_env(tmp_path: Any, job: Obj) -> dict[str, str]:
    data = tmp_path / "in.txt"
    data.write_text("a b\nb c\n" * 20)
    spec = {"job": job, "inputs": [str(data)], "output": str(tmp_path / "out")}
    plan = {"name": "wc", "namespace": "team-a", "uid": "0123456789abcdef",
            "work_url": str(tmp_path / "work"), "spec": spec}  # fmt: skip
    return {"KUBEMR_SPEC": json.dumps(plan)}


def test_a_plan_pod_refuses_a_changed_pickle_and_is_not_retried(tmp_path: Any) -> None:
    blob = tmp_path / "wc.pkl"
    blob.write_bytes(b"the bytes that were submitted")
    submitted = hashlib.sha256(blob.read_bytes()).hexdigest()
    marker = tmp_path / "ran"
    blob.write_bytes(booby_trapped(marker))
    code, message = worker(
        tmp_path, "plan", plan_env(tmp_path, {"pickle": {"url": str(blob), "sha256": submitted}})
    )
    assert not marker.exists(), "the changed pickle was unpickled"
    # The exit code the stage Job's podFailurePolicy fails the index on at once.
    assert code == EXIT_VERSION_SKEW and message["reason"] == CODE_INTEGRITY, message
    assert str(blob) in message["message"] and submitted in message["message"]
    assert "was not unpickled" in message["message"]


def test_a_task_refuses_job_code_changed_in_the_work_dir(tmp_path: Any) -> None:
    code, message = worker(tmp_path, "plan", plan_env(tmp_path, {"source": WORDCOUNT}))
    assert code == 0, message
    stored = tmp_path / "work" / "job.pkl"
    recorded = json.loads((tmp_path / "work" / "job.meta.json").read_text())["sha256"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == recorded
    marker = tmp_path / "ran"
    stored.write_bytes(booby_trapped(marker))
    code, message = worker(tmp_path, "map-0")
    assert not marker.exists(), "the changed job code was unpickled"
    assert code == EXIT_VERSION_SKEW and message["reason"] == CODE_INTEGRITY, message
    for part in (str(stored), recorded, hashlib.sha256(stored.read_bytes()).hexdigest()):
        assert part in message["message"], (part, message["message"])


# -- 5. size limits ----------------------------------------------------------------------------
def _long(n: int) -> str:
    return "x" * n


OVERSIZED: dict[str, tuple[Obj, str]] = {
    # case: (spec changes, the field the refusal names, as the API server writes it)
    "too-many-inputs": ({"inputs": [f"s3://in/{i}.txt" for i in range(257)]}, "spec.inputs"),
    "long-input": ({"inputs": ["s3://in/" + _long(2048)]}, "spec.inputs[0]"),
    "long-output": ({"output": "s3://out/" + _long(2048)}, "spec.output"),
    "long-work-dir": ({"workDir": "s3://w/" + _long(2048)}, "spec.workDir"),
    "too-many-params": ({"params": {f"p{i}": "v" for i in range(65)}}, "spec.params"),
    "long-param-value": ({"params": {"p": _long(4097)}}, "spec.params.p"),
    "long-param-key": ({"params": {_long(257): "v"}}, "spec.params"),
    "source-over-64-KiB": ({"job": {"source": "#" * (MAX_SOURCE_BYTES + 1)}}, "spec.job"),
    "long-pickle-url": (
        {"job": {"pickle": {"url": "s3://c/" + _long(2048), "sha256": "ab" * 32}}},
        "spec.job.pickle.url",
    ),
    "long-endpoint": ({"storage": {"endpoint": "http://" + _long(2048)}}, "spec.storage.endpoint"),
    "long-image": ({"template": {"image": _long(1025)}}, "spec.template.image"),
    "too-many-command-words": (
        {"template": {"command": ["kubemr"] * 33}},
        "spec.template.command",
    ),
    "long-command-word": ({"template": {"command": [_long(4097)]}}, "spec.template.command[0]"),
    "too-many-env": (
        {"template": {"env": [{"name": f"E{i}", "value": "v"} for i in range(65)]}},
        "spec.template.env",
    ),
    "long-env-value": (
        {"template": {"env": [{"name": "E", "value": _long(4097)}]}},
        "spec.template.env[0].value",
    ),
    "too-many-labels": (
        {"template": {"labels": {f"l{i}": "v" for i in range(33)}}},
        "spec.template.labels",
    ),
    "long-label-value": ({"template": {"labels": {"l": _long(64)}}}, "spec.template.labels.l"),
    "long-annotation": (
        {"template": {"annotations": {"a": _long(4097)}}},
        "spec.template.annotations.a",
    ),
    "long-annotation-key": (
        {"template": {"annotations": {_long(318): "v"}}},
        "spec.template.annotations",
    ),
    "too-many-node-labels": (
        {"template": {"nodeSelector": {f"n{i}": "v" for i in range(33)}}},
        "spec.template.nodeSelector",
    ),
    "too-many-tolerations": (
        {"template": {"tolerations": [{"key": f"t{i}", "operator": "Exists"} for i in range(33)]}},
        "spec.template.tolerations",
    ),
    "too-many-affinity-terms": (
        {
            "template": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "z", "operator": "Exists"}]}
                            ]
                            * 33
                        }
                    }
                }
            }
        },
        "spec.template.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms",
    ),
    "long-affinity-value": (
        {
            "template": {
                "affinity": {
                    "podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {"topologyKey": _long(318)}
                        ]
                    }
                }
            }
        },
        "spec.template.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
        ".topologyKey",
    ),
    "too-many-resources": (
        {"template": {"resources": {"requests": {f"r{i}": "1" for i in range(17)}}}},
        "spec.template.resources.requests",
    ),
}


def model_path(field: str) -> list[str]:
    """The API server's ``spec.a.b[0].c`` as the parts pydantic's error location has."""
    parts: list[str] = []
    for part in field.removeprefix("spec.").replace("[", ".").replace("]", "").split("."):
        parts.append(part)
    return parts


@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_fields_are_refused_by_the_models(case: str) -> None:
    changes, field = OVERSIZED[case]
    with pytest.raises(ValidationError) as info:
        MapReduceJobSpec.model_validate({**BASE, **changes})
    locations = [[str(p) for p in e["loc"]] for e in info.value.errors(include_url=False)]
    # Aliases are the resource's names; a location starts with the field the case names
    # (a dict's key or a union's branch may follow).
    wanted = model_path(field)
    camel = [[_camel(p) for p in loc] for loc in locations]
    assert any(loc[: len(wanted)] == wanted for loc in camel), (wanted, camel)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def test_every_free_form_spec_field_has_a_limit() -> None:
    for path, node in walk(crd_spec_schema()):
        if not isinstance(node, dict) or path.endswith((".properties", ".items")):
            continue
        if ".anyOf[" in path:  # an int-or-string's branches: the limits are on the node
            continue
        kind = node.get("type")
        if kind == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path}: a string with no maxLength"
        elif kind == "array":
            assert "maxItems" in node, f"{path}: a list with no maxItems"
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: a map with no maxProperties"
            rules = " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))
            assert "self.all(k, size(k) <=" in rules, f"{path}: a map with no key limit"
        elif node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node, f"{path}: an int-or-string with no maxLength"


def test_the_limits_leave_a_resource_within_what_etcd_stores() -> None:
    """The largest spec the limits allow, as JSON, is well under etcd's 1.5 MiB."""
    largest = json.dumps(
        {
            **BASE,
            "inputs": ["s3://" + _long(2043)] * 256,
            "params": {_long(250) + f"{i:03d}": _long(4096) for i in range(64)},
            "template": {
                "env": [{"name": f"E{i}", "value": _long(4096)} for i in range(64)],
                "command": [_long(4096)] * 32,
                "annotations": {f"a{i}": _long(4096) for i in range(32)},
            },
        }
    )
    assert len(largest) < 1_400_000


# -- kubemr submit refuses the same before anything reaches the API --------------------------
def submit(tmp_path: Any, *args: str) -> Any:
    job = tmp_path / "wc.py"
    if not job.exists():
        job.write_text(WORDCOUNT)
    # A kubeconfig that names no reachable cluster: a flag error must come first.
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return CliRunner().invoke(
        app,
        ["submit", str(job), "--output", "s3://b/out", "--kubeconfig", str(config), *args],
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ([a for i in range(257) for a in ("--input", f"s3://b/{i}.txt")], "--input"),
        (["--input", "s3://b/" + _long(2048)], "--input"),
        (["--input", "s3://b/in", "--param", "k=" + _long(4097)], "--param k="),
        (["--input", "s3://b/in", "--env", "E=" + _long(4097)], "--env"),
        (["--input", "s3://b/in", "--image", _long(1025)], "--image"),
        (["--input", "s3://b/in", "--s3-endpoint", "http://" + _long(2048)], "--s3-endpoint"),
        (["--input", "s3://b/in", "--worker-command", "kubemr " * 33], "--worker-command"),
    ],
    ids=["inputs", "input", "param", "env", "image", "endpoint", "command"],
)
def test_submit_refuses_oversized_flags_before_the_api(
    tmp_path: Any, args: list[str], flag: str
) -> None:
    result = submit(tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert flag in result.output, result.output
    assert "127.0.0.1:1" not in result.output and len(result.output) < 600, result.output


def test_submit_refuses_inline_source_over_the_limit(tmp_path: Any) -> None:
    (tmp_path / "wc.py").write_text(WORDCOUNT + "#" * MAX_SOURCE_BYTES + "\n")
    result = submit(tmp_path, "--input", "s3://b/in", "--code", "source")
    assert result.exit_code == 2, result.output
    assert "--code source" in result.output and "65536" in result.output, result.output
