"""Scratch-equivalent data on constructed learning curves whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from tests.report_fixtures import frame_of, run_rows

from bench.report.equivalent import scratch_equivalents
from bench.report.verdict import verdicts

# -- scratch-equivalent data ---------------------------------------------------------------------

CLASSES = 10
PER_CLASS = (10, 20, 40, 80, 160)


def _power_law(n: float) -> float:
    # Scratch test error falling as a power law of the training images.
    return 1.0 - 2.0 * n**-0.5


def _scratch_curve() -> list[dict]:
    rows = []
    for size in PER_CLASS:
        acc = _power_law(size * CLASSES)
        rows += run_rows({"scratch": [acc] * 3}, size=str(size), n_train=size * CLASSES)
    return rows


def test_scratch_equivalent_recovers_a_power_law_ratio() -> None:
    # full at 20/class (200 images) is as accurate as scratch would be at 860 images: 4.3x.
    target = _power_law(860)
    frame = frame_of(_scratch_curve(), run_rows({"full": [target] * 3}, size="20", n_train=200))
    table = scratch_equivalents(frame)
    row = table.iloc[0]
    assert row["scratch_equivalent_n"] == pytest.approx(860)
    assert row["scratch_equivalent_ratio"] == pytest.approx(4.3)
    assert row["scratch_equivalent_low"] == pytest.approx(860) == row["scratch_equivalent_high"]
    assert row["scratch_equivalent_status"] == ""
    assert "about 86/class (4.3x the data" in row["summary"]
    verdict = verdicts(frame).set_index("size").loc["20"]
    assert verdict["scratch_equivalent_n"] == pytest.approx(860)
    assert verdict["scratch_equivalent_ratio"] == pytest.approx(4.3)
    assert "Scratch-equivalent data: it matches scratch trained on about 86/class" in verdict["summary"]


def test_scratch_equivalent_never_extrapolates() -> None:
    frame = frame_of(
        _scratch_curve(),
        run_rows({"full": [0.99] * 3}, size="20", n_train=200),  # above scratch's best (0.95)
        run_rows({"frozen": [0.10] * 3}, size="10", n_train=100),  # below scratch at 10/class (0.80)
    )
    table = scratch_equivalents(frame).set_index("strategy_label")
    assert table.loc["full", "scratch_equivalent_status"] == "beyond"
    assert math.isnan(table.loc["full", "scratch_equivalent_n"])
    assert "beyond what scratch reached at the largest size measured" in table.loc["full", "summary"]
    assert table.loc["frozen", "scratch_equivalent_status"] == "below"
    assert "below what scratch reached at the smallest size measured" in table.loc["frozen", "summary"]


def test_scratch_equivalent_interval_brackets_noisy_seeds() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for size in PER_CLASS:
        accs = _power_law(size * CLASSES) + rng.normal(0, 0.01, 4)
        rows += run_rows({"scratch": list(accs)}, size=str(size), n_train=size * CLASSES)
    frame = frame_of(rows, run_rows({"full": list(_power_law(860) + rng.normal(0, 0.01, 4))}, size="20", n_train=200))
    row = scratch_equivalents(frame).iloc[0]
    assert row["scratch_equivalent_low"] < row["scratch_equivalent_n"] < row["scratch_equivalent_high"]


def test_scratch_equivalent_needs_training_sizes() -> None:
    frame = frame_of(run_rows({"scratch": [0.5] * 3, "full": [0.6] * 3}))  # n_train 0: unknown
    assert scratch_equivalents(frame).empty
    assert pd.isna(verdicts(frame).iloc[0]["scratch_equivalent_n"])
