"""Every sentence the verdict says, one function per kind, for the HTML page, the Markdown and the terminal.

The tables carry these sentences in their ``summary`` columns and the page sections quote them,
so a reader sees the same words in every format. Accuracies and differences come in as fractions
and are shown as percentage points.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.cells import arm_name, missing
from bench.report.power import MAX_SEEDS_NEEDED, POWER
from bench.report.rules import (
    CALL_EQUIVALENT,
    CALL_INCONCLUSIVE,
    CALL_NO_SCRATCH,
    CALL_NO_TRANSFER,
    CALL_NO_VALIDATION,
    CALL_SCRATCH,
    CALL_TOO_FEW,
    CALL_TRANSFER,
    CALL_UNCLEAR,
    DEFAULT_MIN_EFFECT,
    MIN_PAIRS_FOR_CALL,
)
from bench.report.stats import LEVEL, MAX_EXACT_FLIPS, TIE_EPS

SELECTION_NOTE = (
    "The best transfer arm of each cell (strategy and weights) is chosen by its mean validation "
    "accuracy, never by test accuracy; only its test accuracies are then compared with scratch, "
    "so the comparison carries no selection optimism."
)


# -- pieces of sentences -------------------------------------------------------------------------


def pts(value: float) -> str:
    """A difference in accuracy (a fraction) as signed percentage points: ``+1.5 pts``."""
    return f"{value * 100:+.1f} pts"


def p_text(value: object) -> str:
    """A p-value with three decimals, in scientific notation below 0.001; a dash when there is none."""
    if missing(value):
        return "–"
    return f"{float(value):.3f}" if float(value) >= 0.001 else f"{float(value):.1e}"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def size_text(size: str) -> str:
    """A dataset size as read aloud: ``10/class``, ``10% of the data``, ``all data``."""
    if size == "all":
        return "all data"
    if "." in size:
        return f"{float(size) * 100:g}% of the data"
    return f"{size}/class"


# -- the method --------------------------------------------------------------------------------


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
        "is \"inconclusive\", and so is a call against an arm whose chosen configuration is still the "
        "largest or smallest value its sweep tried after extending: it may lose only for want of a wider "
        "grid (a call for such an arm stands). An exact sign-flip p-value cannot go below 2/2^n (0.25 with three "
        "paired seeds), so it is reported beside the call rather than used for it. Paired differences "
        f"within {TIE_EPS:g} of zero count as ties. What the seeds can detect: the smallest true mean "
        f"difference a two-sided paired t test at the same level finds with {POWER:.0%} power, at the cell's "
        "observed spread of paired differences and number of pairs (from the noncentral t distribution); "
        "for a cell without a call, the paired seeds that test would need were the observed mean the truth."
    )


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


def detect_clause(row: dict) -> str:
    """What a comparison's seeds can detect and, with no call, how many seeds a call would take; '' below two pairs."""
    n, mde = int(row.get("n_pairs") or 0), row.get("mde")
    if n < 2 or missing(mde):
        return ""
    text = f"detects {mde * 100:.1f} pts or more with these {n} seeds"
    mean, need = row.get("mean_diff"), row.get("seeds_needed")
    if row.get("call") not in (CALL_UNCLEAR, CALL_TOO_FEW) or missing(mean) or missing(need):
        return text
    size = f"a {abs(mean) * 100:.1f}-point {'gain' if mean > 0 else 'loss'}"
    if abs(mean) < row.get("min_effect", DEFAULT_MIN_EFFECT):
        return text + f"; {size} is below the minimum effect, so no number of seeds would make it a win or loss"
    if need == math.inf:
        return text + f"; more than {MAX_SEEDS_NEEDED} seeds would be needed to decide {size}"
    return text + f"; about {need:.0f} seeds would decide {size}"


# -- one cell ------------------------------------------------------------------------------------


def inconclusive_reason(row: dict) -> str:
    """Why a comparison gets no call: its flagged runs, or the arm it would go against still at its grid's edge."""
    if row.get("flags"):
        return str(row["flags"])
    return f"{row.get('withheld', '')}, so it may be under-tuned and no call is made against it"


def equivalent_text(row: dict, per_class: float) -> str:
    """How much data scratch needs to match an arm, as a clause; '' when it is not known."""
    status = row.get("scratch_equivalent_status", "")
    if status == "beyond":
        return "its accuracy is beyond what scratch reached at the largest size measured"
    if status == "below":
        return "its accuracy is below what scratch reached at the smallest size measured"
    n_eq = row.get("scratch_equivalent_n", math.nan)
    if status != "" or missing(n_eq):
        return ""
    low, high = row["scratch_equivalent_low"], row["scratch_equivalent_high"]

    def size(n: float) -> str:
        if n == math.inf:
            return "beyond the largest size measured"
        if n == 0:
            return "below the smallest size measured"
        return f"{n / per_class:,.0f}/class" if per_class > 0 else f"{n:,.0f} images"

    interval = "" if missing(low) else f"; 95% bootstrap {size(low)} to {size(high)}"
    return (
        f"it matches scratch trained on about {size(n_eq)} "
        f"({row['scratch_equivalent_ratio']:.1f}x the data{interval})"
    )


def verdict_sentence(row: dict, per_class: float = math.nan) -> str:
    """A cell's headline: the arm chosen on validation against scratch, its call and the evidence."""
    where = f"{row['backbone']} on {row['dataset']}, {size_text(row['size'])}"
    call = row["call"]
    if call == CALL_NO_TRANSFER:
        return f"{where}: no finished transfer runs to compare with."
    if call == CALL_NO_VALIDATION:
        return (
            f"{where}: {row['n_candidates']} transfer arms but none has a validation accuracy, so "
            "none can be chosen without looking at test results; see the per-arm table."
        )
    arm = arm_name(row["best_strategy"], row["best_weights"])
    chosen = arm
    if row["selected_on"] == "validation":
        chosen = f"{arm}, chosen on validation from {row['n_candidates']} arms,"
    if call == CALL_NO_SCRATCH:
        return f"{where}: {chosen} has no finished scratch runs to compare with."
    n = row["n_pairs"]
    if n == 0:
        return f"{where}: best transfer {chosen} shares no seed with scratch; no paired comparison."
    record = f"{row['wins']} won, {row['ties']} tied, {row['losses']} lost"
    extra = equivalent_text(row, per_class)
    extra = f" Scratch-equivalent data: {extra}." if extra else ""
    if n == 1:
        return (
            f"{where}: {chosen} vs scratch {pts(row['mean_diff'])} on a single paired seed "
            f"({record}); one seed gives no confidence interval, so no verdict.{extra}"
        )
    evidence = (
        f"{LEVEL:.0%} t interval {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f} pts; "
        f"sign-flip p = {p_text(row['p_value'])}; P(transfer > scratch) = {row['prob_improvement']:.2f} "
        f"(Wilson {row['prob_improvement_low']:.2f}–{row['prob_improvement_high']:.2f}); "
        f"{record} over {n} paired seeds"
    )
    if call == CALL_INCONCLUSIVE:
        return (
            f"{where}: inconclusive: {inconclusive_reason(row)}. {chosen} vs scratch {pts(row['mean_diff'])} "
            f"({evidence}).{extra}"
        )
    if call == CALL_TOO_FEW:
        detect = detect_clause(row)
        return (
            f"{where}: {chosen} vs scratch {pts(row['mean_diff'])} ({evidence}); "
            f"at least {MIN_PAIRS_FOR_CALL} paired seeds are needed for a verdict{'; ' + detect if detect else ''}.{extra}"
        )
    effect = f"{row['min_effect'] * 100:.1f} pts"
    lead = {
        CALL_TRANSFER: f"transfer wins: {chosen} beats scratch by {pts(row['mean_diff'])}",
        CALL_SCRATCH: f"scratch wins: it beats {chosen} by {-row['mean_diff'] * 100:.1f} pts",
        CALL_EQUIVALENT: (
            f"equivalent: {chosen} vs scratch {pts(row['mean_diff'])}, the whole interval within ±{effect}"
        ),
        CALL_UNCLEAR: f"no clear difference: {chosen} vs scratch {pts(row['mean_diff'])}",
    }[call]
    if call == CALL_UNCLEAR and (row["ci_low"] > TIE_EPS or row["ci_high"] < -TIE_EPS):
        lead += f", an interval clear of zero but a mean below the {effect} minimum effect"
    detect = detect_clause(row)
    seeds = f" Seeds: {n}, {row['stopped']}." if row.get("stopped") else ""
    return f"{where}: {lead} ({evidence}){'; ' + detect if detect else ''}.{seeds}{extra}"


def arm_sentence(row: dict, call: str, *, held_back: bool, alpha: float) -> str:
    """One arm alone against scratch, with its Holm-adjusted p; ``held_back`` when Holm withheld a call."""
    arm = arm_name(row["strategy_label"], row["weights"])
    text = f"{arm} vs scratch {pts(row['mean_diff'])}" if row["n_pairs"] else f"{arm}: no seed shared with scratch"
    if row["n_pairs"] > 1:
        text += (
            f" (t interval {row['ci_low'] * 100:+.1f} to {row['ci_high'] * 100:+.1f}; "
            f"p = {p_text(row['p_value'])}, Holm over {row['n_arms']} arms {p_text(row['p_holm'])})"
        )
    if call == CALL_INCONCLUSIVE:
        text += f"; inconclusive: {inconclusive_reason(row)}"
    elif held_back:
        text += f"; the interval alone would call it, but the Holm-adjusted p is above {alpha:g}"
    return text


def equivalent_sentence(row: dict, per_class: float) -> str:
    """An arm's scratch-equivalent data size in a sentence of its own."""
    text = equivalent_text(row, per_class)
    return f"{arm_name(row['strategy_label'], row['weights'])} at {size_text(row['size'])}: {text}."


# -- across cells ------------------------------------------------------------------------------


def verdict_counts_sentence(verdict: pd.DataFrame) -> str:
    """How many cells each call went to, as the opening line of the verdict."""
    if verdict.empty:
        return "No finished runs with a test accuracy yet, so there is no verdict."
    calls = verdict["call"]
    counts = {
        call: int((calls == call).sum())
        for call in (CALL_TRANSFER, CALL_SCRATCH, CALL_EQUIVALENT, CALL_INCONCLUSIVE)
    }
    rest = len(verdict) - sum(counts.values())
    return (
        f"Across {plural(len(verdict), 'backbone × dataset × size cell')}: transfer wins in "
        f"{counts[CALL_TRANSFER]}, scratch wins in {counts[CALL_SCRATCH]}, the two are equivalent in "
        f"{counts[CALL_EQUIVALENT]}, {counts[CALL_INCONCLUSIVE]} are inconclusive because a compared run "
        f"is flagged or the arm that would lose is still at the edge of its grid, and {rest} show no clear "
        "difference or lack the seeds to tell."
    )


def crossover_sentence(name: str, sizes: list[str], crossover: str | None, low: str | None, high: str | None) -> str:
    """Where scratch catches up with transfer on one backbone and dataset, with its bootstrap interval."""
    if not sizes:
        return f"{name}: no size has both scratch and a transfer arm on a shared seed."
    if crossover is None:
        text = f"{name}: transfer stays ahead at every size up to {size_text(sizes[-1])}."
    elif crossover == sizes[-1] and len(sizes) > 1:
        text = f"{name}: scratch catches up only at the largest size, {crossover}."
    elif crossover == sizes[0]:
        text = f"{name}: scratch matches or beats transfer at every size from {size_text(crossover)}."
    else:
        where = f"size {crossover}" + ("" if crossover == "all" else f" ({size_text(crossover)})")
        text = f"{name}: scratch catches up at {where} and stays level or ahead at every larger size."
    top = "beyond the largest size compared"
    return text + (
        f" {LEVEL:.0%} bootstrap interval over seeds: {low if low is not None else top} to "
        f"{high if high is not None else top}."
    )


def across_sentence(backbone: str, arm: str, n_cells: int, point: float, low: float, high: float) -> str:
    """A backbone and arm's IQM gain over scratch across dataset x size cells."""
    if not n_cells:
        return f"{backbone}, {arm}: no unflagged cell shares a seed with scratch."
    return (
        f"{backbone}, {arm}: IQM gain over scratch {pts(point)} across {n_cells} dataset × size cells "
        f"({LEVEL:.0%} stratified bootstrap {low * 100:+.1f} to {high * 100:+.1f} pts)."
    )


def logme_too_few_sentence(dataset: str, n: int, needed: int) -> str:
    """Why a dataset's LogME ranking is not assessed: too few backbone x weights scored."""
    return (
        f"{dataset}: only {n} backbone × weights with a LogME score; at least "
        f"{needed} are needed, so the ranking cannot be assessed."
    )


def logme_tied_sentence(dataset: str, n: int) -> str:
    """Why a dataset's LogME ranking is not assessed: nothing to rank."""
    return (
        f"{dataset}: the {n} backbone × weights all tie on LogME or on measured accuracy, so "
        "the ranking cannot be assessed."
    )


def logme_sentence(dataset: str, n: int, tau: float, p: float) -> str:
    """How well LogME ranks a dataset's backbone x weights by their measured accuracy."""
    return (
        f"{dataset}: Kendall tau {tau:+.2f} between LogME and the best transfer test accuracy "
        f"over {n} backbone × weights (p = {p_text(p)}); +1 would mean LogME ranks them exactly."
    )
