"""API server refusals as the command line reports them, from the bodies a real API
server sends."""

from __future__ import annotations

import json

import urllib3

from kubemr.cluster.errors import (
    ApiRefused,
    CrdMissing,
    Forbidden,
    NotAuthenticated,
    NotFound,
)
from kubemr.cluster.refusals import Request, refusal, short_reason, unreachable
from kubemr.controller.informer import Resource

JOBS = Resource("kubemr.dev", "v1alpha1", "mapreducejobs", "MapReduceJob")
PODS = Resource("", "v1", "pods", "Pod")
SERVER = "https://10.0.0.1:6443"


def status(code: int, reason: str, message: str, **details: str) -> str:
    return json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
         "reason": reason, "details": details, "code": code}
    )  # fmt: skip


def request(verb: str = "get", resource: Resource = JOBS, namespace: str = "team-a") -> Request:
    return Request(verb, resource, namespace, SERVER, resource == JOBS)


def test_403_names_verb_resource_namespace_and_user() -> None:
    body = status(
        403, "Forbidden",
        'mapreducejobs.kubemr.dev is forbidden: User "system:serviceaccount:team-a:ci" cannot '
        'create resource "mapreducejobs" in API group "kubemr.dev" in the namespace "team-a"',
    )  # fmt: skip
    error = refusal(403, body, request("create"))
    assert isinstance(error, Forbidden)
    assert str(error).startswith(
        "not allowed to create mapreducejobs in namespace team-a as system:serviceaccount:team-a:ci"
    )


def test_a_namespace_being_deleted_is_not_a_missing_right() -> None:
    body = status(
        403,
        "Forbidden",
        "unable to create new content in namespace x because it is being terminated",
    )
    assert isinstance(refusal(403, body, request("create")), ApiRefused)


def test_a_bare_404_on_the_resource_is_a_missing_crd() -> None:
    error = refusal(404, "404 page not found\n", request("list"))
    assert isinstance(error, CrdMissing)
    assert "(mapreducejobs.kubemr.dev/v1alpha1) is not installed in the cluster at" in str(error)
    assert "kubemr crd | kubectl apply --server-side -f -" in str(error)


def test_a_404_status_names_the_object() -> None:
    body = status(404, "NotFound", 'mapreducejobs.kubemr.dev "wc" not found', name="wc",
                  group="kubemr.dev", kind="mapreducejobs")  # fmt: skip
    error = refusal(404, body, request())
    assert isinstance(error, NotFound)
    assert str(error) == "mapreducejob wc not found in namespace team-a"
    body = status(404, "NotFound", 'namespaces "gone" not found', name="gone", kind="namespaces")
    assert str(refusal(404, body, request("create"))) == "namespace gone not found"
    body = status(404, "NotFound", 'pods "p" not found', name="p", kind="pods")
    assert str(refusal(404, body, request(resource=PODS))) == 'pods "p" not found'


def test_other_refusals_keep_the_server_message() -> None:
    body = status(409, "AlreadyExists", 'mapreducejobs.kubemr.dev "wc" already exists')
    error = refusal(409, body, request("create"))
    assert isinstance(error, ApiRefused) and error.status == 409
    assert str(error) == 'create mapreducejobs: 409 mapreducejobs.kubemr.dev "wc" already exists'
    assert isinstance(refusal(401, "Unauthorized", request()), NotAuthenticated)
    assert str(refusal(500, b"boom", request())) == "get mapreducejobs: 500 boom"


def test_an_unreachable_server_in_a_few_words() -> None:
    reason = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    failure = urllib3.exceptions.MaxRetryError(None, "/apis", reason)  # type: ignore[arg-type]
    assert short_reason(failure) == "[Errno 111] Connection refused"
    assert str(unreachable(SERVER, failure)) == (
        f"cannot reach the Kubernetes API server at {SERVER}: [Errno 111] Connection refused "
        "(check --kubeconfig, --context and that the cluster is up)"
    )
    assert short_reason(TimeoutError("read timed out.")) == "timed out"
