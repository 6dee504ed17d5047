"""Which files are we reading input from? The number of lines of each input file.

One pair per input file: its path (as given on the command line, or its URL in object
storage) and its number of lines. Ported from mrjob's examples (Apache License 2.0):
``mr_count_lines_by_file.py``.

    kubemr run examples/mrjob/count_lines_by_file.py --input examples/data/books --output out/
    python examples/mrjob/count_lines_by_file.py -i examples/data/books -o out/
"""

import kubemr


class MRCountLinesByFile(kubemr.MapReduce):
    def mapper(self, line):
        yield self.input_file, 1

    def reducer(self, path, ones):
        yield path, sum(ones)


if __name__ == "__main__":
    MRCountLinesByFile.run()
