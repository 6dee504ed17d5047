"""Peak RSS of kubemr's workers on a large word count with no combiner, so every
(word, 1) pair goes through the map buffer, the spill files and the merge.

    python -m bench.memory --size 1GB --memory 256Mi --workers 2
"""

from __future__ import annotations

import argparse
import os
import time

import kubemr
from bench.wordcount import PeakRss
from kubemr.datagen import zipf_text
from kubemr.sizes import parse_size


class NoCombinerWordCount(kubemr.MapReduce):
    def mapper(self, line):
        for word in line.split():
            yield word, 1

    def reducer(self, key, values):
        yield key, sum(values)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--memory", default="256Mi")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    parser.add_argument("--output", default="/tmp/kubemr-bench-memory")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    path = os.path.join(args.data_dir, f"zipf-{size}.txt")
    if not os.path.exists(path):
        zipf_text(path, size)
    with PeakRss() as rss:
        t0 = time.perf_counter()
        summary = kubemr.run(
            NoCombinerWordCount,
            inputs=[path],
            output=args.output,
            workers=args.workers,
            memory=args.memory,
            overwrite=True,
        )
        seconds = time.perf_counter() - t0
    budget = parse_size(args.memory)
    peaks = sorted(rss.peaks.values(), reverse=True)
    counters = summary["counters"]["kubemr"]
    print(
        f"input {os.path.getsize(path) / 1e6:.0f} MB, {args.workers} workers, "
        f"--memory {args.memory}"
    )
    print(f"wall {seconds:.1f} s; map spilled {counters.get('map_spilled_records', 0):,} records")
    print(f"peak RSS per process (MB): {[round(p / 2**20) for p in peaks[: args.workers + 1]]}")
    print(f"largest peak - budget = {(peaks[0] - budget) / 2**20:.0f} MiB of fixed overhead")


if __name__ == "__main__":
    main()
