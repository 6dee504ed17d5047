"""An API server's refusal as the error the command line reports: pure, from the HTTP
status and the body (a ``Status`` object, or the plain text of a path nobody serves).

- 401: :class:`NotAuthenticated`;
- 403: :class:`Forbidden`, naming the verb, the resource, the namespace and the user (a
  namespace being deleted refuses with a 403 too: that one is :class:`ApiRefused`);
- 404 with a ``Status`` naming an object: :class:`NotFound` (the job, or its namespace);
- 404 without one, on the MapReduceJob resource: :class:`CrdMissing` (the API server does
  not serve the group/version);
- anything else: :class:`ApiRefused` with the server's message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from kubemr.cluster.errors import (
    ApiRefused,
    ClusterError,
    CrdMissing,
    Forbidden,
    NotAuthenticated,
    NotFound,
    Unreachable,
)
from kubemr.controller.informer import Resource

Obj = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """What was asked, for the message: ``verb`` on ``resource`` in ``namespace``."""

    verb: str
    resource: Resource
    namespace: str | None
    server: str
    jobs: bool = False
    """Whether ``resource`` is the MapReduceJob resource (a bare 404: the CRD is missing)."""


def refusal(status: int, body: str | bytes | None, request: Request) -> ClusterError:
    """The error for an HTTP refusal of ``request``."""
    data = status_object(body)
    message = str(data.get("message") or "") if data else _plain(body)
    resource = request.resource
    if status == 401:
        return NotAuthenticated(
            f"the API server at {request.server} refused the credentials (401 "
            "Unauthorized): renew the token or certificate of the kubeconfig's user"
        )
    if status == 403 and "is being terminated" not in message:
        user = re.search(r'User "([^"]+)"', message)
        return Forbidden(
            request.verb,
            resource.plural,
            resource.group,
            request.namespace,
            user.group(1) if user else None,
        )
    if status == 404:
        return _not_found(data, request, message)
    return ApiRefused(f"{request.verb} {resource.plural}: {status} {message}".rstrip(), status)


def unreachable(server: str, exc: BaseException) -> Unreachable:
    return Unreachable(
        f"cannot reach the Kubernetes API server at {server}: {short_reason(exc)} "
        "(check --kubeconfig, --context and that the cluster is up)"
    )


def _not_found(data: Obj | None, request: Request, message: str) -> ClusterError:
    resource = request.resource
    details = (data or {}).get("details") or {}
    if data is None or data.get("reason") != "NotFound" or not details.get("name"):
        if request.jobs:
            return CrdMissing(
                f"the MapReduceJob CRD ({resource.plural}.{resource.group}/{resource.version}) "
                f"is not installed in the cluster at {request.server}: kubectl apply "
                "--server-side -f manifests/crd.yaml (or: kubemr crd | kubectl apply "
                "--server-side -f -)"
            )
        return NotFound(f"{resource.plural} not served by {request.server}: {message}")
    name, kind = str(details["name"]), str(details.get("kind") or "")
    if kind == "namespaces":
        return NotFound(f"namespace {name} not found", "namespace", name)
    if request.jobs and kind == resource.plural:
        where = f" in namespace {request.namespace}" if request.namespace else ""
        return NotFound(f"{resource.kind.lower()} {name} not found{where}", kind, name)
    return NotFound(message or f"{kind} {name} not found", kind, name)


def status_object(body: str | bytes | None) -> Obj | None:
    """The ``Status`` object of a refusal, or None when the body is not one."""
    try:
        data = orjson.loads(body) if body else None
    except (orjson.JSONDecodeError, TypeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "Status" else None


def _plain(body: str | bytes | None) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    return text.strip()[:300]


def short_reason(exc: BaseException) -> str:
    """A connection failure in a few words: ``[Errno 111] Connection refused``."""
    text = str(getattr(exc, "reason", None) or exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text.strip()[:200] or type(exc).__name__
