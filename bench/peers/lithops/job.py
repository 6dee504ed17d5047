"""Lithops on its localhost backend: per-chunk map functions over byte ranges of the input.

python bench/peers/lithops/job.py JOB INPUT OUTPUT WORKERS

Word count and join use ``map_reduce`` (each chunk returns a dict, one reduce merges
them); total sort samples split keys, then one map writes each chunk's range-partitioned
runs and a second map sorts each partition into ``part-NNNNN``.
"""

from __future__ import annotations

import glob
import json
import os
import random
import sys

import lithops
import yaml

CHUNK = 64 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


def ranges(path: str, workers: int) -> list[tuple[str, int, int]]:
    size = os.path.getsize(path)
    n = max(workers, -(-size // CHUNK))
    bounds = [0]
    with open(path, "rb") as fh:
        for i in range(1, n):
            fh.seek(size * i // n)
            fh.readline()
            bounds.append(fh.tell())
    bounds.append(size)
    return [(path, bounds[i], bounds[i + 1]) for i in range(n) if bounds[i] < bounds[i + 1]]


def lines_of(path: str, start: int, end: int) -> list[str]:
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start).decode().splitlines()


def count_words(path: str, start: int, end: int) -> dict:
    counts: dict = {}
    get = counts.get
    for line in lines_of(path, start, end):
        for word in line.split():
            counts[word] = get(word, 0) + 1
    return counts


def merge_counts(results: list[dict]) -> dict:
    total: dict = {}
    get = total.get
    for part in results:
        for k, v in part.items():
            total[k] = get(k, 0) + v
    return total


def sum_events(path: str, start: int, end: int) -> dict:
    per_user: dict = {}
    for line in lines_of(path, start, end):
        event = json.loads(line)
        total = per_user.get(event["user_id"])
        if total is None:
            per_user[event["user_id"]] = [event["amount"], 1]
        else:
            total[0] += event["amount"]
            total[1] += 1
    return per_user


def join_users(results: list[dict], users: str) -> dict:
    per_user: dict = {}
    for part in results:
        for user, (amount, n) in part.items():
            t = per_user.setdefault(user, [0, 0])
            t[0] += amount
            t[1] += n
    countries: dict = {}
    with open(users) as fh:
        next(fh)
        for line in fh:
            user, country = line.rstrip("\n").split(",", 1)
            if user in per_user:
                amount, n = per_user[user]
                c = countries.setdefault(country, [0, 0])
                c[0] += amount
                c[1] += n
    return countries


def partition_runs(path: str, start: int, end: int, splitters: list[str], runs: str) -> int:
    import bisect

    buckets: list[list[str]] = [[] for _ in range(len(splitters) + 1)]
    for line in lines_of(path, start, end):
        buckets[bisect.bisect_right(splitters, line[:10])].append(line)
    for p, lines in enumerate(buckets):
        with open(os.path.join(runs, f"run-{start:016d}-{p:05d}"), "w") as fh:
            fh.write("".join(line + "\n" for line in lines))
    return len(buckets)


def sort_partition(runs: str, p: int, target: str) -> int:
    lines: list[str] = []
    for run in sorted(glob.glob(os.path.join(runs, f"run-*-{p:05d}"))):
        with open(run) as fh:
            lines.extend(fh.read().splitlines())
    lines.sort(key=lambda line: line[:10])
    with open(os.path.join(target, f"part-{p:05d}"), "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    return len(lines)


def sample_splitters(path: str, partitions: int, samples: int = 2000) -> list[str]:
    size = os.path.getsize(path)
    rng = random.Random(0)
    keys = []
    with open(path, "rb") as fh:
        for _ in range(samples):
            fh.seek(rng.randrange(size))
            fh.readline()
            line = fh.readline()
            if line:
                keys.append(line[:10].decode())
    keys.sort()
    return [keys[len(keys) * i // partitions] for i in range(1, partitions)]


def executor(workers: int) -> lithops.FunctionExecutor:
    with open(os.path.join(HERE, "lithops.yaml")) as fh:
        config = yaml.safe_load(fh)
    config["localhost"]["runtime"] = sys.executable
    config["localhost"]["worker_processes"] = workers
    return lithops.FunctionExecutor(config=config, log_level="WARNING")


def main() -> None:
    job, path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    fexec = executor(workers)
    if job == "wordcount":
        futures = fexec.map_reduce(count_words, ranges(path, workers), merge_counts)
        total = fexec.get_result(futures)
        with open(os.path.join(out, "result.tsv"), "w") as fh:
            fh.writelines(f"{k}\t{v}\n" for k, v in total.items())
    elif job == "sort":
        runs, target = os.path.join(out, "runs"), os.path.join(out, "lithops")
        os.makedirs(runs)
        os.makedirs(target)
        splitters = sample_splitters(path, workers)
        chunks = [(*r, splitters, runs) for r in ranges(path, workers)]
        fexec.get_result(fexec.map(partition_runs, chunks))
        fexec.get_result(fexec.map(sort_partition, [(runs, p, target) for p in range(workers)]))
    elif job == "join":
        events = os.path.join(path, "events.jsonl")
        futures = fexec.map_reduce(
            sum_events,
            ranges(events, workers),
            join_users,
            extra_args_reduce=(os.path.join(path, "users.csv"),),
        )
        countries = fexec.get_result(futures)
        with open(os.path.join(out, "result.tsv"), "w") as fh:
            fh.writelines(f"{k}\t{a}\t{n}\n" for k, (a, n) in countries.items())
    else:
        raise SystemExit(f"unknown job {job}")


if __name__ == "__main__":
    main()
