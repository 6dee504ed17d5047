"""The kubemr controller process: informers, the reconcile loop, leader election.

Three informers fill the caches: MapReduceJobs, and the Jobs and pods carrying the
``kubemr.dev/job`` label (the resource's name), indexed by the resource's key. A change to
any of them queues that key; :meth:`JobController.reconcile` reads the caches, asks the
pure :func:`kubemr.controller.reconcile.reconcile` what to do, and does it through
:class:`kubemr.executors.k8s.api.ControllerApi`, the one place that writes to the API.

The controller never reads the job's storage and never unpickles anything: what it learns
of a stage comes from Job status and pod termination messages.

Example:
    sys.exit(run(Options(namespaces=("team-a",), leader_elect=False)))
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client, config

from kubemr.controller.actions import (
    SCALED_AT,
    SUSPENDED,
    CreateJob,
    DeleteResource,
    Event,
    Outcome,
    ScaleJob,
    SuspendJob,
    event_name,
)
from kubemr.controller.health import Metrics
from kubemr.controller.informer import (
    JOBS,
    PODS,
    Informer,
    KubeApi,
    Obj,
    Resource,
    object_key,
    split_key,
)
from kubemr.controller.lease import LeaderElector, default_identity
from kubemr.controller.logs import LogFormat, setup_logging
from kubemr.controller.reconcile import reconcile
from kubemr.controller.runtime import (
    Controller,
    ReconcileResult,
    count_api_requests,
    label_keys,
    own_key,
)
from kubemr.executors.k8s.api import (
    LEASE_RIGHTS,
    ClientTransport,
    Conflict,
    ControllerApi,
    KubeError,
    NamespaceTerminating,
    PermissionDenied,
)
from kubemr.executors.k8s.manifests import GROUP, KIND, LABEL_JOB, PLURAL, VERSION
from kubemr.spec import JobDefaults

log = logging.getLogger("kubemr.controller")

MAP_REDUCE_JOBS = Resource(GROUP, VERSION, PLURAL, KIND)
OWNER_INDEX = "owner"
LEASE_NAME = "kubemr-controller"
EXIT_CONFIG = 1
STALE_RETRY_SECONDS = 0.25
STALE_WINDOW_SECONDS = 5.0
"""How long a cache still showing the resource as it was before our status write is taken
as lagging (after that, it is reconciled as it is)."""
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class Options:
    """What ``kubemr controller`` takes (see :mod:`kubemr.cli.controller`)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()  # none: every namespace
    leader_elect: bool = True
    lease_namespace: str = "kubemr-system"
    lease_name: str = LEASE_NAME
    health_address: tuple[str, int] | None = ("127.0.0.1", 8081)
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    workers: int = 2
    job_defaults: JobDefaults = field(default_factory=JobDefaults)

    @property
    def scopes(self) -> tuple[str | None, ...]:
        """The namespaces watched, None standing for all of them."""
        return self.namespaces or (None,)


class ByNamespace:
    """One informer per watched namespace (or one for all), found by a key's namespace."""

    def __init__(self, informers: dict[str | None, Informer]) -> None:
        self.informers = informers

    def of(self, key: str) -> Informer | None:
        namespace, _ = split_key(key)
        return self.informers.get(namespace) or self.informers.get(None)

    def get(self, key: str) -> Obj | None:
        informer = self.of(key)
        return informer.get(key) if informer is not None else None

    def by_index(self, index: str, key: str) -> list[Obj]:
        informer = self.of(key)
        return informer.by_index(index, key) if informer is not None else []


def load_api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """The in-cluster configuration when running in a pod without a kubeconfig, else the
    kubeconfig (``$KUBECONFIG`` or ``~/.kube/config`` when None)."""
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ and os.path.exists(SERVICE_ACCOUNT_TOKEN)
    if kubeconfig is None and context is None and in_pod:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config(config_file=kubeconfig, context=context)


class JobController:
    """Reconciles one MapReduceJob key from the informers' caches."""

    def __init__(
        self,
        api: ControllerApi,
        resources: Informer | ByNamespace,
        jobs: Informer | ByNamespace,
        pods: Informer | ByNamespace,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
        defaults: JobDefaults | None = None,
    ) -> None:
        self.api = api
        self.resources = resources
        self.jobs = jobs
        self.pods = pods
        self.clock = clock
        self.metrics = metrics
        self.defaults = defaults or JobDefaults()
        # When this process last scaled a Job, until the cache shows the annotation.
        self._scaled: dict[tuple[str, str], datetime] = {}
        # The resourceVersion each resource had when this process last wrote its status:
        # while the cache still shows it, the cache is behind our own write.
        self._written: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def reconcile(self, key: str) -> ReconcileResult | None:
        resource = self.resources.get(key)
        if resource is None:
            with self._lock:
                self._written.pop(key, None)
            return None  # deleted: the garbage collector removes its Jobs and pods
        if self._behind_own_write(key, resource):
            # The update event of our write will come; acting on the older copy would
            # only end in a conflict.
            return ReconcileResult(requeue_after=STALE_RETRY_SECONDS)
        namespace, _ = split_key(key)
        now = self.clock()
        outcome = reconcile(
            resource,
            self.jobs.by_index(OWNER_INDEX, key),
            self.pods.by_index(OWNER_INDEX, key),
            now,
            self._last_scaled(namespace or "", now),
            self.defaults,
        )
        try:
            return self.apply(resource, outcome, now)
        except NamespaceTerminating:
            # Its namespace is being deleted: the resource goes with it, nothing to retry.
            log.info("namespace is being deleted; leaving the resource to it")
            return None

    def apply(self, resource: Obj, outcome: Outcome, now: datetime) -> ReconcileResult:
        """Do what ``outcome`` says: Job changes, then the status, then the Events (only
        once the status that explains them is written), then the resource's deletion."""
        meta = resource["metadata"]
        namespace = meta["namespace"]
        for action in outcome.job_actions:
            if isinstance(action, CreateJob):
                self.api.apply_job(action.manifest)
                log.info("created job", extra={"k8s_job": action.name})
                self._count("jobs_created_total")
            elif isinstance(action, ScaleJob):
                self.api.patch_job(
                    namespace,
                    action.name,
                    parallelism=action.parallelism,
                    annotations={SCALED_AT: action.scaled_at},
                )
                with self._lock:
                    self._scaled[(namespace, action.name)] = now
                log.info(
                    "scaled job",
                    extra={"k8s_job": action.name, "parallelism": action.parallelism},
                )
            elif isinstance(action, SuspendJob):
                self.api.patch_job(
                    namespace,
                    action.name,
                    suspend=action.suspend,
                    annotations={SUSPENDED: "true" if action.suspend else None},
                )
                log.info(
                    "suspended job" if action.suspend else "resumed job",
                    extra={"k8s_job": action.name},
                )
        if outcome.status is not None and outcome.status != resource.get("status"):
            try:
                written = self.api.patch_status(resource, outcome.status)
            except Conflict:
                # The cache is behind the resource: look again once it has caught up.
                return ReconcileResult(requeue_after=0.5)
            if written is not None and meta.get("resourceVersion"):
                with self._lock:
                    self._written[object_key(resource)] = (
                        meta["resourceVersion"],
                        time.monotonic(),
                    )
            phase = outcome.status.get("phase")
            if phase != (resource.get("status") or {}).get("phase"):
                log.info("phase", extra={"phase": phase})
        for after in outcome.actions:
            if isinstance(after, Event):
                self.api.create_event(
                    resource,
                    event_name(resource, after),
                    after.type,
                    after.reason,
                    after.message,
                    now,
                )
            elif isinstance(after, DeleteResource):
                self.api.delete_resource(resource)
                log.info("deleted the resource", extra={"reason": after.reason})
        return ReconcileResult(requeue_after=outcome.requeue_after)

    def _behind_own_write(self, key: str, resource: Obj) -> bool:
        with self._lock:
            written = self._written.get(key)
            if written is None:
                return False
            version, at = written
            if (
                resource["metadata"].get("resourceVersion") != version
                or time.monotonic() - at > STALE_WINDOW_SECONDS
            ):
                del self._written[key]
                return False
            return True

    def _last_scaled(self, namespace: str, now: datetime) -> dict[str, datetime]:
        horizon = now - timedelta(minutes=5)
        with self._lock:
            for k in [k for k, t in self._scaled.items() if t < horizon]:
                del self._scaled[k]
            return {name: t for (ns, name), t in self._scaled.items() if ns == namespace}

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name)


def build(options: Options, api_client: Any | None = None) -> Controller:
    """The controller with its informers, ready to :meth:`~Controller.run`."""
    api_client = api_client or load_api_client(options.kubeconfig, options.context)
    metrics = Metrics()
    metrics.describe("jobs_created_total", "Stage Jobs created.")
    count_api_requests(api_client, metrics)
    raw = KubeApi(api_client)
    identity = default_identity()
    api = ControllerApi(ClientTransport(api_client), instance=identity)
    preflight(api, options)

    selector = LABEL_JOB  # the label exists: a Job or pod of some MapReduceJob
    owner = label_keys(LABEL_JOB)
    resources: dict[str | None, Informer] = {}
    jobs: dict[str | None, Informer] = {}
    pods: dict[str | None, Informer] = {}
    for ns in options.scopes:
        resources[ns] = Informer(raw, MAP_REDUCE_JOBS, namespace=ns)
        jobs[ns] = Informer(raw, JOBS, namespace=ns, label_selector=selector)
        pods[ns] = Informer(raw, PODS, namespace=ns, label_selector=selector)
        jobs[ns].add_index(OWNER_INDEX, owner)
        pods[ns].add_index(OWNER_INDEX, owner)
    reconciler = JobController(
        api,
        ByNamespace(resources),
        ByNamespace(jobs),
        ByNamespace(pods),
        metrics=metrics,
        defaults=options.job_defaults,
    )

    elector = None
    if options.leader_elect:
        elector = LeaderElector(raw, options.lease_name, options.lease_namespace, identity=identity)
    controller = Controller(
        reconciler.reconcile,
        workers=options.workers,
        elector=elector,
        metrics=metrics,
        health_address=options.health_address,
    )
    for ns in options.scopes:
        controller.watch(resources[ns], own_key)
        controller.watch(jobs[ns], owner)
        controller.watch(pods[ns], owner)
    return controller


def preflight(api: ControllerApi, options: Options) -> None:
    """Fail at start, with a message saying what to do, when the CRD is missing or the
    controller may not list its resources; warn about any other right it lacks."""
    for ns in options.scopes:
        api.check_crd(ns)
    try:
        missing = [r for ns in options.scopes for r in api.missing_rights(ns)]
        if options.leader_elect:
            missing += api.missing_rights(options.lease_namespace, LEASE_RIGHTS)
    except KubeError as exc:  # the review API itself refused: go on, errors will tell
        log.warning("could not check the controller's rights", extra={"error": str(exc)})
        return
    if missing:
        where = ", ".join(options.namespaces) if options.namespaces else "all namespaces"
        log.error(
            "the controller lacks rights it needs; apply manifests/rbac.yaml",
            extra={"missing": [str(r) for r in missing], "scope": where},
        )


def run(options: Options) -> int:
    """Run the controller until a signal (exit 0) or the loss of its lease (exit 75)."""
    setup_logging(options.log_level, options.log_format)
    try:
        controller = build(options)
    except PermissionDenied as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    except KubeError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    except config.ConfigException as exc:
        log.error("cannot load the Kubernetes configuration: %s", exc)
        return EXIT_CONFIG
    log.info(
        "starting",
        extra={
            "namespaces": list(options.namespaces) or "(all)",
            "leader_elect": options.leader_elect,
            "workers": options.workers,
        },
    )
    return controller.run()
