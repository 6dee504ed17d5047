"""A shell command as a step on a real control plane (kubestack): mrjob's grep example,
ported (examples/mrjob/grep.py, a ``mapper_cmd``), submitted with ``kubemr submit --wait``
as a user runs it, run by the real ``kubemr worker`` in pods on inputs in MinIO; its part
files are ``kubemr run``'s of the same file on the same objects, byte for byte, and the
lines grep itself writes for each object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubemr.cli.exits import ExitCode
from tests.e2e import support
from tests.e2e.support import ControllerProcess, new_namespace, running_controller
from tests.support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The installation and the controller's kubeconfig are support's fixtures.
globals().update({name: getattr(support, name) for name in ("installed", "controller_kubeconfig")})

BUCKET = "cmds"
SECRET = "s3"
WORKER = f"{sys.executable} -m kubemr"
GREP = os.path.join(ROOT, "examples", "mrjob", "grep.py")
EXPRESSION = "the [a-z]*hale's"

WORDS = ["whale", "sea", "the", "ship's", "wale", "calf", "Ahab", "café", "rope"]


def objects() -> dict[str, bytes]:
    """Three objects of text, two of several splits (at a 2 KB split size), with lines
    that match and lines that almost do, one last line without its newline."""
    out = {}
    for i, lines in enumerate((120, 60, 7)):
        text = "".join(
            f"{j} the {WORDS[(i + j) % len(WORDS)]}'s {WORDS[(2 * j) % len(WORDS)]} "
            f"{WORDS[(i * j) % len(WORDS)]}hale's tail\n"
            for j in range(lines)
        )
        out[f"text/{i}.txt"] = (text + "the shale's end").encode()
    return out


@pytest.fixture(scope="module")
def cmd_ns(kube: Any, installed: None) -> Iterator[str]:
    with new_namespace(kube, "cmd") as name:
        yield name


@pytest.fixture(scope="module")
def cmd_controller(
    controller_kubeconfig: str, tmp_path_factory: Any
) -> Iterator[ControllerProcess]:
    with running_controller(controller_kubeconfig, tmp_path_factory.mktemp("controller")) as proc:
        yield proc


@pytest.fixture(scope="module")
def store(kube: Any, cmd_ns: str, minio: Any) -> Any:
    """The bucket with the inputs, and the workers' Secret in the namespace."""
    minio.make_bucket(BUCKET)
    s3 = minio.client()
    for key, body in objects().items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    env = minio.env()
    client.CoreV1Api(kube.api_client()).create_namespaced_secret(
        cmd_ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        ),
    )
    return minio


def kubemr(kube: Any, minio: Any, *args: str, cwd: Any = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m kubemr`` as a user runs it: the admin's kubeconfig, MinIO's credentials
    and endpoint in the environment."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBERNETES_", "AWS_", "KUBECONFIG"))
    }
    env.update(minio.env())
    env["KUBECONFIG"] = kube.kubeconfig
    return subprocess.run(
        [sys.executable, "-m", "kubemr", *args],
        capture_output=True, text=True, timeout=400, env=env, cwd=cwd,
    )  # fmt: skip


def stored(minio: Any, prefix: str) -> dict[str, bytes]:
    s3 = minio.client()
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return {
        o["Key"].rsplit("/", 1)[1]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }


def test_the_grep_port_on_the_cluster_writes_what_kubemr_run_and_grep_write(
    kube: Any, cmd_ns: str, cmd_controller: ControllerProcess, store: Any, tmp_path: Any
) -> None:
    flags = ["--split-size", "2000", "-p", f"expression={EXPRESSION}"]
    proc = kubemr(
        kube, store,
        "submit", GREP, "--name", "grep",
        "--input", f"s3://{BUCKET}/text/", "--output", f"s3://{BUCKET}/out/grep",
        "-n", cmd_ns, "--storage-secret", SECRET, "--s3-endpoint", store.endpoint,
        "--worker-command", WORKER, *flags, "--wait", "-o", "json", "--report",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == ExitCode.OK, proc.stderr[-4000:]
    # --report: the page and the picture, read from the output with the user's credentials.
    (page,) = tmp_path.glob("*-report.html")
    assert page.read_text().count("<svg") >= 2 and "wrote the report" in proc.stderr
    (picture,) = tmp_path.glob("*-report.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status = json.loads(proc.stdout)["status"]
    assert status["phase"] == "Succeeded", status
    cluster = stored(store, "out/grep")
    assert "_SUCCESS" in cluster, sorted(cluster)
    assert json.loads(cluster["_SUCCESS"])["output"]["format"] == "raw-value"
    parts = sorted(name for name in cluster if name.startswith("part-"))
    maps = status["plan"]["steps"][0]["maps"]
    assert maps > 3 and len(parts) == maps  # map-only: one part per map task

    local = tmp_path / "local"
    run = kubemr(
        kube, store,
        "run", GREP, "--input", f"s3://{BUCKET}/text/", "--output", str(local),
        "--workers", "2", "-q", *flags,
    )  # fmt: skip
    assert run.returncode == ExitCode.OK, run.stderr[-4000:]
    assert sorted(p.name for p in local.glob("part-*")) == parts
    for name in parts:
        assert cluster[name] == (local / name).read_bytes(), f"{name} differs from kubemr run's"

    # grep itself, on each object in turn: the parts in name order hold the same bytes.
    expected = b"".join(
        subprocess.run(
            ["grep", "-e", EXPRESSION], input=body, capture_output=True, check=False
        ).stdout
        for _, body in sorted(objects().items())
    )
    assert expected.count(b"\n") > 20
    assert b"".join(cluster[name] for name in parts) == expected
