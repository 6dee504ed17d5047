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


class PyCombinerWordCount(kubemr.MapReduce):
    """The way most users (and every mrjob port) write it: Python combiner and reducer."""

    mapper = staticmethod(mapper)

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)
