"""Shell commands as a step's mapper, combiner or reducer (mrjob's ``mapper_cmd``,
``combiner_cmd``, ``reducer_cmd``): on the real local runner, and as pods run them with
``kubemr worker``, each checked against running the same tools directly or plain Python."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import kubemr
from kubemr import MRStep
from kubemr.commands import (
    JSON,
    LINES,
    RAW,
    CommandIO,
    argv_of,
    command_io,
    pair_lines,
    run_command,
)
from kubemr.coordinator import StepShape, job_stages
from kubemr.errors import JobDefinitionError, JobFailed
from kubemr.job import job_steps
from kubemr.termination import EXIT_TERMINATED
from tests.jobfiles import job_file, read_pairs, run_file, run_worker, start_worker

TEXT = [
    "Call me Ishmael. Some years ago, never mind how long precisely,",
    "the whale, the WHALE and the whale's calf",
    "",
    "tabs\tand  spaces\t between words",
    "Café au lait; naïve façade — déjà vu whale",
    "it's the end of the log, isn't it",
]

# Words as `"word"<TAB>1` lines of JSON, as mrjob's JSONProtocol writes them (POSIX awk).
AWK_JSON_WORDS = (
    'awk \'{ for (i = 1; i <= NF; i++) { w = $i; gsub(/[^A-Za-z]/, "", w); '
    'if (w != "") printf "\\"%s\\"\\t1\\n", tolower(w) } }\''
)
# The same words as raw `word<TAB>1` lines (Hadoop Streaming's classic, not JSON).
AWK_RAW_WORDS = AWK_JSON_WORDS.replace('\\"%s\\"', "%s")
# Sums the values of consecutive equal keys of sorted `key<TAB>n` lines.
AWK_SUM = (
    "awk -F '\\t' '$1 != k { if (NR > 1) print k \"\\t\" n; k = $1; n = 0 } "
    '{ n += $2 } END { if (NR) print k "\\t" n }\''
)


def wait_for(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def words(lines: list[str]) -> Counter:
    out: Counter = Counter()
    for line in lines:
        for token in line.split():
            word = "".join(c for c in token if c.isascii() and c.isalpha()).lower()
            if word:
                out[word] += 1
    return out


def make_inputs(tmp_path: Path, copies: int = 40) -> list[str]:
    """Three files of the sample lines (numbered, so that lines differ), cut into many
    splits by the tests' split size."""
    paths = []
    for f in range(3):
        path = tmp_path / f"in{f}.txt"
        path.write_text("".join(f"{line} {f}-{i}\n" for i in range(copies) for line in TEXT))
        paths.append(str(path))
    return paths


def input_lines(paths: list[str]) -> list[str]:
    return [line for p in paths for line in Path(p).read_text().splitlines()]


def part_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.glob("part-*")))


def part_lines(out: Path) -> list[str]:
    return part_bytes(out).decode().splitlines()


def run(tmp_path: Path, source: str, inputs: list[str], name: str = "job.py", **options) -> dict:
    path = job_file(tmp_path, source, name)
    options.setdefault("workers", 2)
    options.setdefault("split_size", "1KiB")
    return run_file(path, inputs=inputs, output=str(tmp_path / "out"), **options)


# -- a map-only command: mrjob's grep ----------------------------------------------------

GREP = """
import kubemr


class Grep(kubemr.MapReduce):
    def mapper_cmd(self):
        return ["grep", "-e", "whale"]
"""


def test_map_only_grep_writes_the_lines_grep_writes(tmp_path) -> None:
    inputs = make_inputs(tmp_path)
    summary = run(tmp_path, GREP, inputs)
    assert summary["tasks"]["map"] > 10
    # grep names the file of each line when given several: read them one at a time.
    expected = b"".join(
        subprocess.run(["grep", "-e", "whale", p], capture_output=True, check=True).stdout
        for p in inputs
    )
    # Part files in name order are the splits in input order: the same bytes as grep's.
    assert part_bytes(tmp_path / "out") == expected
    assert expected.count(b"\n") == 2 * 40 * 3
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert success["output"]["format"] == "raw-value"  # the default for a command's lines
    assert summary["counters"]["kubemr"]["output_records"] == 2 * 40 * 3


def test_format_bytes_gives_a_command_the_lines_as_they_are(tmp_path) -> None:
    data = tmp_path / "latin1.txt"
    raw = "café whale\nnaïve\nthe whale\n".encode("latin-1") * 50
    data.write_bytes(raw)
    source = GREP.replace('"-e"', '"-a", "-e"')  # -a: text, though not valid UTF-8
    run(tmp_path, source, [str(data)], input_format="bytes", split_size="300B")
    assert part_bytes(tmp_path / "out") == b"".join(
        line + b"\n" for line in raw.split(b"\n") if b"whale" in line
    )


def test_text_is_given_to_a_command_as_utf8_whatever_its_encoding(tmp_path) -> None:
    data = tmp_path / "latin1.txt"
    data.write_bytes("café whale\nnaïve\n".encode("latin-1"))
    run(tmp_path, GREP, [str(data)], encoding="latin-1")
    assert part_bytes(tmp_path / "out") == "café whale\n".encode()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_parsed_input_formats_are_refused_before_any_task(tmp_path, fmt) -> None:
    data = tmp_path / "in.data"
    data.write_text('{"a": 1}\n' if fmt == "jsonl" else "a,b\n1,2\n")
    with pytest.raises(JobFailed, match=rf"reads lines of text, and --format {fmt} gives it"):
        run(tmp_path, GREP, [str(data)], input_format=fmt)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_an_output_format_asked_for_reads_the_lines_as_json_pairs(tmp_path) -> None:
    source = """
    import kubemr

    class Pairs(kubemr.MapReduce):
        def mapper_cmd(self):
            return ["awk", '{ printf "\\\\"%s\\\\"\\\\t%d\\\\n", $1, NR }']
    """
    data = tmp_path / "in.txt"
    data.write_text("a x\nb y\n")
    run(tmp_path, source, [str(data)], output_format="jsonl")
    assert read_pairs(tmp_path / "out") == [["a", 1], ["b", 2]]


# -- commands and Python together -------------------------------------------------------

COMMAND_MAPPER = f"""
import kubemr


class CountWords(kubemr.MapReduce):
    def mapper_cmd(self):
        return {AWK_JSON_WORDS!r}

    def reducer(self, word, counts):
        yield word, sum(counts)
"""


def test_a_mapper_command_feeds_a_python_reducer(tmp_path) -> None:
    inputs = make_inputs(tmp_path)
    summary = run(tmp_path, COMMAND_MAPPER, inputs, reducers=3)
    assert dict(read_pairs(tmp_path / "out")) == words(input_lines(inputs))
    assert summary["tasks"]["reduce"] == 3


def test_a_reducer_command_reads_sorted_json_lines(tmp_path) -> None:
    source = """
    import kubemr

    class UniqC(kubemr.MapReduce):
        def mapper(self, line):
            for word in line.split():
                yield word.lower(), 1

        def reducer_cmd(self):
            return "uniq -c"
    """
    inputs = make_inputs(tmp_path, copies=10)
    summary = run(tmp_path, source, inputs, reducers=2)
    counts = Counter(w.lower() for line in input_lines(inputs) for w in line.split())
    # `uniq -c` of the sorted `"word"<TAB>1` lines: one line per word, as uniq writes it.
    expected = sorted(f"{n:7d} {json.dumps(w)}\t1" for w, n in counts.items())
    assert sorted(part_lines(tmp_path / "out")) == expected
    assert summary["counters"]["kubemr"]["reduce_input_groups"] == len(counts)


def test_commands_only_pass_raw_lines_and_group_by_the_text_before_the_tab(tmp_path) -> None:
    # Hadoop Streaming's word count: no JSON anywhere, keys grouped by their text.
    source = f"""
    import kubemr
    from kubemr import MRStep

    class StreamingCount(kubemr.MapReduce):
        def steps(self):
            return [MRStep(mapper_cmd={AWK_RAW_WORDS!r}, combiner_cmd={AWK_SUM!r},
                           reducer_cmd={AWK_SUM!r})]
    """
    inputs = make_inputs(tmp_path)
    run(tmp_path, source, inputs, reducers=3, split_size="2KiB")
    got = dict(line.split("\t") for line in part_lines(tmp_path / "out"))
    assert {w: int(n) for w, n in got.items()} == words(input_lines(inputs))


def test_a_combiner_command_between_python_mapper_and_reducer(tmp_path) -> None:
    # mrjob's MRWordFreqCountWithCombinerCmd: the combiner is `cat`, and the counts hold.
    source = f"""
    import kubemr

    class WithCombinerCmd(kubemr.MapReduce):
        def mapper(self, line):
            for word in line.split():
                yield word.lower(), 1

        def combiner_cmd(self):
            return {AWK_SUM!r}  # reads `"word"<TAB>1`, writes `"word"<TAB>n`: JSON still

        def reducer(self, word, counts):
            yield word, sum(counts)
    """
    inputs = make_inputs(tmp_path)
    summary = run(tmp_path, source, inputs, reducers=2, split_size="4KiB")
    counts = Counter(w.lower() for line in input_lines(inputs) for w in line.split())
    assert dict(read_pairs(tmp_path / "out")) == dict(counts)
    # The combiner command summed each map task's counts: fewer pairs were shuffled.
    kub = summary["counters"]["kubemr"]
    assert kub["shuffle_records"] < sum(counts.values())


def test_a_command_in_the_first_step_of_two(tmp_path) -> None:
    source = f"""
    import kubemr
    from kubemr import MRStep

    class MostUsed(kubemr.MapReduce):
        def steps(self):
            return [
                MRStep(mapper_cmd={AWK_JSON_WORDS!r}, reducer=self.total),
                MRStep(reducer=self.top),
            ]

        def total(self, word, counts):
            yield None, [sum(counts), word]

        def top(self, _, pairs):
            yield "top", max(pairs)
    """
    inputs = make_inputs(tmp_path)
    summary = run(tmp_path, source, inputs, reducers=2)
    assert len(summary["steps"]) == 2
    counts = words(input_lines(inputs))
    assert read_pairs(tmp_path / "out") == [["top", max([n, w] for w, n in counts.items())]]


def test_a_later_step_command_reads_mrjobs_json_lines(tmp_path) -> None:
    source = """
    import kubemr
    from kubemr import MRStep

    class Then(kubemr.MapReduce):
        def steps(self):
            return [MRStep(mapper=self.split, reducer=kubemr.SUM), MRStep(mapper_cmd="cat")]

        def split(self, line):
            for word in line.split():
                yield (word.lower(), len(word)), 1
    """
    inputs = make_inputs(tmp_path, copies=5)
    run(tmp_path, source, inputs, reducers=2)
    counts = Counter((w.lower(), len(w)) for line in input_lines(inputs) for w in line.split())
    # `cat` wrote back the lines it read: key and value as mrjob's JSONProtocol writes them.
    expected = sorted(f"{json.dumps(list(k))}\t{n}" for k, n in counts.items())
    assert sorted(part_lines(tmp_path / "out")) == expected


# grep with the shipped file by its name, in the working directory; the input file from
# the environment, as Hadoop Streaming gives it; a counter, as Hadoop Streaming reads them.
BY_FILE = (
    'grep -c -F -f patterns.txt | sed "s|^|\\"$map_input_file\\"\t|"; '
    "echo reporter:counter:grep,tasks,1 >&2"
)


def test_a_command_runs_in_a_directory_of_the_shipped_files_with_the_task_environment(
    tmp_path,
) -> None:
    (tmp_path / "patterns.txt").write_text("whale\nIshmael\n")
    source = f"""
    import kubemr

    class ByFile(kubemr.MapReduce):
        FILES = ["patterns.txt"]

        def mapper_cmd(self):
            return ["sh", "-c", {BY_FILE!r}]

        reducer = kubemr.SUM
    """
    inputs = make_inputs(tmp_path)
    summary = run(tmp_path, source, inputs, reducers=2)
    expected = {
        p: sum(
            1 for line in Path(p).read_text().splitlines() if "whale" in line or "Ishmael" in line
        )
        for p in inputs
    }
    assert dict(read_pairs(tmp_path / "out")) == expected
    # Counter lines of its stderr, as Hadoop Streaming reads them.
    assert summary["counters"]["grep"]["tasks"] == summary["tasks"]["map"]


# -- failures ----------------------------------------------------------------------------

FAILING = """
import kubemr


class Fails(kubemr.MapReduce):
    def mapper_cmd(self):
        return ["sh", "-c", "cat > /dev/null; for i in $(seq 1 40); do echo noise $i >&2; done;"
                            " echo 'grep: Unmatched [' >&2; exit 2"]

    reducer = kubemr.SUM
"""


def test_a_failing_command_fails_the_job_naming_it_its_status_and_stderr(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a\nb\n")
    with pytest.raises(JobFailed) as info:
        run(tmp_path, FAILING, [str(data)], max_attempts=2)
    message = str(info.value)
    assert "task map 0" in message
    assert "the mapper_cmd `sh -c 'cat > /dev/null;" in message
    assert "exited with status 2 (map task on" in message
    assert "\n    noise 40\n    grep: Unmatched [" in message  # its stderr's last lines
    assert "noise 40" in message and "noise 10" not in message  # only the tail
    assert "failed on all 2 attempts" in message  # retried as any failure
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_command_not_found_is_named_before_any_task(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a\n")
    source = GREP.replace('["grep", "-e", "whale"]', '"no-such-tool-kubemr --fast"')
    with pytest.raises(JobFailed, match=r"command not found: no-such-tool-kubemr is not on \$PATH"):
        run(tmp_path, source, [str(data)])
    # A path is looked for in the task's working directory, where shipped files are.
    source = GREP.replace('["grep", "-e", "whale"]', '"./no-such-tool-kubemr"')
    with pytest.raises(JobFailed, match=r"\./no-such-tool-kubemr does not exist \(a relative"):
        run(tmp_path, source, [str(data)], "path.py", max_attempts=1)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_output_that_python_cannot_read_names_the_line(tmp_path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    source = COMMAND_MAPPER.replace(f"return {AWK_JSON_WORDS!r}", 'return "cat"')
    with pytest.raises(JobFailed, match=r"line 1 of the output of the mapper_cmd `cat`, b'a b'"):
        run(tmp_path, source, [str(data)], max_attempts=1)


def test_megabytes_through_cat_do_not_block_on_a_full_pipe(tmp_path) -> None:
    data = tmp_path / "big.txt"
    line = "the quick brown fox jumps over the lazy dog " * 4 + "\n"
    data.write_text(line * 60_000)  # about 10 MB, one split
    source = GREP.replace('["grep", "-e", "whale"]', '"cat"')
    summary = run(tmp_path, source, [str(data)], split_size="64MiB", workers=1)
    assert summary["tasks"]["map"] == 1
    assert part_bytes(tmp_path / "out") == data.read_bytes()


def test_megabytes_through_a_reducer_command(tmp_path) -> None:
    data = tmp_path / "big.txt"
    data.write_text("".join(f"{i % 5000} {'x' * 40}\n" for i in range(100_000)))
    source = """
    import kubemr

    class Cat(kubemr.MapReduce):
        def mapper(self, line):
            key, value = line.split()
            yield int(key), value

        def reducer_cmd(self):
            return "cat"
    """
    run(tmp_path, source, [str(data)], reducers=1, memory="64MiB")
    lines = part_lines(tmp_path / "out")
    assert len(lines) == 100_000
    assert [int(x.split("\t")[0]) for x in lines] == sorted(i % 5000 for i in range(100_000))


# -- SIGTERM to a pod, and its process killed outright ------------------------------------

LONG = """
import kubemr


class Long(kubemr.MapReduce):
    def mapper_cmd(self):
        return ["sh", "-c", "echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait"]
"""


def plan_input(tmp_path: Path, source: str, inputs: list[str]) -> dict:
    return {
        "name": "cmd",
        "namespace": "default",
        "uid": "0123456789abcdef",
        "work_url": str(tmp_path / "work"),
        "spec": {"job": {"source": source}, "inputs": inputs, "output": str(tmp_path / "out")},
    }


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_long_task(tmp_path: Path, source: str) -> tuple[subprocess.Popen, Path, list[int]]:
    data = tmp_path / "in.txt"
    data.write_text("a\n")
    pids = tmp_path / "pids"
    source = source.format(pids=pids)
    env = {"KUBEMR_SPEC": json.dumps(plan_input(tmp_path, source, [str(data)]))}
    code, _, err = run_worker(tmp_path, "plan", env=env, pod="cmd")
    assert code == 0, err
    (tmp_path / "tmp").mkdir()  # the worker's $TMPDIR: where a command's working dir is
    proc, message = start_worker(tmp_path, "map-0", 0, {"TMPDIR": str(tmp_path / "tmp")}, "cmd")
    wait_for("the command's pids", lambda: pids.exists() and len(pids.read_text().split()) == 2)
    found = [int(p) for p in pids.read_text().split()]
    assert all(running(p) for p in found)
    assert list((tmp_path / "tmp").glob("kubemr-cmd-*"))  # the command's working dir
    return proc, message, found


def test_sigterm_to_a_worker_kills_its_command_and_what_the_command_started(tmp_path) -> None:
    proc, message, pids = start_long_task(tmp_path, LONG)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED
    assert json.loads(message.read_text())["reason"] == "Terminated"
    wait_for("the command's processes to end", lambda: not any(running(p) for p in pids))
    assert not list((tmp_path / "tmp").glob("kubemr-cmd-*"))  # its working dir removed


def test_a_worker_killed_outright_takes_its_command_with_it(tmp_path) -> None:
    # The kernel kills the command when its task's process dies (PR_SET_PDEATHSIG).
    source = LONG.replace(
        '["sh", "-c", "echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait"]',
        '["sh", "-c", "echo $$ >> {pids}; echo $$ >> {pids}; exec sleep 300"]',
    )
    proc, _, pids = start_long_task(tmp_path, source)
    proc.kill()
    proc.communicate(timeout=60)
    wait_for("the command's processes to end", lambda: not any(running(p) for p in pids))


def test_the_pod_path_gives_the_local_output(tmp_path) -> None:
    inputs = make_inputs(tmp_path, copies=10)
    source = COMMAND_MAPPER
    spec = plan_input(tmp_path, source, inputs)
    spec["spec"].update({"splitSize": 1000, "reducers": 2})
    code, msg, err = run_worker(tmp_path, "plan", env={"KUBEMR_SPEC": json.dumps(spec)}, pod="c")
    assert code == 0, err
    shapes = [StepShape(s["maps"], s["reducers"]) for s in msg["steps"]]
    for stage in job_stages(shapes)[1:]:
        for index in range(stage.tasks):
            code, _, err = run_worker(tmp_path, stage.name, index, pod="c")
            assert code == 0, err
    local = tmp_path / "local"
    run_file(job_file(tmp_path, source, "local.py"), inputs=inputs, output=str(local),
             split_size=1000, reducers=2, workers=2)  # fmt: skip
    for part in sorted(local.glob("part-*")):
        assert (tmp_path / "out" / part.name).read_bytes() == part.read_bytes()


# -- the rules, without running a job ---------------------------------------------------


def steps_of(source: str) -> list[MRStep]:
    namespace: dict = {}
    exec(source, namespace)
    cls = next(v for v in namespace.values() if isinstance(v, type) and v.__name__ == "J")
    job = cls()
    job.params = {}
    return job_steps(job)


def test_a_class_with_only_a_mapper_command_is_a_job() -> None:
    steps = steps_of(GREP.replace("class Grep", "class J"))
    assert steps[0].mapper_cmd == ["grep", "-e", "whale"] and steps[0].mapper is None
    assert not steps[0].has_reducer()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def mapper_cmd(self): return 'cat'\n    def mapper(self, line): yield line, 1",
         r"mapper_cmd is the whole mapper, so it cannot have mapper beside it"),
        ("def mapper_cmd(self): return 'cat'\n    def mapper_final(self): yield 1, 1",
         r"cannot have mapper_final beside it"),
        ("def mapper(self, line): yield line, 1\n    reducer = kubemr.SUM\n"
         "    def reducer_cmd(self): return 'cat'",
         r"reducer_cmd is the whole reducer, so it cannot have reducer beside it"),
        ("def mapper_cmd(self): return ''", r"mapper_cmd '' is empty"),
        ("def mapper_cmd(self): return 'grep \"unclosed'", r"cannot be split into arguments"),
        ("def mapper_cmd(self): return ['grep', 3]", r"give a command line \(a str\)"),
        ("def mapper(self, line): yield line, 1\n    def mapper_pre_filter(self): return 'grep x'",
         r"mapper_pre_filter is not supported: filter in the mapper itself"),
        ("TOTAL_ORDER = True\n    def mapper_cmd(self): return 'cat'\n    reducer = kubemr.SUM",
         r"TOTAL_ORDER samples the keys of the last step's mapper"),
    ],
)  # fmt: skip
def test_command_steps_that_are_refused(body: str, message: str) -> None:
    source = f"import kubemr\n\nclass J(kubemr.MapReduce):\n    {body}\n"
    with pytest.raises(JobDefinitionError, match=message):
        steps_of(source)


def step(**fields) -> MRStep:
    return MRStep(**fields)


def mapper(line):
    yield line, 1


def reducer(key, values):
    yield key, sum(values)


@pytest.mark.parametrize(
    ("steps", "reducers", "fmt", "expected"),
    [
        # map-only: the job's output, unchanged in a format that writes lines
        ([step(mapper_cmd="cat")], [0], "raw-value", {(0, "mapper"): CommandIO(False, LINES)}),
        ([step(mapper_cmd="cat")], [0], "jsonl", {(0, "mapper"): CommandIO(False, JSON)}),
        # a Python reducer next: JSON; a command next: raw
        ([step(mapper_cmd="cat", reducer=reducer)], [2], "jsonl",
         {(0, "mapper"): CommandIO(False, JSON)}),
        ([step(mapper_cmd="a", combiner_cmd="b", reducer_cmd="c")], [2], "raw-value",
         {(0, "mapper"): CommandIO(False, RAW), (0, "combiner"): CommandIO(True, RAW),
          (0, "reducer"): CommandIO(True, LINES)}),
        # a Python combiner between two commands: JSON both ways
        ([step(mapper_cmd="a", combiner=reducer, reducer_cmd="c")], [2], "raw-value",
         {(0, "mapper"): CommandIO(False, JSON), (0, "reducer"): CommandIO(False, LINES)}),
        # across steps; a step with nothing to run passes its input on
        ([step(mapper=mapper, reducer_cmd="a"), step(), step(mapper_cmd="b")], [1, 0, 0],
         "text", {(0, "reducer"): CommandIO(False, RAW), (2, "mapper"): CommandIO(True, LINES)}),
        ([step(mapper_cmd="a", reducer=reducer), step(mapper_cmd="b")], [1, 0], "tsv",
         {(0, "mapper"): CommandIO(False, JSON), (1, "mapper"): CommandIO(False, JSON)}),
        # --reducers 0: a reducer command never runs
        ([step(mapper=mapper, reducer_cmd="a")], [0], "raw-value", {}),
    ],
)  # fmt: skip
def test_what_each_command_reads_and_writes(steps, reducers, fmt, expected) -> None:
    assert command_io(steps, reducers, fmt) == expected


def test_commands_split_as_a_shell_splits_words_and_lines_join_back() -> None:
    assert argv_of("grep -e 'a b' \"c\"") == ["grep", "-e", "a b", "c"]
    assert argv_of(["sh", "-c", "a | b"]) == ["sh", "-c", "a | b"]
    assert argv_of(kubemr.cmd_line(["sh", "-c", "grep -e 'x y' || true"])) == [
        "sh", "-c", "grep -e 'x y' || true",
    ]  # fmt: skip
    assert pair_lines([("k", "v\tw"), ("line", None)], True, "x") == b"k\tv\tw\nline\n"
    assert pair_lines([(["a", 1], {"b": None}), ("é", 1.5)], False, "x") == (
        b'["a", 1]\t{"b": null}\n"\\u00e9"\t1.5\n'
    )


def test_run_command_streams_counts_and_is_killed_when_stopped(tmp_path) -> None:
    blobs = [b"x" * 100_000 + b"\n"] * 50  # 5 MB in, 5 MB out
    got = b"".join(run_command(["cat"], blobs))
    assert got == b"".join(blobs)
    # A last line without a newline gets one; a command that stops reading is not an error.
    assert b"".join(run_command(["printf", "a\\nb"], [b"ignored\n"] * 1000)) == b"a\nb\n"
    counted: list = []
    out = run_command(["sh", "-c", "echo reporter:counter:g,n,5 >&2; echo ok"], [],
                      on_counter=lambda *c: counted.append(c))  # fmt: skip
    assert list(out) == [b"ok\n"] and counted == [("g", "n", 5)]
    pid = tmp_path / "pid"
    stopped = run_command(["sh", "-c", f"echo $$ > {pid}; echo first; exec sleep 300"], [])
    assert next(stopped) == b"first\n"
    assert running(int(pid.read_text()))
    stopped.close()  # the caller stops early: the command is killed, not waited for
    assert not running(int(pid.read_text()))
