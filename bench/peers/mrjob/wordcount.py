"""mrjob word count: mapper, combiner and reducer, run by the local runner.

python bench/peers/mrjob/wordcount.py -r local --num-cores N INPUT --output-dir OUT
"""

from mrjob.job import MRJob


class MRWordCount(MRJob):
    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


if __name__ == "__main__":
    MRWordCount.run()
