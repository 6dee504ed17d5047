"""Key order and partitioning that are the same in every process.

The order rule, used for sorting shuffle data and for grouping keys in reducers:

1. ``None`` sorts first.
2. Numbers next (``bool``, ``int``, ``float``), by numeric value: keys that compare
   equal in Python (``1``, ``1.0``, ``True``) are one key, exactly as in a ``dict``.
3. Then ``str`` (by code point), then ``bytes``.
4. Then tuples and lists, element by element with this same rule.
5. Anything else last, by type name and then by its pickled bytes.

A NaN is not a key: it is not equal to itself, so no order can place it and no group
can hold it. :func:`order_key` raises :class:`NaNKeyError` for a NaN anywhere in a key.

Partitioning never uses Python's ``hash()`` of ``str``/``bytes``, which is salted
per process (PYTHONHASHSEED); see :func:`stable_hash`.
"""

from __future__ import annotations

import bisect
import pickle
import zlib
from collections.abc import Iterable
from typing import Any

_NUMBER_TYPES = (bool, int, float)

# Key classes whose native Python order equals the order rule above, so sorting can
# skip the (slower) order_key function when every key of a run is of one class.
KEY_CLASS_STR = "str"
KEY_CLASS_NUM = "num"
KEY_CLASS_BYTES = "bytes"
KEY_CLASS_MIXED = "mixed"
KEY_CLASS_EMPTY = "empty"

_NATIVE_CLASS = {
    str: KEY_CLASS_STR,
    int: KEY_CLASS_NUM,
    float: KEY_CLASS_NUM,
    bool: KEY_CLASS_NUM,
    bytes: KEY_CLASS_BYTES,
}


class NaNKeyError(ValueError):
    """A key is NaN or holds a NaN, so it can be neither sorted nor grouped.

    ``role`` names the user function that yielded it, once known.
    """

    def __init__(self, key: Any, role: str | None = None) -> None:
        super().__init__(key, role)
        self.key = key
        self.role = role

    def __str__(self) -> str:
        key = self.key
        what = "is NaN" if _is_nan(key) else "holds a NaN"
        head = (
            f"the {self.role} yielded key {key!r:.200}, which" if self.role else f"key {key!r:.200}"
        )
        return (
            f"{head} {what}: NaN is not equal to itself, so it cannot be grouped or sorted; "
            "map it to None or a string first (e.g. `None if x != x else x`)"
        )


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and x != x


def has_nan(key: Any) -> bool:
    """Whether a key is NaN or holds one, in tuples and lists at any depth."""
    if isinstance(key, float):
        return key != key
    if isinstance(key, tuple | list):
        return any(has_nan(k) for k in key)
    return False


def order_key(key: Any) -> tuple[Any, ...]:
    """A sort key that totally orders any mix of key types (see the module doc).

    Raises :class:`NaNKeyError` for a NaN, which no total order can place.
    """
    t = type(key)
    if t is str:
        return (3, key)
    if t is int or t is bool:
        return (2, key)
    if t is float:
        if key != key:
            raise NaNKeyError(key)
        return (2, key)
    if key is None:
        return (0,)
    if t is bytes:
        return (4, key)
    if t is tuple or t is list:
        return (5, tuple(order_key(k) for k in key))
    if isinstance(key, str):
        return (3, str(key))
    if isinstance(key, _NUMBER_TYPES):
        if key != key:  # a float subclass (numpy.float64) can be NaN too
            raise NaNKeyError(key)
        return (2, key)
    if isinstance(key, bytes | bytearray):
        return (4, bytes(key))
    if isinstance(key, tuple | list):
        return (5, tuple(order_key(k) for k in key))
    return (6, type(key).__qualname__, pickle.dumps(key, protocol=5))


def key_class(keys: Iterable[Any]) -> str:
    """The class of a run of keys: one native class, ``mixed`` or ``empty``."""
    return key_class_of_types(set(map(type, keys)))


def key_class_of_types(types: set[type]) -> str:
    """:func:`key_class` from the set of the keys' types (which callers may reuse)."""
    if not types:
        return KEY_CLASS_EMPTY
    classes = {_NATIVE_CLASS.get(t, KEY_CLASS_MIXED) for t in types}
    if len(classes) == 1:
        return classes.pop()
    return KEY_CLASS_MIXED


def merge_key_classes(classes: Iterable[str]) -> str:
    """The class of the union of several runs."""
    found = {c for c in classes if c != KEY_CLASS_EMPTY}
    if not found:
        return KEY_CLASS_EMPTY
    if len(found) == 1:
        return found.pop()
    return KEY_CLASS_MIXED


def sort_key_for(cls: str) -> Any:
    """``None`` (native order) for a single native class, else :func:`order_key`."""
    return order_key if cls == KEY_CLASS_MIXED else None


def keys_equal(a: Any, b: Any) -> bool:
    """Whether two keys are one key under the order rule."""
    return order_key(a) == order_key(b)


def stable_hash(key: Any) -> int:
    """A non-negative hash that is the same in every process and on every machine.

    Keys that are one key under the order rule hash alike (``1``, ``1.0``, ``True``).
    """
    t = type(key)
    if t is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if t is int or t is bool:
        # Python's int hash is not salted; mix it so small ints spread over partitions.
        return (hash(key) * 0x9E3779B1) & 0x7FFFFFFF
    if t is float:
        if key.is_integer():
            return stable_hash(int(key))
        return zlib.crc32(repr(key).encode())
    if t is bytes:
        return zlib.crc32(key)
    if key is None:
        return 0
    if t is tuple or t is list:
        h = 0x345678
        for item in key:
            h = zlib.crc32(stable_hash(item).to_bytes(4, "little"), h)
        return h
    ok = order_key(key)
    if ok[0] == 2:  # a number subclass (IntEnum, numpy.float64): its order key is itself
        return stable_hash(float(key) if isinstance(key, float) else int(key))
    if ok[0] != 6:  # a subclass of a basic type: hash its basic form
        return stable_hash(ok[1] if ok[0] != 5 else tuple(key))
    return zlib.crc32(pickle.dumps(key, protocol=5))


def hash_partition(key: Any, num_partitions: int) -> int:
    """The default partitioner."""
    return stable_hash(key) % num_partitions


class RangePartitioner:
    """Partitions by sampled key ranges, so partitions are ordered (total sort).

    Partition ``p`` holds the keys ``k`` with ``cuts[p-1] <= order_key(k) < cuts[p]``;
    keys past the last cut go to the last partition.
    """

    def __init__(self, boundaries: list[Any]) -> None:
        self.cuts = [order_key(b) for b in boundaries]

    def __call__(self, key: Any, num_partitions: int) -> int:
        return min(bisect.bisect_right(self.cuts, order_key(key)), num_partitions - 1)

    def split_sorted(self, pairs: list[Any], num_partitions: int) -> list[list[Any]]:
        """Partitions of pairs already sorted by the order rule: one binary search per
        cut instead of a call per pair."""
        parts = []
        start = 0
        for cut in self.cuts[: num_partitions - 1]:
            end = bisect.bisect_left(pairs, cut, lo=start, key=pair_order_key)
            parts.append(pairs[start:end])
            start = end
        parts.append(pairs[start:])
        parts.extend([] for _ in range(num_partitions - len(parts)))
        return parts


def pair_order_key(kv: tuple[Any, Any]) -> Any:
    """The order rule's sort key of a ``(key, value)`` pair."""
    return order_key(kv[0])
