"""Shell commands as a step's mapper, combiner or reducer (mrjob's ``mapper_cmd``,
``combiner_cmd`` and ``reducer_cmd``).

A command runs once per task, as one process: it reads the task's input as lines on its
standard input and writes its output as lines on its standard output.

- **How it runs.** A string is split into arguments as a shell splits words
  (``shlex.split``) and run without a shell, as mrjob and Hadoop Streaming run step
  commands: pipes and ``$VARIABLES`` need ``sh -c '...'``. A list is the arguments as
  they are. It runs in a working directory of its own that holds the job's shipped files
  under their names, with the task's environment (``$mapreduce_map_input_file`` and the
  other input variables in a first-step map task).
- **What it reads.** A first-step mapper command reads the split's lines, UTF-8 encoded
  (``--format text``, whatever ``--encoding`` decoded them from) or as they are in the
  file (``--format bytes``); other formats are refused before any task starts. A combiner
  or reducer command reads its task's pairs sorted by key, one ``key<TAB>value`` line
  each, written as mrjob's ``JSONProtocol`` writes them; so does a mapper command of a
  later step, whose records are the pairs of the step before.
- **What its lines become.** Lines that Python code reads next (a Python combiner or
  reducer, a later step's Python mapper), or that a format chosen with ``--output-format``
  writes, are read as ``key<TAB>value`` pairs of JSON (mrjob's internal protocol). Lines
  that another command reads next pass unchanged: they are only split at their first tab
  to group them by the text before it (a line without a tab is all key), as Hadoop
  Streaming does. Lines of the command that writes the job's output (the last step's
  reducer command, or mapper command of a map-only last step) are the output as they
  are: its default output format is ``raw-value``, and ``raw-value`` or ``text`` write
  them byte for byte.
- **How it fails.** A command that is not found, or exits with another status than 0,
  fails the task attempt with a message naming the command, its exit status and the last
  lines of its standard error; the attempt is retried as any failed one. Lines of
  standard error of the form ``reporter:counter:GROUP,NAME,AMOUNT`` (Hadoop Streaming's)
  add to the job's counters. A command is killed with its process group when its task
  stops early (a failure downstream, SIGTERM to a pod), and by the kernel when its task's
  process dies (``PR_SET_PDEATHSIG``): none outlives its task.

Standard input is fed and standard output read in one loop over the three pipes
(:mod:`selectors`), so a command that writes much before reading all its input never
blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubemr.job import MapReduce, MRStep, job_steps
from kubemr.output import JSONProtocol
from kubemr.shuffle import MapCollector, UserCodeFailure, first_problem, read_segment_blocks

Command = str | Sequence[str]

RAW = "raw"  # lines another command reads: split at the first tab, joined back as they were
JSON = "json"  # lines Python reads: `key<TAB>value`, both JSON (mrjob's JSONProtocol)
LINES = "lines"  # the job's output: written as they are
UNCHANGED_FORMATS = ("raw-value", "text")
"""Output formats that write a command's output lines as they are."""
COMMAND_OUTPUT_FORMAT = "raw-value"
"""The output format of a job whose output a command writes, unless one is asked for."""

STDERR_TAIL_LINES = 20
STDERR_LINE_BYTES = 300
READ_BYTES = 1 << 16
BATCH_PAIRS = 16384
_COUNTER = re.compile(rb"reporter:counter:([^,]*),([^,]*),(-?\d+)\Z")


# --------------------------------------------------------------------------- errors


class CommandError(Exception):
    """A step's command could not run, failed, or wrote what its reader refuses."""

    def describe(self, where: str) -> str:
        return f"{self} ({where})"


class CommandNotFound(CommandError):
    """The command's program is not there (or not executable)."""


class CommandFailed(CommandError):
    """The command exited with another status than 0, or was killed by a signal."""

    def __init__(self, shown: str, returncode: int, stderr_tail: list[str]) -> None:
        self.shown = shown
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        if returncode < 0:
            try:
                status = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                status = f"was killed by signal {-returncode}"
        else:
            status = f"exited with status {returncode}"
        self.head = f"{shown} {status}"
        if stderr_tail:
            self.tail = "; the last lines of its stderr:\n" + "\n".join(
                f"    {line}" for line in stderr_tail
            )
        else:
            self.tail = "; its stderr is empty"
        super().__init__(self.head + self.tail)

    def describe(self, where: str) -> str:
        return f"{self.head} ({where}){self.tail}"

    def __reduce__(self) -> Any:
        return (type(self), (self.shown, self.returncode, self.stderr_tail))


class CommandFailure(UserCodeFailure):
    """A command's error as its task reports it: a failure of the user's code (retried
    as any), naming the role, the command and the task, without a Python traceback."""

    def __init__(self, role: str, where: str, cause: CommandError) -> None:
        super().__init__(role, where, cause, raised=False)
        named = isinstance(cause, CommandNotFound | CommandFailed)  # by the command alone
        self.args = ((f"the {role} " if named else "") + cause.describe(where),)


class CommandInputError(CommandError):
    """What the task would feed the command cannot be written as lines."""


class CommandOutputError(CommandError):
    """A line of the command's output is not what its reader needs."""


# --------------------------------------------------------------------------- commands


def argv_of(command: Command) -> list[str]:
    """The arguments a command runs with: a string split as a shell splits words, a list
    as it is. ``ValueError`` for an empty command, an unbalanced quote or another type."""
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"{command!r} cannot be split into arguments ({exc})") from None
    elif isinstance(command, list | tuple) and all(isinstance(a, str) for a in command):
        argv = list(command)
    else:
        raise ValueError(
            f"is {command!r:.200}: give a command line (a str) or its arguments (a list of str)"
        )
    if not argv:
        raise ValueError(f"{command!r} is empty: give the command to run")
    return argv


def cmd_line(args: Iterable[Any]) -> str:
    """A command line that a shell (or :func:`argv_of`) splits back into ``args``, each
    quoted as needed: mrjob's ``mrjob.util.cmd_line``."""
    return shlex.join(str(a) for a in args)


def shown(command: Command) -> str:
    """A command as messages show it."""
    text = command if isinstance(command, str) else shlex.join(command)
    return f"`{text[:300]}`" + ("..." if len(text) > 300 else "")


def missing_program(steps: Sequence[MRStep]) -> str | None:
    """The first command whose program is a bare name found nowhere on ``$PATH``, said as
    an error; None when there is none. A path (``./tool``, ``/usr/bin/tool``) is left to
    the task: it may be a file shipped with the job, in the task's working directory."""
    for i, step in enumerate(steps):
        for field in ("mapper_cmd", "combiner_cmd", "reducer_cmd"):
            command = getattr(step, field)
            if command is None:
                continue
            program = argv_of(command)[0]
            if "/" not in program and shutil.which(program) is None:
                where = f"step {i + 1} " if len(steps) > 1 else ""
                return (
                    f"the {where}{field} {shown(command)}: command not found: {program} "
                    "is not on $PATH here; install it in the worker image (and on this "
                    "machine for kubemr run), or give its path"
                )
    return None


def input_problem(step: MRStep, fmt: str, with_offset: bool) -> str | None:
    """Why a first step's mapper command cannot read input of format ``fmt``, or None."""
    if step.mapper_cmd is None:
        return None
    if fmt not in ("text", "bytes"):
        return (
            f"mapper_cmd {shown(step.mapper_cmd)} reads lines of text, and --format {fmt} "
            "gives it parsed records: use --format text (or bytes, for the lines as they "
            "are in the files)"
        )
    if with_offset:
        return (
            f"mapper_cmd {shown(step.mapper_cmd)} reads the lines alone: INPUT_WITH_OFFSET "
            "does not apply to it"
        )
    return None


# --------------------------------------------------------------------------- who reads what


@dataclass(frozen=True)
class CommandIO:
    """How one command of a job talks to its neighbours: whether its input pairs are
    another command's lines (``raw_in``: joined back as they were, instead of written as
    JSON), and what its output lines become (``RAW``, ``JSON`` or ``LINES``)."""

    raw_in: bool
    out: str


def command_io(
    steps: Sequence[MRStep], reducers: Sequence[int], output_format: str
) -> dict[tuple[int, str], CommandIO]:
    """Each command's :class:`CommandIO`, by ``(step, role)`` (pure).

    The job is a chain of phases, per step a map phase and, with reducers, a combine and
    a reduce phase; each runs a command, Python code, or nothing (data passes through).
    A command's lines stay raw when the next phase that runs something is a command, are
    the job's output when it is the job's last phase (and ``output_format`` writes lines
    unchanged), and are read as JSON pairs otherwise."""
    phases: list[tuple[int, str, str]] = []  # (step, role, "cmd" | "py" | "")
    for s, step in enumerate(steps):
        mapper = step.mapper or step.mapper_batch or step.mapper_raw
        phases.append((s, "mapper", _kind(step.mapper_cmd, mapper is not None)))
        if reducers[s] > 0:
            combiner = step.map_side_combiner() is not None
            phases.append((s, "combiner", _kind(step.combiner_cmd, combiner)))
            phases.append((s, "reducer", _kind(step.reducer_cmd, step.has_reducer())))
    found: dict[tuple[int, str], CommandIO] = {}
    for i, (s, role, kind) in enumerate(phases):
        if kind != "cmd":
            continue
        before = next((k for _, _, k in reversed(phases[:i]) if k), "")
        after = next((k for _, _, k in phases[i + 1 :] if k), "")
        if after:
            out = RAW if after == "cmd" else JSON
        elif i == len(phases) - 1 and output_format in UNCHANGED_FORMATS:
            out = LINES
        else:
            out = JSON
        found[s, role] = CommandIO(raw_in=before == "cmd", out=out)
    return found


def _kind(command: Command | None, python: bool) -> str:
    return "cmd" if command is not None else ("py" if python else "")


def writes_job_output(steps: Sequence[MRStep], reducers: Sequence[int]) -> bool:
    """Whether a command writes the job's output: the last step's reducer command, or the
    mapper command of a map-only last step (pure)."""
    last = steps[-1]
    if reducers[-1] > 0:
        return last.reducer_cmd is not None
    return last.mapper_cmd is not None


# --------------------------------------------------------------------------- lines in


def record_lines(records: list[Any], what: str) -> bytes:
    """First-step records as the lines a command reads: text UTF-8 encoded (a line that
    was not valid in its encoding, kept with ``surrogateescape``, as its bytes), bytes as
    they are."""
    if not records:
        return b""
    try:
        if type(records[0]) is bytes:
            return b"\n".join(records) + b"\n"
        return ("\n".join(records) + "\n").encode("utf-8", "surrogateescape")
    except (TypeError, UnicodeEncodeError):
        bad = next((r for r in records if type(r) is not type(records[0])), records[0])
        raise CommandInputError(
            f"{what} reads lines, and the input record {bad!r:.200} is a "
            f"{type(bad).__name__}: use --format text or bytes"
        ) from None


_json_lines = JSONProtocol().lines


def pair_lines(pairs: list[tuple[Any, Any]], raw: bool, what: str) -> bytes:
    """Pairs as the lines a command reads: another command's lines joined back as they
    were (``raw``), or ``key<TAB>value`` as mrjob's JSONProtocol writes them."""
    if raw:
        text = "".join([k + "\n" if v is None else f"{k}\t{v}\n" for k, v in pairs])
        return text.encode("utf-8", "surrogateescape")
    try:
        return _json_lines(pairs).encode("ascii")
    except (TypeError, ValueError):
        for pair in pairs:
            try:
                _json_lines([pair])
            except (TypeError, ValueError) as exc:
                raise CommandInputError(
                    f"{what} reads key<TAB>value lines of JSON, and the pair {pair!r:.200} "
                    f"cannot be written as JSON ({exc}): emit JSON-serialisable keys and "
                    "values (str, numbers, bool, None, lists, dicts with str keys)"
                ) from None
        raise


# --------------------------------------------------------------------------- lines out


@dataclass
class LineReader:
    """Turns a command's output blobs (whole lines, each ending with a newline) into
    pairs: ``RAW`` splits at the first tab, ``JSON`` parses ``key<TAB>value``.

    ``check``: a function returning what is wrong with a key that is not a str or an int
    (a NaN, a key no table can hold), for output that is shuffled."""

    mode: str
    what: str  # the command, for messages
    check: Callable[[Any], Exception | None] | None = None
    lines: int = 0

    def pairs(self, blob: bytes) -> list[tuple[Any, Any]]:
        if self.mode == RAW:
            text = blob.decode("utf-8", "surrogateescape")
            out = [_raw_pair(line) for line in text.split("\n")[:-1]]
            self.lines += len(out)
            return out
        return self._json_pairs(blob)

    def _json_pairs(self, blob: bytes) -> list[tuple[Any, Any]]:
        out = []
        loads = json.loads
        check = self.check
        for raw in blob.split(b"\n")[:-1]:
            self.lines += 1
            key_text, tab, value_text = raw.partition(b"\t")
            try:
                if not tab:
                    raise ValueError("it has no tab")
                key = loads(key_text)
                value = loads(value_text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise CommandOutputError(
                    f"line {self.lines} of the output of {self.what}, {raw[:200]!r}, is not "
                    f"key<TAB>value with both JSON ({exc}): Python code or a later step reads "
                    "a command's lines as mrjob's JSONProtocol writes them (e.g. "
                    '`"word"<TAB>1`)'
                ) from None
            if check is not None and type(key) is not str and type(key) is not int:
                problem = check(key)
                if problem is not None:
                    raise CommandOutputError(
                        f"line {self.lines} of the output of {self.what}, {raw[:200]!r}: {problem}"
                    )
            out.append((key, value))
        return out


def _raw_pair(line: str) -> tuple[str, str | None]:
    key, tab, value = line.partition("\t")
    return (key, value) if tab else (key, None)


# --------------------------------------------------------------------------- running


def _no_orphan() -> Callable[[], None] | None:
    """In the child before it runs the command: be killed when the parent dies
    (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    kill = int(signal.SIGKILL)

    def set_death_signal() -> None:
        prctl(1, kill, 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_death_signal


_DEATH_SIGNAL = _no_orphan()


class _Stderr:
    """A command's standard error, read as it comes: counter lines counted, the last
    lines kept for a failure's message."""

    def __init__(self, on_counter: Callable[[str, str, int], None] | None) -> None:
        self.on_counter = on_counter
        self.tail: deque[bytes] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        self._partial += data
        *lines, rest = bytes(self._partial).split(b"\n")
        self._partial = bytearray(rest[-64 * 1024 :])  # a line without end is cut
        for line in lines:
            self._line(line)

    def close(self) -> None:
        if self._partial:
            self._line(bytes(self._partial))
            self._partial.clear()

    def _line(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        counter = _COUNTER.match(line)
        if counter is not None and self.on_counter is not None:
            group, name, amount = counter.groups()
            self.on_counter(group.decode(errors="replace"), name.decode(errors="replace"),
                            int(amount))  # fmt: skip
            return
        if line.startswith(b"reporter:status:"):
            return
        self.tail.append(line[:STDERR_LINE_BYTES])

    def lines(self) -> list[str]:
        return [line.decode("utf-8", "replace") for line in self.tail]


def run_command(
    command: Command,
    stdin: Iterable[bytes],
    *,
    cwd: str | None = None,
    on_counter: Callable[[str, str, int], None] | None = None,
) -> Iterator[bytes]:
    """Run ``command`` with the blobs of ``stdin`` as its standard input; yield its
    standard output in blobs of whole lines, each line ending with a newline (one is
    added to a last line that has none). Raise :class:`CommandNotFound` or
    :class:`CommandFailed`; the command (its process group) is killed if the caller
    stops early or an exception (a signal) interrupts the loop."""
    argv = argv_of(command)
    what = shown(command)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,  # its own process group: killed as one
            preexec_fn=_DEATH_SIGNAL,
        )
    except FileNotFoundError:
        if "/" in argv[0]:
            raise CommandNotFound(
                f"{what}: {argv[0]} does not exist (a relative path starts at the task's "
                "working directory, which holds the files shipped with the job)"
            ) from None
        raise CommandNotFound(
            f"{what}: command not found: {argv[0]} is not on $PATH ({os.environ.get('PATH', '')})"
        ) from None
    except PermissionError:
        raise CommandNotFound(f"{what}: {argv[0]} is not executable") from None
    err = _Stderr(on_counter)
    try:
        yield from _pump(proc, iter(stdin), err)
        # The command closed its output: wait for it without reaping it, so that its
        # process group cannot be another's when what it left running is killed.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _kill_group(proc)
        returncode = proc.wait()
    finally:
        _stop(proc)
    err.close()
    if returncode != 0:
        raise CommandFailed(what, returncode, err.lines())


def _pump(proc: subprocess.Popen[bytes], blobs: Iterator[bytes], err: _Stderr) -> Iterator[bytes]:
    """Feed standard input and read standard output and error until the command has
    closed both outputs; yield output in blobs of whole lines."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    for pipe in (stdin, stdout, stderr):
        os.set_blocking(pipe.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_WRITE)
    sel.register(stdout, selectors.EVENT_READ)
    sel.register(stderr, selectors.EVENT_READ)
    pending = memoryview(b"")
    partial = bytearray()
    try:
        while len(sel.get_map()) > 0:
            for key, _ in sel.select():
                pipe = key.fileobj
                if pipe is stdin:
                    if not pending:
                        blob = next(blobs, None)  # may read the task's input
                        if blob is None:
                            sel.unregister(stdin)
                            stdin.close()  # end of input
                            continue
                        pending = memoryview(blob)
                    try:
                        pending = pending[os.write(stdin.fileno(), pending) :]
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:  # it stopped reading (`head`): its status says
                        sel.unregister(stdin)
                        stdin.close()
                        pending = memoryview(b"")
                    continue
                data = os.read(pipe.fileno(), READ_BYTES)  # type: ignore[union-attr]
                if not data:
                    sel.unregister(pipe)
                elif pipe is stderr:
                    err.feed(data)
                else:
                    partial += data
                    cut = partial.rfind(b"\n") + 1
                    if cut:
                        out = bytes(partial[:cut])
                        del partial[:cut]
                        yield out
        if partial:
            yield bytes(partial) + b"\n"
    finally:
        sel.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the pipes and make sure nothing of the command runs on: a no-op for one that
    ended and was reaped."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if proc.returncode is None:
        _kill_group(proc)
        proc.wait()


@contextlib.contextmanager
def working_dir(files: Mapping[str, str], parent: str | None) -> Iterator[str]:
    """A command's working directory: the job's shipped files linked under their names
    (as mrjob's task working directory holds them), removed afterwards."""
    path = tempfile.mkdtemp(prefix="kubemr-cmd-", dir=parent)
    try:
        for name in files:
            os.symlink(files[name], os.path.join(path, name))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- in a task


class StepCommands:
    """The commands of one task's step, as the task runs them: what they read, where they
    run, and what their lines become."""

    def __init__(
        self,
        job: MapReduce,
        reducers: Sequence[int],
        output_format: str,
        step: int,
        *,
        where: str,
        scratch: str | None = None,
    ) -> None:
        steps = job_steps(job)
        self.job = job
        self.step = step
        self.fns = steps[step]
        self.io = command_io(steps, reducers, output_format)
        self.where = where  # the task, for messages
        self.scratch = scratch
        self.groups = 0  # key groups a reducer command read

    def what(self, role: str) -> str:
        command = getattr(self.fns, f"{role}_cmd")
        return f"the {role}_cmd {shown(command)}"

    def lines_out(self, role: str) -> bool:
        """Whether the command of ``role`` writes the job's output lines as they are."""
        return self.io[self.step, role].out == LINES

    # -- the three roles ---------------------------------------------------------------
    def mapper(self, chunks: Iterable[Any], *, grouped: bool, hashed: bool) -> Iterator[Any]:
        """Run the mapper command over the task's input chunks; yield its output: blobs of
        lines for the job's output, else lists of pairs."""
        io = self.io[self.step, "mapper"]
        what = self.what("mapper")
        if self.step == 0:
            stdin = (record_lines(chunk.records, what) for chunk in chunks)
        else:  # a later step's records are the pairs of the step before
            stdin = (pair_lines(chunk.records, io.raw_in, what) for chunk in chunks)
        return self._run("mapper", stdin, grouped=grouped, hashed=hashed)

    def combiner(self, pairs: Iterator[tuple[Any, Any]], *, hashed: bool) -> Iterator[Any]:
        """Run the combiner command over the map task's pairs, sorted by key."""
        io = self.io[self.step, "combiner"]
        stdin = self._batched(pairs, io.raw_in, self.what("combiner"))
        return self._run("combiner", stdin, grouped=True, hashed=hashed)

    def reducer(self, groups: Iterator[tuple[Any, Iterable[Any]]]) -> Iterator[Any]:
        """Run the reducer command over ``(key, values)`` groups in key order."""
        io = self.io[self.step, "reducer"]

        def pairs() -> Iterator[tuple[Any, Any]]:
            for key, values in groups:
                self.groups += 1
                for value in values:
                    yield key, value

        stdin = self._batched(pairs(), io.raw_in, self.what("reducer"))
        return self._run("reducer", stdin, grouped=False, hashed=False)

    # -- plumbing ------------------------------------------------------------------------
    def _batched(self, pairs: Iterator[tuple[Any, Any]], raw: bool, what: str) -> Iterator[bytes]:
        while batch := list(itertools.islice(pairs, BATCH_PAIRS)):
            yield pair_lines(batch, raw, what)

    def _run(self, role: str, stdin: Iterable[bytes], *, grouped: bool, hashed: bool) -> Any:
        io = self.io[self.step, role]
        command = getattr(self.fns, f"{role}_cmd")
        check = _key_check(role, hashed) if grouped and io.out == JSON else None
        reader = LineReader(io.out, self.what(role), check)
        try:
            with (
                working_dir(self.job.files, self.scratch) as cwd,
                # closed on the way out: the command must not wait for a traceback's end
                contextlib.closing(
                    run_command(command, stdin, cwd=cwd, on_counter=self.job.increment_counter)
                ) as blobs,
            ):
                for blob in blobs:
                    yield blob if io.out == LINES else reader.pairs(blob)
        except CommandError as exc:
            raise CommandFailure(f"{role}_cmd", self.where, exc) from None


def _key_check(role: str, hashed: bool) -> Callable[[Any], Exception | None]:
    def check(key: Any) -> Exception | None:
        return first_problem([(key, None)], f"{role}_cmd", True, hashed)

    return check


def pre_collector(memory: int, scratch: str | None) -> MapCollector:
    """Where a map task with a combiner command gathers its mapper's pairs, to sort them
    for the command (spilling to disk past ``memory``)."""
    return MapCollector(num_partitions=1, memory_budget=memory, spill_dir=scratch)


def sorted_pairs(collector: MapCollector, scratch: str | None) -> Iterator[tuple[Any, Any]]:
    """The pairs of a one-partition collector in key order, through a file on disk."""
    with tempfile.TemporaryFile(prefix="kubemr-combine-", dir=scratch) as fh:
        collector.write(fh)
        fh.seek(0)
        for block in read_segment_blocks(fh):
            yield from block


def to_sink(sink: Any, out: Any) -> None:
    """Send what a command produced to a task's output: lines as they are (after what
    the sink holds, counted as its records), or pairs."""
    if type(out) is bytes:
        sink.flush()
        sink.out.write(out)
        sink.records += out.count(b"\n")
    else:
        sink.feed_output(out, trusted=True)
        sink.flush_if_full()
