"""A random sample of N lines of a log.

The mapper gives each line (or, with an expected length L, each line kept with
probability 1.2 N / L) a random seed and sends it to one reducer under the key None;
the values reach it sorted by seed (``SORT_VALUES``), so the first N it writes, as they
are, are a random sample. Ported from mrjob's examples (Apache License 2.0):
``mr_log_sampler.py``.

    kubemr run examples/mrjob/log_sampler.py --input access.log --output out/ -p sample_size=100
    python examples/mrjob/log_sampler.py -i access.log -o out/ -p sample_size=100
"""

# mrjob's own lines are kept as they are, lint and all
# ruff: noqa: B007, UP031

import random
import sys

from pydantic import Field

import kubemr

SAMPLING_FUDGE_FACTOR = 1.2


class MRLogSampler(kubemr.MapReduce):
    # We use the text format for input to be format agnostic
    # and avoid any type of parsing errors
    INPUT_FORMAT = "text"

    # We use RawValueProtocol for output so we can output raw lines
    # instead of (k, v) pairs
    OUTPUT_PROTOCOL = kubemr.RawValueProtocol

    # (mrjob's INTERNAL_PROTOCOL = ReprProtocol is not needed: pairs travel between
    # tasks as Python values)

    # random seed doesn't do any good unless we sort by it
    SORT_VALUES = True

    class Options(kubemr.Options):
        sample_size: int = Field(description="Number of entries to sample.")
        expected_length: int | None = Field(
            None,
            description=(
                "Number of entries you expect in the log. If not specified,"
                " we'll pass every line to the reducer."
            ),
        )

    def setup(self):
        # (mrjob: load_args; a missing sample_size is refused before any task starts)
        self.sample_size = self.options.sample_size

        # If we have an expected length, we can estimate the sampling
        # probability for the mapper, so that the reducer doesn't have to
        # process all records. Otherwise, pass everything thru to the reducer.
        if self.options.expected_length is None:
            self.sampling_probability = 1
        else:
            # We should be able to bound this probability by using the binomial
            # distribution, but I haven't figured it out yet. So, let's just
            # fudge it.
            self.sampling_probability = (
                float(self.sample_size) * SAMPLING_FUDGE_FACTOR / self.options.expected_length
            )

    def mapper(self, line):
        """
        For each log line, with probability self.sampling_probability,
        yield a None key, and (random seed, line) as the value, so that
        the values get sorted randomly and fed into a single reducer.

        Args:
            line - raw log line

        Yields:
            key - None
            value - (random seed, line)
        """
        if random.random() < self.sampling_probability:
            seed = "%20i" % random.randint(0, sys.maxsize)
            yield None, (seed, line)

    def reducer(self, _, values):
        """
        Now that the values have a random number attached,
        they'll come in in random order, so we yield the
        first n lines, and return early.

        Args:
            values - generator of (random_seed, line) pairs

        Yields:
            key - None
            value - random sample of log lines
        """
        for line_num, (seed, line) in enumerate(values):
            yield None, line

            # enumerate() is 0-indexed, so add 1
            if line_num + 1 >= self.sample_size:
                break


if __name__ == "__main__":
    MRLogSampler.run()
