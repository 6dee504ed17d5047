"""The chart (charts/kubemr) and the plain manifests rendered from it (manifests/), read as
files: names other tools rely on, least-privilege RBAC equal to what the controller checks
for, a hardened pod, and commands the ``kubemr`` entry point accepts.

That manifests/ is what Helm renders from the chart is tested with the real Helm in
tests/integration/test_packaging.py; the chart on a cluster in tests/e2e/test_install.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from typing import Any

import pytest
import typer.main
import yaml

import kubemr.spec
from kubemr.cli import app
from kubemr.coordinator import StepShape, job_stages
from kubemr.executors.k8s.api import LEASE_RIGHTS, RIGHTS, Right
from kubemr.executors.k8s.manifests import stage_job
from kubemr.spec import JobDefaults, MapReduceJobSpec
from tests.support import ROOT

CHART = os.path.join(ROOT, "charts", "kubemr")
MANIFESTS = os.path.join(ROOT, "manifests")
NAMESPACE = "kubemr-system"

Obj = dict[str, Any]


def load_all(path: str) -> list[Obj]:
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def rbac() -> list[Obj]:
    return load_all(os.path.join(MANIFESTS, "rbac.yaml"))


@pytest.fixture(scope="module")
def controller() -> list[Obj]:
    return load_all(os.path.join(MANIFESTS, "controller.yaml"))


@pytest.fixture(scope="module")
def deployment(controller: list[Obj]) -> Obj:
    return find(controller, "Deployment", "kubemr-controller")


@pytest.fixture(scope="module")
def container(deployment: Obj) -> Obj:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def chart_yaml() -> Obj:
    with open(os.path.join(CHART, "Chart.yaml")) as fh:
        return yaml.safe_load(fh)


def project_version() -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


# -- the chart -----------------------------------------------------------------------------------
def test_chart_app_version_is_the_package_version() -> None:
    chart = chart_yaml()
    assert chart["apiVersion"] == "v2" and chart["name"] == "kubemr"
    assert chart["appVersion"] == project_version()
    # The image kubemr names by default for workers is the chart's default image.
    assert f"ghcr.io/kubemr/kubemr:{chart['appVersion']}" == kubemr.spec.KUBEMR_IMAGE
    with open(os.path.join(CHART, "values.yaml")) as fh:
        values = yaml.safe_load(fh)
    assert values["image"]["repository"] == "ghcr.io/kubemr/kubemr"
    assert values["image"]["tag"] == ""  # the appVersion


def test_every_value_is_described_by_the_schema() -> None:
    """values.schema.json forbids unknown keys, so each default value must be in it."""
    import json

    with open(os.path.join(CHART, "values.schema.json")) as fh:
        schema = json.load(fh)
    with open(os.path.join(CHART, "values.yaml")) as fh:
        values = yaml.safe_load(fh)

    def walk(value: Any, node: Obj, path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '/'} allows any key"
            for key, item in value.items():
                assert key in node["properties"], f"{path}/{key} is not in the schema"
                walk(item, node["properties"][key], f"{path}/{key}")

    walk(values, schema, "")


# -- manifests/ ----------------------------------------------------------------------------------
def test_manifests_keep_the_names_others_rely_on(rbac: list[Obj], controller: list[Obj]) -> None:
    for docs in (rbac, controller):
        # Each file can be applied on its own, and `kubectl apply -f manifests/` reads
        # controller.yaml first: both start with the namespace.
        assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == NAMESPACE
        for doc in docs[1:]:
            if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    labels = docs[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    find(rbac, "ServiceAccount", "kubemr-controller")
    find(rbac, "ClusterRole", "kubemr-controller")
    find(rbac, "ClusterRoleBinding", "kubemr-controller")
    find(rbac, "Role", "kubemr-controller-leader-election")
    assert {d["kind"] for d in controller} == {"Namespace", "ConfigMap", "Deployment"}


def rights_of(rules: list[Obj]) -> set[Right]:
    granted = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    granted.add(Right(verb, group, name, sub))
    return granted


def test_controller_rbac_is_exactly_what_the_controller_checks_for(rbac: list[Obj]) -> None:
    cluster_role = find(rbac, "ClusterRole", "kubemr-controller")
    assert rights_of(cluster_role["rules"]) == set(RIGHTS)
    lease = find(rbac, "Role", "kubemr-controller-leader-election")
    assert lease["metadata"]["namespace"] == NAMESPACE
    assert rights_of(lease["rules"]) == set(LEASE_RIGHTS)
    for kind, name in (
        ("ClusterRoleBinding", "kubemr-controller"),
        ("RoleBinding", "kubemr-controller-leader-election"),
    ):
        binding = find(rbac, kind, name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubemr-controller", "namespace": NAMESPACE}
        ]
    # Nothing else is bound to anyone.
    roles = [d for d in rbac if d["kind"] in ("Role", "ClusterRole")]
    assert len(roles) == 2
    granted = rights_of(cluster_role["rules"])
    assert not {r for r in granted if r.resource in ("secrets", "configmaps")}
    assert {r.verb for r in granted if r.resource == "pods"} == {"list", "watch"}
    assert not {r for r in granted if r.subresource not in ("", "status")}


def test_the_worker_account_has_no_token_and_no_binding(rbac: list[Obj]) -> None:
    worker = find(rbac, "ServiceAccount", "kubemr-worker")
    assert worker["automountServiceAccountToken"] is False
    subjects = [s for d in rbac if "subjects" in d for s in d["subjects"]]
    assert all(s["name"] != "kubemr-worker" for s in subjects)


def test_the_controller_pod_is_hardened(deployment: Obj, container: Obj) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubemr-controller"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/var/tmp/kubemr"]["name"]]  # the one writable place
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["TMPDIR"] == "/var/tmp/kubemr"
    assert mounts["/etc/kubemr"]["readOnly"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] == 1


def test_probes_use_the_health_endpoint(container: Obj) -> None:
    (port,) = container["ports"]
    address = next(a for a in container["args"] if a.startswith("--health-address="))
    assert address == f"--health-address=0.0.0.0:{port['containerPort']}"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}


def test_job_defaults_are_mounted_and_roll_the_deployment(
    controller: list[Obj], deployment: Obj, container: Obj
) -> None:
    config = find(controller, "ConfigMap", "kubemr-job-defaults")
    text = config["data"]["job-defaults.yaml"]
    assert yaml.safe_load(text) == {"template": {"image": "ghcr.io/kubemr/kubemr:0.1.0"}}
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == "kubemr-job-defaults"
    assert "--job-defaults=/etc/kubemr/job-defaults.yaml" in container["args"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    # Helm's sha256sum of the rendered defaults, which the ConfigMap holds plus a newline.
    digest = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    assert annotations["checksum/job-defaults"] == digest


def test_job_defaults_read_as_the_controller_reads_them(controller: list[Obj]) -> None:
    text = find(controller, "ConfigMap", "kubemr-job-defaults")["data"]["job-defaults.yaml"]
    defaults = JobDefaults.model_validate(yaml.safe_load(text))
    assert defaults.template.image == "ghcr.io/kubemr/kubemr:0.1.0"


# -- the commands the pods run -------------------------------------------------------------------
def parse(args: list[str]) -> Obj:
    """``kubemr ARGS`` parsed by the real command line, without running it: an unknown
    option or a bad value raises as it would in the pod."""
    group = typer.main.get_command(app)
    command = group.get_command(None, args[0])  # type: ignore[attr-defined]
    assert command is not None, f"kubemr has no command {args[0]!r}"
    return dict(command.make_context(args[0], list(args[1:])).params)


def test_the_controller_command_is_accepted(container: Obj) -> None:
    assert container["command"] == ["kubemr"]  # explicit: nodes that run commands need it
    assert container["args"][0] == "controller"
    params = parse(container["args"])
    assert params["leader_elect"] is True
    assert params["lease_namespace"] == NAMESPACE
    assert not params["namespace"]  # every namespace
    assert str(params["job_defaults"]) == "/etc/kubemr/job-defaults.yaml"
    assert params["log_format"] == "json"
    assert params["workers"] >= 1
    assert re.fullmatch(r"0\.0\.0\.0:\d+", params["health_address"])


def test_a_bad_controller_flag_is_refused() -> None:
    with pytest.raises(Exception, match="No such option"):
        parse(["controller", "--no-such-flag"])


def test_the_worker_commands_are_accepted() -> None:
    spec = MapReduceJobSpec(
        inputs=["s3://in/*.txt"], output="s3://out/wc", job={"module": "jobs.wc:WordCount"}
    )
    resource = {
        "apiVersion": "kubemr.dev/v1alpha1",
        "kind": "MapReduceJob",
        "metadata": {"name": "wc", "namespace": "team-a", "uid": "u-1"},
        "spec": {},
    }
    stages = job_stages([StepShape(maps=3, reducers=2), StepShape(maps=2, reducers=0)])
    assert len(stages) == 5
    for stage in stages:
        job = stage_job(resource, spec, stage, "s3://out/_kubemr/w", 1)
        (worker,) = job["spec"]["template"]["spec"]["containers"]
        assert worker["command"] == ["kubemr"]  # the image's entry point, on PATH
        params = parse(worker["args"])
        assert params["stage"] == stage.name and params["work"] == "s3://out/_kubemr/w"


def test_every_value_is_documented() -> None:
    with open(os.path.join(CHART, "values.yaml")) as fh:
        values = yaml.safe_load(fh)
    with open(os.path.join(ROOT, "docs", "install.md")) as fh:
        doc = fh.read()

    def leaves(value: Any, path: str) -> list[str]:
        # Requests and limits are one value, a Kubernetes structure.
        if isinstance(value, dict) and value and not path.endswith("resources"):
            return [p for k, v in value.items() for p in leaves(v, f"{path}.{k}".lstrip("."))]
        return [path]

    # A value is named whole (`storage.region`), or after another of its group in the
    # first cell of a row of the values table (`controller.podAnnotations`, `podLabels`).
    cells = [row.split("|")[1] for row in doc.splitlines() if row.startswith("| `")]
    missing = []
    for path in leaves(values, ""):
        parent, _, leaf = path.rpartition(".")
        if not any(
            f"`{path}`" in cell or (cell.startswith(f" `{parent}.") and f"`{leaf}`" in cell)
            for cell in cells
        ):
            missing.append(path)
    assert not missing, f"docs/install.md does not describe {missing}"
