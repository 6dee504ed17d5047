"""The shuffle: whatever the memory budget, partitions hold the right, sorted data."""

from __future__ import annotations

import io
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from kubemr.job import COUNT, MAX, MIN, SUM
from kubemr.keys import RangePartitioner, hash_partition, key_class, merge_key_classes, order_key
from kubemr.shuffle import MapCollector, merge_sorted_blocks, read_segment

words = st.text(alphabet="abcdefg", min_size=1, max_size=3)
mixed_keys = st.one_of(words, st.integers(0, 20), st.tuples(words, st.integers(0, 3)))


def run_collector(pairs, partitions, combiner=None, budget=1 << 30, chunk=50, partitioner=None):
    collector = MapCollector(
        num_partitions=partitions,
        combiner=combiner,
        partitioner=partitioner,
        memory_budget=budget,
    )
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


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.tuples(mixed_keys, st.integers()), max_size=40), max_size=6),
    st.integers(1, 7),
)
def test_block_merge_equals_a_stable_sort(runs, block) -> None:
    # Each run sorted by the order rule, then cut into blocks of `block` pairs (empty
    # blocks included): the merge must equal a stable sort of the runs in stream order.
    runs = [sorted(run, key=lambda kv: order_key(kv[0])) for run in runs]
    streams = [iter([run[i : i + block] for i in range(0, len(run), block)] + [[]]) for run in runs]
    cls = merge_key_classes(key_class(k for k, _ in run) for run in runs)
    merged = [kv for batch in merge_sorted_blocks(streams, cls) for kv in batch]
    tagged = [kv for run in runs for kv in run]
    assert merged == sorted(tagged, key=lambda kv: order_key(kv[0]))


def test_block_merge_keeps_stream_order_for_a_key_spanning_blocks() -> None:
    a = [[("k", "a1"), ("k", "a2")], [("k", "a3"), ("z", "a4")]]
    b = [[("k", "b1")], [("k", "b2"), ("m", "b3")]]
    merged = [kv for batch in merge_sorted_blocks([iter(a), iter(b)], "str") for kv in batch]
    assert [v for _, v in merged] == ["a1", "a2", "a3", "b1", "b2", "b3", "a4"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(mixed_keys, st.integers()), max_size=200),
    st.lists(mixed_keys, max_size=5),
    st.integers(1, 6),
    st.sampled_from([1 << 30, 2000]),
)
def test_range_partitions_are_ordered_and_match_the_partitioner(
    pairs, boundaries, partitions, budget
) -> None:
    # Cutting the sorted buffer at the boundaries must place every pair exactly where
    # calling the partitioner per pair would, spilled or not.
    ranges = RangePartitioner(sorted(boundaries, key=order_key))
    parts, _ = run_collector(pairs, partitions, budget=budget, chunk=30, partitioner=ranges)
    got = []
    for p, part in enumerate(parts):
        assert all(ranges(k, partitions) == p for k, _ in part)
        ks = [order_key(k) for k, _ in part]
        assert ks == sorted(ks)
        got.extend(part)
    assert Counter(map(repr, got)) == Counter(map(repr, pairs))
