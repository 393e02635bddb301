"""Datasets that need no download: scikit-learn's handwritten digits and procedurally drawn shapes."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.config import DatasetConfig
from bench.data.registry import DatasetBuilder, ImageDataset, counts_dict, read_options
from bench.data.subsets import holdout_split
from bench.errors import DataError

DIGIT_CLASSES = [str(d) for d in range(10)]

SHAPE_DEFAULTS: dict[str, Any] = {"classes": 8, "per_class": 200, "test_per_class": 50, "image_size": 32, "seed": 0}

# Shape masks over local coordinates (u, v) in roughly [-1, 1]; v grows downwards as in images.
_Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    theta = np.arctan2(v, u)
    return np.hypot(u, v) <= 0.35 + 0.55 * ((np.cos(5 * theta) + 1) / 2) ** 3


SHAPES: dict[str, _Mask] = {
    "circle": lambda u, v: u * u + v * v <= 0.8**2,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.65,
    "triangle": lambda u, v: (v <= 0.6) & (v >= -0.85 + 2.0 * np.abs(u)),
    "plus": lambda u, v: ((np.abs(u) <= 0.22) & (np.abs(v) <= 0.85)) | ((np.abs(v) <= 0.22) & (np.abs(u) <= 0.85)),
    "ring": lambda u, v: (u * u + v * v <= 0.85**2) & (u * u + v * v >= 0.5**2),
    "hbar": lambda u, v: (np.abs(v) <= 0.2) & (np.abs(u) <= 0.9),
    "vbar": lambda u, v: (np.abs(u) <= 0.2) & (np.abs(v) <= 0.9),
    "diagonal": lambda u, v: (np.abs(u - v) <= 0.22) & (np.abs(u + v) <= 1.25),
    "star": _star,
    "x": lambda u, v: ((np.abs(u - v) <= 0.3) | (np.abs(u + v) <= 0.3)) & (np.maximum(np.abs(u), np.abs(v)) <= 0.75),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 0.85,
    "crescent": lambda u, v: (u * u + v * v <= 0.85**2) & ((u - 0.45) ** 2 + v * v > 0.6**2),
}

# Small enough that bars, diagonals, plus and x stay distinguishable by orientation.
_MAX_ROTATION = np.deg2rad(15.0)


def _to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; scale to the full 8-bit range.
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def load_digits(config: DatasetConfig) -> ImageDataset:
    """scikit-learn's 1797 8x8 digits as RGB uint8, with a fixed stratified test hold-out."""
    read_options(config, {})
    images, labels = _digits_raw()
    pool, test = holdout_split(labels, config.test_fraction, seed=0)
    rgb = _to_rgb(images)
    return ImageDataset(
        name=config.display_name,
        classes=list(DIGIT_CLASSES),
        train_labels=labels[pool],
        test_labels=labels[test],
        train_images=rgb[pool],
        test_images=rgb[test],
    )


def count_digits(config: DatasetConfig) -> dict[str, Any]:
    """Per-class counts of the digits pool and hold-out."""
    read_options(config, {})
    _, labels = _digits_raw()
    pool, test = holdout_split(labels, config.test_fraction, seed=0)
    return counts_dict(DIGIT_CLASSES, labels[pool], labels[test])


def _shape_options(config: DatasetConfig) -> dict[str, int]:
    opts = read_options(config, SHAPE_DEFAULTS)
    out: dict[str, int] = {}
    for key, value in opts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"dataset 'shapes': option {key}={value!r} must be an integer")
        out[key] = int(value)
    if not 2 <= out["classes"] <= len(SHAPES):
        raise DataError(f"dataset 'shapes': classes={out['classes']} must be between 2 and {len(SHAPES)}")
    for key in ("per_class", "test_per_class"):
        if out[key] < 1:
            raise DataError(f"dataset 'shapes': {key}={out[key]} must be at least 1")
    if out["image_size"] < 8:
        raise DataError(f"dataset 'shapes': image_size={out['image_size']} must be at least 8")
    if out["seed"] < 0:
        raise DataError(f"dataset 'shapes': seed={out['seed']} must be non-negative")
    return out


def draw_shapes(labels: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one shape per label (an index into SHAPES) on a noisy background: uint8 N x S x S x 3."""
    names = list(SHAPES)
    n, s = len(labels), image_size
    radius = rng.uniform(0.28, 0.45, n) * s
    cx = rng.uniform(radius, s - radius)
    cy = rng.uniform(radius, s - radius)
    angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, n)
    background = rng.uniform(0, 256, (n, 3))
    # At least 80 levels apart in every channel, so every shape stays visible.
    foreground = np.mod(background + rng.uniform(80, 176, (n, 3)), 256)

    grid = np.arange(s, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - cx[:, None, None]) / radius[:, None, None]
    dy = (grid[None, :, None] - cy[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy).astype(np.float32)
    v = (-sin * dx + cos * dy).astype(np.float32)

    mask = np.zeros((n, s, s), dtype=bool)
    for k in np.unique(labels).tolist():
        rows = labels == k
        mask[rows] = SHAPES[names[k]](u[rows], v[rows])

    image = np.where(mask[..., None], foreground[:, None, None, :], background[:, None, None, :])
    image = image + rng.standard_normal((n, s, s, 3), dtype=np.float32) * 12.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shape_split(opts: dict[str, int], per_class: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(opts["classes"], dtype=np.int64), per_class)
    rng = np.random.default_rng([opts["seed"], stream])
    return draw_shapes(labels, opts["image_size"], rng), labels


def load_shapes(config: DatasetConfig) -> ImageDataset:
    """Procedural shapes, deterministic from the ``seed`` option, with their own generated test split."""
    opts = _shape_options(config)
    train_images, train_labels = _shape_split(opts, opts["per_class"], stream=0)
    test_images, test_labels = _shape_split(opts, opts["test_per_class"], stream=1)
    return ImageDataset(
        name=config.display_name,
        classes=list(SHAPES)[: opts["classes"]],
        train_labels=train_labels,
        test_labels=test_labels,
        train_images=train_images,
        test_images=test_images,
    )


def count_shapes(config: DatasetConfig) -> dict[str, Any]:
    """Per-class counts of the shapes set, computed from its options without drawing."""
    opts = _shape_options(config)
    k = opts["classes"]
    return {
        "classes": list(SHAPES)[:k],
        "train": np.full(k, opts["per_class"], dtype=np.int64),
        "test": np.full(k, opts["test_per_class"], dtype=np.int64),
    }


DATASETS = [
    DatasetBuilder(
        "digits",
        "scikit-learn handwritten digits, 1797 8x8 grey images, 10 classes, test held out (bundled)",
        load_digits,
        count_digits,
    ),
    DatasetBuilder(
        "shapes",
        "procedural shapes on noisy backgrounds; options: " + ", ".join(f"{k}={v}" for k, v in SHAPE_DEFAULTS.items()),
        load_shapes,
        count_shapes,
    ),
]
