"""kubemr installed as an operator installs it, on a real control plane (kubestack): the
Helm chart (charts/kubemr) cluster-wide and namespaced, and the plain manifests/. The
controller runs as the Deployment's pod (``kubemr controller`` under its ServiceAccount's
token, in-cluster configuration), and runs real jobs.

kubestack pods are processes of this machine, so:

- the Deployment's ``command: ["kubemr"]`` runs this venv's ``kubemr`` (the node's PATH);
- the image is ignored, and worker pods run ``template.command`` = this Python;
- the node does no probes: it reports a pod Ready once its process runs. The health
  endpoint the probes name is checked here directly: the pod shares the host's network.

This module starts a cluster of its own: its state must not be under /tmp, which the
controller pod mounts an emptyDir over (kubestack mounts volumes from its state dir), and
its node does not turn memory limits into address-space limits (the controller maps about
1 GiB of address space for 60 MB resident: a 512 Mi limit on that is not what a kubelet's
cgroup limit means). With KUBEMR_E2E_USE_EXISTING=1 it uses that cluster instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemr.executors.k8s.api import LEASE_RIGHTS, RIGHTS, Right
from kubemr.executors.k8s.manifests import GROUP, LABEL_JOB, PLURAL, VERSION
from tests.e2e.conftest import Cluster
from tests.e2e.kubestack import Kubestack, kubestack_binary
from tests.e2e.test_controller import FAKE_WORKER, WORDCOUNT, fake_job, kubectl, wait_for
from tests.support import ROOT, free_port, helm_binary

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHART = os.path.join(ROOT, "charts", "kubemr")
MANIFESTS = os.path.join(ROOT, "manifests")
SECRET = "s3"
REGION = "us-east-1"
# Everyone may ask what they may do, and read the API's discovery endpoints
# (system:basic-user, system:discovery): nothing else is granted without a binding.
SELF_REVIEWS = {
    "selfsubjectreviews.authentication.k8s.io": {"create"},
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
}

Obj = dict[str, Any]


# -- the cluster, Helm, MinIO ------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if os.environ.get("KUBEMR_E2E_USE_EXISTING") == "1" and os.environ.get("KUBECONFIG"):
        yield request.getfixturevalue("kube")
        return
    cache = os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr"))
    os.makedirs(os.path.join(cache, "e2e"), exist_ok=True)
    state = tempfile.mkdtemp(prefix="install-", dir=os.path.join(cache, "e2e"))
    assert not os.path.realpath(state).startswith("/tmp/"), state
    stack = Kubestack(
        kubestack_binary(), state, cpu="4", memory="8Gi", node_args=("--memory-limits=false",)
    )
    # The node's PATH is the pods' PATH: the Deployment's `kubemr` is this venv's.
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([bin_dir, path])
    try:
        assert shutil.which("kubemr") == os.path.join(bin_dir, "kubemr")
        stack.start()
        yield Cluster(stack.kubeconfig, stack)
    finally:
        os.environ["PATH"] = path
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


def on_kubestack(stack: Cluster) -> bool:
    return stack.stack is not None


@dataclass
class Helm:
    binary: str
    kubeconfig: str
    home: str

    def __call__(self, *args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": os.path.join(self.home, "cache"),
            "HELM_CONFIG_HOME": os.path.join(self.home, "config"),
            "HELM_DATA_HOME": os.path.join(self.home, "data"),
        }
        return subprocess.run(
            [self.binary, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )


@pytest.fixture(scope="module")
def helm(stack: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), stack.kubeconfig, str(tmp_path_factory.mktemp("helm-home")))


@pytest.fixture(scope="module")
def fake_worker(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("worker") / "fake_worker.py"
    path.write_text(FAKE_WORKER)
    return str(path)


# -- helpers ------------------------------------------------------------------------------------
class Api:
    def __init__(self, stack: Cluster) -> None:
        api_client = stack.api_client()
        self.kubeconfig = stack.kubeconfig
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def create_job(self, ns: str, body: Obj) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def resource(self, ns: str, name: str) -> Obj:
        got = self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return dict(got)

    def wait_phase(self, ns: str, name: str, phase: str, timeout: float = 240) -> Obj:
        def check() -> Obj | None:
            status = self.resource(ns, name).get("status") or {}
            if status.get("phase") in ("Failed", "Succeeded") and status["phase"] != phase:
                raise AssertionError(f"{ns}/{name} ended {status['phase']}: {status}")
            return status if status.get("phase") == phase else None

        return wait_for(f"{ns}/{name} to be {phase}", check, timeout, every=0.5)

    def controller_pods(self, ns: str, release: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=controller"
        return self.core.list_namespaced_pod(ns, label_selector=selector).items


def running(pods: list[Any]) -> list[Any]:
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def get_health(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_controller_ready(api: Api, stack: Cluster, ns: str, release: str, port: int) -> Any:
    """The controller's pod serving health on ``port`` runs, is Ready, and (on kubestack,
    which does no probes) answers its liveness and readiness endpoints; returns the pod."""
    address = f"--health-address=0.0.0.0:{port}"

    def found() -> Any:
        pods = running(api.controller_pods(ns, release))
        return next((p for p in pods if ready(p) and address in p.spec.containers[0].args), None)

    pod = wait_for("the controller pod to be Ready", found, timeout=120)
    if on_kubestack(stack):
        assert wait_for("/healthz", lambda: get_health(port, "/healthz")[0] == 200, 60)
        assert wait_for("/readyz", lambda: get_health(port, "/readyz")[0] == 200, 60)
        assert "kubemr_controller" in get_health(port, "/metrics")[1]
    return pod


def pod_log(api: Api, pod: Any) -> str:
    return str(api.core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace))


def wait_gone(api: Api, ns: str, release: str) -> None:
    wait_for("the controller pods to go", lambda: not api.controller_pods(ns, release), 120)


def can_i(api: Api, account: str, *args: str) -> bool:
    out = kubectl(api.kubeconfig, "auth", "can-i", f"--as={account}", *args)
    assert out.stdout.strip() in ("yes", "no"), out.stdout + out.stderr
    return out.stdout.strip() == "yes"


def rules(api: Api, account: str, ns: str) -> dict[str, set[str]]:
    """What ``kubectl auth can-i --list`` says the account may do in ``ns``: resource ->
    verbs. Non-resource URLs may only be read (the discovery endpoints)."""
    out = kubectl(api.kubeconfig, "auth", "can-i", "--list", f"--as={account}", "-n", ns)
    assert out.returncode == 0, out.stderr
    found: dict[str, set[str]] = {}
    for line in out.stdout.splitlines()[1:]:
        resource = re.match(r"^(\S+)\s+\[\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        if resource:
            assert resource.group(2) == "", f"limited to names: {line}"
            found.setdefault(resource.group(1), set()).update(resource.group(3).split())
            continue
        url = re.match(r"^\s+\[(\S+)\]\s+\[\]\s+\[(.*?)\]\s*$", line)
        assert url, f"unexpected line: {line!r}"
        assert url.group(2) == "get", line
    return found


def expected(rights: tuple[Right, ...]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in rights:
        name = r.resource + (f".{r.group}" if r.group else "")
        name += f"/{r.subresource}" if r.subresource else ""
        found.setdefault(name, set()).add(r.verb)
    return found


def write_values(tmp_path: Any, values: Obj) -> str:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


# -- cluster-wide: the chart's default mode -------------------------------------------------------
@dataclass
class Release:
    name: str
    namespace: str
    health_port: int
    values: Obj

    @property
    def controller_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}-kubemr-controller"

    def worker_account(self, ns: str | None = None) -> str:
        return f"system:serviceaccount:{ns or self.namespace}:{self.name}-kubemr-worker"


@pytest.fixture(scope="module")
def api(stack: Cluster) -> Api:
    return Api(stack)


@pytest.fixture(scope="class")
def release(
    api: Api, helm: Helm, minio: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    ns = f"kubemr-{uuid.uuid4().hex[:6]}"
    port = free_port()
    values = {
        "controller": {"healthPort": port},
        # Every job's storage, unless it names its own: the Secret by name only.
        "storage": {"endpoint": minio.endpoint, "region": REGION, "secretName": SECRET},
    }
    path = write_values(tmp_path_factory.mktemp("values"), values)
    out = helm(
        "install", "mr", CHART, "--namespace", ns, "--create-namespace", "-f", path,
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kubemr 0.1.0 is installed in namespace" in out.stdout  # NOTES.txt
    try:
        yield Release("mr", ns, port, values)
    finally:
        helm("uninstall", "mr", "--namespace", ns, "--wait", "--timeout", "2m")
        api.delete_namespace(ns)


@pytest.fixture(scope="class")
def wordcount(api: Api, release: Release, minio: Any, stack: Cluster) -> Iterator[tuple[str, Obj]]:
    """A real word count on MinIO in a namespace of its own, run by the installed
    controller with the installation's storage defaults: the resource names no
    endpoint and no Secret."""
    ns = api.namespace("wc")
    bucket = f"wc-{uuid.uuid4().hex[:8]}"
    minio.make_bucket(bucket)
    s3 = minio.client()
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/{i}.txt", Body=b"a b c\nb c\nc\n" * 5)
    env = minio.env()
    api.core.create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        ),
    )
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": "wc"},
        "spec": {
            "inputs": [f"s3://{bucket}/in/*.txt"],
            "output": f"s3://{bucket}/out",
            "job": {"source": WORDCOUNT},
            "reducers": 2,
            # kubestack runs commands, not images: this Python, with kubemr.
            "template": {"command": [sys.executable, "-m", "kubemr"]},
        },
    }
    api.create_job(ns, body)
    status = api.wait_phase(ns, "wc", "Succeeded")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert "out/_SUCCESS" in keys
    counts: dict[str, int] = {}
    for key in keys:
        if "/part-" in key:
            for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines():
                word, n = json.loads(line)
                counts[word] = n
    assert counts == {"a": 15, "b": 30, "c": 45}
    assert status["plan"]["workUrl"].startswith(f"s3://{bucket}/_kubemr/")
    try:
        yield ns, status
    finally:
        api.delete_namespace(ns)


class TestClusterWide:
    def test_the_controller_runs_in_its_pod_and_is_ready(
        self, api: Api, stack: Cluster, release: Release
    ) -> None:
        pod = wait_controller_ready(
            api, stack, release.namespace, release.name, release.health_port
        )
        (container,) = pod.spec.containers
        assert container.command == ["kubemr"] and container.args[0] == "controller"
        assert pod.spec.service_account_name == "mr-kubemr-controller"
        deployment = api.apps.read_namespaced_deployment("mr-kubemr-controller", release.namespace)
        assert deployment.status.ready_replicas == 1
        log = pod_log(api, pod)
        # In-cluster configuration (no kubeconfig), every namespace, then the Lease.
        assert '"msg": "starting"' in log and "(all)" in log, log[-3000:]
        wait_for("the lease", lambda: "became leader" in pod_log(api, pod), timeout=60)
        assert "forbidden" not in log.lower() and "lacks rights" not in log, log[-3000:]

    def test_a_real_job_runs_with_the_installation_defaults(
        self, api: Api, release: Release, wordcount: tuple[str, Obj], minio: Any
    ) -> None:
        ns, status = wordcount
        assert [w["kind"] for w in status["waves"]] == ["plan", "map", "reduce", "commit"]
        spec = api.resource(ns, "wc")["spec"]
        assert "secretRef" not in (spec.get("storage") or {})  # the defaults filled it in
        pods = api.core.list_namespaced_pod(ns, label_selector=f"{LABEL_JOB}=wc").items
        assert pods
        for pod in pods:
            (worker,) = pod.spec.containers
            env = {e.name: e.value for e in worker.env or []}
            assert env["AWS_ENDPOINT_URL_S3"] == minio.endpoint
            assert env["AWS_REGION"] == REGION
            assert [s.secret_ref.name for s in worker.env_from] == [SECRET]
            assert worker.image == "ghcr.io/kubemr/kubemr:0.1.0"  # the controller's image
            assert pod.spec.automount_service_account_token is False

    def test_storage_credentials_never_leave_their_secret(
        self, api: Api, release: Release, wordcount: tuple[str, Obj], minio: Any
    ) -> None:
        ns, _ = wordcount
        env = minio.env()
        secrets = [env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"]]
        sanitize = api.core.api_client.sanitize_for_serialization
        (pod,) = running(api.controller_pods(release.namespace, release.name))
        places = {
            "the MapReduceJob and its status": json.dumps(api.resource(ns, "wc")),
            "the Events": json.dumps(sanitize(api.core.list_event_for_all_namespaces())),
            "the controller's log": pod_log(api, pod),
            "the stage Jobs": json.dumps(sanitize(api.batch.list_namespaced_job(ns))),
            "the worker pods": json.dumps(sanitize(api.core.list_namespaced_pod(ns))),
            "the ConfigMaps": json.dumps(
                sanitize(api.core.list_namespaced_config_map(release.namespace))
            ),
        }
        assert "became leader" in places["the controller's log"]
        for where, text in places.items():
            for secret in secrets:
                assert secret not in text, f"a storage credential is in {where}"

    def test_the_controller_may_do_exactly_what_it_needs(
        self, api: Api, release: Release, wordcount: tuple[str, Obj]
    ) -> None:
        ns, _ = wordcount
        account = release.controller_account
        assert rules(api, account, ns) == {**SELF_REVIEWS, **expected(RIGHTS)}
        assert rules(api, account, release.namespace) == {
            **SELF_REVIEWS,
            **expected(RIGHTS),
            **expected(LEASE_RIGHTS),  # the Lease, in its own namespace only
        }
        for right in RIGHTS:  # cluster-wide: it watches every namespace
            what = right.resource + (f".{right.group}" if right.group else "")
            sub = [f"--subresource={right.subresource}"] if right.subresource else []
            assert can_i(api, account, right.verb, what, *sub, "--all-namespaces"), right
        refused = [
            ("get", "secrets"),
            ("list", "secrets"),
            ("watch", "secrets"),
            ("create", "pods"),
            ("delete", "pods"),
            ("create", "pods", "--subresource=exec"),
            ("get", "pods", "--subresource=log"),
            ("update", "configmaps"),
            ("delete", "jobs.batch"),
            ("update", "mapreducejobs.kubemr.dev"),
            ("create", "mapreducejobs.kubemr.dev"),
            ("create", "serviceaccounts", "--subresource=token"),
            ("impersonate", "serviceaccounts"),
            ("update", "leases.coordination.k8s.io"),  # outside its namespace
        ]
        for args in refused:
            assert not can_i(api, account, *args, "-n", ns), args
            assert not can_i(api, account, *args, "--all-namespaces"), args
        for args in [
            ("create", "namespaces"),
            ("patch", "nodes"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
            ("bind", "clusterroles.rbac.authorization.k8s.io"),
            ("escalate", "roles.rbac.authorization.k8s.io"),
            ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ]:
            assert not can_i(api, account, *args), args

    def test_the_worker_account_may_do_nothing(
        self, api: Api, release: Release, wordcount: tuple[str, Obj]
    ) -> None:
        ns, _ = wordcount
        account = release.worker_account()
        sa = api.core.read_namespaced_service_account("mr-kubemr-worker", release.namespace)
        assert sa.automount_service_account_token is False
        for where in (release.namespace, ns):
            assert rules(api, account, where) == SELF_REVIEWS
        for verb, what in [
            ("get", "secrets"),
            ("list", "pods"),
            ("list", "mapreducejobs.kubemr.dev"),
            ("create", "events"),
        ]:
            assert not can_i(api, account, verb, what, "--all-namespaces")

    def test_uninstall_leaves_no_controller_running(
        self, api: Api, stack: Cluster, helm: Helm, release: Release, wordcount: tuple[str, Obj]
    ) -> None:
        ns, _ = wordcount
        out = helm("uninstall", release.name, "--namespace", release.namespace, "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_gone(api, release.namespace, release.name)
        if on_kubestack(stack):
            wait_for("the health port to close", lambda: port_is_free(release.health_port), 30)
        assert not api.rbac.list_cluster_role_binding(
            label_selector=f"app.kubernetes.io/instance={release.name}"
        ).items
        # Helm never deletes what crds/ installed, so the jobs outlive the controller.
        api.ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        assert api.resource(ns, "wc")["status"]["phase"] == "Succeeded"


# -- manifests/ ---------------------------------------------------------------------------------
class TestManifests:
    def test_kubectl_apply_of_manifests_runs_a_working_controller(
        self, api: Api, stack: Cluster, fake_worker: str, tmp_path: Any
    ) -> None:
        out = kubectl(stack.kubeconfig, "apply", "-f", MANIFESTS)
        assert out.returncode == 0, out.stdout + out.stderr
        port = 8081  # manifests/controller.yaml's
        try:
            if on_kubestack(stack) and not port_is_free(port):
                # Pods share this machine's network, where something else has 8081.
                port = free_port()
                deployment = api.apps.read_namespaced_deployment(
                    "kubemr-controller", "kubemr-system"
                )
                args = deployment.spec.template.spec.containers[0].args
                (index,) = [i for i, a in enumerate(args) if a.startswith("--health-address=")]
                patch = [
                    {"op": "replace", "path": f"/spec/template/spec/containers/0/args/{index}",
                     "value": f"--health-address=0.0.0.0:{port}"},
                ]  # fmt: skip
                out = kubectl(
                    stack.kubeconfig, "-n", "kubemr-system", "patch", "deployment",
                    "kubemr-controller", "--type=json", f"-p={json.dumps(patch)}",
                )  # fmt: skip
                assert out.returncode == 0, out.stderr
            pod = wait_controller_ready(api, stack, "kubemr-system", "kubemr", port)
            assert pod.spec.containers[0].command == ["kubemr"]
            ns = api.namespace("plain")
            try:
                api.create_job(ns, fake_job("quick", fake_worker, tmp_path, maps=2))
                api.wait_phase(ns, "quick", "Succeeded", timeout=180)
            finally:
                api.delete_namespace(ns)
            log = pod_log(api, pod)
            assert "forbidden" not in log.lower() and "lacks rights" not in log, log[-3000:]
        finally:
            # The documented uninstall; the namespace is in both files.
            out = kubectl(
                stack.kubeconfig, "delete", "--ignore-not-found", "--wait=false",
                "-f", os.path.join(MANIFESTS, "controller.yaml"),
                "-f", os.path.join(MANIFESTS, "rbac.yaml"),
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
        wait_gone(api, "kubemr-system", "kubemr")
        namespaces = api.core.list_namespace
        wait_for(
            "kubemr-system to go",
            lambda: "kubemr-system" not in {n.metadata.name for n in namespaces().items},
            timeout=120,
        )


# -- namespaced -----------------------------------------------------------------------------------
@pytest.fixture(scope="class")
def namespaced(
    api: Api, helm: Helm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Release, list[str], str]]:
    watched = [api.namespace("team-a"), api.namespace("team-b")]
    other = api.namespace("other")
    ns = f"kubemr-{uuid.uuid4().hex[:6]}"
    port = free_port()
    values = {"controller": {"healthPort": port}, "watchNamespaces": watched}
    path = write_values(tmp_path_factory.mktemp("values"), values)
    out = helm(
        "install", "mrn", CHART, "--namespace", ns, "--create-namespace", "-f", path,
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield Release("mrn", ns, port, values), watched, other
    finally:
        helm("uninstall", "mrn", "--namespace", ns, "--wait", "--timeout", "2m")
        for name in [*watched, other, ns]:
            api.delete_namespace(name)


class TestNamespaced:
    def test_the_controller_runs_only_the_jobs_of_its_namespaces(
        self,
        api: Api,
        stack: Cluster,
        namespaced: tuple[Release, list[str], str],
        fake_worker: str,
        tmp_path: Any,
    ) -> None:
        release, watched, other = namespaced
        pod = wait_controller_ready(api, stack, release.namespace, "mrn", release.health_port)
        args = pod.spec.containers[0].args
        assert [a for a in args if a.startswith("--namespace=")] == [
            f"--namespace={n}" for n in watched
        ]
        for n in [other, *watched]:
            (tmp_path / n).mkdir()
        api.create_job(other, fake_job("ignored", fake_worker, tmp_path / other, maps=1))
        for n in watched:
            api.create_job(n, fake_job("quick", fake_worker, tmp_path / n, maps=1))
        for n in watched:
            api.wait_phase(n, "quick", "Succeeded", timeout=180)
            # Worker pods run as the release's worker account, the namespaced default.
            pods = api.core.list_namespaced_pod(n, label_selector=f"{LABEL_JOB}=quick").items
            assert {p.spec.service_account_name for p in pods} == {"mrn-kubemr-worker"}
        time.sleep(3)  # the other namespace's job had as long, and more
        assert "status" not in api.resource(other, "ignored")
        assert not api.batch.list_namespaced_job(other).items
        log = pod_log(api, pod)
        assert "forbidden" not in log.lower() and "lacks rights" not in log, log[-3000:]

    def test_its_rights_are_in_its_namespaces_only(
        self, api: Api, namespaced: tuple[Release, list[str], str]
    ) -> None:
        release, watched, other = namespaced
        account = release.controller_account
        for n in watched:
            assert rules(api, account, n) == {**SELF_REVIEWS, **expected(RIGHTS)}
        assert rules(api, account, other) == SELF_REVIEWS
        assert rules(api, account, release.namespace) == {
            **SELF_REVIEWS,
            **expected(LEASE_RIGHTS),
        }
        for verb, what in [("list", "mapreducejobs.kubemr.dev"), ("watch", "pods")]:
            assert not can_i(api, account, verb, what, "--all-namespaces")
            assert not can_i(api, account, verb, what, "-n", other)
        # Nothing of the release is cluster-wide.
        selector = "app.kubernetes.io/instance=mrn"
        assert not api.rbac.list_cluster_role(label_selector=selector).items
        assert not api.rbac.list_cluster_role_binding(label_selector=selector).items
        for binding in api.rbac.list_cluster_role_binding().items:
            for subject in binding.subjects or []:
                assert subject.namespace != release.namespace, binding.metadata.name
        for n in [*watched, release.namespace]:
            sa = api.core.read_namespaced_service_account("mrn-kubemr-worker", n)
            assert sa.automount_service_account_token is False
            assert rules(api, release.worker_account(n), n) == SELF_REVIEWS
