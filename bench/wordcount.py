"""Word count: kubemr against plain Python on the same data, in one run.

    python -m bench.wordcount --size 256MB --workers 2 --repeat 3

Contenders (all on the same file, same cores):
  plain-1proc        one process: the per-record mapper, a dict as combiner
  plain-Nproc        multiprocessing over N byte ranges, same functions, merged in the parent
  kubemr-record      kubemr run with the per-record mapper, SUM combiner and reducer
  counter-Nproc      multiprocessing, Counter(chunk.split()) per 4 MiB chunk: the floor
  kubemr-batch       kubemr run with mapper_batch returning Counter(...) per chunk

Outputs are checked equal before any time counts. Prints a table with the median wall
time, MB/s, the ratio to the matching plain contender and each worker's peak RSS.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from multiprocessing import get_context

import psutil

import kubemr
from bench.peers.plain import ranges, read_chunks
from bench.sources import compile_sources
from bench.wordcount_jobs import BatchWordCount, PyCombinerWordCount, WordCount, mapper
from kubemr.datagen import zipf_text
from kubemr.sizes import parse_size


def per_record(args: tuple[str, int, int]) -> dict:
    acc: dict = {}
    get = acc.get
    for text in read_chunks(*args):
        for line in text.split("\n"):
            for k, v in mapper(line):
                acc[k] = get(k, 0) + v
    return acc


def per_chunk_counter(args: tuple[str, int, int]) -> Counter:
    total: Counter = Counter()
    for text in read_chunks(*args):
        total.update(Counter(text.split()))
    return total


def merge(parts: list[dict]) -> dict:
    total: dict = {}
    get = total.get
    for part in parts:
        for k, v in part.items():
            total[k] = get(k, 0) + v
    return total


def plain_1proc(path: str, workers: int) -> dict:
    return per_record((path, 0, os.path.getsize(path)))


def plain_nproc(path: str, workers: int) -> dict:
    with get_context("forkserver").Pool(workers) as pool:
        return merge(pool.map(per_record, ranges(path, workers)))


def counter_nproc(path: str, workers: int) -> dict:
    with get_context("forkserver").Pool(workers) as pool:
        return merge(pool.map(per_chunk_counter, ranges(path, workers)))


def kubemr_job(job: type[kubemr.MapReduce]):
    def run(path: str, workers: int) -> dict:
        out = tempfile.mkdtemp(prefix="bench-out-")
        try:
            kubemr.run(job, inputs=[path], output=out, workers=workers, overwrite=True)
            result = {}
            for part in sorted(glob.glob(os.path.join(out, "part-*"))):
                with open(part) as fh:
                    for line in fh:
                        k, v = json.loads(line)
                        result[k] = v
            return result
        finally:
            shutil.rmtree(out, ignore_errors=True)

    return run


class PeakRss:
    """Samples the RSS of every descendant process; keeps each one's peak."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


CONTENDERS = {
    "plain-1proc": plain_1proc,
    "plain-Nproc": plain_nproc,
    "kubemr-record": kubemr_job(WordCount),
    "kubemr-pycombiner": kubemr_job(PyCombinerWordCount),
    "counter-Nproc": counter_nproc,
    "kubemr-batch": kubemr_job(BatchWordCount),
}
BASELINE = {
    "kubemr-record": "plain-Nproc",
    "kubemr-pycombiner": "plain-Nproc",
    "kubemr-batch": "counter-Nproc",
}


def main(argv: list[str] | None = None) -> None:
    compile_sources()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", default="256MB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    parser.add_argument("--only", nargs="*", default=list(CONTENDERS))
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    path = os.path.join(args.data_dir, f"zipf-{size}.txt")
    if not os.path.exists(path):
        print(f"generating {path}")
        zipf_text(path, size)
    mb = os.path.getsize(path) / 1e6
    reference = None
    rows = {}
    for name in args.only:
        fn = CONTENDERS[name]
        times = []
        peak = 0
        for _ in range(args.repeat):
            with PeakRss() as rss:
                t0 = time.perf_counter()
                result = fn(path, args.workers)
                times.append(time.perf_counter() - t0)
            peak = max([peak, *rss.peaks.values()])
            if reference is None:
                reference = result
            elif result != reference:
                raise SystemExit(f"{name}: output differs from {args.only[0]}'s; no timing counts")
        median = statistics.median(times)
        rows[name] = {"seconds": median, "mb_per_s": mb / median, "peak_rss_mb": peak / 1e6}
        print(
            f"{name:<15} {median:8.2f} s  {mb / median:8.1f} MB/s  "
            f"peak worker RSS {peak / 1e6:6.0f} MB",
            flush=True,
        )
    print()
    for name, base in BASELINE.items():
        if name in rows and base in rows:
            ratio = rows[base]["seconds"] / rows[name]["seconds"]
            print(f"{name} reaches {ratio:.1%} of {base}'s throughput")
            rows[name]["ratio_to_" + base] = ratio
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size_mb": mb, "workers": args.workers, "results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
