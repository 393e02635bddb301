"""Small-sample statistics for paired comparisons, learning curves and LogME, in numpy and scipy.

Every function here is pure and works on plain arrays; the verdict modules turn results frames into
the arrays. Accuracies and their differences are fractions; nothing here knows about points.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from bench.training.logme import logme  # noqa: F401  (the report's statistics, in one namespace)

LEVEL = 0.95

# Paired differences closer to zero than this count as ties. Test accuracies are multiples of
# 1/n_test, so two genuinely equal runs differ by exactly 0; the epsilon only absorbs float noise.
TIE_EPS = 1e-9

# Up to 2^16 = 65,536 sign patterns the permutation distribution is enumerated exactly in a
# fraction of a second; beyond that a Monte Carlo sample is as good and far cheaper.
MAX_EXACT_FLIPS = 16
# 20,000 random sign patterns put the Monte Carlo error of a p-value near 0.05 at about 0.0015.
N_FLIP_DRAWS = 20_000
FLIP_SEED = 20240601

METHOD_T = "Student t"
METHOD_WILSON = "Wilson score"
METHOD_EXACT_FLIP = "exact sign-flip permutation"
METHOD_MC_FLIP = "Monte Carlo sign-flip permutation"

# Bootstrap draws for crossovers, scratch-equivalent sizes and the across-dataset IQM: 2,000
# puts the Monte Carlo error of a 2.5% quantile well below the seed-to-seed spread it measures,
# and keeps a report of dozens of cells under a second.
N_BOOT = 2_000
BOOT_SEED = 20240601

METHOD_BOOT = "percentile bootstrap over seeds"
METHOD_STRATIFIED = "stratified percentile bootstrap (seeds resampled within each cell)"

# Test error is floored here before taking logs so a scratch curve that reaches 100% accuracy
# still inverts; one error in 10,000 images is below what any test set here can resolve.
ERROR_FLOOR = 1e-4


# -- paired differences -----------------------------------------------------------------------


def t_interval(diffs: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Student-t interval of the mean over the last axis; NaN with fewer than two values.

    Exact for normal differences at any n, which is what the few seeds of a benchmark need; a
    bootstrap at n = 3 to 10 undercovers because it cannot see past the observed range.
    """
    values = np.asarray(diffs, dtype=float)
    n = values.shape[-1]
    if n < 2:
        nan = np.full(values.shape[:-1], math.nan)
        return (float(nan), float(nan)) if nan.ndim == 0 else (nan, nan.copy())
    mean = values.mean(axis=-1)
    half = sps.t.ppf(0.5 + level / 2.0, n - 1) * values.std(axis=-1, ddof=1) / math.sqrt(n)
    low, high = mean - half, mean + half
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def _all_signs(n: int) -> np.ndarray:
    # Only the sizes the default enumerates are kept: a larger table is 2^n rows and a one-off.
    return _cached_signs(n) if n <= MAX_EXACT_FLIPS else _sign_table(n)


@lru_cache(maxsize=MAX_EXACT_FLIPS + 1)
def _cached_signs(n: int) -> np.ndarray:
    return _sign_table(n)


def _sign_table(n: int) -> np.ndarray:
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    bits = (codes >> np.arange(n, dtype=np.int64)) & 1
    signs = 1.0 - 2.0 * bits
    signs.flags.writeable = False
    return signs


def sign_flip_pvalue(
    diffs: np.ndarray, *, max_exact: int = MAX_EXACT_FLIPS, n_draws: int = N_FLIP_DRAWS, seed: int = FLIP_SEED
) -> tuple[float, str]:
    """Two-sided sign-flip permutation p-value of the mean paired difference, and its method.

    Under the null of no difference each paired difference is as likely negative as positive, so
    the p-value is the share of sign patterns whose |mean| reaches the observed one: all 2^n of
    them for n <= ``max_exact``, a Monte Carlo sample (counting the observed pattern) beyond.
    NaN for no pairs.
    """
    values = np.asarray(diffs, dtype=float)
    n = values.size
    if n == 0:
        return math.nan, ""
    observed = abs(values.sum())
    # Sums of the same numbers in another order differ by float rounding; that must not decide.
    slack = 1e-12 * max(1.0, float(np.abs(values).sum()))
    if n <= max_exact:
        sums = np.abs(_all_signs(n) @ values)
        return float((sums >= observed - slack).mean()), METHOD_EXACT_FLIP
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_draws, n))
    hits = int((np.abs(signs @ values) >= observed - slack).sum())
    return (hits + 1) / (n_draws + 1), METHOD_MC_FLIP


def prob_improvement(diffs: np.ndarray) -> float:
    """P(transfer > scratch) over paired seeds, ties counting one half (rliable's convention)."""
    values = np.asarray(diffs, dtype=float)
    if values.size == 0:
        return math.nan
    wins = (values > TIE_EPS).sum()
    ties = (np.abs(values) <= TIE_EPS).sum()
    return float((wins + 0.5 * ties) / values.size)


def wilson_interval(successes: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion; stays inside [0, 1] and is not degenerate at 0/n or n/n."""
    if n <= 0:
        return math.nan, math.nan
    z = sps.norm.ppf(0.5 + level / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries stay NaN and don't count."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    if m == 0:
        return adjusted
    order = present[np.argsort(p[present], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


# -- aggregates across cells ------------------------------------------------------------------


def keyed_rng(*key: object) -> np.random.Generator:
    """A bootstrap generator seeded from names, so a cell's numbers do not change when other cells are added."""
    return np.random.default_rng([BOOT_SEED, zlib.crc32("|".join(map(str, key)).encode())])


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle half, trimming floor(n/4) from each end (as rliable)."""
    data = np.asarray(values, dtype=float)
    if data.shape[axis] == 0:
        return math.nan
    # trim_mean cuts int(0.25 * n) from each end, the same floor(n/4) that rliable trims.
    result = sps.trim_mean(data, 0.25, axis=axis)
    return float(result) if np.ndim(result) == 0 else result


def stratified_bootstrap_means(
    groups: list[np.ndarray], *, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, n_groups) means of each group resampled with replacement within itself."""
    out = np.empty((n_boot, len(groups)))
    for j, group in enumerate(groups):
        values = np.asarray(group, dtype=float)
        picks = rng.integers(0, values.size, size=(n_boot, values.size))
        out[:, j] = values[picks].mean(axis=1)
    return out


def iqm_interval(
    groups: list[np.ndarray], *, n_boot: int, seed: int, level: float = LEVEL
) -> tuple[float, float, float]:
    """IQM of the group means with a stratified percentile bootstrap interval (seeds resampled within each group)."""
    groups = [np.asarray(g, dtype=float) for g in groups if np.asarray(g).size]
    if not groups:
        return math.nan, math.nan, math.nan
    point = iqm(np.array([g.mean() for g in groups]))
    boots = iqm(stratified_bootstrap_means(groups, n_boot=n_boot, rng=np.random.default_rng(seed)), axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    return float(point), float(low), float(high)


# -- learning curves --------------------------------------------------------------------------


def isotonic_increasing(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-decreasing fit over the last axis, batched over leading axes.

    Uses the max-min formula (fit_i = max over j <= i of min over k >= i of the weighted mean of
    values j..k): O(K^2) per curve, but vectorised, which beats pooling adjacent violators in a
    Python loop for the handful of sizes a learning curve has and the thousands of bootstrap draws.
    """
    y = np.asarray(values, dtype=float)
    w = np.ones(y.shape[-1]) if weights is None else np.asarray(weights, dtype=float)
    w = np.broadcast_to(w, y.shape)
    k = y.shape[-1]
    zero = np.zeros(y.shape[:-1] + (1,))
    wy = np.concatenate([zero, np.cumsum(w * y, axis=-1)], axis=-1)
    ww = np.concatenate([zero, np.cumsum(w, axis=-1)], axis=-1)
    fit = np.empty_like(y)
    for i in range(k):
        # means[..., j, m] is the weighted mean of values j..(i + m) for j <= i.
        num = wy[..., None, i + 1:] - wy[..., : i + 1, None]
        den = ww[..., None, i + 1:] - ww[..., : i + 1, None]
        fit[..., i] = (num / den).min(axis=-1).max(axis=-1)
    return fit


BELOW = "below"
BEYOND = "beyond"


def log_equivalent_size(
    sizes: np.ndarray, accuracies: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Log of the training-set size at which a measured curve reaches each target accuracy.

    Batched: ``accuracies`` is (..., K) over the K ``sizes`` and ``targets`` is (..., T) with the
    same leading axes. The curve is made monotone (isotonic in accuracy, so noise cannot make it
    reach one accuracy twice) and its test error is interpolated as a power law between measured
    sizes, log error linear in log size, so a curve that follows a power law is recovered
    exactly. Nothing is extrapolated: a target above the largest size's fitted accuracy gives
    +inf, one below the smallest size's gives -inf, a NaN target gives NaN.
    """
    n = np.asarray(sizes, dtype=float)
    order = np.argsort(n, kind="stable")
    log_n = np.log(n[order])
    acc = np.asarray(accuracies, dtype=float)[..., order]
    fit = isotonic_increasing(acc, None if weights is None else np.asarray(weights, dtype=float)[order])
    log_err = np.log(np.maximum(1.0 - fit, ERROR_FLOOR))[..., None, :]  # (..., 1, K)
    t = np.asarray(targets, dtype=float)
    log_t = np.log(np.maximum(1.0 - t, ERROR_FLOOR))[..., None]  # (..., T, 1)
    reached = log_err <= log_t + TIE_EPS  # (..., T, K); monotone along K
    i = np.argmax(reached, axis=-1)
    prev = np.maximum(i - 1, 0)
    err_i = np.take_along_axis(np.broadcast_to(log_err, reached.shape), i[..., None], axis=-1)[..., 0]
    err_p = np.take_along_axis(np.broadcast_to(log_err, reached.shape), prev[..., None], axis=-1)[..., 0]
    span = err_p - err_i
    target = log_t[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, (err_p - target) / span, 1.0)
    result = log_n[prev] + frac * (log_n[i] - log_n[prev])
    result = np.where(i == 0, log_n[0], result)
    result = np.where(~reached.any(axis=-1), np.inf, result)
    result = np.where(target > log_err[..., 0, 0:1] + TIE_EPS, -np.inf, result)
    return np.where(np.isnan(t), np.nan, result)


def equivalent_size(
    sizes: np.ndarray, accuracies: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sizes at which one measured curve reaches each target, and a status per target.

    Status is "" inside the measured range, ``BELOW`` under the smallest size's accuracy and
    ``BEYOND`` over the largest's (size NaN for both); see ``log_equivalent_size``.
    """
    logs = np.atleast_1d(log_equivalent_size(sizes, accuracies, np.atleast_1d(targets), weights))
    status = np.where(logs == np.inf, BEYOND, np.where(logs == -np.inf, BELOW, "")).astype(object)
    return np.where(np.isfinite(logs), np.exp(logs), np.nan), status


