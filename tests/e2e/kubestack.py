"""Start and stop a kubestack cluster: etcd, API server, controller manager, scheduler
and one node, each its own process group on 127.0.0.1.

    python -m tests.e2e.kubestack up [--state DIR]   # prints export KUBECONFIG=...
    python -m tests.e2e.kubestack down [--state DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.support import built_binary, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_STATE = os.path.join(
    os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr")), "kubestack", "run"
)


def kubestack_binary() -> str:
    """``$KUBESTACK_BIN``, or the binary scripts/kubestack-build builds or reuses."""
    return built_binary("KUBESTACK_BIN", "kubestack-build")


class Kubestack:
    """One cluster. ``start()`` returns when the node is Ready and the ``default``
    ServiceAccount exists; ``stop()`` ends every process group it started."""

    def __init__(
        self,
        binary: str,
        state_dir: str,
        cpu: str = "4",
        memory: str = "8Gi",
        pods: str = "110",
        node_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.node_args = node_args
        self.state = state_dir
        self.capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, tuple[str, ...]] = {}
        self.kubeconfig = os.path.join(state_dir, "kubeconfig")
        self.serving_ca = os.path.join(state_dir, "apiserver-ca.crt")
        self.node_name = "kubestack-node"

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str) -> None:
        self.args[name] = args
        log = open(os.path.join(self.state, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(
            [self.binary, name, *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        with open(os.path.join(self.state, "pids.json"), "w") as fh:
            json.dump({n: p.pid for n, p in self.procs.items()}, fh)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        try:
            with open(os.path.join(self.state, f"{name}.log"), errors="replace") as fh:
                return fh.read()[-chars:]
        except OSError:
            return "(no log)"

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, component: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"kubestack {name} exited with {proc.returncode} while waiting for "
                        f"{what}; its log ends:\n{self.log_tail(name)}"
                    )
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(
            f"kubestack: no {what} after {timeout:.0f}s; {component} log ends:\n"
            f"{self.log_tail(component)}"
        )

    # -- start and stop --------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        os.makedirs(self.state, exist_ok=True)
        pki = os.path.join(self.state, "pki")
        subprocess.run([self.binary, "pki", "--dir", pki], check=True, timeout=60)
        etcd_port, peer_port, api_port, node_port = (free_port() for _ in range(4))
        self.server = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig(pki)
        self._spawn(
            "etcd", "--data-dir", os.path.join(self.state, "etcd"),
            "--client-port", str(etcd_port), "--peer-port", str(peer_port),
        )  # fmt: skip
        self._spawn(
            "apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={os.path.join(self.state, 'apiserver')}",
            f"--client-ca-file={pki}/ca.crt",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--allow-privileged=true",
            f"--kubelet-certificate-authority={pki}/ca.crt",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        )
        self._wait("API server /readyz", self._readyz, timeout, "apiserver")
        self._trust_serving_cert()
        self._spawn(
            "controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            f"--service-account-private-key-file={pki}/sa.key",
            # Published in every namespace as the kube-root-ca.crt ConfigMap, which the
            # ServiceAccount admission plugin projects into pods as ca.crt: the CA pods
            # verify the API server with.
            f"--root-ca-file={self.serving_ca}",
            "--controllers=*,-nodeipam,-service-lb-controller,-route,-cloud-node-lifecycle",
            "--profiling=false",
        )
        self._spawn(
            "scheduler",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        )
        self._spawn(
            "node",
            f"--kubeconfig={self.kubeconfig}",
            f"--name={self.node_name}",
            f"--log-dir={os.path.join(self.state, 'pod-logs')}",
            f"--port={node_port}",
            f"--tls-cert={pki}/node.crt",
            f"--tls-key={pki}/node.key",
            f"--cpu={self.capacity['cpu']}",
            f"--memory={self.capacity['memory']}",
            f"--pods={self.capacity['pods']}",
            *self.node_args,
        )
        self._wait("Ready node", self._node_ready, timeout, "node")
        self._wait("default ServiceAccount", self._default_sa, timeout, "controller-manager")

    def stop(self) -> None:
        """Stops the components one at a time, the last started first: the node (which
        kills its pods) first, etcd last. Stopped all at once, the API server and etcd
        wait for each other for seconds."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # and whatever is left in its group
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        self.procs.clear()

    # -- faults ----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL to one component's process group, as a crash or a lost machine: no
        chance to clean up (a killed node cannot stop its pods; their processes die
        with its group)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def restart(self, name: str, timeout: float = 120) -> None:
        """Starts a killed (or stopped) component again with the flags it first had, and
        waits until it serves: the API server's /readyz, or the node Ready again."""
        proc = self.procs[name]
        if proc.poll() is None:
            raise RuntimeError(f"kubestack {name} is still running; kill it first")
        self._spawn(name, *self.args[name])
        if name == "apiserver":
            self._wait("API server /readyz", self._readyz, timeout, "apiserver")
        elif name == "node":
            self._wait("Ready node", self._node_ready, timeout, "node")

    # -- access ----------------------------------------------------------------------------
    def _write_kubeconfig(self, pki: str) -> None:
        def b64(name: str) -> str:
            with open(os.path.join(pki, name), "rb") as fh:
                return base64.b64encode(fh.read()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubestack",
                    "cluster": {"server": self.server, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "kubestack", "context": {"cluster": "kubestack", "user": "admin"}}
            ],
            "current-context": "kubestack",
        }
        with open(self.kubeconfig, "w") as fh:
            json.dump(config, fh, indent=1)
        self._pki = pki

    def _trust_serving_cert(self) -> None:
        """Point the kubeconfig at the API server's self-generated serving certificate
        (its file holds the certificate and the CA that signed it), and write that CA
        alone to ``serving_ca``."""
        with open(os.path.join(self.state, "apiserver", "apiserver.crt"), "rb") as fh:
            bundle = fh.read()
        ca = base64.b64encode(bundle).decode()
        end = b"-----END CERTIFICATE-----"
        blocks = [b[b.index(b"-----BEGIN") :] + end + b"\n" for b in bundle.split(end)[:-1]]
        with open(self.serving_ca, "wb") as fh:
            fh.write(blocks[-1])
        with open(self.kubeconfig) as fh:
            config = json.load(fh)
        cluster = config["clusters"][0]["cluster"]
        cluster.pop("insecure-skip-tls-verify", None)
        cluster["certificate-authority-data"] = ca
        with open(self.kubeconfig, "w") as fh:
            json.dump(config, fh, indent=1)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(
            os.path.join(self._pki, "admin.crt"), os.path.join(self._pki, "admin.key")
        )
        return ctx

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body.startswith(b"{") else body.decode()

    def _readyz(self) -> bool:
        return self.get("/readyz") == "ok"

    def _node_ready(self) -> bool:
        node = self.get(f"/api/v1/nodes/{self.node_name}")
        conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conds.get("Ready") == "True"

    def _default_sa(self) -> bool:
        return (
            self.get("/api/v1/namespaces/default/serviceaccounts/default")["metadata"]["name"]
            == "default"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state", default=DEFAULT_STATE)
    args = parser.parse_args()
    if args.action == "up":
        stack = Kubestack(kubestack_binary(), args.state)
        started = time.monotonic()
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        print(
            f"# kubestack ready in {time.monotonic() - started:.1f}s; stop it with "
            f"tools/kubestack/down",
            file=sys.stderr,
        )
        print(f"export KUBECONFIG={stack.kubeconfig}")
        return
    try:
        with open(os.path.join(args.state, "pids.json")) as fh:
            pids = json.load(fh)
    except FileNotFoundError:
        return
    stop_groups(list(reversed(pids.values())))
    os.remove(os.path.join(args.state, "pids.json"))


def stop_groups(pids: list[int], timeout: float = 15) -> None:
    """Stops each process group in turn, as ``Kubestack.stop`` does: SIGTERM, a wait of
    up to ``timeout`` for its leader to end, then SIGKILL for what is left."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie whose parent has not reaped it does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


if __name__ == "__main__":
    main()
