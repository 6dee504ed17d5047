"""mrjob total sort: key each record by its first 10 bytes; the local runner sorts all
map output and splits it into contiguous reducer inputs, so the part files in name order
are one sorted sequence. Raw protocols keep byte order (JSON would escape quotes).

python bench/peers/mrjob/sort.py -r local --num-cores N INPUT --output-dir OUT
"""

from mrjob.job import MRJob
from mrjob.protocol import RawProtocol, RawValueProtocol


class MRTotalSort(MRJob):
    INTERNAL_PROTOCOL = RawProtocol
    OUTPUT_PROTOCOL = RawValueProtocol

    def mapper(self, _, line):
        yield line[:10], line

    def reducer(self, key, lines):
        for line in lines:
            yield None, line


if __name__ == "__main__":
    MRTotalSort.run()
