"""Reduce-side join, then an aggregate: revenue and event count per country.

Both tables are JSON Lines with a "table" field:
    {"table": "users", "user_id": "u1", "country": "DE"}
    {"table": "events", "user_id": "u1", "amount": 250}

    kubemr run examples/join.py --input examples/data/join --output /tmp/join
"""

import kubemr


class RevenueByCountry(kubemr.MapReduce):
    INPUT_FORMAT = "jsonl"

    def steps(self):
        return [
            kubemr.MRStep(mapper=self.tag_by_user, reducer=self.join_user),
            kubemr.MRStep(combiner=self.add, reducer=self.add),
        ]

    def tag_by_user(self, row):
        if row["table"] == "users":
            yield row["user_id"], ("user", row["country"])
        else:
            yield row["user_id"], ("event", row["amount"])

    def join_user(self, user_id, tagged):
        country = None
        amounts = []
        for kind, value in tagged:
            if kind == "user":
                country = value
            else:
                amounts.append(value)
        if country is None:
            self.increment_counter("join", "events_without_user", len(amounts))
            return
        yield country, (sum(amounts), len(amounts))

    def add(self, country, totals):
        revenue = 0
        events = 0
        for amount, count in totals:
            revenue += amount
            events += count
        yield country, (revenue, events)
