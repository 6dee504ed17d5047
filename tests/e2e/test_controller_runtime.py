"""The controller runtime against a real API server: informers (ConfigMaps, Jobs, a
custom resource), resync, relisting after 410 Gone, Lease-based leader election, and a
small controller run end to end."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubemr.controller.health import Metrics
from kubemr.controller.informer import (
    CONFIG_MAPS,
    JOBS,
    LEASES,
    Informer,
    KubeApi,
    Resource,
    object_key,
    split_key,
)
from kubemr.controller.lease import LeaderElector
from kubemr.controller.runtime import (
    EXIT_OK,
    Controller,
    ReconcileResult,
    count_api_requests,
    owner_keys,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

Obj = dict[str, Any]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def ns(kube: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube.api_client())
    name = f"rt-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture
def api(kube: Any) -> KubeApi:
    return KubeApi(kube.api_client())


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    made: list[Informer] = []
    yield made
    for informer in made:
        informer.stop(5)


class Events:
    def __init__(self, informer: Informer) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, bool]] = []  # (kind, key, old is new)
        informer.add_handler(
            on_add=lambda o: self._add("add", o),
            on_update=lambda old, new: self._add("update", new, old is new),
            on_delete=lambda o: self._add("delete", o),
        )

    def _add(self, kind: str, o: Obj, same: bool = False) -> None:
        with self.lock:
            self.seen.append((kind, object_key(o), same))

    def has(self, kind: str, key: str) -> bool:
        with self.lock:
            return any(k == kind and name == key for k, name, _ in self.seen)

    def resyncs(self, key: str) -> int:
        with self.lock:
            return sum(1 for k, name, same in self.seen if k == "update" and name == key and same)


def config_map(name: str, labels: dict[str, str] | None = None, **data: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data,
    }


def server_state(core: Any, ns: str, selector: str) -> dict[str, str]:
    items = core.list_namespaced_config_map(ns, label_selector=selector).items
    return {f"{ns}/{cm.metadata.name}": cm.metadata.resource_version for cm in items}


def cache_state(informer: Informer) -> dict[str, str]:
    return {object_key(o): o["metadata"]["resourceVersion"] for o in informer.objects()}


# -- informers -----------------------------------------------------------------------------
def test_informer_follows_config_maps(kube: Any, ns: str, api: KubeApi, informers: list) -> None:
    core = client.CoreV1Api(kube.api_client())
    core.create_namespaced_config_map(ns, config_map("before", {"app": "t"}, a="1"))
    core.create_namespaced_config_map(ns, config_map("unlabelled", a="1"))
    informer = Informer(api, CONFIG_MAPS, namespace=ns, label_selector="app=t")
    informers.append(informer)
    events = Events(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    assert events.has("add", f"{ns}/before")
    assert informer.keys() == [f"{ns}/before"]
    cached = informer.get(f"{ns}/before")
    assert cached is not None and cached["kind"] == "ConfigMap" and cached["data"] == {"a": "1"}

    core.create_namespaced_config_map(ns, config_map("after", {"app": "t"}, b="2"))
    wait_for("the add", lambda: events.has("add", f"{ns}/after"))
    core.patch_namespaced_config_map("before", ns, {"data": {"a": "changed"}})
    wait_for("the update", lambda: events.has("update", f"{ns}/before"))
    assert informer.get(f"{ns}/before")["data"] == {"a": "changed"}  # type: ignore[index]
    core.delete_namespaced_config_map("after", ns)
    wait_for("the delete", lambda: events.has("delete", f"{ns}/after"))
    # Losing the label is a delete for a filtered watch.
    core.patch_namespaced_config_map("before", ns, {"metadata": {"labels": {"app": "other"}}})
    wait_for("the label change", lambda: events.has("delete", f"{ns}/before"))
    core.create_namespaced_config_map(ns, config_map("last", {"app": "t"}))
    wait_for(
        "the cache to match the server",
        lambda: cache_state(informer) == server_state(core, ns, "app=t"),
    )
    assert informer.is_alive()
    started = time.monotonic()
    informer.stop(5)
    assert time.monotonic() - started < 3  # the open watch is cut, not waited out
    assert not informer.is_alive()


def test_informer_resync_calls_update_handlers(
    kube: Any, ns: str, api: KubeApi, informers: list
) -> None:
    core = client.CoreV1Api(kube.api_client())
    for name in ("one", "two"):
        core.create_namespaced_config_map(ns, config_map(name, {"app": "t"}))
    informer = Informer(api, CONFIG_MAPS, namespace=ns, resync_seconds=0.5)
    informers.append(informer)
    events = Events(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    wait_for("two resyncs", lambda: events.resyncs(f"{ns}/one") >= 2, 10)
    assert events.resyncs(f"{ns}/two") >= 1


@pytest.fixture(scope="module")
def widgets(kube: Any) -> Iterator[Resource]:
    """A throwaway custom resource kind, served once its CRD is Established."""
    api_client = kube.api_client()
    ext = client.ApiextensionsV1Api(api_client)
    group = f"t{uuid.uuid4().hex[:6]}.kubemr.io"
    name = f"widgets.{group}"
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )
    resource = Resource(group, "v1", "widgets", "Widget")
    api = KubeApi(api_client)

    def served() -> bool:
        try:
            api.request("GET", resource.collection_path("default"))
            return True
        except client.ApiException as exc:
            if exc.status == 404:  # discovery and handlers not caught up yet
                return False
            raise

    try:
        wait_for("the custom resource to be served", served)
        yield resource
    finally:
        ext.delete_custom_resource_definition(name)


def widget(group: str, name: str, size: int) -> Obj:
    return {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


def test_informer_follows_a_custom_resource(
    kube: Any, ns: str, api: KubeApi, informers: list, widgets: Resource
) -> None:
    custom = client.CustomObjectsApi(kube.api_client())
    group = widgets.group
    informer = Informer(api, widgets, namespace=ns)
    informers.append(informer)
    events = Events(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    custom.create_namespaced_custom_object(group, "v1", ns, "widgets", widget(group, "w", 3))
    wait_for("the widget", lambda: events.has("add", f"{ns}/w"))
    cached = informer.get(f"{ns}/w")
    assert cached is not None and cached["spec"] == {"size": 3} and cached["kind"] == "Widget"
    custom.patch_namespaced_custom_object(group, "v1", ns, "widgets", "w", {"spec": {"size": 4}})
    wait_for("the update", lambda: (informer.get(f"{ns}/w") or {}).get("spec") == {"size": 4})
    custom.delete_namespaced_custom_object(group, "v1", ns, "widgets", "w")
    wait_for("the delete", lambda: events.has("delete", f"{ns}/w"))
    assert informer.keys() == []


def test_a_watch_from_an_expired_version_relists(
    kube: Any, ns: str, api: KubeApi, informers: list, widgets: Resource
) -> None:
    custom = client.CustomObjectsApi(kube.api_client())
    group = widgets.group
    path = widgets.collection_path(ns)
    # The server's answer to a watch from before its history (the new kind's watch cache
    # starts at the CRD's creation): 410 Gone, as an ERROR event or as the status.
    query = [("watch", "true"), ("resourceVersion", "1"), ("timeoutSeconds", "5")]
    try:
        stream = api.stream(path, query=query, read_timeout=10)
        first = next(iter(stream))
        stream.close()
        assert first["type"] == "ERROR" and first["object"]["code"] == 410, first
    except client.ApiException as exc:
        assert exc.status == 410

    custom.create_namespaced_custom_object(group, "v1", ns, "widgets", widget(group, "a", 1))
    informer = Informer(api, widgets, namespace=ns)
    informers.append(informer)
    events = Events(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    wait_for("a watch", lambda: informer._stream is not None)
    assert informer.list_count == 1
    # Make the informer resume from a long-gone version, as after a long disconnect.
    with informer._lock:
        informer._resource_version = "1"
        stream = informer._stream
    assert stream is not None
    stream.close()
    wait_for("the relist", lambda: informer.list_count == 2)
    assert informer.resource_version not in (None, "1")
    custom.create_namespaced_custom_object(group, "v1", ns, "widgets", widget(group, "b", 2))
    wait_for("the next add", lambda: events.has("add", f"{ns}/b"))
    items = api.request("GET", path)["items"]
    assert cache_state(informer) == {
        f"{ns}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in items
    }
    assert informer.is_alive()


def test_informer_follows_jobs(kube: Any, ns: str, api: KubeApi, informers: list) -> None:
    batch = client.BatchV1Api(kube.api_client())
    informer = Informer(api, JOBS, namespace=ns)
    informers.append(informer)
    events = Events(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "idle"},
        "spec": {
            "suspend": True,  # no pods: only the object matters here
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "ignored", "command": ["true"]}],
                }
            },
        },
    }
    batch.create_namespaced_job(ns, job)
    wait_for("the job", lambda: events.has("add", f"{ns}/idle"))
    cached = informer.get(f"{ns}/idle")
    assert cached is not None and cached["spec"]["suspend"] is True
    batch.delete_namespaced_job("idle", ns, propagation_policy="Background")
    wait_for("the delete", lambda: events.has("delete", f"{ns}/idle"))


# -- leader election -----------------------------------------------------------------------
def test_two_candidates_one_leader_and_takeover(kube: Any, ns: str, api: KubeApi) -> None:
    def candidate(identity: str) -> LeaderElector:
        return LeaderElector(
            api, "ctl", ns, identity=identity,
            lease_seconds=3, renew_seconds=0.3, renew_deadline=2,
        )  # fmt: skip

    a, b = candidate("a"), candidate("b")
    a.start()
    b.start()
    try:
        wait_for("a leader", lambda: a.is_leader() or b.is_leader())
        time.sleep(1.0)  # several rounds: the other must stay a candidate
        assert a.is_leader() != b.is_leader()
        leader, standby = (a, b) if a.is_leader() else (b, a)
        lease = api.request("GET", LEASES.object_path(ns, "ctl"))
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == 3

        # The leader stops renewing without releasing (as if it hung or died).
        leader.stop(release=False)
        stopped = time.monotonic()
        assert standby.wait_until_leader(10)
        took = time.monotonic() - stopped
        assert took < 3 + 2 * 0.3 + 1.0, took  # the lease duration, a retry, and slack
        lease = api.request("GET", LEASES.object_path(ns, "ctl"))
        assert lease["spec"]["holderIdentity"] == standby.identity
        assert lease["spec"]["leaseTransitions"] == 1

        # A clean release hands over at once.
        c = candidate("c")
        c.start()
        time.sleep(0.5)
        assert not c.is_leader()
        standby.stop(release=True)
        released = time.monotonic()
        assert c.wait_until_leader(5)
        assert time.monotonic() - released < 2
        c.stop(release=True)
    finally:
        a.stop(release=False)
        b.stop(release=False)


# -- a controller end to end ---------------------------------------------------------------
def test_a_controller_keeps_an_owned_object_in_shape(kube: Any, ns: str) -> None:
    """A toy controller: each ConfigMap labelled ``role=parent`` gets a ``<name>-child``
    ConfigMap it owns, holding the parent's data. Edits to the child are undone."""
    api_client = kube.api_client()
    metrics = Metrics()
    count_api_requests(api_client, metrics)
    api = KubeApi(api_client)
    core = client.CoreV1Api(api_client)
    parents = Informer(api, CONFIG_MAPS, namespace=ns, label_selector="role=parent")
    children = Informer(api, CONFIG_MAPS, namespace=ns, label_selector="role=child")

    def reconcile(key: str) -> ReconcileResult:
        namespace, name = split_key(key)
        parent = parents.get(key)
        if parent is None:
            return ReconcileResult()  # garbage collection removes the child
        child = children.get(f"{namespace}/{name}-child")
        want = parent.get("data") or {}
        if child is None:
            body = config_map(f"{name}-child", {"role": "child"}, **want)
            body["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": name,
                    "uid": parent["metadata"]["uid"],
                    "controller": True,
                }
            ]
            try:
                core.create_namespaced_config_map(namespace, body)
            except client.ApiException as exc:
                if exc.status != 409:  # the cache lags our own create: fine
                    raise
        elif (child.get("data") or {}) != want:
            core.patch_namespaced_config_map(f"{name}-child", namespace, {"data": want})
        return ReconcileResult(requeue_after=60)

    elector = LeaderElector(api, "toy", ns, lease_seconds=5, renew_seconds=0.5, renew_deadline=3)
    controller = Controller(
        reconcile,
        workers=2,
        elector=elector,
        metrics=metrics,
        health_address=("127.0.0.1", 0),
        handle_signals=False,
    )
    controller.watch(parents)
    controller.watch(children, owner_keys("ConfigMap"))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(controller.run()), daemon=True)
    runner.start()
    try:
        assert controller.health is not None
        wait_for("the health server", controller.health.is_running)
        base = "http://{}:{}".format(*controller.health.address)
        wait_for("readiness", lambda: _status(base + "/readyz") == 200)
        wait_for("leadership", controller.is_leader)

        core.create_namespaced_config_map(ns, config_map("p", {"role": "parent"}, k="v"))
        wait_for("the child", lambda: _data(core, ns, "p-child") == {"k": "v"})
        core.patch_namespaced_config_map("p-child", ns, {"data": {"k": "tampered"}})
        wait_for("the repair", lambda: _data(core, ns, "p-child") == {"k": "v"})
        core.patch_namespaced_config_map("p", ns, {"data": {"k": "v2"}})
        wait_for("the new data", lambda: _data(core, ns, "p-child") == {"k": "v2"})

        assert _status(base + "/healthz") == 200
        wait_for("a lease renewal", lambda: 'verb="PUT"' in metrics.render(), 5)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'api_requests_total{code="200",verb="WATCH"}' in text
        assert 'api_requests_total{code="201",verb="POST"}' in text  # the lease, the child
        assert metrics.total("reconcile_total") >= 3
        assert metrics.total("reconcile_errors_total") == 0
    finally:
        controller.stop()
        runner.join(15)
    assert codes == [EXIT_OK]
    lease = api.request("GET", LEASES.object_path(ns, "toy"))
    assert lease["spec"].get("holderIdentity", "") == ""  # released on a clean stop


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _data(core: Any, ns: str, name: str) -> dict[str, str] | None:
    try:
        return core.read_namespaced_config_map(name, ns).data
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
