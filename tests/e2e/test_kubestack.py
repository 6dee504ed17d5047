"""Smoke tests of the kubestack cluster: real API server, Job controller and scheduler,
and a node that runs pods as local processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.e2e


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def ns(kube) -> Any:
    api = client.CoreV1Api(kube.api_client())
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for("default service account", lambda: _has_sa(api, name))
    yield name
    api.delete_namespace(name)


def _has_sa(api: Any, ns: str) -> bool:
    try:
        api.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException:
        return False


def indexed_job(name: str, code: str, completions: int, parallelism: int, **spec: Any) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimit": 6,
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored",
                            "command": [sys.executable, "-c", code],
                        }
                    ],
                }
            },
        },
    }


def job_status(batch: Any, ns: str, name: str) -> Any:
    return batch.read_namespaced_job_status(name, ns).status


def finished(batch: Any, ns: str, name: str) -> Any:
    status = job_status(batch, ns, name)
    for cond in status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def test_node_is_ready(kube) -> None:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kube.kubeconfig, "get", "nodes", "--no-headers"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert " Ready " in out.stdout
    nodes = client.CoreV1Api(kube.api_client()).list_node().items
    ready = [c.status for n in nodes for c in n.status.conditions if c.type == "Ready"]
    assert ready and all(s == "True" for s in ready)


def test_indexed_job_runs_each_index_once_within_parallelism(kube, ns) -> None:
    api = kube.api_client()
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    code = "import os, time; print('index', os.environ['JOB_COMPLETION_INDEX']); time.sleep(1.5)"
    batch.create_namespaced_job(ns, indexed_job("five", code, completions=5, parallelism=2))
    most_running = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and finished(batch, ns, "five") is None:
        pods = core.list_namespaced_pod(ns, label_selector="job-name=five").items
        most_running = max(most_running, sum(p.status.phase == "Running" for p in pods))
        time.sleep(0.2)
    assert finished(batch, ns, "five") == "Complete"
    assert 1 <= most_running <= 2
    pods = core.list_namespaced_pod(ns, label_selector="job-name=five").items
    seen = set()
    for pod in pods:
        if pod.status.phase == "Succeeded":
            log = core.read_namespaced_pod_log(pod.metadata.name, ns)
            index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"]
            assert log.strip() == f"index {index}"
            seen.add(index)
    assert seen == {"0", "1", "2", "3", "4"}


def test_backoff_limit_per_index_fails_only_the_bad_index(kube, ns) -> None:
    batch = client.BatchV1Api(kube.api_client())
    code = "import os, sys; sys.exit(1 if os.environ['JOB_COMPLETION_INDEX'] == '2' else 0)"
    job = indexed_job("perindex", code, completions=4, parallelism=4, backoffLimitPerIndex=1)
    batch.create_namespaced_job(ns, job)
    assert wait_for("job end", lambda: finished(batch, ns, "perindex"), 240) == "Failed"
    status = job_status(batch, ns, "perindex")
    assert status.failed_indexes == "2"
    assert status.completed_indexes == "0,1,3"
    assert status.failed == 2  # the first attempt and one retry


def test_pod_failure_policy_fail_index_on_exit_code(kube, ns) -> None:
    batch = client.BatchV1Api(kube.api_client())
    code = "import os, sys; sys.exit(42 if os.environ['JOB_COMPLETION_INDEX'] == '1' else 0)"
    job = indexed_job(
        "policy", code, completions=3, parallelism=3, backoffLimitPerIndex=3,
        podFailurePolicy={"rules": [
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}
        ]},
    )  # fmt: skip
    batch.create_namespaced_job(ns, job)
    assert wait_for("job end", lambda: finished(batch, ns, "policy"), 240) == "Failed"
    status = job_status(batch, ns, "policy")
    assert status.failed_indexes == "1"
    assert status.failed == 1  # no retry for the user error


def test_deleting_a_job_kills_its_processes(kube, ns, tmp_path) -> None:
    api = kube.api_client()
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    batch.create_namespaced_job(ns, indexed_job("sleeper", code, completions=1, parallelism=1))
    wait_for("the process", lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # alive
    batch.delete_namespaced_job("sleeper", ns, propagation_policy="Foreground")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for("the process to end", gone, 60)
    wait_for(
        "the pods to go",
        lambda: not core.list_namespaced_pod(ns, label_selector="job-name=sleeper").items,
        60,
    )


def test_pod_larger_than_the_node_stays_pending(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "huge"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "ignored",
                    "command": [sys.executable, "-c", "pass"],
                    "resources": {"requests": {"cpu": "64"}},
                }
            ]
        },
    }
    core.create_namespaced_pod(ns, pod)

    def unschedulable() -> Any:
        status = core.read_namespaced_pod("huge", ns).status
        for cond in status.conditions or []:
            if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
                return cond
        return None

    cond = wait_for("the scheduler's verdict", unschedulable, 60)
    assert "Insufficient cpu" in cond.message
    assert core.read_namespaced_pod("huge", ns).status.phase == "Pending"
