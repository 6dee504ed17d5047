"""How kubemr is shipped, checked with the real tools: the chart rendered and linted by
Helm (built by scripts/install-helm), manifests/ equal to what it renders, the values
schema, and the image's install steps run on this machine from requirements.lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from kubemr.spec import JobDefaults, MapReduceJobSpec
from tests.support import ROOT, helm_binary

pytestmark = pytest.mark.timeout(600)

CHART = os.path.join(ROOT, "charts", "kubemr")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def template(helm: str, *values: str, namespace: str = "mr", release: str = "kubemr") -> list[Obj]:
    out = run_helm(helm, "template", release, CHART, "--namespace", namespace, *values)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def of_kind(docs: list[Obj], kind: str) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind]


def controller_container(docs: list[Obj]) -> Obj:
    (deployment,) = of_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def job_defaults(docs: list[Obj]) -> Obj:
    (config,) = of_kind(docs, "ConfigMap")
    return yaml.safe_load(config["data"]["job-defaults.yaml"])


# -- manifests/ ----------------------------------------------------------------------------------
def test_manifests_are_what_the_chart_renders(helm: str) -> None:
    out = subprocess.run(
        [os.path.join(ROOT, "scripts", "render-manifests"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "KUBEMR_HELM_BIN": helm,
            # `kubemr crd` of this venv
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        },
    )
    assert out.returncode == 0, (
        "manifests/ differ from `helm template` of charts/kubemr (run scripts/render-manifests):\n"
        + out.stdout[-6000:]
        + out.stderr[-2000:]
    )


@pytest.mark.parametrize(
    "values", [[], ["--set", "watchNamespaces={team-a}", "--set", "storage.secretName=s3"]]
)
def test_helm_lint_passes(helm: str, values: list[str]) -> None:
    out = run_helm(helm, "lint", "--strict", CHART, "--namespace", "mr", *values)
    assert out.returncode == 0, out.stdout + out.stderr


# -- the two modes -------------------------------------------------------------------------------
def test_cluster_wide_mode_binds_one_cluster_role(helm: str) -> None:
    docs = template(helm, release="batch")
    (role,) = of_kind(docs, "ClusterRole")
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert role["metadata"]["name"] == binding["roleRef"]["name"] == "batch-kubemr-controller"
    assert binding["subjects"][0]["namespace"] == "mr"
    (lease,) = of_kind(docs, "Role")
    assert lease["metadata"]["namespace"] == "mr"
    assert lease["rules"][0]["resources"] == ["leases"]
    args = controller_container(docs)["args"]
    assert "--lease-namespace=mr" in args
    assert not [a for a in args if a.startswith("--namespace")]
    # Every namespace: no worker account is named, as one exists in the release's only.
    assert "serviceAccountName" not in job_defaults(docs)["template"]


def test_namespaced_mode_grants_nothing_cluster_wide(helm: str) -> None:
    docs = template(helm, "--set", "watchNamespaces={team-a,team-b}", release="kubemr")
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert roles == {
        ("team-a", "kubemr-controller"),
        ("team-b", "kubemr-controller"),
        ("mr", "kubemr-controller-leader-election"),
    }
    for binding in of_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubemr-controller", "namespace": "mr"}
        ]
    args = controller_container(docs)["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--lease-namespace=mr" in args
    workers = {
        a["metadata"]["namespace"]
        for a in of_kind(docs, "ServiceAccount")
        if a["metadata"]["name"] == "kubemr-worker"
    }
    assert workers == {"mr", "team-a", "team-b"}  # where jobs run, and the release's own
    assert job_defaults(docs)["template"]["serviceAccountName"] == "kubemr-worker"


def test_a_watched_release_namespace_gets_one_worker_account(helm: str) -> None:
    docs = template(helm, "--set", "watchNamespaces={mr}")
    accounts = [a["metadata"]["namespace"] for a in of_kind(docs, "ServiceAccount")]
    assert sorted(accounts) == ["mr", "mr"]  # the controller's and the workers'


def test_without_leader_election_there_is_no_lease_role(helm: str) -> None:
    docs = template(helm, "--set", "leaderElection.enabled=false")
    assert not of_kind(docs, "Role")
    args = controller_container(docs)["args"]
    assert "--no-leader-elect" in args and not [a for a in args if "lease" in a]


# -- values --------------------------------------------------------------------------------------
FULL_VALUES: Obj = {
    "image": {"repository": "registry.example.com/kubemr", "tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "replicas": 2,
    "controller": {
        "workers": 8,
        "logFormat": "text",
        "logLevel": "DEBUG",
        "healthPort": 9440,
        "podAnnotations": {"example.com/team": "data"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
    },
    "storage": {"endpoint": "http://minio.minio.svc:9000", "region": "eu-1", "secretName": "s3"},
    "jobDefaults": {
        "template": {
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Equal", "value": "yes"}],
        }
    },
}


def test_every_value_reaches_the_manifests(helm: str, tmp_path: Any) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    docs = template(helm, "-f", str(path))
    (deployment,) = of_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = controller_container(docs)
    assert deployment["spec"]["replicas"] == 2
    assert container["image"] == "registry.example.com/kubemr:0.1.0"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "infra"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "data"
    args = container["args"]
    for arg in ("--log-format=text", "--log-level=DEBUG", "--workers=8"):
        assert arg in args
    assert "--health-address=0.0.0.0:9440" in args
    assert container["ports"][0]["containerPort"] == 9440
    defaults = job_defaults(docs)
    assert defaults == {
        "storage": {
            "endpoint": "http://minio.minio.svc:9000",
            "region": "eu-1",
            "secretRef": {"name": "s3"},
        },
        "template": {
            "image": "registry.example.com/kubemr:0.1.0",  # the workers run the controller's
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Equal", "value": "yes"}],
        },
    }
    # Read as the controller reads --job-defaults, and applied to a job that sets nothing.
    spec = JobDefaults.model_validate(defaults).apply(
        MapReduceJobSpec(inputs=["s3://in/*"], output="s3://out/x", job={"module": "j:J"})
    )
    assert spec.storage.secret_ref is not None and spec.storage.secret_ref.name == "s3"
    assert spec.worker_image() == "registry.example.com/kubemr:0.1.0"


def test_a_digest_pins_the_image(helm: str) -> None:
    digest = "sha256:" + "a" * 64
    docs = template(helm, "--set", f"image.tag={digest}")
    assert controller_container(docs)["image"] == f"ghcr.io/kubemr/kubemr@{digest}"
    assert job_defaults(docs)["template"]["image"] == f"ghcr.io/kubemr/kubemr@{digest}"


def test_changing_the_job_defaults_rolls_the_deployment(helm: str) -> None:
    def checksum(*values: str) -> str:
        (deployment,) = of_kind(template(helm, *values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/job-defaults"]

    before = checksum()
    after = checksum("--set", "storage.endpoint=http://s3.example.com")
    assert before != after
    text = of_kind(template(helm), "ConfigMap")[0]["data"]["job-defaults.yaml"]
    assert before == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "controller.bogus=1"], "additional properties 'bogus'"),
        (["--set", "bogus=1"], "additional properties 'bogus'"),
        (["--set", "replicas=2", "--set", "leaderElection.enabled=false"], "/leaderElection"),
        (["--set", "watchNamespaces={a,a}"], "/watchNamespaces"),
        (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "controller.logFormat=xml"], "/controller/logFormat"),
        (["--set", "controller.workers=0"], "/controller/workers"),
        (["--set", "controller.healthPort=70000"], "/controller/healthPort"),
        (["--set", "storage.endpoint=minio:9000"], "/storage/endpoint"),
        (["--set", "storage.secretName=Not_A_Name"], "/storage/secretName"),
        (["--set", "jobDefaults.template.cpu=1"], "additional properties 'cpu'"),
        (["--set-json", 'controller.resources={"requests":{"cpu":[]}}'], "/controller/resources"),
    ],
)
def test_values_outside_the_schema_are_refused(helm: str, values: list[str], message: str) -> None:
    out = run_helm(helm, "template", "kubemr", CHART, *values)
    assert out.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


# -- the image's install steps -------------------------------------------------------------------
def test_the_image_install_steps_work_from_the_lock(tmp_path: Any) -> None:
    """The Dockerfile's builder stage on this machine: a venv without pip, the locked
    dependencies installed with --require-hashes --no-deps (so the lock must be complete:
    `pip check` finds nothing missing), kubemr's wheel on top, and the entry point runs."""
    context = tmp_path / "context"  # the build context, as COPY sees it
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(os.path.join(ROOT, name), context / name)
    shutil.copytree(
        os.path.join(ROOT, "src"), context / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp_path / "opt-kubemr"
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*args: str) -> str:
        out = subprocess.run(
            args, cwd=context, capture_output=True, text=True, timeout=400, env=env
        )
        assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        return out.stdout

    pip = [sys.executable, "-m", "pip"]
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    run(*pip, "--python", python, "install", "--quiet", "--no-deps", "--require-hashes",
        "--only-binary=:all:", "-r", "requirements.lock")  # fmt: skip
    run(*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), ".")
    (wheel,) = os.listdir(tmp_path / "wheels")
    run(*pip, "--python", python, "install", "--quiet", "--no-deps", "--no-index",
        str(tmp_path / "wheels" / wheel))  # fmt: skip
    run(*pip, "--python", python, "check")
    listed = json.loads(run(*pip, "--python", python, "list", "--format=json"))
    names = {p["name"].lower() for p in listed}
    assert "kubemr" in names and not names & {"pip", "setuptools", "wheel"}
    kubemr_bin = str(venv / "bin" / "kubemr")
    assert "--health-address" in run(kubemr_bin, "controller", "--help")
    assert "--stage" in run(kubemr_bin, "worker", "--help")
