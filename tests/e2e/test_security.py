"""kubemr's trust boundaries on a real control plane (kubestack) with real storage (MinIO):

- a storage Secret's values appear nowhere but in the Secret: not in the resource or its
  status, Events, the controller's log, the stage Jobs and pods, ConfigMaps, the task logs
  kept in storage, the node's pod logs, nor what ``kubemr status/describe/logs`` print;
- a job's objects are created in its own namespace only, whatever its spec names;
- job code changed after submission is refused before it is unpickled, once, and the job
  fails saying why;
- a controller installed for some namespaces ignores jobs elsewhere, and its account can
  read no Secret and write nowhere else;
- an oversized resource is refused by the API server naming the field.

See docs/security.md for the trust model these check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemr.executors.k8s.manifests import GROUP, LABEL_JOB, LABEL_UID, VERSION
from tests.e2e import support
from tests.e2e.datajobs import FAILING, WORDCOUNT
from tests.e2e.support import Cluster, ControllerProcess, Obj, kubectl, token_kubeconfig
from tests.e2e.test_controller import FAKE_WORKER, fake_job
from tests.support import ROOT, helm_binary
from tests.unit.test_security import BASE, OVERSIZED, booby_trapped

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

REGION = "us-east-1"


def sanitized(api_client: Any, obj: Any) -> str:
    return json.dumps(api_client.sanitize_for_serialization(obj))


def make_secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    cluster.core.create_namespaced_secret(
        cluster.ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data),
    )


def s3_job(name: str, bucket: str, source: str, endpoint: str, **spec: Any) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": name},
        "spec": {
            "inputs": [f"s3://{bucket}/in/*.txt"],
            "output": f"s3://{bucket}/{name}",
            "job": {"source": source},
            "reducers": 2,
            "storage": {"endpoint": endpoint, "region": REGION, "secretRef": {"name": "s3"}},
            # kubestack runs commands, not images: this Python, with kubemr.
            "template": {"command": [sys.executable, "-m", "kubemr"]},
            **spec,
        },
    }


def kubemr_cli(kube: Any, ns: str, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "kubemr", *args, "-n", ns, "--kubeconfig", kube.kubeconfig],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), **env},
    )  # fmt: skip
    return out.stdout + out.stderr


def storage_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def files_under(path: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            try:
                with open(full, "rb") as fh:
                    found[full] = fh.read()
            except OSError:
                continue
    return found


# -- 2. credentials stay in their Secret, objects in their namespace -----------------------------
def test_storage_credentials_appear_nowhere_but_their_secret(
    kube: Any, cluster: Cluster, controller: ControllerProcess, minio: Any, tmp_path: Any
) -> None:
    bucket = f"sec-{uuid.uuid4().hex[:8]}"
    minio.make_bucket(bucket)
    s3 = minio.client()
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"in/{i}.txt", Body=b"a b c\nb c\nc\npoison\n" * 5)
    env = minio.env()
    # A canary beside the credentials: a worker that dumped its environment would show it.
    canary = f"canary-{uuid.uuid4().hex}"
    make_secret(
        cluster,
        "s3",
        {
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "KUBEMR_CANARY": canary,
        },
    )
    secrets = {
        "the access key": env["AWS_ACCESS_KEY_ID"],
        "the secret key": env["AWS_SECRET_ACCESS_KEY"],
        "the canary": canary,
    }
    ok = s3_job("wc", bucket, WORDCOUNT, minio.endpoint)
    # Without strict field validation the API server drops a field the schema lacks: a
    # Secret of another namespace cannot be named, it is silently not there.
    ok["spec"]["storage"]["secretRef"]["namespace"] = "kube-system"
    created = cluster.create(ok)
    assert created["spec"]["storage"]["secretRef"] == {"name": "s3"}
    # A failing job too: its failure, traceback and failed attempts are shown everywhere.
    cluster.create(s3_job("bad", bucket, FAILING, minio.endpoint, maxAttempts=2))
    cluster.wait_phase("wc", "Succeeded", timeout=300)
    failed = cluster.wait_phase("bad", "Failed", timeout=300)
    assert "poisoned line" in json.dumps(failed["failure"])

    api_client = cluster.core.api_client
    batch, core = cluster.batch, cluster.core
    uids = {cluster.get(n)["metadata"]["uid"] for n in ("wc", "bad")}
    # Every object the jobs made is in their namespace.
    for uid in uids:
        jobs = batch.list_job_for_all_namespaces(label_selector=f"{LABEL_UID}={uid}").items
        pods = core.list_pod_for_all_namespaces(label_selector=f"{LABEL_UID}={uid}").items
        assert jobs and pods
        assert {o.metadata.namespace for o in jobs + pods} == {cluster.ns}
    for pod in cluster.pods("wc"):
        [worker] = pod.spec.containers
        assert [s.secret_ref.name for s in worker.env_from] == ["s3"]
        assert pod.spec.automount_service_account_token is False

    cli_env = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cli_env["AWS_ENDPOINT_URL_S3"] = minio.endpoint
    places: dict[str, str | bytes] = {
        "the MapReduceJobs and their status": json.dumps([cluster.get(n) for n in ("wc", "bad")]),
        "the Events": sanitized(api_client, core.list_event_for_all_namespaces()),
        "the controller's log": controller.log(),
        "the stage Jobs": sanitized(api_client, batch.list_job_for_all_namespaces()),
        "the pods": sanitized(api_client, core.list_pod_for_all_namespaces()),
        "the ConfigMaps": sanitized(api_client, core.list_config_map_for_all_namespaces()),
    }
    for name in ("wc", "bad"):
        for command in (["status", name], ["describe", name], ["logs", name]):
            places[f"kubemr {' '.join(command)}"] = kubemr_cli(kube, cluster.ns, cli_env, *command)
    stored = storage_objects(s3, bucket)
    logs = {k: v for k, v in stored.items() if "/logs/" in k}
    assert any("/logs/map-0/" in k for k in logs) and any(
        "poisoned" in v.decode() for v in logs.values()
    )
    for key, body in stored.items():
        places[f"storage: {key}"] = body
    if kube.stack is not None:
        pod_logs = files_under(os.path.join(kube.stack.state, "pod-logs"))
        assert any(b"poisoned line" in body for body in pod_logs.values()), "no pod logs read"
        for path, body in pod_logs.items():
            places[f"the node's pod log {path}"] = body

    # The places were read: the runs left what these expect in them.
    assert "Succeeded" in places["kubemr status wc"], places["kubemr status wc"]
    assert "poisoned line" in places["kubemr describe bad"], places["kubemr describe bad"]
    assert "poisoned line" in places["kubemr logs bad"], places["kubemr logs bad"]
    assert "ZeroDivisionError" in json.dumps(failed)
    # The grep finds a secret where it is: the Secret itself.
    stored_secret = core.read_namespaced_secret("s3", cluster.ns).data["KUBEMR_CANARY"]
    assert base64.b64decode(stored_secret).decode() == canary
    leaks = [
        f"{what} is in {where}"
        for where, text in places.items()
        for what, value in secrets.items()
        if (value.encode() if isinstance(text, bytes) else value) in text
    ]
    assert not leaks, leaks


# -- 3. job code changed after submission ---------------------------------------------------------
def test_a_pickle_changed_in_storage_is_refused_before_unpickling(
    cluster: Cluster, controller: ControllerProcess, minio: Any, tmp_path: Any
) -> None:
    bucket = f"code-{uuid.uuid4().hex[:8]}"
    minio.make_bucket(bucket)
    s3 = minio.client()
    s3.put_object(Bucket=bucket, Key="in/0.txt", Body=b"a b\n")
    env = minio.env()
    make_secret(cluster, "s3", {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    submitted = pickle.dumps({"the": "code as submitted"})
    digest = hashlib.sha256(submitted).hexdigest()
    key = f"_kubemr/code/{digest}.pkl"
    # Pods of this cluster are processes of this machine: had the blob been unpickled, the
    # marker would be here.
    marker = tmp_path / "unpickled"
    s3.put_object(Bucket=bucket, Key=key, Body=booby_trapped(marker))
    changed = hashlib.sha256(booby_trapped(marker)).hexdigest()
    body = s3_job("tampered", bucket, WORDCOUNT, minio.endpoint, maxAttempts=3)
    body["spec"]["job"] = {"pickle": {"url": f"s3://{bucket}/{key}", "sha256": digest}}
    cluster.create(body)
    status = cluster.wait_phase("tampered", "Failed", timeout=240)
    failure = status["failure"]
    assert not marker.exists(), "the changed pickle was unpickled"
    assert failure["reason"] == "CodeIntegrityError", failure
    for part in (f"s3://{bucket}/{key}", digest, changed, "Submit the job again"):
        assert part in failure["message"], (part, failure)
    # Refused once: the Job failed the index at once instead of retrying it.
    time.sleep(3)
    plans = cluster.pods("tampered", stage="plan")
    assert len(plans) == 1, [p.metadata.name for p in plans]
    assert not [w for w in status.get("waves", []) if w["kind"] != "plan"]


# -- 4. a namespaced controller -----------------------------------------------------------------
@pytest.fixture
def namespaced_rbac(kube: Any, installed: None, tmp_path: Any) -> Iterator[tuple[str, str, str]]:
    """The chart's RBAC for a controller that watches one namespace, applied as rendered;
    yields (its namespace, the watched one, another)."""
    core = client.CoreV1Api(kube.api_client())
    names = [f"{p}-{uuid.uuid4().hex[:6]}" for p in ("sec-sys", "sec-team", "sec-other")]
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    system, watched, other = names
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": [watched]}))
    out = subprocess.run(
        [helm_binary(), "template", "sec", os.path.join(ROOT, "charts", "kubemr"),
         "--namespace", system, "-f", str(values)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    docs = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] in kinds]
    assert not [d for d in docs if d["kind"].startswith("Cluster")], "namespaced mode"
    applied = kubectl(kube.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    try:
        yield system, watched, other
    finally:
        for name in names:
            core.delete_namespace(name)


def access(
    api_client: Any,
    verb: str,
    resource: str,
    namespace: str = "",
    group: str = "",
    subresource: str = "",
) -> bool:
    """A SelfSubjectAccessReview: whether the client's own identity may do this."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                resource=resource,
                namespace=namespace or None,
                group=group,
                subresource=subresource or None,
            )
        )
    )
    made = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
    return bool(made.status.allowed)


def test_a_namespaced_controller_reads_no_secret_and_writes_nowhere_else(
    kube: Any,
    namespaced_rbac: tuple[str, str, str],
    controller_kubeconfig: str,
    tmp_path: Any,
) -> None:
    system, watched, other = namespaced_rbac
    account = "sec-kubemr-controller"
    config = token_kubeconfig(kube.kubeconfig, account, system, str(tmp_path / "kubeconfig"))
    from kubernetes import config as kube_config

    mine = kube_config.new_client_from_config(config_file=config)
    cluster_wide = kube_config.new_client_from_config(config_file=controller_kubeconfig)
    # Neither the namespaced controller nor the cluster-wide one (manifests/rbac.yaml) may
    # read a Secret, anywhere; the namespaced one may write only where it watches.
    for who in (mine, cluster_wide):
        for ns in (watched, other, system, "kube-system", ""):
            for verb in ("get", "list", "watch"):
                assert not access(who, verb, "secrets", ns), (verb, ns)
            assert not access(who, "create", "pods", ns, subresource="exec"), ns
            assert not access(who, "create", "pods", ns), ns
            assert not access(who, "create", "serviceaccounts", ns, subresource="token"), ns
    assert access(mine, "create", "jobs", watched, group="batch")  # the control
    for ns in (other, system, "kube-system", ""):
        assert not access(mine, "create", "jobs", ns, group="batch"), ns
        assert not access(mine, "create", "events", ns), ns
        assert not access(mine, "list", "mapreducejobs", ns, group=GROUP), ns
    sa = f"system:serviceaccount:{system}:{account}"
    out = kubectl(kube.kubeconfig, "auth", "can-i", "get", "secrets", f"--as={sa}", "-A")
    assert out.stdout.strip() == "no", out.stdout + out.stderr

    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    ctl = ControllerProcess(
        config, str(tmp_path / "controller.log"), "--namespace", watched,
        "--lease-namespace", system,
    ).start()  # fmt: skip
    try:
        admin = client.CustomObjectsApi(kube.api_client())
        team = Cluster(kube, watched)
        make_secret(team, "s3", {"AWS_ACCESS_KEY_ID": "unused"})
        make_secret(team, "s", {"k": "unused"})
        for ns in (watched, other):
            (tmp_path / ns).mkdir()
            body = fake_job("probe", str(worker), tmp_path / ns, maps=2)
            # Every field that might name another namespace (dropped by the API server).
            body["spec"]["storage"] = {"secretRef": {"name": "s3", "namespace": other}}
            body["spec"]["template"]["env"].append(
                {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k",
                                                              "namespace": other}}}
            )  # fmt: skip
            admin.create_namespaced_custom_object(GROUP, VERSION, ns, "mapreducejobs", body)
        team.wait_phase("probe", "Succeeded", timeout=180)
        stored = admin.get_namespaced_custom_object(
            GROUP, VERSION, watched, "mapreducejobs", "probe"
        )
        assert stored["spec"]["storage"]["secretRef"] == {"name": "s3"}
        assert stored["spec"]["template"]["env"][-1]["valueFrom"] == {
            "secretKeyRef": {"name": "s", "key": "k"}
        }
        time.sleep(3)  # the other namespace's job had as long, and more
        ignored = admin.get_namespaced_custom_object(
            GROUP, VERSION, other, "mapreducejobs", "probe"
        )
        assert "status" not in ignored
        batch = client.BatchV1Api(kube.api_client())
        core = client.CoreV1Api(kube.api_client())
        uid = stored["metadata"]["uid"]
        jobs = batch.list_job_for_all_namespaces(label_selector=f"{LABEL_UID}={uid}").items
        pods = core.list_pod_for_all_namespaces(label_selector=f"{LABEL_JOB}=probe").items
        assert jobs and {o.metadata.namespace for o in jobs + pods} == {watched}
        assert not batch.list_namespaced_job(other).items
        events = core.list_namespaced_event(other).items
        assert not [e for e in events if e.source and e.source.component == "kubemr-controller"]
    finally:
        ctl.stop()
    log = ctl.log()
    assert "forbidden" not in log.lower() and "lacks rights" not in log, log[-3000:]


# -- 5. oversized resources ---------------------------------------------------------------------
@pytest.mark.parametrize("case", list(OVERSIZED))
def test_an_oversized_resource_is_refused_naming_the_field(
    kube: Any, installed: None, ns: str, case: str
) -> None:
    changes, field = OVERSIZED[case]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": "big"},
        "spec": {**BASE, **changes},
    }
    out = kubectl(
        kube.kubeconfig, "create", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-",
        stdin=json.dumps(body),
    )  # fmt: skip
    assert out.returncode != 0, f"the API server took {case}"
    assert field in out.stderr, out.stderr[-2000:]
    assert len(out.stderr) < 20_000 or case == "source-over-64-KiB", len(out.stderr)


# -- 1. what the API server keeps of fields that would weaken a pod --------------------------------
def test_fields_that_would_weaken_a_pod_are_refused_or_dropped(
    kube: Any, installed: None, ns: str
) -> None:
    template = {
        "command": ["kubemr"],
        "securityContext": {"privileged": True},
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "hostNetwork": True,
        "hostPID": True,
        "automountServiceAccountToken": True,
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": "weak"},
        "spec": {**BASE, "template": template, "hostNetwork": True},
    }
    strict = kubectl(
        kube.kubeconfig, "create", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-",
        stdin=json.dumps(body),
    )  # fmt: skip
    assert strict.returncode != 0
    for name in ("securityContext", "volumes", "hostNetwork", "hostPID"):
        assert f'unknown field "spec.template.{name}"' in strict.stderr, strict.stderr
    custom = client.CustomObjectsApi(kube.api_client())
    made = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "mapreducejobs", body)
    kept = {"command", "resources", "env", "nodeSelector", "tolerations", "labels", "annotations"}
    assert set(made["spec"]["template"]) <= kept, made["spec"]["template"]
    assert "hostNetwork" not in made["spec"]
    annotated = json.loads(json.dumps(body))
    annotated["metadata"]["name"] = "unconfined"
    del annotated["spec"]["hostNetwork"]
    annotated["spec"]["template"] = {
        "annotations": {"container.apparmor.security.beta.kubernetes.io/worker": "unconfined"}
    }
    out = kubectl(
        kube.kubeconfig, "create", "--dry-run=server", "-n", ns, "-f", "-",
        stdin=json.dumps(annotated),
    )  # fmt: skip
    assert out.returncode != 0 and "AppArmor or seccomp profile" in out.stderr, out.stderr
