"""``python -m kubemr`` and the ``kubemr`` command."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        # A local run: the worker pool's forkserver imports the task path while this
        # process imports the command line (see kubemr.executors.forkserver).
        from kubemr.executors import forkserver

        forkserver.start()
    from kubemr.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
