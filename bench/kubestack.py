"""kubemr on Kubernetes: a real control plane (kubestack) and a real MinIO.

    python -m bench.kubestack --size 200MB --workers 2 --repeat 5 [--only overhead|wordcount]

Starts kubestack (kube-apiserver, etcd, the controller manager, the scheduler and one node
that runs pods as processes of this machine; see docs/kubestack.md) with ``--workers``
CPUs, MinIO on 127.0.0.1, applies manifests/crd.yaml and manifests/rbac.yaml with kubectl
and runs ``kubemr controller`` as a subprocess under its ServiceAccount's token, as
tests/e2e/test_controller.py does. Worker pods run this checkout's Python
(``template.command: [sys.executable, -m, kubemr]``) and request one CPU each, so the
scheduler fits exactly ``--workers`` of them on the node.

overhead   a tiny word count (a few lines in MinIO; plan, 1 map, 1 reduce, commit: four
           pods one after the other), timed from the create call to phase Succeeded
           (status polled every 50 ms), ``--repeat`` times. Where the time goes, per
           stage, from a watch of the Jobs and pods (arrival times, sub-second) and from
           the times the API records (whole seconds); the task's own time from the
           worker's termination message.
wordcount  the per-record word count of bench/wordcount_jobs.py (``WordCount``, shipped
           as ``job.source``) on the Zipf corpus (``--size``) in MinIO as a MapReduceJob
           with ``workers.max = --workers``, against ``kubemr run`` of the same file with
           ``--workers`` on the same s3:// input, work dir and output, and on local files;
           the same reducers everywhere, each runner's default split size unless
           ``--split-size`` gives one for all (the cluster's default makes fewer, larger
           tasks), runs interleaved, outputs checked equal. Reports the medians,
           local / cluster, each wave's time and the CPU the set-up's processes used.

Prints markdown tables and writes bench/results/kubestack.json. Everything started is
stopped at the end, and the temp dirs removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import boto3.s3.transfer
import psutil
from kubernetes import client, config, watch

from kubemr.crd import CRD_NAME
from kubemr.datagen import zipf_text
from kubemr.executors.k8s.manifests import GROUP, LABEL_JOB, LABEL_STAGE, PLURAL, VERSION
from kubemr.plan import effective_split_size
from kubemr.planning import DEFAULT_SPLIT_SIZE
from kubemr.sizes import parse_size
from tests.e2e.kubestack import Kubestack, kubestack_binary
from tests.e2e.support import (
    SERVICE_ACCOUNT,
    SYSTEM_NS,
    ControllerProcess,
    kubectl,
    token_kubeconfig,
)
from tests.integration.minio import REGION, MinioServer, minio_binary

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOBS_FILE = os.path.join(HERE, "wordcount_jobs.py")
RESULTS = os.path.join(HERE, "results", "kubestack.json")
NAMESPACE = "kubemr-bench"
BUCKET = "bench"
SECRET = "s3"
POLL = 0.05  # seconds between two reads of the resource's status
INDEX = "batch.kubernetes.io/job-completion-index"
TINY_LINES = [
    "the quick brown fox jumps over the lazy dog",
    "a map a reduce and a commit",
    "the dog sleeps",
    "kubemr counts the words of the fox",
]
STAGE_KINDS = ("plan", "map", "reduce", "commit")
Obj = dict[str, Any]


# -- what the cluster records -------------------------------------------------------------
def api_time(value: str | None) -> float | None:
    """An API timestamp (RFC 3339, whole seconds) as epoch seconds."""
    return datetime.fromisoformat(value).timestamp() if value else None


def stage_kind(stage: str) -> str:
    return stage.split("-", 1)[0]


@dataclass
class Seen:
    at: float  # time.time() when the change arrived through the watch
    kind: str  # "pod" or "job"
    obj: Obj


class Watcher:
    """Every change of the pods and Jobs of a namespace, with the time it arrived.

    One watch per kind for the whole run (raw JSON, no model objects), resumed from the
    last resourceVersion, relisted after a 410."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.namespace = namespace
        core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
        self.listers: dict[str, Callable[..., Any]] = {
            "pod": core.list_namespaced_pod,
            "job": batch.list_namespaced_job,
        }
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self) -> None:
        for kind in self.listers:
            threading.Thread(target=self._loop, args=(kind,), daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()

    def _list_version(self, kind: str) -> str:
        return str(self.listers[kind](self.namespace, limit=1).metadata.resource_version)

    def _loop(self, kind: str) -> None:
        version = self._list_version(kind)
        while not self.stopping.is_set():
            try:
                stream = watch.Watch().stream(
                    self.listers[kind],
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=240,
                    deserialize=False,
                )
                for event in stream:
                    obj = event.get("raw_object") or event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            version = self._list_version(kind)
                        break
                    version = obj["metadata"]["resourceVersion"]
                    with self.lock:
                        self.seen.append(Seen(time.time(), kind, obj))
                    if self.stopping.is_set():
                        return
            except Exception:
                if self.stopping.is_set():
                    return
                time.sleep(0.2)

    def of(self, resource: str) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (s.obj["metadata"].get("labels") or {}).get(LABEL_JOB) == resource
            ]


@dataclass
class PodRecord:
    name: str
    stage: str
    index: int
    seen: float | None = None  # the watch's arrival times
    scheduled: float | None = None
    running: float | None = None
    ended: float | None = None
    api_created: float | None = None  # the API's own times (whole seconds)
    api_started: float | None = None
    api_finished: float | None = None
    phase: str = ""
    message: Obj = field(default_factory=dict)  # the worker's termination message


@dataclass
class JobRecord:
    name: str
    stage: str
    completions: int
    seen: float | None = None
    done: float | None = None  # completedIndexes covers every index: the controller moves on
    complete: float | None = None  # condition Complete
    api_created: float | None = None
    api_completed: float | None = None


def records(seen: list[Seen]) -> tuple[dict[str, JobRecord], dict[str, list[PodRecord]]]:
    """The Jobs and pods of one resource, by stage, from the watched changes."""
    jobs: dict[str, JobRecord] = {}
    pods: dict[str, PodRecord] = {}
    for s in seen:
        meta = s.obj["metadata"]
        stage = (meta.get("labels") or {}).get(LABEL_STAGE, "?")
        status = s.obj.get("status") or {}
        if s.kind == "job":
            completions = int(s.obj["spec"].get("completions") or 1)
            job = jobs.setdefault(stage, JobRecord(meta["name"], stage, completions))
            job.seen = job.seen or s.at
            job.api_created = api_time(meta.get("creationTimestamp"))
            if int(status.get("succeeded") or 0) >= completions:
                job.done = job.done or s.at
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if conditions.get("Complete") == "True":
                job.complete = job.complete or s.at
                job.api_completed = api_time(status.get("completionTime"))
            continue
        index = int((meta.get("annotations") or {}).get(INDEX, "0"))
        pod = pods.setdefault(meta["uid"], PodRecord(meta["name"], stage, index))
        pod.seen = pod.seen or s.at
        pod.api_created = api_time(meta.get("creationTimestamp"))
        pod.phase = status.get("phase") or pod.phase
        if s.obj["spec"].get("nodeName"):
            pod.scheduled = pod.scheduled or s.at
        states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
        state = states[0] if states else {}
        if "running" in state or "terminated" in state or pod.phase == "Running":
            pod.running = pod.running or s.at
            started = (state.get("running") or state.get("terminated") or {}).get("startedAt")
            pod.api_started = api_time(started) or pod.api_started
        if pod.phase in ("Succeeded", "Failed"):
            pod.ended = pod.ended or s.at
        if "terminated" in state:
            term = state["terminated"]
            pod.api_finished = api_time(term.get("finishedAt"))
            try:
                pod.message = json.loads(term.get("message") or "{}")
            except ValueError:
                pod.message = {}
    by_stage: dict[str, list[PodRecord]] = {}
    for pod in pods.values():
        by_stage.setdefault(pod.stage, []).append(pod)
    return jobs, by_stage


# The parts of a stage, in order; each is the time from one observed moment to the next,
# so that they add up to the whole.
PARTS = (
    ("controller", "kubemr controller: previous stage done → stage Job created"),
    ("job-to-pod", "Job controller: Job created → pod created"),
    ("scheduling", "scheduler: pod created → pod bound to the node"),
    ("pod-start", "node: pod bound → process running"),
    ("process", "worker process: running → exited"),
    ("job-done", "Job controller: pod exited → Job status counts the index done"),
)
FINAL = ("finish", "kubemr controller: commit Job done → phase Succeeded")


def _first(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _last(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def slot_gap(pods: list[PodRecord]) -> float | None:
    """In a wave of more tasks than pods at once: the median time from a pod's exit to the
    start of the pod that takes its place (the k-th pod started takes the place of the
    (k - parallelism)-th to end)."""
    started = sorted(p.running for p in pods if p.running is not None)
    ended = sorted(p.ended for p in pods if p.ended is not None)
    first = sorted((p.seen or 0.0, p.running) for p in pods if p.running is not None)
    if not first:
        return None
    # The pods of the first round were created together with the Job, within a moment.
    width = sum(1 for seen, _ in first if seen - first[0][0] < 0.5)
    gaps = [started[k] - ended[k - width] for k in range(width, len(started))]
    return statistics.median(gaps) if gaps else None


def breakdown(
    resource: Obj,
    jobs: dict[str, JobRecord],
    pods: dict[str, list[PodRecord]],
    created: float,
    succeeded: float,
) -> dict[str, dict[str, float | None]]:
    """``{stage: {part: seconds}}`` from the watch (``part``) and from the API's own
    timestamps (``api:part``, whole seconds), plus the worker's own task time."""
    order = sorted(jobs.values(), key=lambda j: j.seen or 0.0)
    out: dict[str, dict[str, float | None]] = {}
    prev_done: float | None = created
    prev_api: float | None = api_time(resource["metadata"].get("creationTimestamp"))
    for job in order:
        ps = pods.get(job.stage, [])
        first_seen = _first([p.seen for p in ps])
        first_bound = _first([p.scheduled for p in ps])
        first_run = _first([p.running or p.ended for p in ps])
        last_end = _last([p.ended for p in ps])
        api_first_pod = _first([p.api_created for p in ps])
        api_start = _first([p.api_started for p in ps])
        api_end = _last([p.api_finished for p in ps])
        task = [float(p.message["seconds"]) for p in ps if "seconds" in p.message]
        parts: dict[str, float | None] = {
            "controller": _gap(prev_done, job.seen),
            "job-to-pod": _gap(job.seen, first_seen),
            "scheduling": _gap(first_seen, first_bound),
            "pod-start": _gap(first_bound, first_run),
            "process": _gap(first_run, last_end),
            "job-done": _gap(last_end, job.done),
            "api:controller": _gap(prev_api, job.api_created),
            "api:job-to-pod": _gap(job.api_created, api_first_pod),
            # kubestack's node stamps every pod condition with the time of its latest
            # status change, so PodScheduled's lastTransitionTime is not the bind time:
            # from the API, scheduling and pod start are one part.
            "api:pod-start": _gap(api_first_pod, api_start),
            "api:process": _gap(api_start, api_end),
            "api:job-done": _gap(api_end, job.api_completed),
            "tasks": float(len(ps)),
            "task-seconds": max(task) if task else None,
            # per task: the process's life beyond the task (Python start, imports,
            # reading the plan, saving the log, exit)
            "task-overhead": median(
                [
                    p.ended - p.running - float(p.message["seconds"])
                    for p in ps
                    if p.ended is not None and p.running is not None and "seconds" in p.message
                ]
            ),
            "wave": _gap(job.seen, job.done),
            "slot-gap": slot_gap(ps),
        }
        out[job.stage] = parts
        prev_done, prev_api = job.done, job.api_completed
    status = resource.get("status") or {}
    out["finish"] = {
        "finish": _gap(prev_done, succeeded),
        "api:finish": _gap(prev_api, api_time(status.get("completionTime"))),
    }
    waves = {w["jobName"]: w for w in status.get("waves") or []}
    for job in order:
        wave = waves.get(job.name) or {}
        out[job.stage]["status-wave"] = _gap(
            api_time(wave.get("startTime")), api_time(wave.get("completionTime"))
        )
    return out


# -- the cluster --------------------------------------------------------------------------
class Stack:
    """kubestack, MinIO, the CRD and RBAC, the controller, a namespace with the storage
    Secret, and a watch of its Jobs and pods."""

    def __init__(self, workers: int, tmp: str) -> None:
        self.workers = workers
        self.tmp = tmp
        # --cpu is what the node advertises: with each worker pod requesting one CPU, the
        # scheduler binds at most `workers` pods at once, as on a node of that many cores.
        self.kube = Kubestack(
            kubestack_binary(), os.path.join(tmp, "kubestack"), cpu=str(workers), memory="8Gi"
        )
        self.minio = MinioServer(minio_binary())
        self.controller: ControllerProcess | None = None
        self.watcher: Watcher | None = None

    def start(self) -> None:
        started = time.monotonic()
        self.kube.start()
        self.minio.start()
        self.minio.make_bucket(BUCKET)
        kubeconfig = self.kube.kubeconfig
        for args in (
            ("apply", "--server-side", "--force-conflicts", "-f", f"{ROOT}/manifests/crd.yaml"),
            ("apply", "-f", f"{ROOT}/manifests/rbac.yaml"),
            ("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s"),
            ("create", "namespace", NAMESPACE),
        ):
            out = kubectl(kubeconfig, *args)
            if out.returncode != 0:
                raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr}")
        api_client = config.new_client_from_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        env = self.minio.env()
        self.core.create_namespaced_secret(
            NAMESPACE,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=SECRET),
                string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
            ),
        )
        sa_config = os.path.join(self.tmp, "controller.kubeconfig")
        token_kubeconfig(kubeconfig, SERVICE_ACCOUNT, SYSTEM_NS, sa_config)
        self.controller = ControllerProcess(sa_config, os.path.join(self.tmp, "controller.log"))
        self.controller.start()
        self._wait_ready()
        self.watcher = Watcher(api_client, NAMESPACE)
        self.watcher.start()
        print(
            f"# kubestack ({self.workers} CPUs), MinIO and the controller ready in "
            f"{time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )

    def _wait_ready(self, timeout: float = 60) -> None:
        assert self.controller is not None
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.controller.health_port}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.controller.proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the controller exited: {self.controller.log()[-3000:]}")
            try:
                with direct.open(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"controller not ready: {self.controller.log()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        """The controller's counters (reconciles and their seconds)."""
        assert self.controller is not None
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.controller.health_port}/metrics"
        found: dict[str, float] = {}
        with direct.open(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("kubemr_controller_reconcile") and "{" not in line:
                    name, value = line.split()
                    found[name] = float(value)
        return found

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.controller is not None:
            self.controller.stop()
        self.kube.stop()
        self.minio.close()

    # -- resources ------------------------------------------------------------------------
    def storage(self) -> Obj:
        return {"endpoint": self.minio.endpoint, "region": REGION, "secretRef": {"name": SECRET}}

    def get(self, name: str) -> Obj:
        got = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return dict(got)

    def run(self, body: Obj, timeout: float = 1800) -> Run:
        """Create the resource; poll its status every :data:`POLL` s until it succeeds."""
        name = body["metadata"]["name"]
        cpu = self.cpu_seconds()
        created = time.time()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        while True:
            resource = self.get(name)
            phase = (resource.get("status") or {}).get("phase")
            if phase == "Succeeded":
                succeeded = time.time()
                break
            if phase == "Failed":
                raise RuntimeError(f"{name} failed: {resource['status'].get('failure')}")
            if time.time() - created > timeout:
                raise TimeoutError(f"{name} not done after {timeout:.0f} s: {resource}")
            time.sleep(POLL)
        used = self.cpu_seconds(since=cpu)
        time.sleep(0.5)  # let the watch catch up with the last changes
        assert self.watcher is not None
        jobs, pods = records(self.watcher.of(name))
        parts = breakdown(resource, jobs, pods, created, succeeded)
        return Run(name, succeeded - created, parts, used)

    def cpu_seconds(self, since: dict[str, float] | None = None) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each process of the set-up, not
        counting the worker pods (children of the node): the control plane's components,
        the kubemr controller, MinIO and this benchmark (its polling and watches); with
        ``since``, the difference."""
        procs = {name: proc.pid for name, proc in self.kube.procs.items()}
        if self.controller is not None and self.controller.proc is not None:
            procs["kubemr-controller"] = self.controller.proc.pid
        if self.minio.proc is not None:
            procs["minio"] = self.minio.proc.pid
        procs["benchmark"] = os.getpid()
        used: dict[str, float] = {}
        for name, pid in procs.items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            used[name] = times.user + times.system - (since or {}).get(name, 0.0)
        return used

    def delete(self, name: str, timeout: float = 120) -> None:
        """Delete the resource and wait until the garbage collector removed its pods."""
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"{LABEL_JOB}={name}")
            if not left.items:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the pods of {name} are still there after {timeout:.0f} s")


@dataclass
class Run:
    name: str
    seconds: float
    parts: dict[str, dict[str, float | None]]
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the set-up's processes


@contextmanager
def stack(workers: int) -> Iterator[Stack]:
    tmp = tempfile.mkdtemp(prefix="kubemr-bench-kubestack-")
    found = Stack(workers, tmp)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        found.start()
        yield found
    except BaseException:
        if found.controller is not None and os.path.exists(found.controller.log_path):
            print(f"# controller log ends:\n{found.controller.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        try:
            found.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


# -- jobs ----------------------------------------------------------------------------------
def job_source() -> str:
    with open(JOBS_FILE) as fh:
        return fh.read()


def resource(
    name: str, st: Stack, inputs: list[str], output: str, workers: int, **spec: Any
) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": name},
        "spec": {
            "inputs": inputs,
            "output": output,
            "job": {"source": job_source(), "className": "WordCount"},
            "storage": st.storage(),
            "workers": {"max": workers},
            "overwrite": True,
            "template": {
                "command": [sys.executable, "-m", "kubemr"],
                "resources": {"requests": {"cpu": "1"}},
            },
            **spec,
        },
    }


def s3_output(s3: Any, prefix: str) -> tuple[dict[str, int], Obj]:
    """The counts in a job's part files under ``s3://bench/<prefix>``, and its
    ``_SUCCESS`` summary."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    if f"{prefix}/_SUCCESS" not in keys:
        raise RuntimeError(f"no _SUCCESS under s3://{BUCKET}/{prefix}: {keys}")
    counts: dict[str, int] = {}
    for key in keys:
        if key.rsplit("/", 1)[1].startswith("part-"):
            for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines():
                word, n = json.loads(line)
                counts[word] = n
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/_SUCCESS")["Body"].read())
    return counts, summary


def local_output(path: str) -> tuple[dict[str, int], Obj]:
    counts: dict[str, int] = {}
    for name in sorted(os.listdir(path)):
        if name.startswith("part-"):
            with open(os.path.join(path, name)) as fh:
                for line in fh:
                    word, n = json.loads(line)
                    counts[word] = n
    with open(os.path.join(path, "_SUCCESS")) as fh:
        return counts, json.load(fh)


def spans(summary: Obj) -> dict[str, float]:
    """Each wave's span from the workers' own records (``_SUCCESS``): the first task's
    start to the last task's end."""
    step = summary["steps"][0]
    return {"map": step.get("map_seconds") or 0.0, "reduce": step.get("reduce_seconds") or 0.0}


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(seconds: float | None, digits: int = 2) -> str:
    return "—" if seconds is None else f"{seconds:.{digits}f} s"


# -- tiny-job overhead ---------------------------------------------------------------------
def import_seconds(repeat: int = 5) -> float:
    """This Python's start and the worker's imports (kubemr, boto3), as a pod pays them."""
    code = "import kubemr.cli, kubemr.cli.worker, kubemr.task, kubemr.stages, kubemr.storage.s3"
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead(st: Stack, repeat: int, workers: int) -> Obj:
    s3 = st.minio.client()
    text = "\n".join(TINY_LINES) + "\n"
    s3.put_object(Bucket=BUCKET, Key="tiny/in.txt", Body=text.encode())
    expected: dict[str, int] = {}
    for word in text.split():
        expected[word] = expected.get(word, 0) + 1
    runs: list[Run] = []
    before = st.metrics()
    for i in range(repeat):
        name = f"tiny-{i}"
        body = resource(
            name, st, [f"s3://{BUCKET}/tiny/in.txt"], f"s3://{BUCKET}/tiny/out-{i}", workers,
            reducers=1,
        )  # fmt: skip
        run = st.run(body, timeout=300)
        if s3_output(s3, f"tiny/out-{i}")[0] != expected:
            raise RuntimeError(f"{name}: wrong counts")
        st.delete(name)
        runs.append(run)
        print(f"# {name}: {run.seconds:.2f} s", file=sys.stderr)
    after = st.metrics()
    reconciles = after.get("kubemr_controller_reconcile_total", 0) - before.get(
        "kubemr_controller_reconcile_total", 0
    )
    reconcile_s = after.get("kubemr_controller_reconcile_seconds_total", 0) - before.get(
        "kubemr_controller_reconcile_seconds_total", 0
    )
    return {
        "runs": [asdict(r) for r in runs],
        "median_seconds": statistics.median(r.seconds for r in runs),
        "reconciles_per_job": reconciles / repeat,
        "reconcile_seconds_per_job": reconcile_s / repeat,
        "python_import_seconds": import_seconds(),
    }


def overhead_table(result: Obj) -> str:
    runs = [Run(**r) for r in result["runs"]]
    stages = [s for s in runs[0].parts if s != "finish"]
    lines = [
        "| stage | part | watched | API times (1 s) |",
        "| --- | --- | ---: | ---: |",
    ]
    for stage in stages:
        for part, label in PARTS:
            watched = median([r.parts.get(stage, {}).get(part) for r in runs])
            api = median([r.parts.get(stage, {}).get(f"api:{part}") for r in runs])
            lines.append(f"| {stage} | {label} | {fmt(watched)} | {fmt(api, 1)} |")
            if part == "process" and stage_kind(stage) in ("map", "reduce"):
                task = median([r.parts.get(stage, {}).get("task-seconds") for r in runs])
                lines.append(
                    f"| {stage} | — of which the task itself (worker's record) | {fmt(task)} | |"
                )
    part, label = FINAL
    watched = median([r.parts["finish"].get(part) for r in runs])
    api = median([r.parts["finish"].get(f"api:{part}") for r in runs])
    lines.append(f"| — | {label} | {fmt(watched)} | {fmt(api, 1)} |")
    total = result["median_seconds"]
    lines.append(
        f"| **total** | create → phase Succeeded (polled every 50 ms) | **{fmt(total)}** | |"
    )
    lines.append("")
    lines.append("Summed over the stages:")
    lines.append("")
    lines.append("| part | watched | share |")
    lines.append("| --- | ---: | ---: |")
    for part, label in (*PARTS, FINAL):
        per_run = [sum(v for s in r.parts.values() if (v := s.get(part)) is not None) for r in runs]
        m = statistics.median(per_run)
        lines.append(f"| {label} | {fmt(m)} | {m / total:.0%} |")
    # The Job controller syncs a Job one second after the first pod event it has not yet
    # handled (SyncJobBatchPeriod), so a short stage ends on that beat.
    lines += [
        "",
        "| stage | Job created → counted done | of which after the pod exited |",
        "| --- | ---: | ---: |",
    ]
    for stage in stages:
        wave = median([r.parts[stage].get("wave") for r in runs])
        lag = median([r.parts[stage].get("job-done") for r in runs])
        lines.append(f"| {stage} | {fmt(wave)} | {fmt(lag)} |")
    lines += ["", cpu_table({"tiny job": [r.cpu for r in runs]})]
    return "\n".join(lines)


def cpu_table(by_where: dict[str, list[dict[str, float]]]) -> str:
    """Median CPU seconds of each process of the set-up during the runs (not the worker
    pods or the local runner's processes)."""
    names = sorted({n for runs in by_where.values() for r in runs for n in r})
    lines = [
        "| CPU seconds during a run | " + " | ".join(by_where) + " |",
        "| --- |" + " ---: |" * len(by_where),
    ]
    for name in [*names, "all"]:
        cells = []
        for runs in by_where.values():
            values = [sum(r.values()) if name == "all" else r.get(name, 0.0) for r in runs]
            cells.append(f"{statistics.median(values):.2f}" if values else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- word count ----------------------------------------------------------------------------
def corpus(size: int, data_dir: str) -> str:
    path = os.path.join(data_dir, f"zipf-{size}.txt")
    if not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        print(f"# generating {path}", file=sys.stderr)
        zipf_text(path, size)
    return path


def kubemr_run(
    inputs: str, output: str, workers: int, reducers: int, split: int | None,
    env: dict[str, str], work_dir: str | None = None,
) -> float:  # fmt: skip
    """``kubemr run`` of bench/wordcount_jobs.py:WordCount as a subprocess; its wall time."""
    cmd = [
        sys.executable, "-m", "kubemr", "run", f"{JOBS_FILE}:WordCount",
        "--input", inputs, "--output", output, "--workers", str(workers),
        "--reducers", str(reducers), "--overwrite", "--quiet",
    ]  # fmt: skip
    if split:
        cmd += ["--split-size", str(split)]
    if work_dir:
        cmd += ["--work-dir", work_dir]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def wordcount(
    st: Stack, size_text: str, workers: int, repeat: int, data_dir: str, tmp: str,
    reducers: int | None, split: int | None,
) -> Obj:  # fmt: skip
    path = corpus(parse_size(size_text), data_dir)
    size = os.path.getsize(path)
    # Unless --split-size is given, each side splits as it would by default: a pod costs
    # more to start than a pool process, so the cluster makes fewer, larger tasks.
    local_split = split or effective_split_size(size, DEFAULT_SPLIT_SIZE, workers, auto=True)
    cluster_split = split or effective_split_size(
        size, DEFAULT_SPLIT_SIZE, workers, auto=True, costly_tasks=True
    )
    reducers = reducers or max(1, min(workers, math.ceil(size / DEFAULT_SPLIT_SIZE)))
    split_spec = {"splitSize": split} if split else {}
    s3 = st.minio.client()
    s3.upload_file(
        path, BUCKET, "wc/in/corpus.txt",
        Config=boto3.s3.transfer.TransferConfig(multipart_chunksize=64 << 20),
    )  # fmt: skip
    env = {**os.environ, **st.minio.env()}
    times: dict[str, list[float]] = {"cluster": [], "local-s3": [], "local-files": []}
    wave_spans: dict[str, list[dict[str, float]]] = {k: [] for k in times}
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in times}
    runs: list[Run] = []
    reference: dict[str, int] | None = None
    for i in range(repeat):
        name = f"wc-{i}"
        body = resource(
            name, st, [f"s3://{BUCKET}/wc/in/corpus.txt"], f"s3://{BUCKET}/wc/k8s-{i}", workers,
            reducers=reducers, **split_spec,
        )  # fmt: skip
        run = st.run(body)
        runs.append(run)
        times["cluster"].append(run.seconds)
        outputs = {"cluster": s3_output(s3, f"wc/k8s-{i}")}
        st.delete(name)
        s3_input, s3_work = f"s3://{BUCKET}/wc/in/corpus.txt", f"s3://{BUCKET}/wc/work-{i}"
        cpu["cluster"].append(run.cpu)
        before = st.cpu_seconds()
        seconds = kubemr_run(s3_input, f"s3://{BUCKET}/wc/local-{i}", workers, reducers, split,
                             env, work_dir=s3_work)  # fmt: skip
        cpu["local-s3"].append(st.cpu_seconds(since=before))
        times["local-s3"].append(seconds)
        outputs["local-s3"] = s3_output(s3, f"wc/local-{i}")
        out_dir = os.path.join(tmp, f"local-{i}")
        before = st.cpu_seconds()
        times["local-files"].append(kubemr_run(path, out_dir, workers, reducers, split, env))
        cpu["local-files"].append(st.cpu_seconds(since=before))
        outputs["local-files"] = local_output(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
        reference = reference or outputs["cluster"][0]
        for where, (counts, summary) in outputs.items():
            if counts != reference:
                raise RuntimeError(f"run {i}: the {where} output differs; no timing counts")
            wave_spans[where].append(spans(summary))
        print("# " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "input_bytes": size,
        "split_size": local_split,
        "split_given": bool(split),
        "cluster_split_size": cluster_split,
        "reducers": reducers,
        "words": len(reference or {}),
        "times": times,
        "wave_spans": wave_spans,
        "cpu": cpu,
        "median_seconds": med,
        "local_s3_over_cluster": med["local-s3"] / med["cluster"],
        "local_files_over_cluster": med["local-files"] / med["cluster"],
        "runs": [asdict(r) for r in runs],
    }


def wordcount_tables(result: Obj, workers: int) -> str:
    mb = result["input_bytes"] / 1e6
    med = result["median_seconds"]
    n = len(result["times"]["cluster"])
    labels = {
        "cluster": "MapReduceJob on kubestack, MinIO input/work/output",
        "local-s3": "`kubemr run`, same MinIO input, work dir and output",
        "local-files": "`kubemr run`, local files",
    }
    if result.get("split_given"):
        split = f"split size {result['split_size'] / 2**20:.1f} MiB on both (--split-size)"
    else:
        split = (
            f"split size {result['split_size'] / 2**20:.1f} MiB locally and "
            f"{result.get('cluster_split_size', result['split_size']) / 2**20:.1f} MiB on the "
            "cluster (each runner's default)"
        )
    lines = [
        f"{mb:.0f} MB, {workers} workers, {result['reducers']} reducers, {split}, median of {n}",
        "",
        "| where | median | MB/s | local / this |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in labels.items():
        lines.append(
            f"| {label} | {fmt(med[key])} | {mb / med[key]:.1f} | "
            f"{med['local-s3'] / med[key]:.2f} |"
        )
    # Where the cluster's time differs: each wave's span from the workers' own records, and
    # the rest (process start, plan, gaps between waves, commit).
    lines += [
        "",
        "| median | cluster | kubemr run (MinIO) | kubemr run (files) |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = {"map": "map wave: first task start → last task end (`_SUCCESS`)",
            "reduce": "reduce wave: the same"}  # fmt: skip
    for wave, label in rows.items():
        cells = [fmt(statistics.median(s[wave] for s in result["wave_spans"][k])) for k in labels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rest = [
        statistics.median(
            t - s["map"] - s["reduce"]
            for t, s in zip(result["times"][k], result["wave_spans"][k], strict=True)
        )
        for k in labels
    ]
    lines.append(
        "| the rest: start, plan, between the waves, commit | "
        + " | ".join(fmt(r) for r in rest)
        + " |"
    )
    runs = [Run(**r) for r in result["runs"]]
    lines += [
        "",
        "| wave | tasks | status waves (1 s) | watched: Job created → done | "
        "slowest task (worker's record) | process beyond its task, per task | "
        "pod exit → next pod running |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage in (s for s in runs[0].parts if s != "finish"):

        def m(key: str, stage: str = stage) -> float | None:
            return median([r.parts.get(stage, {}).get(key) for r in runs])

        lines.append(
            f"| {stage} | {m('tasks') or 0:.0f} | {fmt(m('status-wave'), 0)} | "
            f"{fmt(m('wave'))} | {fmt(m('task-seconds'))} | {fmt(m('task-overhead'))} | "
            f"{fmt(m('slot-gap'))} |"
        )
    between = median(
        [
            sum(v for s in r.parts.values() if (v := s.get("controller")) is not None)
            + (r.parts["finish"].get("finish") or 0)
            for r in runs
        ]
    )
    lines += ["", f"Between the waves (controller gaps and the finish): {fmt(between)}", ""]
    lines.append(cpu_table(result["cpu"]))
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------
def machine() -> Obj:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="200MB", help="word count input size")
    parser.add_argument("--workers", type=int, default=2, help="node CPUs and workers.max")
    parser.add_argument("--repeat", type=int, default=5, help="tiny jobs")
    parser.add_argument("--wc-repeat", type=int, help="word count runs (default: --repeat)")
    parser.add_argument("--only", choices=["overhead", "wordcount"])
    parser.add_argument("--reducers", type=int, help="default: the local runner's")
    parser.add_argument("--split-size", help="default: the local runner's, e.g. 50MB")
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)
    result: Obj = {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("data_dir", "results")},
    }
    started = time.monotonic()
    with stack(args.workers) as st:
        if args.only in (None, "overhead"):
            result["overhead"] = overhead(st, args.repeat, args.workers)
        if args.only in (None, "wordcount"):
            result["wordcount"] = wordcount(
                st, args.size, args.workers, args.wc_repeat or args.repeat, args.data_dir,
                st.tmp, args.reducers,
                parse_size(args.split_size) if args.split_size else None,
            )  # fmt: skip
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as fh:
        json.dump(result, fh, indent=1)
    m = result["machine"]
    print(
        f"Machine: {m['cpus']} cores, {m['memory_gb']} GB, Python {m['python']}, "
        f"{m['system']}; {m['date']}\n"
    )
    if "overhead" in result:
        o = result["overhead"]
        print(f"### Tiny job: median {o['median_seconds']:.2f} s over {args.repeat} runs\n")
        print(overhead_table(o))
        print(
            f"\nController: {o['reconciles_per_job']:.0f} reconciles per job, "
            f"{o['reconcile_seconds_per_job']:.3f} s of reconcile in all; this Python's "
            f"start and the worker's imports: {o['python_import_seconds']:.2f} s\n"
        )
    if "wordcount" in result:
        w = result["wordcount"]
        print("### Word count\n")
        print(wordcount_tables(w, args.workers))
        print(
            f"\nlocal (MinIO) / cluster: **{w['local_s3_over_cluster']:.2f}**; "
            f"local (files) / cluster: {w['local_files_over_cluster']:.2f}"
        )
    print(f"\n# {result['wall_seconds']:.0f} s in all; results in {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
