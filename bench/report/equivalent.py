"""Scratch-equivalent data: how much data scratch needs to match a transfer arm.

A pure function of ``store.frame()``; accuracies are fractions and sizes are training images.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.cells import Cell, cell_classes, group_cells, order_arms
from bench.report.stats import LEVEL, METHOD_BOOT, N_BOOT, keyed_rng, log_equivalent_size, stratified_bootstrap_means
from bench.report.wording import equivalent_sentence

EQUIVALENT_COLUMNS = [
    "scratch_equivalent_n", "scratch_equivalent_ratio", "scratch_equivalent_low",
    "scratch_equivalent_high", "scratch_equivalent_status",
]

SCRATCH_EQUIVALENT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "strategy_label", "weights", "n_train",
    "transfer_mean", *EQUIVALENT_COLUMNS, "method", "summary",
]


def scratch_equivalents(
    frame: pd.DataFrame, *, n_boot: int = N_BOOT, cells: list[Cell] | None = None
) -> pd.DataFrame:
    """Per backbone x dataset x size x transfer arm: how much data scratch needs to match the arm.

    Scratch's learning curve (mean test accuracy against training images, ``n_train``) is made
    monotone and interpolated as a power law between measured sizes, then inverted at the arm's
    mean test accuracy (Hernandez et al. 2021, "effective data transferred"). The ratio is that
    size over the images the arm trained on. Nothing is extrapolated: ``scratch_equivalent_status``
    says "beyond" or "below" when the arm's accuracy lies outside scratch's measured range. The
    interval is a percentile bootstrap resampling seeds within every size of both curves; an
    end at 0 or inf lies below or beyond the measured range.
    """
    cells = group_cells(frame) if cells is None else cells
    classes = cell_classes(cells)
    by_pair: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        by_pair.setdefault((cell.backbone, cell.dataset), []).append(cell)
    rows: list[dict] = []
    for (backbone, dataset), group in sorted(by_pair.items()):
        curve = sorted(
            (c for c in group if c.scratch is not None and c.scratch.images > 0), key=lambda c: c.scratch.images
        )
        arms = [(c, arm) for c in group for arm in c.arms.values() if arm.images > 0]
        if not curve or not arms:
            continue
        sizes = np.array([c.scratch.images for c in curve])
        seeds = [c.scratch.seeds() for c in curve]
        counts = np.array([len(g) for g in seeds], dtype=float)
        targets = [arm.seeds() for _, arm in arms]
        means = np.array([g.mean() for g in seeds])
        point = log_equivalent_size(sizes, means, np.array([t.mean() for t in targets]), counts)
        rng = keyed_rng(backbone, dataset, "equivalent")
        boot = log_equivalent_size(
            sizes, stratified_bootstrap_means(seeds, n_boot=n_boot, rng=rng),
            stratified_bootstrap_means(targets, n_boot=n_boot, rng=rng), counts,
        )
        alpha = (1.0 - LEVEL) / 2.0
        # Quantiles of log sizes with -inf/inf for "below"/"beyond": only their order matters.
        low = np.quantile(boot, alpha, axis=0, method="lower")
        high = np.quantile(boot, 1.0 - alpha, axis=0, method="higher")
        per_class = classes.get((backbone, dataset), math.nan)
        for k, (cell, arm) in enumerate(arms):
            status = "beyond" if point[k] == np.inf else "below" if point[k] == -np.inf else ""
            n_eq = math.exp(point[k]) if status == "" else math.nan
            row = {
                "backbone": backbone, "dataset": dataset, "size": cell.size, "size_order": cell.size_order,
                "strategy_label": arm.label, "weights": arm.weights, "n_train": arm.images,
                "transfer_mean": arm.test_mean, "scratch_equivalent_n": n_eq,
                "scratch_equivalent_ratio": n_eq / arm.images,
                "scratch_equivalent_low": float(np.exp(low[k])) if status == "" else math.nan,
                "scratch_equivalent_high": float(np.exp(high[k])) if status == "" else math.nan,
                "scratch_equivalent_status": status,
                "method": "isotonic fit, power-law interpolation, no extrapolation; " + METHOD_BOOT,
            }
            row["summary"] = equivalent_sentence(row, per_class)
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=SCRATCH_EQUIVALENT_COLUMNS)
    table = pd.DataFrame(rows, columns=SCRATCH_EQUIVALENT_COLUMNS)
    return order_arms(table, ["backbone", "dataset", "size_order", "_label", "weights"])
