"""An implementation of wc as a kubemr job.

The number of characters (newlines included), words and lines of the input, as three
pairs: ``chars``, ``words``, ``lines``. Each map task counts its own lines and yields its
totals once, in ``mapper_final``; the reducer adds them up. Ported from mrjob's examples
(Apache License 2.0): ``mr_wc.py``.

    kubemr run examples/mrjob/wc.py --input examples/data/books --output out/
    python examples/mrjob/wc.py -i examples/data/books -o out/
"""

import kubemr


class MRWordCountUtility(kubemr.MapReduce):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chars = 0
        self.words = 0
        self.lines = 0

    def mapper(self, line):
        # Don't actually yield anything for each line. Instead, collect them
        # and yield the sums when all lines have been processed. The results
        # will be collected by the reducer.
        self.chars += len(line) + 1  # +1 for newline
        self.words += sum(1 for word in line.split() if word.strip())
        self.lines += 1

    def mapper_final(self):
        yield ("chars", self.chars)
        yield ("words", self.words)
        yield ("lines", self.lines)

    def reducer(self, key, values):
        yield (key, sum(values))


if __name__ == "__main__":
    MRWordCountUtility.run()
