"""Word count: the classic, with a built-in combiner and reducer.

kubemr run examples/wordcount.py --input books/ --output counts/
"""

import re

import kubemr

WORD = re.compile(r"[\w']+")


class WordCount(kubemr.MapReduce):
    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in WORD.findall(line.lower()):
            yield word, 1
