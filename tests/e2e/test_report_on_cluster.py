"""The job report of a job on a real control plane (kubestack) and MinIO: each task
attempt's record starts and ends when its pod's container did, within a second, and
names the pod and its node; a pod whose attempt failed is in the report too.

Kubernetes gives a container's ``startedAt`` and ``finishedAt`` in whole seconds (the
second that holds the instant), so "within a second of the container's time" is checked
as within a second of some instant of that second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from kubernetes import client

from kubemr.executors.k8s.manifests import GROUP, VERSION
from kubemr.report.records import FORMAT, load_report
from kubemr.storage import StorageOptions
from tests.e2e import support
from tests.e2e.support import Cluster, ControllerProcess
from tests.jobfiles import SKEWED_RETRIED
from tests.support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})


LINES = ["hot hot" if i % 3 else f"k{i % 31} hot" for i in range(600)] + ["trigger"]


def within_a_second(record: float, api_time: Any) -> bool:
    """Whether ``record`` is within 1 s of an instant of the whole second the API gives."""
    second = api_time.timestamp()
    return second - 1.0 <= record < second + 2.0


def test_attempts_match_their_pods(
    minio: Any,
    cluster: Cluster,
    controller: ControllerProcess,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = f"rep-{uuid.uuid4().hex[:10]}"
    minio.make_bucket(bucket)
    s3 = minio.client()
    for i in range(3):
        body = ("\n".join(LINES[i::3]) + "\n").encode()
        s3.put_object(Bucket=bucket, Key=f"in/{i}.txt", Body=body)
    env = minio.env()
    cluster.core.create_namespaced_secret(
        cluster.ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3"),
            string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        ),
    )
    name = "report"
    cluster.create(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MapReduceJob",
            "metadata": {"name": name},
            "spec": {
                "inputs": [f"s3://{bucket}/in/*.txt"],
                "output": f"s3://{bucket}/out",
                "job": {"source": SKEWED_RETRIED.format(marker=str(tmp_path / "tried"))},
                "reducers": 2,
                "maxAttempts": 2,
                "storage": {
                    "endpoint": minio.endpoint,
                    "region": "us-east-1",
                    "secretRef": {"name": "s3"},
                },
                "template": {"command": [sys.executable, "-m", "kubemr"]},
            },
        }
    )
    status = cluster.wait_phase(name, "Succeeded", timeout=300)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert "out/_REPORT.json" in keys and "out/_SUCCESS" in keys
    report = json.loads(s3.get_object(Bucket=bucket, Key="out/_REPORT.json")["Body"].read())
    for key, value in env.items():  # load_report reads the bucket as a client here would
        monkeypatch.setenv(key, value)
    assert load_report(f"s3://{bucket}/out", StorageOptions(s3_endpoint=minio.endpoint)) == report
    assert report["format"] == FORMAT and report["runner"] == "kubernetes"
    assert report["status"] == "succeeded"

    maps = status["plan"]["steps"][0]["maps"]
    pods = {
        p.metadata.name: p for stage in ("map-0", "reduce-0") for p in cluster.pods(name, stage)
    }
    rows = report["attempts"]
    # One row per pod of the waves: every pod committed or recorded its failure.
    assert sorted(r["worker"] for r in rows) == sorted(pods)
    assert sorted(r["attempt"] for r in rows) == sorted(pods)
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert len(failed) == 1 and "first attempt of this task fails" in failed[0]["error"]
    committed = [r for r in rows if r["outcome"] == "committed"]
    assert len(committed) == maps + 2
    for row in rows:
        pod = pods[row["worker"]]
        assert row["node"] and row["node"] == pod.spec.node_name
        (state,) = pod.status.container_statuses
        ended = state.state.terminated
        assert ended is not None, (row["worker"], state.state)
        assert ended.exit_code == (0 if row["outcome"] != "failed" else 1)
        assert row["started"] < row["finished"]
        assert within_a_second(row["started"], ended.started_at), (
            row["worker"], row["started"], ended.started_at
        )  # fmt: skip
        assert within_a_second(row["finished"], ended.finished_at), (
            row["worker"], row["finished"], ended.finished_at
        )  # fmt: skip
        assert row["cpu_seconds"] > 0 and row["peak_rss_bytes"] > 10 << 20
        assert row["storage_requests"] > 0
    hot = max(report["partitions"], key=lambda p: p["records"])
    assert hot["top_keys"][0][0] == '"hot"'
    success = json.loads(s3.get_object(Bucket=bucket, Key="out/_SUCCESS")["Body"].read())
    assert success["report"]["cpu_seconds"] == report["totals"]["cpu_seconds"]

    # `kubemr report NAME`, as a user runs it: the resource says where the output is, and
    # the user's own credentials read it.
    page, picture = tmp_path / "page.html", tmp_path / "picture.png"
    proc = subprocess.run(
        [sys.executable, "-m", "kubemr", "report", name, "-n", cluster.ns,
         "--kubeconfig", cluster.kubeconfig, "--json", "--html", str(page), "--png",
         str(picture)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src"), **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["job_id"] == report["job_id"] and shown["attempts"] == len(rows)
    assert page.read_text().count("<svg") >= 3
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
