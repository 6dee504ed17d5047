"""Python combiners proven to be a sum, and the exact fold that stands in for them.

Most combiners are written ``yield key, sum(values)``. Run as written, the map side keeps
a list of every value per key and calls the combiner when the buffer is full, which
costs about as much again as the mapper itself. A combiner whose bytecode is exactly
that statement (and whose ``sum`` is the built-in) is instead folded as the pairs come:
``acc[key] = acc.get(key, 0) + value``, which is what ``sum`` computes for ``int``
values, to the last digit. Nothing is guessed:

- only a value whose type is exactly ``int`` is folded; any other value (a float, whose
  ``sum`` may round differently from a running ``+``; a bool; a string that ``sum``
  would refuse) turns that key back into a list of its values, its partial sum first,
  and the user's own combiner runs on it as written;
- recognising a combiner reads its bytecode and never calls it.
"""

from __future__ import annotations

import builtins
import dis
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _reference_with_self(self, key, values):  # type: ignore[no-untyped-def]
    yield key, sum(values)


def _reference(key, values):  # type: ignore[no-untyped-def]
    yield key, sum(values)


# The flags that change how a function runs (not __future__ flags, not nesting).
_KIND_FLAGS = (
    inspect.CO_VARARGS
    | inspect.CO_VARKEYWORDS
    | inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
)


def _shape(code: Any) -> tuple[Any, ...]:
    """What makes two code objects run alike: their instructions and arguments, names
    and constants; not their names, files or line numbers."""
    return (
        tuple((ins.opname, ins.arg) for ins in dis.get_instructions(code)),
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags & _KIND_FLAGS,
        code.co_names,
        code.co_consts,
        code.co_nlocals,
        code.co_freevars,
    )


_SUM_SHAPES = {_shape(_reference_with_self.__code__), _shape(_reference.__code__)}


def is_sum_combiner(fn: Any) -> bool:
    """Whether ``fn`` is a combiner ``yield key, sum(values)`` with the built-in ``sum``
    (as a function, a method, or a static method); read from its bytecode."""
    func = fn.__func__ if inspect.ismethod(fn) else fn
    code = getattr(func, "__code__", None)
    if code is None or _shape(code) not in _SUM_SHAPES:
        return False
    if inspect.ismethod(fn) != (code.co_argcount == 3):
        return False  # self must be bound exactly when the function takes it
    sum_ = func.__globals__.get("sum", _builtin_sum(func))
    return sum_ is builtins.sum


def _builtin_sum(func: Any) -> Any:
    found = func.__builtins__ if hasattr(func, "__builtins__") else builtins.__dict__
    return found.get("sum") if isinstance(found, dict) else getattr(found, "sum", None)


class SumValues(list):  # type: ignore[type-arg]
    """The values of a key that cannot be folded exactly: its partial sum first, then
    the values as they came, for the combiner itself. ``int + SumValues`` raises
    TypeError, which is how the hot loop finds such a key at no cost to the others."""


def add_value(acc: dict[Any, Any], key: Any, value: Any) -> None:
    """The slow path of the fold: a value that is not an ``int``, or a key already
    holding a list of values."""
    held = acc.get(key)
    if held is None:
        if type(value) is int:
            acc[key] = value
        else:
            acc[key] = SumValues((value,))
    elif type(held) is SumValues:
        held.append(value)
    elif type(value) is int:
        acc[key] = held + value
    else:
        acc[key] = SumValues((held, value))


def fold_pairs(
    acc: dict[Any, Any], pairs: Iterable[tuple[Any, Any]], table_key: Callable[[Any], Any]
) -> int:
    """Fold checked pairs into ``acc``; return how many there were. ``table_key``: the
    hashable stand-in for a key that holds lists."""
    get = acc.get
    n = 0
    for k, v in pairs:
        n += 1
        if type(v) is int:
            try:
                acc[k] = get(k, 0) + v
                continue
            except TypeError:
                pass  # the key holds a list of values, or cannot be hashed as given
        _add_slow(acc, k, v, table_key)
    return n


def fold_records(
    acc: dict[Any, Any],
    records: list[Any],
    mapper: Callable[[Any], Any],
    table_key: Callable[[Any], Any],
    check: Callable[[Any], None] | None = None,
) -> None:
    """Run a per-record mapper straight into the fold: the hot loop of a job with a sum
    combiner. ``check`` is called on every item that is not a tuple (None: the mapper
    is proven to yield only pairs)."""
    get = acc.get
    if check is None:
        for rec in records:
            for k, v in mapper(rec):
                if type(v) is int:
                    try:
                        acc[k] = get(k, 0) + v
                        continue
                    except TypeError:
                        pass
                _add_slow(acc, k, v, table_key)
        return
    tuple_ = tuple
    for rec in records:
        for item in mapper(rec):
            if type(item) is not tuple_:
                check(item)
            k, v = item
            if type(v) is int:
                try:
                    acc[k] = get(k, 0) + v
                    continue
                except TypeError:
                    pass
            _add_slow(acc, k, v, table_key)


def _add_slow(acc: dict[Any, Any], key: Any, value: Any, table_key: Callable[[Any], Any]) -> None:
    try:
        add_value(acc, key, value)
    except TypeError:
        try:
            hash(key)
        except TypeError:
            add_value(acc, table_key(key), value)
            return
        raise


def holds_lists(acc: dict[Any, Any]) -> bool:
    """Whether some key holds values the combiner itself must see."""
    return any(type(held) is SumValues for held in acc.values())


def as_pairs(acc: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    """The folded buffer as pairs: one per summed key, every value of a listed key."""
    for key, held in acc.items():
        if type(held) is SumValues:
            for value in held:
                yield key, value
        else:
            yield key, held
