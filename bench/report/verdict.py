"""The transfer-vs-scratch verdict: paired-by-seed comparisons, intervals that hold at small n.

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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.report.stats import (
    LEVEL,
    MAX_EXACT_FLIPS,
    METHOD_T,
    METHOD_WILSON,
    TIE_EPS,
    holm,
    iqm_interval,
    log_equivalent_size,
    prob_improvement,
    sign_flip_pvalue,
    stratified_bootstrap_means,
    t_interval,
    wilson_interval,
)
from bench.report.tables import SCRATCH, done_runs, strategy_sort_key

# One percentage point: about the seed-to-seed spread of a small fine-tuning run and one test
# image in a hundred; a smaller gain rarely justifies changing how a model is trained. A suite
# can change it under ``verdict: {min_effect: ...}``.
DEFAULT_MIN_EFFECT = 0.01

# Family-wise error rate for the per-arm table: the usual 5%, matching the 95% intervals.
ALPHA = 0.05

# Bootstrap draws for crossovers, scratch-equivalent sizes and the across-dataset IQM: 2,000
# puts the Monte Carlo error of a 2.5% quantile well below the seed-to-seed spread it measures,
# and keeps a report of dozens of cells under a second.
N_BOOT = 2_000
BOOT_SEED = 20240601

METHOD_BOOT = "percentile bootstrap over seeds"
METHOD_STRATIFIED = "stratified percentile bootstrap (seeds resampled within each cell)"

# With two pairs the t interval has one degree of freedom (its multiplier is 12.7) and an exact
# sign-flip p-value cannot go below 0.5; three pairs is the least at which either says anything.
MIN_PAIRS_FOR_CALL = 3

CALL_TRANSFER = "transfer wins"
CALL_SCRATCH = "scratch wins"
CALL_EQUIVALENT = "equivalent"
CALL_UNCLEAR = "no clear difference"
CALL_TOO_FEW = "no clear difference (n too small)"
CALL_INCONCLUSIVE = "inconclusive"
CALL_NO_SCRATCH = "no scratch baseline"
CALL_NO_TRANSFER = "no transfer runs"
CALL_NO_VALIDATION = "no validation accuracy to choose an arm"

CELL = ["backbone", "dataset", "size"]
ARM = ["strategy_label", "weights"]

# The statistics of one arm against scratch, shared by the headline and the per-arm table.
COMPARE_COLUMNS = [
    "n_pairs", "mean_diff", "sd_diff", "ci_low", "ci_high", "ci_method", "p_value", "p_method",
    "prob_improvement", "prob_improvement_low", "prob_improvement_high", "prob_improvement_method",
    "wins", "ties", "losses", "min_effect", "flags",
]

EQUIVALENT_COLUMNS = [
    "scratch_equivalent_n", "scratch_equivalent_ratio", "scratch_equivalent_low",
    "scratch_equivalent_high", "scratch_equivalent_status",
]

VERDICT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "n_train", "best_strategy", "best_weights",
    "n_candidates", "selected_on", "best_val_mean", "transfer_mean", "scratch_mean",
    *COMPARE_COLUMNS, "call", *EQUIVALENT_COLUMNS, "summary",
]

ARM_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "strategy_label", "weights", "val_mean",
    "transfer_mean", "scratch_mean", *COMPARE_COLUMNS, "n_arms", "p_holm", "call", "summary",
]

CROSSOVER_COLUMNS = [
    "backbone", "dataset", "crossover_size", "crossover_low", "crossover_high", "crossover_method",
    "sizes_compared", "summary",
]

SCRATCH_EQUIVALENT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "strategy_label", "weights", "n_train",
    "transfer_mean", *EQUIVALENT_COLUMNS, "method", "summary",
]

ACROSS_COLUMNS = [
    "backbone", "weights", "strategy_label", "n_cells", "n_flagged_cells", "iqm_gain", "iqm_low",
    "iqm_high", "interval_method", "mean_gain", "frac_cells_better", "summary",
]

LOGME_MODEL_COLUMNS = ["dataset", "backbone", "weights", "size", "logme", "best_strategy", "best_test_acc"]
LOGME_RANK_COLUMNS = ["dataset", "n_models", "kendall_tau", "p_value", "summary"]

SELECTION_NOTE = (
    "The best transfer arm of each cell (strategy and weights) is chosen by its mean validation "
    "accuracy, never by test accuracy; only its test accuracies are then compared with scratch, "
    "so the comparison carries no selection optimism."
)


def describe_methods(min_effect: float) -> str:
    """The verdict's methods and decision rule in one paragraph, for the report."""
    return (
        "Method: differences are transfer minus scratch on the seeds both have (paired by seed). "
        f"Mean difference with a {LEVEL:.0%} Student-t interval; p-value from an exact sign-flip "
        f"permutation test (all 2^n sign patterns up to n = {MAX_EXACT_FLIPS} pairs, Monte Carlo beyond; "
        "two-sided); P(improvement) is the share of paired seeds where transfer beats scratch, ties counting "
        f"one half (as in rliable), with a {LEVEL:.0%} Wilson score interval. \"transfer wins\" or "
        f"\"scratch wins\" needs the interval to exclude zero and the mean difference to be at least "
        f"{min_effect * 100:.1f} pts (the minimum effect); \"equivalent\" means the whole interval lies "
        f"within ±{min_effect * 100:.1f} pts; fewer than {MIN_PAIRS_FOR_CALL} paired seeds give no call; "
        "a cell where any compared run carries a health flag (for example undertrained or at chance) "
        "is \"inconclusive\". An exact sign-flip p-value cannot go below 2/2^n (0.25 with three "
        "paired seeds), so it is reported beside the call rather than used for it. Paired differences "
        f"within {TIE_EPS:g} of zero count as ties."
    )


def classify(
    ci_low: float, ci_high: float, n_pairs: int, *, mean_diff: float | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> str:
    """Put an interval into words: a win needs it to exclude zero and the mean to reach ``min_effect``.

    ``mean_diff`` defaults to the interval's midpoint, which is the mean for a t interval.
    """
    if n_pairs < MIN_PAIRS_FOR_CALL or math.isnan(ci_low) or math.isnan(ci_high):
        return CALL_TOO_FEW
    mean = (ci_low + ci_high) / 2.0 if mean_diff is None else mean_diff
    if ci_low > TIE_EPS and mean >= min_effect - TIE_EPS:
        return CALL_TRANSFER
    if ci_high < -TIE_EPS and mean <= -min_effect + TIE_EPS:
        return CALL_SCRATCH
    if -min_effect < ci_low and ci_high < min_effect:
        return CALL_EQUIVALENT
    return CALL_UNCLEAR


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def flag_list(value: object) -> list[str]:
    """A run's health flags from the store's comma-separated text ('' or NaN when healthy)."""
    if _missing(value):
        return []
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def _rng(*key: object) -> np.random.Generator:
    # Seeded from the cell's name, so a number does not change when other cells are added.
    return np.random.default_rng([BOOT_SEED, zlib.crc32("|".join(map(str, key)).encode())])


@dataclass
class _Arm:
    """One arm's finished runs in one cell, reduced to one value per seed."""

    label: str
    weights: str
    test: dict = field(default_factory=dict)  # seed -> test accuracy
    val: dict = field(default_factory=dict)  # seed -> validation accuracy (NaN when not recorded)
    flags: dict = field(default_factory=dict)  # seed -> health flags
    n_train: list = field(default_factory=list)

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
class _Cell:
    """A backbone x dataset x size cell: scratch pooled by seed, and every transfer arm."""

    backbone: str
    dataset: str
    size: str
    size_order: float
    n_train: list = field(default_factory=list)
    scratch: _Arm | None = None
    arms: dict = field(default_factory=dict)  # (label, weights) -> _Arm, in sort order


def _cells(frame: pd.DataFrame) -> list[_Cell]:
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
    }
    sums: dict = {}
    cells: dict = {}
    rows = zip(
        done["backbone"], done["dataset"], done["size"], done["size_order"], done["strategy"],
        done["strategy_label"], done["weights"], done["seed"], done["test_acc"], columns["val"],
        columns["flags"], columns["n_train"],
    )
    for backbone, dataset, size, order, strategy, label, weights, seed, test, val, flags, n_train in rows:
        key = (backbone, dataset, size)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = _Cell(str(backbone), str(dataset), str(size), float(order))
        scratch = strategy == SCRATCH
        arm_key = (SCRATCH, "") if scratch else (str(label), str(weights))
        arm = cell.scratch if scratch else cell.arms.get(arm_key)
        if arm is None:
            arm = _Arm(SCRATCH if scratch else str(label), "none" if scratch else str(weights))
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
        n_train = float(n_train) if n_train is not None and not pd.isna(n_train) else 0.0
        arm.n_train.append(n_train)
        cell.n_train.append(n_train)
    for cell in cells.values():
        cell.arms = dict(sorted(cell.arms.items()))
    return list(cells.values())


def _arm_name(label: str, weights: str) -> str:
    return label if weights in ("", "none") else f"{label} ({weights})"


def _size_text(size: str) -> str:
    if size == "all":
        return "all data"
    if "." in size:
        return f"{float(size) * 100:g}% of the data"
    return f"{size}/class"


def _pts(value: float) -> str:
    return f"{value * 100:+.1f} pts"


def _p_text(p: float) -> str:
    return "–" if _missing(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _compare(arm: _Arm, scratch: _Arm, min_effect: float) -> tuple[dict, np.ndarray]:
    """Paired statistics of one arm against scratch, and the paired differences themselves."""
    seeds = sorted(set(arm.test) & set(scratch.test))
    diffs = np.array([arm.test[s] - scratch.test[s] for s in seeds], dtype=float)
    n = int(diffs.size)
    low, high = t_interval(diffs)
    p, p_method = sign_flip_pvalue(diffs)
    wins, ties = int((diffs > TIE_EPS).sum()), int((np.abs(diffs) <= TIE_EPS).sum())
    pi_low, pi_high = wilson_interval(wins + 0.5 * ties, n)
    name = _arm_name(arm.label, arm.weights)
    flagged = [
        f"{who} seed {seed} {flag}"
        for seed in seeds
        for who, side in ((name, arm), (SCRATCH, scratch))
        for flag in side.flags.get(seed, [])
    ]
    stats = {
        "n_pairs": n, "mean_diff": float(diffs.mean()) if n else math.nan,
        "sd_diff": float(diffs.std(ddof=1)) if n > 1 else math.nan,
        "ci_low": low, "ci_high": high, "ci_method": METHOD_T if n > 1 else "",
        "p_value": p, "p_method": p_method,
        "prob_improvement": prob_improvement(diffs), "prob_improvement_low": pi_low,
        "prob_improvement_high": pi_high, "prob_improvement_method": METHOD_WILSON if n else "",
        "wins": wins, "ties": ties, "losses": int((diffs < -TIE_EPS).sum()),
        "min_effect": min_effect, "flags": "; ".join(flagged),
    }
    return stats, diffs


def _call(stats: dict) -> str:
    if stats["flags"]:
        return CALL_INCONCLUSIVE
    return classify(
        stats["ci_low"], stats["ci_high"], stats["n_pairs"], mean_diff=stats["mean_diff"],
        min_effect=stats["min_effect"],
    )


def _empty_stats(min_effect: float) -> dict:
    return {
        "n_pairs": 0, "mean_diff": math.nan, "sd_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "ci_method": "", "p_value": math.nan, "p_method": "", "prob_improvement": math.nan,
        "prob_improvement_low": math.nan, "prob_improvement_high": math.nan, "prob_improvement_method": "",
        "wins": 0, "ties": 0, "losses": 0, "min_effect": min_effect, "flags": "",
    }


def _select(arms: dict) -> tuple[tuple[str, str] | None, str]:
    """The arm with the highest mean validation accuracy, and how it was chosen.

    Ties go to the first (label, weights) in sort order. Arms without a validation accuracy are
    never chosen over arms with one; when no arm has one and there are several, none is chosen
    (None): picking on test accuracy is exactly what this protocol forbids.
    """
    if len(arms) == 1:
        return next(iter(arms)), "only arm"
    scored = [(key, arm.val_mean) for key, arm in arms.items() if not math.isnan(arm.val_mean)]
    if not scored:
        return None, ""
    best = max(scored, key=lambda item: item[1])  # max keeps the first of equal values
    return best[0], "validation"


def _equivalent_text(row: dict, per_class: float) -> str:
    status = row.get("scratch_equivalent_status", "")
    if status == "beyond":
        return "its accuracy is beyond what scratch reached at the largest size measured"
    if status == "below":
        return "its accuracy is below what scratch reached at the smallest size measured"
    n_eq = row.get("scratch_equivalent_n", math.nan)
    if status != "" or _missing(n_eq):
        return ""
    low, high = row["scratch_equivalent_low"], row["scratch_equivalent_high"]

    def size(n: float) -> str:
        if n == math.inf:
            return "beyond the largest size measured"
        if n == 0:
            return "below the smallest size measured"
        return f"{n / per_class:,.0f}/class" if per_class > 0 else f"{n:,.0f} images"

    interval = "" if _missing(low) else f"; 95% bootstrap {size(low)} to {size(high)}"
    return (
        f"it matches scratch trained on about {size(n_eq)} "
        f"({row['scratch_equivalent_ratio']:.1f}x the data{interval})"
    )


def _summary(row: dict, per_class: float = math.nan) -> str:
    where = f"{row['backbone']} on {row['dataset']}, {_size_text(row['size'])}"
    call = row["call"]
    if call == CALL_NO_TRANSFER:
        return f"{where}: no finished transfer runs to compare with."
    if call == CALL_NO_VALIDATION:
        return (
            f"{where}: {row['n_candidates']} transfer arms but none has a validation accuracy, so "
            "none can be chosen without looking at test results; see the per-arm table."
        )
    arm = _arm_name(row["best_strategy"], row["best_weights"])
    chosen = arm
    if row["selected_on"] == "validation":
        chosen = f"{arm}, chosen on validation from {row['n_candidates']} arms,"
    if call == CALL_NO_SCRATCH:
        return f"{where}: {chosen} has no finished scratch runs to compare with."
    n = row["n_pairs"]
    if n == 0:
        return f"{where}: best transfer {chosen} shares no seed with scratch; no paired comparison."
    record = f"{row['wins']} won, {row['ties']} tied, {row['losses']} lost"
    extra = _equivalent_text(row, per_class)
    extra = f" Scratch-equivalent data: {extra}." if extra else ""
    if n == 1:
        return (
            f"{where}: {chosen} vs scratch {_pts(row['mean_diff'])} on a single paired seed "
            f"({record}); one seed gives no confidence interval, so no verdict.{extra}"
        )
    evidence = (
        f"{LEVEL:.0%} t interval {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f} pts; "
        f"sign-flip p = {_p_text(row['p_value'])}; P(transfer > scratch) = {row['prob_improvement']:.2f} "
        f"(Wilson {row['prob_improvement_low']:.2f}–{row['prob_improvement_high']:.2f}); "
        f"{record} over {n} paired seeds"
    )
    if call == CALL_INCONCLUSIVE:
        return (
            f"{where}: inconclusive: {row['flags']}. {chosen} vs scratch {_pts(row['mean_diff'])} "
            f"({evidence}).{extra}"
        )
    if call == CALL_TOO_FEW:
        return (
            f"{where}: {chosen} vs scratch {_pts(row['mean_diff'])} ({evidence}); "
            f"at least {MIN_PAIRS_FOR_CALL} paired seeds are needed for a verdict.{extra}"
        )
    effect = f"{row['min_effect'] * 100:.1f} pts"
    lead = {
        CALL_TRANSFER: f"transfer wins: {chosen} beats scratch by {_pts(row['mean_diff'])}",
        CALL_SCRATCH: f"scratch wins: it beats {chosen} by {-row['mean_diff'] * 100:.1f} pts",
        CALL_EQUIVALENT: (
            f"equivalent: {chosen} vs scratch {_pts(row['mean_diff'])}, the whole interval within ±{effect}"
        ),
        CALL_UNCLEAR: f"no clear difference: {chosen} vs scratch {_pts(row['mean_diff'])}",
    }[call]
    if call == CALL_UNCLEAR and (row["ci_low"] > TIE_EPS or row["ci_high"] < -TIE_EPS):
        lead += f", an interval clear of zero but a mean below the {effect} minimum effect"
    return f"{where}: {lead} ({evidence}).{extra}"


def _classes(cells: list[_Cell]) -> dict[tuple[str, str], float]:
    """Classes per backbone x dataset implied by per-class sizes (n_train / images per class)."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for cell in cells:
        if cell.size.isdigit() and int(cell.size) > 0:
            ratios.setdefault((cell.backbone, cell.dataset), []).extend(
                n / int(cell.size) for n in cell.n_train if n > 0
            )
    return {key: float(np.median(values)) for key, values in ratios.items() if values}


def _order(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    ordered = table.assign(_label=table["strategy_label"].map(strategy_sort_key))
    return ordered.sort_values(keys, kind="stable").drop(columns="_label").reset_index(drop=True)


def verdicts(
    frame: pd.DataFrame, *, min_effect: float = DEFAULT_MIN_EFFECT, equivalents: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per backbone x dataset x size: the transfer arm chosen on validation vs scratch, paired by seed.

    The chosen arm is the non-scratch (strategy_label, weights) with the highest mean validation
    accuracy over its finished seeds; its test accuracies are compared with scratch's on the
    seeds both have. ``ci_low``/``ci_high`` are a Student-t interval of the mean paired
    difference (NaN below two pairs), ``p_value`` an exact sign-flip permutation p-value and
    ``prob_improvement`` the share of paired seeds transfer wins (ties half) with a Wilson
    interval. A flagged run among the compared ones makes the call "inconclusive". The
    ``scratch_equivalent_*`` columns are the chosen arm's row of ``scratch_equivalents``
    (computed here unless passed in).
    """
    cells = _cells(frame)
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
            **_empty_stats(min_effect),
        }
        rows.append(row)
        if not cell.arms:
            row["call"] = CALL_NO_TRANSFER
            continue
        chosen, how = _select(cell.arms)
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
        row.update(_compare(best, cell.scratch, min_effect)[0])
        row["call"] = _call(row)
    table = pd.DataFrame(rows)
    equivalents = scratch_equivalents(frame) if equivalents is None else equivalents
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
    classes = _classes(cells)
    table["summary"] = [
        _summary(row, classes.get((row["backbone"], row["dataset"]), math.nan))
        for row in table.to_dict("records")
    ]
    table = table[VERDICT_COLUMNS]
    return table.sort_values(["backbone", "dataset", "size_order"], kind="stable").reset_index(drop=True)


def _arm_pairs(cells: list[_Cell]) -> Iterator[tuple[_Cell, _Arm]]:
    """Every (cell, transfer arm) whose cell has scratch runs to compare with."""
    for cell in cells:
        if cell.scratch is not None:
            for arm in cell.arms.values():
                yield cell, arm


def arm_verdicts(frame: pd.DataFrame, *, min_effect: float = DEFAULT_MIN_EFFECT) -> pd.DataFrame:
    """One row per cell x transfer arm: that arm alone vs scratch, with Holm-adjusted p-values.

    The sign-flip p-values of a cell's arms are Holm-adjusted across those arms (``p_holm``).
    A per-arm win or loss needs what the headline needs and also ``p_holm`` <= ``ALPHA``,
    because here every arm is tested on the same test set and one of several may win by luck.
    """
    rows: list[dict] = []
    for cell, arm in _arm_pairs(_cells(frame)):
        rows.append({
            "backbone": cell.backbone, "dataset": cell.dataset, "size": cell.size, "size_order": cell.size_order,
            "strategy_label": arm.label, "weights": arm.weights, "val_mean": arm.val_mean,
            "transfer_mean": arm.test_mean, "scratch_mean": cell.scratch.test_mean,
            **_compare(arm, cell.scratch, min_effect)[0],
        })
    if not rows:
        return pd.DataFrame(columns=ARM_COLUMNS)
    table = pd.DataFrame(rows)
    table["n_arms"] = table.groupby(CELL)["strategy_label"].transform("size").astype(int)
    table["p_holm"] = table.groupby(CELL)["p_value"].transform(lambda p: holm(p.to_numpy()))
    calls, summaries = [], []
    for row in table.to_dict("records"):
        call = _call(row)
        blocked = call in (CALL_TRANSFER, CALL_SCRATCH) and not row["p_holm"] <= ALPHA
        if blocked:
            call = CALL_UNCLEAR
        calls.append(call)
        arm = _arm_name(row["strategy_label"], row["weights"])
        text = f"{arm} vs scratch {_pts(row['mean_diff'])}" if row["n_pairs"] else f"{arm}: no seed shared with scratch"
        if row["n_pairs"] > 1:
            text += (
                f" (t interval {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f}; "
                f"p = {_p_text(row['p_value'])}, Holm over {row['n_arms']} arms {_p_text(row['p_holm'])})"
            )
        if call == CALL_INCONCLUSIVE:
            text += f"; inconclusive: {row['flags']}"
        elif blocked:
            text += f"; the interval alone would call it, but the Holm-adjusted p is above {ALPHA:g}"
        summaries.append(text)
    table["call"], table["summary"] = calls, summaries
    return _order(table[ARM_COLUMNS], ["backbone", "dataset", "size_order", "_label", "weights"])


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
    frame: pd.DataFrame, table: pd.DataFrame | None = None, *, n_boot: int = N_BOOT
) -> pd.DataFrame:
    """Per backbone x dataset: the smallest size from which scratch is no longer worse than the chosen transfer arm.

    At each size the arm is the one ``verdicts`` chose on validation; "no longer worse" means a
    mean paired difference <= 0 at that size and every larger one. Sizes without a paired seed
    are skipped. ``crossover_low``/``crossover_high`` bound it with a percentile bootstrap that
    resamples seeds within each size; a missing value (``pd.isna``) means transfer is still ahead
    at the largest size compared.
    """
    table = verdicts(frame) if table is None else table
    if table.empty:
        return pd.DataFrame(columns=CROSSOVER_COLUMNS)
    cells = {(c.backbone, c.dataset, c.size): c for c in _cells(frame)}
    rows: list[dict] = []
    for (backbone, dataset), part in table.groupby(["backbone", "dataset"], sort=True):
        name = f"{backbone} on {dataset}"
        compared = part[part["n_pairs"] > 0].sort_values("size_order", kind="stable")
        sizes = list(compared["size"])
        groups = []
        for row in compared.to_dict("records"):
            cell = cells[(backbone, dataset, row["size"])]
            groups.append(_compare(cell.arms[(row["best_strategy"], row["best_weights"])], cell.scratch, 0.0)[1])
        crossover = low = high = None
        if sizes:
            point = int(_crossover_index(np.array([g.mean() for g in groups])))
            draws = _crossover_index(stratified_bootstrap_means(groups, n_boot=n_boot, rng=_rng(backbone, dataset)))
            alpha = (1.0 - LEVEL) / 2.0
            lo_i = int(np.quantile(draws, alpha, method="lower"))
            hi_i = int(np.quantile(draws, 1.0 - alpha, method="higher"))
            crossover, low, high = (sizes[i] if i < len(sizes) else None for i in (point, lo_i, hi_i))
        if not sizes:
            text = f"{name}: no size has both scratch and a transfer arm on a shared seed."
        elif crossover is None:
            text = f"{name}: transfer stays ahead at every size up to {_size_text(sizes[-1])}."
        elif crossover == sizes[-1] and len(sizes) > 1:
            text = f"{name}: scratch catches up only at the largest size, {crossover}."
        elif crossover == sizes[0]:
            text = f"{name}: scratch matches or beats transfer at every size from {_size_text(crossover)}."
        else:
            where = f"size {crossover}" + ("" if crossover == "all" else f" ({_size_text(crossover)})")
            text = f"{name}: scratch catches up at {where} and stays level or ahead at every larger size."
        if sizes:
            top = "beyond the largest size compared"
            text += (
                f" {LEVEL:.0%} bootstrap interval over seeds: {low if low is not None else top} to "
                f"{high if high is not None else top}."
            )
        rows.append({
            "backbone": backbone, "dataset": dataset, "crossover_size": crossover,
            "crossover_low": low, "crossover_high": high, "crossover_method": METHOD_BOOT if sizes else "",
            "sizes_compared": ", ".join(sizes), "summary": text,
        })
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)


# -- scratch-equivalent data -------------------------------------------------------------------


def scratch_equivalents(frame: pd.DataFrame, *, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per backbone x dataset x size x transfer arm: how much data scratch needs to match the arm.

    Scratch's learning curve (mean test accuracy against training images, ``n_train``) is made
    monotone and interpolated as a power law between measured sizes, then inverted at the arm's
    mean test accuracy (Hernandez et al. 2021, "effective data transferred"). The ratio is that
    size over the images the arm trained on. Nothing is extrapolated: ``scratch_equivalent_status``
    says "beyond" or "below" when the arm's accuracy lies outside scratch's measured range. The
    interval is a percentile bootstrap resampling seeds within every size of both curves; an
    end at 0 or inf lies below or beyond the measured range.
    """
    cells = _cells(frame)
    classes = _classes(cells)
    by_pair: dict[tuple[str, str], list[_Cell]] = {}
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
        rng = _rng(backbone, dataset, "equivalent")
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
            text = _equivalent_text(row, per_class)
            row["summary"] = f"{_arm_name(arm.label, arm.weights)} at {_size_text(cell.size)}: {text}."
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=SCRATCH_EQUIVALENT_COLUMNS)
    table = pd.DataFrame(rows, columns=SCRATCH_EQUIVALENT_COLUMNS)
    return _order(table, ["backbone", "dataset", "size_order", "_label", "weights"])


# -- across datasets ---------------------------------------------------------------------------


def _healthy_gains(cells: list[_Cell]) -> Iterator[tuple[_Cell, _Arm, np.ndarray, bool]]:
    for cell, arm in _arm_pairs(cells):
        stats, diffs = _compare(arm, cell.scratch, DEFAULT_MIN_EFFECT)
        yield cell, arm, diffs, bool(stats["flags"])


def across_datasets(frame: pd.DataFrame, *, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per backbone x weights x transfer strategy: the IQM over dataset x size cells of the gain over scratch.

    A cell's gain is the mean paired difference (transfer minus scratch); the interquartile mean
    across cells resists the one dataset where everything is easy or broken. The interval is a
    stratified percentile bootstrap (seeds resampled within each cell, as rliable does). Cells
    where a compared run is flagged are left out and counted in ``n_flagged_cells``.
    """
    groups: dict[tuple, list[np.ndarray]] = {}
    flagged: dict[tuple, int] = {}
    for cell, arm, diffs, bad in _healthy_gains(_cells(frame)):
        key = (cell.backbone, arm.weights, arm.label)
        groups.setdefault(key, [])
        flagged[key] = flagged.get(key, 0) + int(bad)
        if diffs.size and not bad:
            groups[key].append(diffs)
    rows = []
    for (backbone, weights, label), found in groups.items():
        point, low, high = iqm_interval(found, n_boot=n_boot, seed=int(_rng(backbone, weights, label).integers(2**31)))
        gains = np.array([c.mean() for c in found])
        arm = _arm_name(label, weights)
        if found:
            text = (
                f"{backbone}, {arm}: IQM gain over scratch {_pts(point)} across {len(found)} dataset × size cells "
                f"({LEVEL:.0%} stratified bootstrap {low * 100:+.1f} to {high * 100:+.1f} pts)."
            )
        else:
            text = f"{backbone}, {arm}: no unflagged cell shares a seed with scratch."
        rows.append({
            "backbone": backbone, "weights": weights, "strategy_label": label, "n_cells": len(found),
            "n_flagged_cells": flagged[(backbone, weights, label)], "iqm_gain": point, "iqm_low": low,
            "iqm_high": high, "interval_method": METHOD_STRATIFIED if found else "",
            "mean_gain": float(gains.mean()) if gains.size else math.nan,
            "frac_cells_better": float((gains > TIE_EPS).mean()) if gains.size else math.nan,
            "summary": text,
        })
    if not rows:
        return pd.DataFrame(columns=ACROSS_COLUMNS)
    return _order(pd.DataFrame(rows, columns=ACROSS_COLUMNS), ["backbone", "weights", "_label"])


def cell_gains(frame: pd.DataFrame) -> pd.DataFrame:
    """Per transfer arm and unflagged cell, the mean paired gain over scratch: the input of a performance profile."""
    rows = [
        (cell.backbone, arm.weights, arm.label, cell.dataset, cell.size, float(diffs.mean()))
        for cell, arm, diffs, bad in _healthy_gains(_cells(frame))
        if diffs.size and not bad
    ]
    return pd.DataFrame(rows, columns=["backbone", "weights", "strategy_label", "dataset", "size", "gain"])


# -- LogME as a cheap predictor ----------------------------------------------------------------


def logme_models(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x backbone x weights: LogME at the largest size it was measured, and the measured accuracy there.

    The measured accuracy is the test mean of that backbone and weights' transfer arm chosen on
    validation at the same size. Empty when the frame has no ``logme`` values.
    """
    done = done_runs(frame)
    if done.empty or "logme" not in done:
        return pd.DataFrame(columns=LOGME_MODEL_COLUMNS)
    scored = done[(done["strategy"] != SCRATCH) & pd.to_numeric(done["logme"], errors="coerce").notna()]
    cells = {(c.backbone, c.dataset, c.size): c for c in _cells(frame)}
    rows = []
    for (dataset, backbone, weights), part in scored.groupby(["dataset", "backbone", "weights"], sort=True):
        top = part[part["size_order"] == part["size_order"].max()]
        size = str(top["size"].iloc[0])
        cell = cells[(backbone, dataset, size)]
        arms = {key: arm for key, arm in cell.arms.items() if arm.weights == weights}
        chosen, _ = _select(arms)
        rows.append({
            "dataset": dataset, "backbone": backbone, "weights": weights, "size": size,
            "logme": float(pd.to_numeric(top["logme"]).median()),
            "best_strategy": "" if chosen is None else arms[chosen].label,
            "best_test_acc": math.nan if chosen is None else arms[chosen].test_mean,
        })
    return pd.DataFrame(rows, columns=LOGME_MODEL_COLUMNS)


# Kendall's tau over fewer than three models is +1 or -1 by construction and says nothing.
MIN_MODELS_FOR_RANKING = 3


def logme_ranking(frame: pd.DataFrame, models: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset: Kendall tau between LogME and the measured best transfer accuracy across backbone x weights."""
    models = logme_models(frame) if models is None else models
    rows = []
    for dataset, part in models.dropna(subset=["logme", "best_test_acc"]).groupby("dataset", sort=True):
        n = len(part)
        if n < MIN_MODELS_FOR_RANKING:
            rows.append({
                "dataset": dataset, "n_models": n, "kendall_tau": math.nan, "p_value": math.nan,
                "summary": (
                    f"{dataset}: only {n} backbone × weights with a LogME score; at least "
                    f"{MIN_MODELS_FOR_RANKING} are needed, so the ranking cannot be assessed."
                ),
            })
            continue
        if part["logme"].nunique() < 2 or part["best_test_acc"].nunique() < 2:
            rows.append({
                "dataset": dataset, "n_models": n, "kendall_tau": math.nan, "p_value": math.nan,
                "summary": (
                    f"{dataset}: the {n} backbone × weights all tie on LogME or on measured accuracy, so "
                    "the ranking cannot be assessed."
                ),
            })
            continue
        result = sps.kendalltau(part["logme"], part["best_test_acc"])
        tau, p = float(result.statistic), float(result.pvalue)
        rows.append({
            "dataset": dataset, "n_models": n, "kendall_tau": tau, "p_value": p,
            "summary": (
                f"{dataset}: Kendall tau {tau:+.2f} between LogME and the best transfer test accuracy "
                f"over {n} backbone × weights (p = {_p_text(p)}); +1 would mean LogME ranks them exactly."
            ),
        })
    return pd.DataFrame(rows, columns=LOGME_RANK_COLUMNS)


def describe_interval(row: pd.Series | dict) -> str:
    """The interval of a verdict row as short text, saying why there is none when there is none."""
    call = row.get("call")
    if call == CALL_NO_TRANSFER:
        return "no transfer runs"
    if call == CALL_NO_VALIDATION:
        return "no arm chosen"
    if call == CALL_NO_SCRATCH:
        return "no scratch baseline"
    n = int(row.get("n_pairs") or 0)
    if n == 0:
        return "no shared seed"
    if n == 1:
        return "none (one paired seed)"
    return f"{row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f}"
