"""``check``: an ad-hoc suite for new data, so one command answers "does transfer pay here?".

Given an image folder or a dataset name, it builds a suite with sensible defaults (scratch
and the transfer strategies, a few sizes up to ``all`` that every class can supply, three
seeds), sized so the whole check fits a stated time on this machine, which then runs
resumably like any other suite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from bench.suite.model import Suite, suite_from_dict

if TYPE_CHECKING:
    from bench.planning.estimate import Estimate

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
    import difflib

    from bench.data import list_datasets
    from bench.errors import DataError

    path = Path(data).expanduser()
    if path.exists() or "/" in data or data.startswith("."):
        return {"name": "imagefolder", "path": str(path)}
    known = list_datasets()
    if data.lower() not in known:
        # A bare word is as likely a folder name as a dataset name: say it is neither.
        close = difflib.get_close_matches(data.lower(), known, n=1, cutoff=0.6)
        hint = f" (did you mean dataset {close[0]!r}?)" if close else ""
        raise DataError(
            f"--data {data!r}: folder {path.resolve()} does not exist, and no dataset has that name{hint}; "
            "see 'transfer-bench list datasets'"
        )
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
    probe = {**entry, "test_fraction": DEFAULT_TEST_FRACTION, "val_fraction": DEFAULT_VAL_FRACTION, "options": {}, "root": None, "download": False}
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
        "datasets": [{**entry, "sizes": sizes or default_sizes(smallest, DEFAULT_VAL_FRACTION)}],
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


# -- sized to the machine -----------------------------------------------------------------

# What a whole check may take by default: a coffee on a CPU, an afternoon on a GPU.
DEFAULT_TIME_LIMIT_S = {"cpu": 15 * 60.0, "gpu": 2 * 3600.0}
# Inputs tried, largest first, before training is cut short: a run's cost falls with the
# square of the side, and pretrained features still transfer at these sizes.
SMALLER_IMAGE_SIZES = (160, 128, 96, 64)
# Below this a run is mostly start-up; the check says so rather than shrinking further.
MIN_RUN_BUDGET_S = 10.0
# Per-cell costs outside the training loop (start-up, evaluation) that a run budget does not cap.
RUN_BUDGET_SHARE = 0.8


@dataclass
class SizedCheck:
    """A check fitted to a total time limit: the plan, its estimate and what was changed to fit."""

    plan: CheckPlan
    estimate: Estimate
    limit_s: float
    changes: list[str]

    @property
    def fits(self) -> bool:
        return self.estimate.seconds <= self.limit_s


def default_time_limit(device_label: str) -> float:
    return DEFAULT_TIME_LIMIT_S["cpu" if device_label == "cpu" else "gpu"]


def size_check(
    data: str,
    *,
    limit_s: float | None,
    results_dir: str | Path,
    **options: Any,
) -> SizedCheck:
    """Build the check, then shrink what the user left at its default until the estimate fits ``limit_s``.

    In order: a smaller input size, fewer sizes on the learning curve (the two smallest and
    ``all`` stay), then a cap on each run's training time. Options the user set are never
    changed; if the check still does not fit, the caller says so. Weights are checked before
    anything is timed.
    """
    from bench.planning.estimate import estimate_suite, format_duration
    from bench.suite.model import check_weights

    def build(**overrides: Any) -> tuple[CheckPlan, Estimate]:
        plan = build_check(data, **{**options, **overrides})
        return plan, estimate_suite(plan.suite, results_dir=results_dir)

    plan = build_check(data, **options)
    check_weights(plan.suite)
    estimate = estimate_suite(plan.suite, results_dir=results_dir)
    limit_s = limit_s if limit_s is not None else default_time_limit(estimate.device)
    overrides: dict[str, Any] = {}
    changes: list[str] = []

    if estimate.seconds > limit_s and options.get("image_size") is None:
        native = next((s.pixels for s in estimate.speeds if s.pixels), None)
        for side in (s for s in SMALLER_IMAGE_SIZES if native is None or s < native):
            overrides["image_size"] = side
            plan, estimate = build(**overrides)
            if estimate.seconds <= limit_s:
                break
        if "image_size" in overrides:
            changes.append(f"image size {native or 'native'} -> {overrides['image_size']} px (--image-size)")

    sizes = plan.suite.datasets[0].sizes
    numeric = [s for s in sizes if s != "all"]
    if estimate.seconds > limit_s and options.get("sizes") is None and len(numeric) > 2:
        overrides["sizes"] = [*numeric[:2], *(["all"] if "all" in sizes else [])]
        plan, estimate = build(**overrides)
        changes.append(f"sizes {', '.join(map(str, sizes))} -> {', '.join(map(str, overrides['sizes']))} (--sizes)")

    if estimate.seconds > limit_s and options.get("budget") is None:
        runs = max(1, estimate.cells + estimate.stages)
        per_run = max(MIN_RUN_BUDGET_S, RUN_BUDGET_SHARE * limit_s / runs)
        overrides["budget"] = per_run
        plan, estimate = build(**overrides)
        changes.append(f"at most {format_duration(per_run)} of training per run (--run-budget); "
                       "runs it cuts short are flagged undertrained")
    return SizedCheck(plan=plan, estimate=estimate, limit_s=limit_s, changes=changes)
