"""Plain single-process Python versions of the examples, to check kubemr against."""

from __future__ import annotations

import glob
import heapq
import json
import os
import re
from collections import Counter, defaultdict


def lines_of(paths: list[str]) -> list[str]:
    out: list[str] = []
    for pattern in paths:
        files = (
            sorted(glob.glob(os.path.join(pattern, "**", "*"), recursive=True))
            if os.path.isdir(pattern)
            else [pattern]
        )
        for path in files:
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    out.extend(fh.read().splitlines())
    return out


def wordcount(paths: list[str]) -> dict:
    word = re.compile(r"[\w']+")
    return dict(Counter(w for line in lines_of(paths) for w in word.findall(line.lower())))


def wordcount_batch(paths: list[str]) -> dict:
    return dict(Counter(w for line in lines_of(paths) for w in line.lower().split()))


def grep(paths: list[str], pattern: str = "whale") -> list[str]:
    regex = re.compile(pattern)
    return [line for line in lines_of(paths) if regex.search(line)]


def inverted_index(paths: list[str]) -> dict:
    word = re.compile(r"[a-z']+")
    index = defaultdict(set)
    for line in lines_of(paths):
        doc = json.loads(line)
        for w in word.findall(doc["text"].lower()):
            index[w].add(doc["doc"])
    return {w: sorted(docs) for w, docs in index.items()}


def join(paths: list[str]) -> dict:
    rows = [json.loads(line) for line in lines_of(paths) if line.strip()]
    country = {r["user_id"]: r["country"] for r in rows if r["table"] == "users"}
    totals: dict = defaultdict(lambda: [0, 0])
    for r in rows:
        if r["table"] == "events" and r["user_id"] in country:
            t = totals[country[r["user_id"]]]
            t[0] += r["amount"]
            t[1] += 1
    return {k: v for k, v in totals.items()}


def unmatched_events(paths: list[str]) -> int:
    """Events whose user_id is not in the users table (an inner join drops them)."""
    rows = [json.loads(line) for line in lines_of(paths) if line.strip()]
    users = {r["user_id"] for r in rows if r["table"] == "users"}
    return sum(1 for r in rows if r["table"] == "events" and r["user_id"] not in users)


def total_sort(paths: list[str]) -> list[str]:
    return sorted(lines_of(paths), key=lambda line: line[:10])


def topk(paths: list[str], k: int = 3) -> dict:
    counts = Counter(w for line in lines_of(paths) for w in line.lower().split() if w.isalpha())
    by_letter = defaultdict(list)
    for w, n in counts.items():
        by_letter[w[0]].append((n, w))
    return {letter: heapq.nlargest(k, items) for letter, items in by_letter.items()}


def two_step(paths: list[str]) -> dict:
    counts = Counter(w for line in lines_of(paths) for w in line.lower().split())
    return dict(Counter(counts.values()))
