"""``check``: an ad-hoc suite for new data, so one command answers "does transfer pay here?".

Given an image folder or a dataset name, it builds a suite with sensible defaults (scratch
and the transfer strategies, a few sizes up to ``all`` that every class can supply, three
seeds), which then runs resumably like any other suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.suite import Suite, suite_from_dict

DEFAULT_BACKBONE = "resnet18"
DEFAULT_SIZES = (5, 10, 25, 50, 100)
TRANSFER_STRATEGIES: list[Any] = ["scratch", "frozen", {"name": "partial", "k": 1}, "full"]


@dataclass
class CheckPlan:
    """The suite ``check`` built and what it found in the data on the way."""

    suite: Suite
    problems: list[str]
    classes: int
    smallest_class: int


def dataset_entry(data: str) -> dict[str, Any]:
    """An existing folder is an image folder; anything else is a registered dataset name."""
    path = Path(data).expanduser()
    if path.exists() or "/" in data or data.startswith("."):
        return {"name": "imagefolder", "path": str(path)}
    return {"name": data}


def default_sizes(smallest_class: int, val_fraction: float) -> list[int | str]:
    """A learning curve's sizes: the standard ones a class can supply, then ``all``."""
    trainable = smallest_class - max(1, round(val_fraction * smallest_class))
    return [s for s in DEFAULT_SIZES if s < trainable][:4] + ["all"]


def build_check(
    data: str,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "hub",
    sizes: list[int | float | str] | None = None,
    seeds: int = 3,
    budget: float | str | None = None,
    epochs: int | None = None,
    min_steps: int | None = None,
    tuning: bool = True,
    image_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    name: str | None = None,
) -> CheckPlan:
    """Build (and validate) the ad-hoc suite; data problems are collected, not fatal."""
    from bench.data import class_counts, load_dataset

    entry = dataset_entry(data)
    probe = {**entry, "test_fraction": 0.25, "val_fraction": 0.1, "options": {}, "root": None, "download": False}
    problems: list[str] = []
    if entry["name"] == "imagefolder":
        # Decoding every image once up front names the corrupt ones before a night is spent.
        dataset = load_dataset(probe)
        problems = list(dataset.problems)
        train_counts = [int((dataset.train_labels == c).sum()) for c in range(dataset.num_classes)]
    else:
        train_counts = [int(c) for c in class_counts(probe)["train"]]
    smallest = min(train_counts)
    training: dict[str, Any] = {}
    for key, value in (("time_budget", budget), ("epochs", epochs), ("min_steps", min_steps),
                       ("image_size", image_size), ("batch_size", batch_size)):
        if value is not None:
            training[key] = value
    raw = {
        "name": name or _check_name(entry),
        "description": f"check: does transfer beat scratch on {data}?",
        "backbones": [{"name": backbone, "weights": [weights]}],
        "datasets": [{**entry, "sizes": sizes or default_sizes(smallest, 0.1)}],
        "strategies": TRANSFER_STRATEGIES,
        "seeds": list(range(seeds)),
        "training": training,
        # The same protocol as any suite: the default grid on the first seed, unless switched off.
        "tuning": tuning,
        "device": device,
    }
    return CheckPlan(suite=suite_from_dict(raw, file="check"), problems=problems, classes=len(train_counts),
                     smallest_class=smallest)


def _check_name(entry: dict[str, Any]) -> str:
    base = Path(entry["path"]).name if entry["name"] == "imagefolder" else entry["name"]
    return "check-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip("-.") or "data")[:50]
