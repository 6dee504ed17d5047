"""The classic MapReduce job: count the frequency of words.

Each word (letters, digits, ``_`` and ``'``), lowercased, with the number of times it
appears in the input. Ported from mrjob's examples (Apache License 2.0):
``mr_word_freq_count.py``.

    kubemr run examples/mrjob/word_freq_count.py --input examples/data/books --output out/
    python examples/mrjob/word_freq_count.py -i examples/data/books -o out/
"""

import re

import kubemr

WORD_RE = re.compile(r"[\w']+")


class MRWordFreqCount(kubemr.MapReduce):
    def mapper(self, line):
        for word in WORD_RE.findall(line):
            yield (word.lower(), 1)

    def combiner(self, word, counts):
        yield (word, sum(counts))

    def reducer(self, word, counts):
        yield (word, sum(counts))


if __name__ == "__main__":
    MRWordFreqCount.run()
