"""Nested stratified subsets and the fixed test hold-out: counts, nesting, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data.subsets import (
    holdout_split,
    parse_size,
    resolve_per_class,
    select_subset,
    val_per_class,
)
from bench.errors import DataError


def make_labels(counts: list[int], seed: int = 123) -> np.ndarray:
    """Labels with ``counts[c]`` images of class c, interleaved in a shuffled order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


COUNTS = [30, 45, 60]
LABELS = make_labels(COUNTS)


def per_class(labels: np.ndarray, indices: np.ndarray, k: int) -> list[int]:
    return np.bincount(labels[indices], minlength=k).tolist()


def test_counts_per_class_are_exact_for_an_integer_size():
    subset = select_subset(LABELS, 10, seed=0, val_fraction=0.1)
    assert per_class(LABELS, subset.train, 3) == [10, 10, 10]
    # round half up: 0.1 * 45 = 4.5 -> 5
    assert per_class(LABELS, subset.val, 3) == [3, 5, 6]


def test_fraction_counts_round_half_up_on_what_is_left_after_validation():
    subset = select_subset(LABELS, 0.5, seed=0, val_fraction=0.1)
    # available = 27, 40, 54 -> 13.5 -> 14, 20, 27
    assert per_class(LABELS, subset.train, 3) == [14, 20, 27]
    tiny = select_subset(LABELS, 0.01, seed=0, val_fraction=0.1)
    assert per_class(LABELS, tiny.train, 3) == [1, 1, 1]


def test_all_takes_every_pool_image_not_used_for_validation():
    subset = select_subset(LABELS, "all", seed=3, val_fraction=0.1)
    assert len(subset.train) + len(subset.val) == len(LABELS)
    assert np.array_equal(np.union1d(subset.train, subset.val), np.arange(len(LABELS)))


def test_sizes_are_nested_and_validation_fixed_for_one_seed():
    sizes = [1, 5, 10, 0.5, "all"]
    subsets = [select_subset(LABELS, size, seed=7, val_fraction=0.2) for size in sizes]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert np.isin(smaller.train, larger.train).all()
        assert len(smaller.train) < len(larger.train)
        assert np.array_equal(smaller.val, larger.val)
    for subset in subsets:
        assert not np.intersect1d(subset.train, subset.val).size


def test_string_sizes_match_their_numeric_forms():
    for text, value in [("10", 10), ("0.5", 0.5), (" ALL ", "all")]:
        a = select_subset(LABELS, text, seed=1, val_fraction=0.1)
        b = select_subset(LABELS, value, seed=1, val_fraction=0.1)
        assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)


def test_same_seed_repeats_and_other_seeds_differ():
    a = select_subset(LABELS, 10, seed=5, val_fraction=0.1)
    b = select_subset(LABELS, 10, seed=5, val_fraction=0.1)
    c = select_subset(LABELS, 10, seed=6, val_fraction=0.1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.train, c.train)
    assert not np.array_equal(a.val, c.val)


def test_one_class_selection_does_not_depend_on_other_classes():
    base = np.array([0] * 20 + [1] * 20)
    grown = np.concatenate([base, [0] * 15, [2] * 10])  # class 0 grows, class 2 appears
    a = select_subset(base, 5, seed=2, val_fraction=0.1)
    b = select_subset(grown, 5, seed=2, val_fraction=0.1)
    for part_a, part_b in ((a.train, b.train), (a.val, b.val)):
        assert np.array_equal(part_a[base[part_a] == 1], part_b[grown[part_b] == 1])


def test_indices_are_sorted_int64():
    subset = select_subset(LABELS, 10, seed=0, val_fraction=0.1)
    for part in (subset.train, subset.val):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)


def test_zero_val_fraction_means_no_validation():
    subset = select_subset(LABELS, "all", seed=0, val_fraction=0.0)
    assert len(subset.val) == 0
    assert len(subset.train) == len(LABELS)


def test_too_large_size_names_size_class_and_what_exists():
    with pytest.raises(DataError) as info:
        select_subset(LABELS, 28, seed=0, val_fraction=0.1, classes=["cat", "dog", "fox"])
    message = str(info.value)
    assert "size 28" in message and "'cat'" in message and "27" in message and "30" in message


def test_resolve_per_class_matches_select_subset_and_rejects_small_classes():
    counts = np.array(COUNTS)
    assert resolve_per_class("0.5", counts, 0.1).tolist() == [14, 20, 27]
    assert resolve_per_class("all", counts, 0.1).tolist() == [27, 40, 54]
    with pytest.raises(DataError, match="class 'b'.*has only 1"):
        resolve_per_class(2, np.array([10, 2]), 0.1, classes=["a", "b"])
    with pytest.raises(DataError, match="leaving none to train on"):
        resolve_per_class("all", np.array([10, 1]), 0.1)


def test_validation_takes_at_least_one_image_per_class():
    assert val_per_class(np.array([1, 4, 15, 100]), 0.1).tolist() == [1, 1, 2, 10]


@pytest.mark.parametrize("bad", [0, -3, 1.5, 0.0, "abc", "", True, None, float("nan")])
def test_parse_size_rejects_what_is_not_a_size(bad):
    with pytest.raises(DataError, match="size"):
        parse_size(bad)


def test_parse_size_distinguishes_one_image_from_the_whole_fraction():
    assert parse_size("1") == 1 and isinstance(parse_size("1"), int)
    assert parse_size("1.0") == 1.0 and isinstance(parse_size("1.0"), float)


def test_bad_val_fraction_and_seed_raise():
    with pytest.raises(DataError, match="val_fraction"):
        select_subset(LABELS, 10, seed=0, val_fraction=1.0)
    with pytest.raises(DataError, match="seed"):
        select_subset(LABELS, 10, seed=-1, val_fraction=0.1)


def test_holdout_is_stratified_fixed_and_disjoint():
    pool, test = holdout_split(LABELS, 0.25)
    again_pool, again_test = holdout_split(LABELS, 0.25)
    assert np.array_equal(pool, again_pool) and np.array_equal(test, again_test)
    assert not np.intersect1d(pool, test).size
    assert np.array_equal(np.union1d(pool, test), np.arange(len(LABELS)))
    # 0.25 * (30, 45, 60) = 7.5 -> 8, 11.25 -> 11, 15
    assert per_class(LABELS, test, 3) == [8, 11, 15]


def test_holdout_keeps_a_single_image_class_in_the_pool():
    labels = np.array([0, 1, 1, 1, 1])
    pool, test = holdout_split(labels, 0.5)
    assert 0 in pool.tolist()
    assert labels[test].tolist() == [1, 1]


def test_holdout_differs_from_a_subset_with_the_same_seed():
    # Separate random streams: the hold-out must not mirror the seed-0 validation picks.
    _, test = holdout_split(LABELS, 0.1)
    val = select_subset(LABELS, 1, seed=0, val_fraction=0.1).val
    assert not np.array_equal(test, val)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=3, max_value=40), min_size=1, max_size=5),
    seed=st.integers(min_value=0, max_value=2**32),
    small=st.integers(min_value=1, max_value=40),
    extra=st.integers(min_value=0, max_value=40),
    val_fraction=st.sampled_from([0.0, 0.1, 0.25]),
    order_seed=st.integers(min_value=0, max_value=1000),
)
def test_property_nested_disjoint_stratified(counts, seed, small, extra, val_fraction, order_seed):
    labels = make_labels(counts, order_seed)
    available = (np.array(counts) - val_per_class(np.array(counts), val_fraction)).min()
    small = min(small, available)
    large = min(small + extra, available)
    a = select_subset(labels, small, seed, val_fraction)
    b = select_subset(labels, large, seed, val_fraction)
    full = select_subset(labels, "all", seed, val_fraction)
    assert np.isin(a.train, b.train).all() and np.isin(b.train, full.train).all()
    assert np.array_equal(a.val, b.val) and np.array_equal(b.val, full.val)
    assert not np.intersect1d(b.train, b.val).size
    assert per_class(labels, a.train, len(counts)) == [small] * len(counts)
    assert per_class(labels, b.train, len(counts)) == [large] * len(counts)
