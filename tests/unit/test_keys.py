"""The key order is total and deterministic; partitioning is stable across processes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from kubemr.keys import hash_partition, key_class, order_key, stable_hash

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)
keys = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3), max_leaves=6
)


@given(st.lists(keys, max_size=30))
def test_order_is_total_and_independent_of_input_order(items: list) -> None:
    once = sorted(items, key=order_key)
    again = sorted(reversed(items), key=order_key)
    assert [order_key(k) for k in once] == [order_key(k) for k in again]


@given(keys, keys, keys)
def test_order_is_transitive(a, b, c) -> None:
    x, y, z = sorted([a, b, c], key=order_key)
    assert order_key(x) <= order_key(y) <= order_key(z)


@given(keys, keys)
def test_equal_keys_hash_alike(a, b) -> None:
    if order_key(a) == order_key(b):
        assert stable_hash(a) == stable_hash(b)


def test_numbers_that_python_calls_equal_are_one_key() -> None:
    assert order_key(1) == order_key(1.0) == order_key(True)
    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True)
    assert order_key(None) < order_key(-1e300) < order_key("") < order_key(b"") < order_key(())


def test_native_classes_agree_with_the_order_rule() -> None:
    for run in (["b", "a", "é", "Z"], [3, 1.5, -2, True], [b"b", b"a"]):
        assert sorted(run) == sorted(run, key=order_key)
        assert key_class(run) != "mixed"
    assert key_class(["a", 1]) == "mixed"


def test_partition_is_the_same_in_another_process_with_another_hash_seed() -> None:
    sample = ["alpha", "βeta", b"raw", 12345, 2.5, ("a", 1), None, ["x", ("y", b"z")]]
    here = [hash_partition(k, 7) for k in sample]
    code = (
        f"from kubemr.keys import hash_partition;print([hash_partition(k, 7) for k in {sample!r}])"
    )
    for seed in ("1", "2", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == str(here)


def test_order_key_sorts_mixed_lists() -> None:
    mixed = [("b", 2), ("a", "x"), ("a", 1), "s", 3, None, b"q"]
    result = sorted(mixed, key=order_key)
    assert result == [None, 3, "s", b"q", ("a", 1), ("a", "x"), ("b", 2)]
    assert functools.reduce(lambda acc, k: acc and k is not None, result[1:], True)
