"""A job's source travels with its pickle, so that tracebacks in workers show its lines."""

from __future__ import annotations

import linecache
import traceback

import cloudpickle

from kubemr.versions import DYNAMIC_CODE, job_sources, remember_sources

SOURCE = """
def explode(x):
    return 1 / x  # the line a traceback should show
"""


def load_by_value() -> object:
    namespace: dict = {"__name__": "by_value_job"}
    exec(compile(SOURCE, "<job source>", "exec"), namespace)
    return cloudpickle.loads(cloudpickle.dumps(namespace["explode"]))


def shown(fn: object) -> str:
    try:
        fn(0)  # type: ignore[operator]
    except ZeroDivisionError:
        return traceback.format_exc()
    raise AssertionError("no error")


def test_the_one_recorded_source_gives_code_pickled_by_value_its_lines() -> None:
    remember_sources({"<job source>": SOURCE})
    assert "the line a traceback should show" in shown(load_by_value())


def test_several_sources_give_no_lines_rather_than_wrong_ones() -> None:
    remember_sources({"a.py": SOURCE, "b.py": "x = 1\n"})
    assert DYNAMIC_CODE not in linecache.cache
    assert "the line a traceback should show" not in shown(load_by_value())
    remember_sources(None)  # a job with none recorded clears an earlier job's
    assert DYNAMIC_CODE not in linecache.cache


def test_a_file_that_is_here_is_read_not_replaced(tmp_path) -> None:
    path = tmp_path / "job.py"
    path.write_text("real = True\n")
    remember_sources({str(path): "recorded = True\n"})
    assert linecache.getlines(str(path)) == ["real = True\n"]


def test_the_job_classes_own_files_are_recorded() -> None:
    import tests.unit.jobs as jobs

    sources = job_sources(jobs.WordCount)
    assert list(sources) == [jobs.__file__]
    assert "class WordCount" in sources[jobs.__file__]
