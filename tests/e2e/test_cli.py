"""The ``kubemr`` command line against a real control plane (kubestack), a real controller
(``kubemr controller`` under its ServiceAccount's token), real worker pods and MinIO:
``submit`` (a pickled job file, content-addressed; a module; ``--dry-run -o yaml`` applied
with kubectl), ``--wait`` to success, to failure with the root cause and to ``--timeout``,
``status``, ``list``, ``describe``, ``logs`` (from storage after the pods are gone, and
``--follow``), ``cancel``, and the one-line errors: no rights, no cluster, no CRD, no such
job. The CI examples' script (examples/ci/submit.sh) runs here as the pipelines run it.

The command runs as a subprocess (``python -m kubemr``), as a user runs it, with the
admin's kubeconfig and MinIO's credentials in its environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from kubemr.cli.exits import ExitCode
from kubemr.executors.k8s.manifests import GROUP, KIND, LABEL_JOB, PLURAL, VERSION
from kubemr.versions import runtime_versions
from tests.e2e import support
from tests.e2e.datajobs import WORDCOUNT
from tests.e2e.support import (
    Cluster,
    ControllerProcess,
    kubectl,
    new_namespace,
    running_controller,
    token_kubeconfig,
    wait_for,
)
from tests.support import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The installation and the controller's kubeconfig are support's fixtures.
globals().update({name: getattr(support, name) for name in ("installed", "controller_kubeconfig")})

BUCKET = "data"
SECRET = "s3"
WORKER = f"{sys.executable} -m kubemr"
INPUT = b"a b c\nb c\nc\n" * 5  # per file, three files: a 15, b 30, c 45

FAILING = """
import kubemr

class Poison(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        print("poison looks at", line.strip())
        if line.strip() == "c":
            raise ZeroDivisionError("poisoned line: " + line.strip())
        yield line, 1
"""

SLOW = """
import time
import kubemr

class Slow(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        print("slow saw", line.strip(), flush=True)
        time.sleep(0.3)
        yield line.strip(), 1
"""


# -- the cluster, the controller, storage -------------------------------------------------
@pytest.fixture(scope="module")
def cli_ns(kube: Any, installed: None) -> Iterator[str]:
    with new_namespace(kube, "cli") as name:
        yield name


@pytest.fixture(scope="module")
def cli_controller(
    controller_kubeconfig: str, tmp_path_factory: Any
) -> Iterator[ControllerProcess]:
    with running_controller(controller_kubeconfig, tmp_path_factory.mktemp("controller")) as proc:
        yield proc


@pytest.fixture(scope="module")
def minio(kube: Any, cli_ns: str) -> Iterator[Any]:
    """MinIO with the bucket and three input files, and the workers' Secret in the
    namespace."""
    from tests.integration.minio import MinioServer, minio_binary

    server = MinioServer(minio_binary())
    server.start()
    try:
        server.make_bucket(BUCKET)
        s3 = server.client()
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"in/{i}.txt", Body=INPUT)
        env = server.env()
        client.CoreV1Api(kube.api_client()).create_namespaced_secret(
            cli_ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=SECRET),
                string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
            ),
        )
        yield server
    finally:
        server.close()


@dataclass
class Cli:
    """``python -m kubemr`` as the admin, with MinIO's credentials; the namespace."""

    kube: Any
    ns: str
    minio: Any
    admin: Cluster

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KUBERNETES_", "AWS_", "KUBECONFIG"))
        }
        env.update(self.minio.env())
        env["KUBECONFIG"] = self.kube.kubeconfig
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        env.update(extra)
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kubemr", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env(),
            cwd=ROOT,
        )

    def submit_args(self, job: str, output: str, *more: str) -> list[str]:
        return [
            "submit", job,
            "--input", f"s3://{BUCKET}/in/",
            "--output", f"s3://{BUCKET}/{output}",
            "-n", self.ns,
            "--storage-secret", SECRET,
            "--s3-endpoint", self.minio.endpoint,
            "--worker-command", WORKER,
            *more,
        ]  # fmt: skip

    def get(self, name: str) -> dict[str, Any]:
        return self.admin.get(name)

    def object(self, key: str) -> dict[str, Any] | None:
        s3 = self.minio.client()
        try:
            return dict(s3.head_object(Bucket=BUCKET, Key=key))
        except s3.exceptions.ClientError:
            return None

    def read(self, key: str) -> bytes:
        return bytes(self.minio.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def counts(self, prefix: str) -> dict[str, int]:
        s3 = self.minio.client()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
        assert f"{prefix}/_SUCCESS" in keys, keys
        found: dict[str, int] = {}
        for key in keys:
            if "/part-" in key:
                for line in self.read(key).splitlines():
                    word, n = json.loads(line)
                    found[word] = n
        return found


@pytest.fixture(scope="module")
def cli(kube: Any, cli_ns: str, cli_controller: ControllerProcess, minio: Any) -> Cli:
    return Cli(kube, cli_ns, minio, Cluster(kube, cli_ns))


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: Any) -> Any:
    path = tmp_path_factory.mktemp("jobs")
    for name, text in (("wordcount", WORDCOUNT), ("poison", FAILING), ("slow", SLOW)):
        (path / f"{name}.py").write_text(text)
    return path


@dataclass
class Submitted:
    proc: subprocess.CompletedProcess[str]
    seconds: float


@pytest.fixture(scope="module")
def succeeded(cli: Cli, jobs_dir: Any) -> Submitted:
    """``kubemr submit wordcount.py --wait``: a pickled job file, to success."""
    started = time.monotonic()
    proc = cli.run(
        *cli.submit_args(str(jobs_dir / "wordcount.py"), "out/wc", "--name", "wc", "--wait")
    )
    return Submitted(proc, time.monotonic() - started)


@pytest.fixture(scope="module")
def failed(cli: Cli, jobs_dir: Any) -> Submitted:
    """``kubemr submit poison.py --wait``: a job whose mapper raises, to failure."""
    started = time.monotonic()
    proc = cli.run(
        *cli.submit_args(str(jobs_dir / "poison.py"), "out/poison", "--max-attempts", "2", "--wait")
    )
    return Submitted(proc, time.monotonic() - started)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- submit ---------------------------------------------------------------------------------
def test_submit_a_job_file_waits_for_success_with_its_code_uploaded_once(
    cli: Cli, succeeded: Submitted, jobs_dir: Any
) -> None:
    proc = succeeded.proc
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert proc.stdout == "wc\n"  # the name, for scripts; the rest went to stderr
    assert "kubemr: wc succeeded in" in proc.stderr
    assert "45 records (180 B) in, 3 records in" in proc.stderr
    assert cli.counts("out/wc") == {"a": 15, "b": 30, "c": 45}

    # The code is a pickle of the class by value, named by its content's hash...
    code = cli.get("wc")["spec"]["job"]["pickle"]
    sha = code["sha256"]
    assert code["url"] == f"s3://{BUCKET}/_kubemr/code/{sha}.pkl"
    assert f"uploaded the job's code to {code['url']}" in proc.stderr
    blob = cli.read(f"_kubemr/code/{sha}.pkl")
    assert hashlib.sha256(blob).hexdigest() == sha
    meta = json.loads(cli.read(f"_kubemr/code/{sha}.pkl.meta.json"))
    assert {k: meta[k] for k in runtime_versions()} == runtime_versions()
    first = cli.object(f"_kubemr/code/{sha}.pkl")
    assert first is not None

    # ...so the same file submitted again by another process is not uploaded again.
    time.sleep(1.1)  # a new upload would have a later LastModified
    again = cli.run(*cli.submit_args(str(jobs_dir / "wordcount.py"), "out/wc2", "--name", "wc2"))
    assert again.returncode == ExitCode.OK, again.stderr
    assert again.stdout == "wc2\n"
    assert f"the job's code is in storage already: {code['url']}" in again.stderr
    assert cli.get("wc2")["spec"]["job"]["pickle"] == code
    assert cli.object(f"_kubemr/code/{sha}.pkl")["LastModified"] == first["LastModified"]
    cli.admin.delete("wc2")


def test_submit_a_module_reference(cli: Cli) -> None:
    proc = cli.run(
        *cli.submit_args(
            "examples.wordcount:WordCount", "out/module", "--env", f"PYTHONPATH={ROOT}",
            "--reducers", "1", "--wait", "-o", "json",
        )
    )  # fmt: skip
    assert proc.returncode == ExitCode.OK, proc.stderr
    ended = json.loads(proc.stdout)  # -o json --wait: the resource as it ended
    assert ended["metadata"]["name"] == "word-count"
    assert ended["spec"]["job"] == {"module": "examples.wordcount:WordCount"}
    assert ended["status"]["phase"] == "Succeeded"
    assert "uploaded" not in proc.stderr  # a module is referenced, not shipped
    assert cli.counts("out/module") == {"a": 15, "b": 30, "c": 45}


def test_dry_run_prints_yaml_that_kubectl_applies(cli: Cli, jobs_dir: Any, tmp_path: Any) -> None:
    # No cluster is needed to print the resource: the kubeconfig points nowhere.
    nowhere = cli.env(KUBECONFIG=str(tmp_path / "absent"))
    proc = cli.run(
        "submit", str(jobs_dir / "wordcount.py"), "--code", "source",
        "-i", f"s3://{BUCKET}/in/", "--output", f"s3://{BUCKET}/out/applied",
        "--name", "applied", "--storage-secret", SECRET, "--s3-endpoint", cli.minio.endpoint,
        "--worker-command", WORKER, "--split-size", "64Mi", "--reducers", "2",
        "--dry-run", "-o", "yaml",
        env=nowhere,
    )  # fmt: skip
    assert proc.returncode == ExitCode.OK, proc.stderr
    resource = yaml.safe_load(proc.stdout)
    assert resource["apiVersion"] == f"{GROUP}/{VERSION}" and resource["kind"] == KIND
    assert resource["metadata"] == {"name": "applied"}  # the namespace is kubectl's -n
    spec = resource["spec"]
    assert spec["job"] == {"source": WORDCOUNT}
    assert spec["splitSize"] == "64Mi"  # as written
    assert "memory" not in spec  # only what was given: the API server fills in defaults
    assert "source: |" in proc.stdout  # the code stays readable
    assert not cli.admin.exists("applied")

    out = kubectl(cli.kube.kubeconfig, "-n", cli.ns, "apply", "-f", "-", stdin=proc.stdout)
    assert out.returncode == 0, out.stderr
    cli.admin.wait_phase("applied", "Succeeded", timeout=240)
    assert cli.counts("out/applied") == {"a": 15, "b": 30, "c": 45}


def test_a_failed_job_exits_1_with_its_root_cause(cli: Cli, failed: Submitted) -> None:
    proc = failed.proc
    assert proc.returncode == ExitCode.JOB_FAILED, proc.stderr
    assert proc.stdout == "poison\n"
    failure = cli.get("poison")["status"]["failure"]
    task, attempt = failure["task"], failure["attempt"]
    assert task.startswith("map-0-")
    err = proc.stderr
    assert f"kubemr: poison failed: UserCodeError in task {task} (attempt {attempt}, " in err
    assert "exit code 1)" in err
    assert "ZeroDivisionError: poisoned line: c" in err
    assert "(after 2 attempts)" in err
    assert "Traceback (most recent call last):" in err  # the traceback's tail
    log = f"s3://{BUCKET}/_kubemr/{cli.ns}/poison/"
    assert f"kubemr: the attempt's log: {log}" in err
    assert f"(kubemr logs poison -n {cli.ns} --task {task})" in err
    assert cli.object("out/poison/_SUCCESS") is None


def test_timeout_exits_124_and_the_job_keeps_running_until_cancelled(
    cli: Cli, jobs_dir: Any
) -> None:
    # Its pods wait for a Secret that does not exist: the job stays Pending.
    started = time.monotonic()
    proc = cli.run(
        "submit", str(jobs_dir / "wordcount.py"), "-i", f"s3://{BUCKET}/in/",
        "--output", f"s3://{BUCKET}/out/stuck", "-n", cli.ns, "--name", "stuck",
        "--storage-secret", "absent", "--worker-command", WORKER,
        "--wait", "--timeout", "3s",
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == ExitCode.TIMEOUT, proc.stderr
    assert took < 60, took
    assert "kubemr: timed out after 3.0s waiting for stuck" in proc.stderr
    assert f"kubemr cancel stuck -n {cli.ns}" in proc.stderr
    assert cli.get("stuck")["status"].get("phase") in ("Pending", "Planning")

    proc = cli.run("cancel", "stuck", "-n", cli.ns, "--wait", "--timeout", "90s")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "kubemr: stuck is cancelled" in proc.stderr
    status = cli.get("stuck")["status"]
    assert cli.get("stuck")["spec"]["cancel"] is True
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "Cancelled"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "Cancelled"
    wait_for("its pods to stop", lambda: not active_pods(cli, "stuck"), timeout=60)

    # A job that has ended is left as it is.
    again = cli.run("cancel", "stuck", "-n", cli.ns)
    assert again.returncode == ExitCode.OK
    assert "has failed already: nothing to cancel" in again.stderr


def code_objects(cli: Cli) -> set[str]:
    listed = cli.minio.client().list_objects_v2(Bucket=BUCKET, Prefix="_kubemr/code/")
    return {o["Key"] for o in listed.get("Contents", [])}


def active_pods(cli: Cli, name: str) -> list[Any]:
    return [p for p in cli.admin.pods(name) if p.status.phase in ("Pending", "Running")]


# -- status, list, describe, logs --------------------------------------------------------------
def test_status_and_list(cli: Cli, succeeded: Submitted, failed: Submitted) -> None:
    proc = cli.run("status", "wc", "-n", cli.ns)
    assert proc.returncode == ExitCode.OK, proc.stderr
    header, row = proc.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "REASON", "AGE"]
    assert row.split()[:2] == ["wc", "Succeeded"]

    proc = cli.run("status", "poison", "-n", cli.ns, "-o", "json")
    status = json.loads(proc.stdout)
    assert status["phase"] == "Failed" and status["failure"]["reason"] == "UserCodeError"
    proc = cli.run("status", "wc", "-n", cli.ns, "-o", "yaml")
    assert yaml.safe_load(proc.stdout)["result"]["recordsIn"] == 45

    proc = cli.run("list", "-n", cli.ns)
    assert proc.returncode == ExitCode.OK, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert rows["wc"][1] == "Succeeded" and rows["poison"][1] == "Failed"
    assert proc.stdout.splitlines()[0].split() == [
        "NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "AGE",
    ]  # fmt: skip

    proc = cli.run("list", "-n", cli.ns, "-o", "wide")
    wide = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "UserCodeError" in wide["poison"]

    proc = cli.run("list", "-A")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:2] == [cli.ns, "poison"] for line in proc.stdout.splitlines())

    names = cli.run("list", "-n", cli.ns, "-o", "name").stdout.split()
    assert {"wc", "poison"} <= set(names)
    listing = json.loads(cli.run("list", "-n", cli.ns, "-o", "json").stdout)
    assert listing["kind"] == "List"
    assert {i["metadata"]["name"] for i in listing["items"]} >= {"wc", "poison"}


def test_describe_a_failed_job(cli: Cli, failed: Submitted) -> None:
    proc = cli.run("describe", "poison", "-n", cli.ns)
    assert proc.returncode == ExitCode.OK, proc.stderr
    text = proc.stdout
    failure = cli.get("poison")["status"]["failure"]
    for expected in (
        "Name:      poison",
        "Phase:     Failed",
        "Spec:",
        f"Output:       s3://{BUCKET}/out/poison",
        "Waves:",
        "Conditions:",
        "Failure:",
        "  Reason:    UserCodeError",
        f"  Task:      {failure['task']}",
        "  Traceback (its end):",
        "ZeroDivisionError: poisoned line: c",
        "Failed attempts:",
        "Events:",
        "StageStarted",
    ):
        assert expected in text, (expected, text)
    # Both attempts of the failed task, each seen in its pod and in storage, with its log.
    attempts = [line for line in text.splitlines() if line.startswith(f"  {failure['task']}  ")]
    assert len(attempts) == 2, text
    assert all("(pod, " in line and "storage" in line for line in attempts), attempts
    assert f"    log: s3://{BUCKET}/_kubemr/{cli.ns}/poison/" in text


def test_logs_come_from_storage_so_they_outlive_the_pods(cli: Cli, failed: Submitted) -> None:
    failure = cli.get("poison")["status"]["failure"]
    task = failure["task"]
    before = cli.run("logs", "poison", "-n", cli.ns, "--task", task)
    assert before.returncode == ExitCode.OK, before.stderr
    assert before.stdout.count("==> ") == 2  # both attempts
    assert f"==> {task} {failure['attempt']} <==" in before.stdout
    assert "poison looks at c" in before.stdout
    assert "ZeroDivisionError: poisoned line: c" in before.stdout

    out = kubectl(
        cli.kube.kubeconfig, "-n", cli.ns, "delete", "pods", "-l", f"{LABEL_JOB}=poison",
        "--wait=true",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert not cli.admin.pods("poison")

    after = cli.run("logs", "poison", "-n", cli.ns, "--task", task)
    assert after.returncode == ExitCode.OK, after.stderr
    assert after.stdout == before.stdout
    one = cli.run("logs", "poison", "-n", cli.ns, "--task", task, "--attempt", failure["attempt"])
    assert "==> " not in one.stdout and "ZeroDivisionError" in one.stdout
    stage = cli.run("logs", "poison", "-n", cli.ns, "--stage", "map-0")
    assert stage.stdout.count("==> ") >= 4  # every map task's attempts

    # describe still has the failed attempts, from storage now.
    text = cli.run("describe", "poison", "-n", cli.ns).stdout
    attempts = [line for line in text.splitlines() if line.startswith(f"  {task}  ")]
    assert len(attempts) == 2 and all("(pod" not in line for line in attempts), text


def test_logs_follow_prints_every_line_once_until_the_job_ends(cli: Cli, jobs_dir: Any) -> None:
    proc = cli.run(*cli.submit_args(str(jobs_dir / "slow.py"), "out/slow", "--name", "slow", "-q"))
    assert proc.returncode == ExitCode.OK, proc.stderr
    follow = cli.run("logs", "slow", "-n", cli.ns, "--follow", timeout=300)
    assert follow.returncode == ExitCode.OK, follow.stderr
    assert cli.get("slow")["status"]["phase"] == "Succeeded"  # it returned when the job ended
    mapped = [line for line in follow.stdout.splitlines() if line.startswith("[map-0-")]
    saw = [line.split("] ", 1)[1] for line in mapped if "] slow saw " in line]
    # Every record of every map task, each printed once (no attempt was retried).
    assert sorted(saw) == sorted(["slow saw a b c", "slow saw b c", "slow saw c"] * 15), mapped
    assert len({line.split("]")[0] for line in mapped}) == 3  # three tasks


# -- errors ---------------------------------------------------------------------------------
def test_a_user_without_rights_is_refused_at_once(cli: Cli, jobs_dir: Any, tmp_path: Any) -> None:
    out = kubectl(cli.kube.kubeconfig, "-n", cli.ns, "create", "serviceaccount", "nobody")
    assert out.returncode == 0, out.stderr
    path = token_kubeconfig(
        cli.kube.kubeconfig, "nobody", cli.ns, str(tmp_path / "kubeconfig"),
        context_namespace=cli.ns,
    )  # fmt: skip
    env = cli.env(KUBECONFIG=path)
    job = tmp_path / "unique.py"
    job.write_text(WORDCOUNT + f"\n# {uuid.uuid4()}\n")  # a pickle of its own

    before = code_objects(cli)
    started = time.monotonic()
    proc = cli.run(*cli.submit_args(str(job), "out/nobody", "--wait"), env=env)
    assert time.monotonic() - started < 30
    assert proc.returncode == ExitCode.NOT_ALLOWED, proc.stderr
    line = one_line(proc.stderr)
    user = f"system:serviceaccount:{cli.ns}:nobody"
    assert line.startswith(f"kubemr: not allowed to create mapreducejobs in namespace {cli.ns}")
    assert f"as {user}" in line and "ask for RBAC" in line
    assert code_objects(cli) == before  # refused before anything was uploaded

    proc = cli.run("list", env=env)  # the context's namespace
    assert proc.returncode == ExitCode.NOT_ALLOWED
    assert one_line(proc.stderr).startswith(
        f"kubemr: not allowed to list mapreducejobs in namespace {cli.ns}"
    )
    proc = cli.run("status", "wc", env=env)
    assert "not allowed to get mapreducejobs" in one_line(proc.stderr)


def test_without_the_watch_right_waiting_polls(cli: Cli, jobs_dir: Any, tmp_path: Any) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "submit-no-watch", "namespace": cli.ns},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "submit-no-watch", "namespace": cli.ns},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "no-watch", "namespace": cli.ns}],
    }
    out = kubectl(cli.kube.kubeconfig, "-n", cli.ns, "create", "serviceaccount", "no-watch")
    assert out.returncode == 0, out.stderr
    for body in (role, binding):
        out = kubectl(cli.kube.kubeconfig, "apply", "-f", "-", stdin=json.dumps(body))
        assert out.returncode == 0, out.stderr
    path = token_kubeconfig(cli.kube.kubeconfig, "no-watch", cli.ns, str(tmp_path / "kubeconfig"))
    proc = cli.run(
        *cli.submit_args(str(jobs_dir / "wordcount.py"), "out/polled", "--code", "source",
                         "--name", "polled", "--wait"),
        env=cli.env(KUBECONFIG=path),
    )  # fmt: skip
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "kubemr: polled succeeded in" in proc.stderr
    assert cli.counts("out/polled") == {"a": 15, "b": 30, "c": 45}


def test_no_cluster_fails_within_seconds(cli: Cli, tmp_path: Any) -> None:
    config = yaml.safe_load(open(cli.kube.kubeconfig))
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "closed"
    path.write_text(yaml.safe_dump(config))
    for args in (["list"], ["status", "wc"], cli.submit_args("examples/wordcount.py", "o")):
        started = time.monotonic()
        proc = cli.run(*args, env=cli.env(KUBECONFIG=str(path)))
        assert time.monotonic() - started < 30
        assert proc.returncode == ExitCode.NO_CLUSTER, proc.stderr
        line = one_line(proc.stderr)
        assert "cannot reach the Kubernetes API server at https://127.0.0.1:" in line
        assert "Connection refused" in line

    proc = cli.run("list", env=cli.env(KUBECONFIG=str(tmp_path / "none")))
    assert proc.returncode == ExitCode.NO_CLUSTER
    assert one_line(proc.stderr).startswith("kubemr: no kubeconfig at ")


def test_no_crd_is_named(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # The API server answers for a group it does not serve as it does when the CRD is not
    # installed ("404 page not found", no Status); the command's client is pointed at one.
    from kubemr.cli import app
    from kubemr.cluster import client as cluster_client
    from kubemr.controller.informer import Resource

    absent = Resource("absent.kubemr.dev", VERSION, PLURAL, KIND)
    monkeypatch.setattr(cluster_client, "MAP_REDUCE_JOBS", absent)
    monkeypatch.setenv("KUBECONFIG", cli.kube.kubeconfig)
    for args in (["list", "-n", cli.ns], ["status", "wc", "-n", cli.ns]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == ExitCode.NO_CRD, result.output
        line = one_line(result.stderr)
        assert line.startswith(
            f"kubemr: the MapReduceJob CRD ({PLURAL}.absent.kubemr.dev/{VERSION}) is not "
            "installed in the cluster at https://127.0.0.1:"
        )
        assert "kubemr crd | kubectl apply --server-side -f -" in line


def test_an_unknown_job_is_named(cli: Cli) -> None:
    for command in ("status", "describe", "logs", "cancel"):
        proc = cli.run(command, "nope", "-n", cli.ns)
        assert proc.returncode == ExitCode.NOT_FOUND, (command, proc.stderr)
        assert one_line(proc.stderr) == (
            f"kubemr: mapreducejob nope not found in namespace {cli.ns}"
        )


def test_bad_values_are_one_line_naming_the_flag(cli: Cli, jobs_dir: Any) -> None:
    job = str(jobs_dir / "wordcount.py")
    for extra, expected in (
        (["--workers-max", "0"], "kubemr: --workers-max 0: input should be greater than"),
        (["--memory", "lots"], "kubemr: --memory 'lots': invalid size 'lots'"),
        (["--reducers", "many"], "kubemr: Invalid value for '--reducers'"),
        (["--timeout", "soon", "--wait"], "kubemr: --timeout: invalid duration 'soon'"),
        (["--name", "Bad_Name"], "kubemr: --name 'Bad_Name': must be lowercase"),
    ):
        proc = cli.run(*cli.submit_args(job, "out/bad", *extra))
        assert proc.returncode == ExitCode.USAGE, (extra, proc.stderr)
        assert one_line(proc.stderr).startswith(expected), (extra, proc.stderr)
    assert not cli.admin.exists("word-count-bad")


# -- the CI examples -------------------------------------------------------------------------
SUBMIT_SH = os.path.join(ROOT, "examples", "ci", "submit.sh")


def ci_args(cli: Cli, job: str, output: str) -> list[str]:
    """What the pipelines pass to examples/ci/submit.sh, with this cluster's values."""
    return cli.submit_args(job, output)[1:]


def test_ci_script_passes_with_a_job_that_succeeds(cli: Cli) -> None:
    # GitHub Actions: the kubeconfig's text comes from a secret.
    with open(cli.kube.kubeconfig) as fh:
        env = cli.env(KUBECONFIG_DATA=fh.read(), KUBEMR_TIMEOUT="5m")
    del env["KUBECONFIG"]
    proc = subprocess.run(
        ["bash", SUBMIT_SH, *ci_args(cli, "examples/wordcount.py", "out/ci-ok")],
        capture_output=True, text=True, timeout=420, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip()
    assert name.startswith("word-count-") and len(name) == len("word-count-") + 5
    assert f"kubemr: {name} succeeded" in proc.stderr
    assert cli.counts("out/ci-ok") == {"a": 15, "b": 30, "c": 45}


def test_ci_script_fails_the_build_with_a_job_that_fails(cli: Cli, jobs_dir: Any) -> None:
    # GitLab CI: $KUBECONFIG is a file (a "File" variable).
    env = cli.env(KUBEMR_TIMEOUT="5m")
    proc = subprocess.run(
        ["bash", SUBMIT_SH, *ci_args(cli, str(jobs_dir / "poison.py"), "out/ci-fail")],
        capture_output=True, text=True, timeout=420, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == ExitCode.JOB_FAILED, proc.stderr
    assert "failed: UserCodeError in task map-0-" in proc.stderr
    assert "ZeroDivisionError: poisoned line: c" in proc.stderr
    assert "the attempt's log: s3://" in proc.stderr
