"""A Python combiner ``yield key, sum(values)`` is folded as pairs come, with exactly the
output the combiner itself would give: same values, same types, same errors."""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemr.combiners import is_sum_combiner
from kubemr.keys import order_key
from kubemr.shuffle import MapCollector, read_segment
from kubemr.task import UserCodeFailure


def compiled(source: str, name: str = "combiner", **namespace: Any) -> Any:
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


class Job:
    def combiner(self, word, counts):
        yield word, sum(counts)

    @staticmethod
    def static_combiner(word, counts):
        yield (word, sum(counts))


def plain_combiner(k, vs):
    yield k, sum(vs)


def test_the_usual_forms_are_recognised() -> None:
    assert is_sum_combiner(Job().combiner)
    assert is_sum_combiner(Job().static_combiner)
    assert is_sum_combiner(plain_combiner)
    assert is_sum_combiner(compiled("def combiner(key, values):\n    yield key, sum(values)"))


@pytest.mark.parametrize(
    "source",
    [
        "def combiner(key, values):\n    yield key, sum(values, 0)",
        "def combiner(key, values):\n    yield key, sum(values) + 1",
        "def combiner(key, values):\n    yield values, sum(key)",
        "def combiner(key, values):\n    yield key, max(values)",
        "def combiner(key, values):\n    return [(key, sum(values))]",
        "def combiner(key, values, scale=2):\n    yield key, sum(values)",
        "def combiner(key, *values):\n    yield key, sum(values)",
        "def combiner(key, values):\n    print(key)\n    yield key, sum(values)",
        "combiner = lambda key, values: [(key, sum(values))]",
        "async def combiner(key, values):\n    yield key, sum(values)",
    ],
)
def test_anything_else_is_not(source: str) -> None:
    assert not is_sum_combiner(compiled(source))


def test_a_shadowed_sum_is_not_the_built_in() -> None:
    fn = compiled(
        "def combiner(key, values):\n    yield key, sum(values)",
        sum=lambda values: max(values),
    )
    assert not is_sum_combiner(fn)


def test_a_function_taking_self_is_not_recognised_unbound() -> None:
    # Called as combiner(key, values), it would bind key to self: not a sum.
    assert not is_sum_combiner(Job.combiner)


def unrecognised_sum(key, values):
    yield key, sum(values, 0)  # the same computation, run as written


def collect(pairs: list, combiner: Any, budget: int, chunk: int = 7) -> list:
    collector = MapCollector(num_partitions=3, combiner=combiner, memory_budget=budget)
    for i in range(0, len(pairs), chunk):
        collector.feed_output(pairs[i : i + chunk])
        collector.maybe_spill()
    out = io.BytesIO()
    index = collector.write(out)
    data = out.getvalue()
    got = []
    for p in range(3):
        got.extend(read_segment(io.BytesIO(data[index.offsets[p] : index.offsets[p + 1]])))
    return got


def typed(pairs: list) -> list:
    """Pairs with each value's type, so that 2, 2.0 and True differ; NaN as a string."""
    return [
        (order_key(k), type(v).__name__, "nan" if isinstance(v, float) and math.isnan(v) else v)
        for k, v in pairs
    ]


keys = st.one_of(
    st.text(alphabet="abc", min_size=1, max_size=2),
    st.integers(0, 3),
    st.lists(st.integers(0, 2), max_size=2),  # a key holding a list: not hashable
)
values = st.one_of(
    st.integers(-5, 5),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, width=32),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(keys, values), max_size=120),
    budget=st.sampled_from([1, 1 << 30]),
)
def test_the_fold_gives_what_the_combiner_gives(pairs: list, budget: int) -> None:
    folded = collect(pairs, plain_combiner, budget)
    as_written = collect(pairs, unrecognised_sum, budget)
    assert typed(folded) == typed(as_written)


def test_a_value_sum_refuses_fails_in_the_users_combiner() -> None:
    pairs = [("a", 1), ("b", 2), ("a", "x"), ("a", 3)]
    with pytest.raises(UserCodeFailure) as folded:
        collect(pairs, plain_combiner, 1 << 30)
    with pytest.raises(UserCodeFailure) as as_written:
        collect(pairs, unrecognised_sum, 1 << 30)
    assert "combiner" in str(folded.value)
    assert "'a'" in str(folded.value)
    assert str(folded.value.__cause__) == str(as_written.value.__cause__)
    assert "unsupported operand" in str(folded.value.__cause__)


def test_combiner_hooks_run_around_the_fold() -> None:
    def with_hooks(combiner: Any) -> list:
        collector = MapCollector(
            num_partitions=1,
            combiner=combiner,
            combiner_init=lambda: iter([("a", 10), ("z", 0.5)]),
            combiner_final=lambda: iter([("a", 100)]),
        )
        collector.feed_output([("a", 1), ("b", 2), ("a", 3)])
        out = io.BytesIO()
        index = collector.write(out)
        return list(read_segment(io.BytesIO(out.getvalue()[: index.offsets[1]])))

    folded = with_hooks(plain_combiner)
    as_written = with_hooks(unrecognised_sum)
    # The hooks' pairs may be folded into a key's sum or sent beside it (a combiner may
    # run any number of times): what a reducer adds up is the same.
    totals: dict[str, float] = {}
    for k, v in folded:
        totals[k] = totals.get(k, 0) + v
    expected: dict[str, float] = {}
    for k, v in as_written:
        expected[k] = expected.get(k, 0) + v
    assert totals == expected == {"a": 114, "b": 2, "z": 0.5}
