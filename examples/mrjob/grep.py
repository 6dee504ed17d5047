"""Return all input lines matching the given expression.

A map-only job whose mapper is a shell command: ``grep -e EXPRESSION`` over each map
task's lines, run through ``sh`` so that grep's "no line matched" (exit status 1) is not
a failure. The output is grep's lines, as they are. Ported from mrjob's examples (Apache
License 2.0): ``mr_grep.py``.

    kubemr run examples/mrjob/grep.py --input examples/data/books --output out/ \\
        -p expression=whale
    python examples/mrjob/grep.py -i examples/data/books -o out/ -p expression=whale
"""

# mrjob's own lines are kept as they are, lint and all
# ruff: noqa: UP031

from pydantic import Field

import kubemr
from kubemr import cmd_line


class MRGrepJob(kubemr.MapReduce):
    class Options(kubemr.Options):
        expression: str = Field(description="Expression to search for. Required.")

    def mapper_cmd(self):
        # grep will return exit status 1 if no matching lines are found
        return cmd_line(
            [
                "sh",
                "-c",
                "grep -e %s || RC=$?; if [ $RC -ne 1 ]; then (exit $RC); fi"
                % (cmd_line([self.options.expression])),
            ]
        )


if __name__ == "__main__":
    MRGrepJob.run()
