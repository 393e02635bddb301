"""``check``: an ad-hoc suite for new data, so one command answers "does transfer pay here?".

Given an image folder or a dataset name, it builds a suite with sensible defaults (scratch
and the transfer strategies, a few sizes up to ``all`` that every class can supply, three
seeds), sized so the whole check fits a stated time on this machine, which then runs
resumably like any other suite.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from bench.planning.fitting import FITTED_META, Fit, Shape, fit
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
    tuning: bool | dict[str, Any] = True,
    strategies: list[str] | None = None,
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
        "strategies": [s for s in TRANSFER_STRATEGIES if strategies is None or _strategy_name(s) in strategies],
        "seeds": list(range(seeds)),
        "training": training,
        # The same protocol as any suite: the default grid on the first seed, unless switched off.
        "tuning": tuning,
        "device": device,
    }
    return CheckPlan(suite=suite_from_dict(raw, file="check"), problems=problems, classes=len(train_counts),
                     smallest_class=smallest)


def _strategy_name(entry: Any) -> str:
    return entry["name"] if isinstance(entry, dict) else entry


def _check_name(entry: dict[str, Any]) -> str:
    base = Path(entry["path"]).name if entry["name"] == "imagefolder" else entry["name"]
    return "check-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip("-.") or "data")[:50]


# -- sized to the machine -----------------------------------------------------------------

# What a whole check may take by default: a coffee on a CPU, an afternoon on a GPU.
DEFAULT_TIME_LIMIT_S = {"cpu": 15 * 60.0, "gpu": 2 * 3600.0}


@dataclass
class SizedCheck:
    """A check fitted to a total time limit: the plan, its estimate and the concessions made to fit."""

    plan: CheckPlan
    estimate: Estimate
    limit_s: float
    fit: Fit

    @property
    def fits(self) -> bool:
        return self.fit.fits

    @property
    def seconds(self) -> float:
        """The estimate with room for every sweep to step past its grid's edges, and the time spent timing."""
        return self.fit.seconds

    @property
    def changes(self) -> list[str]:
        return [text for _, text in self.fit.changes]

    def decisive(self) -> str:
        """What the fitted check is, in a line: arms, sizes, seeds, input side and steps a run."""
        shape, training = self.fit.shape, self.plan.suite.training
        side = shape.image_size or shape.native_size
        return (f"{' and '.join(shape.strategies)} at size{'s' if len(shape.sizes) > 1 else ''} "
                f"{', '.join(map(str, shape.sizes))}, {len(self.plan.suite.seeds)} seeds"
                f"{f', {side} px' if side else ''}, at least {training.min_steps} steps a run")


def default_time_limit(device_label: str) -> float:
    return DEFAULT_TIME_LIMIT_S["cpu" if device_label == "cpu" else "gpu"]


def size_check(
    data: str,
    *,
    limit_s: float | None,
    results_dir: str | Path,
    on_change: Callable[[str, str], None] | None = None,
    **options: Any,
) -> SizedCheck:
    """Build the check, then give up parts the user left at their default until the estimate fits ``limit_s``.

    The concessions and their order are ``bench.planning.fitting.CONCESSIONS``; no run is cut below its
    minimum steps. ``on_change`` hears each concession as it is made. Weights are checked
    before anything is timed, and the time the calibrations take counts against the limit.
    """
    import time

    from bench.planning.estimate import estimate_suite
    from bench.suite.model import check_weights

    started = time.perf_counter()
    plan = build_check(data, **options)
    check_weights(plan.suite)
    estimates: dict[Shape, tuple[CheckPlan, Estimate, float]] = {}

    def priced(shape: Shape) -> tuple[CheckPlan, Estimate, float]:
        if shape not in estimates:
            chosen = {**options, "strategies": list(shape.strategies), "sizes": list(shape.sizes),
                      "tuning": shape.tuning, "image_size": shape.image_size, "epochs": shape.epochs}
            built = build_check(data, **chosen)
            estimate = estimate_suite(built.suite, results_dir=results_dir)
            seconds = estimate.seconds
            if shape.tuning:
                # Worst case: every sweep steps past its grid's edge as often as the suite allows.
                wide = build_check(data, **{**chosen, "tuning": _widest_grid(built.suite)})
                seconds = estimate_suite(wide.suite, results_dir=results_dir).seconds
            estimates[shape] = (built, estimate, seconds)
        return estimates[shape]

    fixed = {key for key in ("sizes", "image_size", "epochs") if options.get(key) is not None}
    if not options.get("tuning", True):
        fixed.add("tuning")
    shape = Shape(strategies=tuple(_strategy_name(s) for s in TRANSFER_STRATEGIES),
                  sizes=tuple(plan.suite.datasets[0].sizes), tuning=bool(options.get("tuning", True)),
                  image_size=options.get("image_size"), epochs=options.get("epochs"), fixed=frozenset(fixed))
    _, first, _ = priced(shape)
    native = next((s.pixels for s in first.speeds if s.pixels and s.image_size is None), None)
    shape = replace(shape, native_size=native)
    estimates[shape] = estimates[replace(shape, native_size=None)]
    limit_s = limit_s if limit_s is not None else default_time_limit(first.device)
    # The time spent timing this machine is part of the check's wall time.
    fitted = fit(shape, lambda s: priced(s)[2] + time.perf_counter() - started, limit_s, on_change)
    plan, estimate, _ = priced(fitted.shape)
    return SizedCheck(plan=plan, estimate=estimate, limit_s=limit_s, fit=fitted)


def _widest_grid(suite: Suite) -> dict[str, Any]:
    """The check's tuning with each grid's extensions written in as points, so an estimate counts them."""
    grid = {}
    for strategy, keys in suite.tuning.grid.items():
        grid[strategy] = {}
        for key, values in keys.items():
            # Only the number of points matters to an estimate; these lie past the largest.
            extra = [max(values) * 10 ** (i + 1) for i in range(suite.tuning.extend)]
            grid[strategy][key] = [*values, *extra]
    return {"grid": grid, "extend": 0, "seeds": suite.tuning.seeds}


def record_fit(sized: SizedCheck, store_path: Path) -> None:
    """Keep what the fitter changed beside the results, so the report can say so in its first lines."""
    from bench.store import ResultStore

    store_path.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(store_path) as store:
        store.set_meta(FITTED_META, {"limit_s": sized.limit_s, "estimate_s": sized.seconds,
                                     "changes": [{"name": n, "text": t} for n, t in sized.fit.changes]})
