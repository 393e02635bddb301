"""Constructed frames and a small real results store for the report tests."""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bench.records import EpochRecord, RunResult, RunSpec, strategy_label
from bench.store import ResultStore

N_CLASSES = 10
SIZES = ("10", "50", "all")
N_ALL = 1437  # the digits training pool after the test split
STRATEGIES: tuple[tuple[str, dict], ...] = (("scratch", {}), ("frozen", {}), ("partial", {"k": 2}), ("full", {}))
SEEDS = (0, 1, 2)
TRAINABLE = {"scratch": 11_200_000, "frozen": 5_130, "partial": 8_400_000, "full": 11_200_000}
FAILED_ERROR = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def _size_order(size: str) -> float:
    return math.inf if size == "all" else float(size)


def run_rows(
    accs: Mapping[str, Iterable[float | None]],
    *,
    backbone: str = "resnet18",
    dataset: str = "digits",
    size: str = "10",
    weights: str = "pretrain:shapes",
    seeds: Iterable[int] | None = None,
    val: Mapping[str, Iterable[float | None]] | None = None,
    flags: Mapping[str, Iterable[str]] | None = None,
    n_train: int = 0,
) -> list[dict]:
    """Rows of a ``store.frame()``-like table: one per (strategy label, seed), None skips a seed.

    Validation accuracy equals test accuracy unless ``val`` gives it per label; ``flags`` gives
    a label's comma-separated health flags per seed ('' when healthy).
    """
    rows = []
    for label, values in accs.items():
        name = label.split("[", 1)[0]
        values = list(values)
        vals = list((val or {}).get(label, values))
        marks = list((flags or {}).get(label, [""] * len(values)))
        for seed, acc, v, mark in zip(list(seeds) if seeds is not None else range(len(values)), values, vals, marks):
            if acc is None:
                continue
            rows.append({
                "run_id": f"{backbone}-{dataset}-{size}-{label}-{seed}",
                "backbone": backbone, "dataset": dataset, "size": size, "size_order": _size_order(size),
                "strategy": name, "strategy_label": label,
                "weights": "none" if name == "scratch" else weights,
                "seed": seed, "status": "done", "test_acc": acc, "val_acc": v, "flags": mark,
                "n_train": n_train, "wall_s": 1.0,
            })
    return rows


def frame_of(*groups: list[dict]) -> pd.DataFrame:
    """Concatenate ``run_rows`` results into one frame."""
    return pd.DataFrame([row for group in groups for row in group])


def _n_train(size: str) -> int:
    return N_ALL if size == "all" else int(size) * N_CLASSES


def _accuracy(strategy: str, size: str, seed: int) -> float:
    # Transfer leads at small sizes and scratch catches up with all the data.
    base = {"10": 0.55, "50": 0.80, "all": 0.95}[size]
    lift = {
        "scratch": 0.0,
        "frozen": {"10": 0.20, "50": 0.05, "all": -0.04}[size],
        "partial": {"10": 0.25, "50": 0.08, "all": -0.01}[size],
        "full": {"10": 0.22, "50": 0.07, "all": -0.02}[size],
    }[strategy]
    noise = np.random.default_rng(zlib.crc32(f"{strategy}|{size}|{seed}".encode())).normal(0, 0.01)
    return float(min(max(base + lift + noise, 0.0), 1.0))


def build_store(
    path: Path,
    *,
    backbones: Iterable[str] = ("resnet18",),
    planned_extra: int = 12,
    failed: bool = True,
    training_versions: Iterable[str] = ("1",),
) -> Path:
    """A real SQLite store: digits x 3 sizes x 4 strategies x 3 seeds, one failed run, planned > finished."""
    versions = list(training_versions)
    n_cells = 0
    with ResultStore(path) as store:
        for b, backbone in enumerate(backbones):
            for size in SIZES:
                for strategy, params in STRATEGIES:
                    for seed in SEEDS:
                        n_cells += 1
                        weights = "none" if strategy == "scratch" else "pretrain:shapes"
                        label = strategy_label(strategy, params)
                        run_id = hashlib.sha1(f"{backbone}|{size}|{label}|{seed}".encode()).hexdigest()[:16]
                        spec = RunSpec(
                            run_id=run_id, suite="quick", backbone=backbone, weights=weights,
                            dataset={"name": "digits"}, size=size, strategy=strategy, strategy_params=params,
                            seed=seed, training={"epochs": 4}, training_version=versions[n_cells % len(versions)],
                        )
                        if failed and b == 0 and size == "50" and strategy == "full" and seed == 2:
                            result = RunResult.failure(
                                run_id, f"{FAILED_ERROR}\n(see traceback)", traceback="Traceback ...\nRuntimeError",
                                device="cpu",
                            )
                            store.write(spec, result)
                            continue
                        acc = _accuracy(strategy, size, seed)
                        trainable = TRAINABLE[strategy]
                        wall = {"scratch": 30.0, "frozen": 4.0, "partial": 20.0, "full": 32.0}[strategy] * (
                            {"10": 0.3, "50": 1.0, "all": 3.0}[size]
                        ) + seed * 0.1
                        epochs = [
                            EpochRecord(epoch=e, train_loss=1.5 / (e + 1), train_acc=acc * (0.6 + 0.1 * e),
                                        val_acc=acc * (0.7 + 0.1 * e), lr=0.01, seconds=wall / 4)
                            for e in range(4)
                        ]
                        result = RunResult(
                            run_id=run_id, status="done", test_acc=acc, test_balanced_acc=acc - 0.01,
                            test_macro_f1=acc - 0.02, val_acc=acc + 0.01, train_s=wall * 0.9, eval_s=wall * 0.05,
                            wall_s=wall, images_per_s=1000.0, trainable_params=trainable, total_params=11_200_000,
                            peak_mem_mb=512.0, device="cpu", epochs_run=4, batch_size=64,
                            versions={"python": "3.11.9", "numpy": "2.4.6", "torch": "2.14.1"},
                            epochs=epochs, train_indices=list(range(_n_train(size))), val_indices=[],
                            started_at=1_760_000_000.0 + n_cells, finished_at=1_760_000_000.0 + n_cells + wall,
                        )
                        store.write(spec, result)
        store.set_meta("suite", "quick")
        store.set_meta("planned", n_cells + planned_extra)
    return path


# A tuned suite in miniature: scratch's and full's sweeps on seed 0, their chosen points on every seed.
TUNED_SEEDS = (0, 1, 2)
SCRATCH_GRID = {0.001: 0.40, 0.003: 0.45, 0.01: 0.50}  # lr -> validation accuracy: best at the largest
FULL_GRID = {0.0001: 0.60, 0.0003: 0.70, 0.001: 0.65}  # best inside
SCRATCH_BEYOND = {0.03: 0.42}  # a point past scratch's edge, worse: 0.01 is then inside what was tried
MATCHED_GRID = {0.001: 0.45, 0.003: 0.50, 0.01: 0.48}  # scratch[budget=2]: best inside
EXTENSION_WALL_S = 7.0


def build_tuned_store(path: Path, *, extend: bool = False, matched: bool = False) -> Path:
    """A real store of one cell: tuned scratch (best at its grid's edge) and full, untuned frozen, three seeds.

    Full beats scratch by about 20 points on test. With ``extend`` scratch also ran one point
    beyond its grid on the tuning seed, a run the stored plan (``planned_ids``) does not list.
    With ``matched`` a compute-matched scratch[budget=2], tuned to a point inside its grid, joins.
    """
    planned: list[str] = []

    def write(store: ResultStore, label: str, lr: float | None, seed: int, val: float, test: float,
              *, wall: float = 2.0, in_plan: bool = True) -> None:
        strategy, params = ("scratch", {"budget": 2}) if label == "scratch[budget=2]" else (label, {})
        run_id = f"{label}-{lr}-{seed}"
        spec = RunSpec(
            run_id=run_id, suite="tuned", backbone="resnet18",
            weights="none" if strategy == "scratch" else "pretrain:shapes", dataset={"name": "digits"},
            size="10", strategy=strategy, strategy_params=params, seed=seed, training={"lr": lr},
            arm="" if lr is None else f"arm-{label}", tuned={} if lr is None else {"lr": lr},
        )
        store.write(spec, RunResult(
            run_id=run_id, status="done", test_acc=test, test_balanced_acc=test, test_macro_f1=test,
            val_acc=val, wall_s=wall, trainable_params=10, total_params=10, device="cpu",
            train_indices=list(range(100)),
        ))
        if in_plan:
            planned.append(run_id)

    with ResultStore(path) as store:
        # Test accuracy rises by ``step`` a seed, so the paired differences are not all equal.
        arms = [("scratch", SCRATCH_GRID, 0.50, 0.01), ("full", FULL_GRID, 0.70, 0.015)]
        if matched:
            arms.append(("scratch[budget=2]", MATCHED_GRID, 0.52, 0.01))
        for label, grid, base, step in arms:
            chosen = max(grid, key=grid.__getitem__)
            for lr, val in grid.items():
                write(store, label, lr, 0, val, base - (0.1 if lr != chosen else 0.0))
            for seed in TUNED_SEEDS[1:]:
                write(store, label, chosen, seed, grid[chosen], base + step * seed, in_plan=False)
        if extend:
            for lr, val in SCRATCH_BEYOND.items():
                write(store, "scratch", lr, 0, val, 0.45, wall=EXTENSION_WALL_S, in_plan=False)
        for seed in TUNED_SEEDS:
            write(store, "frozen", None, seed, 0.55, 0.55)
        store.set_meta("suite", {"name": "tuned", "seeds": list(TUNED_SEEDS), "tuning": {"seeds": [0]}})
        store.set_meta("planned_ids", planned)
        store.set_meta("planned", len(planned) + len(arms) * (len(TUNED_SEEDS) - 1))
    return path
