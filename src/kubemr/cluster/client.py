"""The command line's requests to the Kubernetes API.

Every request names its verb and resource, so a refusal reads as what it is: a 403 is
:class:`~kubemr.cluster.errors.Forbidden` naming the verb, the resource and the namespace;
a 404 on the API group is :class:`~kubemr.cluster.errors.CrdMissing`, on an object
:class:`~kubemr.cluster.errors.NotFound`; a server that does not answer is
:class:`~kubemr.cluster.errors.Unreachable`. Requests are raw JSON through
:class:`kubemr.controller.informer.KubeApi`, with bounded timeouts.

Example:
    jobs = JobsClient.connect(connect(kubeconfig, context))
    jobs.create(resource, "team-a")
    jobs.get("team-a", "wordcount")["status"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import urllib3
from kubernetes.client.exceptions import ApiException

from kubemr.cluster.connect import CONNECT_TIMEOUT, Connection
from kubemr.cluster.errors import ClusterError, Unreachable
from kubemr.cluster.refusals import Request, refusal, short_reason, unreachable
from kubemr.controller.informer import PODS, KubeApi, Resource
from kubemr.executors.k8s.manifests import GROUP, KIND, PLURAL, VERSION

Obj = dict[str, Any]

MAP_REDUCE_JOBS = Resource(GROUP, VERSION, PLURAL, KIND)
CORE_EVENTS = Resource("", "v1", "events", "Event")
POD_LOGS = Resource("", "v1", "pods/log", "Pod")
REQUEST_TIMEOUT = 30.0
"""Seconds a plain request may take once connected."""
MERGE_PATCH = "application/merge-patch+json"
PAGE = 500

__all__ = ["MAP_REDUCE_JOBS", "JobsClient", "LogStream"]


class LogStream:
    """The lines of one pod's log as the API server sends them; ``close()`` from another
    thread ends the iteration."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = False

    def __iter__(self) -> Iterator[str]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if buffer:
                yield buffer.decode("utf-8", "replace")
        except (urllib3.exceptions.HTTPError, OSError):
            if not self._closed:
                raise
        finally:
            self.close()

    def close(self) -> None:
        self._closed = True
        try:
            self._response.shutdown()  # unblocks a read in progress
        except Exception:
            pass
        try:
            self._response.release_conn()
        except Exception:
            pass


class JobsClient:
    """MapReduceJobs, their pods and Events, and pod logs.

    Args:
        api: raw JSON requests (its ``api_client`` also serves the pod log API).
        server: the API server's URL, for messages.
        resource: the MapReduceJob resource's address (the tests point it elsewhere).
    """

    def __init__(self, api: KubeApi, server: str, resource: Resource | None = None) -> None:
        self.api = api
        self.server = server
        self.resource = resource or MAP_REDUCE_JOBS

    @classmethod
    def connect(cls, connection: Connection) -> JobsClient:
        api = KubeApi(
            connection.api_client, timeout=REQUEST_TIMEOUT, connect_timeout=CONNECT_TIMEOUT
        )
        return cls(api, connection.server)

    # -- MapReduceJobs ------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> Obj:
        path = self.resource.object_path(namespace, name)
        return self._request("get", self.resource, namespace, "GET", path)

    def list(self, namespace: str | None, selector: str | None = None) -> list[Obj]:
        """Every MapReduceJob of ``namespace`` (None: of every namespace), in pages."""
        return self._list(self.resource, namespace, label_selector=selector)

    def create(self, body: Obj, namespace: str, *, dry_run: bool = False) -> Obj:
        """Create the resource; with ``dry_run`` the server checks everything (rights,
        schema, CEL rules) and stores nothing. Unknown fields are refused."""
        query = [("fieldValidation", "Strict")] + ([("dryRun", "All")] if dry_run else [])
        path = self.resource.collection_path(namespace)
        return self._request(
            "create", self.resource, namespace, "POST", path, query=query, body=body
        )

    def patch(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch (as ``kubectl patch --type=merge``); unknown fields refused."""
        path = self.resource.object_path(namespace, name)
        return self._request(
            "patch",
            self.resource,
            namespace,
            "PATCH",
            path,
            query=[("fieldValidation", "Strict")],
            body=patch,
            content_type=MERGE_PATCH,
        )

    def watch(
        self, namespace: str, name: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[Obj]:
        """The watch events of one resource from ``resource_version``, for at most
        ``timeout_seconds`` (the server ends the watch; a read waits a little longer)."""
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={name}"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        path = self.resource.collection_path(namespace)
        try:
            stream = self.api.stream(path, query=query, read_timeout=timeout_seconds + 10)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(exc, "watch", self.resource, namespace) from None
        try:
            yield from stream
        except (urllib3.exceptions.HTTPError, OSError, orjson.JSONDecodeError) as exc:
            raise Unreachable(f"the watch of {name} broke: {short_reason(exc)}") from None
        finally:
            stream.close()

    # -- what a job owns ----------------------------------------------------------------------
    def pods(self, namespace: str, selector: str) -> list[Obj]:
        return self._list(PODS, namespace, label_selector=selector)

    def events(self, namespace: str, field_selector: str) -> list[Obj]:
        return self._list(CORE_EVENTS, namespace, field_selector=field_selector)

    def pod_log(
        self, namespace: str, pod: str, container: str, *, follow: bool = False
    ) -> LogStream:
        """A pod's log; with ``follow``, until the container ends, with no read timeout: a
        task may be silent for long, and the caller closes the stream when done with it."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}/log"
        query = [("container", container)] + ([("follow", "true")] if follow else [])
        client = self.api.api_client
        try:
            request = client.param_serialize(
                "GET",
                path,
                query_params=query,
                header_params={"Accept": "*/*"},
                auth_settings=["BearerToken"],
            )
            timeout = (CONNECT_TIMEOUT, None if follow else REQUEST_TIMEOUT)
            response = client.call_api(*request, _request_timeout=timeout)
            if not 200 <= response.status <= 299:
                text = response.read().decode("utf-8", "replace")
                raise ApiException.from_response(http_resp=response, body=text, data=None)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(exc, "get", POD_LOGS, namespace) from None
        return LogStream(response.response)

    # -- plumbing ----------------------------------------------------------------------------
    def _list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        items: list[Obj] = []
        token = ""
        while True:
            query = [("limit", str(PAGE))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            path = resource.collection_path(namespace)
            page = self._request("list", resource, namespace, "GET", path, query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def _request(
        self,
        verb: str,
        resource: Resource,
        namespace: str | None,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        try:
            return self.api.request(
                method, path, query=query or [], body=body, content_type=content_type
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(exc, verb, resource, namespace) from None

    def _error(
        self, exc: Exception, verb: str, resource: Resource, namespace: str | None
    ) -> ClusterError:
        if not isinstance(exc, ApiException) or not exc.status:
            return unreachable(self.server, exc)
        request = Request(verb, resource, namespace, self.server, resource == self.resource)
        return refusal(int(exc.status), exc.body, request)
