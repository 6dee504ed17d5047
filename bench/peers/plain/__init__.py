"""Plain Python: the floor for Python user code. One process, or N with multiprocessing.

python -m bench.peers.plain JOB INPUT OUTPUT WORKERS    (JOB: wordcount, sort, join)
"""

from __future__ import annotations

import csv
import heapq
import json
import os
import sys
from multiprocessing import get_context

CHUNK = 4 << 20


def ranges(path: str, n: int) -> list[tuple[str, int, int]]:
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as fh:
        for i in range(1, n):
            fh.seek(size * i // n)
            fh.readline()
            bounds.append(fh.tell())
    bounds.append(size)
    return [(path, bounds[i], bounds[i + 1]) for i in range(n)]


def read_chunks(path: str, start: int, end: int):
    """Decoded text of ``[start, end)`` in chunks of whole lines."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        rest = b""
        while left > 0:
            data = fh.read(min(CHUNK, left))
            left -= len(data)
            data = rest + data
            cut = data.rfind(b"\n") + 1 if left > 0 else len(data)
            rest = data[cut:]
            yield data[:cut].decode()


def lines_of(path: str, start: int, end: int):
    for text in read_chunks(path, start, end):
        yield from text.splitlines()


def count_words(args) -> dict:
    acc: dict = {}
    get = acc.get
    for line in lines_of(*args):
        for word in line.split():
            acc[word] = get(word, 0) + 1
    return acc


def sort_range(args) -> list[str]:
    lines = list(lines_of(*args))
    lines.sort(key=lambda line: line[:10])
    return lines


def sum_events(args) -> dict:
    acc: dict = {}
    for line in lines_of(*args):
        event = json.loads(line)
        total = acc.get(event["user_id"])
        if total is None:
            acc[event["user_id"]] = [event["amount"], 1]
        else:
            total[0] += event["amount"]
            total[1] += 1
    return acc


def pool_map(fn, parts, workers):
    if workers == 1:
        return [fn(p) for p in parts]
    with get_context("forkserver").Pool(workers) as pool:
        return pool.map(fn, parts)


def main() -> None:
    job, path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(out, exist_ok=True)
    if job == "wordcount":
        total: dict = {}
        get = total.get
        for part in pool_map(count_words, ranges(path, workers), workers):
            for k, v in part.items():
                total[k] = get(k, 0) + v
        with open(os.path.join(out, "result.tsv"), "w") as fh:
            fh.writelines(f"{k}\t{v}\n" for k, v in total.items())
    elif job == "sort":
        runs = pool_map(sort_range, ranges(path, workers), workers)
        with open(os.path.join(out, "result.txt"), "w") as fh:
            for line in heapq.merge(*runs, key=lambda line: line[:10]):
                fh.write(line + "\n")
    elif job == "join":
        events = os.path.join(path, "events.jsonl")
        per_user: dict = {}
        for part in pool_map(sum_events, ranges(events, workers), workers):
            for user, (amount, n) in part.items():
                t = per_user.setdefault(user, [0, 0])
                t[0] += amount
                t[1] += n
        countries: dict = {}
        with open(os.path.join(path, "users.csv")) as fh:
            for row in csv.DictReader(fh):
                if row["user_id"] in per_user:
                    amount, n = per_user[row["user_id"]]
                    c = countries.setdefault(row["country"], [0, 0])
                    c[0] += amount
                    c[1] += n
        with open(os.path.join(out, "result.tsv"), "w") as fh:
            fh.writelines(f"{k}\t{a}\t{n}\n" for k, (a, n) in countries.items())
    else:
        raise SystemExit(f"unknown job {job}")
