"""A real MinIO server on 127.0.0.1 for tests and benchmarks.

The server listens on loopback only (API and console on free ports), with generated root
credentials, the web console, update checks and call-home off, and its data in a temp
dir. :meth:`MinioServer.restart` stops and starts the same server on the same port and
data, as a fault test needs; :meth:`MinioServer.stopped` keeps it down for a block.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

from tests.support import built_binary, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGION = "us-east-1"

# urllib must not send the health checks of a loopback server through a proxy.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def minio_binary() -> str:
    """``$KUBEMR_MINIO_BIN``, or the binary ``scripts/install-minio`` builds or reuses."""
    return built_binary("KUBEMR_MINIO_BIN", "install-minio")


class MinioServer:
    """Starts, stops and restarts one MinIO process (in its own process group)."""

    def __init__(self, binary: str, data_dir: str | None = None) -> None:
        self.binary = binary
        self._tmp = tempfile.mkdtemp(prefix="kubemr-minio-")
        self.data_dir = data_dir or os.path.join(self._tmp, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(self._tmp, "minio.log")
        self.port = free_port()
        self.console_port = free_port()
        self.access_key = "kubemr" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)  # also when the session dies before its teardown

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait (bounded) until ``/minio/health/live`` answers."""
        env = dict(
            os.environ,
            MINIO_ROOT_USER=self.access_key,
            MINIO_ROOT_PASSWORD=self.secret_key,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
            MINIO_CALLHOME_ENABLE="off",
            MINIO_SCANNER_SPEED="slowest",
            MINIO_REGION=REGION,
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary, "server", self.data_dir, "--quiet", "--anonymous",
                    "--address", f"127.0.0.1:{self.port}",
                    "--console-address", f"127.0.0.1:{self.console_port}",
                ],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"minio exited with {code}: {self.log_tail()}")
            try:
                with _direct.open(f"{self.endpoint}/minio/health/live", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"minio not live after {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's whole process group (TERM, then KILL after 20 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self) -> None:
        """The same server again: same port, credentials and data."""
        self.stop()
        self.start()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server down for the block, then started again on the same port and data,
        however the block ends."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def is_live(self) -> bool:
        """Whether ``/minio/health/live`` answers now."""
        try:
            with _direct.open(f"{self.endpoint}/minio/health/live", timeout=1):
                return True
        except OSError:
            return False

    def close(self) -> None:
        self.stop()
        atexit.unregister(self.stop)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return fh.read()[-n:]
        except OSError:
            return "(no log)"

    def env(self) -> dict[str, str]:
        """The AWS variables that point a client or a subprocess at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 client for set-up and checks in tests (not the code under test)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "total_max_attempts": 10},
                proxies={},
                max_pool_connections=32,
            ),
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
