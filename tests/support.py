"""Helpers shared by the test tiers."""

from __future__ import annotations

import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def built_binary(env_var: str, script: str) -> str:
    """``$env_var`` when it names a file, else the path the project's build script
    prints last (it builds into the cache outside the checkout, or reuses it)."""
    env_bin = os.environ.get(env_var)
    if env_bin and os.path.exists(env_bin):
        return env_bin
    out = subprocess.run(
        [os.path.join(ROOT, "scripts", script)],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return out.stdout.strip().splitlines()[-1]


def helm_binary() -> str:
    """``$KUBEMR_HELM_BIN``, or the Helm that ``scripts/install-helm`` builds or reuses."""
    return built_binary("KUBEMR_HELM_BIN", "install-helm")
