"""Total sort of gensort-style records by their 10-byte key.

Keys are sampled before the map wave to cut even key ranges, one per reducer, so the
part files, read in name order, are one sorted sequence.

    python -m kubemr.datagen sort --size 10MB --output /tmp/records.txt
    kubemr run examples/total_sort.py --input /tmp/records.txt --output /tmp/sorted --reducers 4
"""

import kubemr


class TotalSort(kubemr.MapReduce):
    TOTAL_ORDER = True
    OUTPUT_FORMAT = "text"

    def mapper(self, line):
        yield line[:10], line

    def reducer(self, key, lines):
        # Write the records themselves: `cat part-*` equals `LC_ALL=C sort` of the input.
        for line in lines:
            yield None, line
