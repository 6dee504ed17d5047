"""The controller's writes to the Kubernetes API, in one place.

Everything the controller changes goes through :class:`ControllerApi`: a stage's Job is
created by server-side apply (field manager ``kubemr-controller``), a Job's parallelism,
suspension and annotations are merge patches, the resource's status is a merge patch of
the status subresource guarded by the resourceVersion the status was computed from, Events
are core/v1 Events about the resource, and a finished resource past its TTL is deleted
(with a uid precondition, so a resource created again under the same name is safe).

Failures come back as the exceptions below. A request the controller's RBAC does not
allow raises :class:`PermissionDenied` naming the verb and the resource, so a missing
rule in the ClusterRole reads as such in the logs rather than as a bare 403.

Example:
    api = ControllerApi(ClientTransport(config.new_client_from_config()))
    api.apply_job(manifest)
    api.patch_job("default", "wc-map-0", parallelism=4)
    api.patch_status(resource, {"phase": "Running"})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import orjson
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from kubemr.controller.informer import KubeApi
from kubemr.executors.k8s.manifests import API_VERSION, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Query = Sequence[tuple[str, str]]

FIELD_MANAGER = "kubemr-controller"
COMPONENT = "kubemr-controller"

APPLY = "application/apply-patch+yaml"  # a JSON body is YAML too
MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


# -- errors -----------------------------------------------------------------------------------
class KubeError(RuntimeError):
    """A request the API server refused: ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class PermissionDenied(KubeError):
    """403: the controller's service account may not do this (see manifests/rbac.yaml)."""


class NamespaceTerminating(KubeError):
    """403 from the namespace lifecycle, not from RBAC: the namespace is being deleted, and
    everything in it with it, so there is nothing left to do there."""


class NotFound(KubeError):
    """404: the object (or the CRD) does not exist."""


class Conflict(KubeError):
    """409: the object changed since it was read, or it exists already."""


class Invalid(KubeError):
    """422: the API server refused the object's content."""


def _server_message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes | str) and body:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return str(body)[:500]
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    return str(exc.reason or "")


def _is_already_exists(exc: KubeError) -> bool:
    return isinstance(exc, Conflict) and "already exists" in str(exc)


# -- the transport ------------------------------------------------------------------------------
class Transport(Protocol):
    """One JSON request to the API server; raises the client's ``ApiException``."""

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Obj | None = None,
        content_type: str = JSON,
    ) -> Obj: ...


class ClientTransport:
    """Requests through the official client's ``ApiClient`` (its auth, TLS, proxy), by way
    of the one raw-JSON client the controller has (``KubeApi``)."""

    def __init__(
        self, api_client: ApiClient, *, timeout: float = 30.0, connect_timeout: float = 10.0
    ) -> None:
        self.api = KubeApi(api_client, timeout=timeout, connect_timeout=connect_timeout)

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Obj | None = None,
        content_type: str = JSON,
    ) -> Obj:
        return self.api.request(method, path, query=query, body=body, content_type=content_type)


# -- the API ------------------------------------------------------------------------------------
def _path(group: str, version: str, plural: str, namespace: str, name: str | None = None) -> str:
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{base}/namespaces/{quote(namespace, safe='')}/{plural}"
    return f"{path}/{quote(name, safe='')}" if name else path


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) turning ``old`` into ``new``: keys gone from ``new``
    become null, nested objects are diffed, anything else is replaced whole."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: Obj = {}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = (
                merge_patch(old[key], value)
                if isinstance(old[key], Mapping) and isinstance(value, Mapping)
                else value
            )
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


@dataclass(frozen=True)
class Right:
    """One permission the controller needs: ``verb`` on ``group``/``resource``."""

    verb: str
    group: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {what}" + (f" ({self.group})" if self.group else "")


RIGHTS: tuple[Right, ...] = (
    *(Right(v, GROUP, PLURAL) for v in ("get", "list", "watch", "patch", "delete")),
    Right("patch", GROUP, PLURAL, "status"),
    *(Right(v, "batch", "jobs") for v in ("list", "watch", "create", "patch")),
    *(Right(v, "", "pods") for v in ("list", "watch")),
    Right("create", "", "events"),
)
"""What the controller does in the namespaces it watches (manifests/rbac.yaml grants it)."""
LEASE_RIGHTS: tuple[Right, ...] = tuple(
    Right(v, "coordination.k8s.io", "leases") for v in ("get", "create", "update")
)


class ControllerApi:
    """The controller's requests, with errors turned into :class:`KubeError` subclasses.

    Args:
        transport: :class:`ClientTransport` in production; a fake in tests.
        instance: this controller's identity, written into Events it reports.
    """

    def __init__(self, transport: Transport, *, instance: str = COMPONENT) -> None:
        self.transport = transport
        self.instance = instance

    def _send(
        self,
        verb: str,
        what: str,
        namespace: str | None,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Obj | None = None,
        content_type: str = JSON,
    ) -> Obj:
        try:
            return self.transport.send(
                method, path, query=query, body=body, content_type=content_type
            )
        except ApiException as exc:
            where = f" in namespace {namespace}" if namespace else ""
            detail = _server_message(exc)
            status = int(exc.status or 0)
            if status == 403 and "is being terminated" in detail:
                raise NamespaceTerminating(f"{verb} {what}{where}: {detail}", status) from None
            if status == 403:
                raise PermissionDenied(
                    f"forbidden: the controller may not {verb} {what}{where}; grant "
                    f"'{verb}' on '{what}' to its service account (manifests/rbac.yaml): "
                    f"{detail}",
                    status,
                ) from None
            kind = {404: NotFound, 409: Conflict, 422: Invalid}.get(status, KubeError)
            raise kind(f"{verb} {what}{where}: {status} {detail}", status) from None

    # -- Jobs ------------------------------------------------------------------------------
    def apply_job(self, manifest: Mapping[str, Any]) -> Obj | None:
        """Create a stage's Job by server-side apply, or find it there already.

        Applying the same manifest again changes nothing, so a controller whose cache has
        not seen the Job yet does no harm. A Job of that name that another resource owns
        is refused by the API server (two controller owners) and is not adopted.
        """
        meta = manifest["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            return self._send(
                "create",
                "jobs.batch",
                ns,
                "PATCH",
                _path("batch", "v1", "jobs", ns, name),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                body=dict(manifest),
                content_type=APPLY,
            )
        except KubeError as exc:
            if _is_already_exists(exc):
                return None  # created meanwhile: found
            raise

    def patch_job(
        self,
        namespace: str,
        name: str,
        *,
        parallelism: int | None = None,
        suspend: bool | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> Obj | None:
        """Merge-patch a Job's parallelism, suspension and annotations (None removes
        one). Returns None when the Job is gone."""
        spec: Obj = {}
        if parallelism is not None:
            spec["parallelism"] = parallelism
        if suspend is not None:
            spec["suspend"] = suspend
        body: Obj = {}
        if spec:
            body["spec"] = spec
        if annotations:
            body["metadata"] = {"annotations": dict(annotations)}
        if not body:
            return None
        try:
            return self._send(
                "patch",
                "jobs.batch",
                namespace,
                "PATCH",
                _path("batch", "v1", "jobs", namespace, name),
                query=[("fieldManager", FIELD_MANAGER)],
                body=body,
                content_type=MERGE_PATCH,
            )
        except NotFound:
            return None

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods."""
        try:
            self._send(
                "delete",
                "jobs.batch",
                namespace,
                "DELETE",
                _path("batch", "v1", "jobs", namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except NotFound:
            pass

    # -- the resource ------------------------------------------------------------------------
    def patch_status(self, resource: Mapping[str, Any], status: Mapping[str, Any]) -> Obj | None:
        """Write ``status`` over the resource's status: a merge patch of the difference,
        through the status subresource, on condition that the resource is still at the
        resourceVersion it was read at (else :class:`Conflict`: reconcile again). Returns
        None when there is nothing to change or the resource is gone."""
        meta = resource["metadata"]
        diff = merge_patch(resource.get("status") or {}, dict(status))
        if not diff:
            return None
        body: Obj = {"status": diff}
        if meta.get("resourceVersion"):
            body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
        try:
            return self._send(
                "patch",
                f"{PLURAL}.{GROUP}/status",
                meta["namespace"],
                "PATCH",
                _path(GROUP, VERSION, PLURAL, meta["namespace"], meta["name"]) + "/status",
                query=[("fieldManager", FIELD_MANAGER)],
                body=body,
                content_type=MERGE_PATCH,
            )
        except NotFound:
            return None

    def delete_resource(self, resource: Mapping[str, Any]) -> None:
        """Delete the resource (what it owns goes with it), only if it is still the same
        object (uid)."""
        meta = resource["metadata"]
        body: Obj = {"propagationPolicy": "Background"}
        if meta.get("uid"):
            body["preconditions"] = {"uid": meta["uid"]}
        try:
            self._send(
                "delete",
                f"{PLURAL}.{GROUP}",
                meta["namespace"],
                "DELETE",
                _path(GROUP, VERSION, PLURAL, meta["namespace"], meta["name"]),
                body=body,
            )
        except (NotFound, Conflict):
            pass  # gone already, or another object of that name now

    # -- Events ------------------------------------------------------------------------------
    def create_event(
        self,
        resource: Mapping[str, Any],
        name: str,
        type_: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        """Record a core/v1 Event about the resource. ``name`` is deterministic for one
        fact, so reporting it again is a no-op (409 AlreadyExists is ignored)."""
        meta = resource["metadata"]
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name[:253], "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
        }
        try:
            self._send(
                "create",
                "events",
                meta["namespace"],
                "POST",
                _path("", "v1", "events", meta["namespace"]),
                body=event,
            )
        except Conflict:
            pass  # the same fact, reported before

    # -- checks at start -----------------------------------------------------------------------
    def check_crd(self, namespace: str | None) -> None:
        """Raise :class:`NotFound` with a hint when the MapReduceJob CRD is not installed,
        :class:`PermissionDenied` when the controller may not list the resources."""
        path = (
            _path(GROUP, VERSION, PLURAL, namespace)
            if namespace
            else f"/apis/{GROUP}/{VERSION}/{PLURAL}"
        )
        try:
            self._send("list", f"{PLURAL}.{GROUP}", namespace, "GET", path, query=[("limit", "1")])
        except NotFound as exc:
            raise NotFound(
                f"the MapReduceJob CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed: "
                "kubectl apply --server-side -f manifests/crd.yaml (or: kubemr crd | kubectl "
                "apply --server-side -f -)",
                exc.status,
            ) from None

    def missing_rights(
        self, namespace: str | None, rights: Sequence[Right] = RIGHTS
    ) -> list[Right]:
        """The rights this controller lacks in ``namespace`` (None: cluster-wide), asked
        with SelfSubjectAccessReviews, which every authenticated user may create."""
        missing = []
        for right in rights:
            attributes: Obj = {
                "verb": right.verb,
                "group": right.group,
                "resource": right.resource,
            }
            if right.subresource:
                attributes["subresource"] = right.subresource
            if namespace:
                attributes["namespace"] = namespace
            review = self._send(
                "create",
                "selfsubjectaccessreviews.authorization.k8s.io",
                None,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body={
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attributes},
                },
            )
            if not (review.get("status") or {}).get("allowed"):
                missing.append(right)
        return missing
