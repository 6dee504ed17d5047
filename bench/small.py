"""A small word count end to end, as a user runs it from a shell: ``kubemr run`` against a
plain single-process Python script doing the same, each a new process, in one run.

    python -m bench.small --size 1MB --repeat 5

Contenders (same file; both write every word and its count as JSON lines):
  plain-script   ``python plain.py IN OUT``: the per-record mapper, a dict, sorted output
  kubemr-run     ``kubemr run`` of the word count with SUM (its default workers)

What is left for a small job is fixed cost: the interpreter and imports, the worker
pool, the plan, one wave per stage, the commit. Prints the median wall time of each and
their ratio; the outputs are checked equal first.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.sources import compile_sources
from kubemr.datagen import zipf_text
from kubemr.sizes import parse_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The same mapper as bench.wordcount_jobs, a dict as combiner, output as kubemr writes it.
PLAIN = """
import json, sys

def mapper(line):
    for word in line.split():
        yield word, 1

counts = {}
get = counts.get
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        for word, one in mapper(line):
            counts[word] = get(word, 0) + one
with open(sys.argv[2], "w", encoding="utf-8") as out:
    for word in sorted(counts):
        out.write(json.dumps([word, counts[word]], ensure_ascii=False) + "\\n")
"""


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def _counts(paths: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                word, n = json.loads(line)
                found[word] = n
    return found


def main(argv: list[str] | None = None) -> None:
    compile_sources()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", default="1MB")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    data = os.path.join(args.data_dir, f"zipf-{size}.txt")
    if not os.path.exists(data):
        zipf_text(data, size)
    job = os.path.join(ROOT, "examples", "wordcount.py")
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
        script = os.path.join(tmp, "plain.py")
        with open(script, "w") as fh:
            fh.write(PLAIN)
        plain_out = os.path.join(tmp, "plain.jsonl")
        kubemr_out = os.path.join(tmp, "out")
        plain = [sys.executable, script, data, plain_out]
        run = [sys.executable, "-m", "kubemr", "run", job, "-i", data, "-o", kubemr_out, "-q",
               "--overwrite"]  # fmt: skip
        _timed(plain), _timed(run)  # warm the page cache and the bytecode caches
        if _counts([plain_out]) != _counts(sorted(glob.glob(os.path.join(kubemr_out, "part-*")))):
            raise SystemExit("kubemr-run's output differs from plain-script's; no timing counts")
        times: dict[str, list[float]] = {"plain-script": [], "kubemr-run": []}
        for _ in range(args.repeat):  # interleaved, so that a busy moment hits both
            times["plain-script"].append(_timed(plain))
            times["kubemr-run"].append(_timed(run))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, median in medians.items():
        low, high = min(times[name]), max(times[name])
        print(f"{name:<13} {median:6.3f} s  (min {low:.3f}, max {high:.3f})")
    ratio = medians["kubemr-run"] / medians["plain-script"]
    print(f"\nkubemr-run takes {ratio:.1f}x plain-script's time on {args.size}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": args.size, "seconds": medians, "ratio": ratio}, fh, indent=2)


if __name__ == "__main__":
    main()
