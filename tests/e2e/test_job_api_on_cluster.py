"""The job API's mrjob-style features on a real control plane (kubestack): each job is
submitted with ``kubemr submit --wait`` as a user runs it (a subprocess, the job file
pickled and uploaded), run by the real ``kubemr worker`` in pods on inputs in MinIO, and
its part files compared byte for byte with ``kubemr run`` of the same file on the same
objects, then read back against a plain-Python reference.

Three cluster jobs cover the API:

- ``Tagged`` (one step, hooks on the class): typed options given with ``-p`` as every map,
  combiner and reduce task sees them; a ``FILES`` entry, a ``--file`` and a ``File``
  option read in map and reduce tasks; ``mapper_init``/``mapper_final``/``combiner_*``/
  ``reducer_*`` that yield; ``self.input_file`` and the Hadoop variables naming the
  ``s3://`` object and its split (and unset in reduce tasks); ``INPUT_WITH_OFFSET`` in
  split and gzip objects; Latin-1 input with ``--encoding latin-1``; ``--output-format tsv``.
- ``LengthTops`` (two steps, hooks on each ``MRStep``): invalid UTF-8 lines read with
  ``--decode-errors replace`` and counted in the job's status and ``--wait``'s summary;
  ``--output-format json-value``.
- ``Digests``: ``mapper_raw`` over several objects (one empty, one gzip kept compressed,
  one binary), written by the job's own ``OUTPUT_PROTOCOL`` class.

A bad option value is refused by ``kubemr submit`` before anything is uploaded or created.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from kubemr.cli.exits import ExitCode
from kubemr.formats import UNDECODABLE_LINES
from tests.e2e import support
from tests.e2e.support import Cluster, ControllerProcess, new_namespace, running_controller
from tests.support import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# The installation and the controller's kubeconfig are support's fixtures.
globals().update({name: getattr(support, name) for name in ("installed", "controller_kubeconfig")})

BUCKET = "api"
SECRET = "s3"
WORKER = f"{sys.executable} -m kubemr"
Obj = dict[str, Any]

# -- the jobs -----------------------------------------------------------------------------------
TAGGED = '''
"""Words of Latin-1 lines less a shipped stop list (--file stop.txt), weighed by a
shipped table (FILES) in the reducer, those in a list given as a File option marked; every
task says what it saw: the options as typed values, the shipped files' digests, and in map
tasks the object and split it read."""

import hashlib
import json
import os

from pydantic import Field

import kubemr
from kubemr.options import File, Options

SPECIAL = ("at:", "split:", "map-task:", "combiner")


def digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


class Tagged(kubemr.MapReduce):
    FILES = ["weights.tsv"]
    INPUT_WITH_OFFSET = True

    class Options(Options):
        factor: int = Field(description="What each word counts for.")
        scale: float = 1.0
        upper: bool = False
        tags: list[str] = []
        marks: File | None = None

    def seen(self):
        options = self.options
        return {
            "options": [
                [name, type(getattr(options, name)).__name__, getattr(options, name)]
                for name in ("factor", "scale", "upper", "tags")
            ],
            "files": [
                digest(self.files["weights.tsv"]),
                digest(self.files["stop.txt"]),
                digest(options.marks),
            ],
        }

    def mapper_init(self):
        with open(self.files["stop.txt"], encoding="utf-8") as fh:
            self.stop = set(fh.read().split())
        self.lines = 0
        env = os.environ
        self.start = int(env["mapreduce_map_input_start"])
        yield f"split:{self.input_file}:{self.start}", [
            env["mapreduce_map_input_file"],
            env["map_input_file"],
            int(env["mapreduce_map_input_length"]),
        ]

    def mapper(self, record):
        offset, line = record
        self.lines += 1
        yield f"at:{self.input_file}:{offset}", line
        for word in line.split():
            if word not in self.stop:
                yield (word.upper() if self.options.upper else word), self.options.factor

    def mapper_final(self):
        yield f"map-task:{self.input_file}:{self.start}", {**self.seen(), "lines": self.lines}

    def combiner_init(self):
        self.combined = 0

    def combiner(self, key, values):
        self.combined += 1
        if key.startswith(SPECIAL):
            for value in values:
                yield key, value
        else:
            yield key, sum(values)

    def combiner_final(self):
        yield "combiner", self.seen()

    def reducer_init(self):
        with open(self.files["weights.tsv"], encoding="utf-8") as fh:
            rows = [row.split("\\t") for row in fh.read().splitlines()]
        self.weights = {word: int(n) for word, n in rows}
        with open(self.options.marks, encoding="utf-8") as fh:
            self.marked = set(fh.read().split())
        self.keys = 0
        origin = [self.input_file, "mapreduce_map_input_file" in os.environ]
        yield "reduce-task", {**self.seen(), "origin": origin}

    def reducer(self, key, values):
        self.keys += 1
        if key == "combiner":
            values = list(values)
            seen = sorted({json.dumps(v, sort_keys=True) for v in values})
            yield key, [len(values), [json.loads(s) for s in seen]]
        elif key.startswith(SPECIAL):
            for value in values:
                yield key, value
        else:
            total = sum(values) * self.weights.get(key.lower(), 1) * self.options.scale
            yield (f"{key}*" if key.lower() in self.marked else key), total

    def reducer_final(self):
        yield "reduce-task-keys", self.keys
'''

TOPS = '''
"""Two steps, their hooks on each MRStep: step 1 counts words, step 2 keeps, for each word
length, the `top` most frequent. The hooks count tasks, lines, combiner applications and
keys; their counts travel through both steps as `#` pairs."""

from pydantic import Field

import kubemr
from kubemr import MRStep
from kubemr.options import Options


class LengthTops(kubemr.MapReduce):
    class Options(Options):
        top: int = Field(2, ge=1, description="Words to keep per length.")

    def steps(self):
        return [
            MRStep(
                mapper=self.words,
                mapper_init=self.words_init,
                mapper_final=self.words_final,
                combiner=self.add,
                combiner_init=self.add_init,
                combiner_final=self.add_final,
                reducer=self.count,
                reducer_init=self.count_init,
                reducer_final=self.count_final,
            ),
            MRStep(
                mapper=self.by_length,
                mapper_final=self.by_length_final,
                reducer=self.tops,
                reducer_init=self.tops_init,
                reducer_final=self.tops_final,
            ),
        ]

    def words_init(self):
        self.lines = 0
        yield "#map-tasks", 1

    def words(self, line):
        self.lines += 1
        for word in line.split():
            yield word, 1

    def words_final(self):
        yield "#lines", self.lines

    def add_init(self):
        self.keys = 0

    def add(self, key, values):
        self.keys += 1
        yield key, sum(values)

    def add_final(self):
        yield "#combiner-applications", 1

    def count_init(self):
        self.keys = 0
        yield "#reduce-tasks", 1

    def count(self, key, values):
        if not key.startswith("#"):
            self.keys += 1
        yield key, sum(values)

    def count_final(self):
        yield "#distinct-words", self.keys

    def by_length(self, pair):
        word, count = pair
        if word.startswith("#"):
            yield word, count
        else:
            yield len(word), [count, word]

    def by_length_final(self):
        yield "#step-2-map-tasks", 1

    def tops_init(self):
        self.lengths = 0

    def tops(self, key, values):
        if isinstance(key, str):
            yield key, {"counter": key, "total": sum(values)}
            return
        self.lengths += 1
        best = sorted(values, key=lambda cw: (-cw[0], cw[1]))[: self.options.top]
        yield key, {"length": key, "top": [[w, c] for c, w in best]}

    def tops_final(self):
        top = type(self.options.top).__name__
        yield None, {"reduce-task": {"lengths": self.lengths, "top": top}}
'''

DIGESTS = '''
"""Whole objects (mapper_raw): each one's digest and size as stored, and where the task
was told it came from; written by an output protocol of the job's own (CSV lines)."""

import csv
import hashlib
import io
import json
import os

import kubemr


class CsvLine:
    def write(self, key, value):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow([key, json.dumps(value)])
        return buf.getvalue()


class Digests(kubemr.MapReduce):
    OUTPUT_PROTOCOL = CsvLine

    def mapper_raw(self, path, url):
        with open(path, "rb") as fh:
            data = fh.read()
        told = [self.input_file, os.environ["mapreduce_map_input_file"]]
        yield url, [hashlib.sha256(data).hexdigest(), len(data), os.path.basename(path), told]
        yield "~files", 1
        yield "~bytes", len(data)

    def reducer(self, key, values):
        if key.startswith("~"):
            yield key, sum(values)
        else:
            for value in values:
                yield key, value
'''

# -- the inputs ---------------------------------------------------------------------------------
LATIN1_LINES = [
    "le café est chaud",
    "the naïve señor",
    "Ærø and the café",
    "a b c the",
    "über naïve",
    "x y z",
]
WEIGHTS = "café\t5\nnaïve\t2\nw1\t7\n"
STOP = "the a\n"
MARKS = "über w2\n"
SPECIAL_KINDS = ("at", "split", "map-task", "combiner", "reduce-task", "reduce-task-keys")
"""The keys of Tagged's output that are not words (``at:<url>:<offset>``, ...)."""
OPTIONS = {"factor": 3, "scale": 0.5, "upper": True, "tags": ["x", "y"]}
PARAMS = ["-p", "factor=3", "-p", "scale=0.5", "-p", "upper=yes", "-p", "tags=x,y"]
"""As given on the command line (``marks``, a File option, is given apart)."""

GOOD_LINES = ["naïve café", "the quick brown fox", "a bb ccc dddd", "fox fox dog", "日本語 text"]
BAD_LINES = [b"caf\xe9 au lait", b"\xff\xfe odd start", b"end \xc3"]


def latin1_texts() -> dict[str, bytes]:
    """Two objects of two splits each (at a 200-byte split size), one of a single split and
    a gzip one (one task whatever its size), in Latin-1: none of them is valid UTF-8. The
    text of each, as it is read (decompressed)."""
    sizes = {"latin1/0.txt": 14, "latin1/1.txt": 14, "latin1/2.txt": 5, "latin1/3.txt.gz": 9}
    return {
        key: "".join(
            f"{LATIN1_LINES[(i + j) % len(LATIN1_LINES)]} w{j % 4}\n" for j in range(n)
        ).encode("latin-1")
        for i, (key, n) in enumerate(sizes.items())
    }


def latin1_objects() -> dict[str, bytes]:
    """The objects as stored."""
    return {
        key: gzip.compress(text, mtime=0) if key.endswith(".gz") else text
        for key, text in latin1_texts().items()
    }


def utf8_objects() -> dict[str, bytes]:
    """UTF-8 text with a line that does not decode every fourth line."""
    return {
        f"utf8/{i}.txt": b"".join(
            (BAD_LINES[(i + j) % 3] if j % 4 == 1 else GOOD_LINES[(i + j) % 5].encode()) + b"\n"
            for j in range(12)
        )
        for i in range(2)
    }


def raw_objects() -> dict[str, bytes]:
    return {
        "raw/a.txt": b"line one\nline two\n",
        "raw/b.bin": bytes(range(256)) * 3,
        "raw/c.txt.gz": gzip.compress(b"hello\n" * 50, mtime=0),
        "raw/empty": b"",
    }


def lines_at(data: bytes) -> list[tuple[int, bytes]]:
    """``(offset, line)`` of every line of ``data``, line breaks left out."""
    found, pos = [], 0
    for raw in data.split(b"\n")[:-1]:
        found.append((pos, raw))
        pos += len(raw) + 1
    return found


# -- the cluster, the controller, storage ----------------------------------------------------
@pytest.fixture(scope="module")
def api_ns(kube: Any, installed: None) -> Iterator[str]:
    with new_namespace(kube, "api") as name:
        yield name


@pytest.fixture(scope="module")
def api_controller(
    controller_kubeconfig: str, tmp_path_factory: Any
) -> Iterator[ControllerProcess]:
    with running_controller(controller_kubeconfig, tmp_path_factory.mktemp("controller")) as proc:
        yield proc


@pytest.fixture(scope="module")
def store(kube: Any, api_ns: str, minio: Any) -> Any:
    """The bucket with every job's inputs, and the workers' Secret in the namespace."""
    minio.make_bucket(BUCKET)
    s3 = minio.client()
    for key, body in {**latin1_objects(), **utf8_objects(), **raw_objects()}.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    env = minio.env()
    client.CoreV1Api(kube.api_client()).create_namespaced_secret(
        api_ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        ),
    )
    return minio


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: Any) -> Any:
    """The job files, the table ``Tagged`` ships by its ``FILES`` beside it, and elsewhere
    the stop list it is given with ``--file`` and the list its ``File`` option names."""
    path = tmp_path_factory.mktemp("jobs")
    for name, text in (("tagged", TAGGED), ("tops", TOPS), ("digests", DIGESTS)):
        (path / f"{name}.py").write_text(text)
    (path / "weights.tsv").write_text(WEIGHTS)
    (path / "given").mkdir()
    (path / "given" / "stop.txt").write_text(STOP)
    (path / "given" / "marks.txt").write_text(MARKS)
    return path


@dataclass
class Ran:
    """A job run both ways: on the cluster (the resource as it ended, the command's
    stderr) and by ``kubemr run`` (its ``--json`` summary), with both outputs' parts."""

    resource: Obj
    stderr: str
    cluster_parts: dict[str, bytes]
    local_summary: Obj
    local_parts: dict[str, bytes]
    seconds: float

    @property
    def status(self) -> Obj:
        return self.resource["status"]

    def lines(self) -> list[str]:
        return [
            line for part in sorted(self.cluster_parts) for line in
            self.cluster_parts[part].decode().splitlines()
        ]  # fmt: skip


@dataclass
class Api:
    """``python -m kubemr`` as a user runs it: the admin's kubeconfig, MinIO's
    credentials and endpoint in the environment."""

    kube: Any
    ns: str
    minio: Any
    admin: Cluster
    tmp: Any

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KUBERNETES_", "AWS_", "KUBECONFIG"))
        }
        env.update(self.minio.env())
        env["KUBECONFIG"] = self.kube.kubeconfig
        return env

    def kubemr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kubemr", *args],
            capture_output=True, text=True, timeout=400, env=self.env(), cwd=ROOT,
        )  # fmt: skip

    def submit_args(self, job: str, name: str, inputs: str, *more: str) -> list[str]:
        return [
            "submit", job, "--name", name,
            "--input", f"s3://{BUCKET}/{inputs}", "--output", f"s3://{BUCKET}/out/{name}",
            "-n", self.ns, "--storage-secret", SECRET, "--s3-endpoint", self.minio.endpoint,
            "--worker-command", WORKER, *more,
        ]  # fmt: skip

    def both(self, job: str, name: str, inputs: str, *more: str) -> Ran:
        """The job submitted with ``--wait`` (to success), then run locally with the same
        flags on the same objects."""
        started = time.monotonic()
        proc = self.kubemr(*self.submit_args(job, name, inputs, *more, "--wait", "-o", "json"))
        seconds = time.monotonic() - started
        assert proc.returncode == ExitCode.OK, proc.stderr[-4000:]
        resource = json.loads(proc.stdout)
        assert resource["status"]["phase"] == "Succeeded", resource["status"]
        cluster_parts = self.parts(f"out/{name}")

        local = self.tmp / f"local-{name}"
        run = self.kubemr(
            "run", job, "--input", f"s3://{BUCKET}/{inputs}", "--output", str(local),
            "--workers", "2", "--json", "-q", *more,
        )  # fmt: skip
        assert run.returncode == ExitCode.OK, run.stderr[-4000:]
        local_parts = {
            entry: (local / entry).read_bytes()
            for entry in sorted(os.listdir(local))
            if entry.startswith("part-")
        }
        return Ran(
            resource, proc.stderr, cluster_parts, json.loads(run.stdout), local_parts, seconds
        )

    def parts(self, prefix: str) -> dict[str, bytes]:
        s3 = self.minio.client()
        keys = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
        ]
        assert f"{prefix}/_SUCCESS" in keys, keys
        return {
            key.rsplit("/", 1)[1]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            for key in keys
            if key.rsplit("/", 1)[1].startswith("part-")
        }

    def code_objects(self) -> set[str]:
        listed = self.minio.client().list_objects_v2(Bucket=BUCKET, Prefix="_kubemr/code/")
        return {o["Key"] for o in listed.get("Contents", [])}


@pytest.fixture(scope="module")
def api(
    kube: Any, api_ns: str, api_controller: ControllerProcess, store: Any, tmp_path_factory: Any
) -> Api:
    return Api(kube, api_ns, store, Cluster(kube, api_ns), tmp_path_factory.mktemp("local"))


def same_as_local(ran: Ran, maps: list[int], reduces: list[int]) -> None:
    """The cluster's part files are the local run's, byte for byte, from a plan of the
    same shape."""
    assert sorted(ran.cluster_parts) == sorted(ran.local_parts)
    for part, data in ran.local_parts.items():
        assert ran.cluster_parts[part] == data, f"{part} differs from kubemr run's"
    steps = ran.status["plan"]["steps"]
    assert [s["maps"] for s in steps] == maps, steps
    assert [s["reducers"] for s in steps] == reduces, steps
    local = ran.local_summary["steps"]
    assert [(s["maps"], s["reduces"]) for s in local] == list(zip(maps, reduces))
    assert ran.status["result"]["recordsOut"] == ran.local_summary["output"]["records"]


# -- options, files, class hooks, record origin, Latin-1, tsv ------------------------------------
def test_a_bad_option_is_refused_before_anything_is_created(api: Api, jobs: Any) -> None:
    before = api.code_objects()
    cases = (
        (["-p", "factor=lots"], "kubemr: --param: invalid option factor='lots' of Tagged: input"),
        ([], "kubemr: --param: option factor of Tagged is required: give --param factor="),
    )
    for params, start in cases:
        proc = api.kubemr(
            *api.submit_args(
                str(jobs / "tagged.py"), "tagged-bad", "latin1/", "--wait",
                "--file", str(jobs / "given" / "stop.txt"), *params,
            )
        )  # fmt: skip
        assert proc.returncode == ExitCode.USAGE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(start), proc.stderr
    assert not api.admin.exists("tagged-bad")
    assert api.code_objects() == before  # nothing uploaded either


def test_options_files_class_hooks_and_record_origin_on_latin1_input(api: Api, jobs: Any) -> None:
    ran = api.both(
        str(jobs / "tagged.py"), "tagged", "latin1/",
        "--encoding", "latin-1", "--output-format", "tsv", "--split-size", "200",
        "--reducers", "2", "--file", str(jobs / "given" / "stop.txt"), *PARAMS,
        "-p", f"marks={jobs / 'given' / 'marks.txt'}",
    )  # fmt: skip
    stored = {f"s3://{BUCKET}/{key}": data for key, data in latin1_objects().items()}
    objects = {f"s3://{BUCKET}/{key}": text for key, text in latin1_texts().items()}
    same_as_local(ran, maps=[6], reduces=[2])
    maps = ran.status["plan"]["steps"][0]["maps"]

    # tsv: mrjob's JSONProtocol, ASCII only, one pair per line.
    pairs: list[tuple[str, Any]] = []
    for line in ran.lines():
        assert line.isascii(), line
        key, value = line.split("\t")
        pairs.append((json.loads(key), json.loads(value)))
    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for key, value in pairs:
        kind = key.split(":", 1)[0] if ":" in key else key
        by_kind.setdefault(kind if kind in SPECIAL_KINDS else "word", []).append((key, value))

    # What every task saw: the options typed, the three files' contents.
    seen = {
        "options": [[name, type(v).__name__, v] for name, v in OPTIONS.items()],
        "files": [hashlib.sha256(text.encode()).hexdigest() for text in (WEIGHTS, STOP, MARKS)],
    }
    map_tasks = dict(by_kind["map-task"])
    assert len(map_tasks) == maps
    assert all({k: v for k, v in t.items() if k != "lines"} == seen for t in map_tasks.values())
    # One per reduce task, which reads no input file: no input_file, no Hadoop variables.
    assert [v for _, v in by_kind["reduce-task"]] == [{**seen, "origin": [None, False]}] * 2
    [(_, (applications, combiner_seen))] = by_kind["combiner"]
    assert applications == maps and combiner_seen == [seen]  # once per map task

    # Each map task was told its object's s3:// URL and its split, which cover each
    # object once (a gzip object: one task, its stored size); the records' offsets are
    # their first bytes in the object (in the decompressed text of a gzip object).
    splits: dict[str, list[tuple[int, int]]] = {}
    for key, (variable, hadoop1, length) in by_kind["split"]:
        url, start = key.removeprefix("split:").rsplit(":", 1)
        assert variable == hadoop1 == url
        splits.setdefault(url, []).append((int(start), int(start) + length))
        assert f"map-task:{url}:{start}" in map_tasks
    assert sorted(splits) == sorted(objects)
    lines_by_object = Counter[str]()
    for key, task in map_tasks.items():
        lines_by_object[key.removeprefix("map-task:").rsplit(":", 1)[0]] += task["lines"]
    for url, data in objects.items():
        ranges = sorted(splits[url])
        assert ranges[0][0] == 0 and ranges[-1][1] == len(stored[url]), ranges
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges)), ranges
        assert lines_by_object[url] == data.count(b"\n")
    assert len(splits[f"s3://{BUCKET}/latin1/0.txt"]) == 2  # a second split's offsets are not 0
    assert len(splits[f"s3://{BUCKET}/latin1/3.txt.gz"]) == 1
    assert dict(by_kind["at"]) == {
        f"at:{url}:{offset}": line.decode("latin-1")
        for url, data in objects.items()
        for offset, line in lines_at(data)
    }

    # The words: decoded as Latin-1, less the stop list, counted by the factor, weighed by
    # the table, scaled, those in the File option's list marked.
    weights = {w: int(n) for w, n in (row.split("\t") for row in WEIGHTS.splitlines())}
    counts = Counter[str]()
    for data in objects.values():
        for word in data.decode("latin-1").split():
            if word not in STOP.split():
                counts[word.upper()] += OPTIONS["factor"]
    marked = set(MARKS.split())
    assert dict(by_kind["word"]) == {
        (f"{word}*" if word.lower() in marked else word): n
        * weights.get(word.lower(), 1)
        * OPTIONS["scale"]
        for word, n in counts.items()
    }
    assert "CAFÉ" in counts and "ÜBER" in counts and "W2" in counts
    keys = [v for _, v in by_kind["reduce-task-keys"]]
    assert len(keys) == 2 and sum(keys) == len({k for k, _ in pairs}) - 2
    print(f"\ntagged: submitted to succeeded in {ran.seconds:.1f}s")


# -- two steps with MRStep hooks, undecodable lines, json-value -----------------------------------
def test_two_steps_with_step_hooks_on_undecodable_input(api: Api, jobs: Any) -> None:
    ran = api.both(
        str(jobs / "tops.py"), "tops", "utf8/",
        "--decode-errors", "replace", "--output-format", "json-value", "--split-size", "4Ki",
        "--reducers", "2", "-p", "top=2",
    )  # fmt: skip
    same_as_local(ran, maps=[2, 2], reduces=[2, 2])
    objects = utf8_objects()
    undecodable = 0
    words = Counter[str]()
    for data in objects.values():
        for _, raw in lines_at(data):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                undecodable += 1
            words.update(raw.decode("utf-8", "replace").split())
    assert undecodable == 6

    # The count of lines decoded with the fallback is in the status and the summary.
    counters = ran.status["result"]["counters"]["kubemr"]
    assert counters[UNDECODABLE_LINES] == undecodable
    assert ran.local_summary["counters"]["kubemr"][UNDECODABLE_LINES] == undecodable
    assert f"kubemr: {undecodable} input lines did not decode" in ran.stderr, ran.stderr

    values = [json.loads(line) for line in ran.lines()]
    assert all(json.dumps(v) == line for v, line in zip(values, ran.lines()))  # json-value
    tops = {v["length"]: v["top"] for v in values if "length" in v}
    by_length: dict[int, list[tuple[int, str]]] = {}
    for word, n in words.items():
        by_length.setdefault(len(word), []).append((-n, word))
    assert tops == {
        length: [[w, -n] for n, w in sorted(found)[:2]] for length, found in by_length.items()
    }
    assert words["caf\ufffd"] == 2 and tops[1] == [["a", 4], ["\ufffd", 2]]  # "end \xc3"
    totals = {v["counter"]: v["total"] for v in values if "counter" in v}
    assert totals == {
        "#map-tasks": 2,
        "#lines": sum(data.count(b"\n") for data in objects.values()),
        "#combiner-applications": 2,  # once per map task: its output fits in its buffer
        "#reduce-tasks": 2,
        "#distinct-words": len(words),
        "#step-2-map-tasks": 2,
    }
    reduce_tasks = [v["reduce-task"] for v in values if "reduce-task" in v]
    assert len(reduce_tasks) == 2 and sum(t["lengths"] for t in reduce_tasks) == len(tops)
    assert {t["top"] for t in reduce_tasks} == {"int"}
    print(f"\ntops: submitted to succeeded in {ran.seconds:.1f}s")


# -- whole objects, an output protocol of the job's own -------------------------------------------
def test_mapper_raw_over_several_objects(api: Api, jobs: Any) -> None:
    ran = api.both(str(jobs / "digests.py"), "digests", "raw/", "--reducers", "1")
    objects = {f"s3://{BUCKET}/{key}": data for key, data in raw_objects().items()}
    same_as_local(ran, maps=[len(objects)], reduces=[1])
    rows = {key: json.loads(value) for key, value in csv.reader(ran.lines())}
    assert rows == {
        **{
            url: [
                hashlib.sha256(data).hexdigest(), len(data), url.rsplit("/", 1)[1], [url, url]
            ]
            for url, data in objects.items()
        },
        "~files": len(objects),
        "~bytes": sum(len(data) for data in objects.values()),
    }  # fmt: skip
    assert ran.resource["status"]["result"]["counters"]["kubemr"]["map_input_records"] == 4
    print(f"\ndigests: submitted to succeeded in {ran.seconds:.1f}s")
