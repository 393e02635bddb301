"""What the seeds can detect: the paired t test's power against values computed another way."""

from __future__ import annotations

import math

import pytest
from scipy import integrate
from scipy import stats as sps

from bench.report.power import POWER, min_detectable_effect, seeds_needed, t_power
from bench.report.rules import CALL_UNCLEAR
from bench.report.verdict import verdicts
from bench.report.wording import detect_clause
from tests.report_fixtures import frame_of, run_rows


def _power_by_integration(effect_sd: float, n: int, alpha: float = 0.05) -> float:
    """The paired t test's power from its definition, T = (Z + d sqrt(n)) / sqrt(V / df), integrated over V."""
    df, nc = n - 1, effect_sd * math.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)

    def rejects(v: float) -> float:
        scale = math.sqrt(v / df)
        return (sps.norm.sf(crit * scale - nc) + sps.norm.cdf(-crit * scale - nc)) * sps.chi2.pdf(v, df)

    return integrate.quad(rejects, 0, math.inf, limit=200)[0]


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_min_detectable_effect_has_the_power_the_definition_gives(n: int) -> None:
    sd = 0.03
    mde = min_detectable_effect(sd, n)
    assert _power_by_integration(mde / sd, n) == pytest.approx(POWER, abs=5e-3)
    # Reaching 80% power a hundredth of a point earlier or later would show here.
    assert _power_by_integration((mde - 1e-4) / sd, n) < POWER < _power_by_integration((mde + 1e-4) / sd, n)


@pytest.mark.parametrize(("n", "effect_sd"), [(10, 0.9959), (20, 0.6604)])
def test_min_detectable_effect_matches_published_standardised_effects(n: int, effect_sd: float) -> None:
    # One-sample two-sided t at 5% and 80% power, as power tables (Cohen 1988; G*Power) give them.
    assert min_detectable_effect(1.0, n) == pytest.approx(effect_sd, abs=5e-3)
    assert round(min_detectable_effect(3.0, n), 2) == pytest.approx(round(3 * effect_sd, 2), abs=0.011)


def test_seeds_needed_is_the_first_n_with_the_power() -> None:
    n = seeds_needed(0.03, 0.03)  # a true gain of one spread
    assert n == 10
    assert _power_by_integration(1.0, 10) >= POWER > _power_by_integration(1.0, 9)
    assert t_power(1.0, 10) == pytest.approx(_power_by_integration(1.0, 10), abs=1e-6)
    assert seeds_needed(0.0, 0.03) == math.inf
    assert seeds_needed(1e-6, 0.03) == math.inf
    assert math.isnan(min_detectable_effect(0.03, 1))
    # Identical accuracies on every seed leave a spread of float noise: any gain is then certain.
    assert seeds_needed(-0.33, 2e-16) == 2 and min_detectable_effect(2e-16, 3) == 0.0
    assert seeds_needed(0.30, 0.001) == 2 and t_power(300.0, 3) == pytest.approx(1.0)


def test_an_open_cell_says_what_it_detects_and_what_a_call_would_need() -> None:
    scratch = [0.50, 0.52, 0.51]
    transfer = [0.52, 0.56, 0.52]  # +2, +4, +1 pts
    row = verdicts(frame_of(run_rows({"scratch": scratch, "full": transfer})), min_effect=0.01).iloc[0]
    assert row["call"] == CALL_UNCLEAR
    sd = float(pd_std([0.02, 0.04, 0.01]))
    assert row["mde"] == pytest.approx(min_detectable_effect(sd, 3))
    assert row["seeds_needed"] == seeds_needed(row["mean_diff"], sd)
    clause = detect_clause(row.to_dict())
    assert f"detects {row['mde'] * 100:.1f} pts or more with these 3 seeds" in clause
    assert f"about {row['seeds_needed']:.0f} seeds would decide a 2.3-point gain" in clause
    assert clause in row["summary"]


def pd_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
