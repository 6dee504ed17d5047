"""Kubernetes objects for one MapReduceJob, built as plain dicts: pure, no API calls.

Every stage of a job (plan, each map and reduce wave, commit) is one Indexed Job named
``<resource>-<stage>`` (``wc-map-0``), so a restarted controller finds the Jobs it made
instead of making them again. Worker pods run ``kubemr worker`` with the stage and the
job's work URL; they get the storage credentials from the resource's Secret, no
Kubernetes API token, and report through their exit code and termination message.
"""

from __future__ import annotations

import json
from typing import Any

from kubemr.coordinator import Stage, StageKind
from kubemr.spec import MapReduceJobSpec
from kubemr.termination import EXIT_BAD_INPUT, EXIT_VERSION_SKEW

GROUP = "kubemr.dev"
VERSION = "v1alpha1"
KIND = "MapReduceJob"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "mapreducejobs"

LABEL_JOB = f"{GROUP}/job"
LABEL_UID = f"{GROUP}/job-uid"
LABEL_STAGE = f"{GROUP}/stage"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SPEC_ENV = "KUBEMR_SPEC"
"""The plan pod reads the resource's spec from this variable (it has no API access)."""

CONTAINER = "worker"
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/var/tmp/kubemr"
WORKER_UID = 10001
"""The image's user (Dockerfile ``USER 10001``): worker pods run as it."""


def job_name(resource_name: str, stage: Stage) -> str:
    """The Job running a stage: deterministic, so it is found again after a restart."""
    return f"{resource_name}-{stage.name}"


def selector_labels(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource["metadata"]
    return {LABEL_JOB: meta["name"], LABEL_UID: meta["uid"]}


def owner_reference(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stage_job(
    resource: dict[str, Any],
    spec: MapReduceJobSpec,
    stage: Stage,
    work_url: str,
    parallelism: int,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The Indexed Job of one stage of the job."""
    meta = resource["metadata"]
    labels = {
        "app.kubernetes.io/name": "kubemr",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "kubemr-controller",
        **selector_labels(resource),
        LABEL_STAGE: stage.name,
    }
    job_labels = dict(labels)
    queue = (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    if queue:
        job_labels[KUEUE_QUEUE_LABEL] = queue  # Kueue admits the wave Jobs
    pod_labels = {**spec.template.labels, **labels}
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": stage.tasks,
        "parallelism": max(1, min(parallelism, stage.tasks)),
        "backoffLimitPerIndex": spec.max_attempts - 1,
        "maxFailedIndexes": 0,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {
            "rules": [
                # Bad input and code pickled by another version fail the task at once.
                {
                    "action": "FailIndex",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [EXIT_BAD_INPUT, EXIT_VERSION_SKEW],
                    },
                },
                # An evicted or preempted pod is not a failed attempt.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "suspend": bool(spec.suspend),
        "template": {
            "metadata": {"labels": pod_labels, "annotations": dict(spec.template.annotations)},
            "spec": pod_spec(resource, spec, stage, work_url),
        },
    }
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(1, active_deadline_seconds)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], stage),
            "namespace": meta["namespace"],
            "labels": job_labels,
            "ownerReferences": [owner_reference(resource)],
        },
        "spec": job_spec,
    }


def worker_args(stage: Stage, work_url: str) -> list[str]:
    """``kubemr worker`` arguments: the task index comes from $JOB_COMPLETION_INDEX."""
    return ["worker", "--work", work_url, "--stage", stage.name]


def pod_spec(
    resource: dict[str, Any], spec: MapReduceJobSpec, stage: Stage, work_url: str
) -> dict[str, Any]:
    template = spec.template
    env: list[dict[str, Any]] = []
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": spec.storage.endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_REGION", "value": spec.storage.region})
    env.append({"name": "TMPDIR", "value": SCRATCH_DIR})
    env.append(
        {"name": "KUBEMR_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    env.append(
        {"name": "KUBEMR_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    )
    if stage.kind is StageKind.PLAN:
        env.append({"name": SPEC_ENV, "value": plan_input(resource, spec, work_url)})
    env.extend(e.to_resource() for e in template.env)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.worker_image(),
        "args": worker_args(stage, work_url),
        "env": env,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # Spill files and temporary copies: the only place a worker writes locally
        # ($TMPDIR). Not /tmp itself, so that a node path under /tmp given as shared
        # storage (a hostPath-like mount, a test cluster's files) stays visible.
        "volumeMounts": [{"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}],
    }
    if template.command is not None:
        container["command"] = list(template.command)
    if template.image_pull_policy:
        container["imagePullPolicy"] = template.image_pull_policy
    resources = template.resources.to_resource()
    if resources:
        container["resources"] = resources
    if spec.storage.secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.storage.secret_ref.name}}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # workers never talk to the API server
        "terminationGracePeriodSeconds": 30,
        # The restricted Pod Security Standard; the image's user, made explicit so that
        # an image built FROM a root base still runs unprivileged.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": SCRATCH_VOLUME, "emptyDir": {}}],
    }
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    if template.node_selector:
        pod["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod["tolerations"] = [t.to_resource() for t in template.tolerations]
    if template.affinity:
        pod["affinity"] = template.affinity
    if template.priority_class_name:
        pod["priorityClassName"] = template.priority_class_name
    return pod


def plan_input(resource: dict[str, Any], spec: MapReduceJobSpec, work_url: str) -> str:
    """What the plan pod needs: the spec and where the job's data goes, as JSON."""
    meta = resource["metadata"]
    return json.dumps(
        {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "work_url": work_url,
            "spec": spec.to_resource(),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
