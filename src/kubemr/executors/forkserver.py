"""The forkserver of the local worker pool, which every worker process is forked from.

It imports the task path once (``PRELOAD``, about a quarter of a second), and each
worker starts from that clean process, as a pod starts from its image. ``kubemr run``
starts it before importing its own command line (``kubemr.__main__``), so that both
imports run at once on two cores; the pool then finds it running.
"""

from __future__ import annotations

import multiprocessing.forkserver

PRELOAD = ["kubemr.task", "kubemr.executors.local"]
"""What the forkserver imports before it forks any worker."""


def start() -> None:
    """Start the forkserver (and multiprocessing's resource tracker) now, if not yet."""
    multiprocessing.forkserver.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()
