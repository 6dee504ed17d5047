"""Word count, then a histogram of the counts: how many words occur N times.

kubemr run examples/two_step.py --input examples/data/books --output /tmp/histogram
"""

import kubemr


class CountHistogram(kubemr.MapReduce):
    def steps(self):
        return [
            kubemr.MRStep(mapper=self.words, combiner=kubemr.SUM, reducer=kubemr.SUM),
            kubemr.MRStep(mapper=self.count_of_word, combiner=kubemr.SUM, reducer=kubemr.SUM),
        ]

    def words(self, line):
        for word in line.lower().split():
            yield word, 1

    def count_of_word(self, pair):
        _word, count = pair
        yield count, 1
