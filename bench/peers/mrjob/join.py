"""mrjob reduce-side join: tag users and events by user_id, sum a user's events in the
combiner, join in the reducer, then total per country in a second step.

python bench/peers/mrjob/join.py -r local --num-cores N users.csv events.jsonl --output-dir OUT
"""

import json

from mrjob.job import MRJob
from mrjob.step import MRStep


class MRJoin(MRJob):
    def steps(self):
        return [
            MRStep(mapper=self.tag, combiner=self.partial, reducer=self.join),
            MRStep(combiner=self.add, reducer=self.add),
        ]

    def tag(self, _, line):
        if line.startswith("{"):
            event = json.loads(line)
            yield event["user_id"], (0, event["amount"], 1)
        elif line and not line.startswith("user_id,"):
            user, country = line.split(",", 1)
            yield user, (1, country, 0)

    def partial(self, user, tagged):
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


if __name__ == "__main__":
    MRJoin.run()
