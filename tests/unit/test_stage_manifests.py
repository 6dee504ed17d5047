"""The stage Jobs the controller creates: Indexed, retried per index, and worker pods
locked down (no API token, non-root, read-only root file system, no capabilities)."""

from __future__ import annotations

from typing import Any

import pytest

from kubemr.coordinator import PLAN, Stage, StageKind
from kubemr.executors.k8s.manifests import (
    CONTAINER,
    KUEUE_QUEUE_LABEL,
    SCRATCH_DIR,
    WORKER_UID,
    stage_job,
)
from kubemr.spec import MapReduceJobSpec

RESOURCE = {
    "apiVersion": "kubemr.dev/v1alpha1",
    "kind": "MapReduceJob",
    "metadata": {"name": "wc", "namespace": "team-a", "uid": "u-1", "labels": {}},
}
MAP = Stage(StageKind.MAP, 0, 10)
SECRET_VALUE = "wJalrXUtnFEMI-not-in-any-manifest"


def spec(**values: Any) -> MapReduceJobSpec:
    base: dict[str, Any] = {
        "inputs": ["s3://in/*.txt"],
        "output": "s3://out/wc",
        "job": {"module": "jobs.wc:WordCount"},
        "storage": {"endpoint": "http://minio:9000", "secretRef": {"name": "s3"}},
    }
    return MapReduceJobSpec.model_validate({**base, **values})


@pytest.mark.parametrize("stage", [PLAN, MAP], ids=["plan", "map"])
def test_worker_pods_are_locked_down(stage: Stage) -> None:
    job = stage_job(RESOURCE, spec(), stage, "s3://out/_kubemr/w", 2)
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [container] = pod["containers"]
    assert container["name"] == CONTAINER
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The one writable place is its own scratch volume.
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == SCRATCH_DIR
    assert {"name": "TMPDIR", "value": SCRATCH_DIR} in container["env"]
    assert {"name": mount["name"], "emptyDir": {}} in pod["volumes"]
    assert not any("hostPath" in v for v in pod["volumes"])
    # Credentials only by reference to a Secret of the resource's namespace.
    assert container["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert SECRET_VALUE not in repr(job)


def test_indexed_and_retried_per_index() -> None:
    job = stage_job(RESOURCE, spec(maxAttempts=4), MAP, "s3://out/_kubemr/w", 3)
    body = job["spec"]
    assert body["completionMode"] == "Indexed"
    assert body["completions"] == 10 and body["parallelism"] == 3
    assert body["backoffLimitPerIndex"] == 3
    assert body["template"]["spec"]["restartPolicy"] == "Never"
    rules = body["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailIndex" and 3 in rules[0]["onExitCodes"]["values"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] is True


def test_parallelism_never_exceeds_the_tasks() -> None:
    job = stage_job(RESOURCE, spec(), Stage(StageKind.REDUCE, 0, 2), "s3://w", 50)
    assert job["spec"]["parallelism"] == 2


def test_the_kueue_queue_label_reaches_the_wave_job() -> None:
    resource = {**RESOURCE, "metadata": {**RESOURCE["metadata"], "labels": {}}}
    resource["metadata"]["labels"] = {KUEUE_QUEUE_LABEL: "batch"}
    job = stage_job(resource, spec(), MAP, "s3://w", 2)
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "batch"
