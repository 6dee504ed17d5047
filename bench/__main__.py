"""kubemr against its peers, side by side in one run, on the same data and cores.

    python -m bench all --size 1GB [--repeat 3] [--engines kubemr-record spark ...]

Jobs: word count (Zipf text), total sort (gensort-style records by 10-byte key),
join-and-aggregate (events joined with users, amount and count per country). Each engine
runs its idiomatic program as a subprocess; outputs are normalised and checked equal
before a time counts. Writes bench/results/peers-<size>.json, a table into
docs/benchmarks.md and a plot into docs/img/.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psutil

from kubemr.datagen import join_tables, sort_records, zipf_text
from kubemr.sizes import parse_size

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENVS = os.path.join(
    os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr")), "bench-venvs"
)
JOBS = ("wordcount", "sort", "join")
KUBEMR_JOBS = {
    ("kubemr-record", "wordcount"): "bench.wordcount_jobs:WordCount",
    ("kubemr-batch", "wordcount"): "bench.wordcount_jobs:BatchWordCount",
    ("kubemr-record", "sort"): os.path.join(ROOT, "examples", "total_sort.py"),
    ("kubemr-record", "join"): "bench.jobs_sort_join:RevenueByCountry",
}


def command(engine: str, job: str, data: str, out: str, workers: int) -> list[str] | str | None:
    """The command an engine runs for a job (a shell string for coreutils), or None."""
    if engine.startswith("kubemr"):
        ref = KUBEMR_JOBS.get((engine, job))
        if ref is None:
            return None
        return [sys.executable, "-m", "kubemr", "run", ref, "-i", data, "-o", out,
                "--workers", str(workers), "--quiet", "--overwrite"]  # fmt: skip
    if engine in ("plain-1proc", "plain-Nproc"):
        n = 1 if engine == "plain-1proc" else workers
        return [sys.executable, os.path.join(HERE, "peers", "plain.py"), job, data, out, str(n)]
    if engine == "spark":
        python = os.path.join(VENVS, "spark", "bin", "python")
        return [python, os.path.join(HERE, "peers", "spark.py"), job, data, out, str(workers)]
    if engine == "dask":
        python = os.path.join(VENVS, "dask", "bin", "python")
        script = os.path.join(HERE, "peers", "dask_engine.py")
        return [python, script, job, data, out, str(workers)]
    if engine == "coreutils":
        os.makedirs(out, exist_ok=True)
        sort = f"LC_ALL=C sort --parallel={workers} -S 4G"
        if job == "wordcount":
            return f"tr -s ' \\n' '\\n\\n' < {data} | {sort} | uniq -c > {out}/result.txt"
        if job == "sort":
            return f"{sort} -s -t $'\\t' -k1.1,1.10 {data} > {out}/result.txt"
        return None
    raise ValueError(engine)


# --------------------------------------------------------------------------- outputs


def _files(out: str, patterns: list[str]) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        found.extend(sorted(glob.glob(os.path.join(out, pattern))))
    return found


def _lines(paths: list[str]):
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield line.rstrip("\n")


def normalise(engine: str, job: str, out: str) -> Any:
    """An engine's output in one comparable form."""
    if engine.startswith("kubemr"):
        parts = _files(out, ["part-*"])
        if job == "wordcount":
            return {k: v for k, v in (json.loads(line) for line in _lines(parts))}
        if job == "join":
            rows = (line.split("\t") for line in _lines(parts))
            return {json.loads(k): tuple(json.loads(v)) for k, v in rows}
        return _sorted_digest(_lines(parts))
    if engine.startswith("plain"):
        path = [os.path.join(out, "result.tsv" if job != "sort" else "result.txt")]
        if job == "wordcount":
            return {k: int(v) for k, v in (line.split("\t") for line in _lines(path))}
        if job == "join":
            rows = (line.split("\t") for line in _lines(path))
            return {c: (int(a), int(n)) for c, a, n in rows}
        return _sorted_digest(_lines(path))
    if engine == "spark":
        parts = _files(out, ["spark/part-*"])
        if job == "wordcount":
            return {k: int(v) for k, v in (line.split("\t") for line in _lines(parts))}
        if job == "join":
            rows = (line.split("\t") for line in _lines(parts))
            return {c: (int(a), int(n)) for c, a, n in rows}
        return _sorted_digest(_lines(parts))
    if engine == "dask":
        if job == "join":
            rows = (line.split("\t") for line in _lines([os.path.join(out, "result.tsv")]))
            return {c: (int(a), int(n)) for c, a, n in rows}
        parts = _files(out, ["dask/*.txt"])
        if job == "wordcount":
            return {k: int(v) for k, v in (line.split("\t") for line in _lines(parts))}
        return _sorted_digest(_lines(parts))
    if engine == "coreutils":
        path = [os.path.join(out, "result.txt")]
        if job == "wordcount":
            result = {}
            for line in _lines(path):
                count, _, word = line.strip().partition(" ")
                if word:
                    result[word] = int(count)
            return result
        return _sorted_digest(_lines(path))
    raise ValueError(engine)


def _sorted_digest(lines) -> tuple[int, str]:
    """Checks the keys are in order; returns (count, digest of the multiset of lines)."""
    previous = ""
    kept = []
    for line in lines:
        key = line[:10]
        if key < previous:
            raise SystemExit(f"output not sorted: {key!r} after {previous!r}")
        previous = key
        kept.append(line)
    kept.sort()
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()
    return len(kept), digest


# --------------------------------------------------------------------------- running


class TreeMemory:
    """Peak of the summed RSS of a process and its descendants."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_once(cmd: list[str] | str, cwd: str) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    shell = isinstance(cmd, str)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, shell=shell, executable="/bin/bash" if shell else None,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    memory = TreeMemory(proc.pid)
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    peak = memory.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, peak


def make_data(job: str, size: int, data_dir: str) -> str:
    os.makedirs(data_dir, exist_ok=True)
    if job == "wordcount":
        path = os.path.join(data_dir, f"zipf-{size}.txt")
        if not os.path.exists(path):
            zipf_text(path, size)
    elif job == "sort":
        path = os.path.join(data_dir, f"records-{size}.txt")
        if not os.path.exists(path):
            sort_records(path, size)
    else:
        path = os.path.join(data_dir, f"join-{size}")
        if not os.path.exists(os.path.join(path, "events.jsonl")):
            join_tables(path, size)
    return path


def data_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


ENGINES = [
    "kubemr-record", "kubemr-batch", "plain-1proc", "plain-Nproc", "spark", "dask", "coreutils"
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("what", choices=["all", *JOBS])
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--engines", nargs="*", default=ENGINES)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    jobs = JOBS if args.what == "all" else (args.what,)
    results: dict[str, Any] = {
        "size": args.size, "workers": args.workers, "date": datetime.now(UTC).isoformat(),
        "machine": {
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(),
        },
        "jobs": {},
    }  # fmt: skip
    for job in jobs:
        data = make_data(job, size, args.data_dir)
        mb = data_bytes(data) / 1e6
        reference = None
        rows: dict[str, Any] = {}
        for engine in args.engines:
            scratch = tempfile.mkdtemp(prefix=f"bench-{engine}-{job}-")
            try:
                times, peaks = [], []
                for _ in range(args.repeat):
                    out = os.path.join(scratch, "out")
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = command(engine, job, data, out, args.workers)
                    if cmd is None:
                        break
                    seconds, peak = run_once(cmd, scratch)
                    times.append(seconds)
                    peaks.append(peak)
                    result = normalise(engine, job, out)
                    if reference is None:
                        reference = (engine, result)
                    elif result != reference[1]:
                        raise SystemExit(
                            f"{job}: {engine}'s output differs from {reference[0]}'s; "
                            "no timing counts"
                        )
                if not times:
                    continue
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            median = statistics.median(times)
            rows[engine] = {
                "seconds": median,
                "mb_per_s": mb / median,
                "peak_mb": max(peaks) / 1e6,
                "runs": len(times),
            }
            print(f"{job:<10} {engine:<14} {median:8.2f} s {mb / median:8.1f} MB/s "
                  f"peak {max(peaks) / 1e6:7.0f} MB", flush=True)  # fmt: skip
        base = rows.get("kubemr-record", {}).get("seconds")
        for row in rows.values():
            row["ratio_to_kubemr"] = row["seconds"] / base if base else None
        results["jobs"][job] = {"input_mb": mb, "engines": rows}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"peers-{args.size}.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"results in {path}")


if __name__ == "__main__":
    main()
