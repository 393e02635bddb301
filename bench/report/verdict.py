"""The transfer-vs-scratch verdict: paired-by-seed differences, bootstrap intervals, crossovers.

Everything here is a pure function of ``store.frame()`` (or any frame with the same columns).
Accuracies are fractions in [0, 1]; the sentences show them as percentage points.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SCRATCH = "scratch"

# Paired differences closer to zero than this count as ties. Test accuracies are multiples of
# 1/n_test, so two genuinely equal runs differ by exactly 0; the epsilon only absorbs float noise.
TIE_EPS = 1e-9

N_BOOT = 10_000
BOOT_SEED = 20240601
LEVEL = 0.95

CALL_TRANSFER = "transfer wins"
CALL_SCRATCH = "scratch wins"
CALL_UNCLEAR = "no clear difference"
CALL_TOO_FEW = "no clear difference (n too small)"
CALL_NO_SCRATCH = "no scratch baseline"
CALL_NO_TRANSFER = "no transfer runs"

CELL = ["backbone", "dataset", "size"]

VERDICT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "n_train", "best_strategy", "best_weights",
    "n_candidates", "transfer_mean", "scratch_mean", "n_pairs", "mean_diff", "ci_low", "ci_high",
    "wins", "ties", "losses", "call", "summary",
]

CROSSOVER_COLUMNS = ["backbone", "dataset", "crossover_size", "sizes_compared", "summary"]

OPTIMISM_NOTE = (
    "The best transfer strategy in each cell is chosen on the same test results it is then "
    "compared with, so its advantage over scratch is optimistic; with several candidate "
    "strategies, an apparent win of a few points can be selection alone."
)


def bootstrap_ci(
    diffs: np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs``; (nan, nan) below two values."""
    values = np.asarray(diffs, dtype=float)
    if values.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[picks].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


# A percentile bootstrap over two paired seeds is just their range: two agreeing seeds would
# "exclude zero" as often as a coin lands twice the same way. Calls need at least three.
MIN_PAIRS_FOR_CALL = 3


def classify(ci_low: float, ci_high: float, n_pairs: int) -> str:
    """Put an interval into words: which side it excludes zero on, if any."""
    if n_pairs < MIN_PAIRS_FOR_CALL or math.isnan(ci_low) or math.isnan(ci_high):
        return CALL_TOO_FEW
    if ci_low > TIE_EPS:
        return CALL_TRANSFER
    if ci_high < -TIE_EPS:
        return CALL_SCRATCH
    return CALL_UNCLEAR


def done_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished runs that have a test accuracy."""
    if frame.empty:
        return frame
    mask = (frame["status"] == "done") & frame["test_acc"].notna()
    return frame.loc[mask]


def _per_seed(runs: pd.DataFrame) -> pd.Series:
    # A cell id includes the seed, so one run per seed is the norm; averaging is only a guard.
    return runs.groupby("seed")["test_acc"].mean()


def _size_text(size: str) -> str:
    if size == "all":
        return "all data"
    if "." in size:
        return f"{float(size) * 100:g}% of the data"
    return f"{size}/class"


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def _summary(row: dict) -> str:
    where = f"{row['backbone']} on {row['dataset']}, {_size_text(row['size'])}"
    call = row["call"]
    if call == CALL_NO_SCRATCH:
        return f"{where}: no finished scratch runs to compare with."
    if call == CALL_NO_TRANSFER:
        return f"{where}: no finished transfer runs to compare with."
    arm = row["best_strategy"]
    if row["best_weights"] not in ("", "none"):
        arm = f"{arm} ({row['best_weights']})"
    n = row["n_pairs"]
    if n == 0:
        return f"{where}: best transfer {arm} shares no seed with scratch; no paired comparison."
    record = f"{row['wins']} won, {row['ties']} tied, {row['losses']} lost"
    if n == 1:
        return (
            f"{where}: {arm} vs scratch {_pts(row['mean_diff'])} on a single paired seed "
            f"({record}); one seed gives no confidence interval, so no verdict."
        )
    interval = f"{LEVEL:.0%} CI {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f}"
    if call == CALL_TOO_FEW:
        return (
            f"{where}: {arm} vs scratch {_pts(row['mean_diff'])} ({record} over {n} paired seeds); "
            f"at least {MIN_PAIRS_FOR_CALL} paired seeds are needed for a verdict."
        )
    lead = {
        CALL_TRANSFER: f"transfer wins: {arm} beats scratch by {_pts(row['mean_diff'])}",
        CALL_SCRATCH: f"scratch wins: it beats {arm} by {-row['mean_diff'] * 100:.1f} pts",
        CALL_UNCLEAR: f"no clear difference: {arm} vs scratch {_pts(row['mean_diff'])}",
    }[call]
    return f"{where}: {lead} ({interval}; {record} over {n} paired seeds)."


def verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per backbone x dataset x size: best transfer arm vs scratch, paired by seed.

    The best arm is the non-scratch (strategy_label, weights) with the highest mean test
    accuracy over its finished seeds (ties go to the first label in sort order). The difference
    is transfer minus scratch on the seeds both have; ``ci_low``/``ci_high`` are a percentile
    bootstrap of its mean, NaN with fewer than two pairs.
    """
    done = done_runs(frame)
    rows: list[dict] = []
    if done.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    for (backbone, dataset, size), cell in done.groupby(CELL, sort=False):
        row: dict = {
            "backbone": backbone, "dataset": dataset, "size": size,
            "size_order": float(cell["size_order"].iloc[0]),
            "n_train": float(cell["n_train"].median()) if "n_train" in cell else math.nan,
            "best_strategy": "", "best_weights": "", "n_candidates": 0,
            "transfer_mean": math.nan, "scratch_mean": math.nan, "n_pairs": 0,
            "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "wins": 0, "ties": 0, "losses": 0,
        }
        scratch = cell[cell["strategy"] == SCRATCH]
        transfer = cell[cell["strategy"] != SCRATCH]
        if not scratch.empty:
            row["scratch_mean"] = float(scratch["test_acc"].mean())
        if transfer.empty:
            row["call"] = CALL_NO_TRANSFER
        else:
            means = transfer.groupby(["strategy_label", "weights"])["test_acc"].mean()
            row["n_candidates"] = int(means.size)
            # Stable sort keeps label order among equal means so the pick is deterministic.
            ranked = means.sort_index().sort_values(ascending=False, kind="stable")
            label, weights = ranked.index[0]
            row.update(best_strategy=label, best_weights=weights, transfer_mean=float(ranked.iloc[0]))
            if scratch.empty:
                row["call"] = CALL_NO_SCRATCH
            else:
                best = transfer[(transfer["strategy_label"] == label) & (transfer["weights"] == weights)]
                paired = pd.concat({"t": _per_seed(best), "s": _per_seed(scratch)}, axis=1).dropna()
                diffs = (paired["t"] - paired["s"]).to_numpy()
                low, high = bootstrap_ci(diffs)
                row.update(
                    n_pairs=int(diffs.size),
                    mean_diff=float(diffs.mean()) if diffs.size else math.nan,
                    ci_low=low, ci_high=high,
                    wins=int((diffs > TIE_EPS).sum()), losses=int((diffs < -TIE_EPS).sum()),
                    ties=int((np.abs(diffs) <= TIE_EPS).sum()),
                    call=classify(low, high, int(diffs.size)),
                )
        row["summary"] = _summary(row)
        rows.append(row)
    table = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    return table.sort_values(["backbone", "dataset", "size_order"], kind="stable").reset_index(drop=True)


def crossovers(frame: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per backbone x dataset: the smallest size from which scratch's mean stays >= best transfer's.

    Only sizes with both a scratch and a transfer mean are compared, in ``size_order``;
    ``crossover_size`` is missing (``pd.isna``) when transfer is ahead at the largest compared size.
    """
    table = verdicts(frame) if table is None else table
    rows: list[dict] = []
    both = table.dropna(subset=["scratch_mean", "transfer_mean"])
    for (backbone, dataset), _ in table.groupby(["backbone", "dataset"], sort=True):
        name = f"{backbone} on {dataset}"
        compared = both[(both["backbone"] == backbone) & (both["dataset"] == dataset)]
        compared = compared.sort_values("size_order", kind="stable")
        crossover = None
        # Walk from the largest size down while scratch keeps up; the last size reached is where
        # it caught up and stayed caught up.
        for _, row in compared.iloc[::-1].iterrows():
            if row["scratch_mean"] >= row["transfer_mean"]:
                crossover = row["size"]
            else:
                break
        sizes = list(compared["size"])
        if not sizes:
            text = f"{name}: no size has both scratch and transfer results."
        elif crossover is None:
            text = f"{name}: transfer stays ahead at every size up to {_size_text(sizes[-1])}."
        elif crossover == sizes[-1] and len(sizes) > 1:
            text = f"{name}: scratch catches up only at the largest size, {crossover}."
        elif crossover == sizes[0]:
            text = f"{name}: scratch matches or beats transfer at every size from {_size_text(crossover)}."
        else:
            where = f"size {crossover}" + ("" if crossover == "all" else f" ({_size_text(crossover)})")
            text = f"{name}: scratch catches up at {where} and stays level or ahead at every larger size."
        rows.append({
            "backbone": backbone, "dataset": dataset, "crossover_size": crossover,
            "sizes_compared": ", ".join(sizes), "summary": text,
        })
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)
