"""The examples as MapReduceJob resources on a real control plane (kubestack), run by the
real ``kubemr worker`` on MinIO, each output compared byte for byte (every part file)
with ``kubemr.run`` of the same job class on the same data, reducers and split size.

The resources are the ones committed in examples/kubernetes/, applied with kubectl after
a plain substitution of the bucket and the endpoint; the worker pods run this checkout's
Python (``template.command``) instead of an image, as kubestack runs pods as processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import cloudpickle
import pytest
import yaml

import kubemr
from kubemr.loader import load_job_class
from kubemr.versions import runtime_versions
from tests.e2e import test_controller as base
from tests.e2e.test_controller import Cluster, ControllerProcess, kubectl
from tests.support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

# The installation, the controller and the namespace are test_controller.py's fixtures,
# made this module's by name (pytest finds fixtures among a module's globals).
FIXTURES = ("installed", "controller_kubeconfig", "start_controller", "controller", "ns", "cluster")
globals().update({name: getattr(base, name) for name in FIXTURES})

EXAMPLES = os.path.join(ROOT, "examples")
MANIFESTS = os.path.join(EXAMPLES, "kubernetes")
DATA = os.path.join(EXAMPLES, "data")
BUCKET = "kubemr-examples"  # as the committed YAML names it
ENDPOINT = "http://minio.minio.svc:9000"
SECRET = "kubemr-examples-s3"
GREP_PATTERN = "whale|storm"

Obj = dict[str, Any]


# -- storage ----------------------------------------------------------------------------------


@dataclass
class Store:
    """A bucket of its own, holding the example inputs; the same bytes on local disk."""

    server: Any
    bucket: str
    local: str  # a directory with books/ and records/, as in the bucket

    @property
    def s3(self) -> Any:
        return self.server.client()

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def parts(self, prefix: str) -> dict[str, bytes]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert f"{prefix}/_SUCCESS" in keys, keys
        return {
            key.rsplit("/", 1)[1]: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            for key in keys
            if key.rsplit("/", 1)[1].startswith("part-")
        }


def head_lines(path: str, n: int) -> bytes:
    with open(path, "rb") as fh:
        return b"".join(fh.readlines()[:n])


@pytest.fixture
def store(minio: Any, cluster: Cluster, tmp_path: Any) -> Store:
    """A few KB of the example data in a fresh bucket, and the storage Secret applied from
    examples/kubernetes/storage-secret.yaml with MinIO's credentials."""
    bucket = f"ex-{uuid.uuid4().hex[:10]}"
    minio.make_bucket(bucket)
    local = tmp_path / "data"
    found = Store(minio, bucket, str(local))
    files = {
        **{
            f"books/{name}": head_lines(os.path.join(DATA, "books", name), 40)
            for name in sorted(os.listdir(os.path.join(DATA, "books")))
        },
        "records/records.txt": head_lines(os.path.join(DATA, "records.txt"), 60),
    }
    for key, body in files.items():
        found.put(key, body)
        path = local / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    with open(os.path.join(MANIFESTS, "storage-secret.yaml")) as fh:
        secret = yaml.safe_load(fh)
    env = minio.env()
    secret["stringData"] = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    apply(cluster, secret)
    return found


# -- resources --------------------------------------------------------------------------------
def apply(cluster: Cluster, body: Obj) -> None:
    out = kubectl(cluster.kubeconfig, "-n", cluster.ns, "apply", "-f", "-", stdin=json.dumps(body))
    assert out.returncode == 0, out.stderr


def render(filename: str, store: Store, env: dict[str, str] | None = None) -> Obj:
    """A committed example resource pointed at this test's bucket and MinIO, its workers
    run as this Python (kubestack pods are processes of this machine)."""
    with open(os.path.join(MANIFESTS, filename)) as fh:
        text = fh.read()
    text = text.replace(f"s3://{BUCKET}/", f"s3://{store.bucket}/")
    text = text.replace(ENDPOINT, store.server.endpoint)
    body = yaml.safe_load(text)
    template = body["spec"].setdefault("template", {})
    template.pop("image", None)
    template["command"] = [sys.executable, "-m", "kubemr"]
    variables = {e["name"]: e["value"] for e in template.get("env", [])}
    variables.update(env or {})
    if variables:
        template["env"] = [{"name": k, "value": v} for k, v in variables.items()]
    return body


def out_prefix(body: Obj, store: Store) -> str:
    output = body["spec"]["output"]
    assert output.startswith(f"s3://{store.bucket}/")
    return output[len(f"s3://{store.bucket}/") :]


def local_inputs(body: Obj, store: Store) -> list[str]:
    return [url.replace(f"s3://{store.bucket}", store.local, 1) for url in body["spec"]["inputs"]]


def run_and_compare(
    cluster: Cluster, store: Store, body: Obj, job: type[kubemr.MapReduce], tmp_path: Any
) -> tuple[Obj, dict[str, bytes]]:
    """Apply the resource, wait for it, and compare its part files with a local run."""
    name = body["metadata"]["name"]
    apply(cluster, body)
    status = cluster.wait_phase(name, "Succeeded", timeout=240)
    out = kubectl(
        cluster.kubeconfig, "-n", cluster.ns, "wait", "--for=condition=Complete",
        f"mrj/{name}", "--timeout=10s",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = store.parts(out_prefix(body, store))

    spec = body["spec"]
    local_out = tmp_path / f"local-{name}"
    summary = kubemr.run(
        job,
        inputs=local_inputs(body, store),
        output=str(local_out),
        reducers=spec["reducers"],
        split_size=spec["splitSize"],
        workers=spec["workers"]["max"],
    )
    want = {
        entry: (local_out / entry).read_bytes()
        for entry in sorted(os.listdir(local_out))
        if entry.startswith("part-")
    }
    assert sorted(got) == sorted(want)
    for part, data in want.items():
        assert got[part] == data, f"{part} differs from the local run's"
    assert status["result"]["recordsOut"] == summary["output"]["records"]
    assert status["result"]["filesOut"] == len(want)
    return status, got


def example_class(filename: str) -> type[kubemr.MapReduce]:
    """The example's class loaded from its file (so cloudpickle ships it by value)."""
    return load_job_class(os.path.join(EXAMPLES, filename))


# -- the three forms of the job's code --------------------------------------------------------
def upload_pickle(store: Store, cls: type, key: str, **meta: str) -> Obj:
    blob = cloudpickle.dumps(cls)
    store.put(key, blob)
    versions = {**runtime_versions(), **meta}
    store.put(f"{key}.meta.json", json.dumps(versions).encode())
    return {
        "pickle": {"url": f"s3://{store.bucket}/{key}", "sha256": hashlib.sha256(blob).hexdigest()}
    }


@pytest.mark.parametrize("form", ["module", "source", "pickle"])
def test_wordcount_in_each_code_form(
    form: str, cluster: Cluster, controller: ControllerProcess, store: Store, tmp_path: Any
) -> None:
    wordcount = example_class("wordcount.py")
    if form == "module":
        # The committed YAML names an image with the examples at /app; here the checkout.
        body = render("wordcount-module.yaml", store, env={"PYTHONPATH": ROOT})
        assert body["spec"]["job"] == {"module": "examples.wordcount:WordCount"}
    elif form == "source":
        body = render("wordcount-source.yaml", store)
        with open(os.path.join(EXAMPLES, "wordcount.py")) as fh:
            example = fh.read()
        # The inline source is examples/wordcount.py, but for its docstring.
        assert (
            body["spec"]["job"]["source"].split("import re", 1)[1]
            == example.split("import re", 1)[1]
        )
    else:
        body = render("wordcount-source.yaml", store)
        body["metadata"]["name"] = "wordcount-pickle"
        body["spec"]["output"] = f"s3://{store.bucket}/out/wordcount-pickle"
        body["spec"]["job"] = upload_pickle(store, wordcount, "jobs/wordcount.pkl")
    status, parts = run_and_compare(cluster, store, body, wordcount, tmp_path)
    assert len(parts) == 2
    assert [w["kind"] for w in status["waves"]] == ["plan", "map", "reduce", "commit"]
    assert status["plan"]["steps"][0]["maps"] > 2  # several map tasks
    counts = dict(json.loads(line) for data in parts.values() for line in data.splitlines())
    assert counts["the"] > 10


# -- more shapes of jobs ----------------------------------------------------------------------
def test_two_step_job(
    cluster: Cluster, controller: ControllerProcess, store: Store, tmp_path: Any
) -> None:
    body = render("two-step.yaml", store)
    status, parts = run_and_compare(cluster, store, body, example_class("two_step.py"), tmp_path)
    assert len(status["plan"]["steps"]) == 2
    kinds = [(w["kind"], w.get("step")) for w in status["waves"]]
    assert [k for k, _ in kinds] == ["plan", "map", "reduce", "map", "reduce", "commit"]
    assert len(parts) == 2


def test_total_order_sort(
    cluster: Cluster, controller: ControllerProcess, store: Store, tmp_path: Any
) -> None:
    body = render("total-sort.yaml", store)
    _, parts = run_and_compare(cluster, store, body, example_class("total_sort.py"), tmp_path)
    lines = b"".join(parts[name] for name in sorted(parts)).splitlines()
    with open(os.path.join(store.local, "records", "records.txt"), "rb") as fh:
        records = fh.read().splitlines()
    assert lines == sorted(records)
    assert all(parts.values())  # every reducer got a key range


def test_map_only_grep(
    cluster: Cluster,
    controller: ControllerProcess,
    store: Store,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GREP_PATTERN", GREP_PATTERN)  # for the local run
    body = render("grep-map-only.yaml", store)
    assert body["spec"]["template"]["env"] == [
        {"name": "GREP_PATTERN", "value": GREP_PATTERN},
    ]
    status, parts = run_and_compare(cluster, store, body, example_class("grep.py"), tmp_path)
    assert [w["kind"] for w in status["waves"]] == ["plan", "map", "commit"]
    assert status["plan"]["steps"] == [{"maps": len(parts), "reducers": 0}]
    assert len(parts) > 2
    assert b"".join(parts.values())  # some lines matched


# -- version skew -----------------------------------------------------------------------------
def test_pickle_of_another_python_is_refused_as_version_skew(
    cluster: Cluster, controller: ControllerProcess, store: Store
) -> None:
    body = render("wordcount-source.yaml", store)
    body["metadata"]["name"] = "skewed"
    body["spec"]["output"] = f"s3://{store.bucket}/out/skewed"
    body["spec"]["job"] = upload_pickle(
        store, example_class("wordcount.py"), "jobs/skewed.pkl", python="3.99"
    )
    apply(cluster, body)
    status = cluster.wait_phase("skewed", "Failed", timeout=180)
    failure = status["failure"]
    assert failure["reason"] == "VersionSkew", failure
    here = runtime_versions()["python"]
    assert f"python 3.99 (pickled) vs {here} (this worker)" in failure["message"]
    assert failure["task"] == "plan"
    out = kubectl(
        cluster.kubeconfig, "-n", cluster.ns, "wait", "--for=condition=Failed",
        "mrj/skewed", "--timeout=10s",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    listed = store.s3.list_objects_v2(Bucket=store.bucket, Prefix="out/skewed/")
    assert not listed.get("Contents")  # nothing written
