"""The word count functions every contender runs: the same mapper, combiner, reducer."""

from __future__ import annotations

from collections import Counter

import kubemr


def mapper(line: str):
    for word in line.split():
        yield word, 1


def batch_mapper(lines: list[str]) -> Counter:
    return Counter(" ".join(lines).split())


class WordCount(kubemr.MapReduce):
    combiner = kubemr.SUM
    reducer = kubemr.SUM
    mapper = staticmethod(mapper)  # the very function the plain scripts call


class BatchWordCount(kubemr.MapReduce):
    reducer = kubemr.SUM
    mapper_batch = staticmethod(batch_mapper)
