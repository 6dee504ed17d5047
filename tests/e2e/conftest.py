from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .kubestack import Kubestack, kubestack_binary


@dataclass
class Cluster:
    kubeconfig: str
    stack: Kubestack | None = None

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)


@pytest.fixture(scope="module")
def minio() -> Iterator[Any]:
    """A MinIO server on 127.0.0.1 for the tests of one module, stopped after them."""
    from tests.integration.minio import MinioServer, minio_binary

    server = MinioServer(minio_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kube() -> Iterator[Cluster]:
    """A real Kubernetes control plane: kubestack, or the cluster in $KUBECONFIG when
    KUBEMR_E2E_USE_EXISTING=1."""
    if os.environ.get("KUBEMR_E2E_USE_EXISTING") == "1" and os.environ.get("KUBECONFIG"):
        yield Cluster(os.environ["KUBECONFIG"])
        return
    # The state in a directory of its own, which a test can hide from a pod with a mount
    # over it (as an emptyDir at /tmp would hide a state under /tmp) and nothing else.
    parent = tempfile.mkdtemp(prefix="kubemr-e2e-")
    state = os.path.join(parent, "kubestack")
    os.mkdir(state)
    stack = Kubestack(kubestack_binary(), state, cpu="4", memory="8Gi")
    try:
        stack.start()
        yield Cluster(stack.kubeconfig, stack)
    finally:
        stack.stop()
        # etcd data, certificates and pod logs: nothing of the cluster outlives the session
        shutil.rmtree(parent, ignore_errors=True)
