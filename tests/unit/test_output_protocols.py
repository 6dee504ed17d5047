"""Output protocols: mrjob's JSONProtocol, JSONValueProtocol, RawValueProtocol and
RawProtocol byte for byte, and a job's own OUTPUT_PROTOCOL, on the real local runner."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import kubemr
from kubemr.cli import app
from kubemr.errors import JobDefinitionError, JobFailed
from kubemr.loader import load_job_class
from kubemr.output import (
    OUTPUT_FORMATS,
    JSONProtocol,
    JSONValueProtocol,
    RawProtocol,
    RawValueProtocol,
    line_encoder,
)

# Pairs as a map-only job writes them, in input order: keys and values of every JSON kind,
# non-ASCII text (escaped by mrjob's json.dumps), characters beyond the BMP, None.
PAIRS = [
    ["café", 1],
    ["日本語", {"naïve": ["ü", 2.5, None, True]}],
    ["emoji 😀", "tab\there"],
    [None, "value only"],
    ["key only", None],
    [None, None],
    [[1, "two"], [3.0, -4]],
    [12, 1e20],
    ['quote " backslash \\', "line\u2028sep"],
]


def mrjob_json_protocol(key, value) -> bytes:
    """mrjob.protocol.StandardJSONProtocol.write on Python 3 (what mrjob's JSONProtocol
    is when neither ujson, rapidjson nor simplejson is installed), plus the newline
    mrjob's job writes after each line."""
    return json.dumps(key).encode("utf_8") + b"\t" + json.dumps(value).encode("utf_8") + b"\n"


def mrjob_json_value_protocol(key, value) -> bytes:
    """mrjob.protocol.StandardJSONValueProtocol.write, and the newline."""
    return json.dumps(value).encode("utf_8") + b"\n"


def mrjob_text_protocol(key, value) -> bytes:
    """mrjob.protocol.TextProtocol.write (RawProtocol on Python 3): the key and the
    value that are not None, joined by a tab; both None is an empty line."""
    return b"\t".join(x.encode("utf_8") for x in (key, value) if x is not None) + b"\n"


JOB = """
    import json

    import kubemr


    class Pairs(kubemr.MapReduce):
        {attrs}

        def mapper(self, line):
            key, value = json.loads(line)
            if isinstance(key, list):
                key = tuple(key)
            yield key, value
"""


def job_file(tmp_path: Path, attrs: str = "pass", name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(JOB.replace("{attrs}", attrs)))
    return str(path)


def pairs_input(tmp_path: Path, pairs: list = PAIRS) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return str(path)


def output_bytes(out: Path) -> bytes:
    names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    return b"".join((out / n).read_bytes() for n in names)


def run_map_only(tmp_path: Path, attrs: str = "pass", **options) -> tuple[bytes, dict]:
    out = tmp_path / "out"
    summary = kubemr.run(
        load_job_class(job_file(tmp_path, attrs)),
        inputs=[pairs_input(tmp_path)],
        output=str(out),
        reducers=0,
        split_size=0,
        **options,
    )
    return output_bytes(out), summary


def keyed(pairs: list) -> list:
    return [(tuple(k) if isinstance(k, list) else k, v) for k, v in pairs]


def test_tsv_is_byte_identical_to_mrjob_json_protocol(tmp_path) -> None:
    data, summary = run_map_only(tmp_path, output_format="tsv")
    assert data == b"".join(mrjob_json_protocol(k, v) for k, v in keyed(PAIRS))
    assert b"\\u00e9" in data and b"\\ud83d\\ude00" in data  # escaped, as json.dumps does
    assert data.isascii()
    assert summary["output"]["format"] == "tsv"
    assert summary["output"]["records"] == len(PAIRS)


def test_tsv_through_the_cli_with_a_reducer(tmp_path) -> None:
    path = job_file(tmp_path, "reducer = kubemr.SUM")
    data = tmp_path / "in.jsonl"
    words = ["é", "b", "日", "é", "b", "é"]
    data.write_text("".join(json.dumps([w, 1]) + "\n" for w in words))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            path,
            "-i",
            str(data),
            "-o",
            str(out),
            "--output-format",
            "tsv",
            "-q",
            "--reducers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    expected = sorted((w, words.count(w)) for w in set(words))
    assert output_bytes(out) == b"".join(mrjob_json_protocol(k, v) for k, v in expected)


@pytest.mark.parametrize(
    "attrs,reference,fmt",
    [
        ('OUTPUT_FORMAT = "json-value"', mrjob_json_value_protocol, "json-value"),
        (
            "from kubemr.output import JSONValueProtocol\n"
            "        OUTPUT_PROTOCOL = JSONValueProtocol",
            mrjob_json_value_protocol,
            "json-value",
        ),
        (
            "from kubemr.output import JSONProtocol\n        OUTPUT_PROTOCOL = JSONProtocol",
            mrjob_json_protocol,
            "tsv",
        ),
    ],
)
def test_json_value_and_json_protocols_from_the_job_class(tmp_path, attrs, reference, fmt):
    data, summary = run_map_only(tmp_path, attrs)
    assert data == b"".join(reference(k, v) for k, v in keyed(PAIRS))
    assert summary["output"]["format"] == fmt


def test_raw_value_writes_the_value_with_str_and_none_as_an_empty_line(tmp_path) -> None:
    data, summary = run_map_only(tmp_path, 'OUTPUT_FORMAT = "raw-value"')
    expected = "".join("\n" if v is None else f"{v}\n" for _, v in keyed(PAIRS))
    assert data == expected.encode("utf-8")
    assert summary["output"]["format"] == "raw-value"
    # For str values it is mrjob's RawValueProtocol (TextValueProtocol) exactly.
    text_only = [(k, v) for k, v in PAIRS if isinstance(v, str)]
    lines = data.decode("utf-8").split("\n")
    for _, v in text_only:
        assert v.encode("utf_8") in [line.encode("utf-8") for line in lines]


def test_text_leaves_out_none_as_mrjob_raw_protocol_does(tmp_path) -> None:
    data, _ = run_map_only(tmp_path, 'OUTPUT_FORMAT = "text"')
    lines = data.decode("utf-8").split("\n")[:-1]
    assert len(lines) == len(PAIRS)  # one line per pair, whatever it holds
    for (k, v), line in zip(keyed(PAIRS), lines, strict=True):
        if isinstance(k, str | type(None)) and isinstance(v, str | type(None)):
            assert (line + "\n").encode("utf-8") == mrjob_text_protocol(k, v)
        else:
            assert line == "\t".join(f"{x}" for x in (k, v) if x is not None)
    assert lines[PAIRS.index([None, None])] == ""  # not "None"
    assert lines[PAIRS.index([None, "value only"])] == "value only"
    assert lines[PAIRS.index(["key only", None])] == "key only"


@pytest.mark.parametrize("protocol", [RawValueProtocol, RawProtocol])
def test_text_formats_refuse_bytes_instead_of_writing_their_repr(protocol) -> None:
    # str(b"caf\xe9") is "b'caf\\xe9'": a text format would write that in place of the
    # bytes, without a word. mrjob's text protocols refuse bytes too.
    with pytest.raises(TypeError, match=r"writes text, and a key or value is bytes: decode"):
        protocol().lines([("k", "fine"), ("k", b"caf\xe9")])
    with pytest.raises(TypeError, match="bytes"):
        protocol().write("k", b"caf\xe9")
    if protocol is RawProtocol:
        with pytest.raises(TypeError, match="bytes"):
            protocol().lines([(b"key", "value")])
    assert protocol().lines([("k", "caf\xe9")]).endswith("caf\xe9\n")


CSV_PROTOCOL = """
    import csv
    import io

    import kubemr


    class CsvProtocol:
        # mrjob style: write returns bytes, without the newline
        def write(self, key, value):
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow([key, value])
            return buf.getvalue().encode("utf_8")


    class Counts(kubemr.MapReduce):
        OUTPUT_PROTOCOL = CsvProtocol
        reducer = kubemr.SUM

        def mapper(self, line):
            for word in line.split():
                yield word, 1
"""


def test_a_job_protocol_class_writes_the_lines(tmp_path) -> None:
    path = tmp_path / "csvjob.py"
    path.write_text(textwrap.dedent(CSV_PROTOCOL))
    data = tmp_path / "in.txt"
    data.write_text('a "b" a,c a\n"b" d\n')
    out = tmp_path / "out"
    summary = kubemr.run(load_job_class(str(path)), inputs=[str(data)], output=str(out), reducers=1)
    assert output_bytes(out) == b'"""b""",2\na,2\n"a,c",1\nd,1\n'
    assert summary["output"]["format"] == "protocol:CsvProtocol"
    # --output-format, when given, is what the job's output is written with.
    out2 = tmp_path / "out2"
    kubemr.run(
        load_job_class(str(path)),
        inputs=[str(data)],
        output=str(out2),
        reducers=1,
        output_format="tsv",
    )
    assert output_bytes(out2).splitlines()[0] == b'"\\"b\\""\t2'


def test_a_failing_job_protocol_fails_the_task_naming_it_and_its_line(tmp_path) -> None:
    path = tmp_path / "csvjob.py"
    path.write_text(
        textwrap.dedent(
            CSV_PROTOCOL.replace(
                "            buf = io.StringIO()",
                "            if key == 'd':\n"
                "                raise ValueError('no d here')  # the protocol's line\n"
                "            buf = io.StringIO()",
            )
        )
    )
    data = tmp_path / "in.txt"
    data.write_text("a b\nc d\n")
    with pytest.raises(JobFailed) as info:
        kubemr.run(
            load_job_class(str(path)),
            inputs=[str(data)],
            output=str(tmp_path / "out"),
            reducers=1,
            max_attempts=1,
        )
    failure = info.value.failure
    assert "CsvProtocol.write raised ValueError: no d here (pair ('d', 1))" in failure.message
    assert "raise ValueError('no d here')  # the protocol's line" in failure.traceback
    assert f'File "{path}"' in failure.traceback


def test_a_protocol_returning_neither_str_nor_bytes_is_named(tmp_path) -> None:
    attrs = (
        "class Bad:\n            def write(self, key, value):\n"
        "                return [key, value]\n        OUTPUT_PROTOCOL = Bad"
    )
    with pytest.raises(JobFailed, match=r"Bad\.write returned \['café', 1\] \(a list\)"):
        run_map_only(tmp_path, attrs, max_attempts=1)


@pytest.mark.parametrize(
    "attrs,error",
    [
        (
            'OUTPUT_FORMAT = "tsv"\n        OUTPUT_PROTOCOL = object',
            "sets both OUTPUT_FORMAT and OUTPUT_PROTOCOL",
        ),
        ("OUTPUT_PROTOCOL = 42", "has no write\\(key, value\\) method"),
    ],
)
def test_protocol_definition_errors(tmp_path, attrs, error) -> None:
    with pytest.raises(JobDefinitionError, match=error):
        run_map_only(tmp_path, attrs)


def test_the_mrjob_names_are_the_same_protocols() -> None:
    assert RawValueProtocol().write("k", "v") == "v"
    assert RawProtocol().write(None, None) == ""
    assert JSONProtocol().write("é", 1) == '"\\u00e9"\t1'
    assert JSONValueProtocol().write("k", ["é"]) == '["\\u00e9"]'
    assert set(OUTPUT_FORMATS) == {"jsonl", "tsv", "text", "json-value", "raw-value"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(json_values, json_values), max_size=6))
def test_each_format_writes_what_its_protocol_writes(pairs) -> None:
    references = {
        "tsv": mrjob_json_protocol,
        "json-value": mrjob_json_value_protocol,
        "jsonl": lambda k, v: (json.dumps([k, v], ensure_ascii=False) + "\n").encode("utf-8"),
    }
    for fmt, reference in references.items():
        assert line_encoder(fmt)(pairs) == b"".join(reference(k, v) for k, v in pairs), fmt
    text_pairs = [(k, v) for k, v in pairs if isinstance(k, str | type(None))]
    text_pairs = [(k, v) for k, v in text_pairs if isinstance(v, str | type(None))]
    encoded = line_encoder("text")(text_pairs)
    assert encoded == b"".join(mrjob_text_protocol(k, v) for k, v in text_pairs)
