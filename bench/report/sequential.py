"""Seeds added while a call is open: a group-sequential rule that keeps false calls at their nominal rate.

After the planned seeds a cell whose call is still open gets seeds in batches, up to a maximum,
and stops as soon as it is called. Looking again after every batch and stopping on the first
interval that excludes zero would call a win under no difference far more often than 2.5%; so
each look uses a *repeated confidence interval* (Jennison & Turnbull 1989, ch. 9 of their 2000
book): the boundaries of a two-sided group-sequential test on the paired t statistic whose error is
spent over the looks by a Lan-DeMets spending function, computed for the fixed look schedule
(planned seeds, then every batch up to the maximum). The intervals of all the looks together cover
the true difference with the verdict's level, so a call made at any of them, by the verdict's
usual rule (interval clear of zero and mean past the minimum effect, or interval inside the
equivalence band), is as safe as the fixed design's.

Everything here is a pure function of numbers; nothing knows about the store or the driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from bench.report.paired import classify
from bench.report.rules import (
    ALPHA,
    CALL_EQUIVALENT,
    CALL_INCONCLUSIVE,
    CALL_SCRATCH,
    CALL_TRANSFER,
    CALL_UNCLEAR,
    DEFAULT_SEED_BATCH,
    DEFAULT_SPENDING,
    SPENDING,
)
from bench.report.rules import SPENDING_OBRIEN_FLEMING as OBRIEN_FLEMING
from bench.report.rules import SPENDING_POCOCK as POCOCK

METHOD_REPEATED = "repeated t interval (group-sequential)"

STOP_DECIDED = "decided"
STOP_MAX = "maximum seeds reached"
STOP_OPEN = "open: more seeds to come"
STOP_NO_CALL = "no more seeds: the call is withheld for a reason seeds cannot change"

# Null sequences the boundaries are computed from: the Monte Carlo error of the total error they
# spend is about 0.0005, a tenth of a percent of a 5% level, in under a second.
BOUNDARY_DRAWS = 200_000
BOUNDARY_SEED = 20240601


def spent(t: float, kind: str, alpha: float = ALPHA) -> float:
    """Two-sided error spent by information fraction ``t`` (Lan & DeMets 1983; Kim & DeMets 1987)."""
    t = min(max(t, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if kind == POCOCK:
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    if kind == OBRIEN_FLEMING:
        return float(2.0 * sps.norm.sf(sps.norm.isf(alpha / 2.0) / math.sqrt(t)))
    raise ValueError(f"spending {kind!r}: expected one of {', '.join(SPENDING)}")


def look_schedule(planned: int, max_seeds: int, batch: int) -> tuple[int, ...]:
    """Paired seeds at each look: the planned count, then every batch up to (and always ending at) the maximum."""
    looks = [planned]
    while looks[-1] < max_seeds:
        looks.append(min(looks[-1] + batch, max_seeds))
    return tuple(looks)


@lru_cache(maxsize=16)
def t_boundaries(looks: tuple[int, ...], kind: str, alpha: float = ALPHA) -> tuple[float, ...]:
    """Two-sided boundaries |T_k| >= c_k on the paired t statistic that spend ``spent`` at each look.

    Under no difference the joint law of the looks' t statistics does not depend on the spread of
    normal differences, so it is simulated once, from a fixed seed, on standard normal sequences;
    each boundary is the quantile of |T_k| among the sequences not yet stopped that crosses with
    that look's increment of spending. Normal-theory boundaries carried to each look's t quantile
    are not enough: at 3 to 7 seeds the estimated spreads of successive looks move together, and
    they call about 2.8% per side instead of 2.5%.
    """
    rng = np.random.default_rng(BOUNDARY_SEED)
    sums = np.zeros(BOUNDARY_DRAWS)
    squares = np.zeros(BOUNDARY_DRAWS)
    alive = np.ones(BOUNDARY_DRAWS, dtype=bool)
    bounds, seen, before = [], 0, 0.0
    for n in looks:
        draws = rng.standard_normal((BOUNDARY_DRAWS, n - seen))
        sums += draws.sum(axis=1)
        squares += (draws**2).sum(axis=1)
        seen = n
        mean = sums / n
        sd = np.sqrt(np.maximum(squares - n * mean**2, 0.0) / (n - 1))
        stat = np.abs(mean) / sd * math.sqrt(n)
        now = spent(n / looks[-1], kind, alpha)
        crossings = int(round((now - before) * BOUNDARY_DRAWS))
        before = now
        candidates = np.sort(stat[alive])[::-1]
        if crossings <= 0 or candidates.size == 0:
            bounds.append(math.inf)
            continue
        bound = float(candidates[min(crossings, candidates.size) - 1])
        bounds.append(bound)
        alive &= stat < bound
    return tuple(bounds)


@dataclass(frozen=True)
class SeedDesign:
    """A suite's rule for adding seeds: planned seeds, the maximum, the batch and the spending function."""

    planned: int
    max_seeds: int
    batch: int = DEFAULT_SEED_BATCH
    spending: str = DEFAULT_SPENDING
    alpha: float = ALPHA

    @property
    def looks(self) -> tuple[int, ...]:
        return look_schedule(self.planned, self.max_seeds, self.batch)

    def look_of(self, n: int) -> int:
        """Which look ``n`` paired seeds belong to: the first scheduled at or above ``n`` (fewer when runs failed)."""
        looks = self.looks
        return next((k for k, at in enumerate(looks) if n <= at), len(looks) - 1)

    def multiplier(self, n: int) -> float:
        """The repeated interval's half-width in standard errors with ``n`` paired seeds."""
        if n < 2:
            return math.nan
        return t_boundaries(self.looks, self.spending, self.alpha)[self.look_of(n)]

    def interval(self, mean: float, sd: float, n: int) -> tuple[float, float]:
        half = self.multiplier(n) * sd / math.sqrt(n) if n >= 2 else math.nan
        return mean - half, mean + half

    def describe(self) -> str:
        kind = "Pocock-type" if self.spending == POCOCK else "O'Brien-Fleming-type"
        looks = ", ".join(map(str, self.looks))
        return (
            f"Seeds added where the call is open: after the {self.planned} planned seeds, a cell with no call gets "
            f"{self.batch} more seeds at a time, up to {self.max_seeds}, and stops at the first look where it is "
            f"called (looks at {looks} paired seeds). Looking again after every batch would inflate false calls, "
            f"so every look uses a repeated {1 - self.alpha:.0%} t interval (Jennison & Turnbull): the boundaries of "
            f"a two-sided group-sequential test on the paired t statistic with {kind} Lan-DeMets alpha spending over "
            f"that fixed schedule, computed from {BOUNDARY_DRAWS:,} simulated sequences of normal differences under "
            "no difference (the t statistic's law does not depend on their spread). Together the intervals of all "
            "looks cover the true difference at the stated level, so a call at any look, by the rule above, keeps "
            "false calls at their nominal rate; the interval shown for such a cell is its repeated interval. Each "
            "added seed runs every arm of the cell at the configuration its sweep chose; nothing is tuned again."
        )


def design_of(config: dict, planned: int) -> SeedDesign | None:
    """A stored suite's design for added seeds (its ``verdict`` settings), or None when it adds none."""
    verdict = config.get("verdict") if isinstance(config.get("verdict"), dict) else {}
    max_seeds = verdict.get("max_seeds")
    if not isinstance(max_seeds, int) or max_seeds <= 0 or planned <= 0:
        return None
    return SeedDesign(
        planned=planned, max_seeds=max(max_seeds, planned),
        batch=int(verdict.get("seed_batch") or DEFAULT_SEED_BATCH),
        spending=str(verdict.get("spending") or DEFAULT_SPENDING),
    )


def added_seeds(seeds: list[int], max_seeds: int | None) -> list[int]:
    """The seeds a sequential suite may add, in the order it adds them: the integers after its largest seed."""
    if not max_seeds or not seeds or max_seeds <= len(seeds):
        return []
    start = max(seeds) + 1
    return list(range(start, start + max_seeds - len(seeds)))


def sequential_interval(stats: dict, design: SeedDesign) -> dict:
    """``stats`` of a comparison with its interval replaced by the repeated interval of its look."""
    n = int(stats["n_pairs"])
    if n < 2:
        return stats
    low, high = design.interval(stats["mean_diff"], stats["sd_diff"], n)
    return {**stats, "ci_low": low, "ci_high": high, "ci_method": METHOD_REPEATED}


def stop_reason(call: str, n: int, design: SeedDesign) -> str:
    """Why a cell has the seeds it has under ``design``."""
    if call in (CALL_TRANSFER, CALL_SCRATCH, CALL_EQUIVALENT):
        return f"{STOP_DECIDED} at {n} seeds"
    if call == CALL_INCONCLUSIVE:
        return STOP_NO_CALL
    if n >= design.max_seeds:
        return STOP_MAX
    return STOP_OPEN


def open_call(call: str) -> bool:
    """Whether more seeds could still decide a cell with this call."""
    return call == CALL_UNCLEAR or call.startswith(CALL_UNCLEAR)


def run_sequentially(diffs: np.ndarray, design: SeedDesign, min_effect: float) -> tuple[list[str], np.ndarray]:
    """Each row of ``diffs`` (cells x max seeds) run through the design: its final call and the seeds it used.

    The call at each look is the verdict's own ``classify`` of that look's repeated interval.
    """
    values = np.asarray(diffs, dtype=float)
    looks = design.looks
    means = {n: values[:, :n].mean(axis=1) for n in looks}
    halves = {n: design.multiplier(n) * values[:, :n].std(axis=1, ddof=1) / math.sqrt(n) for n in looks}
    calls, used = [], np.empty(len(values), dtype=int)
    for i in range(len(values)):
        for n in looks:
            mean, half = float(means[n][i]), float(halves[n][i])
            call = classify(mean - half, mean + half, n, mean_diff=mean, min_effect=min_effect)
            if not open_call(call):
                break
        calls.append(call)
        used[i] = n
    return calls, used
