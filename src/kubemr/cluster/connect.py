"""The connection to a cluster: a kubeconfig (``--kubeconfig``, ``$KUBECONFIG``,
``~/.kube/config``) and its context, or the pod's service account when there is no
kubeconfig and the command runs in a pod.

Every request is bounded: the TCP connect by :data:`CONNECT_TIMEOUT` with one retry, so
an unreachable cluster fails within seconds; each read by the caller's timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from kubemr.cluster.errors import NoCluster

CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to the API server (twice at most)."""
DEFAULT_NAMESPACE = "default"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class Connection:
    """An API client and what it was made from."""

    api_client: client.ApiClient
    namespace: str
    """The context's namespace, else ``default``."""
    server: str
    context: str | None


def kubeconfig_path(kubeconfig: str | None) -> str:
    """The kubeconfig file(s) to read: the flag, else ``$KUBECONFIG`` (a list separated
    by ``:``), else ``~/.kube/config``."""
    return kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """A bounded connection to the cluster the configuration names; :class:`NoCluster`
    when there is none or it cannot be read. Nothing is sent to the cluster yet."""
    path = kubeconfig_path(kubeconfig)
    configuration = client.Configuration()
    paths = [p for p in path.split(os.pathsep) if p]
    if not any(os.path.exists(os.path.expanduser(p)) for p in paths):
        if kubeconfig is None and context is None and _in_pod():
            return _in_cluster(configuration)
        raise NoCluster(
            f"no kubeconfig at {path}: give --kubeconfig, set $KUBECONFIG, or write ~/.kube/config"
        )
    try:
        config.load_kube_config(
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise NoCluster(f"cannot use the kubeconfig {path}: {exc}") from None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or DEFAULT_NAMESPACE
    return _connection(configuration, namespace, (chosen or {}).get("name"))


def _in_pod() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ and os.path.exists(
        os.path.join(SERVICE_ACCOUNT_DIR, "token")
    )


def _in_cluster(configuration: client.Configuration) -> Connection:
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise NoCluster(f"cannot use the pod's service account: {exc}") from None
    try:
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) as fh:
            namespace = fh.read().strip() or DEFAULT_NAMESPACE
    except OSError:
        namespace = DEFAULT_NAMESPACE
    return _connection(configuration, namespace, None)


def _connection(
    configuration: client.Configuration, namespace: str, context: str | None
) -> Connection:
    # One retry of a failed connect, none of a read: a request the server received is not
    # sent again, and a cluster that is not there fails in seconds.
    configuration.retries = Retry(total=1, connect=1, read=0, redirect=0, status=0)
    return Connection(client.ApiClient(configuration), namespace, configuration.host, context)
