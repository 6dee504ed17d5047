"""kubemr's job for the peer benchmark's join-and-aggregate (sort uses the example)."""

from __future__ import annotations

import json

import kubemr


class RevenueByCountry(kubemr.MapReduce):
    """users.csv and events.jsonl, read as text: join on user_id, then sum per country."""

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
