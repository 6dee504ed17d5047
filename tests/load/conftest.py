"""The load tier's cluster: one kubestack for the session with several nodes.

A kubestack node is a virtual kubelet whose API client keeps client-go's default rate
(5 requests per second, bursts of 10); each pod needs a few status writes, so one node
starts about two pods a second however idle the machine is (its log shows "client-side
throttling" waits of several seconds). The load tier runs ``KUBEMR_LOAD_NODES`` nodes
(default 4), as a real cluster spreads its pods over many kubelets, each with room for
``KUBEMR_LOAD_NODE_PODS`` pods (default 60).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.kubestack import Kubestack, kubestack_binary
from tests.support import free_port

NODES = int(os.environ.get("KUBEMR_LOAD_NODES", "4"))
NODE_PODS = os.environ.get("KUBEMR_LOAD_NODE_PODS", "60")


@dataclass
class KubeCluster:
    kubeconfig: str
    stack: Kubestack
    nodes: list[str] = field(default_factory=list)
    extra_pids: dict[str, int] = field(default_factory=dict)  # the nodes past the first

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)


class ExtraNode:
    """One more kubestack node, with directories of its own (a node clears stale pod
    directories of its root when it starts)."""

    def __init__(self, stack: Kubestack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.dir = os.path.join(stack.state, name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        pki = os.path.join(self.stack.state, "pki")
        os.makedirs(self.dir, exist_ok=True)
        log = open(os.path.join(self.stack.state, f"{self.name}.log"), "ab")
        capacity = self.stack.capacity
        self.proc = subprocess.Popen(
            [
                self.stack.binary, "node",
                f"--kubeconfig={self.stack.kubeconfig}",
                f"--name={self.name}",
                f"--log-dir={os.path.join(self.dir, 'pod-logs')}",
                f"--root-dir={os.path.join(self.dir, 'pods')}",
                f"--port={free_port()}",
                f"--tls-cert={pki}/node.crt",
                f"--tls-key={pki}/node.key",
                f"--cpu={capacity['cpu']}",
                f"--memory={capacity['memory']}",
                f"--pods={capacity['pods']}",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"kubestack node {self.name} exited with {self.proc.returncode}; its log ends:"
                f"\n{self.stack.log_tail(self.name)}"
            )
        node = self.stack.get(f"/api/v1/nodes/{self.name}")
        conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conds.get("Ready") == "True"

    def stop(self) -> None:
        """As :meth:`Kubestack.stop` stops its node: SIGTERM to the group (the node stops
        its pods), then SIGKILL to what is left."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """A kubestack of its own, stopped with everything it started after the session."""
    parent = tempfile.mkdtemp(prefix="kubemr-load-")
    state = os.path.join(parent, "kubestack")
    os.mkdir(state)
    stack = Kubestack(kubestack_binary(), state, cpu="8", memory="16Gi", pods=NODE_PODS)
    extra = [ExtraNode(stack, f"kubestack-node-{i}") for i in range(2, NODES + 1)]
    try:
        stack.start()
        for node in extra:
            node.start()
        deadline = time.monotonic() + 120
        for node in extra:
            while not _ready(node):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"kubestack node {node.name} not Ready after 120s")
                time.sleep(0.2)
        yield KubeCluster(
            stack.kubeconfig,
            stack,
            [stack.node_name, *(n.name for n in extra)],
            {n.name: n.proc.pid for n in extra if n.proc is not None},
        )
    finally:
        for node in reversed(extra):
            node.stop()
        stack.stop()
        shutil.rmtree(parent, ignore_errors=True)


def _ready(node: ExtraNode) -> bool:
    try:
        return node.ready()
    except (OSError, KeyError):  # not serving yet, or not registered yet
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The load tier runs when asked for (``-m load``, or a path under tests/load, as
    scripts/test-load does), not as part of a bare ``pytest`` over every tier."""
    here = os.path.dirname(os.path.abspath(__file__))
    asked = "load" in (config.getoption("markexpr") or "") or any(
        os.path.abspath(str(arg).split("::")[0]).startswith(here) for arg in config.args
    )
    if asked:
        return
    mine = [item for item in items if str(item.path).startswith(here)]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [item for item in items if not str(item.path).startswith(here)]
