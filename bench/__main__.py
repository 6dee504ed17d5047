"""kubemr against its peers, side by side in one run, on the same data and cores.

    python -m bench all --size 1GB [--repeat 3] [--sizes 100MB,1GB,4GB] [--engines ...]
    python -m bench profile --size 100MB          # where kubemr's time goes, per job

Jobs: word count (Zipf text), total sort (gensort-style records by 10-byte key),
join-and-aggregate (events joined with users, amount and count per country). Each engine
runs its idiomatic program (bench/peers/<engine>/) as a subprocess, peers with their own
virtualenv (bench/setup-peers). Outputs are normalised and checked equal before a time
counts; a mismatch fails the run. Writes bench/results/peers-<size>.json, the tables of
docs/benchmarks.md and the plots in docs/img/.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psutil

from bench.sources import compile_sources
from kubemr.datagen import join_tables, sort_records, zipf_text
from kubemr.sizes import parse_size

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
RESULTS = os.path.join(HERE, "results")
VENVS = os.path.join(
    os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr")), "bench-venvs"
)
JOBS = ("wordcount", "sort", "join")
ENGINES = [
    "kubemr-record", "kubemr-batch", "kubemr-reducejoin", "plain-1proc", "plain-Nproc",
    "spark", "dask", "mrjob", "lithops", "coreutils",
]  # fmt: skip
VENV_ENGINES = ("spark", "dask", "mrjob", "lithops")
KUBEMR_JOBS = {
    ("kubemr-record", "wordcount"): "bench.wordcount_jobs:WordCount",
    ("kubemr-batch", "wordcount"): "bench.jobs_batch:ChunkWordCount",
    ("kubemr-record", "sort"): "bench.jobs_sort_join:TotalSort",
    ("kubemr-batch", "sort"): "bench.jobs_batch:ChunkTotalSort",
    ("kubemr-record", "join"): "bench.jobs_sort_join:ReplicatedJoin",
    ("kubemr-batch", "join"): "bench.jobs_batch:ChunkReplicatedJoin",
    ("kubemr-reducejoin", "join"): "bench.jobs_sort_join:RevenueByCountry",
}


def python_of(engine: str) -> str:
    """The interpreter of a peer's own virtualenv; creates the venv if it is missing."""
    python = os.path.join(VENVS, engine, "bin", "python")
    if not os.path.exists(os.path.join(VENVS, engine, ".installed")):
        print(f"installing {engine} into {VENVS}/{engine}", flush=True)
        subprocess.run([os.path.join(HERE, "setup-peers"), engine], check=True)
    return python


def kubemr_inputs(ref: str, data: str) -> list[str]:
    """The input options of a kubemr job: the replicated joins read the events and get
    the users table as a parameter; every other job reads its data as it is."""
    if "ReplicatedJoin" in ref:
        return ["-i", os.path.join(data, "events.jsonl"),
                "--param", f"users={os.path.join(data, 'users.csv')}"]  # fmt: skip
    return ["-i", data]


def command(engine: str, job: str, data: str, out: str, workers: int) -> list[str] | None:
    """The command an engine runs for a job, or None where the engine does not fit."""
    if engine.startswith("kubemr"):
        ref = KUBEMR_JOBS.get((engine, job))
        if ref is None:
            return None
        return [sys.executable, "-m", "kubemr", "run", ref, *kubemr_inputs(ref, data), "-o", out,
                "--workers", str(workers), "--quiet", "--overwrite"]  # fmt: skip
    if engine in ("plain-1proc", "plain-Nproc"):
        n = 1 if engine == "plain-1proc" else workers
        return [sys.executable, "-m", "bench.peers.plain", job, data, out, str(n)]
    if engine in ("spark", "dask", "lithops"):
        script = os.path.join(PEERS, engine, "job.py")
        return [python_of(engine), script, job, data, out, str(workers)]
    if engine == "mrjob":
        inputs = [data]
        if job == "join":
            inputs = [os.path.join(data, "users.csv"), os.path.join(data, "events.jsonl")]
        return [python_of(engine), os.path.join(PEERS, "mrjob", f"{job}.py"), "-r", "local",
                "--no-conf", "--num-cores", str(workers),
                "--jobconf", f"mapreduce.job.reduces={workers}",
                *inputs, "--output-dir", os.path.join(out, "mrjob")]  # fmt: skip
    if engine == "coreutils":
        if job == "join":
            return None
        return ["bash", os.path.join(PEERS, "coreutils", f"{job}.sh"), data, out, str(workers)]
    raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


# --------------------------------------------------------------------------- outputs

# Per engine and job: the result files (globs, read in name order) and their format.
#   jsonl: ["key", value] per line    json-tsv: json key <TAB> json value
#   tsv: key <TAB> count, or country <TAB> amount <TAB> events
#   uniq: `uniq -c` lines             lines: the sorted records themselves
OUTPUTS: dict[str, dict[str, tuple[str, str]]] = {
    "kubemr": {"wordcount": ("part-*", "jsonl"), "sort": ("part-*", "lines"),
               "join": ("part-*", "json-tsv")},
    "plain": {"wordcount": ("result.tsv", "tsv"), "sort": ("result.txt", "lines"),
              "join": ("result.tsv", "tsv")},
    "spark": {"wordcount": ("spark/part-*", "tsv"), "sort": ("spark/part-*", "lines"),
              "join": ("spark/part-*", "tsv")},
    "dask": {"wordcount": ("dask/*.txt", "tsv"), "sort": ("dask/*.txt", "lines"),
             "join": ("result.tsv", "tsv")},
    "mrjob": {"wordcount": ("mrjob/part-*", "json-tsv"), "sort": ("mrjob/part-*", "lines"),
              "join": ("mrjob/part-*", "json-tsv")},
    "lithops": {"wordcount": ("result.tsv", "tsv"), "sort": ("lithops/part-*", "lines"),
                "join": ("result.tsv", "tsv")},
    "coreutils": {"wordcount": ("result.txt", "uniq"), "sort": ("result.txt", "lines")},
}  # fmt: skip


def _lines(paths: list[str]):
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield line.rstrip("\n")


def normalise(engine: str, job: str, out: str) -> Any:
    """An engine's output in one comparable form: word → count; for the sort, the line
    count and an order-free digest of the lines, after checking the keys are in order;
    country → (amount, events)."""
    family = engine.split("-")[0]
    pattern, fmt = OUTPUTS[family][job]
    paths = sorted(glob.glob(os.path.join(out, pattern)))
    if not paths:
        raise SystemExit(f"{job}: {engine} wrote no {pattern} under {out}")
    lines = _lines(paths)
    if fmt == "lines":
        return _sorted_digest(lines)
    if fmt == "uniq":
        pairs = (line.strip().partition(" ")[::2] for line in lines)
        return {word: int(count) for count, word in pairs if word}
    if fmt == "jsonl":
        rows = (json.loads(line) for line in lines if line)
    elif fmt == "json-tsv":
        rows = ((json.loads(k), json.loads(v)) for k, v in (ln.split("\t") for ln in lines))
    else:
        rows = (
            (parts[0], int(parts[1]) if len(parts) == 2 else [int(p) for p in parts[1:]])
            for parts in (line.split("\t") for line in lines)
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in rows}


def output_digest(result: Any) -> str:
    """A fingerprint of a normalised output, kept with each engine's row: the engines of
    a resumed run (``--resume``) are checked against those of the stopped run by it."""

    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return sorted((repr(k), canonical(v)) for k, v in value.items())
        return value

    return hashlib.sha256(repr(canonical(result)).encode()).hexdigest()[:16]


def reference_of(rows: dict[str, Any]) -> dict[str, Any]:
    """The output reference for the engines still to run, from the rows already measured:
    the first with an output digest."""
    for engine, row in rows.items():
        if "output_digest" in row:
            return {"engine": engine, "digest": row["output_digest"]}
    return {}


def _difference(got: Any, want: Any) -> str:
    if isinstance(got, dict) and isinstance(want, dict):
        keys = sorted((got.keys() ^ want.keys()) | {k for k in got if got[k] != want.get(k)})
        example = keys[0] if keys else None
        return (
            f"{len(keys)} keys differ, e.g. {example!r}: {got.get(example)!r} "
            f"against {want.get(example)!r}"
        )
    return f"(lines, digest) {got!r} against {want!r}"


def _sorted_digest(lines) -> tuple[int, int]:
    """Checks the keys (first 10 characters) never decrease; returns the number of lines
    and an order-free digest of them (engines may order equal keys differently)."""
    previous = ""
    count = digest = 0
    for line in lines:
        key = line[:10]
        if key < previous:
            raise SystemExit(f"output not sorted: {key!r} after {previous!r}")
        previous = key
        count += 1
        digest = (digest + hash(line)) & 0xFFFFFFFFFFFFFFFF
    return count, digest


# --------------------------------------------------------------------------- running


class TreeMemory:
    """Peak of the summed RSS of a process and all its descendants, sampled every 50 ms
    (bench.wordcount.PeakRss keeps each process's own peak instead)."""

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
                total = 0
                for p in [root, *root.children(recursive=True)]:
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


class EngineFailed(Exception):
    pass


def run_once(cmd: list[str], cwd: str, timeout: float) -> tuple[float, int]:
    """Wall seconds and peak tree RSS of one run; raises EngineFailed on error/timeout."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["TMPDIR"] = cwd  # spill and scratch files of every engine go to the run's dir
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    memory = TreeMemory(proc.pid)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        memory.stop()
        raise EngineFailed(f"timed out after {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    peak = memory.stop()
    if proc.returncode != 0:
        raise EngineFailed(f"exit {proc.returncode}: {err.strip()[-2000:]}")
    return seconds, peak


def make_data(job: str, size: int, data_dir: str) -> str:
    os.makedirs(data_dir, exist_ok=True)
    if job == "wordcount":
        path = os.path.join(data_dir, f"zipf-{size}.txt")
        make = zipf_text
    elif job == "sort":
        path = os.path.join(data_dir, f"records-{size}.txt")
        make = sort_records
    else:
        path = os.path.join(data_dir, f"join-{size}")
        make = join_tables
    done = os.path.join(path, "events.jsonl") if job == "join" else path
    if not os.path.exists(done):
        print(f"generating {path}", flush=True)
        partial = path + ".partial"
        make(partial, size)
        os.replace(partial, path)
    return path


def data_bytes(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def measure(
    engine: str, job: str, data: str, args: argparse.Namespace, repeat: int, reference: dict
) -> dict[str, Any] | None:
    """Runs one engine on one job ``repeat`` times (fewer if it is slow), checking its
    output against ``reference`` (the first engine's). None if the engine does not fit."""
    if command(engine, job, data, "-", args.workers) is None:
        return None
    times: list[float] = []
    peaks: list[int] = []
    scratch = tempfile.mkdtemp(prefix=f"bench-{engine}-{job}-", dir=args.scratch)
    try:
        for _ in range(repeat):
            out = os.path.join(scratch, "out")
            shutil.rmtree(out, ignore_errors=True)
            cmd = command(engine, job, data, out, args.workers)
            assert cmd is not None
            try:
                seconds, peak = run_once(cmd, scratch, args.timeout)
            except EngineFailed as exc:
                return {"error": str(exc), "runs": len(times)}
            result = normalise(engine, job, out)
            digest = output_digest(result)
            if "digest" not in reference:
                reference.update(engine=engine, result=result, digest=digest)
            elif digest != reference["digest"]:
                how = (
                    _difference(result, reference["result"])
                    if "result" in reference
                    else "another output digest"
                )
                raise SystemExit(
                    f"{job}: {engine}'s output differs from {reference['engine']}'s "
                    f"({how}); no timing counts"
                )
            times.append(seconds)
            peaks.append(peak)
            if sum(times) + times[-1] > args.engine_budget:
                break  # slow engine: fewer runs rather than a night of waiting
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": statistics.median(times), "runs": len(times), "all_seconds": times,
            "peak_mb": max(peaks) / 1e6, "output_digest": reference["digest"]}  # fmt: skip


def _version_of(engine: str, code: str) -> str:
    python = os.path.join(VENVS, engine, "bin", "python")
    if not os.path.exists(python):
        return "not installed"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def machine_facts(engines: list[str]) -> dict[str, Any]:
    import kubemr

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    sort = subprocess.run(["sort", "--version"], capture_output=True, text=True).stdout
    versions = {"kubemr": getattr(kubemr, "__version__", "dev")}
    probes = {
        "spark": "import pyspark; print('pyspark', pyspark.__version__)",
        "dask": "import dask, pandas, pyarrow; print('dask', dask.__version__, '/ pandas', "
        "pandas.__version__, '/ pyarrow', pyarrow.__version__)",
        "mrjob": "import mrjob; print('mrjob', mrjob.__version__)",
        "lithops": "import lithops; print('lithops', lithops.__version__)",
    }
    for engine, code in probes.items():
        if engine in engines:
            versions[engine] = _version_of(engine, code)
    if "coreutils" in engines:
        versions["coreutils"] = sort.splitlines()[0] if sort else "unknown"
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "java": java.splitlines()[0] if java else "not found",
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def run_all(args: argparse.Namespace) -> int:
    compile_sources()
    size = parse_size(args.size)
    jobs = JOBS if args.what == "all" else (args.what,)
    for engine in args.engines:
        if engine in VENV_ENGINES:
            python_of(engine)  # install missing peers before anything is timed
    results: dict[str, Any] = {
        "size": args.size, "size_bytes": size, "workers": args.workers,
        "repeat": args.repeat, "sizes": args.sizes,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(args.engines), "jobs": {}, "scaling": {}, "by_size": {},
    }  # fmt: skip
    if args.resume:
        earlier = load_resumed(args.resume, results)
        results["resumed"] = [*earlier.get("resumed", []), results["date"]]
        results["date"] = earlier["date"]
        results["by_size"] = earlier.get("by_size", {})
    os.makedirs(RESULTS, exist_ok=True)
    # A run of some jobs or engines only goes to its own file and leaves the docs alone.
    partial = set(args.engines) != set(ENGINES) or len(jobs) < len(JOBS)
    name = f"peers-{args.size}{'-partial' if partial else ''}.json"
    path = os.path.join(RESULTS, name)
    # What is done so far, rewritten after every engine: a run of hours that is stopped
    # keeps its figures (the file is removed when the run completes).
    progress = path.removesuffix(".json") + ".inprogress.json"

    def save_progress() -> None:
        _write_json(progress, results)

    args.save_progress = save_progress
    failures = 0
    for job in jobs:
        data = make_data(job, size, args.data_dir)
        mb = data_bytes(data) / 1e6
        # One entry for the job, in both views; its rows fill in as engines finish
        # (after those a resumed run kept).
        kept = results["by_size"].setdefault(str(size), {}).get(job)
        rows: dict[str, Any] = kept["engines"] if kept else {}
        results["jobs"][job] = {"input_mb": mb, "engines": rows}
        results["by_size"][str(size)][job] = results["jobs"][job]
        reference = reference_of(rows)
        for engine in args.engines:
            if engine in rows:
                print(f"{job:<10} {engine:<17} kept from {args.resume}", flush=True)
                continue
            row = measure(engine, job, data, args, args.repeat, reference)
            if row is None:
                continue
            rows[engine] = row
            if "error" in row:
                failures += 1
                print(f"{job:<10} {engine:<17} FAILED {row['error'][:500]}", flush=True)
                continue
            row["mb_per_s"] = mb / row["seconds"]
            print(f"{job:<10} {engine:<17} {row['seconds']:8.2f} s {row['mb_per_s']:8.1f} MB/s "
                  f"peak {row['peak_mb']:7.0f} MB  ({row['runs']} runs)", flush=True)  # fmt: skip
            save_progress()
        _add_ratios(rows)
        if args.sizes:
            results["scaling"][job] = scaling(job, size, rows, args, results["by_size"])
        save_progress()
    _write_json(path, results)
    os.remove(progress)
    print(f"results in {path}")
    if args.docs and not partial:
        from bench import report

        report.write_docs(path)
        print("docs/benchmarks.md and docs/img/ updated")
    if failures:
        print(f"{failures} engine run(s) failed; see above", file=sys.stderr)
    return 2 if failures else 0


def load_resumed(path: str, results: dict[str, Any]) -> dict[str, Any]:
    """The figures of a stopped run (its progress file) for this run to go on from. Both
    must measure the same thing: the same size, sizes, workers and repeats."""
    with open(path) as fh:
        earlier = json.load(fh)
    for key in ("size", "sizes", "workers", "repeat"):
        if key in earlier and earlier[key] != results[key]:
            raise SystemExit(
                f"--resume {path}: that run had {key} {earlier[key]!r}, this one "
                f"{results[key]!r}; resume it with the same options"
            )
    return earlier


def _add_ratios(rows: dict[str, Any]) -> None:
    base = rows.get("kubemr-record", {}).get("seconds")
    for row in rows.values():
        if "seconds" in row:
            row["ratio_to_kubemr"] = row["seconds"] / base if base else None


def _write_json(path: str, data: Any) -> None:
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(path + ".tmp", path)


def scaling(
    job: str, size: int, rows: dict[str, Any], args: argparse.Namespace, by_size: dict
) -> dict:
    """Every other size of --sizes, for the engines whose time and peak memory, scaled
    linearly from the main run, stay within --scaling-budget seconds and 80 % of this
    machine's memory: up to --repeat runs each (the same --engine-budget), with outputs
    checked equal as at the main size. Each size's rows go to ``by_size``; returns the
    time-against-size curve of each engine."""
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    curve: dict[str, dict[str, float]] = {}
    for s in sorted(sizes):
        data = None  # generated when the first engine runs at this size
        kept = by_size.get(str(s), {}).get(job)
        sized: dict[str, Any] = kept["engines"] if kept else {}
        reference = reference_of(sized)
        for engine, row in rows.items():
            if "seconds" not in row:
                continue
            if s == size:
                curve.setdefault(engine, {})[str(s)] = row["seconds"]
                continue
            if engine in sized:  # measured before the run was resumed
                if "seconds" in sized[engine]:
                    curve.setdefault(engine, {})[str(s)] = sized[engine]["seconds"]
                continue
            if row["seconds"] * s / size > args.scaling_budget:
                print(f"{job:<10} {engine:<17} {s / 1e6:8.0f} MB skipped: too slow", flush=True)
                sized[engine] = {"skipped": f"estimated over {args.scaling_budget:.0f} s"}
                continue
            if row["peak_mb"] * 1e6 * s / size > 0.8 * psutil.virtual_memory().total:
                print(f"{job:<10} {engine:<17} {s / 1e6:8.0f} MB skipped: would not fit in "
                      "memory", flush=True)  # fmt: skip
                estimate = row["peak_mb"] * s / size / 1000
                sized[engine] = {"skipped": f"would not fit in memory (about {estimate:.0f} GB)"}
                continue
            if data is None:
                data = make_data(job, s, args.data_dir)
                mb = data_bytes(data) / 1e6
                by_size.setdefault(str(s), {})[job] = {"input_mb": mb, "engines": sized}
            measured = measure(engine, job, data, args, args.repeat, reference)
            if measured is None:
                continue
            sized[engine] = measured
            if "seconds" in measured:
                measured["mb_per_s"] = mb / measured["seconds"]
                curve.setdefault(engine, {})[str(s)] = measured["seconds"]
                print(f"{job:<10} {engine:<17} {s / 1e6:8.0f} MB {measured['seconds']:8.2f} s "
                      f"peak {measured['peak_mb']:7.0f} MB  ({measured['runs']} runs)",
                      flush=True)  # fmt: skip
            else:
                print(f"{job:<10} {engine:<17} {s / 1e6:8.0f} MB FAILED "
                      f"{measured['error'][:500]}", flush=True)  # fmt: skip
            args.save_progress()
        _add_ratios(sized)
    return curve


# --------------------------------------------------------------------------- profile


def profile(args: argparse.Namespace) -> int:
    """cProfile of map task 0 and reduce task 0 of each kubemr job's first step, re-run
    from a kept work dir the way `kubemr worker` runs them; the summary goes to
    bench/results/profile-<size>.json."""
    import pstats

    compile_sources()
    size = parse_size(args.size)
    summary: dict[str, Any] = {"size": args.size, "date": datetime.now(UTC).isoformat()}
    for (engine, job), ref in KUBEMR_JOBS.items():
        data = make_data(job, size, args.data_dir)
        scratch = tempfile.mkdtemp(prefix=f"bench-profile-{job}-", dir=args.scratch)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        try:
            out, work = os.path.join(scratch, "out"), os.path.join(scratch, "work")
            subprocess.run(
                [sys.executable, "-m", "kubemr", "run", ref, *kubemr_inputs(ref, data),
                 "-o", out, "--workers", str(args.workers), "--quiet", "--keep-work",
                 "--work-dir", work],
                check=True, env=env, cwd=scratch,
            )  # fmt: skip
            (plan,) = glob.glob(os.path.join(work, "*", "plan.json"))
            steps = sorted(glob.glob(os.path.join(os.path.dirname(plan), "steps", "*")))
            tasks = {}
            for wave in ("map", "reduce"):
                # The first step: its map reads and parses the input, its reduce does the
                # summing, sorting or joining; later steps only handle the small results.
                step = os.path.basename(steps[0])
                prof = os.path.join(scratch, f"{wave}.prof")
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "bench", "profile-task", plan, step, wave, prof],
                    env=env, cwd=scratch, capture_output=True, text=True,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(f"profiling {ref} {wave} failed:\n{done.stderr[-3000:]}")
                wall = time.perf_counter() - t0
                tasks[wave] = {"step": int(step), "wall_seconds": wall,
                               **_profile_summary(pstats.Stats(prof))}  # fmt: skip
            summary[f"{engine}/{job}"] = tasks
            for wave, t in tasks.items():
                print(f"{engine}/{job} {wave} task: {t['total_seconds']:.2f} s")
                for area, seconds in t["areas"][:6]:
                    print(f"    {seconds / t['total_seconds']:6.1%}  {area}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"profile-{args.size}.json")
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"profile summary in {path}")
    if args.docs:
        from bench import report

        report.write_profile(path)
    return 0


def profile_task(plan: str, step: str, wave: str, prof: str) -> None:
    """One task attempt, as `kubemr worker` runs it, under cProfile (imports excluded)."""
    import cProfile

    from kubemr.task import run_task

    profiler = cProfile.Profile()
    profiler.runcall(run_task, plan, int(step), wave, 0, "profile")
    profiler.dump_stats(prof)


def _area(filename: str, function: str) -> str:
    """Where a profiled function belongs: the job's own code, a kubemr module, a library,
    the standard library or the interpreter's built-ins."""
    if "importlib" in filename or function in (
        "<built-in method builtins.compile>",
        "<built-in method marshal.loads>",
    ):
        return "imports"
    if filename == "~":
        name = function.strip("<>")
        method = re.fullmatch(r"method '(\w+)' of '([\w.]+)' objects", name)
        if method:
            return f"built-in {method[2]}.{method[1]}"
        return "built-in " + name.removeprefix("built-in method ").removeprefix("builtins.")
    if "/kubemr/" in filename and "/src/" in filename:
        return "kubemr." + os.path.splitext(filename.split("/kubemr/")[-1])[0].replace("/", ".")
    if os.sep + "bench" + os.sep in filename or "/examples/" in filename:
        return "job code: " + os.path.basename(filename)
    if "site-packages" in filename:
        return "library: " + filename.split("site-packages/")[1].split("/")[0]
    stdlib = os.path.dirname(os.__file__)
    if filename.startswith(stdlib + os.sep):
        module = os.path.splitext(os.path.relpath(filename, stdlib))[0].replace(os.sep, ".")
        return "stdlib: " + module.removesuffix(".__init__")
    return os.path.basename(filename)


def _profile_summary(stats: Any) -> dict[str, Any]:
    areas: dict[str, float] = {}
    functions = []
    total = 0.0
    for (filename, line, name), (_, ncalls, tottime, _, _) in stats.stats.items():
        total += tottime
        area = _area(filename, name)
        areas[area] = areas.get(area, 0.0) + tottime
        functions.append((tottime, ncalls, f"{os.path.basename(filename)}:{line}({name})"))
    functions.sort(reverse=True)
    return {
        "total_seconds": total,
        "areas": sorted(areas.items(), key=lambda kv: -kv[1])[:12],
        "top": [{"function": f, "calls": n, "seconds": t} for t, n, f in functions[:12]],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("what", choices=["all", *JOBS, "profile"])
    parser.add_argument("--size", default="1GB", help="input per job (default 1GB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine; the median")
    parser.add_argument("--sizes", help="also time these sizes, e.g. 100MB,1GB,4GB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument(
        "--engines",
        nargs="+",
        default=ENGINES,
        metavar="ENGINE",
        help=f"default: {' '.join(ENGINES)}",
    )
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/kubemr/bench-data"))
    parser.add_argument("--scratch", default=None, help="where outputs go (default: $TMPDIR)")
    parser.add_argument("--timeout", type=float, default=3600, help="per run, seconds")
    parser.add_argument(
        "--engine-budget",
        type=float,
        default=900,
        help="stop repeating an engine once one more run would pass this many seconds",
    )
    parser.add_argument(
        "--scaling-budget",
        type=float,
        default=600,
        help="skip a size where an engine's estimated time exceeds this",
    )
    parser.add_argument(
        "--resume",
        metavar="FILE",
        help="go on from a stopped run's progress file (bench/results/"
        "peers-<size>.inprogress.json): what it measured is kept, the rest is run",
    )
    parser.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        help="do not rewrite docs/benchmarks.md and docs/img/",
    )
    if argv is None and sys.argv[1:2] == ["profile-task"]:
        profile_task(*sys.argv[2:6])
        return
    args = parser.parse_args(argv)
    for engine in args.engines:
        if engine not in ENGINES:
            parser.error(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if args.what == "profile":
        sys.exit(profile(args))
    sys.exit(run_all(args))


if __name__ == "__main__":
    main()
