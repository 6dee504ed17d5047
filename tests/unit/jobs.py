"""Small jobs for the runner's tests (importable, so workers load them by reference)."""

from __future__ import annotations

import os
import signal
from collections import Counter

import kubemr


class WordCount(kubemr.MapReduce):
    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in line.split():
            yield word, 1


class WordCountPython(kubemr.MapReduce):
    """The same with Python combiner and reducer functions."""

    def mapper(self, line):
        for word in line.split():
            self.increment_counter("words", "seen")
            yield word, 1

    def combiner(self, key, values):
        yield key, sum(values)

    def reducer(self, key, values):
        yield key, sum(values)


class WordCountBatch(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper_batch(self, lines):
        return Counter(" ".join(lines).split())


class FailsOnLine(kubemr.MapReduce):
    def mapper(self, line):
        if line == "boom":
            raise ValueError("cannot handle boom")
        yield line, 1

    reducer = kubemr.SUM


class FailsFirstAttempt(kubemr.MapReduce):
    """Its first reduce attempt fails (or dies), found by a marker file; then it succeeds."""

    def mapper(self, line):
        yield line, 1

    def reducer(self, key, values):
        marker = os.environ["KUBEMR_TEST_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            if os.environ.get("KUBEMR_TEST_DIE"):
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("transient failure")
        yield key, sum(values)


class ReducerFails(kubemr.MapReduce):
    def mapper(self, line):
        yield line, 1

    def reducer(self, key, values):
        if key == "bad":
            raise KeyError("no bad keys")
        yield key, sum(values)


class MixedKeys(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        yield line, 1
        yield len(line), 1
        yield (line[:1], len(line)), 1
        yield None, 1


class SecondarySort(kubemr.MapReduce):
    SORT_VALUES = True

    def mapper(self, line):
        yield line[:1], line

    def reducer(self, key, values):
        yield key, list(values)


class GrepMapOnly(kubemr.MapReduce):
    OUTPUT_FORMAT = "text"

    def mapper(self, line):
        if "needle" in line:
            yield None, line


class TwoSteps(kubemr.MapReduce):
    def steps(self):
        return [
            kubemr.MRStep(mapper=self.words, combiner=kubemr.SUM, reducer=kubemr.SUM),
            kubemr.MRStep(mapper=self.by_count, reducer=self.collect),
        ]

    def words(self, line):
        for w in line.split():
            yield w, 1

    def by_count(self, pair):
        word, count = pair
        yield count, word

    def collect(self, count, words):
        yield count, sorted(words)


class UnpicklableKey(kubemr.MapReduce):
    def mapper(self, line):
        yield (lambda: line), 1

    reducer = kubemr.SUM


class NotPairs(kubemr.MapReduce):
    def mapper(self, line):
        yield line

    reducer = kubemr.SUM


class JsonRecords(kubemr.MapReduce):
    INPUT_FORMAT = "jsonl"
    reducer = kubemr.SUM

    def mapper(self, obj):
        yield obj["k"], obj["v"]


class SortLines(kubemr.MapReduce):
    """Sorts whole lines: a batch mapper, the identity reducer, value-less text output."""

    TOTAL_ORDER = True
    OUTPUT_FORMAT = "text"

    def mapper_batch(self, lines):
        return [(line, None) for line in lines]


class LongWords(kubemr.MapReduce):
    """Counts the words at least ``--param min_len=N`` long."""

    reducer = kubemr.SUM

    def setup(self):
        self.min_len = int(self.params["min_len"])

    def mapper(self, line):
        for word in line.split():
            if len(word) >= self.min_len:
                yield word, 1
