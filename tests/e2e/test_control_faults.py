"""Faults of the control plane and of the storage under a running job, on kubestack with
the real ``kubemr worker`` and MinIO:

1. the controller SIGKILLed while a stage's Job exists and its pod runs (plan, map,
   reduce, commit), then started again;
2. two controller replicas, the leader SIGKILLed mid-map: the standby takes the Lease;
3. MinIO stopped and started again (same port and data) while map tasks write or reduce
   tasks read the shuffle;
4. MinIO stopped during the map wave and kept down past the storage retry budget.

Every job is the word count; its output is checked by :class:`Digest` against plain
Python over the same lines (no record lost, none counted twice), its stage Jobs by uid
(none made twice) and its task attempts by pod (none beyond what the fault explains).

``KUBEMR_FAULT_RUNS`` (default 1) repeats each fault that many times, each on a job of
its own, for a longer tier.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from kubernetes import client

from kubemr import termination
from kubemr.executors.k8s.manifests import GROUP, LABEL_STAGE, VERSION
from kubemr.storage import s3 as s3_store
from tests.e2e import support
from tests.e2e.datajobs import WORDCOUNT, Digest, slowed, word_counts, word_lines
from tests.e2e.support import Cluster, ControllerProcess, Obj, wait_for
from tests.integration.minio import MinioServer, minio_binary

RUNS = int(os.environ.get("KUBEMR_FAULT_RUNS", "1"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480 * RUNS + 120)]

globals().update({name: getattr(support, name) for name in support.FIXTURES})

INDEX = "batch.kubernetes.io/job-completion-index"
BUCKET = "data"
SECRET = "s3"
FILES = 4
"""Input files, one map task each."""
MAP_SECONDS_PER_LINE = 0.25
REDUCE_SECONDS_PER_KEY = 0.4
LINES = 80
"""20 lines per map task: 5 s in a slowed mapper; 22 distinct words, about 11 per reduce
task: 4.4 s in a slowed reducer."""
STAGE_DELAY = 5.0
"""How long a delayed plan or commit pod runs before its worker starts."""
STAGES = ("plan", "map-0", "reduce-0", "commit")
MAX_ATTEMPTS = 2
"""spec.maxAttempts of every job here."""

DELAYED_WORKER = r'''
"""`kubemr worker ...`, started after $DELAY_<STAGE> seconds (DELAY_PLAN, DELAY_COMMIT):
a plan or commit pod that runs long enough for a fault to land while it runs."""
import os
import sys
import time

args = sys.argv[1:]
stage = args[args.index("--stage") + 1] if "--stage" in args else ""
time.sleep(float(os.environ.get("DELAY_" + stage.upper().replace("-", "_"), "0")))
os.execv(sys.executable, [sys.executable, "-m", "kubemr", *args])
'''


def slowed_reducer(source: str, seconds_per_key: float) -> str:
    """``source`` with a Python reducer that sleeps before each key (the built-in SUM
    reducer would be done at once)."""
    return source.replace(
        "    reducer = kubemr.SUM\n",
        "    def reducer(self, key, values):\n"
        f"        __import__('time').sleep({seconds_per_key})\n"
        "        yield key, sum(values)\n",
    )


# -- set-up -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def delayed_worker(tmp_path_factory: Any) -> str:
    path = tmp_path_factory.mktemp("delayed") / "delayed_worker.py"
    path.write_text(DELAYED_WORKER)
    return str(path)


@pytest.fixture
def own_minio() -> Iterator[MinioServer]:
    """A MinIO of this test alone, which the test stops and starts."""
    server = MinioServer(minio_binary())
    server.start()
    try:
        server.make_bucket(BUCKET)
        yield server
    finally:
        server.close()


@pytest.fixture
def shared_minio(minio: MinioServer) -> MinioServer:
    """The module's MinIO, with the bucket the jobs use."""
    s3 = minio.client()
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET)
    return minio


def storage_secret(cluster: Cluster, server: MinioServer) -> None:
    """The storage Secret the jobs of ``cluster.ns`` name (keys become the workers' env)."""
    env = server.env()
    cluster.core.create_namespaced_secret(
        cluster.ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        ),
    )


def s3_job(
    name: str,
    server: MinioServer,
    source: str,
    lines: list[str],
    *,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A word count over ``lines`` uploaded to ``s3://data/<name>/in/`` (one file per map
    task), its output at ``s3://data/<name>/out``."""
    s3 = server.client()
    for i in range(FILES):
        body = ("\n".join(lines[i::FILES]) + "\n").encode()
        s3.put_object(Bucket=BUCKET, Key=f"{name}/in/part-{i}.txt", Body=body)
    template: Obj = {"command": command or [sys.executable, "-m", "kubemr"]}
    if env:
        template["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": name},
        "spec": {
            "inputs": [f"s3://{BUCKET}/{name}/in/*.txt"],
            "output": f"s3://{BUCKET}/{name}/out",
            "job": {"source": source},
            "reducers": 2,
            "maxAttempts": MAX_ATTEMPTS,
            "workers": {"max": FILES},
            "storage": {
                "endpoint": server.endpoint,
                "region": "us-east-1",
                "secretRef": {"name": SECRET},
            },
            "template": template,
            **spec,
        },
    }


# -- what the tests observe -------------------------------------------------------------------
def index_of(pod: Any) -> int:
    return int((pod.metadata.annotations or {}).get(INDEX, "0"))


def running(pod: Any) -> bool:
    statuses = pod.status.container_statuses or []
    return (
        pod.status.phase == "Running"
        and not pod.metadata.deletion_timestamp
        and bool(statuses)
        and statuses[0].state.running is not None
    )


def running_pods(cluster: Cluster, name: str, stage: str) -> list[Any]:
    return [p for p in cluster.pods(name, stage) if running(p)]


def wait_running(cluster: Cluster, name: str, stage: str, timeout: float = 180) -> Any:
    return wait_for(
        f"a running {stage} pod of {name}",
        lambda: next(iter(running_pods(cluster, name, stage)), None),
        timeout=timeout,
        every=0.1,
    )


def job_uids(cluster: Cluster, name: str) -> dict[str, str]:
    return {j.metadata.name: j.metadata.uid for j in cluster.jobs(name)}


def has_event(cluster: Cluster, name: str, reason: str) -> bool:
    return reason in {e.reason for e in cluster.events(name)}


def has_job(cluster: Cluster, name: str, stage: str) -> bool:
    return f"{name}-{stage}" in job_uids(cluster, name)


def attempts(cluster: Cluster, name: str) -> Counter[tuple[str, int]]:
    """Pods (attempts) per task: (stage, index)."""
    return Counter((p.metadata.labels[LABEL_STAGE], index_of(p)) for p in cluster.pods(name))


def report_of(pod: Any) -> dict[str, Any]:
    """A finished pod's termination message ({} when it has none)."""
    statuses = pod.status.container_statuses or []
    done = statuses[0].state.terminated if statuses else None
    return termination.decode(done.message if done else None) or {}


def failed_reports(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [report_of(p) for p in cluster.pods(name) if p.status.phase == "Failed"]


def expected_tasks(status: Obj) -> set[tuple[str, int]]:
    """Every task of the job, (stage, index), from its waves."""
    return {
        (w["kind"] if w.get("step") is None else f"{w['kind']}-{w['step']}", i)
        for w in status["waves"]
        for i in range(w["total"])
    }


def assert_exact_output(server: MinioServer, name: str, lines: list[str]) -> None:
    s3 = server.client()
    got = Digest.of_s3(s3, BUCKET, f"{name}/out")
    want = Digest.of_counts(word_counts(lines))
    assert got == want, f"{name}: output {got}, expected {want}"
    assert got.repeated == 0
    success = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{name}/out/_SUCCESS")
    assert success.get("KeyCount") == 1, f"{name}: no _SUCCESS"


def assert_succeeded_as_seen(cluster: Cluster, name: str, status: Obj, lines: list[str]) -> None:
    """What a user reads of a job that went through a fault and succeeded."""
    assert status["phase"] == "Succeeded"
    assert "failure" not in status, status.get("failure")
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True"
    done, total = status["progress"].split("/")
    assert done == total
    assert status["result"]["recordsIn"] == len(lines)
    assert [w["kind"] for w in status["waves"]] == ["plan", "map", "reduce", "commit"]
    assert all(w["succeeded"] == w["total"] for w in status["waves"]), status["waves"]
    # The Event follows the status write that explains it.
    wait_for("the Succeeded event", partial(has_event, cluster, name, "Succeeded"), 30)


def assert_one_attempt_each(cluster: Cluster, name: str, status: Obj) -> None:
    """Every task ran exactly once, and succeeded."""
    tries = attempts(cluster, name)
    failed = failed_reports(cluster, name)
    assert set(tries) == expected_tasks(status), (sorted(tries), status["waves"])
    assert all(n == 1 for n in tries.values()), f"tasks attempted again: {tries}; {failed}"
    assert not failed, failed
    assert all(w["failed"] == 0 for w in status["waves"]), status["waves"]


def assert_retries_explained(cluster: Cluster, name: str, status: Obj, endpoint: str) -> None:
    """Every task ran, none more than maxAttempts times, and every failed attempt failed
    because the storage at ``endpoint`` could not be reached."""
    tries = attempts(cluster, name)
    failed = failed_reports(cluster, name)
    assert set(tries) == expected_tasks(status), (sorted(tries), status["waves"])
    assert max(tries.values()) <= MAX_ATTEMPTS, tries
    reached = "cannot reach the object store at " + endpoint
    assert all(reached in r.get("message", "") for r in failed), failed


def assert_jobs_kept(cluster: Cluster, name: str, before: dict[str, str]) -> None:
    """Each stage Job exists once, and none seen before the fault was made again."""
    after = job_uids(cluster, name)
    assert sorted(after) == sorted(f"{name}-{s}" for s in STAGES), after
    for job, uid in before.items():
        assert after[job] == uid, f"{job} was created again"


# -- 1. the controller killed mid-stage -------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_controller_killed_mid_stage_resumes_without_duplicates(
    stage: str,
    cluster: Cluster,
    start_controller: Callable[..., ControllerProcess],
    shared_minio: MinioServer,
    delayed_worker: str,
) -> None:
    storage_secret(cluster, shared_minio)
    lines = word_lines(LINES)
    source = WORDCOUNT
    if stage == "map-0":
        source = slowed(source, MAP_SECONDS_PER_LINE)
    if stage == "reduce-0":
        source = slowed_reducer(source, REDUCE_SECONDS_PER_KEY)
    delays = {f"DELAY_{stage.upper()}": str(STAGE_DELAY)} if stage in ("plan", "commit") else {}
    for run in range(RUNS):
        name = f"kill-{stage.split('-')[0]}-{run}"
        # No leader election: the restarted controller starts acting at once, so it finds
        # the stage's Job still running (leader election, the Lease's wait, is case 2).
        first = start_controller("--no-leader-elect")
        body = s3_job(
            name,
            shared_minio,
            source,
            lines,
            command=[sys.executable, delayed_worker],
            env=delays,
        )
        cluster.create(body)
        pod = wait_running(cluster, name, stage)
        if stage == "map-0":
            time.sleep(1.0)  # inside the mapper
        first.kill()
        killed_at = time.monotonic()
        before = job_uids(cluster, name)
        assert f"{name}-{stage}" in before
        # The window was real: the stage's pod still runs with no controller.
        assert any(p.metadata.uid == pod.metadata.uid for p in running_pods(cluster, name, stage))
        time.sleep(2)  # the stage goes on without a controller
        second = start_controller("--no-leader-elect")
        status = cluster.wait_phase(name, "Succeeded", timeout=180)
        print(f"{name}: Succeeded {time.monotonic() - killed_at:.1f}s after the kill")

        assert "controller running" in second.log()
        assert_succeeded_as_seen(cluster, name, status, lines)
        assert_exact_output(shared_minio, name, lines)
        assert_jobs_kept(cluster, name, before)
        assert_one_attempt_each(cluster, name, status)
        second.stop()


# -- 2. two replicas, the leader killed mid-map -----------------------------------------------
def lease_holder(cluster: Cluster) -> str:
    coordination = client.CoordinationV1Api(cluster.core.api_client)
    try:
        lease = coordination.read_namespaced_lease("kubemr-controller", support.SYSTEM_NS)
    except client.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return lease.spec.holder_identity or ""


def identity_of(holder: str, procs: list[ControllerProcess]) -> ControllerProcess | None:
    """The replica a Lease holder names (identities are ``host_pid_random``)."""
    parts = holder.split("_")
    for proc in procs:
        if len(parts) >= 3 and proc.proc is not None and parts[-2] == str(proc.proc.pid):
            return proc
    return None


def leading(cluster: Cluster, replicas: list[ControllerProcess]) -> ControllerProcess | None:
    return identity_of(lease_holder(cluster), replicas)


def leads(cluster: Cluster, replica: ControllerProcess) -> bool:
    return leading(cluster, [replica]) is replica


def metrics_of(proc: ControllerProcess) -> dict[str, float]:
    """A replica's /metrics as ``{series: value}``; a counter never incremented (declared,
    with no sample yet) as 0."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{proc.health_port}/metrics"
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            series.setdefault(line.split()[2], 0.0)
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            series[key] = float(value)
    return series


def writes_in(metrics: dict[str, float]) -> float:
    """Requests that change something other than the Lease: PATCH (Jobs, status) and
    DELETE; a standby's POSTs are its start-up access reviews."""
    return sum(
        v
        for k, v in metrics.items()
        if k.startswith("kubemr_controller_api_requests_total")
        and ('verb="PATCH"' in k or 'verb="DELETE"' in k)
    )


def test_standby_takes_over_from_a_killed_leader_mid_map(
    cluster: Cluster,
    start_controller: Callable[..., ControllerProcess],
    shared_minio: MinioServer,
) -> None:
    storage_secret(cluster, shared_minio)
    lines = word_lines(LINES)
    source = slowed(WORDCOUNT, MAP_SECONDS_PER_LINE)
    for run in range(RUNS):
        name = f"takeover-{run}"
        replicas = [start_controller(), start_controller()]
        # A replica killed before (by an earlier run) may hold the Lease for its duration.
        leader = wait_for(
            "a replica to lead", partial(leading, cluster, replicas), timeout=60, every=0.1
        )
        standby = next(p for p in replicas if p is not leader)
        leader_id = lease_holder(cluster)
        cluster.create(s3_job(name, shared_minio, source, lines))
        wait_running(cluster, name, "map-0")
        time.sleep(1.0)  # inside the mapper
        before = job_uids(cluster, name)
        assert f"{name}-map-0" in before
        # The standby watched, and did nothing: no reconcile, no write.
        idle = metrics_of(standby)
        assert idle["kubemr_controller_leader"] == 0
        assert idle["kubemr_controller_reconcile_total"] == 0
        assert writes_in(idle) == 0, idle

        leader.kill()
        killed_at = time.monotonic()
        assert running_pods(cluster, name, "map-0"), "the map wave ended before the kill"
        wait_for(
            "the standby to take the Lease",
            partial(leads, cluster, standby),
            timeout=60,
            every=0.1,
        )
        takeover = time.monotonic() - killed_at
        standby_id = lease_holder(cluster)
        print(f"{name}: the standby held the Lease {takeover:.1f}s after the leader's kill")
        status = cluster.wait_phase(name, "Succeeded", timeout=180)

        assert "became leader" in standby.log()
        assert_succeeded_as_seen(cluster, name, status, lines)
        assert_exact_output(shared_minio, name, lines)
        assert_jobs_kept(cluster, name, before)
        assert_one_attempt_each(cluster, name, status)
        # Events tell who acted: the leader before the kill, the standby after it.
        reporters = {e.reporting_instance for e in cluster.events(name)}
        assert reporters <= {leader_id, standby_id}, reporters
        assert standby_id in reporters, reporters  # it finished the job
        assert metrics_of(standby)["kubemr_controller_leader"] == 1
        standby.stop()


# -- 3. MinIO restarted mid-shuffle -----------------------------------------------------------
WAITING = "cannot reach the object store"
ANSWERED = "answered again"
"""What a worker logs when a storage request starts waiting, and when it goes through."""
OUTAGE_AFTER_HIT = 2.0
"""Seconds MinIO stays down once a task is seen waiting for it: a restart, well inside the
storage retry budget."""


def pod_logs(cluster: Cluster, name: str, stage: str) -> str:
    text = []
    for pod in cluster.pods(name, stage):
        try:
            text.append(cluster.core.read_namespaced_pod_log(pod.metadata.name, cluster.ns))
        except client.ApiException:  # not started yet
            pass
    return "\n".join(text)


def waiting(cluster: Cluster, name: str, stage: str) -> bool:
    return WAITING in pod_logs(cluster, name, stage)


def stored_logs(server: MinioServer, work_url: str, stage: str) -> str:
    """The task logs a user reads (``kubemr logs``): copied to the work dir by each pod."""
    s3 = server.client()
    prefix = work_url.split("/", 3)[3].rstrip("/") + f"/logs/{stage}/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return "\n".join(
        s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().decode() for o in listed
    )


@pytest.mark.parametrize("during", ["map-writes", "reduce-reads"])
def test_minio_restarted_mid_shuffle_job_still_exact(
    during: str,
    cluster: Cluster,
    controller: ControllerProcess,
    own_minio: MinioServer,
) -> None:
    storage_secret(cluster, own_minio)
    lines = word_lines(LINES)
    source = slowed(WORDCOUNT, MAP_SECONDS_PER_LINE)
    budget = s3_store.retry_budget({})  # the workers' (a clean environment)
    for run in range(RUNS):
        name = f"restart-{during.split('-')[0]}-{run}"
        stage = "map-0" if during == "map-writes" else "reduce-0"
        cluster.create(s3_job(name, own_minio, source, lines))
        if during == "map-writes":
            # Stopped inside the mappers: their shuffle writes (and the reads of any task
            # still starting) meet a server that is down.
            wait_running(cluster, name, "map-0")
            time.sleep(1.0)
        else:
            # Stopped as the reduce wave starts: its tasks' reads (the plan, the chosen map
            # outputs, their shuffle partitions) meet a server that is down.
            wait_for("the reduce Job", partial(has_job, cluster, name, "reduce-0"), 120, 0.05)
        before = job_uids(cluster, name)
        stopped_at = time.monotonic()
        with own_minio.stopped():
            wait_for(
                f"a {stage} task waiting for the storage",
                partial(waiting, cluster, name, stage),
                timeout=25,
                every=0.2,
            )
            time.sleep(OUTAGE_AFTER_HIT)
        outage = time.monotonic() - stopped_at  # until MinIO answered again
        print(f"{name}: MinIO unreachable for {outage:.1f}s")
        status = cluster.wait_phase(name, "Succeeded", timeout=180)

        assert_succeeded_as_seen(cluster, name, status, lines)
        assert_exact_output(own_minio, name, lines)
        assert_jobs_kept(cluster, name, before)
        logs = stored_logs(own_minio, status["plan"]["workUrl"], stage)
        assert WAITING in logs, logs[-3000:]  # the task logs say what the tasks waited for
        if outage + s3_store.RETRY_MAX_DELAY < budget.retry_seconds:
            # Absorbed by the storage client's retries: no task needed another attempt.
            assert_one_attempt_each(cluster, name, status)
            assert ANSWERED in logs, logs[-3000:]
        else:
            # A machine so loaded that MinIO took longer than the budget to come back: a
            # task attempt may go, for that reason only.
            assert_retries_explained(cluster, name, status, own_minio.endpoint)


# -- 4. MinIO down past the retry budget ------------------------------------------------------
def test_minio_down_past_the_retry_budget_fails_the_job_with_the_cause(
    cluster: Cluster,
    controller: ControllerProcess,
    own_minio: MinioServer,
) -> None:
    storage_secret(cluster, own_minio)
    lines = word_lines(LINES)
    source = slowed(WORDCOUNT, MAP_SECONDS_PER_LINE)
    # Each attempt waits out one request's budget (workers have a clean environment: the
    # defaults); what it writes after that (its failure marker, its log) fails at once; a
    # pod starts in seconds.
    bound = MAX_ATTEMPTS * (s3_store.retry_budget({}).worst_case_seconds + 30)
    for run in range(RUNS):
        name = f"down-{run}"
        cluster.create(s3_job(name, own_minio, source, lines))
        wait_running(cluster, name, "map-0")
        time.sleep(1.0)  # inside the mapper
        with own_minio.stopped():
            stopped_at = time.monotonic()
            status = cluster.wait_phase(name, "Failed", timeout=bound)
            took = time.monotonic() - stopped_at
            print(f"{name}: Failed {took:.1f}s after the storage went down")
            reports = failed_reports(cluster, name)
            tries = attempts(cluster, name)
        # Started again (same port and data): nothing was published.
        s3 = own_minio.client()
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{name}/out/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert f"{name}/out/_SUCCESS" not in keys, keys
        assert Digest.of_s3(s3, BUCKET, f"{name}/out").records == 0, keys

        failure = status["failure"]
        assert status["phase"] == "Failed"
        assert "result" not in status
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True"
        complete = [c for c in status["conditions"] if c["type"] == "Complete"]
        assert not complete or complete[0]["status"] != "True"
        assert failure["task"].startswith("map-0-"), failure
        message = failure["message"]
        assert own_minio.endpoint in message, message  # where
        assert "cannot reach" in message, message  # what
        assert "check that the server is up" in message, message  # what to do
        assert f"after {MAX_ATTEMPTS} attempts" in message, message
        wait_for("the failure's event", partial(has_event, cluster, name, failure["reason"]), 30)
        # Every failed attempt failed for this reason; no task went past maxAttempts, the
        # plan ran once, and nothing after the map wave started.
        assert reports and all(own_minio.endpoint in r.get("message", "") for r in reports), reports
        assert max(tries.values()) <= MAX_ATTEMPTS, tries
        assert tries[("plan", 0)] == 1, tries
        assert {stage for stage, _ in tries} == {"plan", "map-0"}, tries
        assert failure["reason"] == termination.STORAGE, failure
        assert failed["reason"] == termination.STORAGE
