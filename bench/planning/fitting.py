"""What a ``check`` gives up to fit a time limit, in one ordered list, cheapest in answer first.

A run is never cut short to fit the clock: a run stopped before it has trained answers
nothing, and a check of such runs spends its whole time on an outcome known in advance.
Instead whole parts of the check go, one concession at a time, until its estimate fits:

1. ``partial``: partial fine-tuning (full fine-tuning stays);
2. ``all``: the ``all`` size (the small sizes the question is about stay);
3. ``grid``: the learning rates beyond each strategy's default (no sweep);
4. ``image``: the input size, step by step, down to a floor that suits the backbone;
5. ``epochs``: epochs beyond each run's minimum steps (every run still makes ``min_steps``);
6. ``sizes``: the larger of the small sizes, down to the smallest one;
7. ``full``: full fine-tuning (the frozen probe stays as the transfer arm).

What is left after all seven is the smallest decisive check: scratch and one transfer arm
at one size, every seed, each run at its minimum steps. Options the user set are never
changed. Pure functions of plain values: the cost of a shape is passed in, so the order can
be tested with made-up speeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

# Inputs tried below the backbone's own, largest first: a run's cost falls with the square of the side.
SMALLER_IMAGE_SIZES = (192, 160, 128, 96, 64, 48, 32)
# Below a quarter of its pretrained side a backbone's stem and pooling leave a feature map of a
# pixel or two, and below this no backbone is worth timing.
IMAGE_FLOOR_SHARE = 4
MIN_IMAGE_SIDE = 32
# Where a check keeps its concessions in the store's meta table, for the report's first lines.
FITTED_META = "check_fitted"
# The transfer arm a decisive check keeps last: the cheapest, a probe on features extracted once.
LAST_TRANSFER_ARM = "frozen"


@dataclass(frozen=True)
class Shape:
    """The parts of a check the fitter may give up, and which of them the user set."""

    strategies: tuple[str, ...]
    sizes: tuple[Any, ...]
    tuning: bool = True
    image_size: int | None = None  # None: the backbone's own
    native_size: int | None = None  # the backbone's own input side, when known
    epochs: int | None = None  # None: the default; 1: each run makes its minimum steps and no more
    fixed: frozenset[str] = field(default_factory=frozenset)  # options the user set: sizes, image_size, epochs, tuning


@dataclass(frozen=True)
class Concession:
    name: str
    step: Callable[[Shape], Shape | None]  # the next smaller shape, or None when this concession has nothing left
    describe: Callable[[Shape, Shape], str]  # what changed from the first shape to the last, and what stays


def image_floor(native: int | None) -> int:
    """The smallest input side worth training ``native``-sided weights at."""
    return max(MIN_IMAGE_SIDE, (native or 0) // IMAGE_FLOOR_SHARE)


def _drop_strategy(name: str, keep: str) -> Callable[[Shape], Shape | None]:
    def step(shape: Shape) -> Shape | None:
        if name not in shape.strategies or keep not in shape.strategies:
            return None
        return replace(shape, strategies=tuple(s for s in shape.strategies if s != name))
    return step


def _drop_all(shape: Shape) -> Shape | None:
    numeric = [s for s in shape.sizes if s != "all"]
    if "sizes" in shape.fixed or "all" not in shape.sizes or not numeric:
        return None
    return replace(shape, sizes=tuple(numeric))


def _no_grid(shape: Shape) -> Shape | None:
    return None if "tuning" in shape.fixed or not shape.tuning else replace(shape, tuning=False)


def _smaller_image(shape: Shape) -> Shape | None:
    if "image_size" in shape.fixed or shape.native_size is None:
        return None
    current = shape.image_size or shape.native_size
    floor = image_floor(shape.native_size)
    side = next((s for s in SMALLER_IMAGE_SIZES if floor <= s < current), None)
    return None if side is None else replace(shape, image_size=side)


def _min_steps_only(shape: Shape) -> Shape | None:
    return None if "epochs" in shape.fixed or shape.epochs == 1 else replace(shape, epochs=1)


def _fewer_sizes(shape: Shape) -> Shape | None:
    if "sizes" in shape.fixed or len(shape.sizes) < 2:
        return None
    # The largest goes first: the smallest sizes are where transfer has the most to say.
    largest = max(shape.sizes, key=lambda s: float("inf") if s == "all" else s)
    return replace(shape, sizes=tuple(s for s in shape.sizes if s != largest))


def _sizes_text(sizes: tuple[Any, ...]) -> str:
    return ", ".join(map(str, sizes))


CONCESSIONS: tuple[Concession, ...] = (
    Concession("partial", _drop_strategy("partial", keep="full"),
               lambda a, b: "dropped partial fine-tuning; full fine-tuning stays"),
    Concession("all", _drop_all,
               lambda a, b: f"dropped size all; sizes {_sizes_text(b.sizes)} stay (--sizes)"),
    Concession("grid", _no_grid,
               lambda a, b: "dropped the learning-rate sweep; each arm trains at its strategy's default rate (--no-tuning)"),
    Concession("image", _smaller_image,
               lambda a, b: f"image size {a.image_size or a.native_size} -> {b.image_size} px "
                            f"(--image-size; the floor for this backbone is {image_floor(a.native_size)} px)"),
    Concession("epochs", _min_steps_only,
               lambda a, b: "each run trains for its minimum steps and no more epochs (--epochs 1)"),
    Concession("sizes", _fewer_sizes,
               lambda a, b: f"dropped size{'s' if len(a.sizes) - len(b.sizes) > 1 else ''} "
                            f"{_sizes_text(tuple(s for s in a.sizes if s not in b.sizes))}; "
                            f"size{'s' if len(b.sizes) > 1 else ''} {_sizes_text(b.sizes)} stay (--sizes)"),
    Concession("full", _drop_strategy("full", keep=LAST_TRANSFER_ARM),
               lambda a, b: f"dropped full fine-tuning; the {LAST_TRANSFER_ARM} probe stays as the transfer arm"),
)


@dataclass
class Fit:
    """The shape the fitter settled on, its cost, and each concession made, in order."""

    shape: Shape
    seconds: float
    limit_s: float
    changes: list[tuple[str, str]]  # (concession name, what changed)

    @property
    def fits(self) -> bool:
        return self.seconds <= self.limit_s

    @property
    def dropped(self) -> list[str]:
        return [name for name, _ in self.changes]


def fit(shape: Shape, cost: Callable[[Shape], float], limit_s: float,
        on_change: Callable[[str, str], None] | None = None) -> Fit:
    """Make concessions in ``CONCESSIONS`` order until ``cost(shape) <= limit_s`` or none is left."""
    seconds = cost(shape)
    changes: list[tuple[str, str]] = []
    for concession in CONCESSIONS:
        start = shape
        while seconds > limit_s:
            smaller = concession.step(shape)
            if smaller is None:
                break
            shape, seconds = smaller, cost(smaller)
        if shape != start:
            # A concession that saves nothing (epochs already at the minimum steps) gives nothing up.
            # Priced again, the start first: a cost that counts the time spent pricing then favours the start.
            before = cost(start)
            seconds = cost(shape)
            if seconds >= before:
                shape, seconds = start, before
        if shape != start:
            change = (concession.name, concession.describe(start, shape))
            changes.append(change)
            if on_change is not None:
                on_change(*change)
    return Fit(shape=shape, seconds=seconds, limit_s=limit_s, changes=changes)
