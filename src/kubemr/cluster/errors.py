"""What can go wrong between the command line and a cluster, each error saying what was
refused and what to do. The exit code of each is chosen in :mod:`kubemr.cli.exits`."""

from __future__ import annotations

from kubemr.errors import KubemrError


class ClusterError(KubemrError):
    """Base class of the errors below."""


class NoCluster(ClusterError):
    """No configuration names a cluster, or the one named cannot be used."""


class Unreachable(ClusterError):
    """The API server did not answer: refused, timed out, TLS failed."""


class NotAuthenticated(ClusterError):
    """401: the API server refused the credentials (expired token, wrong certificate)."""


class Forbidden(ClusterError):
    """403: the user's RBAC rights do not allow ``verb`` on ``resource``."""

    def __init__(
        self, verb: str, resource: str, group: str, namespace: str | None, user: str | None
    ) -> None:
        self.verb = verb
        self.resource = resource
        self.group = group
        self.namespace = namespace
        self.user = user
        where = f" in namespace {namespace}" if namespace else ""
        who = f" as {user}" if user else ""
        qualified = f"{resource}.{group}" if group else resource
        super().__init__(
            f"not allowed to {verb} {resource}{where}{who} (ask for RBAC: verb '{verb}' "
            f"on '{qualified}'{where})"
        )


class CrdMissing(ClusterError):
    """404 on the API group/version: the MapReduceJob CRD is not installed."""


class NotFound(ClusterError):
    """404 on an object: the job, or its namespace, does not exist."""

    def __init__(self, message: str, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name


class ApiRefused(ClusterError):
    """Any other refusal: the object is invalid (422), exists already (409), the server
    failed (5xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class WaitTimeout(ClusterError):
    """``--timeout`` passed before the job ended."""


class JobDeleted(ClusterError):
    """The resource was deleted while it was followed."""
