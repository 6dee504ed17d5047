"""Smoke tests of the kubestack cluster: real API server, Job controller and scheduler,
and a node that runs pods as local processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_api_server_reports_the_kubernetes_release_it_is_built_from(kube) -> None:
    """As a release does: tools such as Helm check it against a chart's kubeVersion."""
    with open(os.path.join(ROOT, "tools", "kubestack", "go.mod")) as fh:
        built_from = next(
            line.split()[1] for line in fh if line.strip().startswith("k8s.io/kubernetes v")
        )
    info = client.VersionApi(kube.api_client()).get_code()
    assert info.git_version == built_from
    assert (info.major, info.minor) == tuple(built_from[1:].split(".")[:2])


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


def host_pids(marker: str) -> list[int]:
    """The host PIDs of the processes whose command line holds ``marker`` (a pod's own
    PIDs are those of its PID namespace)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                zombie = fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if marker.encode() in cmdline and not zombie:
            pids.append(int(entry))
    return pids


def test_deleting_a_job_kills_its_processes(kube, ns) -> None:
    if kube.stack is None:
        pytest.skip("needs the kubestack node: it looks for the pod's process on this host")
    api = kube.api_client()
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    marker = f"sleeper-{uuid.uuid4().hex}"
    code = f"import time; time.sleep(600)  # {marker}"
    batch.create_namespaced_job(ns, indexed_job("sleeper", code, completions=1, parallelism=1))
    wait_for("the process", lambda: host_pids(marker))
    batch.delete_namespaced_job("sleeper", ns, propagation_policy="Foreground")
    wait_for("the process to end", lambda: not host_pids(marker), 60)
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


# -- what the node gives a pod ---------------------------------------------------------


def pod_manifest(name: str, code: str, **spec: Any) -> dict:
    container = {
        "name": "main",
        "image": "ignored",
        "command": [sys.executable, "-c", code],
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            **spec,
        },
    }


def run_pod(core: Any, ns: str, name: str, code: str, **spec: Any) -> tuple[Any, str]:
    """Runs a pod to its end; returns its final state (the container's terminated
    state) and its log."""
    core.create_namespaced_pod(ns, pod_manifest(name, code, **spec))

    def ended() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        if pod.status.phase in ("Succeeded", "Failed") and pod.status.container_statuses:
            return pod.status.container_statuses[0].state.terminated
        return None

    terminated = wait_for(f"pod {name} to end", ended, 120)
    return terminated, core.read_namespaced_pod_log(name, ns)


def parse_json_log(terminated: Any, log: str) -> Any:
    assert terminated.exit_code == 0, (terminated, log)
    return json.loads(log.strip().splitlines()[-1])


DUMP_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


def value_from(name: str, **source: Any) -> dict:
    return {"name": name, "valueFrom": source}


def test_pod_environment_is_only_its_own(kube, ns) -> None:
    """The container's env, with secretKeyRef, configMapKeyRef, fieldRef and
    resourceFieldRef resolved, envFrom, the API server's address, HOSTNAME, HOME and
    PATH; nothing else from the node's environment."""
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret", "user": "ann"}}
    )
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "settings"}, "data": {"LEVEL": "debug", "mode": "fast"}}
    )
    container = {
        "env": [
            {"name": "PLAIN", "value": "plain"},
            {"name": "EXPANDED", "value": "$(PLAIN)-x"},
            value_from("FROM_SECRET", secretKeyRef={"name": "creds", "key": "token"}),
            value_from("FROM_CM", configMapKeyRef={"name": "settings", "key": "mode"}),
            value_from("POD_NAME", fieldRef={"fieldPath": "metadata.name"}),
            value_from("POD_NS", fieldRef={"fieldPath": "metadata.namespace"}),
            value_from("MEM_LIMIT", resourceFieldRef={"resource": "limits.memory"}),
        ],
        "envFrom": [
            {"secretRef": {"name": "creds"}, "prefix": "S_"},
            {"configMapRef": {"name": "settings"}},
        ],
        "resources": {"limits": {"memory": "1Gi"}},
    }  # fmt: skip
    terminated, log = run_pod(core, ns, "env", DUMP_ENV, container=container)
    env = parse_json_log(terminated, log)
    expected = {
        "PLAIN": "plain",
        "EXPANDED": "plain-x",
        "FROM_SECRET": "s3cret",
        "FROM_CM": "fast",
        "POD_NAME": "env",
        "POD_NS": ns,
        "MEM_LIMIT": str(2**30),
        "S_token": "s3cret",
        "S_user": "ann",
        "LEVEL": "debug",
        "mode": "fast",
        "HOSTNAME": "env",
    }
    if kube.stack is not None:
        # No kube-proxy: pods reach the API server at its own address.
        port = kube.stack.server.rsplit(":", 1)[1]
        expected.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=port)
    assert {k: env.get(k) for k in expected} == expected
    assert os.path.isdir(env["HOME"]) and env["HOME"] != os.environ.get("HOME")
    assert env["PATH"]
    # Nothing else: the rest of the kubelet's Service variables, and what Python's own
    # C-locale coercion adds.
    rest = set(env) - set(expected) - {"HOME", "PATH", "LC_CTYPE"}
    assert all(k.startswith("KUBERNETES_") for k in rest), rest
    if kube.stack is not None:
        # The node's own environment (the test runner's) does not leak into pods.
        with open(f"/proc/{kube.stack.procs['node'].pid}/environ", "rb") as fh:
            node_env = dict(
                item.decode().split("=", 1) for item in fh.read().split(b"\0") if b"=" in item
            )
        assert "PYTEST_CURRENT_TEST" in node_env
        own = {"PATH", "HOME", "HOSTNAME", "LC_CTYPE"}  # LC_CTYPE: see above
        leaked = {k for k in node_env if k in env and k not in own}
        assert not leaked


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

CALL_API_WITH_TOKEN = f"""
import base64, json, os, ssl, urllib.error, urllib.request
# KUBESTACK_ROOT: set by a node that cannot give pods a mount namespace.
root = os.environ.get("KUBESTACK_ROOT", "")
sa = root + {SA_DIR!r}
token = open(sa + "/token").read()
namespace = open(sa + "/namespace").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")  # verifies the host name too
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
url = f"https://{{host}}:{{port}}/api/v1/namespaces/{{namespace}}/pods"
req = urllib.request.Request(url, headers={{"Authorization": "Bearer " + token}})
try:
    urllib.request.urlopen(req, context=ctx)
    code, body = 200, {{}}
except urllib.error.HTTPError as e:
    code, body = e.code, json.loads(e.read())
claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
from kubernetes import client, config
if root:
    from kubernetes.config.incluster_config import InClusterConfigLoader
    InClusterConfigLoader(sa + "/token", sa + "/ca.crt").load_and_set()
else:
    config.load_incluster_config()
try:
    client.CoreV1Api().list_namespaced_pod(namespace)
    client_status = 200
except client.ApiException as e:
    client_status = e.status
print(json.dumps({{"code": code, "body": body, "claims": claims, "namespace": namespace,
                  "client_status": client_status}}))
"""


def test_service_account_token_authenticates_the_pod(kube, ns) -> None:
    """The projected kube-api-access volume: a token bound to the pod, the CA that
    signed the API server's certificate, the namespace. The default service account
    may not list pods: 403, not 401, proves that the token authenticated."""
    core = client.CoreV1Api(kube.api_client())
    terminated, log = run_pod(core, ns, "sa", CALL_API_WITH_TOKEN)
    out = parse_json_log(terminated, log)
    assert out["namespace"] == ns
    assert out["code"] == 403, out
    assert out["body"]["reason"] == "Forbidden"
    assert f"system:serviceaccount:{ns}:default" in out["body"]["message"]
    assert out["client_status"] == 403
    bound = out["claims"]["kubernetes.io"]
    assert bound["namespace"] == ns and bound["pod"]["name"] == "sa"


def test_no_token_without_automount(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    code = f"import json, os; print(json.dumps(os.path.exists({SA_DIR!r})))"
    terminated, log = run_pod(core, ns, "nosa", code, automountServiceAccountToken=False)
    assert parse_json_log(terminated, log) is False


def test_termination_message_from_the_file(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    code = (
        "import json\n"
        "with open('/dev/termination-log', 'w') as fh:\n"
        "    json.dump({'records': 42, 'ok': True}, fh)\n"
    )
    terminated, _ = run_pod(core, ns, "msg", code)
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    assert json.loads(terminated.message) == {"records": 42, "ok": True}
    assert not os.path.exists("/dev/termination-log")  # the host's /dev is untouched


def test_termination_message_keeps_the_last_4096_bytes_at_a_custom_path(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    path = f"/tmp/kubestack-msg-{uuid.uuid4().hex[:8]}/termination.txt"
    code = f"import sys; open({path!r}, 'w').write('x' * 5000 + 'END'); sys.exit(3)"
    container = {"terminationMessagePath": path}
    terminated, _ = run_pod(core, ns, "longmsg", code, container=container)
    assert terminated.exit_code == 3 and terminated.reason == "Error"
    assert len(terminated.message) == 4096 and terminated.message.endswith("xEND")
    assert not os.path.exists(os.path.dirname(path))  # made in the pod's mounts only


def test_termination_message_falls_back_to_the_log_on_error(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    code = "import sys\nfor i in range(100): print('line', i)\nsys.exit(2)"
    container = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    terminated, _ = run_pod(core, ns, "fallback", code, container=container)
    assert terminated.exit_code == 2
    lines = terminated.message.strip().splitlines()
    assert lines == [f"line {i}" for i in range(20, 100)]  # the last 80


def test_no_log_fallback_on_success(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    container = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    terminated, log = run_pod(core, ns, "quiet", "print('hello')", container=container)
    assert terminated.exit_code == 0 and log.strip() == "hello"
    assert not terminated.message


READ_VOLUMES = """
import json, os
out = {}
for root in ("/etc/creds", "/etc/settings", "/etc/podinfo"):
    out[root] = {n: open(os.path.join(root, n)).read() for n in sorted(os.listdir(root))
                 if not n.startswith(".")}
out["modes"] = {n: oct(os.stat(os.path.join("/etc/creds", n)).st_mode & 0o777)
                for n in os.listdir("/etc/creds")}
def writable(path):
    try:
        with open(os.path.join(path, "probe"), "w") as fh:
            fh.write("x")
        return True
    except OSError:
        return False
out["writable"] = {p: writable(p) for p in ("/etc/creds", "/etc/settings", "/scratch/a/b",
                                            "/mem")}
out["mem_fs"] = [l.split()[2] for l in open("/proc/self/mounts") if l.split()[1] == "/mem"]
out["etc_hosts"] = os.path.exists("/etc/hosts")
print(json.dumps(out))
"""


def test_secret_config_map_downward_and_empty_dir_volumes(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "creds"}, "stringData": {"user": "ann", "password": "pw"}}
    )
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "settings"}, "data": {"a.conf": "A", "b.conf": "B"}}
    )
    volumes = [
        {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                     "items": [{"key": "password", "path": "pass"}]}},
        {"name": "settings", "configMap": {"name": "settings"}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        ]}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]  # fmt: skip
    mounts = [
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "settings", "mountPath": "/etc/settings", "readOnly": True},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
        {"name": "scratch", "mountPath": "/scratch/a/b"},
        {"name": "mem", "mountPath": "/mem"},
    ]
    terminated, log = run_pod(
        core, ns, "vols", READ_VOLUMES, volumes=volumes, container={"volumeMounts": mounts}
    )
    out = parse_json_log(terminated, log)
    assert out["/etc/creds"] == {"pass": "pw"}
    assert out["modes"] == {"pass": "0o400"}
    assert out["/etc/settings"] == {"a.conf": "A", "b.conf": "B"}
    assert out["/etc/podinfo"] == {"labels": 'app="vols"', "name": "vols"}
    # Secrets, config maps and the downward API are read-only, as the kubelet mounts them.
    assert out["writable"] == {
        "/etc/creds": False,
        "/etc/settings": False,
        "/scratch/a/b": True,
        "/mem": True,
    }
    assert out["mem_fs"] == ["tmpfs"]
    assert out["etc_hosts"]  # the rest of the host's files are still there
    for path in ("/etc/creds", "/etc/settings", "/etc/podinfo", "/scratch", "/mem"):
        assert not os.path.exists(path), path  # nothing made on the host


def test_an_empty_dir_over_the_nodes_state_hides_no_other_volume(kube, ns) -> None:
    """An emptyDir mounted over a directory that holds the node's state (as one at /tmp
    does when the state is under /tmp) must not hide the sources of the other volumes
    nor the directory where missing mount points are staged."""
    if kube.stack is None:
        pytest.skip("needs kubestack's own state directory")
    hidden = os.path.dirname(os.path.realpath(kube.stack.state))
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_config_map(ns, {"metadata": {"name": "conf"}, "data": {"k": "v"}})
    volumes = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "conf", "configMap": {"name": "conf"}},
        {"name": "inner", "emptyDir": {}},
    ]
    mounts = [
        {"name": "tmp", "mountPath": hidden},
        {"name": "conf", "mountPath": "/etc/kubemr-test-conf", "readOnly": True},
        {"name": "inner", "mountPath": f"{hidden}/inner"},
    ]
    code = (
        "import json, os\n"
        f"hidden = {hidden!r}\n"
        "open(os.path.join(hidden, 'inner', 'x'), 'w').write('1')\n"
        "print(json.dumps({'conf': open('/etc/kubemr-test-conf/k').read(),\n"
        "                  'tmp': sorted(os.listdir(hidden))}))\n"
    )
    terminated, log = run_pod(
        core, ns, "tmpfirst", code, volumes=volumes, container={"volumeMounts": mounts}
    )
    out = parse_json_log(terminated, log)
    assert out == {"conf": "v", "tmp": ["inner"]}
    assert not os.path.exists("/etc/kubemr-test-conf")


def test_missing_secret_volume_waits_for_the_secret(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    volumes = [{"name": "late", "secret": {"secretName": "late"}}]
    mounts = [{"name": "late", "mountPath": "/etc/late"}]
    code = "print(open('/etc/late/key').read())"
    core.create_namespaced_pod(
        ns, pod_manifest("late", code, volumes=volumes, container={"volumeMounts": mounts})
    )

    def waiting() -> Any:
        statuses = core.read_namespaced_pod("late", ns).status.container_statuses or []
        state = statuses[0].state if statuses else None
        return state and state.waiting and "late" in (state.waiting.message or "")

    wait_for("the pod to wait for its secret", waiting, 60)
    assert core.read_namespaced_pod("late", ns).status.phase == "Pending"
    core.create_namespaced_secret(ns, {"metadata": {"name": "late"}, "stringData": {"key": "v"}})
    wait_for(
        "the pod to succeed",
        lambda: core.read_namespaced_pod("late", ns).status.phase == "Succeeded",
        60,
    )
    assert core.read_namespaced_pod_log("late", ns).strip() == "v"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"envFrom": [{"secretRef": {"name": "absent"}}]}, 'secret "absent" not found'),
        (
            {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]},
            'secret "absent" not found',
        ),
        (
            {
                "env": [
                    {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}
                ]
            },
            'configmap "absent" not found',
        ),
    ],
    ids=["envFrom", "secretKeyRef", "configMapKeyRef"],
)
def test_missing_env_source_is_a_config_error_until_it_appears(
    kube, ns, env: dict, message: str
) -> None:
    """As with a kubelet: CreateContainerConfigError naming what is missing, and the pod
    starts once it exists."""
    core = client.CoreV1Api(kube.api_client())
    code = "import os; print(os.environ.get('k') or os.environ.get('K'))"
    core.create_namespaced_pod(ns, pod_manifest("envless", code, container=env))

    def config_error() -> Any:
        statuses = core.read_namespaced_pod("envless", ns).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting and waiting.reason == "CreateContainerConfigError" and waiting.message

    assert wait_for("CreateContainerConfigError", config_error, 30) == message
    assert core.read_namespaced_pod("envless", ns).status.phase == "Pending"
    if "configmap" in message:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "absent"}, "data": {"k": "v"}})
    else:
        core.create_namespaced_secret(
            ns, {"metadata": {"name": "absent"}, "stringData": {"k": "v"}}
        )
    wait_for(
        "the pod to succeed",
        lambda: core.read_namespaced_pod("envless", ns).status.phase == "Succeeded",
        90,
    )
    assert core.read_namespaced_pod_log("envless", ns).strip() == "v"


def test_missing_key_of_a_secret_is_named(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_secret(ns, {"metadata": {"name": "partial"}, "stringData": {"a": "1"}})
    env = {"env": [{"name": "B", "valueFrom": {"secretKeyRef": {"name": "partial", "key": "b"}}}]}
    core.create_namespaced_pod(ns, pod_manifest("keyless", "print(1)", container=env))

    def config_error() -> Any:
        statuses = core.read_namespaced_pod("keyless", ns).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting and waiting.reason == "CreateContainerConfigError" and waiting.message

    assert wait_for("CreateContainerConfigError", config_error, 30) == (
        f"couldn't find key b in Secret {ns}/partial"
    )


def test_pod_sees_its_own_pids_and_resolvable_host_name(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    code = (
        "import json, multiprocessing, os, socket\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "with multiprocessing.Pool(2) as pool:  # semaphores in /dev/shm, forks\n"
        "    pool_result = pool.map(abs, [-1, -2])\n"
        "host = socket.gethostname()\n"
        "print(json.dumps({'pid': os.getpid(), 'pids': pids, 'host': host,\n"
        "                  'addr': socket.gethostbyname(host), 'pool': pool_result}))"
    )
    terminated, log = run_pod(core, ns, "whoami", code)
    out = parse_json_log(terminated, log)
    assert out["host"] == "whoami" and out["addr"] == "127.0.0.1"
    assert out["pool"] == [1, 2]
    if kube.stack is not None:
        # pod-init is PID 1 of the pod's PID namespace; the command its child.
        assert out["pids"][0] == 1 and out["pid"] in out["pids"]
        assert len(out["pids"]) < 50


def test_a_missing_command_fails_the_pod_with_127(kube, ns) -> None:
    core = client.CoreV1Api(kube.api_client())
    container = {"command": ["/nonexistent/kubestack-test"]}
    terminated, _ = run_pod(core, ns, "nocmd", "", container=container)
    assert terminated.exit_code == 127 and terminated.reason == "StartError"
    assert "/nonexistent/kubestack-test" in terminated.message


def test_memory_limit_caps_the_address_space(kube, ns) -> None:
    if kube.stack is None:
        pytest.skip("the address-space limit is the kubestack node's")
    core = client.CoreV1Api(kube.api_client())
    code = (
        "import resource, sys\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0])\n"
        "small = bytearray(32 * 2**20)\n"
        "try:\n"
        "    big = bytearray(400 * 2**20)\n"
        "except MemoryError:\n"
        "    sys.exit(3)\n"
    )
    container = {"resources": {"limits": {"memory": "256Mi"}}}
    terminated, log = run_pod(core, ns, "mem", code, container=container)
    assert terminated.exit_code == 3, log
    assert log.strip() == str(256 * 2**20)


@contextlib.contextmanager
def own_stack(tmp_path: Any, *node_args: str) -> Iterator[tuple[Any, Any]]:
    """A cluster of the test's own (the session's must go on): (Kubestack, CoreV1Api)."""
    from kubernetes import config

    from .kubestack import Kubestack, kubestack_binary

    stack = Kubestack(
        kubestack_binary(), str(tmp_path / "stack"), cpu="2", memory="2Gi", node_args=node_args
    )
    try:
        stack.start()
        api = config.new_client_from_config(config_file=stack.kubeconfig)
        wait_for("the default service account", lambda: _has_sa(client.CoreV1Api(api), "default"))
        yield stack, client.CoreV1Api(api)
    finally:
        stack.stop()


def test_down_leaves_no_process_mount_or_file_behind(kube, tmp_path) -> None:
    """tools/kubestack/down ends every component and every pod process, also those a
    pod started in another process group or session."""
    if kube.stack is None:
        pytest.skip("tests tools/kubestack/down")
    mounts_before = open("/proc/self/mounts").read()
    with own_stack(tmp_path) as (stack, core):
        state = stack.state
        marker = f"leftover-{uuid.uuid4().hex}"
        code = (
            "import subprocess, sys, time\n"
            f"args = [sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}]\n"
            "subprocess.Popen(args)\n"
            "subprocess.Popen(args, start_new_session=True)\n"
            "time.sleep(600)\n"
        )
        core.create_namespaced_pod("default", pod_manifest("spawner", code))
        # The pod's command and the two it started hold the marker.
        wait_for("the pod's processes", lambda: len(host_pids(marker)) == 3, 60)
        components = [p.pid for p in stack.procs.values()]
        assert open("/proc/self/mounts").read() == mounts_before
        out = subprocess.run(
            [os.path.join(ROOT, "tools", "kubestack", "down"), "--state", state],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert host_pids(marker) == []
        for proc in stack.procs.values():
            proc.wait(timeout=5)  # reaped here: they were this test's children
        assert all(p.returncode is not None for p in stack.procs.values()), components
        assert open("/proc/self/mounts").read() == mounts_before
        assert os.listdir(os.path.join(state, "pods")) == []
        assert not os.path.exists("/run/secrets/kubernetes.io")


def test_a_killed_node_takes_its_pods_with_it(kube, tmp_path) -> None:
    if kube.stack is None:
        pytest.skip("the kubestack node's")
    with own_stack(tmp_path) as (stack, core):
        marker = f"orphan-{uuid.uuid4().hex}"
        code = (
            "import subprocess, sys, time\n"
            f"args = [sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}]\n"
            "subprocess.Popen(args, start_new_session=True)\n"
            "time.sleep(600)\n"
        )
        core.create_namespaced_pod("default", pod_manifest("orphans", code))
        wait_for("the pod's processes", lambda: len(host_pids(marker)) == 2, 60)
        node = stack.procs["node"]
        node.kill()  # SIGKILL: the node cannot stop its pods itself
        node.wait(timeout=10)
        wait_for("the pod's processes to end", lambda: not host_pids(marker), 10)


def test_without_namespaces_pods_find_their_files_through_env(kube, tmp_path) -> None:
    """A node that may not make namespaces (not root, or a seccomp filter) runs pods
    as plain processes: $KUBESTACK_ROOT holds each mount at its path, and
    $KUBESTACK_TERMINATION_LOG is the termination-message file."""
    if kube.stack is None:
        pytest.skip("the kubestack node's fallback")
    with own_stack(tmp_path, "--namespaces=off") as (stack, core):
        terminated, log = run_pod(core, "default", "flat", CALL_API_WITH_TOKEN)
        out = parse_json_log(terminated, log)
        assert out["code"] == 403 and out["client_status"] == 403
        assert out["namespace"] == "default"
        code = (
            "import json, os\n"
            "open(os.environ['KUBESTACK_TERMINATION_LOG'], 'w').write('done')\n" + DUMP_ENV
        )
        terminated, log = run_pod(core, "default", "flatmsg", code)
        env = parse_json_log(terminated, log)
        assert terminated.message == "done"
        assert "PYTEST_CURRENT_TEST" not in env and env["HOSTNAME"] == "flatmsg"
        assert "namespaces of their own (--namespaces=off)" in stack.log_tail("node", 100000)


def test_an_evicted_pod_ends_failed_with_its_disruption_target(kube, ns) -> None:
    """The Eviction API marks the pod (DisruptionTarget) and deletes it; the node stops
    it and reports it Failed with that condition kept, as a kubelet does: a Job's
    podFailurePolicy reads it there to tell an eviction from a failed attempt."""
    core = client.CoreV1Api(kube.api_client())
    manifest = pod_manifest("evictee", "import time; time.sleep(600)")
    # Kept after its deletion, for a look at its last status.
    manifest["metadata"]["finalizers"] = ["kubemr.dev/test-keep"]
    core.create_namespaced_pod(ns, manifest)
    try:
        wait_for("the pod to run", lambda: core.read_namespaced_pod("evictee", ns).status.phase
                 == "Running", 120)  # fmt: skip
        eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="evictee", namespace=ns))
        core.create_namespaced_pod_eviction("evictee", ns, eviction)

        def ended() -> Any:
            pod = core.read_namespaced_pod("evictee", ns)
            return pod if pod.status.phase in ("Succeeded", "Failed") else None

        pod = wait_for("the evicted pod to end", ended, 60)
        assert pod.status.phase == "Failed"
        marks = [c for c in pod.status.conditions or [] if c.type == "DisruptionTarget"]
        assert len(marks) == 1 and marks[0].status == "True", pod.status.conditions
        assert marks[0].reason == "EvictionByEvictionAPI"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 143  # SIGTERM
    finally:
        core.patch_namespaced_pod("evictee", ns, {"metadata": {"finalizers": None}})


STOPS_SLOWLY = """
import signal, sys, time

def stop(*_):
    time.sleep(2)  # long enough for another controller to change the pod meanwhile
    sys.exit(3)

signal.signal(signal.SIGTERM, stop)
time.sleep(600)
"""


def test_a_deleted_pod_ends_failed_after_its_finalizers_changed(kube, ns) -> None:
    """The Job controller takes its tracking finalizer off a Job's deleted pod while the
    pod is still stopping. The node still reports the pod's end (Failed, its exit code),
    as a kubelet writing the status alone does, instead of the pod staying Running until
    it is gone: a status carrying the finalizers of the pod's start is refused once one
    was taken off a pod being deleted."""
    core = client.CoreV1Api(kube.api_client())
    manifest = pod_manifest("unfinalized", STOPS_SLOWLY, terminationGracePeriodSeconds=30)
    # The first stands for the Job controller's; the second keeps the pod for a look.
    manifest["metadata"]["finalizers"] = ["kubemr.dev/test-taken", "kubemr.dev/test-keep"]
    core.create_namespaced_pod(ns, manifest)
    try:
        wait_for("the pod to run", lambda: core.read_namespaced_pod("unfinalized", ns)
                 .status.phase == "Running", 120)  # fmt: skip
        core.delete_namespaced_pod("unfinalized", ns)
        # A JSON patch: a merge of the list would keep the finalizer.
        core.patch_namespaced_pod(
            "unfinalized", ns, [{"op": "remove", "path": "/metadata/finalizers/0"}]
        )

        def ended() -> Any:
            pod = core.read_namespaced_pod("unfinalized", ns)
            return pod if pod.status.phase in ("Succeeded", "Failed") else None

        # Well within the grace period: what ends the pod is its process, not a timeout.
        pod = wait_for("the deleted pod to end", ended, 20)
        assert pod.metadata.finalizers == ["kubemr.dev/test-keep"]
        state = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed" and state.exit_code == 3, pod.status
        assert state.reason == "Error", state
    finally:
        core.patch_namespaced_pod("unfinalized", ns, {"metadata": {"finalizers": None}})


def test_a_restarted_node_reports_the_pods_it_lost_as_failed(kube, tmp_path) -> None:
    """A killed node takes its pods' processes with it. Started again, it reports a
    restartPolicy Never pod that was running as a kubelet does for a container it cannot
    find (Failed, ContainerStatusUnknown, 137), rather than running its command a second
    time under the same pod; new pods run."""
    if kube.stack is None:
        pytest.skip("kills and restarts the kubestack node")
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write('started\\n'); time.sleep(600)"
    with own_stack(tmp_path) as (stack, core):
        core.create_namespaced_pod("default", pod_manifest("lost", code))
        wait_for("the pod to run", lambda: starts.exists(), 120)
        wait_for("the API server to show it Running",
                 lambda: core.read_namespaced_pod("lost", "default").status.phase == "Running",
                 60)  # fmt: skip
        uid = core.read_namespaced_pod("lost", "default").metadata.uid
        stack.kill("node")
        stack.restart("node")

        def ended() -> Any:
            pod = core.read_namespaced_pod("lost", "default")
            return pod if pod.status.phase in ("Succeeded", "Failed") else None

        pod = wait_for("the lost pod to be reported", ended, 90)
        state = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed"
        assert state.reason == "ContainerStatusUnknown" and state.exit_code == 137, state
        assert starts.read_text() == "started\n"  # its command ran once
        assert uid not in os.listdir(os.path.join(stack.state, "pods"))  # nothing left
        terminated, log = run_pod(core, "default", "after", "print('ran')")
        assert terminated.exit_code == 0 and log.strip() == "ran"
