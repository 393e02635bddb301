"""The sequential rule for added seeds: its boundaries, its error rates and power by simulation, its calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.report.power import t_power
from bench.report.rules import CALL_SCRATCH, CALL_TRANSFER, CALL_UNCLEAR, DEFAULT_MIN_EFFECT
from bench.report.sequential import (
    OBRIEN_FLEMING,
    POCOCK,
    STOP_DECIDED,
    STOP_MAX,
    STOP_OPEN,
    SeedDesign,
    added_seeds,
    look_schedule,
    run_sequentially,
    spent,
    t_boundaries,
)
from bench.report.verdict import verdicts
from tests.report_fixtures import frame_of, run_rows

CELLS = 4000
SD = 0.03  # a 3-point spread of paired differences


def test_the_schedule_looks_at_the_planned_seeds_then_every_batch_and_ends_at_the_maximum() -> None:
    assert look_schedule(3, 20, 2) == (3, 5, 7, 9, 11, 13, 15, 17, 19, 20)
    assert look_schedule(5, 5, 2) == (5,)
    assert added_seeds([0, 1, 2], 6) == [3, 4, 5]
    assert added_seeds([7, 2], 2) == []


@pytest.mark.parametrize("kind", [POCOCK, OBRIEN_FLEMING])
def test_spending_reaches_the_whole_level_at_the_last_look(kind: str) -> None:
    assert spent(1.0, kind) == pytest.approx(0.05)
    assert 0 < spent(0.3, kind) < spent(0.6, kind) < 0.05


def test_a_single_look_has_the_fixed_t_boundary() -> None:
    # One look spends everything at once: the boundary is the t quantile, up to the simulation's error.
    assert t_boundaries((10,), POCOCK)[0] == pytest.approx(sps.t.ppf(0.975, 9), abs=0.02)
    bounds = t_boundaries(look_schedule(3, 20, 2), POCOCK)
    assert all(b > sps.t.ppf(0.975, n - 1) for b, n in zip(bounds, look_schedule(3, 20, 2)))


def _simulate(mean: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    design = SeedDesign(planned=3, max_seeds=20)
    diffs = np.random.default_rng(seed).normal(mean, SD, size=(CELLS, design.max_seeds))
    calls, used = run_sequentially(diffs, design, DEFAULT_MIN_EFFECT)
    return np.asarray(calls), used


def test_no_true_difference_is_called_either_way_at_most_at_the_nominal_rate() -> None:
    calls, used = _simulate(0.0, seed=11)
    slack = 2.6 * math.sqrt(0.025 * 0.975 / CELLS)  # one-sided 99.5% simulation error
    assert (calls == CALL_TRANSFER).mean() <= 0.025 + slack
    assert (calls == CALL_SCRATCH).mean() <= 0.025 + slack
    # Repeated looks without the boundaries would call about 10% per side; these must not be idle either.
    assert (calls == CALL_TRANSFER).mean() > 0.01
    assert used.max() == 20


def test_a_true_three_point_gain_is_called_with_fewer_seeds_than_a_fixed_design_of_equal_power() -> None:
    calls, used = _simulate(0.03, seed=12)
    power = (calls == CALL_TRANSFER).mean()
    assert power >= 0.80
    fixed = next(n for n in range(2, 100) if t_power(1.0, n) >= power)
    assert used.mean() < fixed


def test_the_verdict_under_a_design_uses_the_repeated_interval_and_says_why_a_cell_stopped() -> None:
    design = SeedDesign(planned=3, max_seeds=5)
    scratch = [0.50, 0.52, 0.51]
    clear = run_rows({"scratch": scratch, "full": [s + d for s, d in zip(scratch, (0.30, 0.31, 0.30))]})
    close = run_rows({"scratch": scratch, "full": [s + d for s, d in zip(scratch, (0.02, 0.04, 0.01))]})
    fixed = verdicts(frame_of(close)).iloc[0]
    row = verdicts(frame_of(clear), design=design).iloc[0]
    assert row["call"] == CALL_TRANSFER and row["stopped"] == f"{STOP_DECIDED} at 3 seeds"
    row = verdicts(frame_of(close), design=design).iloc[0]
    assert row["call"] == CALL_UNCLEAR and row["stopped"] == STOP_OPEN
    assert row["ci_high"] - row["ci_low"] > fixed["ci_high"] - fixed["ci_low"]
    assert verdicts(frame_of(close)).iloc[0]["stopped"] == ""
    five = run_rows({"scratch": scratch + [0.5, 0.5], "full": [s + d for s, d in zip(scratch + [0.5, 0.5],
                                                                                      (0.02, 0.04, 0.01, -0.03, 0.0))]})
    assert verdicts(frame_of(five), design=design).iloc[0]["stopped"] == STOP_MAX
