"""Text that is not UTF-8: ``--encoding`` (any Python codec, UTF-16 and UTF-32 too),
``--decode-errors`` (a fallback per line, counted), undecodable lines as bad records,
the ``bytes`` format (lines undecoded), and standard input (``-i -``) for the local
runner. Real files, read through the real local runner and checked against plain
Python."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from kubemr import spec
from kubemr.cli import app
from kubemr.crd import crd_manifest
from kubemr.errors import BadRecordError, KubemrError, OptionError
from kubemr.formats import (
    BYTES,
    CSV,
    DECODE_ERRORS,
    TEXT,
    UNDECODABLE_LINES,
    Split,
    SplitReader,
    check_encoding,
    read_csv_header,
)
from kubemr.storage.local import LocalStore
from tests.jobfiles import job_file, read_pairs, run_file


def raw_lines(data: bytes) -> list[bytes]:
    """A file's lines as bytes: split at ``\\n``, a ``\\r`` before it dropped (a last
    line with no ``\\n`` keeps its ``\\r``)."""
    lines = data.split(b"\n")
    last = lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return [*lines, last] if last else lines


LINES = """
    import kubemr


    class Lines(kubemr.MapReduce):
        # Each line as it reached the mapper, with how often: map-side counting.
        combiner = reducer = kubemr.SUM

        def mapper(self, line):
            if isinstance(line, bytes):
                line = "bytes:" + line.hex()
            elif any("\\udc80" <= c <= "\\udcff" for c in line):  # surrogateescape'd
                line = "escaped:" + line.encode("utf-8", "surrogateescape").hex()
            yield line, 1
"""


def shown(line: str | bytes) -> str:
    """What the ``Lines`` job writes for a line."""
    if isinstance(line, bytes):
        return "bytes:" + line.hex()
    if any("\udc80" <= c <= "\udcff" for c in line):
        return "escaped:" + line.encode("utf-8", "surrogateescape").hex()
    return line


def counted(out: Path) -> dict[str, int]:
    return dict(read_pairs(out))


# -- --encoding ------------------------------------------------------------------------------

WORDS = ["café", "naïve", "€uro", "Œuvre", "plain", "”quoted“", "ßtraße"]


def cp1252_text(n: int) -> str:
    return "".join(
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(i % 5)) + "\n" for i in range(n)
    )


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_legacy_encoding(tmp_path: Path, encoding: str) -> None:
    text = cp1252_text(500)
    if encoding == "latin-1":
        text = text.translate({ord(c): "?" for c in "€Œ”“"})
    (tmp_path / "in.txt").write_bytes(text.replace("\n", "\r\n").encode(encoding))
    (tmp_path / "in2.txt.gz").write_bytes(gzip.compress(text.encode(encoding)))
    out = tmp_path / "out"
    summary = run_file(
        job_file(tmp_path, LINES),
        inputs=[str(tmp_path / "in.txt"), str(tmp_path / "in2.txt.gz")],
        output=str(out),
        encoding=encoding,
        split_size="2KiB",
    )
    assert counted(out) == dict(Counter(text.splitlines() * 2))
    assert summary["tasks"]["map"] > 3  # cut at byte ranges like UTF-8
    assert UNDECODABLE_LINES not in summary["counters"]["kubemr"]


def utf16_text() -> str:
    # ਅ一 is 05 0A 00 4E in UTF-16LE: a 0A 00 that is no line break.
    return "".join(f"line {i} ਅ一 {'naïve ' * (i % 3)}😀\n" for i in range(300)) + "no newline"


@pytest.mark.parametrize(
    ("encoding", "codec"),
    [
        ("utf-16", "utf-16"),
        ("utf-16", "utf-16-be-bom"),
        ("utf-16-be", "utf-16-be"),
        ("utf-32", "utf-32"),
    ],
)
def test_utf16_and_utf32_files_are_read_whole(tmp_path: Path, encoding: str, codec: str) -> None:
    text = utf16_text().replace("\n", "\r\n")
    if codec == "utf-16-be-bom":  # a big-endian file named by its byte-order mark
        data = codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    else:
        data = text.encode(codec)
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    summary = run_file(
        job_file(tmp_path, LINES),
        inputs=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")],
        output=str(out),
        encoding=encoding,
        split_size="1KiB",
    )
    assert counted(out) == dict(Counter(utf16_text().split("\n") * 2))
    assert summary["tasks"]["map"] == 2  # one task per file, whatever the split size


CSV_JOB = """
    import kubemr


    class Columns(kubemr.MapReduce):
        INPUT_FORMAT = "csv"
        reducer = kubemr.SUM

        def mapper(self, row):
            yield [row["name"], row["note"]], 1
"""


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_csv_in_another_encoding(tmp_path: Path, encoding: str) -> None:
    rows = [["name", "note"]] + [
        [f"n€{i}", "a quoted\nline break" if i % 7 == 0 else "ok"] for i in range(200)
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    (tmp_path / "in.csv").write_bytes(buf.getvalue().encode(encoding))
    out = tmp_path / "out"
    run_file(
        job_file(tmp_path, CSV_JOB),
        inputs=[str(tmp_path / "in.csv")],
        output=str(out),
        encoding=encoding,
        split_size=0,
    )
    assert sorted(map(tuple, (k for k, _ in read_pairs(out)))) == sorted(map(tuple, rows[1:]))


# -- --decode-errors ---------------------------------------------------------------------------


def mixed_file(path: Path) -> bytes:
    """UTF-8 with some lines that are not: Latin-1 text, a stray continuation byte, a
    multi-byte character cut short at the end of a line, a CRLF line."""
    lines = []
    for i in range(600):
        if i % 37 == 5:
            lines.append(f"latin-1 line {i}: café naïve".encode("latin-1"))
        elif i % 53 == 7:
            lines.append(b"stray \x80 byte " + str(i).encode())
        elif i % 61 == 9:
            lines.append(b"cut short " + "日".encode()[:2])
        else:
            lines.append(f"utf-8 line {i}: café 日本 😀".encode() + (b"\r" if i % 11 == 0 else b""))
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return data


def decoded_lines(data: bytes, mode: str) -> tuple[list[str], int]:
    """Each line decoded as UTF-8, else with the fallback; and how many needed it."""
    out = []
    bad = 0
    for raw in raw_lines(data):
        try:
            out.append(raw.decode())
        except UnicodeDecodeError:
            bad += 1
            out.append(raw.decode("latin-1") if mode == "latin-1" else raw.decode("utf-8", mode))
    return out, bad


@pytest.mark.parametrize("mode", [m for m in DECODE_ERRORS if m != "strict"])
def test_decode_errors_decode_and_count_each_bad_line(tmp_path: Path, mode: str) -> None:
    data = mixed_file(tmp_path / "mixed.txt")
    (tmp_path / "mixed.txt.gz").write_bytes(gzip.compress(data))
    lines, bad = decoded_lines(data, mode)
    assert bad > 20
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            job_file(tmp_path, LINES),
            "-i",
            str(tmp_path / "mixed.txt"),
            "-i",
            str(tmp_path / "mixed.txt.gz"),
            "-o",
            str(out),
            "--decode-errors",
            mode,
            "--split-size",
            "3KiB",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert counted(out) == dict(Counter(shown(line) for line in lines * 2))
    summary = json.loads(result.stdout)
    assert summary["counters"]["kubemr"][UNDECODABLE_LINES] == 2 * bad
    assert (
        json.loads((out / "_SUCCESS").read_text())["counters"]["kubemr"][UNDECODABLE_LINES]
        == 2 * bad
    )
    assert f"{2 * bad:,} input lines did not decode" in result.stderr


def test_strict_names_the_file_and_byte_and_says_what_to_do(tmp_path: Path) -> None:
    data = mixed_file(tmp_path / "mixed.txt")
    at = 0
    for line in data.split(b"\n"):
        try:
            line.decode()
        except UnicodeDecodeError as exc:
            at += exc.start  # where the first bad sequence starts
            break
        at += len(line) + 1
    # The plan stage's preflight or a task reports it, whichever reads the line first.
    with pytest.raises(KubemrError) as info:
        run_file(
            job_file(tmp_path, LINES),
            inputs=[str(tmp_path / "mixed.txt")],
            output=str(tmp_path / "o"),
        )
    message = str(info.value)
    assert f"mixed.txt: invalid UTF-8 at byte offset {at}:" in message
    for hint in ("--encoding NAME", "--decode-errors replace", "--skip-bad-records N", "iconv"):
        assert hint in message


def test_undecodable_lines_are_bad_records(tmp_path: Path) -> None:
    data = mixed_file(tmp_path / "mixed.txt")
    lines = raw_lines(data)
    good = [line.decode() for line in lines if _strictly(line)]
    bad = [i + 1 for i, line in enumerate(lines) if not _strictly(line)]
    out = tmp_path / "out"
    summary = run_file(
        job_file(tmp_path, LINES),
        inputs=[str(tmp_path / "mixed.txt")],
        output=str(out),
        skip_bad_records=len(bad),
        split_size="3KiB",
    )
    assert counted(out) == dict(Counter(good))
    assert summary["counters"]["kubemr"]["map_bad_records_skipped"] == len(bad)
    examples = summary["bad_records"]["examples"]
    assert examples and all("invalid UTF-8 at byte offset" in e for e in examples)
    named = {int(e.split("mixed.txt:", 1)[1].split(" ", 1)[0]) for e in examples}
    assert named <= set(bad)
    with pytest.raises(KubemrError, match=rf"more than --skip-bad-records {len(bad) - 1} bad"):
        run_file(
            job_file(tmp_path, LINES),
            inputs=[str(tmp_path / "mixed.txt")],
            output=str(tmp_path / "o2"),
            skip_bad_records=len(bad) - 1,
            split_size=0,  # one task reads them all
        )


def _strictly(line: bytes) -> bool:
    try:
        line.decode()
    except UnicodeDecodeError:
        return False
    return True


# -- --format bytes ----------------------------------------------------------------------------


def test_the_bytes_format_gives_lines_undecoded(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + mixed_file(tmp_path / "unused.txt") + b"no final newline\r"
    (tmp_path / "in.bin").write_bytes(data)
    (tmp_path / "in.bin.gz").write_bytes(gzip.compress(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            job_file(tmp_path, LINES),
            "-i",
            str(tmp_path / "in.bin"),
            "-i",
            str(tmp_path / "in.bin.gz"),
            "-o",
            str(out),
            "--format",
            "bytes",
            "--split-size",
            "2KiB",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    # CRLF is one line break, a lone \r at the end stays, the byte-order mark is kept.
    expected = raw_lines(data)
    assert expected[0].startswith(codecs.BOM_UTF8) and expected[-1].endswith(b"\r")
    assert counted(out) == dict(Counter(shown(line) for line in expected * 2))


# -- standard input ----------------------------------------------------------------------------

FAILS_ONCE = """
    import os

    import kubemr


    class FailsOnce(kubemr.MapReduce):
        reducer = kubemr.SUM

        def mapper(self, line):
            yield ["line", line], 1
            yield ["file", self.input_file], 1

        def combiner(self, key, values):
            # The first map attempt to combine fails: its task reads its input again.
            try:
                os.close(os.open(self.params["marker"], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                yield key, sum(values)
            else:
                raise RuntimeError("transient")
"""


@pytest.mark.parametrize("own_work_dir", [False, True])
def test_standard_input_is_spooled_split_and_retried(tmp_path: Path, own_work_dir: bool) -> None:
    lines = [f"from a pipe {i} café" for i in range(3000)]
    out = tmp_path / "out"
    work = tmp_path / "work"
    args = ["run", job_file(tmp_path, FAILS_ONCE), "-i", "-", "-o", str(out)]
    args += ["--split-size", "8KiB", "-p", f"marker={tmp_path / 'marker'}", "--json"]
    if own_work_dir:
        args += ["--work-dir", str(work)]
    result = CliRunner().invoke(app, args, input="\n".join(lines).encode() + b"\n")
    assert result.exit_code == 0, result.output
    pairs = read_pairs(out)
    assert {k[1]: n for k, n in pairs if k[0] == "line"} == dict(Counter(lines))
    [spooled] = [k[1] for k, _ in pairs if k[0] == "file"]
    assert spooled.endswith("/stdin")
    summary = json.loads(result.stdout)
    assert summary["tasks"]["map"] > 4 and summary["attempts"]["failed"] == 1
    assert not os.path.exists(spooled)  # removed with the job
    if own_work_dir:
        assert work.is_dir()
    else:
        assert not os.path.exists(os.path.dirname(os.path.dirname(spooled)))


def test_standard_input_once_and_not_on_kubernetes(tmp_path: Path) -> None:
    path = job_file(tmp_path, FAILS_ONCE)
    result = CliRunner().invoke(
        app, ["run", path, "-i", "-", "-i", "-", "-o", str(tmp_path / "o")], input=b"x\n"
    )
    assert result.exit_code == 2 and "standard input (-i -) can be named once" in result.output
    result = CliRunner().invoke(
        app, ["submit", path, "-i", "-", "--output", "s3://bucket/out"], input=b"x\n"
    )
    assert result.exit_code == 2
    assert "standard input (-i -) is read by kubemr run only" in result.output
    with pytest.raises(ValueError, match="upload the data"):
        spec.MapReduceJobSpec(inputs=["s3://b/in", "-"], output="s3://b/o", job={"module": "m:J"})
    rules = json.dumps(crd_manifest())
    assert "self.all(i, i != '-')" in rules


# -- the settings ------------------------------------------------------------------------------


def test_the_settings_are_checked_where_they_are_defined() -> None:
    assert get_args(spec.DecodeErrors) == DECODE_ERRORS
    assert {"bytes", "raw"} <= set(get_args(spec.InputFormat))
    ok = spec.LocalOptions.checked(
        inputs=["in"], output="o", encoding="UTF16", decode_errors="replace"
    )
    assert (ok.encoding, ok.decode_errors) == ("UTF16", "replace")
    refused = {
        "nope": "unknown encoding 'nope'",
        "rot13": "not a text encoding",
        "cp037": "does not write a line break as the byte 0x0A",
    }
    for encoding, why in refused.items():
        with pytest.raises(OptionError, match=f"invalid encoding='{encoding}': .*{why}"):
            spec.LocalOptions.checked(inputs=["in"], output="o", encoding=encoding)
    with pytest.raises(OptionError, match=r"invalid decode_errors='surrogateescape'.*utf-32"):
        spec.LocalOptions.checked(
            inputs=["in"], output="o", encoding="utf-32", decode_errors="surrogateescape"
        )
    with pytest.raises(ValueError, match="String should have at most 64 characters"):
        spec.MapReduceJobSpec(
            inputs=["s3://b/in"], output="s3://b/o", job={"module": "m:J"}, encoding="x" * 65
        )
    assert check_encoding("latin-1") == "iso8859-1"


# -- reading, split by split -------------------------------------------------------------------

store = LocalStore()


def read(path: Path, fmt: str = TEXT, **reading: Any) -> list:
    size = path.stat().st_size
    header = (
        read_csv_header(store, str(path), None, reading.get("encoding", "utf-8"))
        if fmt == CSV
        else None
    )
    split = Split(str(path), 0, size, size, fmt, None, header, **reading)
    return [r for chunk in SplitReader(store, split, 64).chunks() for r in chunk.records]


def test_a_utf16_line_break_counts_only_on_a_character_boundary(tmp_path: Path) -> None:
    text = "ਅ一ਅ一\nsecond ਅ\n"
    path = tmp_path / "w.txt"
    path.write_bytes(text.encode("utf-16-le"))
    assert b"\n\x00" in "ਅ一".encode("utf-16-le")[1:]  # a misaligned 0A 00
    assert read(path, encoding="utf-16-le", with_offset=True) == [(0, "ਅ一ਅ一"), (10, "second ਅ")]


def test_a_split_of_a_utf16_file_past_its_start_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_bytes("a\nb\n".encode("utf-16"))
    size = path.stat().st_size
    split = Split(str(path), 4, size, size, TEXT, None, None, encoding="utf-16")
    assert list(SplitReader(store, split).chunks()) == []


def test_undecodable_bytes_in_utf16_with_replace(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_bytes("ok\n".encode("utf-16-le") + b"\x00\xd8\n\x00" + "end".encode("utf-16-le"))
    reader = SplitReader(
        store,
        Split(
            str(path),
            0,
            12,
            path.stat().st_size,
            TEXT,
            encoding="utf-16-le",
            decode_errors="replace",
        ),
    )
    assert [r for c in reader.chunks() for r in c.records] == ["ok", "\ufffd", "end"]
    assert reader.undecodable_lines == 1
    with pytest.raises(BadRecordError, match=r"w\.txt: invalid utf-16-le at byte offset 6"):
        read(path, encoding="utf-16-le")


def test_bytes_with_offsets(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    path.write_bytes(b"\xff\xfe\n\r\n\x00x\r")
    assert read(path, BYTES, with_offset=True) == [(0, b"\xff\xfe"), (3, b""), (5, b"\x00x\r")]
