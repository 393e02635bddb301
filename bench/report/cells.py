"""Finished runs grouped into backbone x dataset x size cells and their arms, one value per seed.

Every statistic of the verdict starts from these groups, built in one pass over the rows, so the
headline, the per-arm table and the across-cell summaries all pair exactly the same seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.report.tables import SCRATCH, done_runs, strategy_sort_key

CELL = ["backbone", "dataset", "size"]
ARM = ["strategy_label", "weights"]


def missing(value: object) -> bool:
    """None or NaN: a number the store or a table does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def flag_list(value: object) -> list[str]:
    """A run's health flags from the store's comma-separated text ('' or NaN when healthy)."""
    if missing(value):
        return []
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def arm_name(label: str, weights: str) -> str:
    """An arm as readers see it: the strategy label, with its weights unless it has none."""
    return label if weights in ("", "none") else f"{label} ({weights})"


@dataclass
class Arm:
    """One arm's finished runs in one cell, reduced to one value per seed."""

    label: str
    weights: str
    test: dict = field(default_factory=dict)  # seed -> test accuracy
    val: dict = field(default_factory=dict)  # seed -> validation accuracy (NaN when not recorded)
    flags: dict = field(default_factory=dict)  # seed -> health flags
    n_train: list = field(default_factory=list)
    # Its chosen configuration's place at the edge of the grid it tried ("lr=0.006 (largest)"):
    # the ``grid_edge`` column the report adds from every run of the arm; '' inside or untuned.
    edge: str = ""

    @property
    def test_mean(self) -> float:
        return float(np.mean(list(self.test.values())))

    @property
    def val_mean(self) -> float:
        values = np.array([v for v in self.val.values() if not math.isnan(v)])
        return float(values.mean()) if values.size else math.nan

    @property
    def images(self) -> float:
        """Training images the arm used (median over its runs; 0 when unknown)."""
        return float(np.median(self.n_train)) if self.n_train else 0.0

    def seeds(self) -> np.ndarray:
        return np.array([self.test[s] for s in sorted(self.test)])


@dataclass
class Cell:
    """A backbone x dataset x size cell: scratch pooled by seed, and every transfer arm."""

    backbone: str
    dataset: str
    size: str
    size_order: float
    n_train: list = field(default_factory=list)
    scratch: Arm | None = None
    arms: dict = field(default_factory=dict)  # (label, weights) -> Arm, in sort order


def group_cells(frame: pd.DataFrame) -> list[Cell]:
    """Finished runs grouped into cells and arms, one value per seed, in one pass over the rows.

    A cell id includes the seed, so one run per seed is the norm; averaging repeats is only a guard.
    """
    done = done_runs(frame)
    if done.empty:
        return []
    columns = {
        "val": done["val_acc"] if "val_acc" in done else pd.Series(math.nan, index=done.index),
        "flags": done["flags"] if "flags" in done else pd.Series("", index=done.index),
        "n_train": done["n_train"] if "n_train" in done else pd.Series(0, index=done.index),
        "edge": done["grid_edge"] if "grid_edge" in done else pd.Series("", index=done.index),
    }
    sums: dict = {}
    cells: dict = {}
    rows = zip(
        done["backbone"], done["dataset"], done["size"], done["size_order"], done["strategy"],
        done["strategy_label"], done["weights"], done["seed"], done["test_acc"], columns["val"],
        columns["flags"], columns["n_train"], columns["edge"],
    )
    for backbone, dataset, size, order, strategy, label, weights, seed, test, val, flags, n_train, edge in rows:
        key = (backbone, dataset, size)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(str(backbone), str(dataset), str(size), float(order))
        scratch = strategy == SCRATCH
        arm_key = (SCRATCH, "") if scratch else (str(label), str(weights))
        arm = cell.scratch if scratch else cell.arms.get(arm_key)
        if arm is None:
            arm = Arm(SCRATCH if scratch else str(label), "none" if scratch else str(weights))
            if scratch:
                cell.scratch = arm
            else:
                cell.arms[arm_key] = arm
        val = float(val) if val is not None and not pd.isna(val) else math.nan
        total = sums.setdefault((key, arm_key, seed), [0.0, 0.0, 0, 0])
        total[0] += float(test)
        total[1] += 0.0 if math.isnan(val) else val
        total[2] += 1
        total[3] += 0 if math.isnan(val) else 1
        arm.test[seed] = total[0] / total[2]
        arm.val[seed] = total[1] / total[3] if total[3] else math.nan
        arm.flags.setdefault(seed, []).extend(flag_list(flags))
        if not arm.edge and isinstance(edge, str):
            arm.edge = edge
        n_train = float(n_train) if n_train is not None and not pd.isna(n_train) else 0.0
        arm.n_train.append(n_train)
        cell.n_train.append(n_train)
    for cell in cells.values():
        cell.arms = dict(sorted(cell.arms.items()))
    return list(cells.values())


def arm_pairs(cells: list[Cell]) -> Iterator[tuple[Cell, Arm]]:
    """Every (cell, transfer arm) whose cell has scratch runs to compare with."""
    for cell in cells:
        if cell.scratch is not None:
            for arm in cell.arms.values():
                yield cell, arm


def cell_classes(cells: list[Cell]) -> dict[tuple[str, str], float]:
    """Classes per backbone x dataset implied by per-class sizes (n_train / images per class)."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        if cell.size.isdigit() and int(cell.size) > 0:
            ratios.setdefault((cell.backbone, cell.dataset), []).extend(
                n / int(cell.size) for n in cell.n_train if n > 0
            )
    return {key: float(np.median(values)) for key, values in ratios.items() if values}


def order_arms(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by ``keys``, where ``_label`` stands for the strategy label in report order."""
    ordered = table.assign(_label=table["strategy_label"].map(strategy_sort_key))
    return ordered.sort_values(keys, kind="stable").drop(columns="_label").reset_index(drop=True)
