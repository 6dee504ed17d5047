"""Small jobs for the runner's tests (importable, so workers load them by reference)."""

from __future__ import annotations

import enum
import os
import signal
import sys
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


# -- task safety: user code's mistakes fail the task, naming the record ----------------------


def _raise_base(params: dict, where: str) -> None:
    """Raise SystemExit (``--param exc=exit``) or KeyboardInterrupt (``exc=interrupt``)
    when ``--param where=`` names the calling function."""
    if params.get("where") == where:
        if params.get("exc") == "interrupt":
            raise KeyboardInterrupt
        sys.exit(0)


class ExitsSomewhere(kubemr.MapReduce):
    """Leaves through sys.exit(0) or KeyboardInterrupt from the function named by
    ``--param where=`` (the mapper on the record "stop")."""

    def setup(self):
        _raise_base(self.params, "setup")

    def teardown(self):
        _raise_base(self.params, "teardown")

    def mapper(self, line):
        if line == "stop":
            _raise_base(self.params, "mapper")
        yield line, 1

    def combiner(self, key, values):
        _raise_base(self.params, "combiner")
        yield key, sum(values)

    def reducer(self, key, values):
        _raise_base(self.params, "reducer")
        yield key, sum(values)

    def partitioner(self, key, num_partitions):
        _raise_base(self.params, "partitioner")
        return len(key) % num_partitions


class ExitsInMapperBatch(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper_batch(self, lines):
        if "stop" in lines:
            _raise_base(self.params, "mapper_batch")
        return [(line, 1) for line in lines]


class NaNKeys(kubemr.MapReduce):
    """Keys are the numbers of the input lines ("nan" among them): float keys, or
    ``("k", x)`` tuples with ``--param shape=tuple``; ``--param mode=`` picks the reducer:
    ``sum`` (kubemr.SUM), ``python`` (a function, no combiner) or ``combiner`` (a Python
    combiner and reducer)."""

    def steps(self):
        mode = self.params.get("mode", "sum")
        return [
            kubemr.MRStep(
                mapper=self.numbers,
                combiner=self.add if mode == "combiner" else None,
                reducer=kubemr.SUM if mode == "sum" else self.add,
            )
        ]

    def numbers(self, line):
        x = float(line)
        yield (("k", x) if self.params.get("shape") == "tuple" else x), 1

    def add(self, key, values):
        yield key, sum(values)


class NaNKeysMapOnly(kubemr.MapReduce):
    def mapper(self, line):
        yield float(line), line


class NaNFromCombiner(kubemr.MapReduce):
    """The mapper's keys are fine; its combiner turns the key "x" into NaN."""

    def mapper(self, line):
        yield line, 1

    def combiner(self, key, values):
        yield (float("nan") if key == "x" else key), sum(values)

    def reducer(self, key, values):
        yield key, sum(values)


class NaNValuesSorted(kubemr.MapReduce):
    SORT_VALUES = True

    def mapper(self, line):
        yield "k", float(line)

    def reducer(self, key, values):
        yield key, list(values)


class BareKeys(kubemr.MapReduce):
    """Yields ``code, 1`` for each line, but the bare ``code`` (a 2-character str) for the
    line "ab". ``--param mode=`` picks the step: sum, count, min, max (built-in reducers),
    python (a reducer function, no combiner), combiner (a Python combiner), map_only."""

    def steps(self):
        mode = self.params.get("mode", "sum")
        builtin = {"sum": kubemr.SUM, "count": kubemr.COUNT, "min": kubemr.MIN, "max": kubemr.MAX}
        if mode in builtin:
            return [kubemr.MRStep(mapper=self.codes, reducer=builtin[mode])]
        if mode == "combiner":
            return [kubemr.MRStep(mapper=self.codes, combiner=self.add, reducer=self.add)]
        if mode == "map_only":
            return [kubemr.MRStep(mapper=self.codes)]
        return [kubemr.MRStep(mapper=self.codes, reducer=self.add)]

    def codes(self, line):
        code = line
        if code == "ab":
            yield code
        else:
            yield code, 1

    def add(self, key, values):
        yield key, sum(values)


class BareBytesKeys(kubemr.MapReduce):
    """Yields bytes: b"ab" unpacks into the "pair" (97, 98), which SUM would add up."""

    reducer = kubemr.SUM

    def mapper(self, line):
        if line == "ab":
            yield line.encode()
        else:
            yield line, 1


class BareKeysBatch(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper_batch(self, lines):
        return [line if line == "ab" else (line, 1) for line in lines]


class ReducerYieldsBareKey(kubemr.MapReduce):
    def mapper(self, line):
        yield line, 1

    def reducer(self, key, values):
        if key == "ab":
            yield key
        else:
            yield key, sum(values)


class ListReturningMapper(kubemr.MapReduce):
    """A mapper that returns a list: correct, only not provably pairs-only."""

    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        return [(word, 1) for word in line.split()]


class SpillThenFail(kubemr.MapReduce):
    """Counts words under a small memory budget (so map tasks spill), then fails: the
    mapper on the line "fail", or the reducer on the key "fail" (``--param where=``),
    with an error, sys.exit or KeyboardInterrupt (``--param exc=``). The mapper's
    error lists the spill directories it sees, to show they were in TMPDIR."""

    def mapper(self, line):
        if line == "fail" and self.params.get("where") == "mapper":
            self._fail()
        for word in line.split():
            yield word, 1

    def reducer(self, key, values):
        if key == "fail" and self.params.get("where") == "reducer":
            self._fail()
        yield key, sum(values)

    def _fail(self):
        import tempfile

        found = sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith("kubemr-"))
        exc = self.params.get("exc")
        if exc == "exit":
            sys.exit(f"failing with {found}")
        if exc == "interrupt":
            raise KeyboardInterrupt(f"failing with {found}")
        raise RuntimeError(f"failing with {found}")


class ListKeys(kubemr.MapReduce):
    """Keys are lists ``[first letter, [length]]`` (the whole line for ``--param whole=1``),
    or the same as tuples for lines ending in "." (one key with the list form: lists and
    tuples order alike); the value is the length, combined by
    ``--param reducer=sum|count|min|max|python``."""

    OUTPUT_FORMAT = "text"

    def steps(self):
        name = self.params.get("reducer", "sum")
        builtin = {"sum": kubemr.SUM, "count": kubemr.COUNT, "min": kubemr.MIN, "max": kubemr.MAX}
        if name in builtin:
            return [kubemr.MRStep(mapper=self.keys, reducer=builtin[name])]
        return [kubemr.MRStep(mapper=self.keys, combiner=self.add, reducer=self.add)]

    def keys(self, line):
        head = line if self.params.get("whole") else line[0]
        if line.endswith("."):
            yield (head, (len(line),)), len(line)
        else:
            yield [head, [len(line)]], len(line)

    def add(self, key, values):
        yield key, sum(values)


class DictKeys(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        yield ({"line": line} if line == "dict" else line), 1


class MixedValuesMin(kubemr.MapReduce):
    """MIN over ints for most lines and a str for the line "s": the map task holding
    "s" folds fine alone; the reducer meets both kinds of value for the key "k"."""

    reducer = kubemr.MIN

    def mapper(self, line):
        yield "k", (line if line == "s" else len(line))


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


class IntEnumKeys(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        yield Color(len(line) % 2 + 1), 1


class GeneratorTeardown(kubemr.MapReduce):
    """Emits its pairs from teardown, as mrjob's mapper_final would: kubemr never runs it."""

    def mapper(self, line):
        self.seen = getattr(self, "seen", 0) + 1
        return []

    def teardown(self):
        yield "lines", self.seen

    reducer = kubemr.SUM


class FailingPartitioner(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        yield line, 1

    def partitioner(self, key, num_partitions):
        return {"a": 0}[key]
