"""The local runner under mistakes, signals and races: nothing lost, nothing wrong
presented as complete. Each test names the case of docs/reliability.md it covers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import kubemr
from kubemr.errors import JobFailed, OptionError, OutputError
from kubemr.job import job_steps
from kubemr.machine import available_cpus

from . import jobs, reliability_jobs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHONPATH = os.path.join(ROOT, "src") + os.pathsep + ROOT
TEXT = "a b c\nb c\nc\n"


def read_parts(out) -> dict:
    pairs = {}
    for name in sorted(os.listdir(out)):
        if name.startswith("part-"):
            with open(os.path.join(out, name)) as fh:
                for line in fh:
                    k, v = json.loads(line)
                    pairs[k] = v
    return pairs


def tree(path) -> dict[str, bytes]:
    found = {}
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as fh:
                found[os.path.relpath(full, path)] = fh.read()
    return found


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "in.txt").write_text(TEXT)
    (d / "sub" / "more.txt").write_text(TEXT)
    return d


# -- 1. output equal to, containing or inside an input ----------------------------------


@pytest.mark.parametrize("where", ["same", "parent", "inside", "symlink", "dotdot"])
def test_output_overlapping_an_input_is_refused_and_nothing_is_touched(
    tmp_path, data, where
) -> None:
    before = tree(tmp_path)
    if where == "same":
        out = str(data)
    elif where == "parent":
        out = str(tmp_path)
    elif where == "inside":
        out = str(data / "out")
    elif where == "symlink":
        os.symlink(data, tmp_path / "link")
        before = tree(tmp_path)
        out = str(tmp_path / "link")
    else:
        out = str(data / "sub" / "..")
    with pytest.raises(OutputError, match="input"):
        kubemr.run(jobs.WordCount, inputs=[str(data)], output=out, overwrite=True)
    assert tree(tmp_path) == before


def test_the_same_file_named_twice_is_read_once(tmp_path, data, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    kubemr.run(
        jobs.WordCount,
        inputs=[str(data / "in.txt"), "data/in.txt", str(data / "sub" / ".." / "in.txt")],
        output=str(out),
    )
    assert read_parts(out) == {"a": 1, "b": 2, "c": 3}


def test_output_holding_an_input_file_is_refused(tmp_path, data) -> None:
    with pytest.raises(OutputError, match="holds the input file"):
        kubemr.run(jobs.WordCount, inputs=[str(data / "in.txt")], output=str(data), overwrite=True)
    assert (data / "in.txt").read_text() == TEXT


def test_output_beside_a_glob_it_does_not_match_is_allowed(tmp_path, data) -> None:
    out = data / "counts"
    kubemr.run(jobs.WordCount, inputs=[str(data / "*.txt")], output=str(out))
    assert read_parts(out) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(OutputError, match="glob"):
        kubemr.run(jobs.WordCount, inputs=[str(data / "**")], output=str(out), overwrite=True)


def test_overwrite_refuses_a_directory_with_foreign_files(tmp_path, data) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    (out / "part-00000").write_text("old\n")
    with pytest.raises(OutputError, match="did not write"):
        kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(out), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "part-00000").read_text() == "old\n"


def test_overwrite_replaces_only_an_earlier_kubemr_output(tmp_path, data) -> None:
    out = tmp_path / "out"
    first = kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(out), reducers=3)
    assert sorted(os.listdir(out)) == [
        "_REPORT.json",
        "_SUCCESS",
        "_kubemr-job.json",
        "part-00000",
        "part-00001",
        "part-00002",
    ]
    record = json.loads((out / "_kubemr-job.json").read_text())
    assert record["job_id"] == first["job_id"] and record["state"] == "succeeded"
    with pytest.raises(OutputError, match=r"not empty.*--overwrite"):
        kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(out))
    second = kubemr.run(
        jobs.WordCount, inputs=[str(data)], output=str(out), reducers=1, overwrite=True
    )
    assert sorted(os.listdir(out)) == ["_REPORT.json", "_SUCCESS", "_kubemr-job.json", "part-00000"]
    assert read_parts(out) == {"a": 2, "b": 4, "c": 6}
    assert json.loads((out / "_SUCCESS").read_text())["job_id"] == second["job_id"]


def test_a_failed_run_leaves_no_staged_parts(tmp_path, data) -> None:
    out = tmp_path / "out"
    with pytest.raises(JobFailed):
        kubemr.run(reliability_jobs.AlwaysFails, inputs=[str(data)], output=str(out))
    assert sorted(os.listdir(out)) == ["_kubemr-job.json"]
    assert json.loads((out / "_kubemr-job.json").read_text())["state"] == "failed"


# -- 2. an earlier output inside the input directory --------------------------------------


def test_kubemr_output_inside_an_input_dir_is_not_read_back(tmp_path, data) -> None:
    out = tmp_path / "elsewhere"
    kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(out))
    os.rename(out, data / "old-counts")  # an earlier run's output, now inside the input
    again = tmp_path / "again"
    summary = kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(again))
    assert read_parts(again) == {"a": 2, "b": 4, "c": 6}
    assert summary["skipped_inputs"] == [str(data / "old-counts")]
    # Named on its own, it is read.
    third = tmp_path / "third"
    kubemr.run(jobs.WordCount, inputs=[str(data / "old-counts")], output=str(third))
    # (the word count of the part files' JSON lines: '["a",', '2]', ...)
    assert read_parts(third) == {'["a",': 1, "2]": 1, '["b",': 1, "4]": 1, '["c",': 1, "6]": 1}


# -- 4, 5, 11. processes, signals and two runs at once --------------------------------------


def _default_signals() -> None:
    # kubemr keeps a program's own signal dispositions; a test runner started under
    # nohup would hand SIGHUP on ignored, so the command starts with the defaults.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _kubemr(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kubemr", *args],
        env={
            **os.environ,
            "PYTHONPATH": os.path.join(ROOT, "src") + os.pathsep + ROOT,
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_default_signals,
        **kw,
    )


def _slow_run(tmp_path, out, *extra: str) -> subprocess.Popen:
    lines = tmp_path / "lines.txt"
    if not lines.exists():
        lines.write_text("x y\n" * 400)
    return _kubemr(
        "run",
        "tests.unit.reliability_jobs:SlowWordCount",
        "-i",
        str(lines),
        "-o",
        str(out),
        "--workers",
        "2",
        "--split-size",
        "200",
        "-q",
        *extra,
        env={"KUBEMR_TEST_SLEEP": "0.05"},
    )


def _workers_of(proc: subprocess.Popen, timeout: float = 60) -> list[psutil.Process]:
    """The worker processes of a running `kubemr run` (forkserver children included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            break
        workers = [k for k in kids if "forkserver" not in " ".join(_cmdline(k))]
        if len([k for k in kids]) >= 3 and workers:
            return kids
        time.sleep(0.1)
    raise AssertionError("the run started no worker processes")


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _wait_gone(procs: list[psutil.Process], timeout: float = 15) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def test_workers_die_with_a_killed_driver(tmp_path) -> None:
    proc = _slow_run(tmp_path, tmp_path / "out")
    kids = _workers_of(proc)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # returns only when nothing holds its stdout any more
    alive = _wait_gone(kids)
    assert not alive, [(p.pid, _cmdline(p)) for p in alive]
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # The next run takes over the output the dead run held.
    rerun = _slow_run(tmp_path, tmp_path / "out", "--overwrite")
    rerun.communicate(timeout=300)
    assert rerun.returncode == 0
    assert read_parts(tmp_path / "out") == {"x": 400, "y": 400}


def test_a_second_run_on_the_same_output_is_refused(tmp_path) -> None:
    out = tmp_path / "out"
    first = _slow_run(tmp_path, out)
    _workers_of(first)
    second = _slow_run(tmp_path, out, "--overwrite")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert b"being written by another kubemr run" in err
    first.communicate(timeout=300)
    assert first.returncode == 0
    success = json.loads((out / "_SUCCESS").read_text())
    assert json.loads((out / "_kubemr-job.json").read_text())["job_id"] == success["job_id"]
    assert read_parts(out) == {"x": 400, "y": 400}


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_everything_and_clean_up(tmp_path, sig, code) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = _slow_run(tmp_path, tmp_path / "out", "--work-dir", str(work))
    kids = _workers_of(proc)
    time.sleep(0.5)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(sig).name}".encode() in err
    assert not _wait_gone(kids)
    assert os.listdir(work) == []
    assert sorted(os.listdir(tmp_path / "out")) == ["_kubemr-job.json"]


# -- 13. the preflight is bounded ------------------------------------------------------------


def test_preflight_takes_a_bounded_sample_of_mapper_output(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("endless\nok\n")
    # The endless record would hang a preflight that materialised all mapper output;
    # only the preflight is run here (the task itself would run without end).
    from kubemr.planning import PREFLIGHT_PAIRS, Planner, new_plan, preflight, resolve_inputs
    from kubemr.spec import LocalOptions
    from kubemr.storage import StorageOptions

    options = LocalOptions(inputs=[str(tmp_path / "in.txt")], output=str(tmp_path / "o"))
    inputs = resolve_inputs(options.inputs, StorageOptions(), print)
    job_cls = reliability_jobs.EndlessMapper
    plan = new_plan(
        job_cls, options, job_id="j", work_url=str(tmp_path / "w"), inputs=inputs, parallelism=1
    )
    splits = Planner(
        job_cls, plan, inputs, StorageOptions(), split_size=None, parallelism=1
    ).first_splits()
    job = job_cls()
    job_cls.pulled = 0
    preflight(plan, job, job_steps(job), splits, StorageOptions())
    assert 0 < job_cls.pulled <= PREFLIGHT_PAIRS + 1


# -- 14. options checked, workers capped, reducers fit the input ------------------------------


@pytest.mark.parametrize(
    "option,value",
    [
        ("workers", 0),
        ("workers", -1),
        ("reducers", -3),
        ("skip_bad_records", -1),
        ("max_attempts", 0),
        ("memory", 0),
        ("split_size", -5),
        ("workers", 2.5),
        ("memory", "lots"),
    ],
)
def test_invalid_options_are_refused_by_name(tmp_path, data, option, value) -> None:
    with pytest.raises(OptionError, match=option):
        kubemr.run(
            jobs.WordCount, inputs=[str(data)], output=str(tmp_path / "o"), **{option: value}
        )
    assert not (tmp_path / "o").exists()


def test_absurd_worker_count_is_capped_and_said(tmp_path, data) -> None:
    summary = kubemr.run(
        jobs.WordCount, inputs=[str(data)], output=str(tmp_path / "o"), workers=100_000
    )
    assert summary["workers"] == 4 * available_cpus()
    assert "more than 4 per available CPU" in summary["warnings"][0]
    assert read_parts(tmp_path / "o") == {"a": 2, "b": 4, "c": 6}


def test_small_input_gets_one_part_file(tmp_path, data) -> None:
    kubemr.run(jobs.WordCount, inputs=[str(data / "in.txt")], output=str(tmp_path / "o"), workers=4)
    assert [n for n in os.listdir(tmp_path / "o") if n.startswith("part-")] == ["part-00000"]


def test_available_cpus_honours_affinity() -> None:
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    assert available_cpus() <= len(os.sched_getaffinity(0))


# -- 15. one-line errors, not tracebacks --------------------------------------------------------


def test_unwritable_work_dir_is_a_one_line_error(tmp_path, data) -> None:
    (tmp_path / "afile").write_text("x")
    proc = _kubemr(
        "run",
        "tests.unit.jobs:WordCount",
        "-i",
        str(data),
        "-o",
        str(tmp_path / "o"),
        "--work-dir",
        str(tmp_path / "afile" / "work"),
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert b"Traceback" not in err
    assert b"afile" in err


def test_disk_full_while_writing_success_is_a_clear_error(tmp_path, data, monkeypatch) -> None:
    import errno

    from kubemr import output as output_mod

    real = output_mod.storage.write_bytes

    def full(url, payload, options=None):
        if url.endswith("/_SUCCESS"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(url, payload, options)

    monkeypatch.setattr(output_mod.storage, "write_bytes", full)
    with pytest.raises(OutputError, match=r"No space left.*no _SUCCESS"):
        kubemr.run(jobs.WordCount, inputs=[str(data)], output=str(tmp_path / "o"))
    assert not (tmp_path / "o" / "_SUCCESS").exists()


def test_mapper_error_during_total_order_sampling_is_a_job_failure(tmp_path) -> None:
    (tmp_path / "in.txt").write_text("a\nbad\nc\n")
    with pytest.raises(JobFailed, match="cannot sample this") as info:
        kubemr.run(
            reliability_jobs.SortFailsInSampling,
            inputs=[str(tmp_path / "in.txt")],
            output=str(tmp_path / "o"),
            reducers=2,
        )
    assert "sampling" in info.value.failure.task


# -- 16. kubemr.map_reduce in a script with no __main__ guard ---------------------------------

SCRIPT = """
import kubemr

def words(line):
    for w in line.split():
        yield w, 1

kubemr.map_reduce(words, kubemr.SUM, inputs={inp!r}, output={out!r}, workers=2)
print("done")
"""


@pytest.mark.parametrize("how", ["file", "-c", "stdin"])
def test_map_reduce_at_top_level_of_a_script(tmp_path, data, how) -> None:
    out = tmp_path / "o"
    code = SCRIPT.format(inp=str(data / "in.txt"), out=str(out))
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    if how == "file":
        script = tmp_path / "script.py"
        script.write_text(code)
        args, stdin = [sys.executable, str(script)], None
    elif how == "-c":
        args, stdin = [sys.executable, "-c", code], None
    else:
        args, stdin = [sys.executable, "-"], code
    proc = subprocess.run(
        args, input=stdin, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done") == 1
    assert read_parts(out) == {"a": 1, "b": 2, "c": 3}


# -- 17. messages that say what is wrong ---------------------------------------------------------


def test_bytes_keys_with_json_output_fail_before_any_task(tmp_path, data) -> None:
    with pytest.raises(JobFailed, match="cannot be written as jsonl") as info:
        kubemr.run(reliability_jobs.BytesKeys, inputs=[str(data)], output=str(tmp_path / "o"))
    assert info.value.failure.task == "preflight"


def test_skipped_bad_records_are_named(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"k": 1}\n{broken\n{"k": 2}\nnot json\n')
    summary = kubemr.run(
        reliability_jobs.JsonCount,
        inputs=[str(path)],
        output=str(tmp_path / "o"),
        skip_bad_records=5,
    )
    assert summary["bad_records"]["skipped"] == 2
    examples = summary["bad_records"]["examples"]
    assert f"{path}:2" in examples[0] and f"{path}:4" in examples[1]
    assert (
        json.loads((tmp_path / "o" / "_SUCCESS").read_text())["bad_records"]
        == summary["bad_records"]
    )


def test_final_failure_says_how_often_it_was_tried(tmp_path, data) -> None:
    with pytest.raises(JobFailed, match="failed on all 2 attempts"):
        kubemr.run(
            reliability_jobs.AlwaysFails,
            inputs=[str(data)],
            output=str(tmp_path / "o"),
            max_attempts=2,
        )
