"""Total sort of gensort-style records by their 10-character key.

Each record is one line: a 10-character key, then the rest (row id and filler). Before
the map wave the runner samples keys from the input and cuts one key range per reducer,
so the part files, concatenated in name order, are one globally sorted sequence.

    kubemr run examples/total_sort.py --input examples/data/records.txt --output /tmp/out \
        --reducers 4

Bigger input:

    python -m kubemr.datagen sort --size 10MB --output /tmp/records.txt
    kubemr run examples/total_sort.py --input /tmp/records.txt --output /tmp/sorted --reducers 4
"""

import kubemr


class TotalSort(kubemr.MapReduce):
    TOTAL_ORDER = True  # sampled range partitioning instead of hashing
    OUTPUT_FORMAT = "text"

    def mapper(self, line):
        # Key: the first 10 characters; value: the rest of the line.
        yield line[:10], line[10:]

    def reducer(self, key, rests):
        # Write the records themselves, key and rest joined again, so that
        # `cat part-*` equals `LC_ALL=C sort` of the input. Without a reducer, a
        # TOTAL_ORDER job gets an identity reducer and writes the (key, value) pairs.
        for rest in rests:
            yield None, key + rest
