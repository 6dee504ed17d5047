"""A ``MapReduceJob`` resource built from a checked spec: pure, no API calls.

The resource holds the settings that were given and nothing else, so the API server
fills in the defaults of the installed CRD (``kubectl get mrj NAME -o yaml`` shows them)
and the controller its installation's job defaults. Sizes stay as written (``64Mi``).
"""

from __future__ import annotations

import re
from typing import Any

from kubemr.executors.k8s.manifests import API_VERSION, KIND, LABEL_JOB, LABEL_UID
from kubemr.spec import MAX_NAME_LENGTH, MapReduceJobSpec, default_work_dir

Obj = dict[str, Any]

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
"""The Jobs of a resource are named ``<name>-<stage>`` and become label values: a DNS
label, so no dots."""
GENERATED_SUFFIX = 5
"""Characters the API server appends to a ``generateName``."""
SIZE_FIELDS = ("split_size", "memory")


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a MapReduceJob, or None."""
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters, more than the {MAX_NAME_LENGTH} allowed"
    if not NAME_PATTERN.match(name):
        return (
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    return None


def name_from(text: str, limit: int = MAX_NAME_LENGTH) -> str:
    """A resource name made from a class or module name: ``WordCount`` -> ``word-count``,
    ``examples.top_k`` -> ``top-k``."""
    text = text.rpartition(".")[2]
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", text).lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:limit].rstrip("-") or "job"


def generate_name_base(name: str) -> str:
    """``metadata.generateName`` for ``name``: the server adds 5 characters after the dash,
    and the whole stays within :data:`MAX_NAME_LENGTH`."""
    return name[: MAX_NAME_LENGTH - GENERATED_SUFFIX - 1].rstrip("-") + "-"


def spec_json(spec: MapReduceJobSpec, written: dict[str, Any] | None = None) -> Obj:
    """The resource's ``spec``: the fields that were set, camelCase; sizes as written
    (``written`` maps ``split_size``/``memory`` to the text given)."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for field in SIZE_FIELDS:
        text = (written or {}).get(field)
        if isinstance(text, str):
            data[MapReduceJobSpec.model_fields[field].alias or field] = text
    return data


def build_resource(
    spec: MapReduceJobSpec,
    *,
    name: str,
    generate: bool = False,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    written: dict[str, Any] | None = None,
) -> Obj:
    """The MapReduceJob: named ``name``, or named by the server from it (``generate``)."""
    metadata: Obj = {"generateName": generate_name_base(name)} if generate else {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": spec_json(spec, written),
    }


def owned_selector(resource: Obj) -> str:
    """The label selector of the pods and Jobs this resource (this uid) owns."""
    meta = resource.get("metadata") or {}
    selector = f"{LABEL_JOB}={meta.get('name')}"
    if meta.get("uid"):
        selector += f",{LABEL_UID}={meta['uid']}"
    return selector


def events_selector(resource: Obj) -> str:
    """The field selector of the core/v1 Events about this resource."""
    meta = resource.get("metadata") or {}
    selector = f"involvedObject.kind={KIND},involvedObject.name={meta.get('name')}"
    if meta.get("uid"):
        selector += f",involvedObject.uid={meta['uid']}"
    return selector


def work_url(resource: Obj) -> str | None:
    """Where the job's plan, shuffle data and logs are: the status says once planned;
    before, the spec's ``workDir`` or the controller's default for it."""
    planned = (((resource.get("status") or {}).get("plan")) or {}).get("workUrl")
    if planned:
        return str(planned)
    meta, spec = resource.get("metadata") or {}, resource.get("spec") or {}
    if spec.get("workDir"):
        return str(spec["workDir"])
    if not (spec.get("output") and meta.get("uid")):
        return None
    return default_work_dir(spec["output"], meta.get("namespace", ""), meta["name"], meta["uid"])
