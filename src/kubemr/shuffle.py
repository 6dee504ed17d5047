"""The shuffle: collect map output, combine, sort, spill, and merge for reducers.

A map task writes ONE shuffle object holding all R partitions back to back, each a run
of blocks sorted by key (see ``formats.encode_block``). Where each partition starts is
recorded in the task's commit marker (``PartitionIndex``), so a reducer fetches its
partition of each map output with one ranged read. Objects grow with M, not M x R.

Memory: the collector estimates the bytes it holds and spills a sorted run to local
disk when it passes its budget; the final output merges the runs.

Key sample: while the final output is written, every Nth pair of each sorted partition
(N chosen so that at most :data:`SAMPLE_KEYS` are kept) has its key sampled. Equal keys
sit next to each other in a sorted partition, so a key seen k times in the sample has
about k x N records; the most frequent go into the task's marker for the job report's
view of reduce-side skew. The sample costs a slice per block and a pass over at most
``SAMPLE_KEYS`` keys per partition: nothing per record.
"""

from __future__ import annotations

import bisect
import dis
import heapq
import inspect
import itertools
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter, ne
from typing import Any, BinaryIO

from kubemr import combiners
from kubemr.errors import Interrupted
from kubemr.formats import BLOCK_RECORDS, encode_block, iter_blocks
from kubemr.job import Aggregate
from kubemr.keys import (
    KEY_CLASS_EMPTY,
    KEY_CLASS_MIXED,
    KEY_CLASS_NUM,
    KEY_CLASS_STR,
    NaNKeyError,
    RangePartitioner,
    has_nan,
    hash_partition,
    key_class,
    key_class_of_types,
    merge_key_classes,
    order_key,
    pair_order_key,
)

_first = itemgetter(0)
_second = itemgetter(1)
_MISSING = object()


@dataclass
class PartitionIndex:
    """Where each partition sits in a shuffle object, and what it holds."""

    offsets: list[int]  # R + 1 byte offsets: partition p is [offsets[p], offsets[p+1])
    records: list[int]
    raw_bytes: list[int]  # uncompressed payload sizes, to plan the reducer's memory
    key_classes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "offsets": self.offsets,
            "records": self.records,
            "raw_bytes": self.raw_bytes,
            "key_classes": self.key_classes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionIndex:
        return cls(**data)


# What user code may raise that fails its task rather than its process: `sys.exit()` in a
# mapper must not end a worker as if all went well. GeneratorExit is not among them: it
# is how Python closes a generator, not an error.
USER_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


class UserCodeFailure(Exception):
    """Raised around a failing user function, naming which one and where.

    ``raised`` is False when the function did not raise ``cause`` but produced something
    kubemr refuses (a non-pair, a NaN key): ``cause`` then says what, in the user's terms.
    """

    def __init__(self, role: str, where: str, cause: BaseException, *, raised: bool = True) -> None:
        if raised:
            detail = str(cause)  # empty for a bare KeyboardInterrupt
            text = f"{role} raised {type(cause).__name__}" + (f": {detail}" if detail else "")
        else:
            text = str(cause)
        super().__init__(f"{text} ({where})")
        self.role = role
        self.where = where
        self.cause = cause
        self.raised = raised


class NotAPairError(TypeError):
    """User code produced an item that is not a ``(key, value)`` pair.

    A string of two characters unpacks into two "parts" as well as a tuple does, so
    anything but a 2-tuple or a 2-list is refused rather than unpacked.
    """

    def __init__(self, item: Any, role: str = "mapper") -> None:
        super().__init__(item, role)
        self.item = item
        self.role = role

    def __str__(self) -> str:
        item = self.item
        what = type(item).__name__
        if isinstance(item, tuple | list):
            what += f" of {len(item)}"
        if self.role == "mapper_batch":
            return (
                f"mapper_batch returned {item!r:.200} (a {what}) among its pairs; it must "
                "return (key, value) pairs (2-tuples) or a mapping of key to value"
            )
        return (
            f"the {self.role} yielded {item!r:.200} (a {what}); it must yield (key, value) "
            "pairs, e.g. `yield key, value`"
        )


class UnhashableKeyError(TypeError):
    """A key that no table can hold, in a step that combines values by key."""

    def __init__(self, key: Any, role: str = "mapper") -> None:
        super().__init__(key, role)
        self.key = key
        self.role = role

    def __str__(self) -> str:
        part = _unhashable_part(self.key) or type(self.key).__name__
        return (
            f"the {self.role} yielded key {self.key!r:.200}, which holds a {part}: a step "
            "with a combiner or a built-in reducer (kubemr.SUM, COUNT, MIN, MAX) keeps a "
            "table by key, so keys must be hashable; use a tuple, str or number instead"
        )


def _unhashable_part(key: Any) -> str:
    """The type of what makes ``key`` unhashable besides lists (a dict, a set), or ""."""
    if isinstance(key, tuple | list):
        for k in key:
            part = _unhashable_part(k)
            if part:
                return part
        return ""
    return "" if _hashable(key) else type(key).__name__


def is_pair(item: Any) -> bool:
    """A ``(key, value)`` pair: a tuple or a list of two."""
    return (type(item) is tuple or type(item) is list) and len(item) == 2


def _check_item(item: Any, role: str) -> None:
    """Raise :class:`NotAPairError` unless ``item`` is a pair (the hot loops' slow path:
    they only call it for an item that is not a tuple)."""
    if not is_pair(item):
        raise NotAPairError(item, role)


def _check_mapper_item(item: Any) -> None:
    _check_item(item, "mapper")


def check_pairs(pairs: list[Any], role: str = "mapper") -> None:
    """Raise :class:`NotAPairError` for the first item of ``pairs`` that is not a pair."""
    if set(map(type, pairs)) <= _TUPLE and set(map(len, pairs)) <= _TWO:
        return  # all tuples of two, seen in two passes in C (the common case)
    for item in pairs:
        if type(item) is not tuple or len(item) != 2:
            _check_item(item, role)


def _checked_list(pairs: Iterable[Any], role: str) -> list[Any]:
    """``pairs`` as a list, checked to hold only pairs (one pass in C when they are
    all tuples, the common case)."""
    items = pairs if type(pairs) is list else list(pairs)
    check_pairs(items, role)
    return items


_TUPLE = {tuple}
_TWO = {2}


def _refuse_nan_keys(pairs: list[tuple[Any, Any]], cls: str) -> None:
    """Raise :class:`~kubemr.keys.NaNKeyError` for a float NaN key. Called only when
    float is among the keys' types: a NaN makes the native sort and the grouping of
    equal keys unreliable for every key near it, not only for itself. NaNs inside
    tuples and lists meet :func:`~kubemr.keys.order_key`, which refuses them."""
    if cls == KEY_CLASS_NUM:  # only int, float and bool: compare in C
        found = any(map(ne, map(_first, pairs), map(_first, pairs)))
    else:
        found = any(k != k for k, _ in pairs if type(k) is float)
    if found:
        raise NaNKeyError(next(k for k, _ in pairs if type(k) is float and k != k))


def yields_only_pairs(fn: Any) -> bool:
    """Whether everything ``fn`` produces is a 2-tuple, proven from its bytecode.

    True for a generator function whose every ``yield`` builds its tuple in place
    (``yield key, value``), the way nearly every mapper is written: its output then needs
    no check per pair, which would cost the hottest loop several percent. Anything else
    (a list returned, ``yield pair``, ``yield from``, a conditional yield) is checked pair
    by pair; a bytecode this test does not know only makes the check run, never skips it.
    """
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None or not code.co_flags & inspect.CO_GENERATOR:
        return False
    found = False
    prev: dis.Instruction | None = None
    for ins in dis.get_instructions(code):
        if ins.opname == "YIELD_VALUE":
            if prev is None or ins.is_jump_target:
                return False
            builds = prev.opname == "BUILD_TUPLE" and prev.arg == 2
            const = prev.opname == "LOAD_CONST" and type(prev.argval) is tuple
            if not (builds or (const and len(prev.argval) == 2)):
                return False
            found = True
        prev = ins
    return found


# --------------------------------------------------------------------------- keys in tables


class _ListKey(tuple):
    """A key holding lists, as a dict can hold it: a tuple with the lists turned into
    tuples at any depth (the order rule treats lists and tuples alike, so they are one
    key), carrying the key as the user gave it, which is what goes out."""

    given: Any


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _freeze_lists(key: Any) -> Any:
    if isinstance(key, tuple | list):
        return tuple(_freeze_lists(k) for k in key)
    hash(key)  # a dict or a set inside: TypeError
    return key


def table_key(key: Any) -> Any:
    """``key`` as a dict key: a hashable key as it is; a key holding lists as a
    :class:`_ListKey`; else :class:`UnhashableKeyError`. Only called once hashing
    ``key`` failed, so keys of the common kinds never come here."""
    if _hashable(key):
        return key
    try:
        frozen = _ListKey(_freeze_lists(key))
    except TypeError:
        raise UnhashableKeyError(key) from None
    frozen.given = key
    return frozen


def given_key(key: Any) -> Any:
    """The key as the user gave it (undoes :func:`table_key`)."""
    return key.given if type(key) is _ListKey else key


def first_problem(items: list[Any], role: str, grouped: bool, hashed: bool) -> Exception | None:
    """What is wrong with the first bad item: not a pair; a NaN key where keys are
    ``grouped``; a key no table can hold where keys are ``hashed``."""
    for item in items:
        if not is_pair(item):
            return NotAPairError(item, role)
        key = item[0]
        if grouped and has_nan(key):
            return NaNKeyError(key, role)
        if hashed:
            try:
                table_key(key)
            except UnhashableKeyError as exc:
                exc.role = role
                return exc
    return None


def hook_pairs(hook: Callable[[], Any] | None, role: str, where: str, **checks: bool) -> list[Any]:
    """Call a per-task hook (``mapper_final``, ``combiner_init``, ...) and return the
    pairs it yields, checked (``grouped``/``hashed`` as for :func:`first_problem`), or
    raise :class:`UserCodeFailure` naming the hook. None (a hook that does not yield)
    is no pairs."""
    if hook is None:
        return []
    try:
        out = hook()
        items = [] if out is None else list(out)  # a generator's body runs here
    except Interrupted:  # a signal to the process, not an error of user code
        raise
    except USER_ERRORS as exc:
        raise UserCodeFailure(role, where, exc) from exc
    problem = first_problem(items, role, checks.get("grouped", False), checks.get("hashed", False))
    if problem is not None:
        raise UserCodeFailure(role, where, problem, raised=False)
    return items


def _fold_one(acc: dict[Any, Any], key: Any, value: Any, name: str) -> None:
    """Fold one pair whose key is not hashable as given (a list)."""
    fold_into(acc, ((table_key(key), value),), name)


def sort_pairs(pairs: list[tuple[Any, Any]], cls: str | None = None) -> str:
    """Sort pairs by key in place (stable); return the key class of the run."""
    if cls is None:
        cls = key_class(map(_first, pairs))
    if cls == KEY_CLASS_MIXED:
        pairs.sort(key=pair_order_key)
    else:
        pairs.sort(key=_first)
    return cls


def partition_pairs(
    pairs: Iterable[tuple[Any, Any]],
    num_partitions: int,
    partitioner: Callable[[Any, int], int] | None,
    cls: str,
) -> list[list[tuple[Any, Any]]]:
    """Split pairs into partitions (order within a partition is kept)."""
    if num_partitions == 1:
        return [pairs if isinstance(pairs, list) else list(pairs)]
    parts: list[list[tuple[Any, Any]]] = [[] for _ in range(num_partitions)]
    appends = [p.append for p in parts]
    if partitioner is None and cls == KEY_CLASS_STR:
        crc = zlib.crc32
        for kv in pairs:
            appends[crc(kv[0].encode("utf-8", "surrogatepass")) % num_partitions](kv)
        return parts
    fn = partitioner or hash_partition
    kv: Any = None
    try:
        for kv in pairs:
            p = fn(kv[0], num_partitions)
            if type(p) is not int or not 0 <= p < num_partitions:
                raise UserCodeFailure(
                    "partitioner",
                    f"key {kv[0]!r:.200}",
                    ValueError(f"returned {p!r}; expected an int in [0, {num_partitions})"),
                )
            appends[p](kv)
    except UserCodeFailure:
        raise
    except Interrupted:  # a signal to the process, not an error of user code
        raise
    except USER_ERRORS as exc:
        if partitioner is None:
            raise
        raise UserCodeFailure("partitioner", f"key {kv[0]!r:.200}", exc) from exc
    return parts


def write_run(
    out: BinaryIO, partitions: list[list[tuple[Any, Any]]], classes: list[str]
) -> PartitionIndex:
    """Write sorted partitions as blocks; return the index of what was written."""
    offsets = [0]
    records: list[int] = []
    raw_sizes: list[int] = []
    pos = 0
    for part in partitions:
        raw_total = 0
        for i in range(0, len(part), BLOCK_RECORDS):
            piece = part[i : i + BLOCK_RECORDS]
            block, raw = encode_block(list(map(_first, piece)), list(map(_second, piece)))
            out.write(block)
            pos += len(block)
            raw_total += raw
        offsets.append(pos)
        records.append(len(part))
        raw_sizes.append(raw_total)
    return PartitionIndex(offsets, records, raw_sizes, list(classes))


def write_stream(
    out: BinaryIO,
    partitions: list[Iterable[tuple[Any, Any]]],
    samples: list[list[Any]] | None = None,
    strides: list[int] | None = None,
) -> PartitionIndex:
    """Like :func:`write_run` for partitions that arrive as (sorted) iterators.

    With ``samples`` and ``strides``: the key of every ``strides[p]``-th pair of
    partition ``p`` is appended to ``samples[p]``.
    """
    offsets = [0]
    records: list[int] = []
    raw_sizes: list[int] = []
    classes: list[str] = []
    pos = 0
    for p, part in enumerate(partitions):
        raw_total = 0
        count = 0
        cls = KEY_CLASS_EMPTY
        it = iter(part)
        while True:
            piece = list(itertools.islice(it, BLOCK_RECORDS))
            if not piece:
                break
            keys = list(map(_first, piece))
            if samples is not None and strides is not None:
                stride = strides[p]
                samples[p].extend(keys[(-count) % stride :: stride])
            cls = merge_key_classes([cls, key_class(keys)])
            block, raw = encode_block(keys, list(map(_second, piece)))
            out.write(block)
            pos += len(block)
            raw_total += raw
            count += len(piece)
        offsets.append(pos)
        records.append(count)
        raw_sizes.append(raw_total)
        classes.append(cls)
    return PartitionIndex(offsets, records, raw_sizes, classes)


def read_segment(fh: Any) -> Iterator[tuple[Any, Any]]:
    """The pairs of one partition segment, block by block."""
    for keys, values, _ in iter_blocks(fh):
        yield from zip(keys, values)


def read_segment_blocks(fh: Any) -> Iterator[list[tuple[Any, Any]]]:
    """The pairs of one partition segment as one list per block."""
    for keys, values, _ in iter_blocks(fh):
        yield list(zip(keys, values))


def merge_sorted_blocks(
    streams: list[Iterator[list[tuple[Any, Any]]]], cls: str
) -> Iterator[list[tuple[Any, Any]]]:
    """k-way merge of streams of key-sorted blocks, yielding merged batches of pairs.

    Works a block at a time instead of a record at a time: every pair with a key below
    the smallest last key of the buffered blocks can go out now, so those prefixes are
    concatenated and sorted together (Timsort merges the sorted runs in C). Stable:
    pairs with equal keys come out in stream order, even when a key's pairs span blocks.
    """
    keyfn = pair_order_key if cls == KEY_CLASS_MIXED else _first
    bufs: list[list[tuple[Any, Any]]] = [[] for _ in streams]
    pos = [0] * len(streams)

    def refill(i: int) -> bool:
        """Load the next non-empty block of stream i; False when the stream is done."""
        block = next(streams[i], None)
        while block is not None and not block:
            block = next(streams[i], None)
        if block is None:
            return False
        bufs[i] = block
        pos[i] = 0
        return True

    live = [i for i in range(len(streams)) if refill(i)]
    while live:
        if len(live) == 1:  # one stream left: no merging needed
            i = live[0]
            yield bufs[i][pos[i] :]
            while refill(i):
                yield bufs[i]
            return
        bound = min(keyfn(bufs[i][-1]) for i in live)
        # 1. Everything below the bound, from every stream, sorted together.
        batch: list[tuple[Any, Any]] = []
        for i in live:
            cut = bisect.bisect_left(bufs[i], bound, lo=pos[i], key=keyfn)
            if cut > pos[i]:
                batch.extend(bufs[i][pos[i] : cut])
                pos[i] = cut
        if batch:
            batch.sort(key=keyfn)
            yield batch
        # 2. The pairs equal to the bound, stream by stream (they may span blocks).
        for i in live:
            while True:
                buf = bufs[i]
                if pos[i] == len(buf) or keyfn(buf[pos[i]]) != bound:
                    break
                cut = bisect.bisect_right(buf, bound, lo=pos[i], key=keyfn)
                yield buf[pos[i] : cut]
                pos[i] = cut
                if cut < len(buf) or not refill(i):
                    break
        live = [i for i in live if pos[i] < len(bufs[i]) or refill(i)]


def group_sorted(pairs: Iterable[tuple[Any, Any]], cls: str) -> Iterator[tuple[Any, Iterator[Any]]]:
    """``(key, values)`` for each run of equal keys in key-sorted pairs."""
    if cls != KEY_CLASS_MIXED:
        # The group key is the key itself: no need to peek at the first pair.
        second = _second
        for key, group in itertools.groupby(pairs, key=_first):
            yield key, map(second, group)
        return
    for _, group in itertools.groupby(pairs, key=pair_order_key):
        first = next(group)
        yield first[0], itertools.chain((first[1],), map(_second, group))  # noqa: B031


def sorted_values(values: Iterable[Any]) -> list[Any]:
    """Values in the order rule's order (secondary sort).

    A NaN among them raises ValueError: it compares false both ways, so a sort would
    leave the values around it out of order without a word.
    """
    vals = list(values)
    if float in set(map(type, vals)) and any(v != v for v in vals if type(v) is float):
        raise _nan_values(next(v for v in vals if type(v) is float and v != v))
    try:
        vals.sort()
    except TypeError:
        try:
            vals.sort(key=order_key)
        except NaNKeyError as exc:
            raise _nan_values(exc.key) from None
    return vals


class NaNValuesError(ValueError):
    """The values of a key, to be sorted (``SORT_VALUES``), hold a NaN."""


def _nan_values(nan: Any) -> NaNValuesError:
    return NaNValuesError(
        f"the values to sort (SORT_VALUES) include {nan!r}, a NaN: NaN is not equal to "
        "itself, so it cannot be sorted; map it to None or a string first"
    )


def fold_into(acc: dict[Any, Any], pairs: Iterable[tuple[Any, Any]], name: str) -> int:
    """Fold pairs into per-key accumulators of a built-in aggregate; return the count.

    One specialised loop per aggregate: this is the hot path of most jobs. The pairs must
    be pairs (callers check what user code produced). A key holding a list cannot be
    hashed; it takes the slow path (:func:`table_key`) only once hashing failed, so the
    ``try`` costs the common keys nothing.
    """
    get = acc.get
    n = 0
    if name == "sum":
        for k, v in pairs:
            try:
                acc[k] = get(k, 0) + v
            except TypeError:
                if _hashable(k):
                    raise
                _fold_one(acc, k, v, name)
            n += 1
    elif name == "count":
        for k, _ in pairs:
            try:
                acc[k] = get(k, 0) + 1
            except TypeError:
                if _hashable(k):
                    raise
                _fold_one(acc, k, 1, name)
            n += 1
    elif name == "min":
        for k, v in pairs:
            try:
                a = get(k, _MISSING)
                if a is _MISSING or v < a:
                    acc[k] = v
            except TypeError:
                if _hashable(k):
                    raise
                _fold_one(acc, k, v, name)
            n += 1
    else:
        for k, v in pairs:
            try:
                a = get(k, _MISSING)
                if a is _MISSING or v > a:
                    acc[k] = v
            except TypeError:
                if _hashable(k):
                    raise
                _fold_one(acc, k, v, name)
            n += 1
    return n


def fold_records_into(
    acc: dict[Any, Any],
    records: list[Any],
    mapper: Callable[[Any], Any],
    name: str,
    trusted: bool = False,
) -> None:
    """Run a per-record mapper straight into a built-in aggregate's accumulators.

    The hottest loop of a typical job, kept as plain nested loops: measured ~8% faster
    than chaining the mapper's generators, and ~7% faster than also counting the pairs,
    which is why ``map_output_records`` is not counted on this path. ``trusted``: the
    mapper can only yield 2-tuples (:func:`yields_only_pairs`); otherwise every item is
    checked, since a bare ``"ab"`` would unpack into a key and a value. The check costs
    this loop ~7% (word count, measured); the proof, made once per task, nothing.
    """
    get = acc.get
    tuple_ = tuple
    if name == "sum" and trusted:
        for rec in records:
            for k, v in mapper(rec):
                try:
                    acc[k] = get(k, 0) + v
                except TypeError:
                    if _hashable(k):
                        raise
                    _fold_one(acc, k, v, name)
    elif name == "sum":
        for rec in records:
            for item in mapper(rec):
                if type(item) is not tuple_:
                    _check_item(item, "mapper")
                k, v = item
                try:
                    acc[k] = get(k, 0) + v
                except TypeError:
                    if _hashable(k):
                        raise
                    _fold_one(acc, k, v, name)
    elif name == "count" and trusted:
        for rec in records:
            for k, _ in mapper(rec):
                try:
                    acc[k] = get(k, 0) + 1
                except TypeError:
                    if _hashable(k):
                        raise
                    _fold_one(acc, k, 1, name)
    elif name == "count":
        for rec in records:
            for item in mapper(rec):
                if type(item) is not tuple_:
                    _check_item(item, "mapper")
                k, _ = item
                try:
                    acc[k] = get(k, 0) + 1
                except TypeError:
                    if _hashable(k):
                        raise
                    _fold_one(acc, k, 1, name)
    elif trusted:
        fold_into(acc, itertools.chain.from_iterable(map(mapper, records)), name)
    else:
        is_min = name == "min"
        for rec in records:
            for item in mapper(rec):
                if type(item) is not tuple_:
                    _check_item(item, "mapper")
                k, v = item
                try:
                    a = get(k, _MISSING)
                    if a is _MISSING or (v < a if is_min else v > a):
                        acc[k] = v
                except TypeError:
                    if _hashable(k):
                        raise
                    _fold_one(acc, k, v, name)


# --------------------------------------------------------------------------- key sample

SAMPLE_KEYS = 256
"""At most this many keys are sampled from each partition of a map task's output."""
SAMPLE_TOP = 10
"""Keys kept per partition in a task's marker: the most frequent of its sample."""
SAMPLE_PARTITIONS = 100
"""Partitions of one map task whose top keys are kept (its largest): bounds a marker."""
KEY_TEXT_CHARS = 100
"""A sampled key is kept as JSON text (``repr`` when not JSON) of at most this length."""


def sample_stride(records: int) -> int:
    """Sample every Nth pair of a partition of ``records`` pairs: N, for at most
    :data:`SAMPLE_KEYS` keys."""
    return max(1, -(-records // SAMPLE_KEYS))


def key_text(key: Any) -> str:
    """A key as the report shows it: JSON text, else its ``repr``, cut to
    :data:`KEY_TEXT_CHARS` (ending in "…" when cut)."""
    try:
        text = json.dumps(key, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(key)
    if len(text) > KEY_TEXT_CHARS:
        text = text[: KEY_TEXT_CHARS - 1] + "…"
    return text


def top_sampled_keys(keys: list[Any], stride: int) -> list[list[Any]]:
    """The most frequent keys of a sorted partition's sample (every ``stride``-th key)
    as ``[key_text, estimated_records]``, most frequent first. Only keys sampled at least
    twice: one sighting says nothing about a key's share."""
    runs: list[tuple[int, int, Any]] = []
    at = 0
    for key, group in itertools.groupby(keys):  # sorted: equal keys are adjacent
        n = sum(1 for _ in group)
        if n >= 2:
            runs.append((n, -at, key))  # ties: the first in key order
        at += n
    best = heapq.nlargest(SAMPLE_TOP, runs, key=itemgetter(0, 1))
    return [[key_text(key), n * stride] for n, _, key in best]


def sample_summary(
    samples: list[list[Any]], strides: list[int], records: list[int]
) -> list[list[Any]]:
    """A map task's key sample as its marker keeps it: ``[partition, top keys]`` for its
    :data:`SAMPLE_PARTITIONS` largest partitions (by records) with a key sampled twice."""
    order = sorted(range(len(samples)), key=lambda p: -records[p])[:SAMPLE_PARTITIONS]
    out: list[list[Any]] = []
    for p in sorted(order):
        try:
            top = top_sampled_keys(samples[p], strides[p])
        except Exception:  # keys whose == or repr fails: the sample is only a report
            continue
        if top:
            out.append([p, top])
    return out


# --------------------------------------------------------------------------- collector


@dataclass
class SpillRun:
    path: str
    index: PartitionIndex


@dataclass
class MapCollector:
    """Collects one map task's output pairs under a memory budget.

    Four modes, picked from the step: an ``Aggregate`` combiner keeps one accumulator
    per key; a Python combiner proven to be ``yield key, sum(values)`` folds the values
    as they come (:mod:`kubemr.combiners`); any other Python combiner keeps a list of
    values per key and calls the combiner when the lists grow; no combiner keeps the
    pairs as they come.

    A Python combiner is applied to the whole buffer at once, when the buffer passes
    its budget and before each spill and the final write (skipped when nothing came in
    since the last time). ``combiner_init`` and ``combiner_final`` run around each such
    application; what they yield joins the buffer. A step with these hooks merges its
    spilled runs without combining them again: a hook's pairs could not join a merge
    that is already being written.
    """

    num_partitions: int
    combiner: Any = None
    partitioner: Callable[[Any, int], int] | None = None
    memory_budget: int = 256 << 20
    spill_dir: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    combiner_init: Callable[[], Any] | None = None
    combiner_final: Callable[[], Any] | None = None
    where: str = "the map task"  # what failures of the combiner hooks name

    def __post_init__(self) -> None:
        if isinstance(self.combiner, Aggregate):
            self.mode = "aggregate"
        elif self.combiner is None:
            self.mode = "plain"
        elif combiners.is_sum_combiner(self.combiner):
            self.mode = "sum"
        else:
            self.mode = "combine"
        self._acc: dict[Any, Any] = {}
        self._pairs: list[tuple[Any, Any]] = []
        self._entry_bytes = 0.0  # estimated bytes per buffered entry
        self._runs: list[SpillRun] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.output_records = 0
        self.output_records_counted = True  # False once a path that skips counting ran
        self.spilled_records = 0
        self.spilled_bytes = 0  # written to local disk as spilled runs
        self.key_sample: list[list[Any]] = []  # see sample_summary; set by write()
        self._mapper: Any = None  # the last mapper seen, and whether it yields only pairs
        self._trusted = False
        self._unchecked = False  # plain mode holds items no one has checked are pairs
        self._uncombined = False  # combine mode got values since the combiner last ran

    # -- feeding -------------------------------------------------------------------
    def _trusts(self, mapper: Callable[[Any], Any]) -> bool:
        if mapper is not self._mapper:
            self._mapper = mapper
            self._trusted = yields_only_pairs(mapper)
        return self._trusted

    def feed_records(self, records: list[Any], mapper: Callable[[Any], Any]) -> None:
        """Run ``mapper`` over a chunk of records (the per-record hot loop)."""
        mode = self.mode
        trusted = self._trusts(mapper)
        if mode == "plain":
            pairs = self._pairs
            before = len(pairs)
            extend = pairs.extend
            for rec in records:
                extend(mapper(rec))
            self.output_records += len(pairs) - before
            self._unchecked |= not trusted  # checked once, when the buffer is sorted
        elif mode == "aggregate":
            fold_records_into(self._acc, records, mapper, self.combiner.name, trusted)
            self.output_records_counted = False
        elif mode == "sum":
            check = None if trusted else _check_mapper_item
            combiners.fold_records(self._acc, records, mapper, table_key, check)
            self.output_records_counted = False
            self._uncombined = True
        else:
            pairs = itertools.chain.from_iterable(map(mapper, records))
            self._feed_groups(pairs, None if trusted else "mapper")

    def feed_output(
        self,
        out: Iterable[tuple[Any, Any]] | Mapping[Any, Any] | None,
        trusted: bool = False,
    ) -> None:
        """Take what ``mapper_batch`` returned: pairs, or a mapping of key -> value.

        ``trusted``: ``out`` holds only pairs (a previous step's records).
        """
        if out is None:
            return
        if isinstance(out, Mapping):
            pairs: Iterable[tuple[Any, Any]] = out.items()
            trusted = True
        else:
            pairs = out
        if self.mode == "plain":
            before = len(self._pairs)
            self._pairs.extend(pairs)
            self.output_records += len(self._pairs) - before
            self._unchecked |= not trusted
        else:
            if not trusted:
                pairs = _checked_list(pairs, "mapper_batch")
            if self.mode == "aggregate":
                self._feed_aggregate(pairs)
            elif self.mode == "sum":
                self.output_records += combiners.fold_pairs(self._acc, pairs, table_key)
                self._uncombined = True
            else:
                self._feed_groups(pairs)

    def _feed_aggregate(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        self.output_records += fold_into(self._acc, pairs, self.combiner.name)

    def _feed_groups(self, pairs: Iterable[Any], check: str | None = None) -> None:
        """Append values to their key's list; ``check`` names the user function whose
        items must be checked to be pairs (None: they are)."""
        groups = self._acc
        get = groups.get
        n = 0
        if check is None:
            for k, v in pairs:
                try:
                    values = get(k)
                except TypeError:
                    if _hashable(k):
                        raise
                    k = table_key(k)
                    values = get(k)
                if values is None:
                    groups[k] = [v]
                else:
                    values.append(v)
                n += 1
        else:
            tuple_ = tuple
            for item in pairs:
                if type(item) is not tuple_:
                    _check_item(item, check)
                k, v = item
                try:
                    values = get(k)
                except TypeError:
                    if _hashable(k):
                        raise
                    k = table_key(k)
                    values = get(k)
                if values is None:
                    groups[k] = [v]
                else:
                    values.append(v)
                n += 1
        self.output_records += n
        self._values += n
        self._uncombined = True

    _values = 0  # values held in combine mode

    # -- memory --------------------------------------------------------------------
    def entries(self) -> int:
        if self.mode == "plain":
            return len(self._pairs)
        if self.mode == "combine":
            return self._values
        return len(self._acc)

    def estimated_bytes(self) -> int:
        n = self.entries()
        if n == 0:
            return 0
        if self._entry_bytes == 0 or n < 64:
            self._entry_bytes = self._sample_entry_bytes()
        return int(n * self._entry_bytes)

    def _sample_entry_bytes(self) -> float:
        getsize = sys.getsizeof
        if self.mode == "plain":
            sample = self._pairs[-64:]
            # tuple + key + value, keys and values often shared (interned)
            total = sum(56 + getsize(k) + getsize(v) for k, v in sample)
            return max(total / max(len(sample), 1), 64.0)
        sample_items = list(itertools.islice(self._acc.items(), 64))
        if self.mode == "combine":
            total_values = sum(len(v) for _, v in sample_items) or 1
            total = sum(getsize(k) + 100 + getsize(v) + 16 * len(v) for k, v in sample_items)
            return max(total / total_values, 32.0)
        total = sum(getsize(k) + getsize(v) + 100 for k, v in sample_items)
        return max(total / max(len(sample_items), 1), 64.0)

    def maybe_spill(self) -> None:
        """Combine or spill when the buffer passes its budget (call once per chunk)."""
        if self.estimated_bytes() <= self.memory_budget:
            return
        self._entry_bytes = self._sample_entry_bytes()
        if self.estimated_bytes() <= self.memory_budget:
            return
        if self.mode == "combine" and self._values > 2 * len(self._acc):
            self._combine_in_place()
            self._entry_bytes = self._sample_entry_bytes()
            if self.estimated_bytes() <= self.memory_budget // 2:
                return
        self._spill()

    def _combine_in_place(self) -> None:
        """One application of the combiner to the whole buffer, inside its hooks."""
        if not self._uncombined:
            return  # combined already: nothing new to combine (nor to run hooks for)
        if self.mode == "sum":
            self._combine_sums()
            return
        groups = self._acc
        combined: dict[Any, list[Any]] = {}
        where = self.where
        checks = {"grouped": True, "hashed": True}

        def pairs() -> Iterator[tuple[Any, Any]]:
            yield from hook_pairs(self.combiner_init, "combiner_init", where, **checks)
            for key, values in groups.items():
                if len(values) == 1:
                    yield key, values[0]
                else:
                    yield from self._call_combiner(given_key(key), values)
            yield from hook_pairs(self.combiner_final, "combiner_final", where, **checks)

        for k, v in pairs():
            try:
                bucket = combined.get(k)
            except TypeError:
                if _hashable(k):
                    raise
                k = table_key(k)
                bucket = combined.get(k)
            if bucket is None:
                combined[k] = [v]
            else:
                bucket.append(v)
        self._acc = combined
        self._values = sum(map(len, combined.values()))
        self._uncombined = False

    def _combine_sums(self) -> None:
        """Sum mode's application: the folded keys are their combiner's output already;
        the combiner itself runs on the keys that hold lists, inside its hooks."""
        hooks = self.combiner_init is not None or self.combiner_final is not None
        self._uncombined = False
        if not hooks and not combiners.holds_lists(self._acc):
            return
        folded = self._acc
        where = self.where
        checks = {"grouped": True, "hashed": True}

        def pairs() -> Iterator[tuple[Any, Any]]:
            yield from hook_pairs(self.combiner_init, "combiner_init", where, **checks)
            for key, held in folded.items():
                if type(held) is not combiners.SumValues:
                    yield key, held
                elif len(held) == 1:
                    yield key, held[0]
                else:
                    yield from self._call_combiner(given_key(key), held)
            yield from hook_pairs(self.combiner_final, "combiner_final", where, **checks)

        self._acc = {}
        combiners.fold_pairs(self._acc, pairs(), table_key)

    def _call_combiner(self, key: Any, values: list[Any]) -> list[tuple[Any, Any]]:
        try:
            out = list(self.combiner(key, iter(values)))
        except Interrupted:  # a signal to the process, not an error of user code
            raise
        except USER_ERRORS as exc:
            raise UserCodeFailure("combiner", f"key {key!r:.200}", exc) from exc
        for item in out:
            if not is_pair(item):
                raise UserCodeFailure(
                    "combiner", f"key {key!r:.200}", NotAPairError(item, "combiner"), raised=False
                )
        return out

    # -- sorting and output ----------------------------------------------------------
    def _sorted_partitions(self) -> tuple[list[list[tuple[Any, Any]]], list[str]]:
        """The buffer as sorted partitions; empties the buffer.

        Raises :class:`NotAPairError` or :class:`~kubemr.keys.NaNKeyError` for what the
        user's code put in it; the task then finds the record that produced it.
        """
        if self.mode == "plain":
            pairs = self._pairs
            self._pairs = []
            if self._unchecked:
                check_pairs(pairs)
        elif self.mode == "aggregate":
            pairs = list(self._acc.items())
            self._acc = {}
        elif self.mode == "sum":
            self._combine_in_place()
            pairs = list(combiners.as_pairs(self._acc))
            self._acc = {}
        else:
            self._combine_in_place()
            pairs = [(k, v) for k, values in self._acc.items() for v in values]
            self._acc = {}
            self._values = 0
        types = set(map(type, map(_first, pairs)))
        if _ListKey in types:  # keys that held lists go out as the user gave them
            pairs = [(given_key(k), v) for k, v in pairs]
            types = set(map(type, map(_first, pairs)))
        cls = key_class_of_types(types)
        if float in types:
            _refuse_nan_keys(pairs, cls)
        try:
            return self._partition_and_sort(pairs, cls)
        except NaNKeyError:
            # order_key met a NaN inside a key (or a float subclass): name the whole key.
            raise NaNKeyError(next(k for k, _ in pairs if has_nan(k))) from None

    def _partition_and_sort(
        self, pairs: list[tuple[Any, Any]], cls: str
    ) -> tuple[list[list[tuple[Any, Any]]], list[str]]:
        if isinstance(self.partitioner, RangePartitioner):
            # Ranges: sort once, then cut the sorted run at the partition boundaries.
            sort_pairs(pairs, cls)
            parts = self.partitioner.split_sorted(pairs, self.num_partitions)
            if cls == KEY_CLASS_MIXED:  # a part may hold fewer classes than the whole
                return parts, [key_class(map(_first, part)) for part in parts]
            return parts, [cls if part else KEY_CLASS_EMPTY for part in parts]
        parts = partition_pairs(pairs, self.num_partitions, self.partitioner, cls)
        classes = []
        for part in parts:
            part_cls = key_class(map(_first, part)) if self.num_partitions > 1 else cls
            sort_pairs(part, part_cls)
            classes.append(part_cls)
        return parts, classes

    def _spill(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(
                prefix="kubemr-spill-", dir=self.spill_dir, ignore_cleanup_errors=True
            )
        parts, classes = self._sorted_partitions()
        path = os.path.join(self._tmp.name, f"run-{len(self._runs):05d}")
        with open(path, "wb", buffering=1 << 20) as fh:
            index = write_run(fh, parts, classes)
        self.spilled_records += sum(index.records)
        self.spilled_bytes += index.offsets[-1]
        self._runs.append(SpillRun(path, index))

    def write(self, out: BinaryIO) -> PartitionIndex:
        """Write the task's final shuffle output: all partitions, sorted, combined; its
        key sample goes to :attr:`key_sample`."""
        try:
            if not self._runs:
                parts, classes = self._sorted_partitions()
                strides = [sample_stride(len(part)) for part in parts]
                samples = [[kv[0] for kv in part[::stride]] for part, stride in zip(parts, strides)]
                index = write_run(out, parts, classes)
            else:
                if self.entries():
                    self._spill()
                # Combining only shrinks a partition: the runs' records bound its size.
                upper = [
                    sum(r.index.records[p] for r in self._runs) for p in range(self.num_partitions)
                ]
                strides = [sample_stride(n) for n in upper]
                samples = [[] for _ in range(self.num_partitions)]
                merged = [self._merged(p) for p in range(self.num_partitions)]
                try:
                    index = write_stream(out, merged, samples, strides)
                finally:
                    for stream in merged:
                        stream.close()  # closes its spill files, even after a failure
            self.key_sample = sample_summary(samples, strides, index.records)
            return index
        finally:
            self.close()

    def close(self) -> None:
        """Delete the spill files. Every way out of a map task calls this: spills left
        behind by failed attempts would fill the disk that retries need."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _merged(self, p: int) -> Iterator[tuple[Any, Any]]:
        """Partition ``p`` merged over every spilled run, combined again per key."""
        streams = []
        files = []
        for run in self._runs:
            start, end = run.index.offsets[p], run.index.offsets[p + 1]
            if end > start:
                fh = open(run.path, "rb")  # noqa: SIM115 - closed below
                fh.seek(start)
                files.append(fh)
                streams.append(read_segment_blocks(_Limited(fh, end - start)))
        cls = merge_key_classes(run.index.key_classes[p] for run in self._runs)
        try:
            merged = itertools.chain.from_iterable(merge_sorted_blocks(streams, cls))
            if self.mode == "plain":
                yield from merged
            elif self.mode == "aggregate":
                merge = self.combiner.merge
                for key, values in group_sorted(merged, cls):
                    acc = next(values)
                    try:
                        for v in values:
                            acc = merge(acc, v)
                    except Exception as exc:  # MIN of ints from one run and strs from another
                        where = f"key {key!r:.200}"
                        role = f"{self.combiner!r} on the mapper's values"
                        raise UserCodeFailure(role, where, exc) from exc
                    yield key, acc
            elif self.combiner_init is not None or self.combiner_final is not None:
                yield from merged  # see the class doc: combined before each spill only
            else:
                for key, values in group_sorted(merged, cls):
                    vals = list(values)
                    yield from (
                        ((key, vals[0]),) if len(vals) == 1 else self._call_combiner(key, vals)
                    )
        finally:
            for fh in files:
                fh.close()


class _Limited:
    """Reads at most ``n`` bytes of a file."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self._fh = fh
        self._left = n

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n < 0 or n > self._left:
            n = self._left
        data = self._fh.read(n)
        self._left -= len(data)
        return data
