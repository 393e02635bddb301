"""One transfer arm against scratch, paired by seed, and the call its interval earns.

Accuracies and differences are fractions in [0, 1]. The arm compared in a cell's headline is the
one ``select`` picks on validation accuracy, so its test comparison is free of selection.
"""

from __future__ import annotations

import math

import numpy as np

from bench.report.cells import Arm, arm_name
from bench.report.rules import (
    CALL_EQUIVALENT,
    CALL_INCONCLUSIVE,
    CALL_SCRATCH,
    CALL_TOO_FEW,
    CALL_TRANSFER,
    CALL_UNCLEAR,
    DEFAULT_MIN_EFFECT,
    MIN_PAIRS_FOR_CALL,
)
from bench.report.stats import (
    METHOD_T,
    METHOD_WILSON,
    TIE_EPS,
    prob_improvement,
    sign_flip_pvalue,
    t_interval,
    wilson_interval,
)
from bench.report.tables import SCRATCH

# The statistics of one arm against scratch, shared by the headline and the per-arm table.
COMPARE_COLUMNS = [
    "n_pairs", "mean_diff", "sd_diff", "ci_low", "ci_high", "ci_method", "p_value", "p_method",
    "prob_improvement", "prob_improvement_low", "prob_improvement_high", "prob_improvement_method",
    "wins", "ties", "losses", "min_effect", "flags", "transfer_edge", "scratch_edge",
]


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


def compare(arm: Arm, scratch: Arm, min_effect: float) -> tuple[dict, np.ndarray]:
    """Paired statistics of one arm against scratch, and the paired differences themselves."""
    seeds = sorted(set(arm.test) & set(scratch.test))
    diffs = np.array([arm.test[s] - scratch.test[s] for s in seeds], dtype=float)
    n = int(diffs.size)
    low, high = t_interval(diffs)
    p, p_method = sign_flip_pvalue(diffs)
    wins, ties = int((diffs > TIE_EPS).sum()), int((np.abs(diffs) <= TIE_EPS).sum())
    pi_low, pi_high = wilson_interval(wins + 0.5 * ties, n)
    name = arm_name(arm.label, arm.weights)
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
        "transfer_edge": arm.edge, "scratch_edge": scratch.edge,
    }
    return stats, diffs


def call_of(stats: dict) -> str:
    """The call of a comparison: "inconclusive" when a compared run is flagged, else its interval's."""
    if stats["flags"]:
        return CALL_INCONCLUSIVE
    return classify(
        stats["ci_low"], stats["ci_high"], stats["n_pairs"], mean_diff=stats["mean_diff"],
        min_effect=stats["min_effect"],
    )


def against_edge(call: str, stats: dict, name: str) -> tuple[str, str]:
    """``call``, or "inconclusive" and why when it goes against an arm still at the edge of its grid.

    An arm whose best configuration is the largest or smallest value it tried, even after the
    sweep extended, has not been tuned to its optimum: it may lose only for want of a wider grid.
    A call for it, or no call at all, stands. ``name`` is the transfer arm as readers see it.
    """
    loser, edge = {
        CALL_TRANSFER: (SCRATCH, stats["scratch_edge"]), CALL_SCRATCH: (name, stats["transfer_edge"]),
    }.get(call, ("", ""))
    if not edge:
        return call, ""
    return CALL_INCONCLUSIVE, f"{loser} still at the edge of its grid, {edge}"


def empty_stats(min_effect: float) -> dict:
    """The statistics of a comparison that could not be made: no pairs, every number NaN."""
    return {
        "n_pairs": 0, "mean_diff": math.nan, "sd_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "ci_method": "", "p_value": math.nan, "p_method": "", "prob_improvement": math.nan,
        "prob_improvement_low": math.nan, "prob_improvement_high": math.nan, "prob_improvement_method": "",
        "wins": 0, "ties": 0, "losses": 0, "min_effect": min_effect, "flags": "",
        "transfer_edge": "", "scratch_edge": "",
    }


def select(arms: dict) -> tuple[tuple[str, str] | None, str]:
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
