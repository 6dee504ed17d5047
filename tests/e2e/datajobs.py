"""Real jobs for the end-to-end tests, and how their outputs are checked: the word count
and a failing job as inline source, a MapReduceJob body that runs them with the real
``kubemr worker`` on files of this machine, and :class:`Digest`, an output's record
count and checksum, to compare a run that went through a fault with its reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kubemr.executors.k8s.manifests import GROUP, VERSION

Obj = dict[str, Any]

WORDCOUNT = """
import re
import kubemr

class WordCount(kubemr.MapReduce):
    combiner = kubemr.SUM
    reducer = kubemr.SUM

    def mapper(self, line):
        for word in re.findall(r"[a-z']+", line.lower()):
            yield word, 1
"""

FAILING = """
import kubemr

class Failing(kubemr.MapReduce):
    reducer = kubemr.SUM

    def mapper(self, line):
        if "poison" in line:
            raise ZeroDivisionError("poisoned line: " + line.strip())
        yield line, 1
"""


def slowed(source: str, seconds_per_record: float) -> str:
    """``source`` with a mapper that sleeps before each record: a task long enough to be
    hit by a fault in its middle."""
    return source.replace(
        "    def mapper(self, line):\n",
        f"    def mapper(self, line):\n        __import__('time').sleep({seconds_per_record})\n",
    )


def announcing(source: str, directory: str) -> str:
    """``source`` with a mapper that first touches ``directory/<host name>`` (a pod's host
    name; ``<job>-<index>`` for an Indexed Job's pods), so a test can wait until a given
    pod is inside the mapper (its worker set up, its log being kept) before it strikes."""
    return source.replace(
        "    def mapper(self, line):\n",
        "    def mapper(self, line):\n"
        "        import os, socket\n"
        "        host = os.environ.get('HOSTNAME') or socket.gethostname()\n"
        f"        open(os.path.join({directory!r}, host), 'a').close()\n",
    )


def word_lines(n: int) -> list[str]:
    """``n`` lines of words with skewed, checkable counts."""
    return [f"{'abcdefg'[i % 7]}x shared {'hij'[i % 3]}y w{i % 11}" for i in range(n)]


def word_counts(lines: list[str]) -> dict[str, int]:
    """The word count's reference: plain Python over the same lines."""
    import re

    return dict(Counter(w for line in lines for w in re.findall(r"[a-z']+", line.lower())))


def write_inputs(tmp_path: Any, lines: list[str], files: int = 4) -> str:
    """The lines dealt into ``files`` files under ``tmp_path/in``; returns their glob."""
    inputs = tmp_path / "in"
    inputs.mkdir(exist_ok=True)
    for i in range(files):
        (inputs / f"part-{i}.txt").write_text("\n".join(lines[i::files]) + "\n")
    return str(inputs / "*.txt")


def real_job(name: str, tmp_path: Any, source: str, lines: list[str], **spec: Any) -> Obj:
    """A MapReduceJob run by the real worker on files of this machine (kubestack pods are
    processes of the host, so a local path is shared storage)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MapReduceJob",
        "metadata": {"name": name},
        "spec": {
            "inputs": [write_inputs(tmp_path, lines)],
            "output": str(tmp_path / "out"),
            "job": {"source": source},
            "reducers": 2,
            "splitSize": 64,
            "maxAttempts": 2,
            "template": {"command": [sys.executable, "-m", "kubemr"]},
            **spec,
        },
    }


def read_output(out_dir: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in sorted(os.listdir(out_dir)):
        if part.startswith("part-"):
            for line in (out_dir / part).read_text().splitlines():
                key, value = json.loads(line)
                counts[key] = value
    return counts


@dataclass(frozen=True)
class Digest:
    """What an output holds, independent of how it was split into part files: its record
    count, a sha256 over its records in sorted order, and how many records appear more
    than once (a task counted twice shows here even when the checksum alone would only
    say "different")."""

    records: int
    sha256: str
    repeated: int

    @classmethod
    def of_lines(cls, lines: list[str]) -> Digest:
        ordered = sorted(lines)
        digest = hashlib.sha256("\n".join(ordered).encode()).hexdigest()
        repeated = sum(n - 1 for n in Counter(ordered).values() if n > 1)
        return cls(len(ordered), digest, repeated)

    @classmethod
    def of_counts(cls, counts: dict[str, int]) -> Digest:
        """The digest of the word count's JSON-lines output holding ``counts``."""
        return cls.of_lines([json.dumps([k, v]) for k, v in counts.items()])

    @classmethod
    def of_dir(cls, out_dir: Any) -> Digest:
        """The digest of the part files in a local output directory."""
        lines: list[str] = []
        for part in sorted(os.listdir(out_dir)):
            if part.startswith("part-"):
                with open(os.path.join(out_dir, part)) as fh:
                    lines.extend(fh.read().splitlines())
        return cls.of_lines(lines)

    @classmethod
    def of_s3(cls, s3: Any, bucket: str, prefix: str) -> Digest:
        """The digest of the part files under ``s3://bucket/prefix/`` (a boto3 client)."""
        lines: list[str] = []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].rsplit("/", 1)[1].startswith("part-"):
                    body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    lines.extend(body.decode().splitlines())
        return cls.of_lines(lines)
