"""Summaries across cells: where scratch catches up, the IQM gain across datasets, and LogME as a predictor.

Pure functions of ``store.frame()``. Each reads the same seed-paired comparisons as the per-cell
verdict, so a summary never disagrees with the cells it summarises.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.report.cells import Arm, Cell, arm_name, arm_pairs, group_cells, order_arms
from bench.report.paired import compare, select
from bench.report.rules import DEFAULT_MIN_EFFECT
from bench.report.stats import (
    LEVEL,
    METHOD_BOOT,
    METHOD_STRATIFIED,
    N_BOOT,
    TIE_EPS,
    iqm_interval,
    keyed_rng,
    stratified_bootstrap_means,
)
from bench.report.tables import SCRATCH, done_runs
from bench.report.verdict import verdicts
from bench.report.wording import (
    across_sentence,
    crossover_sentence,
    logme_sentence,
    logme_tied_sentence,
    logme_too_few_sentence,
)

CROSSOVER_COLUMNS = [
    "backbone", "dataset", "crossover_size", "crossover_low", "crossover_high", "crossover_method",
    "sizes_compared", "summary",
]

ACROSS_COLUMNS = [
    "backbone", "weights", "strategy_label", "n_cells", "n_flagged_cells", "iqm_gain", "iqm_low",
    "iqm_high", "interval_method", "mean_gain", "frac_cells_better", "summary",
]

LOGME_MODEL_COLUMNS = ["dataset", "backbone", "weights", "size", "logme", "best_strategy", "best_test_acc"]
LOGME_RANK_COLUMNS = ["dataset", "n_models", "kendall_tau", "p_value", "summary"]

# Kendall's tau over fewer than three models is +1 or -1 by construction and says nothing.
MIN_MODELS_FOR_RANKING = 3


# -- crossover size ----------------------------------------------------------------------------


def _crossover_index(diffs: np.ndarray) -> np.ndarray:
    """Index of the smallest size from which every mean difference is <= 0; K when there is none.

    ``diffs`` is (..., K) in size order; the answer is batched over the leading axes.
    """
    level = diffs <= TIE_EPS
    # suffix[..., i] is True when scratch keeps up at size i and at every larger one.
    suffix = np.flip(np.cumprod(np.flip(level, axis=-1), axis=-1), axis=-1).astype(bool)
    k = diffs.shape[-1]
    return np.where(suffix.any(axis=-1), np.argmax(suffix, axis=-1), k)


def crossovers(
    frame: pd.DataFrame, table: pd.DataFrame | None = None, *, n_boot: int = N_BOOT,
    cells: list[Cell] | None = None,
) -> pd.DataFrame:
    """Per backbone x dataset: the smallest size from which scratch is no longer worse than the chosen transfer arm.

    At each size the arm is the one ``verdicts`` chose on validation; "no longer worse" means a
    mean paired difference <= 0 at that size and every larger one. Sizes without a paired seed
    are skipped. ``crossover_low``/``crossover_high`` bound it with a percentile bootstrap that
    resamples seeds within each size; a missing value (``pd.isna``) means transfer is still ahead
    at the largest size compared. A verdict table that also holds rows against a compute-matched
    scratch (its ``baseline`` column) is read for its rows against plain scratch alone: the
    crossover is where plain scratch catches up, one comparison per size.
    ``cells``, when given, is ``group_cells(frame)`` already built, so one render groups its frame once.
    """
    cells = group_cells(frame) if cells is None else cells
    table = verdicts(frame, cells=cells) if table is None else table
    if "baseline" in table:
        table = table[table["baseline"] == SCRATCH]
    if table.empty:
        return pd.DataFrame(columns=CROSSOVER_COLUMNS)
    by_key = {(c.backbone, c.dataset, c.size): c for c in cells}
    rows: list[dict] = []
    for (backbone, dataset), part in table.groupby(["backbone", "dataset"], sort=True):
        compared = part[part["n_pairs"] > 0].sort_values("size_order", kind="stable")
        sizes = list(compared["size"])
        groups = []
        for row in compared.to_dict("records"):
            cell = by_key[(backbone, dataset, row["size"])]
            groups.append(compare(cell.arms[(row["best_strategy"], row["best_weights"])], cell.scratch, 0.0)[1])
        crossover = low = high = None
        if sizes:
            point = int(_crossover_index(np.array([g.mean() for g in groups])))
            draws = _crossover_index(
                stratified_bootstrap_means(groups, n_boot=n_boot, rng=keyed_rng(backbone, dataset))
            )
            alpha = (1.0 - LEVEL) / 2.0
            lo_i = int(np.quantile(draws, alpha, method="lower"))
            hi_i = int(np.quantile(draws, 1.0 - alpha, method="higher"))
            crossover, low, high = (sizes[i] if i < len(sizes) else None for i in (point, lo_i, hi_i))
        rows.append({
            "backbone": backbone, "dataset": dataset, "crossover_size": crossover,
            "crossover_low": low, "crossover_high": high, "crossover_method": METHOD_BOOT if sizes else "",
            "sizes_compared": ", ".join(sizes),
            "summary": crossover_sentence(f"{backbone} on {dataset}", sizes, crossover, low, high),
        })
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)


# -- across datasets ---------------------------------------------------------------------------


def _healthy_gains(cells: list[Cell]) -> Iterator[tuple[Cell, Arm, np.ndarray, bool]]:
    for cell, arm in arm_pairs(cells):
        stats, diffs = compare(arm, cell.scratch, DEFAULT_MIN_EFFECT)
        yield cell, arm, diffs, bool(stats["flags"])


def across_datasets(
    frame: pd.DataFrame, *, n_boot: int = N_BOOT, cells: list[Cell] | None = None
) -> pd.DataFrame:
    """Per backbone x weights x transfer strategy: the IQM over dataset x size cells of the gain over scratch.

    A cell's gain is the mean paired difference (transfer minus scratch); the interquartile mean
    across cells resists the one dataset where everything is easy or broken. The interval is a
    stratified percentile bootstrap (seeds resampled within each cell, as rliable does). Cells
    where a compared run is flagged are left out and counted in ``n_flagged_cells``.
    """
    groups: dict[tuple, list[np.ndarray]] = {}
    flagged: dict[tuple, int] = {}
    for cell, arm, diffs, bad in _healthy_gains(group_cells(frame) if cells is None else cells):
        key = (cell.backbone, arm.weights, arm.label)
        groups.setdefault(key, [])
        flagged[key] = flagged.get(key, 0) + int(bad)
        if diffs.size and not bad:
            groups[key].append(diffs)
    rows = []
    for (backbone, weights, label), found in groups.items():
        seed = int(keyed_rng(backbone, weights, label).integers(2**31))
        point, low, high = iqm_interval(found, n_boot=n_boot, seed=seed)
        gains = np.array([c.mean() for c in found])
        rows.append({
            "backbone": backbone, "weights": weights, "strategy_label": label, "n_cells": len(found),
            "n_flagged_cells": flagged[(backbone, weights, label)], "iqm_gain": point, "iqm_low": low,
            "iqm_high": high, "interval_method": METHOD_STRATIFIED if found else "",
            "mean_gain": float(gains.mean()) if gains.size else math.nan,
            "frac_cells_better": float((gains > TIE_EPS).mean()) if gains.size else math.nan,
            "summary": across_sentence(backbone, arm_name(label, weights), len(found), point, low, high),
        })
    if not rows:
        return pd.DataFrame(columns=ACROSS_COLUMNS)
    return order_arms(pd.DataFrame(rows, columns=ACROSS_COLUMNS), ["backbone", "weights", "_label"])


def cell_gains(frame: pd.DataFrame, *, cells: list[Cell] | None = None) -> pd.DataFrame:
    """Per transfer arm and unflagged cell, the mean paired gain over scratch: the input of a performance profile."""
    rows = [
        (cell.backbone, arm.weights, arm.label, cell.dataset, cell.size, float(diffs.mean()))
        for cell, arm, diffs, bad in _healthy_gains(group_cells(frame) if cells is None else cells)
        if diffs.size and not bad
    ]
    return pd.DataFrame(rows, columns=["backbone", "weights", "strategy_label", "dataset", "size", "gain"])


# -- LogME as a cheap predictor ----------------------------------------------------------------


def logme_models(frame: pd.DataFrame, *, cells: list[Cell] | None = None) -> pd.DataFrame:
    """Per dataset x backbone x weights: LogME at the largest size it was measured, and the measured accuracy there.

    The measured accuracy is the test mean of that backbone and weights' transfer arm chosen on
    validation at the same size. Empty when the frame has no ``logme`` values.
    """
    done = done_runs(frame)
    if done.empty or "logme" not in done:
        return pd.DataFrame(columns=LOGME_MODEL_COLUMNS)
    scored = done[(done["strategy"] != SCRATCH) & pd.to_numeric(done["logme"], errors="coerce").notna()]
    by_key = {(c.backbone, c.dataset, c.size): c for c in (group_cells(frame) if cells is None else cells)}
    rows = []
    for (dataset, backbone, weights), part in scored.groupby(["dataset", "backbone", "weights"], sort=True):
        top = part[part["size_order"] == part["size_order"].max()]
        size = str(top["size"].iloc[0])
        cell = by_key[(backbone, dataset, size)]
        arms = {key: arm for key, arm in cell.arms.items() if arm.weights == weights}
        chosen, _ = select(arms)
        rows.append({
            "dataset": dataset, "backbone": backbone, "weights": weights, "size": size,
            "logme": float(pd.to_numeric(top["logme"]).median()),
            "best_strategy": "" if chosen is None else arms[chosen].label,
            "best_test_acc": math.nan if chosen is None else arms[chosen].test_mean,
        })
    return pd.DataFrame(rows, columns=LOGME_MODEL_COLUMNS)


def logme_ranking(frame: pd.DataFrame, models: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset: Kendall tau between LogME and the measured best transfer accuracy across backbone x weights."""
    models = logme_models(frame) if models is None else models
    rows = []
    for dataset, part in models.dropna(subset=["logme", "best_test_acc"]).groupby("dataset", sort=True):
        n = len(part)
        if n < MIN_MODELS_FOR_RANKING:
            rows.append({
                "dataset": dataset, "n_models": n, "kendall_tau": math.nan, "p_value": math.nan,
                "summary": logme_too_few_sentence(dataset, n, MIN_MODELS_FOR_RANKING),
            })
            continue
        if part["logme"].nunique() < 2 or part["best_test_acc"].nunique() < 2:
            rows.append({
                "dataset": dataset, "n_models": n, "kendall_tau": math.nan, "p_value": math.nan,
                "summary": logme_tied_sentence(dataset, n),
            })
            continue
        result = sps.kendalltau(part["logme"], part["best_test_acc"])
        tau, p = float(result.statistic), float(result.pvalue)
        rows.append({
            "dataset": dataset, "n_models": n, "kendall_tau": tau, "p_value": p,
            "summary": logme_sentence(dataset, n, tau, p),
        })
    return pd.DataFrame(rows, columns=LOGME_RANK_COLUMNS)
