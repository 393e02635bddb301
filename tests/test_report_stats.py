"""The small-sample statistics under the verdict, against known answers and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from bench.report.stats import (
    BELOW,
    BEYOND,
    METHOD_EXACT_FLIP,
    METHOD_MC_FLIP,
    equivalent_size,
    holm,
    iqm,
    iqm_interval,
    isotonic_increasing,
    logme,
    prob_improvement,
    sign_flip_pvalue,
    t_interval,
    wilson_interval,
)

# -- intervals -----------------------------------------------------------------------------------


def test_t_interval_matches_scipy() -> None:
    diffs = np.array([0.03, 0.01, 0.05, 0.02])
    expected = sps.t.interval(0.95, 3, loc=diffs.mean(), scale=sps.sem(diffs))
    assert t_interval(diffs) == pytest.approx(expected)
    assert all(math.isnan(v) for v in t_interval(np.array([0.3])))
    assert all(math.isnan(v) for v in t_interval(np.array([])))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_mean_at_nominal_rate(n: int) -> None:
    # 2,000 simulated cells of n paired normal differences with a known mean; the binomial
    # standard error of the coverage is about 0.005, so 93-97% is four of them either side.
    true_diff, cells = 0.03, 2_000
    rng = np.random.default_rng(1000 + n)
    diffs = true_diff + rng.normal(0, 0.02, size=(cells, n))
    low, high = t_interval(diffs)
    coverage = float(((low <= true_diff) & (true_diff <= high)).mean())
    assert 0.93 <= coverage <= 0.97, coverage


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_probability_of_improvement_counts_ties_half() -> None:
    assert prob_improvement(np.array([0.1, 0.0, -0.1, 0.2])) == pytest.approx(2.5 / 4)
    assert prob_improvement(np.array([-0.1, -0.2])) == 0.0
    assert math.isnan(prob_improvement(np.array([])))


# -- permutation p-values ------------------------------------------------------------------------


def test_sign_flip_three_positive_pairs_is_exactly_a_quarter() -> None:
    # Of the 8 sign patterns only all-plus and all-minus reach |mean| = observed: 2/8.
    p, method = sign_flip_pvalue(np.array([0.01, 0.02, 0.03]))
    assert p == 0.25 and method == METHOD_EXACT_FLIP
    assert sign_flip_pvalue(np.array([0.3, 0.1, 0.2, 0.4, 0.5]))[0] == pytest.approx(2 / 32)


def test_sign_flip_matches_brute_force() -> None:
    diffs = np.array([0.05, -0.01, 0.03, 0.02, -0.04, 0.06])
    observed = abs(diffs.sum())
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12
        for signs in itertools.product((1, -1), repeat=diffs.size)
    )
    assert sign_flip_pvalue(diffs)[0] == pytest.approx(hits / 2**diffs.size)


def test_sign_flip_edge_cases() -> None:
    assert sign_flip_pvalue(np.zeros(4))[0] == 1.0
    assert sign_flip_pvalue(np.array([1.0, -1.0]))[0] == 1.0
    assert math.isnan(sign_flip_pvalue(np.array([]))[0])


def test_sign_flip_goes_monte_carlo_beyond_sixteen_pairs() -> None:
    diffs = np.linspace(0.01, 0.02, 20)
    p, method = sign_flip_pvalue(diffs)
    assert method == METHOD_MC_FLIP
    assert 0 < p < 0.001
    assert sign_flip_pvalue(diffs) == (p, method)  # seeded: the same every time
    noisy = np.random.default_rng(2).normal(0, 1, 17)
    exact = sign_flip_pvalue(noisy, max_exact=17)[0]
    assert sign_flip_pvalue(noisy)[0] == pytest.approx(exact, abs=0.01)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.001, 1), min_size=1, max_size=12))
def test_all_one_sign_gives_the_smallest_possible_p(values: list[float]) -> None:
    diffs = np.array(values)
    assert sign_flip_pvalue(diffs)[0] == pytest.approx(2 / 2**diffs.size)
    assert sign_flip_pvalue(-diffs)[0] == pytest.approx(2 / 2**diffs.size)


# -- Holm --------------------------------------------------------------------------------------


def test_holm_on_known_p_values() -> None:
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; the running maximum keeps 0.06.
    assert holm(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    assert holm(np.array([0.5, 0.6])) == pytest.approx([1.0, 1.0])
    adjusted = holm(np.array([0.02, np.nan, 0.01]))
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.02]) and math.isnan(adjusted[1])
    assert holm(np.array([0.2])) == pytest.approx([0.2])


# -- IQM ------------------------------------------------------------------------------------------


def test_iqm_on_known_values() -> None:
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([1.0, 2.0, 30.0])) == pytest.approx(11.0)  # under four values nothing is trimmed
    values = np.random.default_rng(0).normal(size=37)
    assert iqm(values) == pytest.approx(sps.trim_mean(values, 0.25))
    batch = np.random.default_rng(1).normal(size=(5, 12))
    assert iqm(batch, axis=1) == pytest.approx([sps.trim_mean(row, 0.25) for row in batch])


def test_iqm_interval_is_stratified_over_groups() -> None:
    constant = [np.full(3, g) for g in (0.1, 0.2, 0.3, 0.4)]
    assert iqm_interval(constant, n_boot=200, seed=0) == pytest.approx((0.25, 0.25, 0.25))
    rng = np.random.default_rng(4)
    noisy = [rng.normal(g, 0.05, 5) for g in (0.1, 0.2, 0.3, 0.4, 0.5)]
    point, low, high = iqm_interval(noisy, n_boot=500, seed=0)
    assert low < point < high
    assert all(math.isnan(v) for v in iqm_interval([], n_boot=10, seed=0))


# -- learning curves -----------------------------------------------------------------------------


def test_isotonic_pools_adjacent_violators() -> None:
    assert isotonic_increasing(np.array([1, 3, 2, 4, 0.5])) == pytest.approx([1, 2.375, 2.375, 2.375, 2.375])
    assert isotonic_increasing(np.array([1.0, 3.0, 2.0]), np.array([1, 1, 3])) == pytest.approx([1, 2.25, 2.25])
    batch = isotonic_increasing(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    np.testing.assert_allclose(batch, [[1, 2, 3], [2, 2, 2]])


def test_equivalent_size_recovers_a_power_law() -> None:
    n = np.array([100, 200, 400, 800, 1600.0])
    acc = 1.0 - 2.0 * n**-0.5
    found, status = equivalent_size(n, acc, 1.0 - 2.0 * np.array([150, 860, 100, 1600.0]) ** -0.5)
    assert found == pytest.approx([150, 860, 100, 1600])
    assert list(status) == ["", "", "", ""]


def test_equivalent_size_never_extrapolates() -> None:
    n = np.array([100, 200, 400.0])
    found, status = equivalent_size(n, np.array([0.5, 0.6, 0.7]), np.array([0.95, 0.2, 0.65]))
    assert list(status) == [BEYOND, BELOW, ""]
    assert math.isnan(found[0]) and math.isnan(found[1])
    assert 200 < found[2] < 400


def test_equivalent_size_on_a_noisy_curve_is_monotone() -> None:
    # A dip at 400 is pooled away: each target is reached once, at the smallest size that reaches it.
    n = np.array([100, 200, 400, 800.0])
    found, _ = equivalent_size(n, np.array([0.5, 0.7, 0.6, 0.8]), np.array([0.55, 0.62, 0.66, 0.7]))
    assert np.all(np.diff(found) >= 0)


# -- LogME -----------------------------------------------------------------------------------------


def _reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """The published per-class fixed point, transcribed with its d x d eigendecomposition."""
    n, d = f.shape
    _, s, vh = np.linalg.svd(f.T @ f)
    v = vh.T
    out = []
    for c in np.unique(y):
        t = (y == c).astype(float)
        alpha, beta = 1.0, 1.0
        proj = vh @ (f.T @ t)
        for _ in range(11):
            lam = alpha / beta
            gamma = (s / (s + lam)).sum()
            m = v @ (proj * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + 1e-5)
            beta_de = ((t - f @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + 1e-5)
            if abs(alpha / beta - lam) / lam < 0.01:
                break
        evidence = (
            d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * s).sum()
            - beta / 2 * (beta_de + 1e-5) - alpha / 2 * (alpha_de + 1e-5) - n / 2 * np.log(2 * np.pi)
        )
        out.append(evidence / n)
    return float(np.mean(out))


@pytest.mark.parametrize(("n", "d"), [(80, 6), (40, 90)])
def test_logme_matches_the_published_algorithm(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    labels = rng.integers(0, 4, n)
    features = rng.normal(size=(n, d))
    features[:, :3] += labels[:, None]
    assert logme(features, labels) == pytest.approx(_reference_logme(features, labels), rel=1e-6)


def test_logme_prefers_features_that_separate_the_classes() -> None:
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(5), 40)
    centres = rng.normal(0, 3, size=(5, 16))
    separable = centres[labels] + rng.normal(0, 0.5, size=(200, 16))
    random = rng.normal(0, 3, size=(200, 16))
    assert logme(separable, labels) > logme(random, labels)
    # Labels are names, not positions: any class ids give the same score.
    assert logme(separable, np.array(list("abcde"))[labels]) == pytest.approx(logme(separable, labels))


def test_logme_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        logme(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        logme(np.zeros((5, 2)), np.zeros(4))
