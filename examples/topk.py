"""Top 3 words by count for each first letter, in two steps.

kubemr run examples/topk.py --input examples/data/books --output /tmp/topk
"""

import heapq

import kubemr

K = 3


class TopWordsPerLetter(kubemr.MapReduce):
    def steps(self):
        return [
            kubemr.MRStep(mapper=self.words, combiner=kubemr.SUM, reducer=kubemr.SUM),
            kubemr.MRStep(mapper=self.by_letter, combiner=self.top, reducer=self.top),
        ]

    def words(self, line):
        for word in line.lower().split():
            if word.isalpha():
                yield word, 1

    def by_letter(self, pair):
        word, count = pair
        yield word[0], (count, word)

    def top(self, letter, counted):
        # The K largest (count, word) pairs; ties broken by the word, descending.
        for item in heapq.nlargest(K, counted):
            yield letter, item
