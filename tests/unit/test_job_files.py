"""Files shipped with a job (``FILES`` on the class, ``--file``, ``kubemr.options.File``
options): stored in the work dir by content, read by every task as a local path, checked
against their sha256; on the real local runner, and stage by stage with ``kubemr worker``
as pods run it."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import kubemr
from kubemr import jobfiles
from kubemr.cli import app
from kubemr.cluster import jobcode
from kubemr.coordinator import StepShape, job_stages
from kubemr.errors import InputError
from kubemr.loader import load_job_class
from kubemr.termination import EXIT_BAD_INPUT
from tests.jobfiles import run_worker

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

STOP_WORDS = '''
import kubemr
from kubemr.options import File, Options


class NoStopWords(kubemr.MapReduce):
    """Word counts without stop words, weighted by a table, both shipped with the job."""

    FILES = ["stop.txt", "tables/weights.tsv#w.tsv"]

    class Options(Options):
        more_stop: File | None = None
        lexicon: File = "lexicon.txt"

    def setup(self):
        with open(self.files["stop.txt"]) as fh:
            self.stop = set(fh.read().split())
        if self.options.more_stop is not None:
            with open(self.options.more_stop) as fh:
                self.stop |= set(fh.read().split())
        with open(self.files["w.tsv"]) as fh:
            self.weights = dict(line.rstrip("\\n").split("\\t") for line in fh)
        with open(self.options.lexicon) as fh:
            self.lexicon = fh.read().split()

    def mapper(self, line):
        for word in line.split():
            if word not in self.stop and word in self.lexicon:
                yield word, int(self.weights.get(word, "1"))

    combiner = kubemr.SUM

    def reducer(self, word, counts):
        yield word, sum(counts)

    def reducer_final(self):
        shipped = {name: self.files[name] for name in sorted(self.files)}
        yield "_where", [shipped, self.options.lexicon, self.options.more_stop]
'''

TEXT = "the cat and the dog\na cat and a bird\nthe cat sat on the mat\n" * 30


def make_job(tmp_path: Path) -> Path:
    """The job file and its files in ``tmp_path/job``; the input in ``tmp_path``."""
    jobdir = tmp_path / "job"
    (jobdir / "tables").mkdir(parents=True)
    path = jobdir / "nostop.py"
    path.write_text(textwrap.dedent(STOP_WORDS))
    (jobdir / "stop.txt").write_text("the a\n")
    (jobdir / "tables" / "weights.tsv").write_text("cat\t10\ndog\t2\n")
    (jobdir / "lexicon.txt").write_text("the a cat dog bird sat on mat and\n")
    (tmp_path / "in.txt").write_text(TEXT)
    return path


def read_parts(out: Path) -> dict:
    return dict(
        json.loads(line)
        for part in sorted(out.glob("part-*"))
        for line in part.read_text().splitlines()
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_on_the_class_reach_every_task_from_the_work_dir(tmp_path, monkeypatch) -> None:
    path = make_job(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # FILES are relative to the job file, not the cwd
    out, work = tmp_path / "out", tmp_path / "work"
    summary = kubemr.run(
        load_job_class(str(path)),
        inputs=[str(tmp_path / "in.txt")],
        output=str(out),
        reducers=2,
        split_size=300,
        workers=2,
        work_dir=str(work),
        keep_work=True,
    )
    assert summary["tasks"]["map"] > 1
    got = read_parts(out)
    where = got.pop("_where")
    assert got == {"cat": 900, "dog": 60, "and": 60, "bird": 30, "sat": 30, "on": 30, "mat": 30}
    shipped, lexicon, more = where
    (job_work,) = list(work.iterdir())
    jobdir = tmp_path / "job"
    # Content-addressed in the work dir; every task read these copies.
    assert shipped == {
        "stop.txt": str(job_work / "files" / sha(jobdir / "stop.txt") / "stop.txt"),
        "w.tsv": str(job_work / "files" / sha(jobdir / "tables" / "weights.tsv") / "w.tsv"),
        "lexicon.txt": str(job_work / "files" / sha(jobdir / "lexicon.txt") / "lexicon.txt"),
    }
    assert lexicon == shipped["lexicon.txt"] and more is None
    assert Path(shipped["w.tsv"]).read_text() == "cat\t10\ndog\t2\n"


def test_a_file_option_and_file_flag_from_the_command_line(tmp_path, monkeypatch) -> None:
    path = make_job(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "more.txt").write_text("cat\n")
    (tmp_path / "other-lexicon.txt").write_text("dog bird cat\n")
    (tmp_path / "notes.md").write_text("shipped only\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "run", str(path), "-i", "in.txt", "-o", str(out), "-q",
            "-p", "more_stop=more.txt",  # relative to the current directory
            "-p", "lexicon=other-lexicon.txt#lex.txt",
            "--file", "notes.md#readme.md",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = read_parts(out)
    shipped, lexicon, more = got.pop("_where")
    assert got == {"dog": 60, "bird": 30}
    assert sorted(shipped) == ["lex.txt", "more.txt", "readme.md", "stop.txt", "w.tsv"]
    assert lexicon.endswith("/lex.txt") and more.endswith("/more.txt")
    assert "kubemr-work-" in lexicon  # a copy in the (temporary) work dir, not the file itself
    assert not os.path.exists(lexicon)  # removed with the work dir


def test_a_file_option_named_like_a_files_entry_gets_a_name_of_its_own(
    tmp_path, monkeypatch
) -> None:
    # mrjob's `--stop-words-file /x/stop_words.txt` beside `FILES = ['stop_words.txt']`.
    path = make_job(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "stop.txt").write_text("cat\n")  # another file of the FILES entry's name
    (other / "lexicon.txt").write_text("the a cat dog bird\n")
    monkeypatch.chdir(other)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", str(path), "-i", str(tmp_path / "in.txt"), "-o", str(out), "-q",
         "-p", f"more_stop={other / 'stop.txt'}", "-p", "lexicon=lexicon.txt"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = read_parts(out)
    shipped, lexicon, more = got.pop("_where")
    # Both stop lists applied: "the a" from FILES' stop.txt, "cat" from the option's.
    assert got == {"dog": 60, "bird": 30}
    assert sorted(shipped) == ["lexicon.txt", "stop-1.txt", "stop.txt", "w.tsv"]
    # Stored by content (the work dir is gone now): each name holds its own file.
    assert more == shipped["stop-1.txt"] and sha(other / "stop.txt") in more
    assert sha(tmp_path / "job" / "stop.txt") in shipped["stop.txt"]  # FILES keeps its name
    # An option's value as given replaces its default: no name of its own is needed.
    assert lexicon == shipped["lexicon.txt"] and sha(other / "lexicon.txt") in lexicon


def test_the_names_of_file_options() -> None:
    class Job(kubemr.MapReduce):
        FILES = ["data/stop.txt", "tables/w.tsv#w.tsv"]

        class Options(kubemr.Options):
            stops: kubemr.File | None = None
            same: kubemr.File = "data/stop.txt"  # the FILES entry itself
            other: kubemr.File = "stop.txt"  # relative to the job file: another file
            named: kubemr.File | None = None

    names = jobfiles.file_option_names
    assert names(Job, {}) == {"same": "stop.txt", "other": "stop-1.txt"}
    assert names(Job, {"stops": "/x/stop.txt", "same": "/y/stop.txt"}) == {
        "stops": "stop-1.txt",
        "same": "stop-2.txt",
        "other": "stop-3.txt",
    }
    # A name given with #NAME is the option's, and reserved: no name of its own takes it.
    assert names(Job, {"named": "/z/a.txt#stop-1.txt", "stops": "/x/stop.txt"}) == {
        "stops": "stop-2.txt",
        "same": "stop.txt",
        "other": "stop-3.txt",
        "named": "stop-1.txt",
    }
    assert names(Job, {"stops": "/x/w.tsv#w.tsv"})["stops"] == "w.tsv"  # named: an error later
    assert jobfiles.unique_name("a.tar.gz", {"a.tar.gz", "a-1.tar.gz"}) == "a-2.tar.gz"
    assert jobfiles.unique_name("README", {"README"}) == "README-1"
    refs = jobfiles.needed_files(Job, {"stops": "/x/stop.txt"})
    assert [(r.path, r.name) for r in refs] == [
        ("data/stop.txt", "stop.txt"),
        ("tables/w.tsv", "w.tsv"),
        ("/x/stop.txt", "stop-1.txt"),
        ("data/stop.txt", "stop.txt"),
        ("stop.txt", "stop-2.txt"),
    ]


def test_names_the_user_gave_still_collide(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "stop.txt").write_text("one\n")
    (tmp_path / "b" / "stop.txt").write_text("two\n")
    (tmp_path / "b" / "x.txt").write_text("two\n")

    class TwoFiles(kubemr.MapReduce):
        FILES = [str(tmp_path / "a" / "stop.txt"), str(tmp_path / "b" / "stop.txt")]

    with pytest.raises(InputError, match=r"two different files are named stop.txt"):
        jobfiles.local_files(jobfiles.needed_files(TwoFiles, {}))

    class Named(kubemr.MapReduce):
        FILES = [str(tmp_path / "a" / "stop.txt")]

        class Options(kubemr.Options):
            stops: kubemr.File | None = None

    refs = jobfiles.needed_files(Named, {"stops": f"{tmp_path / 'b' / 'x.txt'}#stop.txt"})
    with pytest.raises(InputError, match=r"two different files are named stop.txt.*PATH#NAME"):
        jobfiles.local_files(refs)


def test_pods_read_a_file_option_under_its_own_name(tmp_path) -> None:
    path = make_job(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "stop.txt").write_text("cat dog\n")
    params = {"more_stop": str(tmp_path / "mine" / "stop.txt")}
    # What kubemr submit does, with the option given: the spec lists it by its own name.
    local = jobcode.job_files(load_job_class(str(path)), params, [])
    code_dir = str(tmp_path / "code")
    jobcode.upload_files(local, code_dir, jobfiles.StorageOptions())
    files = jobcode.spec_files(local, code_dir)
    assert [f["name"] for f in files] == ["stop.txt", "w.tsv", "stop-1.txt", "lexicon.txt"]
    run_stages(tmp_path, plan_input(tmp_path, {"source": path.read_text(), "files": files}, params))
    got = read_parts(tmp_path / "out")
    shipped, _, more = got.pop("_where")
    assert got == {"and": 60, "bird": 30, "sat": 30, "on": 30, "mat": 30}
    assert more == files[2]["url"] and shipped["stop.txt"] == files[0]["url"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: (t / "job" / "stop.txt").unlink(),
            "NoStopWords.FILES: file stop.txt does not exist",
        ),
        (
            lambda t: (t / "job" / "lexicon.txt").unlink(),
            "option lexicon's default: file lexicon.txt does not exist",
        ),
        (
            lambda t: (t / "job" / "stop.txt").unlink() or (t / "job" / "stop.txt").mkdir(),
            "stop.txt is not a regular file",
        ),
    ],
    ids=["FILES", "option-default", "directory"],
)
def test_a_missing_file_is_named_before_any_task(tmp_path, change, expected) -> None:
    path = make_job(tmp_path)
    change(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["run", str(path), "-i", str(tmp_path / "in.txt"), "-o", str(out)]
    result = runner.invoke(app, [*args, "--work-dir", str(work)])
    assert result.exit_code == 2
    assert expected in result.output
    assert not out.exists() and not work.exists()


def test_a_missing_file_flag_is_named_before_any_task(tmp_path) -> None:
    path = make_job(tmp_path)
    out = tmp_path / "out"
    args = ["run", str(path), "-i", str(tmp_path / "in.txt"), "-o", str(out)]
    result = runner.invoke(app, [*args, "--file", str(tmp_path / "nope.txt#n.txt")])
    assert result.exit_code == 2
    assert f"--file {tmp_path / 'nope.txt#n.txt'}: file {tmp_path / 'nope.txt'} does not exist" in (
        result.output
    )
    assert not out.exists()


def test_the_limits_and_the_names(tmp_path, monkeypatch) -> None:
    path = make_job(tmp_path)
    job = load_job_class(str(path))
    needed = jobfiles.needed_files(job, {})
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILE_BYTES", 20)
    with pytest.raises(InputError, match=r"file lexicon.txt is 34 B, more than the 20 B"):
        jobfiles.local_files(needed)
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILE_BYTES", 1 << 20)
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILES_BYTES", 30)
    with pytest.raises(InputError, match=r"more than 30 B \(at lexicon.txt, option lexicon"):
        jobfiles.local_files(needed)
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILES_BYTES", 1 << 20)
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILES", 2)
    with pytest.raises(InputError, match=r"at most 2 files, and this one names 3"):
        jobfiles.local_files(needed)
    monkeypatch.setattr(jobfiles, "MAX_JOB_FILES", 32)
    (tmp_path / "my notes.txt").write_text("x")
    (tmp_path / "stop.txt").write_text("different\n")
    with pytest.raises(InputError, match=r"'my notes.txt' cannot name a shipped file .*#NAME"):
        jobfiles.local_files(jobfiles.extra_files([str(tmp_path / "my notes.txt")]))
    with pytest.raises(InputError, match=r"two different files are named stop.txt"):
        jobfiles.local_files(needed + jobfiles.extra_files([str(tmp_path / "stop.txt")]))
    same = jobfiles.local_files(needed + jobfiles.extra_files([str(tmp_path / "job/stop.txt")]))
    assert [f.name for f in same] == ["stop.txt", "w.tsv", "lexicon.txt"]  # one copy


def test_help_lists_the_files_a_job_ships(tmp_path) -> None:
    path = make_job(tmp_path)
    result = runner.invoke(app, ["run", str(path), "--help"])
    assert result.exit_code == 0
    assert "--param more_stop=FILE" in result.output
    assert "default: lexicon.txt" in result.output
    assert "Files shipped with NoStopWords (FILES, read as self.files[NAME]): stop.txt, w.tsv" in (
        result.output
    )


# -- the pod path ------------------------------------------------------------------------------


def worker(tmp_path: Path, stage: str, index: int = 0, env: dict | None = None):
    return run_worker(tmp_path, stage, index, env, pod="ns")


def plan_input(tmp_path: Path, job: dict, params: dict | None = None) -> dict:
    return {
        "name": "ns",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {
            "job": job,
            "inputs": [str(tmp_path / "in.txt")],
            "output": str(tmp_path / "out"),
            "params": params or {},
            "splitSize": 400,
            "reducers": 2,
        },
    }


def run_stages(tmp_path: Path, spec_input: dict, env: dict | None = None) -> None:
    code, message, err = worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(spec_input)})
    assert code == 0, err
    shapes = [StepShape(s["maps"], s["reducers"]) for s in message["steps"]]
    for stage in job_stages(shapes)[1:]:
        for index in range(stage.tasks):
            code, message, err = worker(tmp_path, stage.name, index, env)
            assert code == 0, err


def shipped_spec(tmp_path: Path, path: Path, extra: list[str] | None = None) -> list[dict]:
    """What kubemr submit does: the job's files found, hashed and stored by content."""
    job = load_job_class(str(path))
    files = jobcode.job_files(job, {}, extra or [])
    code_dir = str(tmp_path / "code")
    assert jobcode.upload_files(files, code_dir, jobfiles.StorageOptions()) == len(files)
    assert jobcode.upload_files(files, code_dir, jobfiles.StorageOptions()) == 0  # stored once
    return jobcode.spec_files(files, code_dir)


def test_pods_read_the_files_the_spec_lists(tmp_path) -> None:
    path = make_job(tmp_path)
    files = shipped_spec(tmp_path, path)
    assert [f["name"] for f in files] == ["stop.txt", "w.tsv", "lexicon.txt"]
    assert files[0]["url"] == str(
        tmp_path / "code/files" / sha(path.parent / "stop.txt") / "stop.txt"
    )
    source = path.read_text()
    os.rename(path.parent, tmp_path / "gone")  # the pods have only the spec's files
    run_stages(tmp_path, plan_input(tmp_path, {"source": source, "files": files}))
    got = read_parts(tmp_path / "out")
    shipped, lexicon, _ = got.pop("_where")
    assert got == {"cat": 900, "dog": 60, "and": 60, "bird": 30, "sat": 30, "on": 30, "mat": 30}
    assert shipped["w.tsv"] == files[1]["url"] and lexicon == files[2]["url"]


def test_the_plan_pod_names_a_file_the_spec_lacks_or_storage_lost(tmp_path) -> None:
    path = make_job(tmp_path)
    files = shipped_spec(tmp_path, path)
    source = path.read_text()
    lacking = plan_input(tmp_path, {"source": source, "files": files[:2]})
    code, message, _ = worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(lacking)})
    assert code == EXIT_BAD_INPUT
    assert (
        "option lexicon's default asks for the file lexicon.txt, which spec.job.files"
        in (message["message"])
    )
    Path(files[0]["url"]).unlink()
    lost = plan_input(tmp_path, {"source": source, "files": files})
    code, message, _ = worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(lost)})
    assert code == EXIT_BAD_INPUT
    assert (
        f"shipped file stop.txt ({files[0]['url']}, spec.job.files) does not exist"
        in (message["message"])
    )
    assert not (tmp_path / "work" / "plan.json").exists()


def test_a_task_refuses_a_file_changed_after_planning(tmp_path) -> None:
    path = make_job(tmp_path)
    files = shipped_spec(tmp_path, path)
    spec_input = plan_input(tmp_path, {"source": path.read_text(), "files": files})
    code, _, err = worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(spec_input)})
    assert code == 0, err
    Path(files[1]["url"]).write_text("cat\t1000\n")
    code, message, _ = worker(tmp_path, "map-0", 0)
    assert code != 0 and not message["ok"]
    assert "shipped file w.tsv" in message["message"]
    assert "is not the file the job was planned with" in message["message"]


def test_a_job_from_the_image_ships_its_own_files_from_the_plan_pod(tmp_path) -> None:
    path = make_job(tmp_path)
    image = tmp_path / "image"
    os.rename(path.parent, image)  # the module and its files, as installed in an image
    (image / "nostop.py").rename(image / "nostop_job.py")
    env = {"PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{image}"}
    (tmp_path / "more.txt").write_text("dog\n")
    extra = shipped_spec(tmp_path, image / "nostop_job.py", [str(tmp_path / "more.txt")])
    job = {
        "module": "nostop_job:NoStopWords",
        "files": [f for f in extra if f["name"] == "more.txt"],
    }
    spec_input = plan_input(tmp_path, job, {"more_stop": "more.txt"})
    code, message, err = worker(
        tmp_path, "plan", env={**env, "KUBEMR_SPEC": json.dumps(spec_input)}
    )
    assert code == 0, err
    shapes = [StepShape(s["maps"], s["reducers"]) for s in message["steps"]]
    for stage in job_stages(shapes)[1:]:
        for index in range(stage.tasks):
            code, _, err = worker(tmp_path, stage.name, index, env)
            assert code == 0, err
    got = read_parts(tmp_path / "out")
    shipped, _, more = got.pop("_where")
    assert "dog" not in got and got["cat"] == 900
    # FILES from the image went to the work dir; the submitted file stayed where it was.
    assert shipped["stop.txt"].startswith(str(tmp_path / "work" / "files"))
    assert more == shipped["more.txt"] == extra[-1]["url"]


def test_submit_ships_the_files_beside_the_code(tmp_path) -> None:
    path = make_job(tmp_path)
    code_dir = tmp_path / "code"
    (tmp_path / "extra.bin").write_bytes(b"\x00\x01")
    result = runner.invoke(
        app,
        [
            "submit", str(path), "-i", "s3://b/in", "--output", "s3://b/out", "--dry-run",
            "--code-dir", str(code_dir), "--file", str(tmp_path / "extra.bin"), "-o", "yaml",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = yaml.safe_load(result.stdout)["spec"]["job"]["files"]
    assert [f["name"] for f in files] == ["stop.txt", "w.tsv", "lexicon.txt", "extra.bin"]
    for entry in files:
        stored = Path(entry["url"])
        assert stored.parent.name == entry["sha256"] == sha(stored)
        assert stored.parent.parent == code_dir / "files"
    assert list(code_dir.glob("*.pkl"))  # the code beside them
    missing = runner.invoke(
        app,
        ["submit", str(path), "-i", "s3://b/in", "--output", "s3://b/out", "--dry-run",
         "--code-dir", str(tmp_path / "code2"), "--file", str(tmp_path / "nope.txt")],
    )  # fmt: skip
    assert missing.exit_code == 2
    assert f"--file {tmp_path / 'nope.txt'}: file" in missing.output
    assert not (tmp_path / "code2").exists()
