"""Tables, ages, durations and ``-o`` output of the cluster commands: pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from kubemr.cli.durations import format_age, format_duration, parse_duration, whole_seconds
from kubemr.cli.output import dump
from kubemr.cli.tables import jobs_table, lookup, render_table
from kubemr.crd import PRINTER_COLUMNS

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def job(name: str, ns: str = "team-a", age: timedelta = timedelta(minutes=4), **status: object):
    created = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "status": status,
    }


def test_render_table_aligns_columns_like_kubectl() -> None:
    text = render_table(
        ["NAME", "PHASE", "AGE"], [["wc", "Running", "4m"], ["long-name", "", "1s"]]
    )
    assert text == (
        "NAME        PHASE     AGE\nwc          Running   4m\nlong-name             1s\n"
    )


def test_jobs_table_has_the_crd_printer_columns() -> None:
    jobs = [
        job("wc", phase="Running", wave="map", progress="3/8", workers=5),
        job("bad", ns="team-b", age=timedelta(hours=3), phase="Failed",
            failure={"reason": "BadInput"}, workers=0),
    ]  # fmt: skip
    text = jobs_table(jobs, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "AGE"]
    assert lines[1].split() == ["wc", "Running", "map", "3/8", "5", "4m"]
    assert lines[2].split() == ["bad", "Failed", "0", "3h"]  # by namespace, then name
    wide = jobs_table(jobs, NOW, wide=True, all_namespaces=True).splitlines()
    assert wide[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "WAVE", "PROGRESS", "WORKERS", "REASON", "AGE",
    ]  # fmt: skip
    assert wide[1].split() == ["team-a", "wc", "Running", "map", "3/8", "5", "4m"]
    assert wide[2].split() == ["team-b", "bad", "Failed", "0", "BadInput", "3h"]
    # Every column kubectl shows, from the CRD's own definition.
    assert len(PRINTER_COLUMNS) == len(wide[0].split()) - 2


def test_lookup_follows_simple_json_paths() -> None:
    assert lookup({"status": {"failure": {"reason": "X"}}}, ".status.failure.reason") == "X"
    assert lookup({"status": None}, ".status.failure.reason") is None


@pytest.mark.parametrize(
    ("seconds", "age"),
    [(5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600, "3h"),
     (3 * 3600 + 1800, "3h30m"), (30 * 3600, "30h"), (3 * 86400, "3d"), (400 * 86400, "400d"),
     (800 * 86400, "2y")],
)  # fmt: skip
def test_ages_read_as_kubectl_writes_them(seconds: int, age: str) -> None:
    assert format_age(seconds) == age


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800),
     ("250ms", 0.25), (" 10M ", 600)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 m", "1h-5m", "m5", "1w"])
def test_bad_durations_say_what_is_taken(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 90s, 5m, 1h30m or 2h"):
        parse_duration(text)


def test_whole_seconds_round_up_and_durations_print_short() -> None:
    assert whole_seconds("0.2s") == 1
    assert format_duration(3.04) == "3.0s"
    assert format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m05s"


def test_dump_json_and_yaml_with_readable_multiline_text() -> None:
    data = {"spec": {"job": {"source": "import kubemr\n\nclass J:\n    pass\n"}, "n": 1}}
    assert json.loads(dump(data, "json")) == data
    text = dump(data, "yaml")
    assert "source: |" in text
    assert yaml.safe_load(text) == data
