"""Count the lines of the input, the right way: with ``mapper_final``.

One pair, ``None`` and the number of lines. Each map task counts its lines on ``self``
(started in ``mapper_init``) and yields its count once, in ``mapper_final``; the reducer
adds the counts up. Ported from mrjob's examples (Apache License 2.0):
``mr_count_lines_right.py``.

    kubemr run examples/mrjob/count_lines.py --input examples/data/books --output out/
    python examples/mrjob/count_lines.py -i examples/data/books -o out/
"""

import kubemr


class MRCountLinesRight(kubemr.MapReduce):
    def mapper_init(self):
        self.num_lines = 0

    def mapper(self, line):
        self.num_lines += 1

    def mapper_final(self):
        yield None, self.num_lines

    def reducer(self, key, values):
        yield key, sum(values)


if __name__ == "__main__":
    MRCountLinesRight.run()
