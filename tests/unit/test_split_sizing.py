"""How the default split size follows the input and the workers."""

from __future__ import annotations

import math

import pytest

from kubemr.plan import MIN_AUTO_SPLIT, effective_split_size

MB = 10**6
MiB = 1 << 20


def splits(total: int, split: int, workers: int, **kw: bool) -> int:
    size = effective_split_size(total, split, workers, auto=True, **kw)
    return math.ceil(total / size)


@pytest.mark.parametrize(
    ("total_mb", "workers", "local", "pods"),
    [
        (200, 2, 4, 2),  # 3 splits of 64 MiB: up to 4 in a pool, down to 2 as pods
        (1000, 2, 16, 14),  # 15 splits
        (1000, 8, 16, 8),
        (900, 2, 14, 14),  # already a multiple
        (64, 4, 4, 4),  # smaller than one split: one per worker either way
        (300, 2, 6, 4),
    ],
)
def test_a_multiple_of_the_workers_up_locally_down_for_pods(
    total_mb: int, workers: int, local: int, pods: int
) -> None:
    total = total_mb * MB
    assert splits(total, 64 * MiB, workers) == local
    assert splits(total, 64 * MiB, workers, costly_tasks=True) == pods


def test_a_given_size_is_kept() -> None:
    assert effective_split_size(200 * MB, 10 * MiB, 2, auto=False, costly_tasks=True) == 10 * MiB


def test_never_below_the_floor() -> None:
    assert effective_split_size(10, 64 * MiB, 8, auto=True) == MIN_AUTO_SPLIT
