"""The shuffle: whatever the memory budget, partitions hold the right, sorted data."""

from __future__ import annotations

import io
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from kubemr.job import COUNT, MAX, MIN, SUM
from kubemr.keys import hash_partition, order_key
from kubemr.shuffle import MapCollector, read_segment

words = st.text(alphabet="abcdefg", min_size=1, max_size=3)
mixed_keys = st.one_of(words, st.integers(0, 20), st.tuples(words, st.integers(0, 3)))


def run_collector(pairs, partitions, combiner=None, budget=1 << 30, chunk=50):
    collector = MapCollector(num_partitions=partitions, combiner=combiner, memory_budget=budget)
    for i in range(0, len(pairs), chunk):
        collector.feed_output(pairs[i : i + chunk])
        collector.maybe_spill()
    out = io.BytesIO()
    index = collector.write(out)
    data = out.getvalue()
    parts = []
    for p in range(partitions):
        seg = io.BytesIO(data[index.offsets[p] : index.offsets[p + 1]])
        parts.append(list(read_segment(seg)))
    assert [len(p) for p in parts] == index.records
    return parts, collector


def assert_sorted_and_placed(parts, partitions) -> None:
    for p, part in enumerate(parts):
        ks = [order_key(k) for k, _ in part]
        assert ks == sorted(ks)
        assert all(hash_partition(k, partitions) == p for k, _ in part)


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.lists(st.tuples(mixed_keys, st.integers(-5, 5)), max_size=400),
    partitions=st.integers(1, 5),
    budget=st.sampled_from([1, 2000, 1 << 30]),
)
def test_plain_mode_keeps_every_pair(pairs, partitions, budget) -> None:
    parts, _ = run_collector(pairs, partitions, budget=budget)
    assert_sorted_and_placed(parts, partitions)
    got = Counter((order_key(k), v) for part in parts for k, v in part)
    assert got == Counter((order_key(k), v) for k, v in pairs)


@settings(max_examples=150, deadline=None)
@given(
    pairs=st.lists(st.tuples(mixed_keys, st.integers(-5, 5)), max_size=400),
    partitions=st.integers(1, 5),
    budget=st.sampled_from([1, 3000, 1 << 30]),
    agg=st.sampled_from([SUM, COUNT, MIN, MAX]),
)
def test_aggregate_combiner(pairs, partitions, budget, agg) -> None:
    parts, collector = run_collector(pairs, partitions, combiner=agg, budget=budget)
    assert_sorted_and_placed(parts, partitions)
    groups = defaultdict(list)
    for k, v in pairs:
        groups[order_key(k)].append(v)
    expected = {k: agg.fold(vs) for k, vs in groups.items()}
    got = {order_key(k): v for part in parts for k, v in part}
    assert got == expected
    assert sum(len(p) for p in parts) == len(expected)  # one record per key
    if budget == 1 and len(expected) > 1:
        assert collector.spilled_records > 0


@settings(max_examples=100, deadline=None)
@given(
    pairs=st.lists(st.tuples(words, st.integers(0, 9)), max_size=400),
    budget=st.sampled_from([1, 1 << 30]),
)
def test_python_combiner_output_reduces_to_the_same_result(pairs, budget) -> None:
    calls = []

    def combiner(key, values):
        vals = list(values)
        calls.append(len(vals))
        yield key, sum(vals)

    parts, _ = run_collector(pairs, 3, combiner=combiner, budget=budget)
    assert_sorted_and_placed(parts, 3)
    total = defaultdict(int)
    for part in parts:
        for k, v in part:
            total[k] += v
    expected = defaultdict(int)
    for k, v in pairs:
        expected[k] += v
    assert dict(total) == dict(expected)


def test_a_mapping_from_mapper_batch_is_folded() -> None:
    collector = MapCollector(num_partitions=2, combiner=SUM)
    collector.feed_output(Counter("abracadabra"))
    collector.feed_output(Counter("banana"))
    out = io.BytesIO()
    index = collector.write(out)
    data = out.getvalue()
    got = {}
    for p in range(2):
        got.update(read_segment(io.BytesIO(data[index.offsets[p] : index.offsets[p + 1]])))
    assert got == dict(Counter("abracadabra") + Counter("banana"))
