"""What the end-to-end tests of the controller and of the command line share: kubectl,
bounded waits, the installation (manifests/crd.yaml and manifests/rbac.yaml applied with
kubectl), ``kubemr controller`` as a subprocess under its ServiceAccount's token, a fresh
namespace per test, and :class:`Cluster`, what the tests read and write as the admin.

A test module makes the fixtures its own by name (pytest finds fixtures among a module's
globals)::

    globals().update({name: getattr(support, name) for name in support.FIXTURES})
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from kubemr.crd import CRD_NAME
from kubemr.executors.k8s.manifests import GROUP, LABEL_JOB, LABEL_STAGE, PLURAL, VERSION
from tests.support import ROOT, free_port

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
SYSTEM_NS = "kubemr-system"
SERVICE_ACCOUNT = "kubemr-controller"

Obj = dict[str, Any]

FIXTURES = ("installed", "controller_kubeconfig", "start_controller", "controller", "ns", "cluster")
"""The fixtures a module takes from here."""


# -- waiting ----------------------------------------------------------------------------------
def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None, timeout: float = 120) -> Any:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the installation -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(kube: Any) -> None:
    """The CRD and the controller's RBAC, applied from manifests/ as a user would."""
    crd = os.path.join(ROOT, "manifests", "crd.yaml")
    out = kubectl(kube.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", crd)
    assert out.returncode == 0, out.stderr
    out = kubectl(kube.kubeconfig, "apply", "-f", os.path.join(ROOT, "manifests", "rbac.yaml"))
    assert out.returncode == 0, out.stderr
    out = kubectl(
        kube.kubeconfig, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s"
    )
    assert out.returncode == 0, out.stderr


def token_kubeconfig(
    admin_kubeconfig: str, account: str, namespace: str, path: str, *, context_namespace: str = ""
) -> str:
    """Write at ``path`` a kubeconfig for the cluster of ``admin_kubeconfig`` that holds a
    token of ServiceAccount ``namespace/account`` (TokenRequest), and return the path."""
    out = kubectl(admin_kubeconfig, "create", "token", account, "-n", namespace, "--duration=2h")
    assert out.returncode == 0, out.stderr
    with open(admin_kubeconfig) as fh:
        admin = yaml.safe_load(fh)
    context = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"])
    if "certificate-authority" in cluster:
        with open(cluster.pop("certificate-authority"), "rb") as fh:
            cluster["certificate-authority-data"] = base64.b64encode(fh.read()).decode()
    user_context: Obj = {"cluster": "kubestack", "user": account}
    if context_namespace:
        user_context["namespace"] = context_namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubestack", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": out.stdout.strip()}}],
        "contexts": [{"name": account, "context": user_context}],
        "current-context": account,
    }
    with open(path, "w") as fh:
        yaml.safe_dump(config, fh)
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def controller_kubeconfig(kube: Any, installed: None, tmp_path_factory: Any) -> str:
    """A kubeconfig holding a token of the controller's ServiceAccount (TokenRequest)."""
    path = str(tmp_path_factory.mktemp("controller") / "kubeconfig")
    return token_kubeconfig(kube.kubeconfig, SERVICE_ACCOUNT, SYSTEM_NS, path)


class ControllerProcess:
    """``python -m kubemr controller`` as a subprocess, its log in a file."""

    def __init__(self, kubeconfig: str, log_path: str, *args: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "kubemr", "controller",
                "--kubeconfig", self.kubeconfig,
                "--health-address", f"127.0.0.1:{self.health_port}",
                "--log-format", "text",
                *self.args,
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no lease release, no draining, as a crashed or evicted pod."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()


@pytest.fixture
def start_controller(controller_kubeconfig: str, tmp_path: Any) -> Iterator[Callable[..., Any]]:
    started: list[ControllerProcess] = []

    def start(*args: str) -> ControllerProcess:
        log = str(tmp_path / f"controller-{len(started)}.log")
        proc = ControllerProcess(controller_kubeconfig, log, *args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
    for proc in started:
        text = proc.log()
        # Every request it made was allowed by manifests/rbac.yaml.
        assert "forbidden" not in text.lower(), text[-3000:]
        assert "lacks rights" not in text, text[-3000:]


@pytest.fixture
def controller(start_controller: Callable[..., ControllerProcess]) -> ControllerProcess:
    return start_controller()


@contextmanager
def new_namespace(kube: Any, prefix: str) -> Iterator[str]:
    """A namespace of its own (``<prefix>-<random>``), deleted afterwards."""
    core = client.CoreV1Api(kube.api_client())
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@contextmanager
def running_controller(controller_kubeconfig: str, log_dir: Any) -> Iterator[ControllerProcess]:
    """A controller for a module's jobs; stopped afterwards, having been refused nothing."""
    proc = ControllerProcess(controller_kubeconfig, str(log_dir / "controller.log")).start()
    yield proc
    proc.stop()
    # Every request it made was allowed by manifests/rbac.yaml.
    assert "forbidden" not in proc.log().lower(), proc.log()[-3000:]


@pytest.fixture
def ns(kube: Any, installed: None) -> Iterator[str]:
    with new_namespace(kube, "mr") as name:
        yield name


# -- resources --------------------------------------------------------------------------------
class Cluster:
    """What the tests read and write, as the admin."""

    def __init__(self, kube: Any, ns: str) -> None:
        api_client = kube.api_client()
        self.kubeconfig = kube.kubeconfig
        self.ns = ns
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def create(self, body: Obj) -> Obj:
        made = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        return cast(Obj, made)

    def get(self, name: str) -> Obj:
        got = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return cast(Obj, got)

    def status(self, name: str) -> Obj:
        return self.get(name).get("status") or {}

    def patch_spec(self, name: str, spec: Obj) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def jobs(self, name: str) -> list[Any]:
        return self.batch.list_namespaced_job(self.ns, label_selector=f"{LABEL_JOB}={name}").items

    def pods(self, name: str, stage: str | None = None) -> list[Any]:
        selector = f"{LABEL_JOB}={name}" + (f",{LABEL_STAGE}={stage}" if stage else "")
        return self.core.list_namespaced_pod(self.ns, label_selector=selector).items

    def events(self, name: str) -> list[Any]:
        return [
            e
            for e in self.core.list_namespaced_event(self.ns).items
            if e.involved_object.kind == "MapReduceJob" and e.involved_object.name == name
        ]

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def condition(self, name: str, kind: str) -> Obj | None:
        for cond in self.status(name).get("conditions") or []:
            if cond["type"] == kind:
                return cond
        return None

    def wait_phase(self, name: str, phase: str, timeout: float = 90) -> Obj:
        def check() -> Obj | None:
            status = self.status(name)
            if status.get("phase") in ("Failed", "Succeeded") and status["phase"] != phase:
                raise AssertionError(f"{name} ended {status['phase']}: {status}")
            return status if status.get("phase") == phase else None

        return wait_for(f"{name} to be {phase}", check, timeout)


@pytest.fixture
def cluster(kube: Any, ns: str) -> Cluster:
    return Cluster(kube, ns)
