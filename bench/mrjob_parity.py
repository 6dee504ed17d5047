"""mrjob's own example jobs against their kubemr ports (examples/mrjob/), on the same input.

    python -m bench.mrjob_parity [--size 4MB] [--workers N] [--reducers R] [--repeat 1]
                                 [--runner local|inline] [--ports wc,grep,...] [--keep]

Each original runs from the installed mrjob package (``python -m mrjob.examples.mr_wc -r
local ...``) in a virtualenv of its own outside the checkout (mrjob 0.7.4, and warcio for
the phone-to-URL job; created on first use as ``$KUBEMR_CACHE/mrjob-venv``, by default
~/.cache/kubemr/mrjob-venv): mrjob is never a dependency of kubemr. Each port runs with
``python -m kubemr run``, with ``--output-format tsv`` where mrjob writes its default
output (JSON key, tab, JSON value); floats may differ in their last bits where a sum's
order does. Both outputs are parsed into records and compared as multisets
(the order of part files differs); a mismatch shows the first difference. Prints a table
of the median wall times and the ratio mrjob/kubemr. A port whose file does not exist is
"missing"; the run goes on with the others. mrjob's ``inline`` runner cannot run a shell
command as a step, so the grep job runs with ``-r local`` whatever ``--runner`` says.

Inputs, generated in a temporary directory: the sample books repeated to ``--size``
(three files, so per-file jobs see several), small WET files with phone numbers for the
phone-to-URL job, and examples/mrjob/data/docs for the text classifier.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from kubemr.sizes import parse_size

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PORTS = os.path.join(ROOT, "examples", "mrjob")
BOOKS = os.path.join(ROOT, "examples", "data", "books")
DOCS = os.path.join(PORTS, "data", "docs")
CACHE = os.environ.get("KUBEMR_CACHE", os.path.expanduser("~/.cache/kubemr"))
VENV = os.path.join(CACHE, "mrjob-venv")
PACKAGES = ["mrjob==0.7.4", "setuptools", "PyYAML", "warcio"]  # 0.7.4 imports pkg_resources
GREP_EXPRESSION = "whale"
SAMPLE_SIZE = 100


@dataclass
class Port:
    """One mrjob example and its port: how each runs and how its output reads."""

    name: str  # the port's file, without .py
    module: str  # mrjob.examples.<module>
    data: str  # "text", "wet" or "docs"
    output: str  # "pairs" (JSON key TAB JSON value), "values" (JSON) or "lines" (raw)
    mrjob_args: list[str] = field(default_factory=list)
    kubemr_args: list[str] = field(default_factory=list)
    sample: bool = False  # a random sample: compared by size and membership, not equality
    local: bool = False  # a shell-command step: mrjob's inline runner cannot run it


PORT_LIST = [
    Port("word_freq_count", "mr_word_freq_count", "text", "pairs"),
    Port("most_used_word", "mr_most_used_word", "text", "values"),
    Port("next_word_stats", "mr_next_word_stats", "text", "pairs"),
    Port("grep", "mr_grep", "text", "lines",
         ["-e", GREP_EXPRESSION], ["-p", f"expression={GREP_EXPRESSION}"], local=True),
    Port("wc", "mr_wc", "text", "pairs"),
    Port("count_lines", "mr_count_lines_right", "text", "pairs"),
    Port("count_lines_by_file", "mr_count_lines_by_file", "text", "pairs"),
    Port("log_sampler", "mr_log_sampler", "text", "lines",
         ["--sample-size", str(SAMPLE_SIZE)], ["-p", f"sample_size={SAMPLE_SIZE}"],
         sample=True),
    Port("phone_to_url", "mr_phone_to_url", "wet", "pairs"),
    Port("text_classifier", "mr_text_classifier", "docs", "pairs"),
]  # fmt: skip


# --------------------------------------------------------------------------- mrjob's venv
def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def ensure_venv(venv: str) -> str:
    """mrjob's virtualenv, created (or completed) if it cannot import what is needed."""
    python = venv_python(venv)
    probe = [python, "-c", "import mrjob, pkg_resources, warcio; print(mrjob.__version__)"]
    if os.path.exists(python):
        found = subprocess.run(probe, capture_output=True, text=True, env=clean_env())
        if found.returncode == 0 and found.stdout.strip() == "0.7.4":
            return python
    print(f"setting up mrjob in {venv} ...", file=sys.stderr)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *PACKAGES], check=True, env=clean_env()
    )
    subprocess.run(probe, check=True, capture_output=True, env=clean_env())
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the signs of kubemr's own virtualenv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- inputs
def make_text(directory: str, size: int) -> list[str]:
    """The three sample books, each repeated to a third of ``size``: their paths."""
    os.makedirs(directory)
    paths = []
    for name in sorted(os.listdir(BOOKS)):
        with open(os.path.join(BOOKS, name), encoding="utf-8") as fh:
            text = fh.read()
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text * max(1, size // 3 // len(text)))
        paths.append(path)
    return paths


def make_wet(directory: str, size: int, seed: int = 7) -> list[str]:
    """Four WET files (plain-text conversion records, as Common Crawl's) of pages with
    U.S. phone numbers in several spellings, on hosts of a few sizes."""
    from warcio.warcwriter import WARCWriter

    os.makedirs(directory)
    rng = random.Random(seed)
    hosts = [f"shop{i}.example.com" for i in range(40)] + ["directory.example.org"]
    spellings = ["{a}-{b}-{c}", "({a}) {b}-{c}", "{a}.{b}.{c}", "1-{a}-{b}-{c}", "+1 {a} {b} {c}"]
    words = ["call", "us", "today", "for", "a", "quote", "open", "daily", "visit", "our"]
    paths = []
    for f in range(4):
        path = os.path.join(directory, f"crawl-{f}.warc.wet")
        with open(path, "wb") as fh:
            writer = WARCWriter(fh, gzip=False)
            while fh.tell() < size // 4:
                host = rng.choice(hosts)
                url = f"http://{host}/page/{rng.randrange(500)}"
                phones = 30 if host.startswith("directory") else rng.randint(0, 3)
                parts = [" ".join(rng.choices(words, k=12))]
                for _ in range(phones):
                    number = {
                        "a": rng.randrange(200, 1000),
                        "b": rng.randrange(100, 1000),
                        "c": f"{rng.randrange(10000):04d}",
                    }
                    parts.append(rng.choice(spellings).format(**number))
                    parts.append(" ".join(rng.choices(words, k=6)))
                payload = "\n".join(parts).encode()
                record = writer.create_warc_record(
                    url, "conversion", payload=io.BytesIO(payload), warc_content_type="text/plain"
                )
                writer.write_record(record)
        paths.append(path)
    return paths


def make_docs(directory: str) -> list[str]:
    """The text classifier's documents: one file per document, its name its labels."""
    shutil.copytree(DOCS, directory)
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory))]


# --------------------------------------------------------------------------- running
def mrjob_command(python: str, port: Port, inputs: list[str], out: str, args) -> list[str]:
    runner = "local" if port.local else args.runner
    return [python, "-m", f"mrjob.examples.{port.module}", "-r", runner, "--no-conf",
            *(["--num-cores", str(args.workers)] if runner == "local" else []),
            "--jobconf", f"mapreduce.job.reduces={args.reducers}",
            *port.mrjob_args, *inputs, "--output-dir", out, "--no-cat-output"]  # fmt: skip


def kubemr_command(port: Port, inputs: list[str], out: str, args) -> list[str]:
    return [sys.executable, "-m", "kubemr", "run", os.path.join(PORTS, f"{port.name}.py"),
            *(f"--input={i}" for i in inputs), "--output", out, "--quiet",
            "--workers", str(args.workers), "--reducers", str(args.reducers),
            # mrjob's default output, JSONProtocol; the other formats are the job's own
            *(["--output-format", "tsv"] if port.output == "pairs" else []),
            *port.kubemr_args]  # fmt: skip


def timed(cmd: list[str], out: str, env: dict[str, str]) -> float:
    """Wall seconds of one run of ``cmd`` writing to ``out`` (removed first)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {proc.returncode}:\n{tail}")
    return elapsed


# --------------------------------------------------------------------------- outputs
def output_lines(out: str) -> list[str]:
    lines = []
    for name in sorted(os.listdir(out)):
        if name.startswith("part-"):
            with open(os.path.join(out, name), encoding="utf-8") as fh:
                lines.extend(fh.read().splitlines())
    return lines


def parse(line: str, kind: str) -> object:
    if kind == "pairs":
        key, _, value = line.partition("\t")
        return [json.loads(key), json.loads(value)]
    if kind == "values":
        return json.loads(line)
    return line


def normalise(record: object, port: Port) -> object:
    """What stays the same between the two: mrjob names a local input file by its
    ``file://`` URL, kubemr by its path (both given here as absolute paths)."""
    if port.name == "count_lines_by_file" and isinstance(record, list):
        key = record[0]
        if isinstance(key, str) and key.startswith("file://"):
            return [key[len("file://") :], record[1]]
    return record


def canonical(record: object) -> str:
    return json.dumps(record, sort_keys=True)


def compare(port: Port, mrjob_out: str, kubemr_out: str, inputs: list[str]) -> tuple[bool, str]:
    """Whether the two outputs agree, and how: "equal", or their first difference."""
    theirs = output_lines(mrjob_out)
    ours = output_lines(kubemr_out)
    if port.sample:
        lines: Counter = Counter()
        for path in inputs:
            with open(path, encoding="utf-8") as fh:
                lines.update(fh.read().splitlines())
        for who, sample in (("mrjob", theirs), ("kubemr", ours)):
            if len(sample) != SAMPLE_SIZE or Counter(sample) - lines:
                return False, f"{who}'s sample is not {SAMPLE_SIZE} lines of the input"
        return True, f"both {SAMPLE_SIZE} input lines (random)"
    try:
        a = sorted((normalise(parse(x, port.output), port) for x in theirs), key=canonical)
    except ValueError as exc:
        return False, f"DIFFERENT: mrjob's output does not read as {port.output}: {exc}"
    try:
        b = sorted((normalise(parse(x, port.output), port) for x in ours), key=canonical)
    except ValueError as exc:
        return False, f"DIFFERENT: kubemr's output does not read as {port.output}: {exc}"
    records = f"{len(a)} record{'' if len(a) == 1 else 's'}"
    if a == b:
        same_bytes = sorted(theirs) == sorted(ours)
        return True, f"equal ({records}{', same bytes' if same_bytes else ''})"
    if len(a) == len(b) and all(close(x, y) for x, y in zip(a, b)):
        # a sum of floats depends on the order the values reach the reducer, which
        # neither engine promises
        return True, f"equal up to float rounding ({records})"
    for i, (x, y) in enumerate(zip(a, b)):
        if not close(x, y):
            return False, (
                f"DIFFERENT at record {i}: mrjob {canonical(x)[:60]} kubemr {canonical(y)[:60]}"
            )
    return False, f"DIFFERENT: mrjob {len(a)} records, kubemr {len(b)}"


def close(x: object, y: object) -> bool:
    """Equal, but for floats that differ in their last bits."""
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(close(i, j) for i, j in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    return x == y


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4MB", help="size of the text input (default 4MB)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reducers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per job; the median counts")
    parser.add_argument("--runner", choices=("local", "inline"), default="local")
    parser.add_argument("--ports", help="comma-separated port names (default: all ten)")
    parser.add_argument("--venv", default=VENV, help=f"mrjob's virtualenv (default {VENV})")
    parser.add_argument("--keep", action="store_true", help="keep the data and outputs")
    args = parser.parse_args(argv)

    ports = PORT_LIST
    if args.ports:
        wanted = args.ports.split(",")
        unknown = set(wanted) - {p.name for p in PORT_LIST}
        if unknown:
            parser.error(f"unknown ports {sorted(unknown)}; known: {[p.name for p in PORT_LIST]}")
        ports = [p for p in PORT_LIST if p.name in wanted]
    python = ensure_venv(args.venv)
    size = parse_size(args.size)

    root = tempfile.mkdtemp(prefix="mrjob-parity-")
    scratch = os.path.join(root, "tmp")
    os.makedirs(scratch)
    env = clean_env(TMPDIR=scratch)
    rows: list[tuple[str, str, str, str, str]] = []
    failed = False
    try:
        data: dict[str, list[str]] = {}
        print(f"data in {root}: text {args.size}, {args.workers} workers, "
              f"{args.reducers} reducers, mrjob -r {args.runner}", file=sys.stderr)  # fmt: skip
        for port in ports:
            path = os.path.join(PORTS, f"{port.name}.py")
            if not os.path.exists(path):
                rows.append((port.name, "", "", "", "missing"))
                print(f"{port.name}: missing", file=sys.stderr)
                continue
            if port.data not in data:
                where = os.path.join(root, port.data)
                data[port.data] = (
                    make_text(where, size) if port.data == "text"
                    else make_wet(where, max(size // 4, 64 * 1024)) if port.data == "wet"
                    else make_docs(where)
                )  # fmt: skip
            inputs = data[port.data]
            theirs = os.path.join(root, "out", port.name, "mrjob")
            ours = os.path.join(root, "out", port.name, "kubemr")
            try:
                t_mrjob = statistics.median(
                    timed(mrjob_command(python, port, inputs, theirs, args), theirs, env)
                    for _ in range(args.repeat)
                )
                t_kubemr = statistics.median(
                    timed(kubemr_command(port, inputs, ours, args), ours, env)
                    for _ in range(args.repeat)
                )
            except RuntimeError as exc:
                rows.append((port.name, "", "", "", "FAILED: " + str(exc).splitlines()[0]))
                failed = True
                print(f"{port.name}: {exc}", file=sys.stderr)
                continue
            agree, verdict = compare(port, theirs, ours, inputs)
            failed = failed or not agree
            rows.append((port.name, f"{t_mrjob:.2f}", f"{t_kubemr:.2f}",
                         f"{t_mrjob / t_kubemr:.2f}", verdict))  # fmt: skip
            print(f"{port.name}: {verdict}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    header = ("port", "mrjob s", "kubemr s", "mrjob/kubemr", "output")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
