"""Determine the most used word in the input, ignoring common "stop" words.

The output is one line: the word (lowercased) that appears most often, as JSON, leaving
out the words of ``stop_words.txt`` (shipped with the job) or of another list given as
``-p stop_words_file=PATH``. Shows how to do a multi-step job, and how to ship a support
file with the job. Ported from mrjob's examples (Apache License 2.0):
``mr_most_used_word.py``.

    kubemr run examples/mrjob/most_used_word.py --input examples/data/books --output out/
    python examples/mrjob/most_used_word.py -i examples/data/books -o out/
"""

import re

from pydantic import Field

import kubemr
from kubemr import JSONValueProtocol, MRStep

WORD_RE = re.compile(r"[\w']+")


class MRMostUsedWord(kubemr.MapReduce):
    FILES = ["stop_words.txt"]

    OUTPUT_PROTOCOL = JSONValueProtocol

    class Options(kubemr.Options):
        # allow for alternate stop words file
        stop_words_file: kubemr.File | None = Field(
            None,
            description="alternate stop words file. lowercase words, one per line",
        )

    def mapper_init(self):
        stop_words_path = self.options.stop_words_file or self.files["stop_words.txt"]

        with open(stop_words_path) as f:
            self.stop_words = set(line.strip() for line in f)

    def mapper_get_words(self, line):
        # yield each word in the line
        for word in WORD_RE.findall(line):
            word = word.lower()
            if word not in self.stop_words:
                yield (word, 1)

    def combiner_count_words(self, word, counts):
        # sum the words we've seen so far
        yield (word, sum(counts))

    def reducer_count_words(self, word, counts):
        # send all (num_occurrences, word) pairs to the same reducer.
        # num_occurrences is so we can easily use Python's max() function.
        yield None, (sum(counts), word)

    # discard the key; it is just None
    def reducer_find_max_word(self, _, word_count_pairs):
        # each item of word_count_pairs is (count, word),
        # so yielding one results in key=counts, value=word
        try:
            yield max(word_count_pairs)
        except ValueError:
            pass

    def steps(self):
        return [
            MRStep(
                mapper_init=self.mapper_init,
                mapper=self.mapper_get_words,
                combiner=self.combiner_count_words,
                reducer=self.reducer_count_words,
            ),
            MRStep(reducer=self.reducer_find_max_word),
        ]


if __name__ == "__main__":
    MRMostUsedWord.run()
