"""Word count, batch style: one call per chunk of lines, C-speed counting.

kubemr run examples/wordcount_batch.py --input examples/data/books --output /tmp/wc
"""

from collections import Counter

import kubemr


class BatchWordCount(kubemr.MapReduce):
    # A built-in reducer is also applied on the map side, so each chunk's Counter
    # folds into one total per word before the shuffle.
    reducer = kubemr.SUM

    def mapper_batch(self, lines):
        return Counter(" ".join(lines).lower().split())
