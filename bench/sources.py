"""Set-up every benchmark shares."""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_sources() -> None:
    """Byte-compile kubemr's modules and the benchmark's own before anything is timed, as
    an installed package is. Where ``PYTHONDONTWRITEBYTECODE`` is set, no process would
    cache them, and every run of kubemr (its command, its forkserver) and of the plain
    scripts would compile them again: about 0.15 s per kubemr job."""
    import compileall

    import kubemr

    for directory in (os.path.dirname(kubemr.__file__), HERE):
        compileall.compile_dir(directory, quiet=1)
