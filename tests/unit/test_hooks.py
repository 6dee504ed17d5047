"""Per-task hooks (mapper_init/final, combiner_init/final, reducer_init/final) as mrjob
has them: each job is a file run by value, as `kubemr run job.py` runs it, on the real
local runner, and checked against plain Python."""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubemr.cli import app
from kubemr.errors import JobDefinitionError, JobFailed
from kubemr.loader import load_job_class
from kubemr.runner import run_job
from kubemr.spec import LocalOptions
from tests.jobfiles import job_file, run_file

LINES = [
    f"line {i} the quick brown fox {'jumps ' * (i % 4)}over the lazy dog {i % 7}"
    for i in range(120)
] + ["", "café naïve  spaces\tand tab", "the end"]
TEXT = "\n".join(LINES) + "\n"


def text_input(tmp_path: Path) -> str:
    path = tmp_path / "in.txt"
    path.write_text(TEXT)
    return str(path)


def read_parts(out: str | Path) -> list[list[str]]:
    """Each part file's lines, in part order."""
    names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    return [Path(out, n).read_text().splitlines() for n in names]


def read_pairs(out: str | Path) -> list:
    return [json.loads(line) for part in read_parts(out) for line in part]


# -- mrjob's word count utility: per-task totals from mapper_final ---------------------------

MR_WC = """
    import kubemr


    class MRWordCountUtility(kubemr.MapReduce):
        # mrjob's examples/mr_wc.py, with kubemr's one-argument mapper

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.chars = 0
            self.words = 0
            self.lines = 0

        def mapper_init(self):
            self.increment_counter("hooks", "mapper_init")

        def mapper(self, line):
            # Nothing per line: the totals go out once, from mapper_final.
            self.chars += len(line) + 1  # +1 for newline
            self.words += sum(1 for word in line.split() if word.strip())
            self.lines += 1

        def mapper_final(self):
            self.increment_counter("hooks", "mapper_final")
            yield ("chars", self.chars)
            yield ("words", self.words)
            yield ("lines", self.lines)

        def reducer(self, key, values):
            yield (key, sum(values))
"""


def wc_reference() -> dict:
    return {
        "chars": sum(len(line) + 1 for line in LINES),
        "words": sum(len(line.split()) for line in LINES),
        "lines": len(LINES),
    }


def test_wc_with_mapper_final_gives_per_task_totals(tmp_path) -> None:
    path = job_file(tmp_path, MR_WC)
    out = tmp_path / "out"
    summary = run_file(
        path, inputs=[text_input(tmp_path)], output=str(out), split_size=700, workers=2
    )
    maps = summary["tasks"]["map"]
    assert maps > 3
    assert dict(read_pairs(out)) == wc_reference()
    assert summary["attempts"]["failed"] == 0
    # Once per map task, and three pairs from each.
    assert summary["counters"]["hooks"] == {"mapper_init": maps, "mapper_final": maps}
    assert summary["counters"]["kubemr"]["map_output_records"] == 3 * maps


def test_wc_with_mapper_final_through_the_cli(tmp_path) -> None:
    path = job_file(tmp_path, MR_WC)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            path,
            "-i",
            text_input(tmp_path),
            "-o",
            str(out),
            "--split-size",
            "900",
            "--output-format",
            "tsv",
            "-q",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for part in read_parts(out) for line in part]
    expected = wc_reference()
    assert sorted(lines) == sorted(f'"{k}"\t{v}' for k, v in expected.items())
    assert json.loads(result.stdout)["counters"]["hooks"]["mapper_final"] > 1


# -- top N over all of a reducer's keys, in reducer_final -----------------------------------

TOP_N = """
    import heapq

    import kubemr


    class TopWords(kubemr.MapReduce):
        combiner = kubemr.SUM
        N = 5

        def mapper(self, line):
            for word in line.split():
                yield word, 1

        def reducer_init(self):
            self.top = []

        def reducer(self, word, counts):
            # No pairs per key (returning None, as mrjob allows): only the top N at the end.
            item = (sum(counts), word)
            if len(self.top) < self.N:
                heapq.heappush(self.top, item)
            else:
                heapq.heappushpop(self.top, item)

        def reducer_final(self):
            for count, word in sorted(self.top, reverse=True):
                yield word, count
"""


@pytest.mark.parametrize("reducers", [1, 3])
def test_top_n_in_reducer_final(tmp_path, reducers) -> None:
    path = job_file(tmp_path, TOP_N)
    out = tmp_path / "out"
    summary = run_file(
        path, inputs=[text_input(tmp_path)], output=str(out), split_size=800, reducers=reducers
    )
    counts = Counter(TEXT.split())
    parts = read_parts(out)
    assert len(parts) == reducers
    seen: dict = {}
    for part in parts:
        pairs = [json.loads(line) for line in part]
        # Each part holds the top 5 of its own keys, largest first.
        part_keys = {w for w, _ in pairs}
        assert len(pairs) == min(5, len(part_keys)) and len(part_keys) == len(pairs)
        assert [c for _, c in pairs] == sorted((c for _, c in pairs), reverse=True)
        for word, count in pairs:
            assert counts[word] == count
        seen.update(pairs)
    top = heapq.nlargest(5, ((c, w) for w, c in counts.items()))
    if reducers == 1:
        assert [tuple(p) for p in map(json.loads, parts[0])] == [(w, c) for c, w in top]
    # The overall top 5 is among the per-reducer tops.
    assert sorted(heapq.nlargest(5, ((c, w) for w, c in seen.items()))) == sorted(top)
    assert summary["counters"]["kubemr"]["output_records"] == sum(map(len, parts))


# -- a multi-step job with hooks per MRStep --------------------------------------------------

MULTI_STEP = """
    import kubemr


    class Steps(kubemr.MapReduce):
        def steps(self):
            return [
                kubemr.MRStep(
                    mapper_init=self.count_lines_init,
                    mapper=self.words,
                    mapper_final=self.count_lines_final,
                    combiner=self.add,
                    reducer_init=self.keys_init,
                    reducer=self.add_and_count,
                    reducer_final=self.keys_final,
                ),
                kubemr.MRStep(
                    mapper_init=self.totals_init,
                    mapper=self.totals,
                    mapper_final=self.totals_final,
                    reducer=self.add,
                    reducer_final=self.reduce_tasks,
                    reducers=1,
                ),
            ]

        def hook(self, name):
            self.increment_counter("hooks", name)

        # step 1
        def count_lines_init(self):
            self.hook("1.mapper_init")
            self.lines = 0

        def words(self, line):
            self.lines += 1
            for word in line.split():
                yield word, 1

        def count_lines_final(self):
            self.hook("1.mapper_final")
            yield "~lines", self.lines

        def add(self, key, values):
            yield key, sum(values)

        def keys_init(self):
            self.hook("1.reducer_init")
            self.keys = 0

        def add_and_count(self, key, values):
            self.keys += 1
            yield key, sum(values)

        def keys_final(self):
            self.hook("1.reducer_final")
            yield "~keys", self.keys

        # step 2: its input is step 1's (key, value) pairs
        def totals_init(self):
            self.hook("2.mapper_init")
            self.records = 0

        def totals(self, pair):
            self.records += 1
            key, value = pair
            yield (key if key.startswith("~") else "~words"), value

        def totals_final(self):
            self.hook("2.mapper_final")
            yield "~pairs", self.records

        def reduce_tasks(self):
            self.hook("2.reducer_final")
            yield "~reduce tasks", 1
"""


def test_multi_step_hooks_run_per_task_of_their_own_step(tmp_path) -> None:
    path = job_file(tmp_path, MULTI_STEP)
    out = tmp_path / "out"
    summary = run_file(
        path, inputs=[text_input(tmp_path)], output=str(out), split_size=900, reducers=3
    )
    step1, step2 = summary["steps"]
    assert step1["maps"] > 1 and step1["reduces"] == 3
    assert step2["maps"] == 3 and step2["reduces"] == 1
    assert summary["counters"]["hooks"] == {
        "1.mapper_init": step1["maps"],
        "1.mapper_final": step1["maps"],
        "1.reducer_init": 3,
        "1.reducer_final": 3,
        "2.mapper_init": step2["maps"],
        "2.mapper_final": step2["maps"],
        "2.reducer_final": 1,
    }
    distinct = len(set(TEXT.split()))
    expected = {
        "~lines": len(LINES),
        "~words": len(TEXT.split()),
        "~keys": distinct + 1,  # the words, and "~lines"
        # step 1's output pairs: one per key, and one "~keys" per reduce task
        "~pairs": distinct + 1 + 3,
        "~reduce tasks": 1,
    }
    pairs = read_pairs(out)
    assert dict(pairs) == expected and len(pairs) == len(expected)
    # reducer_final's pair comes after the reducer's sorted output
    assert pairs[-1] == ["~reduce tasks", 1]


# -- a map-only job ------------------------------------------------------------------------

MAP_ONLY = """
    import kubemr


    class Grep(kubemr.MapReduce):
        OUTPUT_FORMAT = "text"

        def mapper_init(self):
            self.kept = 0
            yield "# start", None

        def mapper(self, line):
            if "fox" in line:
                self.kept += 1
                yield line, None

        def mapper_final(self):
            yield "# kept", self.kept
"""


def test_hooks_on_a_map_only_job(tmp_path) -> None:
    path = job_file(tmp_path, MAP_ONLY)
    out = tmp_path / "out"
    summary = run_file(path, inputs=[text_input(tmp_path)], output=str(out), split_size=900)
    parts = read_parts(out)
    assert summary["tasks"]["reduce"] == 0 and len(parts) == summary["tasks"]["map"] > 1
    kept = []
    for part in parts:
        # init's pair first, then the mapper's in input order, then final's
        assert part[0] == "# start"
        assert part[-1] == f"# kept\t{len(part) - 2}"
        kept.extend(part[1:-1])
    assert kept == [line for line in LINES if "fox" in line]


# -- combiner hooks ---------------------------------------------------------------------------

COMBINER_HOOKS = """
    import kubemr


    class Combined(kubemr.MapReduce):
        reducer = kubemr.SUM

        def mapper(self, line):
            for word in line.split():
                yield word, 1

        def combiner_init(self):
            self.increment_counter("hooks", "combiner_init")
            self.keys = 0

        def combiner(self, word, counts):
            self.keys += 1
            yield word, sum(counts)

        def combiner_final(self):
            self.increment_counter("hooks", "combiner_final")
            # joins the combined output, and so reaches the reducer
            yield "~applications", 1
"""


@pytest.mark.parametrize("small_buffer", [False, True])
def test_combiner_hooks_run_around_each_combiner_application(tmp_path, small_buffer) -> None:
    path = job_file(tmp_path, COMBINER_HOOKS)
    words = [f"w{i % 40_000}" for i in range(200_000)]
    data = tmp_path / "words.txt"
    data.write_text("\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10)))
    out = tmp_path / "out"
    # One map task; a small buffer and input chunks make it combine and spill many times.
    small = {"memory": 256 << 10, "chunk_bytes": 32 << 10} if small_buffer else {}
    options = LocalOptions.checked(
        inputs=[str(data)], output=str(out), split_size=0, workers=1, **small
    )
    summary = run_job(load_job_class(path), options)
    hooks = summary["counters"]["hooks"]
    applications = hooks["combiner_init"]
    assert hooks["combiner_final"] == applications
    assert summary["tasks"]["map"] == 1
    if small_buffer:
        assert applications > 2
        assert summary["counters"]["kubemr"]["map_spilled_records"] > 0
    else:
        assert applications == 1  # once, when the task's output is written
    assert dict(read_pairs(out)) == {**Counter(words), "~applications": applications}


def test_combiner_hooks_with_a_built_in_combiner_are_refused(tmp_path) -> None:
    source = COMBINER_HOOKS.replace(
        "        reducer = kubemr.SUM",
        "        reducer = kubemr.SUM\n        combiner = kubemr.SUM",
    ).replace("def combiner(self, word, counts)", "def unused(self, word, counts)")
    path = job_file(tmp_path, source)
    with pytest.raises(JobDefinitionError, match="combiner_init/combiner_final run around"):
        run_file(path, inputs=[text_input(tmp_path)], output=str(tmp_path / "o"))


# -- reducer hooks without a reducer: an identity reducer, as in mrjob ------------------------

IDENTITY_REDUCER = """
    import kubemr


    class Sorted(kubemr.MapReduce):
        def mapper(self, line):
            words = line.split()
            if words:
                yield words[0], len(words)

        def reducer_final(self):
            yield "~end", True
"""


def test_reducer_hooks_alone_give_an_identity_reduce(tmp_path) -> None:
    path = job_file(tmp_path, IDENTITY_REDUCER)
    out = tmp_path / "out"
    summary = run_file(path, inputs=[text_input(tmp_path)], output=str(out), reducers=1)
    assert summary["tasks"]["reduce"] == 1
    pairs = [tuple(p) for p in read_pairs(out)]
    expected = [(line.split()[0], len(line.split())) for line in LINES if line.split()]
    assert pairs[-1] == ("~end", True)
    assert sorted(pairs[:-1]) == sorted(expected)
    assert [k for k, _ in pairs[:-1]] == sorted(k for k, _ in expected)


# -- an exception in a hook fails the task, naming the hook ----------------------------------

FAILING_HOOK = """
    import kubemr


    class Fails(kubemr.MapReduce):
        def mapper(self, line):
            for word in line.split():
                yield word, 1

        def combiner(self, word, counts):
            yield word, sum(counts)

        def reducer(self, word, counts):
            yield word, sum(counts)

        def {hook}(self):
            raise ValueError("the {hook} hook broke")  # the failing line
            yield "never", 0
"""


@pytest.mark.parametrize(
    "hook",
    [
        "mapper_init",
        "mapper_final",
        "combiner_init",
        "combiner_final",
        "reducer_init",
        "reducer_final",
    ],
)
def test_an_exception_in_a_hook_fails_the_task_naming_it(tmp_path, hook) -> None:
    path = job_file(tmp_path, FAILING_HOOK.replace("{hook}", hook))
    out = tmp_path / "out"
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[text_input(tmp_path)], output=str(out), max_attempts=2)
    failure = info.value.failure
    assert failure.kind == "user-code"
    wave = "reduce" if hook.startswith("reducer") else "map"
    assert failure.task.startswith(wave)
    assert f"{hook} raised ValueError: the {hook} hook broke" in failure.message
    assert f'File "{path}"' in failure.traceback
    assert f'raise ValueError("the {hook} hook broke")  # the failing line' in failure.traceback
    assert "kubemr/task.py" not in failure.traceback
    assert not (out / "_SUCCESS").exists()


def test_a_hook_yielding_what_is_not_a_pair_is_named(tmp_path) -> None:
    source = MR_WC.replace('yield ("lines", self.lines)', 'yield "lines"')
    path = job_file(tmp_path, source)
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[text_input(tmp_path)], output=str(tmp_path / "o"), max_attempts=1)
    message = info.value.failure.message
    # found by the preflight, before any task ran
    assert info.value.failure.task == "preflight"
    assert "the mapper_final yielded 'lines' (a str)" in message and "(key, value)" in message


def test_a_task_that_finds_a_bad_hook_pair_names_the_hook(tmp_path) -> None:
    # A NaN key from mapper_final once a task has read more than the preflight samples.
    source = MR_WC.replace(
        'yield ("lines", self.lines)',
        'yield ("lines", self.lines)\n'
        "            if self.lines > 300:\n"
        '                yield float("nan"), 1',
    )
    path = job_file(tmp_path, source)
    data = tmp_path / "in.txt"
    data.write_text(TEXT * 3)
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[str(data)], output=str(tmp_path / "o"), max_attempts=1)
    failure = info.value.failure
    assert failure.task.startswith("map")
    assert "the mapper_final yielded key nan" in failure.message
    assert f"(map task on {data}" in failure.message


# -- the preflight runs the hooks as a map task would ----------------------------------------

PREFLIGHT = """
    import os

    import kubemr


    class Traced(kubemr.MapReduce):
        reducer = kubemr.SUM

        def trace(self, name):
            with open(self.params["trace"], "a") as fh:
                fh.write(f"{os.getpid()} {id(self)} {name}\\n")

        def setup(self):
            self.trace("setup")

        def mapper_init(self):
            self.trace("mapper_init")
            self.prefix = self.params["prefix"]

        def mapper(self, line):
            # fails without mapper_init's state
            for word in line.split():
                yield self.prefix + word, 1

        def mapper_final(self):
            self.trace("mapper_final")
            yield self.prefix + "~final", BAD

        def teardown(self):
            self.trace("teardown")
"""


def test_the_preflight_runs_hooks_in_task_order_and_checks_their_pairs(tmp_path) -> None:
    trace = tmp_path / "trace"
    good = job_file(tmp_path, PREFLIGHT.replace("BAD", "1"), "good.py")
    out = tmp_path / "out"
    params = {"trace": str(trace), "prefix": "w:"}
    summary = run_file(good, inputs=[text_input(tmp_path)], output=str(out), params=params)
    calls = [line.split() for line in trace.read_text().splitlines()]
    driver = [name for pid, _, name in calls if int(pid) == os.getpid()]
    assert driver == ["setup", "mapper_init", "mapper_final", "teardown"]
    tasks = [c for c in calls if int(c[0]) != os.getpid()]
    assert len([c for c in tasks if c[2] == "mapper_final"]) == summary["tasks"]["map"]
    counts = {f"w:{w}": n for w, n in Counter(TEXT.split()).items()}
    assert dict(read_pairs(out)) == {**counts, "w:~final": summary["tasks"]["map"]}

    # A value from mapper_final that cannot be shuffled fails before any task starts.
    trace.unlink()
    bad = job_file(tmp_path, PREFLIGHT.replace("BAD", "lambda: 0"), "bad.py")
    with pytest.raises(JobFailed) as info:
        run_file(bad, inputs=[text_input(tmp_path)], output=str(tmp_path / "o2"), params=params)
    assert info.value.failure.task == "preflight"
    assert "'w:~final'" in info.value.failure.message
    pids = {int(line.split()[0]) for line in trace.read_text().splitlines()}
    assert pids == {os.getpid()}  # no task ran


def test_generator_setup_is_still_refused_and_points_to_the_hooks(tmp_path) -> None:
    source = """
        import kubemr


        class Old(kubemr.MapReduce):
            reducer = kubemr.SUM

            def mapper(self, line):
                yield line, 1

            def setup(self):
                yield "x", 1
    """
    path = job_file(tmp_path, source)
    with pytest.raises(JobFailed) as info:
        run_file(path, inputs=[text_input(tmp_path)], output=str(tmp_path / "o"), max_attempts=1)
    assert "setup() contains `yield`" in info.value.failure.message
    assert "mapper_final or reducer_final" in info.value.failure.message


# -- total order: sampling runs the hooks, on an instance of its own --------------------------

TOTAL_ORDER = """
    import kubemr


    class Ordered(kubemr.MapReduce):
        TOTAL_ORDER = True

        def steps(self):
            return [
                kubemr.MRStep(mapper=self.words, combiner=kubemr.SUM, reducer=kubemr.SUM),
                kubemr.MRStep(
                    mapper_init=self.scale_init, mapper=self.by_count, mapper_final=self.done
                ),
            ]

        def words(self, line):
            for word in line.split():
                yield word, 1

        def scale_init(self):
            self.scale = int(self.params["scale"])
            self.seen = 0

        def by_count(self, pair):
            word, count = pair
            self.seen += 1
            self.increment_counter("step2", "records")
            yield count * self.scale, word

        def done(self):
            yield -1, f"seen {self.seen}"
"""


def test_total_order_sampling_runs_the_hooks_apart_from_the_task(tmp_path) -> None:
    path = job_file(tmp_path, TOTAL_ORDER)
    out = tmp_path / "out"
    summary = run_file(
        path,
        inputs=[text_input(tmp_path)],
        output=str(out),
        reducers=3,
        params={"scale": "10"},
    )
    counts = Counter(TEXT.split())
    pairs = [tuple(p) for p in read_pairs(out)]
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys)  # the parts in name order are one sorted sequence
    body = [p for p in pairs if p[0] != -1]
    assert sorted(body) == sorted((10 * n, w) for w, n in counts.items())
    finals = [v for k, v in pairs if k == -1]
    assert len(finals) == summary["steps"][1]["maps"]
    assert sum(int(v.split()[1]) for v in finals) == len(counts)
    # records counted by the tasks only, not by the key sampling
    assert summary["counters"]["step2"]["records"] == len(counts)
