"""The transfer-vs-scratch verdict of each cell: paired-by-seed comparisons, intervals that hold at small n.

Everything here is a pure function of ``store.frame()`` (or any frame with the same columns).
Accuracies and differences are fractions in [0, 1]; the sentences show them as percentage points.

The protocol: within a backbone x dataset x size cell, the transfer arm (strategy label and
weights) with the best mean *validation* accuracy is chosen, and its *test* accuracies are
compared with scratch's on the seeds both have. Choosing on validation keeps the test comparison
free of selection, so one interval per cell needs no multiplicity correction; the per-arm table,
which tests every arm against scratch at once, does get one (Holm).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.cells import ARM, CELL, Cell, arm_name, arm_pairs, cell_classes, group_cells, order_arms
from bench.report.equivalent import EQUIVALENT_COLUMNS, scratch_equivalents
from bench.report.paired import COMPARE_COLUMNS, against_edge, call_of, compare, empty_stats, select
from bench.report.power import power_columns
from bench.report.rules import (
    ALPHA,
    CALL_NO_SCRATCH,
    CALL_NO_TRANSFER,
    CALL_NO_VALIDATION,
    CALL_SCRATCH,
    CALL_TRANSFER,
    CALL_UNCLEAR,
    DEFAULT_MIN_EFFECT,
)
from bench.report.sequential import SeedDesign, sequential_interval, stop_reason
from bench.report.stats import holm
from bench.report.wording import arm_sentence, verdict_sentence

VERDICT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "n_train", "best_strategy", "best_weights",
    "n_candidates", "selected_on", "best_val_mean", "transfer_mean", "scratch_mean",
    *COMPARE_COLUMNS, "mde", "seeds_needed", "call", "withheld", "stopped", *EQUIVALENT_COLUMNS,
    "summary",
]

ARM_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "strategy_label", "weights", "val_mean",
    "transfer_mean", "scratch_mean", *COMPARE_COLUMNS, "n_arms", "p_holm", "call", "withheld", "summary",
]


def verdicts(
    frame: pd.DataFrame, *, min_effect: float = DEFAULT_MIN_EFFECT, equivalents: pd.DataFrame | None = None,
    cells: list[Cell] | None = None,
    design: SeedDesign | None = None,
) -> pd.DataFrame:
    """One row per backbone x dataset x size: the transfer arm chosen on validation vs scratch, paired by seed.

    The chosen arm is the non-scratch (strategy_label, weights) with the highest mean validation
    accuracy over its finished seeds; its test accuracies are compared with scratch's on the
    seeds both have. ``ci_low``/``ci_high`` are a Student-t interval of the mean paired
    difference (NaN below two pairs), ``p_value`` an exact sign-flip permutation p-value and
    ``prob_improvement`` the share of paired seeds transfer wins (ties half) with a Wilson
    interval. A flagged run among the compared ones makes the call "inconclusive", and so does a
    call against an arm still at the edge of its grid (``withheld`` says which). The
    ``scratch_equivalent_*`` columns are the chosen arm's row of ``scratch_equivalents``
    (computed here unless passed in). ``cells``, when given, is ``group_cells(frame)`` already built,
    so one render groups its frame once. ``mde`` is the smallest true difference a paired t test
    finds with 80% power at the cell's pairs and spread, and ``seeds_needed`` the paired seeds it
    would take to find the observed mean difference, were it the truth (``bench.report.power``).
    Under a sequential ``design`` the interval, and so the call, is the repeated interval of the
    cell's look, and ``stopped`` says why the cell has the seeds it has.
    """
    cells = group_cells(frame) if cells is None else cells
    if not cells:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    rows: list[dict] = []
    for cell in cells:
        row: dict = {
            "backbone": cell.backbone, "dataset": cell.dataset, "size": cell.size, "size_order": cell.size_order,
            "n_train": float(np.median(cell.n_train)) if cell.n_train else math.nan,
            "best_strategy": "", "best_weights": "", "n_candidates": len(cell.arms), "selected_on": "",
            "best_val_mean": math.nan, "transfer_mean": math.nan,
            "scratch_mean": cell.scratch.test_mean if cell.scratch else math.nan,
            **empty_stats(min_effect), "mde": math.nan, "seeds_needed": math.nan, "withheld": "",
            "stopped": "",
        }
        rows.append(row)
        if not cell.arms:
            row["call"] = CALL_NO_TRANSFER
            continue
        chosen, how = select(cell.arms)
        if chosen is None:
            row["call"] = CALL_NO_VALIDATION
            continue
        best = cell.arms[chosen]
        row.update(
            best_strategy=best.label, best_weights=best.weights, selected_on=how,
            best_val_mean=best.val_mean, transfer_mean=best.test_mean,
        )
        if cell.scratch is None:
            row["call"] = CALL_NO_SCRATCH
            continue
        row.update(compare(best, cell.scratch, min_effect)[0])
        row.update(power_columns(row["n_pairs"], row["mean_diff"], row["sd_diff"]))
        if design is not None:
            row.update(sequential_interval(row, design))
        row["call"], row["withheld"] = against_edge(call_of(row), row, arm_name(best.label, best.weights))
        if design is not None:
            row["stopped"] = stop_reason(row["call"], row["n_pairs"], design)
    table = pd.DataFrame(rows)
    equivalents = scratch_equivalents(frame, cells=cells) if equivalents is None else equivalents
    if not equivalents.empty:
        table = table.merge(
            equivalents[[*CELL, *ARM, *EQUIVALENT_COLUMNS]].rename(
                columns={"strategy_label": "best_strategy", "weights": "best_weights"}
            ),
            on=[*CELL, "best_strategy", "best_weights"], how="left",
        )
    for column in EQUIVALENT_COLUMNS:
        if column not in table:
            table[column] = math.nan
    table["scratch_equivalent_status"] = table["scratch_equivalent_status"].astype(object).fillna("")
    classes = cell_classes(cells)
    table["summary"] = [
        verdict_sentence(row, classes.get((row["backbone"], row["dataset"]), math.nan))
        for row in table.to_dict("records")
    ]
    table = table[VERDICT_COLUMNS]
    return table.sort_values(["backbone", "dataset", "size_order"], kind="stable").reset_index(drop=True)


def arm_verdicts(
    frame: pd.DataFrame, *, min_effect: float = DEFAULT_MIN_EFFECT, cells: list[Cell] | None = None
) -> pd.DataFrame:
    """One row per cell x transfer arm: that arm alone vs scratch, with Holm-adjusted p-values.

    The sign-flip p-values of a cell's arms are Holm-adjusted across those arms (``p_holm``).
    A per-arm win or loss needs what the headline needs and also ``p_holm`` <= ``ALPHA``,
    because here every arm is tested on the same test set and one of several may win by luck.
    A call that survives it against an arm still at the edge of its grid is withheld, as in ``verdicts``.
    """
    rows: list[dict] = []
    for cell, arm in arm_pairs(group_cells(frame) if cells is None else cells):
        rows.append({
            "backbone": cell.backbone, "dataset": cell.dataset, "size": cell.size, "size_order": cell.size_order,
            "strategy_label": arm.label, "weights": arm.weights, "val_mean": arm.val_mean,
            "transfer_mean": arm.test_mean, "scratch_mean": cell.scratch.test_mean,
            **compare(arm, cell.scratch, min_effect)[0],
        })
    if not rows:
        return pd.DataFrame(columns=ARM_COLUMNS)
    table = pd.DataFrame(rows)
    table["n_arms"] = table.groupby(CELL)["strategy_label"].transform("size").astype(int)
    table["p_holm"] = table.groupby(CELL)["p_value"].transform(lambda p: holm(p.to_numpy()))
    calls, withheld, summaries = [], [], []
    for row in table.to_dict("records"):
        call = call_of(row)
        held_back = call in (CALL_TRANSFER, CALL_SCRATCH) and not row["p_holm"] <= ALPHA
        if held_back:
            call = CALL_UNCLEAR
        call, row["withheld"] = against_edge(call, row, arm_name(row["strategy_label"], row["weights"]))
        calls.append(call)
        withheld.append(row["withheld"])
        summaries.append(arm_sentence(row, call, held_back=held_back, alpha=ALPHA))
    table["call"], table["withheld"], table["summary"] = calls, withheld, summaries
    return order_arms(table[ARM_COLUMNS], ["backbone", "dataset", "size_order", "_label", "weights"])
