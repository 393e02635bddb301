"""What a paired comparison's seeds can detect: the power of the paired t test, from the noncentral t.

Pure numpy and scipy on plain numbers. Differences and spreads are fractions, as everywhere in
the verdict; nothing here knows about points.
"""

from __future__ import annotations

import math

from scipy import optimize
from scipy import stats as sps

from bench.report.rules import ALPHA
from bench.report.stats import TIE_EPS

# The conventional target: a design that misses a real effect one time in five.
POWER = 0.80

# Beyond this many paired seeds a benchmark has stopped being a benchmark; "more than this" is the answer.
MAX_SEEDS_NEEDED = 1000


def t_power(effect_sd: float, n: int, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test at level ``alpha`` when the true mean is ``effect_sd`` spreads.

    Under the alternative the statistic is noncentral t with n - 1 degrees of freedom and
    noncentrality effect_sd * sqrt(n); both tails count, as a call either way needs them.
    """
    if n < 2:
        return math.nan
    df = n - 1
    crit = sps.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect_sd) * math.sqrt(n)
    # scipy's series fail (NaN) only far into a tail: the far tail is then below 1e-8 and counts as
    # nothing, and the near one is all or nothing.
    far = float(sps.nct.cdf(-crit, df, nc))
    near = float(sps.nct.sf(crit, df, nc))
    if not math.isfinite(near):
        near = 1.0 if nc > crit else 0.0
    return near + (far if math.isfinite(far) else 0.0)


def min_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference the paired t test finds with ``power`` at ``n`` pairs and spread ``sd``.

    NaN below two pairs or without a spread; 0 when the differences do not vary at all.
    """
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return math.nan
    if sd <= TIE_EPS:
        return 0.0
    # Power grows with the effect; at 50 spreads it is 1 for any n >= 2, so the root is bracketed.
    effect_sd = optimize.brentq(lambda d: t_power(d, n, alpha=alpha) - power, 0.0, 50.0, xtol=1e-10)
    return effect_sd * sd


def seeds_needed(mean: float, sd: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Paired seeds the t test needs to find ``mean`` with ``power`` at spread ``sd``, were ``mean`` the truth.

    NaN without a spread or a mean; inf for a mean of zero or beyond ``MAX_SEEDS_NEEDED`` seeds.
    """
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd < 0:
        return math.nan
    if mean == 0:
        return math.inf
    if sd <= TIE_EPS:  # equal accuracies differ by float noise at most: no spread at all
        return 2.0
    effect_sd = abs(mean) / sd
    if t_power(effect_sd, MAX_SEEDS_NEEDED, alpha=alpha) < power:
        return math.inf
    low, high = 2, MAX_SEEDS_NEEDED  # power rises with n: bisect for the first n that reaches it
    while low < high:
        mid = (low + high) // 2
        if t_power(effect_sd, mid, alpha=alpha) >= power:
            high = mid
        else:
            low = mid + 1
    return float(low)


def power_columns(n: int, mean: float, sd: float) -> dict:
    """The verdict's ``mde`` and ``seeds_needed`` for one comparison."""
    return {"mde": min_detectable_effect(sd, n), "seeds_needed": seeds_needed(mean, sd) if n >= 2 else math.nan}
