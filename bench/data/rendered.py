"""Digits rendered from a font: a synthetic source for the sim-to-real question about handwritten digits.

Each image is one digit drawn with Pillow's own typeface (its bundled FreeType face at several
point sizes, or its bitmap face scaled up), with a random stroke weight, slant, rotation,
scale, aspect, offset, ink level and noise, white on black like scikit-learn's digits. It is
drawn at ``supersample`` times the output size and box-averaged down: that is how
scikit-learn's digits were made (32 x 32 bitmaps counted in 4 x 4 blocks), so ``image_size: 8``
gives images of the same kind as that set. No font file is read from the system, so a seed gives
the same images on any machine with the same Pillow.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from bench.config import DatasetConfig
from bench.data.registry import DatasetBuilder, ImageDataset, read_options
from bench.errors import DataError

DIGITS = [str(d) for d in range(10)]

RENDERED_DEFAULTS: dict[str, Any] = {
    "per_class": 300,
    "test_per_class": 60,
    "image_size": 32,
    "supersample": 4,
    "seed": 0,
    "max_rotation": 15.0,
    "noise": 0.1,
}
_INTEGER_OPTIONS = ("per_class", "test_per_class", "image_size", "supersample", "seed")

# Point sizes of the FreeType face: a glyph drawn small and scaled up is softer than one drawn
# large, so several sizes give several renderings of one typeface. None is the bitmap face.
FACES: tuple[int | None, ...] = (12, 20, 32, 48, None)

# Ranges of the per-image draws, as fractions of the canvas unless stated.
HEIGHT = (0.55, 0.95)  # glyph height
ASPECT = (0.75, 1.3)  # width multiplier after keeping the glyph's own proportions
SHEAR = (-0.3, 0.3)  # slant, x shift per unit of y
OFFSET = 0.08  # centre shift, each axis
STROKE = 0.05  # FreeType stroke width, as a fraction of the point size: up to twice the regular weight
INK = (0.6, 1.0)  # ink level, as a fraction of 255

_GLYPH_PAD = 4
_BITMAP_ZOOM = 4


@functools.cache
def _font(size: int | None) -> Any:
    from PIL import ImageFont

    if size is None:
        return ImageFont.load_default_imagefont()
    # Pillow without FreeType has only the bitmap face; every size then draws with it.
    return ImageFont.load_default(size=size)


def _glyph(digit: str, face: int | None, stroke: float) -> Any:
    """The digit drawn white on black, cropped to its ink: a Pillow "L" image."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = _font(face)
    left, top, right, bottom = font.getbbox(digit)
    bitmap = not isinstance(font, ImageFont.FreeTypeFont)
    width = 0 if bitmap else round(stroke * STROKE * face)
    pad = _GLYPH_PAD + width
    image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), digit, font=font, fill=255, stroke_width=width, stroke_fill=255)
    box = image.getbbox()
    image = image.crop(box) if box else image
    if bitmap:
        # Blown up with its square pixels kept, then (having no outline to stroke) thickened
        # by a pixel on each side for a heavy weight.
        image = image.resize((image.width * _BITMAP_ZOOM, image.height * _BITMAP_ZOOM), Image.Resampling.NEAREST)
        if stroke >= 0.5:
            image = image.filter(ImageFilter.MaxFilter(3))
    return image


def _affine(glyph_w: int, glyph_h: int, canvas: int, draws: dict[str, float]) -> tuple[float, ...]:
    """Pillow's inverse affine map (canvas pixel -> glyph pixel) for one draw of the pose."""
    scale_y = draws["height"] * canvas / glyph_h
    scale_x = scale_y * draws["aspect"]
    cos, sin = math.cos(draws["angle"]), math.sin(draws["angle"])
    # Forward: rotate . shear . scale, applied about the glyph's centre.
    rotate = np.array([[cos, -sin], [sin, cos]])
    a = rotate @ np.array([[1.0, draws["shear"]], [0.0, 1.0]]) @ np.diag([scale_x, scale_y])
    inverse = np.linalg.inv(a)
    centre_out = np.array([canvas / 2 + draws["dx"] * canvas, canvas / 2 + draws["dy"] * canvas])
    centre_in = np.array([glyph_w / 2, glyph_h / 2])
    shift = centre_in - inverse @ centre_out
    return (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])


def render_digits(labels: np.ndarray, opts: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Draw one digit per label (0-9): uint8 N x S x S x 3, the same for the same ``rng`` state."""
    from PIL import Image

    size, factor = opts["image_size"], opts["supersample"]
    canvas = size * factor
    n = len(labels)
    # Every random number is drawn up front, in one order, so the images depend on the seed alone.
    face = rng.integers(0, len(FACES), n)
    stroke = rng.uniform(0.0, 1.0, n)
    height = rng.uniform(*HEIGHT, n)
    aspect = rng.uniform(*ASPECT, n)
    shear = rng.uniform(*SHEAR, n)
    angle = np.deg2rad(rng.uniform(-opts["max_rotation"], opts["max_rotation"], n))
    dx = rng.uniform(-OFFSET, OFFSET, n)
    dy = rng.uniform(-OFFSET, OFFSET, n)
    ink = rng.uniform(*INK, n)
    noise_sd = rng.uniform(0.0, opts["noise"], n) * 255.0
    noise = rng.standard_normal((n, size, size), dtype=np.float32)

    out = np.empty((n, size, size), dtype=np.float32)
    for i, label in enumerate(np.asarray(labels).tolist()):
        glyph = _glyph(DIGITS[label], FACES[face[i]], float(stroke[i]))
        draws = {"height": height[i], "aspect": aspect[i], "shear": shear[i], "angle": angle[i],
                 "dx": dx[i], "dy": dy[i]}
        pose = _affine(glyph.width, glyph.height, canvas, draws)
        drawn = glyph.transform((canvas, canvas), Image.Transform.AFFINE, pose, resample=Image.Resampling.BILINEAR)
        out[i] = np.asarray(drawn.reduce(factor) if factor > 1 else drawn, dtype=np.float32)
    out = out * ink[:, None, None] + noise * noise_sd[:, None, None].astype(np.float32)
    gray = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _options(config: DatasetConfig) -> dict[str, Any]:
    opts = read_options(config, RENDERED_DEFAULTS)
    for key in _INTEGER_OPTIONS:
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"dataset 'rendered_digits': option {key}={value!r} must be an integer")
        opts[key] = int(value)
    for key in ("max_rotation", "noise"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"dataset 'rendered_digits': option {key}={value!r} must be a number")
        opts[key] = float(value)
    for key in ("per_class", "test_per_class", "supersample"):
        if opts[key] < 1:
            raise DataError(f"dataset 'rendered_digits': {key}={opts[key]} must be at least 1")
    if opts["image_size"] < 8:
        raise DataError(f"dataset 'rendered_digits': image_size={opts['image_size']} must be at least 8")
    if opts["seed"] < 0:
        raise DataError(f"dataset 'rendered_digits': seed={opts['seed']} must be non-negative")
    if not 0 <= opts["max_rotation"] <= 180:
        raise DataError(f"dataset 'rendered_digits': max_rotation={opts['max_rotation']} must be in [0, 180] degrees")
    if not 0 <= opts["noise"] <= 1:
        raise DataError(f"dataset 'rendered_digits': noise={opts['noise']} must be in [0, 1] (a fraction of 255)")
    return opts


def _split(opts: dict[str, Any], per_class: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(len(DIGITS), dtype=np.int64), per_class)
    rng = np.random.default_rng([opts["seed"], stream])
    return render_digits(labels, opts, rng), labels


def load_rendered_digits(config: DatasetConfig) -> ImageDataset:
    """Rendered digits, deterministic from the ``seed`` option, with their own rendered test split."""
    opts = _options(config)
    train_images, train_labels = _split(opts, opts["per_class"], stream=0)
    test_images, test_labels = _split(opts, opts["test_per_class"], stream=1)
    return ImageDataset(
        name=config.display_name,
        classes=list(DIGITS),
        train_labels=train_labels,
        test_labels=test_labels,
        train_images=train_images,
        test_images=test_images,
    )


def count_rendered_digits(config: DatasetConfig) -> dict[str, Any]:
    """Per-class counts from the options, without drawing."""
    opts = _options(config)
    k = len(DIGITS)
    return {
        "classes": list(DIGITS),
        "train": np.full(k, opts["per_class"], dtype=np.int64),
        "test": np.full(k, opts["test_per_class"], dtype=np.int64),
    }


DATASETS = [
    DatasetBuilder(
        "rendered_digits",
        "digits 0-9 drawn with Pillow's own font, random stroke, slant, rotation, scale, offset and noise; options: "
        + ", ".join(f"{k}={v}" for k, v in RENDERED_DEFAULTS.items()),
        load_rendered_digits,
        count_rendered_digits,
    ),
]
