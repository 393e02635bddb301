"""What the torchvision sets weigh before they are downloaded: classes, images per split, bytes.

``plan`` reads this to size a suite whose data is not on disk yet: how many cells, how long,
and how much a first ``run`` will fetch. Once a set is downloaded its real counts are used
instead; these figures are the published split sizes and archive sizes, rounded where the
archive has been re-hosted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.registry import counts_dict


@dataclass(frozen=True)
class KnownSize:
    """One set's classes, per-class pool and test counts (a total is split evenly), and download bytes."""

    classes: int
    pool: int | tuple[int, ...]
    test: int | tuple[int, ...] | None  # None: no test split; one is held out with test_fraction
    download_bytes: int

    def per_class(self, value: int | tuple[int, ...]) -> np.ndarray:
        if isinstance(value, tuple):
            return np.asarray(value, dtype=np.int64)
        base, extra = divmod(value, self.classes)
        return np.array([base + (c < extra) for c in range(self.classes)], dtype=np.int64)


KNOWN_SIZES: dict[str, KnownSize] = {
    "cifar10": KnownSize(10, 50_000, 10_000, 170_498_071),
    "cifar100": KnownSize(100, 50_000, 10_000, 169_001_437),
    "mnist": KnownSize(
        10, (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009), 11_594_722,
    ),
    "fashionmnist": KnownSize(10, 60_000, 10_000, 30_878_645),
    "svhn": KnownSize(
        10, (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659),
        (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595), 246_316_178,
    ),
    "stl10": KnownSize(10, 5_000, 8_000, 2_640_397_119),
    "eurosat": KnownSize(10, (3000, 3000, 3000, 2500, 2500, 2000, 2500, 3000, 2500, 3000), None, 94_280_567),
    "flowers102": KnownSize(102, 2_040, 6_149, 344_878_000),
    "oxfordiiitpet": KnownSize(37, 3_680, 3_669, 811_092_049),
    "dtd": KnownSize(47, 3_760, 1_880, 625_239_812),
    "food101": KnownSize(101, 75_750, 25_250, 4_996_278_331),
    "fgvcaircraft": KnownSize(100, 6_667, 3_333, 2_753_340_328),
}


def known_counts(name: str, test_fraction: float) -> dict[str, Any] | None:
    """Per-class counts as ``class_counts`` gives them, from the table; None for a set not in it."""
    known = KNOWN_SIZES.get(name.lower())
    if known is None:
        return None
    pool = known.per_class(known.pool)
    if known.test is None:
        test = np.maximum(1, np.rint(pool * test_fraction)).astype(np.int64)
        pool = pool - test
    else:
        test = known.per_class(known.test)
    classes = [str(c) for c in range(known.classes)]
    return counts_dict(classes, np.repeat(np.arange(known.classes), pool), np.repeat(np.arange(known.classes), test))


def download_bytes(name: str) -> int | None:
    """The archive bytes a first download of ``name`` fetches, or None when unknown."""
    known = KNOWN_SIZES.get(name.lower())
    return known.download_bytes if known else None
