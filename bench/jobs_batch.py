"""kubemr's per-chunk programs for the peer benchmark (the kubemr-batch rows).

Each ``mapper_batch`` gets a chunk of lines and does the work of a chunk in one call —
the same loops as the plain N-process script and the Lithops map functions — and kubemr
does the rest: splitting, the shuffle, merging and writing.
"""

from __future__ import annotations

import kubemr
from bench.jobs_sort_join import ReplicatedJoin


class ChunkWordCount(kubemr.MapReduce):
    """A dict of counts per chunk, summed by key."""

    reducer = kubemr.SUM

    def mapper_batch(self, lines):
        counts: dict[str, int] = {}
        get = counts.get
        for line in lines:
            for word in line.split():
                counts[word] = get(word, 0) + 1
        return counts


class ChunkTotalSort(kubemr.MapReduce):
    """Whole lines as keys, no values: the identity reducer writes them back in order
    (text output leaves out a ``None`` value)."""

    TOTAL_ORDER = True
    OUTPUT_FORMAT = "text"

    def mapper_batch(self, lines):
        return [(line, None) for line in lines]


class ChunkReplicatedJoin(ReplicatedJoin):
    """The replicated join with one dict of sums per chunk of events."""

    def steps(self):
        return [
            kubemr.MRStep(
                mapper_init=self.load_users,
                mapper_batch=self.by_country_chunk,
                reducer=kubemr.SUM,
            ),
            kubemr.MRStep(mapper=self.regroup, reducer=self.both),
        ]

    def by_country_chunk(self, events):
        countries = self.countries
        sums: dict[tuple[str, int], int] = {}
        get = sums.get
        for event in events:
            country = countries.get(event["user_id"])
            if country is not None:
                amount_key, events_key = (country, 0), (country, 1)
                sums[amount_key] = get(amount_key, 0) + event["amount"]
                sums[events_key] = get(events_key, 0) + 1
        return sums
