"""The user's side of a job: a ``MapReduce`` subclass, its steps, built-in aggregates.

A job is a class::

    class WordCount(kubemr.MapReduce):
        combiner = kubemr.SUM          # built-in: no Python call per value
        reducer = kubemr.SUM

        def mapper(self, line):
            for word in line.split():
                yield word, 1

or the batch form, which sees a whole chunk of records per call::

    class FastWordCount(kubemr.MapReduce):
        reducer = kubemr.SUM

        def mapper_batch(self, lines):
            return Counter(" ".join(lines).split())

A job instance is created inside every task (never shipped as an instance), so state
kept on ``self`` belongs to one task: ``setup()`` and the ``*_init`` hooks are the
places to start it, ``mapper_final`` / ``reducer_final`` to emit what it adds up to.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

Pairs = Iterable[tuple[Any, Any]]


class Aggregate:
    """A built-in associative combiner/reducer the engine applies without a call per value.

    ``first(v)`` starts an accumulator from one value, ``add(acc, v)`` folds in a value,
    ``merge(a, b)`` folds two accumulators.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"kubemr.{self.name.upper()}"

    def __reduce__(self) -> str:
        return self.name.upper()  # pickles as the module-level constant

    def first(self, value: Any) -> Any:
        return 1 if self.name == "count" else value

    def add(self, acc: Any, value: Any) -> Any:
        name = self.name
        if name == "sum":
            return acc + value
        if name == "count":
            return acc + 1
        if name == "min":
            return value if value < acc else acc
        return value if value > acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        if self.name in ("sum", "count"):
            return a + b
        return self.add(a, b)

    def fold(self, values: Iterable[Any]) -> Any:
        """Fold raw values (as a reducer without a matching combiner sees them)."""
        if self.name == "sum":
            return sum(values)
        if self.name == "count":
            return sum(1 for _ in values)
        if self.name == "min":
            return min(values)
        return max(values)

    def fold_accumulators(self, values: Iterable[Any]) -> Any:
        """Fold accumulators (as a reducer after a matching combiner sees them)."""
        if self.name in ("sum", "count"):
            return sum(values)
        return self.fold(values)


SUM = Aggregate("sum")
COUNT = Aggregate("count")
MIN = Aggregate("min")
MAX = Aggregate("max")
AGGREGATES = {a.name: a for a in (SUM, COUNT, MIN, MAX)}

# What a step's combiner or reducer may be: a function yielding pairs, or an Aggregate.
Combiner = Callable[[Any, Iterator[Any]], Pairs] | Aggregate
# A per-task hook: called with no argument; may yield pairs (or return None: no pairs).
Hook = Callable[[], Pairs | None]
# A shell command run as a mapper, combiner or reducer: a command line (split as a shell
# splits words, with no shell run) or the list of its arguments.
Command = str | Sequence[str]

HOOKS = (
    "mapper_init",
    "mapper_final",
    "combiner_init",
    "combiner_final",
    "reducer_init",
    "reducer_final",
)
"""The per-task hooks a step (or the job class, for its default step) may define."""

COMMANDS = ("mapper_cmd", "combiner_cmd", "reducer_cmd")
"""Shell commands a step may run as its mapper, combiner or reducer (see
:mod:`kubemr.commands`); on a job class, methods returning the command."""
PRE_FILTERS = ("mapper_pre_filter", "combiner_pre_filter", "reducer_pre_filter")
"""mrjob's filters of a task's input through a shell command: refused, with what to do."""
# What a command stands for in its role: it is the whole mapper, combiner or reducer.
_REPLACED_BY_COMMAND = {
    "mapper_cmd": ("mapper", "mapper_batch", "mapper_raw", "mapper_init", "mapper_final"),
    "combiner_cmd": ("combiner", "combiner_init", "combiner_final"),
    "reducer_cmd": ("reducer", "reducer_init", "reducer_final"),
}


def identity_combiner(key: Any, values: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
    """The combiner of a step that has combiner hooks but no combiner (as mrjob's)."""
    for value in values:
        yield key, value


@dataclass
class MRStep:
    """One map → shuffle → reduce step of a multi-step job.

    Functions are usually bound methods of the job (``MRStep(mapper=self.split_words)``).
    A step after the first with no mapper passes the previous step's ``(key, value)``
    pairs straight to the shuffle. ``mapper_init`` ... ``reducer_final`` are the step's
    per-task hooks (see :class:`MapReduce`); a step with reducer hooks and no reducer
    gets an identity reducer, one with combiner hooks and no combiner an identity
    combiner, as in mrjob. ``sort_values`` left as None follows the job's
    ``SORT_VALUES``. ``mapper_cmd``, ``combiner_cmd`` and ``reducer_cmd`` run a shell
    command as the whole mapper, combiner or reducer (see :mod:`kubemr.commands`).
    """

    mapper: Callable[[Any], Pairs] | None = None
    mapper_batch: Callable[[list[Any]], Pairs | Mapping[Any, Any]] | None = None
    mapper_raw: Callable[[str, str], Pairs] | None = None  # a whole file: (local path, url)
    combiner: Combiner | None = None
    reducer: Combiner | None = None
    partitioner: Callable[[Any, int], int] | None = None
    reducers: int | None = None  # overrides the job's --reducers for this step
    sort_values: bool | None = None  # None: the job's SORT_VALUES
    mapper_init: Hook | None = None
    mapper_final: Hook | None = None
    combiner_init: Hook | None = None
    combiner_final: Hook | None = None
    reducer_init: Hook | None = None
    reducer_final: Hook | None = None
    mapper_cmd: Command | None = None
    combiner_cmd: Command | None = None
    reducer_cmd: Command | None = None
    mapper_pre_filter: str | None = None  # mrjob's; refused by job_steps
    combiner_pre_filter: str | None = None
    reducer_pre_filter: str | None = None

    def has_reducer(self) -> bool:
        """Whether the step has a reduce phase: a reducer (a function, a built-in or a
        command), or reducer hooks (which, as in mrjob, get an identity reducer: every
        value passes through)."""
        return (
            self.reducer is not None
            or self.reducer_cmd is not None
            or self.reducer_init is not None
            or self.reducer_final is not None
        )

    def has_combiner_hooks(self) -> bool:
        return self.combiner_init is not None or self.combiner_final is not None

    def map_side_combiner(self) -> Combiner | None:
        """The combiner the map side applies: the step's own; an identity combiner when
        the step has combiner hooks only; or else a built-in reducer, which is
        associative and so safe to apply early."""
        if self.combiner is not None:
            return self.combiner
        if self.has_combiner_hooks():
            return identity_combiner
        if isinstance(self.reducer, Aggregate):
            return self.reducer
        return None


class MapReduce:
    """Base class of a kubemr job. Override ``mapper`` (or ``mapper_batch``) and
    optionally ``combiner``, ``reducer``, ``partitioner``, ``steps``.

    Per-task hooks, on the class (for the default step) or on an ``MRStep``:
    ``mapper_init`` / ``mapper_final``, ``combiner_init`` / ``combiner_final``,
    ``reducer_init`` / ``reducer_final``. Each is called once per task (per combiner
    application for the combiner's) before the first / after the last record, and may
    yield pairs, which go where that function's own output goes.

    Shell commands as mapper, combiner or reducer (mrjob's): ``def mapper_cmd(self)``
    (``combiner_cmd``, ``reducer_cmd``) returns the command, a string or a list of
    arguments; it replaces the Python function of its role (see :mod:`kubemr.commands`).

    Class attributes:
        SORT_VALUES: values reach the reducer sorted (secondary sort), in every step
            whose ``MRStep`` does not say otherwise.
        TOTAL_ORDER: partition by sampled key ranges instead of by hash, so that the
            part files, concatenated in name order, are one globally sorted output.
        INPUT_FORMAT / OUTPUT_FORMAT: defaults for ``--format`` / ``--output-format``.
        OUTPUT_PROTOCOL: how output lines are written, as mrjob's: an object (or a
            class, made once per task) whose ``write(key, value)`` returns one line as
            ``str`` or ``bytes``, without its newline (see :mod:`kubemr.output`).

    ``self.params`` holds the job's parameters (``--param KEY=VALUE``, or
    ``kubemr.run(..., params={...})``), the same in every task, from ``steps`` and
    ``setup`` on: a side table's path, a threshold, a date.

    Typed options: a nested ``class Options(kubemr.options.Options)`` (a pydantic model)
    declares them; they are given as parameters too, validated before any task starts,
    and read as ``self.options`` (typed values). ``FILES = ["stopwords.txt"]`` (relative
    to the job file; ``PATH#NAME`` renames) ships files with the job, read in every task
    as ``self.files[NAME]``, a local path; so do ``--file PATH`` and
    ``kubemr.options.File`` options.
    ``if __name__ == "__main__": MyJob.run()`` makes the job file a command of its own.
    """

    SORT_VALUES: bool = False
    TOTAL_ORDER: bool = False
    INPUT_FORMAT: str | None = None
    OUTPUT_FORMAT: str | None = None
    OUTPUT_PROTOCOL: Any = None
    INPUT_WITH_OFFSET: bool = False
    input_file: str | None = None  # set in every map task: the URL of the file it reads
    Options: ClassVar[type[BaseModel] | None] = None
    FILES: ClassVar[Sequence[str]] = ()

    def __init__(self) -> None:
        self._counters: dict[str, dict[str, int]] = {}
        self.params = {}  # set by the runner in every process

    # -- parameters, options and files ----------------------------------------------
    @property
    def params(self) -> dict[str, str]:
        return self._params

    @params.setter
    def params(self, values: Mapping[str, str]) -> None:
        from kubemr.jobfiles import MANIFEST_PARAM

        values = dict(values)
        # The plan's parameters also carry the shipped files' manifest: kubemr's, apart.
        self._manifest: str | None = values.pop(MANIFEST_PARAM, None)
        self._params: dict[str, str] = values
        self._files: Mapping[str, str] | None = None
        self._options: Any = None

    @property
    def files(self) -> Mapping[str, str]:
        """The files shipped with the job by name -> a local path (fetched on first use)."""
        if self._files is None:
            from kubemr.jobfiles import JobFiles, Manifest

            manifest = Manifest.from_param(self._manifest) if self._manifest else None
            self._files = JobFiles(manifest)
        return self._files

    @property
    def options(self) -> Any:
        """The job's typed options (its ``Options`` model), from ``self.params``; a file
        option's value is the local path of its own file (shipped under a name of its own
        when its base name is another file's: see ``kubemr.jobfiles``)."""
        if self._options is None:
            from kubemr.jobfiles import file_option_names
            from kubemr.options import check_options

            options = check_options(type(self), self._params)
            names = file_option_names(type(self), self._params)
            local = {
                name: self.files[names[name]]
                for name in names
                if isinstance(value := getattr(options, name), str) and value
            }
            self._options = options.model_copy(update=local) if local else options
        return self._options

    @classmethod
    def run(cls, args: Sequence[str] | None = None) -> NoReturn:
        """Run this job from its own file, as ``kubemr run`` does:
        ``if __name__ == "__main__": WordCount.run()`` makes ``python wc.py -i IN -o OUT
        [--workers N ...] [-p NAME=VALUE ...]`` work, with the same flags and exit codes.
        ``args`` defaults to the command line."""
        from kubemr.executors import forkserver

        forkserver.start()  # the worker pool's imports, while the command line's run
        from kubemr.cli.run import run_itself

        run_itself(cls, args)

    # -- hooks a job may override -------------------------------------------------
    def setup(self) -> None:
        """Called once per task (map and reduce, every step) before anything else, and
        once by the preflight; it must not yield."""

    def teardown(self) -> None:
        """Called once per task after everything else; it must not yield."""

    def steps(self) -> list[MRStep]:
        """The job's steps; by default one step from the class's own methods."""
        cls = type(self)
        return [
            MRStep(
                mapper=self.mapper if _defines(cls, "mapper") else None,  # type: ignore[attr-defined]
                mapper_batch=(
                    self.mapper_batch  # type: ignore[attr-defined]
                    if _defines(cls, "mapper_batch")
                    else None
                ),
                mapper_raw=_member(self, "mapper_raw"),
                combiner=_member(self, "combiner"),
                reducer=_member(self, "reducer"),
                partitioner=_member(self, "partitioner"),  # type: ignore[arg-type]
                sort_values=self.SORT_VALUES,
                **{hook: _member(self, hook) for hook in HOOKS},
                **{name: _command(self, name) for name in COMMANDS + PRE_FILTERS},
            )
        ]

    # -- what a job may call -------------------------------------------------------
    def increment_counter(self, group: str, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter; counters are summed over tasks into ``_SUCCESS``."""
        counters = self._counters.setdefault(group, {})
        counters[name] = counters.get(name, 0) + n

    def load_once(self, loader: Callable[..., _T], *args: Any) -> _T:
        """``loader(*args)``, computed once per worker process and job, then kept for the
        tasks the process runs next: the small table of a replicated join, a model, a
        dictionary, which every map task needs and which would otherwise be read again
        by each task (``mapper_init``/``setup`` run per task).

        The function and the arguments are the key, so pass a function defined once (a
        module-level function or a method of the job) and hashable arguments, not a new
        lambda per call. The tasks of the process share the value: treat it as
        read-only. Outside a task (the driver's preflight) the loader simply runs.
        """
        key = (getattr(loader, "__func__", loader), args)
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"load_once({getattr(loader, '__qualname__', loader)!r}, ...): the arguments "
                "are the cache key and must be hashable (a path, a name, a tuple)"
            ) from None
        if self._job_scope is None:
            return loader(*args)
        kept = _LOADED_ONCE
        if kept.get("job") != self._job_scope:  # a task of another job: drop the last one's
            kept.clear()
            kept["job"] = self._job_scope
        values = kept.setdefault("values", {})
        if key not in values:
            values[key] = loader(*args)
        return values[key]

    _job_scope: str | None = None  # the job this instance runs a task of; set by the task


_T = TypeVar("_T")
_LOADED_ONCE: dict[str, Any] = {}
"""What :meth:`MapReduce.load_once` keeps in this process: the job it belongs to and the
values by key."""


def _defines(cls: type, name: str) -> bool:
    return any(name in vars(klass) for klass in cls.__mro__ if klass is not MapReduce)


def _member(job: MapReduce, name: str) -> Any:
    if not _defines(type(job), name):
        return None
    return getattr(job, name)


def _command(job: MapReduce, name: str) -> Any:
    """A command the class defines: what its method returns (as mrjob's ``mapper_cmd``),
    or a plain class attribute's value."""
    value = _member(job, name)
    return value() if callable(value) else value


def job_steps(job: MapReduce) -> list[MRStep]:
    """The job's steps, checked and completed: each needs a mapper unless it follows
    another step; ``sort_values`` left unset takes the job's ``SORT_VALUES``; a mapper,
    combiner or reducer that returns instead of yielding may return None for "no pairs"
    (as in mrjob)."""
    steps = list(job.steps())
    from kubemr.errors import JobDefinitionError

    name = type(job).__name__
    if not steps:
        raise JobDefinitionError(f"{name}.steps() returned no steps")
    checked = []
    for i, step in enumerate(steps):
        if not isinstance(step, MRStep):
            raise JobDefinitionError(f"{name}.steps()[{i}] is {step!r}, not a kubemr.MRStep")
        _check_commands(job, step, i)
        given = [m for m in ("mapper", "mapper_batch", "mapper_raw") if getattr(step, m)]
        given += ["mapper_cmd"] if step.mapper_cmd is not None else []
        if len(given) > 1:
            raise JobDefinitionError(f"{name} step {i}: define one of {' and '.join(given)}")
        if i == 0 and not given:
            raise JobDefinitionError(
                f"{name} defines no mapper: add `def mapper(self, record)` yielding "
                "(key, value) pairs, `def mapper_batch(self, records)`, "
                "`def mapper_raw(self, path, url)` for whole files, or `def mapper_cmd(self)` "
                "returning a shell command"
            )
        if i > 0 and step.mapper_raw is not None:
            raise JobDefinitionError(
                f"{name} step {i}: mapper_raw reads the job's input files, so only the first "
                "step can have one"
            )
        for role in ("combiner", "reducer"):
            fn = getattr(step, role)
            if fn is not None and not isinstance(fn, Aggregate) and not callable(fn):
                raise JobDefinitionError(
                    f"{name} step {i}: {role} must be a function or one of kubemr.SUM, "
                    f"COUNT, MIN, MAX, not {fn!r}"
                )
        for hook in HOOKS:
            fn = getattr(step, hook)
            if fn is not None and (isinstance(fn, Aggregate) or not callable(fn)):
                raise JobDefinitionError(
                    f"{name} step {i}: {hook} must be a function taking no argument "
                    f"(besides self), not {fn!r}"
                )
        if step.has_combiner_hooks() and isinstance(step.combiner, Aggregate):
            raise JobDefinitionError(
                f"{name} step {i}: combiner_init/combiner_final run around a Python "
                f"combiner, and {step.combiner!r} is a built-in one: write the combiner "
                "as a function, or drop the hooks"
            )
        sort_values = job.SORT_VALUES if step.sort_values is None else step.sort_values
        checked.append(
            dataclasses.replace(
                step,
                mapper=(
                    _raw_mapper(step.mapper_raw)
                    if step.mapper_raw is not None
                    else none_is_no_pairs(step.mapper)
                ),
                combiner=none_is_no_pairs(step.combiner),
                reducer=none_is_no_pairs(step.reducer),
                sort_values=bool(sort_values),
            )
        )
    if job.TOTAL_ORDER and checked[-1].mapper_cmd is not None:
        raise JobDefinitionError(
            f"{name}: TOTAL_ORDER samples the keys of the last step's mapper before its tasks "
            "run, and a mapper_cmd runs in tasks only: map with Python in that step, or add "
            "a step whose mapper is a function"
        )
    return checked


def _check_commands(job: MapReduce, step: MRStep, i: int) -> None:
    """A step's commands: each a command line or a list of arguments, and the whole of its
    role (as in mrjob, a command has no hooks beside it); no ``*_pre_filter``."""
    from kubemr.commands import argv_of
    from kubemr.errors import JobDefinitionError

    name = type(job).__name__
    for field, replaced in _REPLACED_BY_COMMAND.items():
        command = getattr(step, field)
        if command is None:
            continue
        try:
            argv_of(command)
        except ValueError as exc:
            raise JobDefinitionError(f"{name} step {i}: {field} {exc}") from None
        clash = [f for f in replaced if getattr(step, f) is not None]
        if clash:
            raise JobDefinitionError(
                f"{name} step {i}: {field} is the whole {field[:-4]}, so it cannot have "
                f"{' and '.join(clash)} beside it (as in mrjob): drop one or the other"
            )
    for field in PRE_FILTERS:
        if getattr(step, field) is not None:
            role = field.split("_")[0]
            raise JobDefinitionError(
                f"{name} step {i}: {field} is not supported: filter in the {role} itself "
                f"(a record it drops yields nothing), or run the whole {role} as a command "
                f"with {role}_cmd (e.g. `sh -c 'FILTER | PROGRAM'`)"
            )


def _raw_mapper(fn: Callable[[str, str], Pairs]) -> Callable[[Any], Pairs]:
    """``mapper_raw(path, url)`` as the mapper of the ``raw`` format's records."""
    raw = none_is_no_pairs(fn)

    def mapper(record: Any) -> Pairs:
        path, url = record
        return raw(path, url)  # type: ignore[no-any-return]

    return mapper


def none_is_no_pairs(fn: Any) -> Any:
    """``fn`` such that returning None means no pairs (mrjob allows it: a mapper that
    only adds to ``self`` and emits in ``mapper_final``). A generator function never
    returns None, so it is left as it is: the per-record loops stay as fast."""
    if fn is None or isinstance(fn, Aggregate) or inspect.isgeneratorfunction(fn):
        return fn

    def or_no_pairs(*args: Any) -> Any:
        out = fn(*args)
        return () if out is None else out

    return or_no_pairs


def make_job_class(
    mapper: Callable[[Any], Pairs] | None = None,
    reducer: Combiner | None = None,
    *,
    combiner: Combiner | None = None,
    mapper_batch: Callable[[list[Any]], Any] | None = None,
    partitioner: Callable[[Any, int], int] | None = None,
    sort_values: bool = False,
    total_order: bool = False,
    name: str = "FunctionJob",
) -> type[MapReduce]:
    """A job class from plain functions (the functional API builds on this)."""

    def wrap(fn: Any) -> Any:
        if fn is None or isinstance(fn, Aggregate):
            return fn
        return staticmethod(fn)

    attrs: dict[str, Any] = {"SORT_VALUES": sort_values, "TOTAL_ORDER": total_order}
    for attr, fn in (
        ("mapper", mapper),
        ("mapper_batch", mapper_batch),
        ("combiner", combiner),
        ("reducer", reducer),
        ("partitioner", partitioner),
    ):
        if fn is not None:
            attrs[attr] = wrap(fn)
    return type(name, (MapReduce,), attrs)
