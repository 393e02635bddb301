"""The report's tables as a reader sees them: numbers formatted as text, columns named for people.

The CSVs keep the raw numbers; these frames are only what the HTML and Markdown tables show.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.cells import arm_name, missing
from bench.report.plotkit import human_count
from bench.report.power import MAX_SEEDS_NEEDED, POWER
from bench.report.rules import CALL_INCONCLUSIVE, CALL_SCRATCH, CALL_TRANSFER
from bench.report.stats import LEVEL
from bench.report.wording import describe_interval, p_text

# -- number formatting ---------------------------------------------------------------------


def _pct(value: object, digits: int = 1) -> str:
    return "–" if missing(value) else f"{float(value) * 100:.{digits}f}"


def _pts(value: object) -> str:
    return "–" if missing(value) else f"{float(value):+.1f}"


def _num(value: object, fmt: str = ".1f") -> str:
    return "–" if missing(value) else format(float(value), fmt)


def _seeds(value: object) -> str:
    if missing(value):
        return "–"
    return f">{MAX_SEEDS_NEEDED}" if float(value) == math.inf else f"{float(value):.0f}"


def _count(value: object) -> str:
    return "–" if missing(value) else human_count(float(value))


# -- cells ---------------------------------------------------------------------------------


def _arm_text(strategy: object, weights: object) -> str:
    return arm_name(str(strategy or "–"), "" if weights is None else weights)


def _equivalent_cell(row: pd.Series, classes: float) -> str:
    status = row.get("scratch_equivalent_status", "")
    if status == "beyond":
        return "beyond the largest size measured"
    if status == "below":
        return "below the smallest size measured"
    n = row.get("scratch_equivalent_n")
    if missing(n):
        return "–"
    size = f"{n / classes:,.0f}/class" if classes > 0 else f"{n:,.0f} images"
    return f"{size} ({row['scratch_equivalent_ratio']:.1f}x)"


def _bounds_text(low: object, high: object, classes: float) -> str:
    def one(n: float) -> str:
        if n == math.inf:
            return "beyond largest"
        if n == 0:
            return "below smallest"
        return f"{n / classes:,.0f}" if classes > 0 else f"{n:,.0f}"

    return "–" if missing(low) or missing(high) else f"{one(float(low))} to {one(float(high))}"


def classes_per_dataset(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Classes per backbone x dataset, from per-class sizes, so sizes can be shown per class."""
    out: dict[tuple[str, str], float] = {}
    if frame.empty or "n_train" not in frame:
        return out
    per_class = frame["size"].astype(str).str.fullmatch(r"\d+") & (frame["n_train"] > 0)
    rows = frame[per_class]
    for key, part in rows.groupby(["backbone", "dataset"], sort=False):
        out[key] = float((part["n_train"] / part["size"].astype(float)).median())
    return out


def verdict_row_class(row: pd.Series) -> str:
    """The CSS class that colours a verdict row by its call."""
    return {CALL_TRANSFER: "win", CALL_SCRATCH: "loss", CALL_INCONCLUSIVE: "flagged"}.get(row["verdict"], "unclear")


# -- tables --------------------------------------------------------------------------------


def verdict_display(table: pd.DataFrame, classes: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        n = r["n_pairs"]
        pi = "–"
        if n >= 1:
            pi = f"{r['prob_improvement']:.2f} [{r['prob_improvement_low']:.2f}, {r['prob_improvement_high']:.2f}]"
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "transfer arm (chosen on validation)": _arm_text(r["best_strategy"], r["best_weights"]),
            "transfer acc %": _pct(r["transfer_mean"]), "scratch acc %": _pct(r["scratch_mean"]),
            "mean diff (pts)": _pts(r["mean_diff"] * 100),
            f"{LEVEL:.0%} Student-t CI (pts)": describe_interval(r),
            "sign-flip p (exact)": p_text(r["p_value"]),
            f"P(transfer > scratch) [{LEVEL:.0%} Wilson]": pi,
            "won/tied/lost": f"{r['wins']}/{r['ties']}/{r['losses']}", "paired seeds": str(n),
            f"detects (pts, {POWER:.0%} power)": _num(r.get("mde", math.nan) * 100),
            "seeds for a call": _seeds(r.get("seeds_needed", math.nan)),
            "scratch-equivalent data": _equivalent_cell(r, classes.get((r["backbone"], r["dataset"]), math.nan)),
            "verdict": r["call"],
        })
        if r.get("stopped"):
            rows[-1]["seeds: why they stopped"] = r["stopped"]
    return pd.DataFrame(rows).fillna("")


def arms_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "strategy": r["strategy_label"], "weights": r["weights"],
            "val acc %": _pct(r["val_mean"]), "test acc %": _pct(r["transfer_mean"]),
            "mean diff (pts)": _pts(r["mean_diff"] * 100),
            f"{LEVEL:.0%} Student-t CI (pts)": describe_interval(r),
            "sign-flip p": p_text(r["p_value"]), "Holm-adjusted p": p_text(r["p_holm"]),
            "paired seeds": str(r["n_pairs"]), "verdict": r["call"],
        })
    return pd.DataFrame(rows)


def across_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "weights": table["weights"], "strategy": table["strategy_label"],
        "cells": table["n_cells"].astype(str),
        "IQM gain (pts)": (table["iqm_gain"] * 100).map(_pts),
        f"{LEVEL:.0%} stratified bootstrap (pts)": [
            "–" if missing(lo) else f"{lo * 100:+.1f} to {hi * 100:+.1f}"
            for lo, hi in zip(table["iqm_low"], table["iqm_high"])
        ],
        "mean gain (pts)": (table["mean_gain"] * 100).map(_pts),
        "share of cells better": table["frac_cells_better"].map(lambda v: _num(v, ".2f")),
        "flagged cells left out": table["n_flagged_cells"].astype(str),
    })


def equivalents_display(table: pd.DataFrame, classes: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        per = classes.get((r["backbone"], r["dataset"]), math.nan)
        unit = "/class" if per > 0 else " images"
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "strategy": r["strategy_label"], "weights": r["weights"],
            "train images": _num(r["n_train"], ".0f"), "transfer acc %": _pct(r["transfer_mean"]),
            "scratch would need": _equivalent_cell(r, per),
            f"{LEVEL:.0%} bootstrap ({unit.strip()})": _bounds_text(
                r["scratch_equivalent_low"], r["scratch_equivalent_high"], per
            ),
        })
    return pd.DataFrame(rows)


def logme_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "backbone": table["backbone"], "weights": table["weights"],
        "size": table["size"], "LogME": table["logme"].map(lambda v: _num(v, ".3f")),
        "best transfer (on validation)": table["best_strategy"],
        "its test acc %": table["best_test_acc"].map(_pct),
    })


def results_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "dataset": table["dataset"], "size": table["size"],
        "train images": table["n_train"].map(lambda v: _num(v, ".0f")),
        "strategy": table["strategy_label"], "weights": table["weights"],
        "test acc % (mean ± std)": [
            f"{_pct(m)} ± {_pct(s)}" if not missing(s) else _pct(m)
            for m, s in zip(table["acc_mean"], table["acc_std"])
        ],
        "seeds": table["n"].astype(str),
        "balanced acc %": table["balanced_acc_mean"].map(_pct),
        "macro-F1 %": table["macro_f1_mean"].map(_pct),
        "wall time (s)": table["wall_s_mean"].map(_num),
        "trainable params": table["trainable_params"].map(_count),
    })


def cost_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "dataset": table["dataset"], "size": table["size"],
        "strategy": table["strategy_label"], "weights": table["weights"],
        "gain over scratch (pts)": table["gain_pts"].map(_pts),
        "extra wall time (s)": table["extra_wall_s"].map(lambda v: _num(v, "+.1f")),
        "gain per extra second (pts/s)": table["gain_pts_per_extra_s"].map(lambda v: _num(v, "+.3f")),
        "trainable params": table["trainable_params"].map(_count),
        "gain per 1M trainable params (pts)": table["gain_pts_per_m_trainable"].map(lambda v: _num(v, "+.2f")),
        "note": table["note"],
    })


def failed_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.drop(columns=["run_id"]).copy()
    shown["seed"] = shown["seed"].astype(str)
    shown["attempts"] = shown["attempts"].map(lambda v: _num(v, ".0f"))
    shown = shown.rename(columns={"strategy_label": "strategy"})
    shown.insert(len(shown.columns), "run id", table["run_id"].str.slice(0, 12))
    return shown


def versions_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy()
    shown["runs"] = shown["runs"].astype(str)
    shown["mixed"] = shown["mixed"].map(lambda m: "MIXED" if m else "")
    return shown
