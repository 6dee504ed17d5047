"""The controller runtime without Kubernetes: informers over a fake API, leader election
over an in-memory Lease, the controller's wiring with hand-fed sources, the health server
and the log format."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import queue as queue_mod
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubemr.controller.health import HealthServer, Metrics
from kubemr.controller.informer import (
    CONFIG_MAPS,
    JOBS,
    LEASES,
    PODS,
    Informer,
    Resource,
    object_key,
    split_key,
)
from kubemr.controller.lease import (
    LeaderElector,
    LeaseRecord,
    held_spec,
    micro_time,
    parse_micro_time,
    released_spec,
)
from kubemr.controller.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    log_context,
    setup_logging,
)
from kubemr.controller.runtime import (
    EXIT_LEASE_LOST,
    EXIT_OK,
    Controller,
    ReconcileResult,
    any_keys,
    api_resource,
    count_api_requests,
    label_keys,
    own_key,
    owner_keys,
)
from kubemr.controller.workqueue import ExponentialBackoff, WorkQueue

Obj = dict[str, Any]


def eventually(what: str, check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def obj(name: str, ns: str = "default", rv: str = "1", **meta: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv, **meta}}


# == resources and keys ====================================================================
def test_resource_paths() -> None:
    assert PODS.collection_path("ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.collection_path() == "/api/v1/pods"
    assert JOBS.collection_path("a") == "/apis/batch/v1/namespaces/a/jobs"
    assert JOBS.object_path("a", "j") == "/apis/batch/v1/namespaces/a/jobs/j"
    assert LEASES.api_version == "coordination.k8s.io/v1"
    assert CONFIG_MAPS.api_version == "v1"
    mr = Resource("kubemr.io", "v1alpha1", "mapreducejobs", "MapReduceJob")
    assert mr.collection_path(None) == "/apis/kubemr.io/v1alpha1/mapreducejobs"
    nodes = Resource("", "v1", "nodes", "Node", namespaced=False)
    assert nodes.collection_path("ignored") == "/api/v1/nodes"


def test_keys() -> None:
    assert object_key(obj("a", "ns")) == "ns/a"
    assert object_key({"metadata": {"name": "node1"}}) == "node1"
    assert split_key("ns/a") == ("ns", "a")
    assert split_key("node1") == (None, "node1")


def test_key_functions() -> None:
    job = obj(
        "wc-map-0",
        "ns",
        labels={"kubemr.io/job": "wc"},
        ownerReferences=[
            {"apiVersion": "kubemr.io/v1alpha1", "kind": "MapReduceJob", "name": "wc"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "other"},
        ],
    )
    assert own_key(job) == ["ns/wc-map-0"]
    assert owner_keys()(job) == ["ns/wc"]
    assert owner_keys("MapReduceJob", api_group="kubemr.io")(job) == ["ns/wc"]
    assert owner_keys("MapReduceJob", api_group="elsewhere.io")(job) == []
    assert label_keys("kubemr.io/job")(job) == ["ns/wc"]
    assert label_keys("missing")(job) == []
    assert any_keys(owner_keys(), label_keys("kubemr.io/job"), own_key)(job) == [
        "ns/wc",
        "ns/wc-map-0",
    ]


# == informer over a fake API ==============================================================
_END = object()


class FakeStream:
    def __init__(self, query: dict[str, str]) -> None:
        self.query = query
        self.events: queue_mod.Queue[Any] = queue_mod.Queue()
        self.closed = False

    def __iter__(self) -> Iterator[Obj]:
        while True:
            item = self.events.get()
            if item is _END or self.closed:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.closed = True
        self.events.put(_END)


class FakeListWatchApi:
    """A server holding objects; lists page them; watches are streams fed by the test."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self.rv = 100
        self.list_queries: list[dict[str, str]] = []
        self.streams: list[FakeStream] = []
        self.fail_next_list: BaseException | None = None

    def put(self, o: Obj) -> Obj:
        self.rv += 1
        o = copy.deepcopy(o)
        o["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[object_key(o)] = o
        return copy.deepcopy(o)

    def remove(self, key: str) -> Obj:
        self.rv += 1
        return self.objects.pop(key)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Obj | None = None,
        timeout: float | None = None,
    ) -> Obj:
        assert method == "GET"
        q = dict(query)
        self.list_queries.append(q)
        if self.fail_next_list is not None:
            exc, self.fail_next_list = self.fail_next_list, None
            raise exc
        items = [copy.deepcopy(o) for _, o in sorted(self.objects.items())]
        start = int(q.get("continue") or 0)
        limit = int(q["limit"])
        page = items[start : start + limit]
        meta: Obj = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return {"kind": "ConfigMapList", "metadata": meta, "items": page}

    def stream(self, path: str, *, query: Any = (), read_timeout: float) -> FakeStream:
        s = FakeStream(dict(query))
        self.streams.append(s)
        return s

    def emit(self, kind: str, o: Obj) -> None:
        self.streams[-1].events.put({"type": kind, "object": o})


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def attach(self, informer: Informer) -> None:
        informer.add_handler(
            on_add=lambda o: self._rec("add", o),
            on_update=lambda old, new: self._rec("update", new, old),
            on_delete=lambda o: self._rec("delete", o),
        )

    def _rec(self, kind: str, o: Obj, old: Obj | None = None) -> None:
        old_rv = (old or {}).get("metadata", {}).get("resourceVersion")
        with self.lock:
            self.events.append((kind, object_key(o), old_rv))

    def kinds(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(k, key) for k, key, _ in self.events]

    def clear(self) -> None:
        with self.lock:
            self.events.clear()


@pytest.fixture
def fake_api() -> FakeListWatchApi:
    return FakeListWatchApi()


@pytest.fixture
def make_informer(fake_api: FakeListWatchApi) -> Iterator[Callable[..., Informer]]:
    made: list[Informer] = []

    def make(**kwargs: Any) -> Informer:
        kwargs.setdefault("resync_seconds", None)
        kwargs.setdefault("backoff", ExponentialBackoff(0.01, 0.05))
        informer = Informer(fake_api, CONFIG_MAPS, namespace="default", **kwargs)
        made.append(informer)
        return informer

    yield make
    for informer in made:
        informer.stop(2)


def test_informer_lists_in_pages_then_watches_from_the_list_version(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    for name in "abc":
        fake_api.put(obj(name))
    informer = make_informer(page_size=2, label_selector="app=x", watch_timeout_seconds=100)
    rec = Recorder()
    rec.attach(informer)
    informer.start()
    assert informer.wait_for_sync(2)
    assert sorted(rec.kinds()) == [("add", "default/a"), ("add", "default/b"), ("add", "default/c")]
    assert [q.get("continue") for q in fake_api.list_queries] == [None, "2"]
    assert all(q["labelSelector"] == "app=x" and q["limit"] == "2" for q in fake_api.list_queries)
    stream = eventually("a watch", lambda: fake_api.streams and fake_api.streams[-1])
    assert stream.query["watch"] == "true"
    assert stream.query["allowWatchBookmarks"] == "true"
    assert stream.query["resourceVersion"] == "103"
    assert stream.query["labelSelector"] == "app=x"
    assert 100 <= int(stream.query["timeoutSeconds"]) <= 125
    cached = informer.get("default/a")
    assert cached is not None
    assert cached["kind"] == "ConfigMap" and cached["apiVersion"] == "v1"
    assert sorted(informer.keys()) == ["default/a", "default/b", "default/c"]
    assert informer.list_count == 1


def test_informer_applies_watch_events_to_cache_and_handlers(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    fake_api.put(obj("a"))
    informer = make_informer()
    rec = Recorder()
    rec.attach(informer)
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    rec.clear()
    fake_api.emit("ADDED", fake_api.put(obj("b")))
    fake_api.emit("MODIFIED", fake_api.put(obj("a", data={"x": "1"})))
    deleted = fake_api.objects["default/b"]
    fake_api.remove("default/b")
    fake_api.emit("DELETED", deleted)
    fake_api.emit("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "999"}})
    eventually("the bookmark", lambda: informer.resource_version == "999")
    assert rec.events == [
        ("add", "default/b", None),
        ("update", "default/a", "101"),
        ("delete", "default/b", None),
    ]
    assert informer.keys() == ["default/a"]
    assert informer.get("default/a")["metadata"]["data"] == {"x": "1"}  # type: ignore[index]


def test_informer_relists_on_410_and_reports_only_the_differences(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    for name in "abc":
        fake_api.put(obj(name))
    informer = make_informer()
    rec = Recorder()
    rec.attach(informer)
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    rec.clear()
    # Changes the informer never hears about, then the server says its version is gone.
    fake_api.remove("default/a")
    fake_api.put(obj("b", labels={"changed": "yes"}))
    fake_api.put(obj("d"))
    fake_api.emit("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"})
    eventually("a relist", lambda: informer.list_count == 2)
    eventually("the new watch", lambda: len(fake_api.streams) == 2)
    assert (informer.expired_count, informer.failure_count) == (1, 0)
    assert sorted(rec.kinds()) == [
        ("add", "default/d"),
        ("delete", "default/a"),
        ("update", "default/b"),
    ]
    assert sorted(informer.keys()) == ["default/b", "default/c", "default/d"]
    assert fake_api.streams[-1].query["resourceVersion"] == str(fake_api.rv)


def test_informer_relists_after_a_broken_stream_with_backoff(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    fake_api.put(obj("a"))
    informer = make_informer()
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    fake_api.fail_next_list = ApiException(status=500, reason="boom")
    fake_api.streams[-1].events.put(ConnectionResetError("reset"))
    eventually("two more lists (one failed)", lambda: informer.list_count == 2)
    assert len(fake_api.list_queries) == 3
    assert informer.last_error is not None and "ApiException" in informer.last_error
    assert informer.is_alive()
    # The broken stream and the failed list, counted; the watch opened again.
    assert informer.failure_count == 2 and informer.expired_count == 0
    eventually("the watch again", lambda: informer.watch_count == 2)


def test_informer_caches_objects_without_managed_fields(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:data": {}}}]
    fake_api.put(obj("a", managedFields=managed))
    informer = make_informer()
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    fake_api.emit("ADDED", fake_api.put(obj("b", managedFields=managed)))
    eventually("b", lambda: informer.get("default/b") is not None)
    for key in ("default/a", "default/b"):
        cached = informer.get(key)
        assert cached is not None and "managedFields" not in cached["metadata"]
        assert cached["metadata"]["name"] == key.split("/")[1]
    kept = make_informer(transform=None)
    kept.start()
    kept.wait_for_sync(2)
    assert kept.get("default/a")["metadata"]["managedFields"] == managed  # type: ignore[index]


def test_informer_resumes_a_watch_that_ends_without_relisting(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    informer = make_informer()
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    fake_api.emit("ADDED", fake_api.put(obj("a")))
    rv = fake_api.rv
    fake_api.streams[-1].events.put(_END)  # the server's timeoutSeconds passed
    eventually("the next watch", lambda: len(fake_api.streams) == 2)
    assert fake_api.streams[-1].query["resourceVersion"] == str(rv)
    assert informer.list_count == 1


def test_informer_resync_calls_update_for_every_cached_object(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    fake_api.put(obj("a"))
    fake_api.put(obj("b"))
    informer = make_informer(resync_seconds=0.05)
    rec = Recorder()
    rec.attach(informer)
    informer.start()
    informer.wait_for_sync(2)
    eventually("a resync", lambda: informer.resync_count >= 1)
    updates = {key for kind, key, _ in rec.events if kind == "update"}
    assert updates == {"default/a", "default/b"}


def test_a_failing_handler_does_not_stop_the_informer(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    informer = make_informer()
    seen: list[str] = []

    def bad(o: Obj) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(on_add=bad)
    informer.add_handler(on_add=lambda o: seen.append(object_key(o)))
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    fake_api.emit("ADDED", fake_api.put(obj("a")))
    fake_api.emit("ADDED", fake_api.put(obj("b")))
    eventually("both adds", lambda: seen == ["default/a", "default/b"])
    assert informer.is_alive()


def test_informer_index(fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]) -> None:
    fake_api.put(obj("p1", labels={"job-name": "j1"}))
    fake_api.put(obj("p2", labels={"job-name": "j1"}))
    informer = make_informer()
    informer.add_index("job", lambda o: [o["metadata"].get("labels", {}).get("job-name", "")])
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    assert sorted(object_key(o) for o in informer.by_index("job", "j1")) == [
        "default/p1",
        "default/p2",
    ]
    fake_api.emit("MODIFIED", fake_api.put(obj("p2", labels={"job-name": "j2"})))
    eventually("the re-index", lambda: len(informer.by_index("job", "j2")) == 1)
    assert [object_key(o) for o in informer.by_index("job", "j1")] == ["default/p1"]
    fake_api.emit("DELETED", fake_api.objects["default/p1"])
    eventually("the removal", lambda: informer.by_index("job", "j1") == [])


def test_informer_stop_is_prompt(
    fake_api: FakeListWatchApi, make_informer: Callable[..., Informer]
) -> None:
    informer = make_informer(resync_seconds=30)
    informer.start()
    informer.wait_for_sync(2)
    eventually("a watch", lambda: fake_api.streams)
    started = time.monotonic()
    informer.stop(2)
    assert time.monotonic() - started < 1
    assert not informer.is_alive()
    assert fake_api.streams[-1].closed


# == leader election over an in-memory Lease ===============================================
class FakeLeaseApi:
    """Leases with resourceVersions and the API server's 404/409 answers."""

    def __init__(self) -> None:
        self.leases: dict[str, Obj] = {}
        self.rv = 0
        self.lock = threading.RLock()
        self.before_put: Callable[[], None] | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Any = (),
        body: Obj | None = None,
        timeout: float | None = None,
    ) -> Obj:
        if method == "PUT" and self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        with self.lock:
            if method == "GET":
                if path not in self.leases:
                    raise ApiException(status=404, reason="NotFound")
                return copy.deepcopy(self.leases[path])
            assert body is not None
            if method == "POST":
                name = body["metadata"]["name"]
                key = f"{path}/{name}"
                if key in self.leases:
                    raise ApiException(status=409, reason="AlreadyExists")
                return self._store(key, body)
            if method == "PUT":
                current = self.leases.get(path)
                if current is None:
                    raise ApiException(status=404, reason="NotFound")
                sent = body["metadata"].get("resourceVersion")
                if sent != current["metadata"]["resourceVersion"]:
                    raise ApiException(status=409, reason="Conflict")
                return self._store(path, body)
        raise AssertionError(method)

    def _store(self, key: str, body: Obj) -> Obj:
        self.rv += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.leases[key] = stored
        return copy.deepcopy(stored)

    def spec(self) -> Obj:
        (lease,) = self.leases.values()
        return lease["spec"]


class SwitchableApi:
    """One candidate's view of the shared API; ``broken`` makes its requests fail."""

    def __init__(self, api: FakeLeaseApi) -> None:
        self.api = api
        self.broken = False

    def request(self, method: str, path: str, **kwargs: Any) -> Obj:
        if self.broken:
            raise ConnectionRefusedError("network down")
        return self.api.request(method, path, **kwargs)


class ManualClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def elector(api: Any, identity: str, clock: ManualClock | None = None, **kw: Any) -> LeaderElector:
    kw.setdefault("lease_seconds", 15)
    kw.setdefault("renew_seconds", 2)
    kw.setdefault("renew_deadline", 10)
    if clock is not None:
        kw["clock"] = clock
    return LeaderElector(api, "ctl", "sys", identity=identity, **kw)


def test_micro_time_round_trip() -> None:
    t = 1_700_000_000.123456
    text = micro_time(t)
    assert text == "2023-11-14T22:13:20.123456Z"
    assert abs(parse_micro_time(text) - t) < 1e-6


def test_held_and_released_specs() -> None:
    free = LeaseRecord("", 0, None, None, 0)
    spec = held_spec(free, "me", 100.0, 15)
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(100.0)
    mine = LeaseRecord.of({"spec": spec})
    renewed = held_spec(mine, "me", 105.0, 15)
    assert renewed["acquireTime"] == micro_time(100.0)
    assert renewed["renewTime"] == micro_time(105.0)
    taken = held_spec(mine, "you", 120.0, 15)
    assert taken["leaseTransitions"] == 1
    assert taken["acquireTime"] == micro_time(120.0)
    released = released_spec(LeaseRecord.of({"spec": taken}), 130.0)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 1
    after_release = held_spec(LeaseRecord.of({"spec": released}), "me", 131.0, 15)
    assert after_release["leaseTransitions"] == 2


def test_elector_rejects_inconsistent_timings() -> None:
    with pytest.raises(ValueError):
        elector(FakeLeaseApi(), "a", lease_seconds=10, renew_deadline=10)
    with pytest.raises(ValueError):
        elector(FakeLeaseApi(), "a", renew_seconds=10, renew_deadline=5)


def test_one_candidate_creates_and_holds_the_lease_the_other_waits() -> None:
    api = FakeLeaseApi()
    ca, cb = ManualClock(), ManualClock()
    a, b = elector(api, "a", ca), elector(api, "b", cb)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "a"
    assert b.holder == "a"
    # a renews: b's view of the record changes, so its expiry clock restarts.
    ca.now += 10
    cb.now += 10
    assert a.try_acquire_or_renew()
    cb.now += 14
    assert not b.try_acquire_or_renew()
    assert api.spec()["holderIdentity"] == "a"


def test_a_lease_not_renewed_for_its_duration_is_taken_over() -> None:
    api = FakeLeaseApi()
    ca, cb = ManualClock(), ManualClock()
    a, b = elector(api, "a", ca), elector(api, "b", cb)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    cb.now += 14.9
    assert not b.try_acquire_or_renew()
    cb.now += 0.2
    assert b.try_acquire_or_renew()
    spec = api.spec()
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    # a comes back: the lease is b's now.
    assert not a.try_acquire_or_renew()


def test_two_writers_of_one_version_cannot_both_win() -> None:
    api = FakeLeaseApi()
    a, b = elector(api, "a"), elector(api, "b")
    assert a.try_acquire_or_renew()
    a._leader.set()
    assert a.release()
    # c and d both read the released lease; d writes first, so c's write conflicts.
    c, d = elector(api, "c"), elector(api, "d")
    results: dict[str, bool] = {}
    api.before_put = lambda: results.__setitem__("d", d.try_acquire_or_renew())
    results["c"] = c.try_acquire_or_renew()
    assert results == {"d": True, "c": False}
    assert api.spec()["holderIdentity"] == "d"
    assert not b.try_acquire_or_renew()


def test_release_lets_the_next_candidate_take_over_at_once() -> None:
    api = FakeLeaseApi()
    a, b = elector(api, "a"), elector(api, "b")
    a.start()
    assert a.wait_until_leader(2)
    assert not b.try_acquire_or_renew()
    a.stop(release=True)
    assert api.spec()["holderIdentity"] == ""
    assert not a.is_leader()
    assert b.try_acquire_or_renew()


def test_a_leader_that_cannot_renew_gives_up_after_the_deadline() -> None:
    shared = FakeLeaseApi()
    view = SwitchableApi(shared)
    lost = threading.Event()
    a = elector(view, "a", lease_seconds=3, renew_seconds=0.05, renew_deadline=0.3,
                on_lost=lost.set)  # fmt: skip
    a.start()
    assert a.wait_until_leader(2)
    view.broken = True
    started = time.monotonic()
    assert lost.wait(3)
    assert 0.25 <= time.monotonic() - started < 2
    assert a.lost() and not a.is_leader()
    eventually("the elector thread to end", lambda: not a.is_alive())


def test_a_leader_that_sees_another_holder_gives_up_at_once() -> None:
    api = FakeLeaseApi()
    lost = threading.Event()
    a = elector(api, "a", lease_seconds=30, renew_seconds=0.05, renew_deadline=20,
                on_lost=lost.set)  # fmt: skip
    a.start()
    assert a.wait_until_leader(2)
    with api.lock:
        (path,) = api.leases
        lease = copy.deepcopy(api.leases[path])
        lease["spec"]["holderIdentity"] = "intruder"
        api._store(path, lease)
    assert lost.wait(2)
    a.stop(release=True)  # not the holder: leaves the lease alone
    assert api.spec()["holderIdentity"] == "intruder"


# == the controller with hand-fed sources ==================================================
class FakeSource:
    def __init__(self, name: str = "fake", synced: bool = True) -> None:
        self.name = name
        self.handlers: list[tuple[Any, Any, Any]] = []
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.synced = threading.Event()
        if synced:
            self.synced.set()

    def add_handler(self, on_add: Any = None, on_update: Any = None, on_delete: Any = None) -> None:
        self.handlers.append((on_add, on_update, on_delete))

    def start(self) -> None:
        self.started.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()

    def has_synced(self) -> bool:
        return self.started.is_set() and self.synced.is_set()

    def is_alive(self) -> bool:
        return self.started.is_set() and not self.stopped.is_set()

    def add(self, o: Obj) -> None:
        for on_add, _, _ in self.handlers:
            on_add(o)

    def update(self, old: Obj, new: Obj) -> None:
        for _, on_update, _ in self.handlers:
            on_update(old, new)

    def delete(self, o: Obj) -> None:
        for _, _, on_delete in self.handlers:
            on_delete(o)


class Calls:
    """A reconcile that records its keys and can be told what to do per key."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.lock = threading.Lock()
        self.behaviour: dict[str, Callable[[], ReconcileResult | None]] = {}

    def __call__(self, key: str) -> ReconcileResult | None:
        with self.lock:
            self.keys.append(key)
            act = self.behaviour.get(key)
        return act() if act else None

    def count(self, key: str) -> int:
        with self.lock:
            return self.keys.count(key)


class Running:
    """A controller's run() in a thread."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.controller.run()

    def stop(self, timeout: float = 5.0) -> int | None:
        self.controller.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        return self.code


def fast_queue() -> WorkQueue:
    return WorkQueue(backoff=ExponentialBackoff(0.01, 0.05))


def test_events_map_to_keys_and_are_reconciled() -> None:
    calls = Calls()
    controller = Controller(calls, workers=2, queue=fast_queue(), handle_signals=False)
    primary, jobs, pods = FakeSource("mr"), FakeSource("jobs"), FakeSource("pods")
    controller.watch(primary)
    controller.watch(jobs, owner_keys("MapReduceJob"))
    controller.watch(pods, label_keys("kubemr.io/job"))
    running = Running(controller)
    eventually("workers", lambda: controller.is_ready())
    primary.add(obj("wc", "ns"))
    eventually("the resource's reconcile", lambda: calls.count("ns/wc") == 1)
    ref = {"apiVersion": "kubemr.io/v1", "kind": "MapReduceJob", "name": "other"}
    jobs.update(
        obj("other-map", "ns", rv="1"), obj("other-map", "ns", rv="2", ownerReferences=[ref])
    )
    eventually("the owner's reconcile", lambda: calls.count("ns/other") == 1)
    pods.delete(obj("p", "ns2", labels={"kubemr.io/job": "third"}))
    eventually("the labelled reconcile", lambda: calls.count("ns2/third") == 1)
    assert running.stop() == EXIT_OK
    assert all(s.stopped.is_set() for s in (primary, jobs, pods))
    assert controller.metrics.total("reconcile_total") == 3
    assert not controller.is_alive()


def test_workers_start_only_after_every_source_synced() -> None:
    calls = Calls()
    controller = Controller(calls, handle_signals=False)
    synced, lagging = FakeSource("a"), FakeSource("b", synced=False)
    controller.watch(synced)
    controller.watch(lagging)
    running = Running(controller)
    eventually("the sources to start", lambda: lagging.started.is_set())
    synced.add(obj("x"))
    time.sleep(0.2)
    assert calls.keys == []
    assert not controller.is_ready()
    lagging.synced.set()
    eventually("the reconcile", lambda: calls.keys == ["default/x"])
    assert controller.is_ready()
    running.stop()


def test_a_failing_reconcile_is_retried_with_backoff_and_logged() -> None:
    calls = Calls()
    failures = iter([RuntimeError("first"), RuntimeError("second")])

    def flaky() -> None:
        exc = next(failures, None)
        if exc is not None:
            raise exc

    calls.behaviour["default/x"] = flaky
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    runtime_log = logging.getLogger("kubemr.controller.runtime")
    runtime_log.addHandler(handler)
    try:
        controller = Controller(calls, queue=fast_queue(), handle_signals=False)
        source = FakeSource()
        controller.watch(source)
        running = Running(controller)
        eventually("ready", controller.is_ready)
        source.add(obj("x"))
        eventually("the third attempt", lambda: calls.count("default/x") == 3)
        time.sleep(0.1)
        assert calls.count("default/x") == 3  # success ends the retries
        assert controller.queue.num_requeues("default/x") == 0  # and forgets the backoff
        assert controller.metrics.total("reconcile_errors_total") == 2
        running.stop()
    finally:
        runtime_log.removeHandler(handler)
    errors = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [e for e in errors if e["level"] == "ERROR"]
    assert len(errors) == 2
    first = errors[0]
    assert first["namespace"] == "default" and first["job"] == "x"
    assert len(first["reconcile_id"]) == 8
    assert errors[0]["reconcile_id"] != errors[1]["reconcile_id"]
    assert "RuntimeError: first" in first["exc"]
    assert [e["retries"] for e in errors] == [0, 1]


def test_requeue_after_reconciles_again_without_an_event() -> None:
    calls = Calls()
    calls.behaviour["default/x"] = lambda: ReconcileResult(requeue_after=0.05)
    controller = Controller(calls, handle_signals=False)
    source = FakeSource()
    controller.watch(source)
    running = Running(controller)
    eventually("ready", controller.is_ready)
    source.add(obj("x"))
    eventually("three reconciles", lambda: calls.count("default/x") >= 3, timeout=3)
    running.stop()


def test_a_key_is_never_reconciled_by_two_workers_at_once() -> None:
    active: set[str] = set()
    overlaps: list[str] = []
    lock = threading.Lock()
    count = 0

    def reconcile(key: str) -> None:
        nonlocal count
        with lock:
            if key in active:
                overlaps.append(key)
            active.add(key)
            count += 1
        time.sleep(0.002)
        with lock:
            active.discard(key)

    controller = Controller(reconcile, workers=6, handle_signals=False)
    source = FakeSource()
    controller.watch(source)
    running = Running(controller)
    eventually("ready", controller.is_ready)
    for i in range(600):
        source.add(obj(f"k{i % 3}"))
        if i % 50 == 0:
            time.sleep(0.003)
    eventually("the queue to drain", lambda: len(controller.queue) == 0)
    running.stop()
    assert not overlaps
    assert 3 <= count < 600


def test_health_endpoints() -> None:
    controller = Controller(Calls(), health_address=("127.0.0.1", 0), handle_signals=False)
    source = FakeSource(synced=False)
    controller.watch(source)
    running = Running(controller)
    health = controller.health
    assert health is not None
    eventually("the server", health.is_running)
    base = "http://{}:{}".format(*health.address)

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    eventually("alive", lambda: status("/healthz") == 200)
    assert status("/readyz") == 503
    source.synced.set()
    eventually("ready", lambda: status("/readyz") == 200)
    source.add(obj("x"))
    eventually("a reconcile", lambda: controller.metrics.total("reconcile_total") == 1)
    with urllib.request.urlopen(base + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    assert "kubemr_controller_reconcile_total 1" in text
    assert "kubemr_controller_workqueue_depth 0" in text
    assert "kubemr_controller_leader 1" in text
    assert status("/nope") == 404
    running.stop()
    assert not health.is_running()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/healthz", timeout=1)


def test_liveness_fails_when_a_reconcile_is_stuck() -> None:
    release = threading.Event()
    controller = Controller(
        lambda key: release.wait(5) and None, stuck_seconds=0.1, handle_signals=False
    )
    source = FakeSource()
    controller.watch(source)
    running = Running(controller)
    eventually("ready", controller.is_ready)
    assert controller.is_alive()
    source.add(obj("x"))
    eventually("the liveness probe to fail", lambda: not controller.is_alive())
    release.set()
    eventually("alive again", controller.is_alive)
    running.stop()


def test_only_the_leader_reconciles_and_losing_the_lease_exits_distinctly() -> None:
    shared = FakeLeaseApi()
    views = [SwitchableApi(shared), SwitchableApi(shared)]
    calls = [Calls(), Calls()]
    sources = [FakeSource("a"), FakeSource("b")]
    controllers = []
    for i in range(2):
        el = LeaderElector(
            views[i], "ctl", "sys", identity=f"c{i}",
            lease_seconds=1, renew_seconds=0.05, renew_deadline=0.3,
        )  # fmt: skip
        c = Controller(calls[i], elector=el, handle_signals=False)
        c.watch(sources[i])
        controllers.append(c)
    running = [Running(c) for c in controllers]
    eventually("a leader", lambda: any(c.is_leader() for c in controllers))
    leader = 0 if controllers[0].is_leader() else 1
    standby = 1 - leader
    eventually("a warm standby to be ready", controllers[standby].is_ready)
    for s in sources:
        s.add(obj("x"))
    eventually("the leader's reconcile", lambda: calls[leader].count("default/x") == 1)
    time.sleep(0.1)
    assert calls[standby].keys == []
    # Cut the leader off: it gives up after the renew deadline, the standby takes over
    # once the lease (1 s) runs out.
    views[leader].broken = True
    started = time.monotonic()
    running[leader].thread.join(3)
    assert running[leader].code == EXIT_LEASE_LOST
    assert controllers[leader].exit_code == EXIT_LEASE_LOST
    eventually("the standby's reconcile", lambda: calls[standby].count("default/x") == 1)
    assert time.monotonic() - started < 3
    assert shared.spec()["holderIdentity"] == f"c{standby}"
    # A clean stop releases the lease.
    assert running[standby].stop() == EXIT_OK
    assert shared.spec()["holderIdentity"] == ""


def test_sigterm_stops_run_cleanly() -> None:
    controller = Controller(Calls())
    controller.watch(FakeSource())
    before = signal.getsignal(signal.SIGTERM)

    def send_when_ready() -> None:
        eventually("ready", controller.is_ready)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_ready, daemon=True)
    sender.start()
    started = time.monotonic()
    assert controller.run() == EXIT_OK
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before


def test_count_api_requests_by_verb_and_code() -> None:
    class Response:
        def __init__(self, status: int) -> None:
            self.status = status

    class FakeClient:
        def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
            if "boom" in url:
                raise ConnectionError("down")
            return Response(404 if "missing" in url else 200)

    metrics = Metrics()
    client = FakeClient()
    count_api_requests(client, metrics)
    count_api_requests(client, metrics)  # idempotent
    client.call_api("GET", "https://k/api/v1/pods?limit=500")
    client.call_api("GET", "https://k/api/v1/pods?watch=true&resourceVersion=5")
    client.call_api("GET", "https://k/api/v1/namespaces/x/pods/missing")
    client.call_api("POST", "https://k/apis/batch/v1/namespaces/x/jobs", None, {})
    with pytest.raises(ConnectionError):
        client.call_api("PUT", "https://k/boom")
    assert metrics.value("api_requests_total", verb="GET", code="200") == 1
    assert metrics.value("api_requests_total", verb="GET", code="404") == 1
    assert metrics.value("api_requests_total", verb="WATCH", code="200") == 1
    assert metrics.value("api_requests_total", verb="POST", code="200") == 1
    assert metrics.value("api_requests_total", verb="PUT", code="error") == 1
    assert 'kubemr_controller_api_requests_total{code="200",verb="WATCH"} 1' in metrics.render()
    # The same requests by the resource they name.
    by_resource = "api_requests_by_resource_total"
    assert metrics.value(by_resource, verb="GET", resource="pods", code="200") == 1
    assert metrics.value(by_resource, verb="GET", resource="pods", code="404") == 1
    assert metrics.value(by_resource, verb="WATCH", resource="pods", code="200") == 1
    assert metrics.value(by_resource, verb="POST", resource="jobs", code="200") == 1
    assert metrics.value(by_resource, verb="PUT", resource="other", code="error") == 1
    assert metrics.total(by_resource) == metrics.total("api_requests_total") == 5


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/pods", "pods"),
        ("/api/v1/namespaces/x/pods/p-1", "pods"),
        ("/api/v1/namespaces/x/events", "events"),
        ("/api/v1/namespaces/x", "namespaces"),
        ("/api/v1/namespaces", "namespaces"),
        ("/apis/batch/v1/namespaces/x/jobs/wc-map-0", "jobs"),
        ("/apis/kubemr.io/v1alpha1/namespaces/x/mapreducejobs/wc/status", "mapreducejobs/status"),
        ("/apis/kubemr.io/v1alpha1/mapreducejobs", "mapreducejobs"),
        ("/apis/coordination.k8s.io/v1/namespaces/s/leases/kubemr", "leases"),
        ("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "selfsubjectaccessreviews"),
        ("/version", "other"),
        ("/apis/batch/v1", "other"),
    ],
)
def test_api_resource_names_the_resource_of_a_path(path: str, resource: str) -> None:
    assert api_resource(path) == resource


# == health server and metrics on their own ================================================
def test_metrics_render_and_a_broken_gauge() -> None:
    m = Metrics(prefix="t")
    m.describe("things_total", "Things.")
    m.inc("things_total", kind='a"b')
    m.inc("things_total", 2, kind="c")
    m.gauge("depth", lambda: 3)
    m.gauge("broken", lambda: 1 / 0)
    text = m.render()
    assert "# HELP t_things_total Things." in text
    assert 't_things_total{kind="a\\"b"} 1' in text
    assert 't_things_total{kind="c"} 2' in text
    assert "t_depth 3" in text
    assert "t_broken" not in text
    m.gauge_family("lists", "informer", lambda: {"pods": 2, "jobs": 1}, "Lists.")
    m.gauge_family("broken_family", "informer", lambda: {"x": 1 / 0})
    text = m.render()
    assert '# TYPE t_lists gauge\nt_lists{informer="jobs"} 1\nt_lists{informer="pods"} 2' in text
    assert "t_broken_family" not in text


def test_the_controller_reports_each_informers_state() -> None:
    controller = Controller(Calls(), handle_signals=False)
    pods, plain = FakeSource("pods"), FakeSource("other")
    pods.list_count = 3  # type: ignore[attr-defined]
    pods.failure_count = lambda: 2  # type: ignore[attr-defined]
    controller.watch(pods)
    controller.watch(plain)
    pods.started.set()
    text = controller.metrics.render()
    assert 'kubemr_controller_informer_lists{informer="pods"} 3' in text
    assert 'kubemr_controller_informer_failures{informer="pods"} 2' in text
    assert 'kubemr_controller_informer_lists{informer="other"} 0' in text  # has none
    assert 'kubemr_controller_informer_synced{informer="pods"} 1' in text
    assert 'kubemr_controller_informer_synced{informer="other"} 0' in text


def test_a_raising_probe_answers_503() -> None:
    def broken() -> bool:
        raise RuntimeError("probe bug")

    server = HealthServer("127.0.0.1", 0, live=broken, ready=lambda: True)
    server.start()
    try:
        url = "http://{}:{}/healthz".format(*server.address)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=2)
        assert info.value.code == 503
    finally:
        server.stop()


# == logs ==================================================================================
def test_json_lines_carry_context_and_extra_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = setup_logging("DEBUG", fmt="json", stream=stream)
    try:
        log = logging.getLogger("kubemr.test")
        with log_context(namespace="ns", job="wc"), log_context(reconcile_id="r1"):
            log.info("created %s", "map-0", extra={"wave": 0})
        log.warning("outside")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
        # A second call replaces the handler instead of doubling the output.
        again = setup_logging("INFO", fmt="json", stream=stream)
        assert handler not in root.handlers and again in root.handlers
        handler = again
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    first, second, third = lines
    assert first["msg"] == "created map-0"
    assert first["level"] == "INFO" and first["logger"] == "kubemr.test"
    assert first["namespace"] == "ns" and first["job"] == "wc" and first["reconcile_id"] == "r1"
    assert first["wave"] == 0
    assert first["time"].endswith("Z")
    assert "job" not in second
    assert "ValueError: bad" in third["exc"]


def test_text_format_appends_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "levelno": 20, "msg": "hello", "job": "wc"}
    )
    line = TextFormatter().format(record)
    assert "INFO" in line and line.endswith("hello job=wc")


def test_unknown_log_format_is_rejected() -> None:
    with pytest.raises(ValueError):
        setup_logging("INFO", fmt="xml")  # type: ignore[arg-type]
