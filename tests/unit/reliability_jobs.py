"""Jobs for the reliability tests (importable, so worker processes load them by reference)."""

from __future__ import annotations

import os
import time

import kubemr


class SlowWordCount(kubemr.MapReduce):
    """Sleeps per record (``KUBEMR_TEST_SLEEP`` seconds), so a run can be caught mid-way."""

    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        time.sleep(float(os.environ.get("KUBEMR_TEST_SLEEP", "0.05")))
        for word in line.split():
            yield word, 1


class EndlessMapper(kubemr.MapReduce):
    """Yields without end for a record "endless", a normal count otherwise."""

    reducer = kubemr.SUM
    pulled = 0  # how many pairs were taken from the endless record, in this process

    def mapper(self, line):
        if line == "endless":
            i = 0
            while True:
                type(self).pulled += 1
                yield i, 1
                i += 1
        yield line, 1


class BytesKeys(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        yield line.encode(), 1


class SortFailsInSampling(kubemr.MapReduce):
    TOTAL_ORDER = True

    def mapper(self, line):
        if line == "bad":
            raise ValueError("cannot sample this")
        yield line, None


class AlwaysFails(kubemr.MapReduce):
    def mapper(self, line):
        raise RuntimeError("always")
        yield line, 1

    reducer = kubemr.SUM


class JsonCount(kubemr.MapReduce):
    INPUT_FORMAT = "jsonl"
    reducer = kubemr.SUM

    def mapper(self, record):
        yield record["k"], 1
