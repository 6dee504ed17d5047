"""mrjob's log sampler, phone-to-URL and text classifier examples, ported to kubemr
(``examples/mrjob/``), give the answers of plain single-process Python versions written
here, over several map tasks and reducers.

The log sampler's answer is random: its reference is the set of admissible samples (as
many distinct input lines as asked for, in a random order). The phone-to-URL inputs are
WET files written here with warcio's writer, each phone number placed in a known form;
the text classifier reads the labelled documents of ``examples/mrjob/data/docs``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest

import kubemr
from kubemr.loader import load_job_class

ROOT = Path(__file__).resolve().parents[2]
PORTS = ROOT / "examples" / "mrjob"
DOCS = PORTS / "data" / "docs"


def load(name: str) -> type[kubemr.MapReduce]:
    return load_job_class(str(PORTS / f"{name}.py"))


def run_port(name: str, inputs: list[str], out: Path, **options) -> dict:
    summary = kubemr.run(load(name), inputs=inputs, output=str(out), **options)
    assert summary["status"] == "succeeded"
    assert summary["attempts"]["failed"] == 0
    assert json.loads((out / "_SUCCESS").read_text()) == summary
    return summary


def parts(out: Path) -> list[Path]:
    return sorted(out.glob("part-*"))


def output_lines(out: Path) -> list[str]:
    return [line for part in parts(out) for line in part.read_text("utf-8").splitlines()]


def read_pairs(out: Path, output_format: str) -> list[tuple]:
    """The output pairs. ``tsv``, mrjob's format (JSON key, tab, JSON value), is checked
    byte for byte against what mrjob's ``JSONProtocol`` writes for each pair; ``jsonl``
    is kubemr's default (a ``[key, value]`` array a line)."""
    pairs = []
    for line in output_lines(out):
        if output_format == "tsv":
            key, value = (json.loads(field) for field in line.split("\t"))
            assert line == f"{json.dumps(key)}\t{json.dumps(value)}"
        else:
            key, value = json.loads(line)
        pairs.append((key, value))
    return pairs


# -- log sampler --------------------------------------------------------------------------

LOG_LINES = 2000


def write_log(path: Path) -> list[str]:
    """A log of distinct lines, some with a tab or non-ASCII text (written as they are)."""
    agents = ["curl/8.5", "Mozilla/5.0 (Straße; Zürich)", "bot\tcrawler", "Wget/1.21"]
    lines = [
        f"10.0.{i % 7}.{i % 251} - - [12/Mar/2024:08:{i // 60 % 60:02d}:{i % 60:02d}] "
        f'"GET /item/{i} HTTP/1.1" {200 if i % 13 else 404} {i * 37 % 9000} "{agents[i % 4]}"'
        for i in range(LOG_LINES)
    ]
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return lines


def check_sample(sample: list[str], candidates: list[str], size: int) -> None:
    """``sample`` is an admissible answer: ``min(size, len(candidates))`` distinct
    candidate lines, in no particular order."""
    assert len(sample) == min(size, len(candidates))
    assert len(set(sample)) == len(sample), "a line was sampled twice"
    assert set(sample) <= set(candidates)


@pytest.mark.parametrize("split,workers,reducers", [("16KiB", 2, 3), (None, 1, 1)])
def test_log_sampler_samples_every_line(tmp_path, split, workers, reducers) -> None:
    lines = write_log(tmp_path / "access.log")
    out = tmp_path / "out"
    summary = run_port(
        "log_sampler",
        [str(tmp_path / "access.log")],
        out,
        split_size=split,
        workers=workers,
        reducers=reducers,
        params={"sample_size": 25},
    )
    if split:
        assert summary["tasks"]["map"] > 5
    sample = output_lines(out)
    # without expected_length every line goes to the reducer, under one key (None)
    assert summary["counters"]["kubemr"]["map_output_records"] == LOG_LINES
    assert summary["counters"]["kubemr"]["reduce_input_groups"] == 1
    assert sum(1 for part in parts(out) if part.stat().st_size) == 1
    check_sample(sample, lines, 25)
    # raw values: the lines themselves, with their tabs and UTF-8 text
    assert any("\t" in line for line in sample) or any("Straße" in line for line in sample)
    # the order is the random seeds', not the input's: a sorted sample of 25 from
    # 2,000 lines, or one from one half of the log, has a chance below 1e-7
    positions = [lines.index(line) for line in sample]
    assert positions != sorted(positions)
    assert min(positions) < LOG_LINES // 2 <= max(positions)


def test_log_sampler_expected_length(tmp_path) -> None:
    lines = write_log(tmp_path / "access.log")
    out = tmp_path / "out"
    summary = run_port(
        "log_sampler",
        [str(tmp_path / "access.log")],
        out,
        split_size="16KiB",
        workers=2,
        reducers=2,
        params={"sample_size": 25, "expected_length": LOG_LINES},
    )
    counters = summary["counters"]["kubemr"]
    # each line reaches the reducer with probability 25 * 1.2 / 2000: 30 lines on
    # average (standard deviation 5.4); 5 or 80 lie more than 4.6 deviations away
    candidates = counters["map_output_records"]
    assert 5 <= candidates <= 80
    assert counters["reduce_input_records"] == candidates
    check_sample(output_lines(out), lines, min(25, candidates))


def test_log_sampler_requires_sample_size(tmp_path) -> None:
    write_log(tmp_path / "access.log")
    with pytest.raises(kubemr.KubemrError, match="sample_size"):
        kubemr.run(
            load("log_sampler"), inputs=[str(tmp_path / "access.log")], output=str(tmp_path / "o")
        )
    assert not (tmp_path / "o" / "_SUCCESS").exists()


@pytest.mark.parametrize("how", ["kubemr run", "python"])
def test_log_sampler_usage_lines(tmp_path, how) -> None:
    # the two usage lines of the job file's docstring
    lines = write_log(tmp_path / "access.log")
    job = str(PORTS / "log_sampler.py")
    command = [sys.executable, "-m", "kubemr", "run", job] if how == "kubemr run" else [
        sys.executable, job]  # fmt: skip
    proc = subprocess.run(
        [*command, "-i", "access.log", "-o", "out", "-p", "sample_size=7", "--reducers", "2",
         "--split-size", "32KiB", "--workers", "2"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    check_sample(output_lines(tmp_path / "out"), lines, 7)


# -- phone to URL --------------------------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """A phone number placed in a page: its ten digits, written in one of ``STYLES``."""

    digits: str
    style: str = "dashes"

    def text(self) -> str:
        a, e, n = self.digits[:3], self.digits[3:6], self.digits[6:]
        return STYLES[self.style].format(a=a, e=e, n=n)

    def standard(self) -> str:
        return "+1" + self.digits


STYLES = {
    "dashes": "{a}-{e}-{n}",
    "paren": "({a}) {e}-{n}",
    "dots": "{a}.{e}.{n}",
    "spaces": "{a} {e} {n}",
    "plus": "+1 {a} {e} {n}",
    "one-dash": "1-{a}-{e}-{n}",
    "eleven": "1{a}.{e}.{n}",  # eleven digits with no separator after the 1
}


@dataclass
class Page:
    """A record of a WET file. ``kind``: ``text`` (a conversion record of plain text, the
    only kind the job reads), ``html`` (a conversion record of another type),
    ``response`` (an HTTP response record), ``no-uri`` (a text conversion without
    ``WARC-Target-URI``)."""

    host: str
    path: str
    parts: list = field(default_factory=list)  # str and Phone
    kind: str = "text"

    @property
    def url(self) -> str:
        return f"http://{self.host}{self.path}"

    def text(self) -> str:
        return "".join(p.text() if isinstance(p, Phone) else p for p in self.parts)


def listing(host: str, prefix: str, first: int, count: int, per_page: int) -> list[Page]:
    """Pages of a host listing ``count`` numbers ``prefix`` + 4 digits from ``first``."""
    numbers = [Phone(f"{prefix}{n:04d}", "paren") for n in range(first, first + count)]
    pages = []
    for start in range(0, count, per_page):
        parts: list = ["Listings:\n"]
        for phone in numbers[start : start + per_page]:
            parts += ["Call ", phone, " today.\n"]
        pages.append(Page(host, f"/page/{start // per_page}", parts))
    return pages


def crawl() -> list[list[Page]]:
    """The pages of four WET files: a host's pages may be spread over several files."""
    bakery = [
        Page("www.bakery.example", "/", ["Cakes to order: call ", Phone("4155550134"),
             " (order no. 4155550134, zip 94110)."]),
        Page("www.bakery.example", "/contact", ["Phone ", Phone("4155550134", "dots"),
             ", fax ", Phone("4155550199", "one-dash"), ". Ext 555-0100 for the shop."]),
    ]  # fmt: skip
    return [
        [
            bakery[0],
            Page("pizza.example", "/menu", ["Delivery until late: ",
                 Phone("4155550134", "plus"), "."]),
            Page("harbour-cafe.example", "/about-us", ["Ring ", Phone("6285550101", "spaces"),
                 " to book."]),
            Page("aa.example", "/p1", ["Tel: ", Phone("5105550142", "eleven"), "\n"]),
            Page("skipped.example", "/", ["Call ", Phone("3105550160"), "."], kind="html"),
            *listing("directory.example", "212555", 1000, 600, 100),
            *listing("list.example", "646555", 3000, 500, 125),
        ],
        [
            bakery[1],
            Page("harbour-cafe.example", "/", ["Open daily. ", Phone("6285550102"), "."]),
            Page("dock.example", "/info", ["Harbour master: ", Phone("6285550101", "paren"),
                 "; moorings: ", Phone("6285550103"), "."]),
            Page("skipped.example", "/r", ["<p>Call ", Phone("3105550161"), "</p>"],
                 kind="response"),
        ],
        [
            Page("bb.example", "/p1", ["Tel: ", Phone("5105550142", "dots"), "\n"]),
            *listing("directory.example", "212555", 1600, 401, 100),
            Page("", "", ["Call ", Phone("3105550162"), "."], kind="no-uri"),
        ],
        [
            *listing("list.example", "646555", 3500, 500, 125),
            Page("www.bakery.example", "/hours", ["We bake from six.\n"]),
        ],
    ]  # fmt: skip


def write_wet(path: Path, pages: list[Page], compress: bool) -> None:
    """A WET file as Common Crawl writes them: a warcinfo record, then a record a page."""
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=compress)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "tests"}))
        for page in pages:
            body = page.text().encode("utf-8")
            if page.kind == "response":
                http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
                record = writer.create_warc_record(page.url, "response", BytesIO(http + body))
            else:
                record = writer.create_warc_record(
                    "" if page.kind == "no-uri" else page.url,
                    "conversion",
                    payload=BytesIO(body),
                    length=len(body),
                    warc_content_type="text/html" if page.kind == "html" else "text/plain",
                )
            writer.write_record(record)


def phone_to_url_reference(pages: list[Page], max_per_host: int = 1000) -> dict[str, str]:
    """Each phone number's URL: among hosts with at most ``max_per_host`` numbers (every
    occurrence counts), the page on the host with the fewest, then the longest URL, then
    the first in code point order (mrjob's sort key ``(count, -len(url), url)``)."""
    found = defaultdict(list)  # host -> [(phone, url)]
    for page in pages:
        if page.kind == "text":
            found[page.host] += [(p.standard(), page.url) for p in page.parts
                                 if isinstance(p, Phone)]  # fmt: skip
    best: dict[str, tuple] = {}
    for occurrences in found.values():
        if len(occurrences) > max_per_host:
            continue
        for phone, url in occurrences:
            rank = (len(occurrences), -len(url), url)
            best[phone] = min(best.get(phone, rank), rank)
    return {phone: rank[2] for phone, rank in best.items()}


@pytest.mark.parametrize("workers,reducers,output_format", [(2, 3, "tsv"), (1, 1, "jsonl")])
def test_phone_to_url(tmp_path, workers, reducers, output_format) -> None:
    files = crawl()
    names = ["a.wet", "b.wet", "c.wet.gz", "d.wet"]
    for name, pages in zip(names, files, strict=True):
        write_wet(tmp_path / name, pages, compress=name.endswith(".gz"))
    with gzip.open(tmp_path / "c.wet.gz") as fh:
        assert fh.read(8) == b"WARC/1.0"  # the job reads it compressed, as warcio does
    out = tmp_path / "out"
    summary = run_port(
        "phone_to_url",
        [str(tmp_path / name) for name in names],
        out,
        workers=workers,
        reducers=reducers,
        output_format=output_format,
    )
    assert summary["steps"][0]["maps"] == len(names)  # one map task per whole file
    pairs = read_pairs(out, output_format)
    got = dict(pairs)
    assert len(got) == len(pairs), "a phone number is output twice"
    expected = phone_to_url_reference([page for pages in files for page in pages])
    assert got == expected
    # what the data is made to show, should the reference itself be wrong
    assert got["+14155550134"] == "http://pizza.example/menu"  # its host has 1 number
    assert got["+16285550101"] == "http://harbour-cafe.example/about-us"  # the longer URL
    assert got["+15105550142"] == "http://aa.example/p1"  # a tie in length
    assert got["+16465553999"] == "http://list.example/page/3"  # 1,000 numbers: kept
    assert not any(phone.startswith("+1212555") for phone in got)  # 1,001: a directory
    assert not any(phone.startswith("+1310555") for phone in got)  # skipped records
    assert len(got) == 1000 + 6


# -- text classifier -----------------------------------------------------------------------

WORD_RE = re.compile(r"[\w']+")


@dataclass
class Doc:
    id: str
    cats: dict[str, bool]
    in_test_set: bool
    ngrams: Counter  # (n, "w1 ... wn") -> occurrences
    totals: dict[int, int]  # n -> number of n-word windows (len(words) - n + 1)


def read_doc(path: Path, max_ngram_size: int, stop_words: set[str], no_test_set: bool) -> Doc:
    text = path.read_text("utf-8")
    doc_id, *labels = path.name.split(".", 1)[0].split("-")
    cats = {label.removeprefix("not_"): not label.startswith("not_") for label in labels}
    in_test = not no_test_set and int(hashlib.sha1(text.encode()).hexdigest()[-1], 16) % 2 == 1
    words = [w.lower() for w in WORD_RE.findall(text) if w.lower() not in stop_words]
    sizes = range(1, max_ngram_size + 1)
    ngrams = Counter(
        (n, " ".join(words[i : i + n])) for n in sizes for i in range(len(words) - n + 1)
    )
    return Doc(doc_id, cats, in_test, ngrams, {n: len(words) - n + 1 for n in sizes})


def classify_reference(
    paths: list[Path],
    min_df: int = 2,
    max_df: int = 10_000_000,
    max_ngram_size: int = 4,
    stop_words: str = "",
    short_doc_threshold: int | None = None,
    no_test_set: bool = False,
) -> tuple[dict, dict, set]:
    """mrjob's length-insensitive naive Bayes over the documents, directly: the documents
    (id -> the job's document fields), the n-gram scores ((n, ngram or None) -> category
    -> score) and the n-grams left out as too common."""
    stop = {s.strip().lower() for s in stop_words.split(",")} if stop_words else set()
    docs = [read_doc(p, max_ngram_size, stop, no_test_set) for p in paths]

    # Training documents: per n-gram, the documents holding it, and per (category,
    # member or not) its occurrences; (n, None) stands for every n-gram of size n.
    df: Counter = Counter()
    tf: dict = defaultdict(Counter)
    for doc in docs:
        if doc.in_test_set:
            continue
        counts = {**doc.ngrams, **{(n, None): t for n, t in doc.totals.items()}}
        for key, count in counts.items():
            df[key] += 1
            for label in doc.cats.items():
                tf[key][label] += count
    kept = [key for key in df if df[key] >= min_df]
    m = len(kept)
    scores = {}
    for key in kept:
        total = tf[(key[0], None)]
        p = {label: (tf[key][label] + 2 / m) / (total[label] + 2) for label in total}
        scores[key] = {
            cat: math.log(p.get((cat, True), 1 / m)) - math.log(p.get((cat, False), 1 / m))
            for cat, _ in total
        }

    # Every document (test ones too) gets the scores of its n-grams but those in more
    # than max_df documents: per category, per size, the occurrence-weighted sum over
    # the number of windows of that size (or short_doc_threshold, or 1 if larger).
    holders = Counter(key for doc in docs for key in doc.ngrams)
    too_common = {key for key, count in holders.items() if count > max_df}
    ngram_scores = {key: s for key, s in scores.items() if key not in too_common}
    out = {}
    for doc in docs:
        sums: dict = defaultdict(lambda: defaultdict(float))
        for key, count in doc.ngrams.items():
            for cat, score in ngram_scores.get(key, {}).items():
                sums[cat][key[0]] += score * count
        cat_to_score = {
            cat: sum(s / max(doc.totals[n], short_doc_threshold or 0, 1) for n, s in by_n.items())
            for cat, by_n in sums.items()
        }
        out[doc.id] = {
            "id": doc.id,
            "cats": doc.cats,
            "in_test_set": doc.in_test_set,
            "cat_to_score": cat_to_score,
        }
    return out, ngram_scores, too_common


def approx_equal(got: dict, expected: dict) -> bool:
    """Category -> score mappings equal, scores to rounding (the job adds them up in the
    order the shuffle gives)."""
    return got.keys() == expected.keys() and all(
        math.isclose(got[k], expected[k], rel_tol=1e-9, abs_tol=1e-12) for k in got
    )


def default_stop_words() -> str:
    return load("text_classifier").Options.model_fields["stop_words"].default


CLASSIFIER_RUNS = [
    pytest.param({}, 2, 3, "tsv", id="defaults"),
    pytest.param(
        {
            "min_df": 1,
            "max_df": 3,
            "max_ngram_size": 2,
            "stop_words": "the, A ,and,in",
            "short_doc_threshold": 30,
            "no_test_set": True,
        },
        1,
        1,
        "jsonl",
        id="options",
    ),
    pytest.param({"min_df": 3, "stop_words": ""}, 2, 2, "tsv", id="no-stop-words"),
]


@pytest.mark.parametrize("params,workers,reducers,output_format", CLASSIFIER_RUNS)
def test_text_classifier(tmp_path, params, workers, reducers, output_format) -> None:
    paths = sorted(DOCS.iterdir())
    out = tmp_path / "out"
    summary = run_port(
        "text_classifier",
        [str(DOCS)],
        out,
        workers=workers,
        reducers=reducers,
        params=params,
        output_format=output_format,
    )
    assert len(summary["steps"]) == 4
    assert summary["steps"][0]["maps"] == len(paths)  # one map task per document
    options = {"stop_words": default_stop_words(), **params}
    docs, ngram_scores, too_common = classify_reference(paths, **options)

    got_docs, got_scores = {}, {}
    for (kind, key), value in read_pairs(out, output_format):
        if kind == "doc":
            assert key not in got_docs
            got_docs[key] = value
        else:
            assert kind == "cat_to_score"
            n, ngram = key
            assert (n, ngram) not in got_scores
            got_scores[(n, ngram)] = value

    assert got_docs.keys() == docs.keys()
    for doc_id, doc in docs.items():
        got = got_docs[doc_id]
        assert list(got) == ["id", "cats", "in_test_set", "cat_to_score"], doc_id
        assert {k: got[k] for k in ("id", "cats", "in_test_set")} == {
            k: doc[k] for k in ("id", "cats", "in_test_set")
        }, doc_id
        assert approx_equal(got["cat_to_score"], doc["cat_to_score"]), (doc_id, got, doc)
    assert got_scores.keys() == ngram_scores.keys()
    for key, scores in ngram_scores.items():
        assert approx_equal(got_scores[key], scores), key

    # each n-gram held by more than max_df documents is counted once, by its repr
    counters = summary["counters"]
    assert counters.get("Exceeded max df", {}) == {repr(key): 1 for key in too_common}
    assert "Document key collision" not in counters
    # what the data is made to show, should the reference itself be wrong
    assert any(d["in_test_set"] for d in docs.values()) != bool(params.get("no_test_set"))
    assert bool(too_common) == ("max_df" in params)
    assert {cat for d in docs.values() for cat in d["cat_to_score"]} == {"cooking", "sailing"}
