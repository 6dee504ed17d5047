"""kubemr's jobs for the peer benchmark's total sort and join-and-aggregate."""

from __future__ import annotations

import json

import kubemr


class TotalSort(kubemr.MapReduce):
    """gensort-style lines by their 10-character key: sampled key ranges, one per reducer,
    so the part files in name order are one sorted sequence."""

    TOTAL_ORDER = True
    OUTPUT_FORMAT = "text"

    def mapper(self, line):
        yield line[:10], line

    def reducer(self, key, lines):
        for line in lines:
            yield None, line


def load_countries(path: str) -> dict[str, str]:
    """user_id -> country from the users CSV (the small side of the join)."""
    with open(path, encoding="utf-8") as fh:
        next(fh)  # header
        return dict(line.rstrip("\n").split(",", 1) for line in fh)


class ReplicatedJoin(kubemr.MapReduce):
    """events.jsonl, read as JSON Lines, joined with the small users table from
    ``--param users=PATH`` (a replicated, map-side join), which the first step's map
    tasks get in ``mapper_init`` with ``load_once``: read once per worker process, not
    once per task. Step 1 sums amount and events per (country, field) with the built-in
    SUM; step 2 puts each country's two sums into one record."""

    INPUT_FORMAT = "jsonl"  # records arrive parsed, as dicts
    OUTPUT_FORMAT = "tsv"

    def steps(self):
        return [
            kubemr.MRStep(
                mapper_init=self.load_users,
                mapper=self.by_country,
                combiner=kubemr.SUM,
                reducer=kubemr.SUM,
            ),
            kubemr.MRStep(mapper=self.regroup, reducer=self.both),
        ]

    def load_users(self):
        self.countries = self.load_once(load_countries, self.params["users"])

    def by_country(self, event):
        country = self.countries.get(event["user_id"])
        if country is not None:
            yield (country, 0), event["amount"]
            yield (country, 1), 1

    def regroup(self, pair):
        (country, field), total = pair
        yield country, (field, total)

    def both(self, country, fields):
        totals = dict(fields)
        yield country, (totals[0], totals[1])


class RevenueByCountry(kubemr.MapReduce):
    """users.csv and events.jsonl, read as text: join on user_id, then sum per country
    (a reduce-side join: both tables go through the shuffle, tagged)."""

    OUTPUT_FORMAT = "tsv"

    def steps(self):
        return [
            kubemr.MRStep(mapper=self.tag, combiner=self.partial, reducer=self.join),
            kubemr.MRStep(combiner=self.add, reducer=self.add),
        ]

    def tag(self, line):
        if line.startswith("{"):
            event = json.loads(line)
            yield event["user_id"], (0, event["amount"], 1)
        elif line and not line.startswith("user_id,"):
            user, country = line.split(",", 1)
            yield user, (1, country, 0)

    def partial(self, user, tagged):
        # Sum a user's events map-side; pass the user's country through.
        amount = events = 0
        for kind, value, n in tagged:
            if kind == 1:
                yield user, (1, value, 0)
            else:
                amount += value
                events += n
        if events:
            yield user, (0, amount, events)

    def join(self, user, tagged):
        country = None
        amount = events = 0
        for kind, value, n in tagged:
            if kind == 1:
                country = value
            else:
                amount += value
                events += n
        if country is not None and events:
            yield country, (amount, events)

    def add(self, country, totals):
        amount = events = 0
        for a, n in totals:
            amount += a
            events += n
        yield country, (amount, events)
