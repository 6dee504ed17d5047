"""What this machine (or container) offers the local runner."""

from __future__ import annotations

import math
import os


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup CPU quota.

    ``os.cpu_count()`` counts the host's CPUs and ignores both, so a container limited
    to 2 CPUs on a 64-core host would otherwise start 64 workers.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota() -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` or v1 CFS quota; ``None`` when unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fh:
            period_us = int(fh.read())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None
