"""grep, map-only: the lines matching a regular expression (GREP_PATTERN).

GREP_PATTERN='whale|sea' kubemr run examples/grep.py --input examples/data/books --output /tmp/grep
"""

import os
import re

import kubemr


class Grep(kubemr.MapReduce):
    OUTPUT_FORMAT = "text"  # the matching lines as they are

    def setup(self):
        self.pattern = re.compile(os.environ.get("GREP_PATTERN", "whale"))

    def mapper(self, line):
        if self.pattern.search(line):
            self.increment_counter("grep", "matches")
            yield None, line
