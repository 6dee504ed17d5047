"""Input expansion: every file named by the inputs is read exactly once, and anything
that would be lost or read twice (links, special files, other jobs' outputs) is an error
or is read once."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import kubemr
from kubemr import storage
from kubemr.errors import InputError
from kubemr.storage import StorageError, StorageOptions

from . import jobs

NOBODY = 65534
BUCKET = "inputs"


def urls(patterns: list[str], skipped: list[str] | None = None) -> list[list[str]]:
    """The URLs each pattern yields, from one call over all of them."""
    extra = {} if skipped is None else {"skipped": skipped}
    expanded = storage.expand_inputs(patterns, **extra)
    return [[info.url for info in found] for _, found in expanded]


def write(path: Path, text: str = "x\n") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def records(tmp_path: Path, inputs: list[str]) -> int:
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    summary = kubemr.run(jobs.WordCount, inputs=inputs, output=str(out))
    return summary["input"]["records"]


def as_nobody(fn: Callable[[], Any]) -> tuple[str, str]:
    """``fn()`` run without root's right to bypass permissions: (exception type, message),
    or ``("ok", json of the result)``. Root is dropped to nobody in a forked child."""
    if os.geteuid() != 0:
        try:
            return "ok", json.dumps(fn())
        except Exception as exc:
            return type(exc).__name__, str(exc)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        payload = ("BaseException", "child failed before reporting")
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = ("ok", json.dumps(fn()))
        except BaseException as exc:
            payload = (type(exc).__name__, str(exc))
        finally:
            os.write(write_end, json.dumps(payload).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    kind, message = json.loads(data)
    return kind, message


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can reach (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="kubemr-inputs-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(path)


def give_to_nobody(root: Path) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chown(root, NOBODY, NOBODY)


# --------------------------------------------------------------------------- links


def test_symlinked_directory_is_read(tmp_path: Path) -> None:
    d = tmp_path / "d"
    for i in range(3):
        write(d / f"part{i}.txt", "".join(f"r{i}-{n}\n" for n in range(10)))
    elsewhere = tmp_path / "elsewhere"
    for i in range(3, 5):
        write(elsewhere / f"f{i}.txt", "".join(f"r{i}-{n}\n" for n in range(5)))
    (d / "more").symlink_to(elsewhere)
    assert urls([str(d)]) == [
        [f"{d}/more/f3.txt", f"{d}/more/f4.txt", *(f"{d}/part{i}.txt" for i in range(3))]
    ]
    assert urls([f"{d}/**/*.txt"]) == urls([str(d)])
    assert urls([f"{d}/*/*.txt"]) == [[f"{d}/more/f3.txt", f"{d}/more/f4.txt"]]
    # a symbolic link named as the input is followed too
    (tmp_path / "alias").symlink_to(d)
    assert urls([str(tmp_path / "alias")])[0][0] == f"{tmp_path}/alias/more/f3.txt"
    assert records(tmp_path, [str(d)]) == 40


def test_broken_symlink_is_an_error_naming_it_and_its_target(tmp_path: Path) -> None:
    d = tmp_path / "data"
    write(d / "a.txt")
    (d / "x.txt").symlink_to("/gone/x.txt")
    message = f"{d}/x.txt is a broken symbolic link to /gone/x.txt: remove it or fix the target"
    for pattern in [str(d), f"{d}/x.txt", f"{d}/*.txt", f"{d}/**"]:
        with pytest.raises(StorageError) as info:
            urls([pattern])
        assert str(info.value) == message
    # a glob that cannot match the link's name does not care whether it is broken
    assert urls([f"{d}/a*"]) == [[f"{d}/a.txt"]]
    with pytest.raises(InputError, match=r"x\.txt is a broken symbolic link to /gone/x\.txt"):
        records(tmp_path, [str(d)])


@pytest.mark.timeout(60)
def test_symlink_loop_is_an_error_naming_the_link(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "sub" / "a.txt")
    (d / "sub" / "up").symlink_to(d)
    for pattern in [str(d), f"{d}/**/*.txt", f"{d}/sub"]:
        with pytest.raises(StorageError, match=rf"{d}/sub/up leads back to .*symbolic link loop"):
            urls([pattern])
    # a glob with a bounded depth cannot loop: the link is one more directory
    assert urls([f"{d}/sub/*/sub/a.txt"]) == [[f"{d}/sub/up/sub/a.txt"]]

    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "self").symlink_to("self")
    for pattern in [str(tmp_path / "e"), str(tmp_path / "e" / "self")]:
        with pytest.raises(StorageError, match=r"e/self is a symbolic link loop"):
            urls([pattern])
    with pytest.raises(InputError, match=r"sub/up leads back to"):
        records(tmp_path, [str(d)])


def test_unreadable_directory_is_an_error(shared_dir: Path) -> None:
    d = shared_dir / "d"
    write(d / "a.txt")
    write(d / "locked" / "b.txt")
    write(d / "locked" / "x.txt")
    give_to_nobody(shared_dir)
    (d / "locked").chmod(0)

    def expand(pattern: str) -> Callable[[], list[list[str]]]:
        return lambda: urls([pattern])

    kind, message = as_nobody(expand(str(d)))
    assert kind == "PermissionError"
    assert f"directory {d}/locked cannot be listed" in message
    kind, message = as_nobody(expand(f"{d}/*/x.txt"))
    assert kind == "PermissionError"
    assert f"{d}/locked" in message
    kind, message = as_nobody(expand(f"{d}/**/*.txt"))
    assert kind == "PermissionError"
    # a glob that cannot match anything inside it does not need to read it
    assert as_nobody(expand(f"{d}/*.txt")) == ("ok", json.dumps([[f"{d}/a.txt"]]))


def test_same_file_is_read_once(tmp_path: Path) -> None:
    d = tmp_path / "d"
    a = write(d / "a.txt")
    write(d / "real" / "b.txt")
    (d / "alias.txt").symlink_to("a.txt")
    (d / "view").symlink_to("real")
    os.link(a, d / "hard.txt")
    # within a directory: the first name in walking order wins
    assert urls([str(d)]) == [[a, f"{d}/real/b.txt"]]
    # across patterns: a file that an earlier pattern read is not read again
    assert urls([a, str(d), f"{d}/real/../a.txt", f"{d}/./a.txt", f"{d}/view/b.txt"]) == [
        [a],
        [f"{d}/real/b.txt"],
        [],
        [],
        [],
    ]
    # "." segments and repeated slashes do not make a second URL for the runner either
    assert urls([f"{tmp_path}/./d//a.txt"]) == [[a]]
    assert records(tmp_path, [str(d), f"{d}/./a.txt", f"{d}//real/b.txt"]) == 2


def test_relative_patterns_name_files_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d" / "a.txt")
    write(tmp_path / "top.txt")
    assert urls(["d", "./d/", "d/a.txt", "./d/a.txt", "*.txt", "./*.txt"]) == [
        ["d/a.txt"],
        [],
        [],
        [],
        ["top.txt"],
        [],
    ]


# --------------------------------------------------------------------------- special files


@pytest.mark.timeout(60)
def test_fifo_or_device_is_an_error_not_a_missing_file(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "a.txt")
    os.mkfifo(d / "pipe.txt")
    message = f"{d}/pipe.txt is a FIFO, not a regular file: kubemr reads regular files"
    for pattern in [f"{d}/pipe.txt", str(d), f"{d}/*.txt", f"{d}/**"]:
        with pytest.raises(StorageError) as info:
            urls([pattern])
        assert str(info.value) == message
    # a special file the pattern does not name is none of its business
    assert urls([f"{d}/a*"]) == [[f"{d}/a.txt"]]
    with pytest.raises(StorageError, match="/dev/null is a character device, not a regular"):
        urls(["/dev/null"])
    with pytest.raises(InputError, match=r"pipe\.txt is a FIFO, not a regular file"):
        records(tmp_path, [f"{d}/pipe.txt"])


# --------------------------------------------------------------------------- glob characters


def test_name_with_glob_characters_is_taken_literally(tmp_path: Path) -> None:
    lit = write(tmp_path / "data[1].txt", "literal\n")
    star = write(tmp_path / "a*b?.txt", "star\n")
    write(tmp_path / "data1.txt", "globbed\n")
    write(tmp_path / "x[1]" / "in.txt")
    assert urls([lit, star, str(tmp_path / "x[1]")]) == [
        [lit],
        [star],
        [f"{tmp_path}/x[1]/in.txt"],
    ]
    # a pattern that does not exist as written is still a glob
    assert urls([str(tmp_path / "data[12].txt")]) == [[f"{tmp_path}/data1.txt"]]
    assert records(tmp_path, [lit]) == 1


def test_wildcards_stay_within_one_segment(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt")
    write(tmp_path / "dxa.txt")
    assert urls([f"{tmp_path}/d?a.txt"]) == [[f"{tmp_path}/dxa.txt"]]
    assert urls([f"{tmp_path}/d[!x]a.txt"]) == [[]]
    regex = storage._glob_regex(f"s3://{BUCKET}/logs?x/[!a]/*")
    assert regex.match(f"s3://{BUCKET}/logs-x/b/c")
    assert not regex.match(f"s3://{BUCKET}/logs/x/b/c")
    assert not regex.match(f"s3://{BUCKET}/logs-x///c")
    assert storage._glob_regex(f"s3://{BUCKET}/[z-a]x").match(f"s3://{BUCKET}/zx") is None


def test_file_url_globs(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt")
    write(tmp_path / "d" / "s" / "b.txt")
    assert urls([f"file://{tmp_path}/d/**/*.txt"]) == [
        [f"file://{tmp_path}/d/a.txt", f"file://{tmp_path}/d/s/b.txt"]
    ]
    assert urls([f"file://{tmp_path}/d"]) == urls([f"file://{tmp_path}/d/**/*.txt"])


# --------------------------------------------------------------------------- other jobs' output


def make_output(path: Path, marker: str, words: str) -> None:
    write(path / "part-00000", words)
    write(path / marker, "{}")


def test_output_directories_below_an_input_are_left_out(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d / "a.txt", "apple\n")
    make_output(d / "done", "_SUCCESS", "done\n")
    make_output(d / "running", "_kubemr-job.json", "running\n")
    skipped: list[str] = []
    assert urls([str(d), f"{d}/*/part-*", f"{d}/**"], skipped) == [[f"{d}/a.txt"], [], []]
    assert skipped == [f"{d}/done", f"{d}/running"]
    # a glob that would take nothing from it does not report it
    skipped = []
    assert urls([f"{d}/**/*.txt"], skipped) == [[f"{d}/a.txt"]]
    assert skipped == []
    # named as the input, or as the glob's own directory, an output is read
    done = f"{d}/done/part-00000"
    assert urls([f"{d}/done/", f"{d}/done/part-*", done]) == [[done], [], []]
    assert urls([f"{d}/done/part-*"]) == [[done]]
    # ... but not the outputs below it
    make_output(d / "done" / "nested", "_SUCCESS", "nested\n")
    skipped = []
    assert urls([f"{d}/done"], skipped) == [[done]]
    assert skipped == [f"{d}/done/nested"]
    assert records(tmp_path, [str(d)]) == 1
    assert records(tmp_path, [str(d), f"{d}/done"]) == 2


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(storage, "_stores", {})
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)

        def put(key: str) -> str:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"x\n")
            return f"s3://{BUCKET}/{key}"

        yield put


def test_s3_output_directories_are_left_out_unless_named(s3: Callable[[str], str]) -> None:
    a = s3("logs/a.txt")
    s3("logs/done/_SUCCESS")
    done = s3("logs/done/part-00000")
    s3("logs/running/_kubemr-job.json")
    s3("logs/running/part-00000")
    s3("logs/_SUCCESS")
    skipped: list[str] = []
    assert urls([f"s3://{BUCKET}/logs", f"s3://{BUCKET}/logs/**/part-*"], skipped) == [[a], []]
    assert skipped == [f"s3://{BUCKET}/logs/done", f"s3://{BUCKET}/logs/running"]
    skipped = []
    assert urls([f"s3://{BUCKET}/logs/done/"], skipped) == [[done]]
    assert urls([f"s3://{BUCKET}/logs/done/part-*"], skipped) == [[done]]
    assert urls([f"s3://{BUCKET}/logs/*.txt"], skipped) == [[a]]
    assert skipped == []


def test_s3_literal_keys_and_segments(s3: Callable[[str], str]) -> None:
    lit = s3("d/data[1].txt")
    one = s3("d/data1.txt")
    nested = s3("d/x[1]/in.txt")
    s3("d/x/y.txt")
    assert urls(
        [f"s3://{BUCKET}/d/data[1].txt", f"s3://{BUCKET}/d/x[1]", f"s3://{BUCKET}/d/data[1]*"]
    ) == [
        [lit],
        [nested],
        [one],
    ]
    assert urls([f"s3://{BUCKET}/d?x/y.txt", f"s3://{BUCKET}/d/x[!a]y.txt"]) == [[], []]
    # the same key named twice, once as a glob taken literally, is read once
    expanded = storage.expand_inputs([f"s3://{BUCKET}/d/data[1].txt", lit], StorageOptions())
    assert [[i.url for i in found] for _, found in expanded] == [[lit], []]


# --------------------------------------------------------------------------- glob walking


def test_glob_lists_only_directories_that_can_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "tmp"
    write(base / "a.log")
    write(base / "unrelated" / "deep" / "b.log")
    write(base / "app" / "2026" / "c.log")
    write(base / "app" / "2026" / "notes" / "d.log")
    write(base / "other" / "2026" / "e.log")
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        listed.append(os.fspath(path).rstrip("/"))
        if os.fspath(path).rstrip("/") == str(base / "unrelated"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert urls([f"{base}/*.log"]) == [[f"{base}/a.log"]]
    assert listed == [str(base)]
    listed.clear()
    assert urls([f"{base}/app/*/*.log"]) == [[f"{base}/app/2026/c.log"]]
    assert listed == [f"{base}/app", f"{base}/app/2026"]
    listed.clear()
    # literal parts after a wildcard are looked up, not listed
    assert urls([f"{base}/*/2026/e.log"]) == [[f"{base}/other/2026/e.log"]]
    assert listed == [str(base)]
    assert urls([f"{base}/app/**/*.log"]) == [
        [f"{base}/app/2026/c.log", f"{base}/app/2026/notes/d.log"]
    ]
    with pytest.raises(PermissionError, match=f"directory {base}/unrelated cannot be listed"):
        urls([f"{base}/**/*.log"])


def test_glob_semantics(tmp_path: Path) -> None:
    d = tmp_path / "d"
    for rel in ["a.gz", "x/b.gz", "x/y/c.gz", "x/y/c.txt", "_tmp/d.gz", ".h/e.gz", "x/.f.gz"]:
        write(d / rel)

    def names(pattern: str) -> list[str]:
        return [u[len(str(d)) + 1 :] for u in urls([f"{d}/{pattern}"])[0]]

    everything = ["a.gz", "x/b.gz", "x/y/c.gz"]
    assert names("**/*.gz") == everything
    assert names("**.gz") == everything
    assert names("**") == [*everything, "x/y/c.txt"]
    assert names("x/**/c.*") == ["x/y/c.gz", "x/y/c.txt"]
    assert names("*/*.gz") == ["x/b.gz"]
    assert names("x/*") == ["x/b.gz"]  # a directory the last part matches is not read
    assert names("[ax]*") == ["a.gz"]
    assert names("*/*.gz") == ["x/b.gz"]
    assert names("_tmp/*.gz") == ["_tmp/d.gz"]  # named before the wildcard: not hidden
    assert names("*/") == []
    assert names("nothing/*") == []


# --------------------------------------------------------------------------- odd patterns


def test_empty_pattern_is_an_error_not_the_root_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        assert os.fspath(path) != "/", "the whole filesystem was listed"
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(StorageError, match="the input path is empty"):
        urls([""])


def test_trailing_slash_on_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt")
    with pytest.raises(StorageError, match=r"a\.txt/ ends with / but .*a\.txt is not a directory"):
        urls([path + "/"])
    with pytest.raises(FileNotFoundError):
        urls([str(tmp_path / "missing.txt")])


def test_output_and_work_listing_stay_lenient(tmp_path: Path) -> None:
    """The output and work directories are listed by LocalStore.list, which must not
    fail on what an input listing refuses."""
    d = tmp_path / "out"
    write(d / "part-00000")
    (d / "broken").symlink_to("/gone")
    os.mkfifo(d / "fifo")
    store = storage.store_for(str(d))
    assert f"{d}/part-00000" in [i.url for i in store.list(str(d) + "/")]
    assert store.delete_prefix(str(d) + "/") >= 1
    assert not d.exists()


def test_local_create_exclusive_one_winner_among_racers(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from kubemr.storage.local import LocalStore

    store = LocalStore()
    url = str(tmp_path / "sub" / "decided.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: store.create_exclusive(url, str(i).encode()), range(32)))
    assert won.count(True) == 1
    assert (tmp_path / "sub" / "decided.json").read_bytes() == str(won.index(True)).encode()
    assert os.listdir(tmp_path / "sub") == ["decided.json"]  # no temp files left
