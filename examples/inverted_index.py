"""Inverted index: for every word, the sorted documents that contain it.

Input is JSON Lines, one document per line: {"doc": "name", "text": "..."}.

    kubemr run examples/inverted_index.py --input examples/data/docs.jsonl --output /tmp/index
"""

import re

import kubemr

WORD = re.compile(r"[a-z']+")


class InvertedIndex(kubemr.MapReduce):
    INPUT_FORMAT = "jsonl"

    def mapper(self, doc):
        for word in set(WORD.findall(doc["text"].lower())):
            yield word, doc["doc"]

    def combiner(self, word, docs):
        # Drop duplicates early: a document appears once per word per map task.
        for doc in set(docs):
            yield word, doc

    def reducer(self, word, docs):
        yield word, sorted(set(docs))
