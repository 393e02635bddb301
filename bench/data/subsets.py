"""Stratified, nested, seed-deterministic subsets of a training pool, and the fixed test hold-out.

Pure numpy: every function here maps labels and numbers to index arrays, with no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from bench.errors import DataError

ALL = "all"

Size = Union[int, float, str]

# Distinct streams so the test hold-out and the per-run subsets never share a permutation.
_SUBSET_STREAM = 0
_HOLDOUT_STREAM = 1


@dataclass(frozen=True)
class Subset:
    """Sorted int64 indices into the training pool: ``train`` and ``val`` never overlap."""

    train: np.ndarray
    val: np.ndarray


def parse_size(size: Size) -> int | float | str:
    """Normalise a size to an int >= 1 (per class), a float in (0, 1] (fraction) or ``"all"``."""
    value: object = size
    if isinstance(value, str):
        text = value.strip().lower()
        if text == ALL:
            return ALL
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise DataError(
                    f"size {size!r} is not a count per class, a fraction in (0, 1] or 'all'"
                ) from None
    if isinstance(value, bool):
        raise DataError(f"size {size!r} is not a count per class, a fraction in (0, 1] or 'all'")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise DataError(f"size {size!r}: a count per class must be at least 1")
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise DataError(f"size {size!r}: a fraction must be in (0, 1]; write counts as integers")
        return float(value)
    raise DataError(f"size {size!r} is not a count per class, a fraction in (0, 1] or 'all'")


def _round_half_up(x: float) -> int:
    # Python's round() rounds half to even, which would make 0.5 * 5 and 0.5 * 7 round oddly.
    return int(math.floor(x + 0.5))


def check_fraction(value: object, what: str, *, allow_zero: bool) -> float:
    """``value`` as a float in (0, 1), or [0, 1) with ``allow_zero``; else DataError naming ``what``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{what} {value!r} is not a number") from None
    low_ok = number >= 0.0 if allow_zero else number > 0.0
    if not (low_ok and number < 1.0):
        raise DataError(f"{what} {value!r} must be in {'[0, 1)' if allow_zero else '(0, 1)'}")
    return number


def _class_name(c: int, classes: Sequence[str] | None) -> str:
    if classes is not None and 0 <= c < len(classes):
        return repr(classes[c])
    return str(c)


def val_per_class(pool_counts: np.ndarray, val_fraction: float) -> np.ndarray:
    """Validation images per class: ``max(1, round(val_fraction * count))``, or 0 when the fraction is 0."""
    val_fraction = check_fraction(val_fraction, "val_fraction", allow_zero=True)
    counts = np.asarray(pool_counts, dtype=np.int64)
    if val_fraction == 0.0:
        return np.zeros_like(counts)
    return np.array([max(1, _round_half_up(val_fraction * n)) for n in counts], dtype=np.int64)


def resolve_per_class(
    size: Size,
    pool_counts: np.ndarray,
    val_fraction: float,
    *,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Training images per class for ``size``; raises DataError naming the first class that is too small."""
    parsed = parse_size(size)
    counts = np.asarray(pool_counts, dtype=np.int64)
    val = val_per_class(counts, val_fraction)
    out = np.empty_like(counts)
    for c, (n, v) in enumerate(zip(counts.tolist(), val.tolist())):
        available = n - v
        if available < 1:
            raise DataError(
                f"class {_class_name(c, classes)} has {n} images in the training pool, "
                f"{v} of them needed for validation, leaving none to train on"
            )
        if parsed == ALL:
            want = available
        elif isinstance(parsed, float):
            want = max(1, _round_half_up(parsed * available))
        else:
            want = parsed
        if want > available:
            raise DataError(
                f"size {size} needs {want} training images per class but class "
                f"{_class_name(c, classes)} has only {available} "
                f"({n} in the training pool, {v} held for validation)"
            )
        out[c] = want
    return out


def _grouped(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Present class ids and, for each, its ascending pool indices."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order, starts[1:]) if len(order) else []
    return present.astype(np.int64), [g.astype(np.int64) for g in groups]


def _permuted(indices: np.ndarray, stream: int, seed: int, c: int) -> np.ndarray:
    # Seeded by (stream, seed, class) only, so one class's order never depends on the others.
    rng = np.random.default_rng([stream, seed, c])
    return indices[rng.permutation(len(indices))]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed {seed!r} must be a non-negative integer")
    return int(seed)


def select_subset(
    labels: np.ndarray,
    size: Size,
    seed: int,
    val_fraction: float,
    *,
    classes: Sequence[str] | None = None,
) -> Subset:
    """Stratified train/val indices into the pool; nested across sizes and val fixed for a seed."""
    seed = _check_seed(seed)
    present, groups = _grouped(labels)
    if not groups:
        raise DataError("the training pool is empty")
    counts = np.array([len(g) for g in groups], dtype=np.int64)
    names = [classes[c] if classes is not None and c < len(classes) else str(c) for c in present.tolist()]
    train_n = resolve_per_class(size, counts, val_fraction, classes=names)
    val_n = val_per_class(counts, val_fraction)
    train_parts, val_parts = [], []
    for c, group, n, v in zip(present.tolist(), groups, train_n.tolist(), val_n.tolist()):
        order = _permuted(group, _SUBSET_STREAM, seed, c)
        val_parts.append(order[:v])
        train_parts.append(order[v : v + n])
    return Subset(
        train=np.sort(np.concatenate(train_parts)).astype(np.int64),
        val=np.sort(np.concatenate(val_parts)).astype(np.int64),
    )


def holdout_split(labels: np.ndarray, test_fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified (pool, test) indices for sets without a test split; a class of one image stays in the pool."""
    test_fraction = check_fraction(test_fraction, "test_fraction", allow_zero=False)
    seed = _check_seed(seed)
    present, groups = _grouped(labels)
    pool_parts, test_parts = [], []
    for c, group in zip(present.tolist(), groups):
        n = len(group)
        t = min(n - 1, max(1, _round_half_up(test_fraction * n))) if n >= 2 else 0
        order = _permuted(group, _HOLDOUT_STREAM, seed, c)
        test_parts.append(order[:t])
        pool_parts.append(order[t:])
    empty = np.zeros(0, dtype=np.int64)
    pool = np.sort(np.concatenate(pool_parts)) if pool_parts else empty
    test = np.sort(np.concatenate(test_parts)) if test_parts else empty
    return pool.astype(np.int64), test.astype(np.int64)
