"""Summaries across cells on constructed frames: crossovers, the IQM across datasets, LogME ranking."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from tests.report_fixtures import frame_of, run_rows

from bench.report.across import across_datasets, cell_gains, crossovers, logme_models, logme_ranking

# -- crossover -----------------------------------------------------------------------------------


def _curve(diffs: dict[str, float], *, backbone: str = "cnn", seeds: int = 2) -> list[dict]:
    rows = []
    for size, diff in diffs.items():
        rows += run_rows(
            {"scratch": [0.6] * seeds, "full": [0.6 + diff] * seeds}, size=size, backbone=backbone
        )
    return rows


def test_crossover_where_scratch_catches_up_and_stays() -> None:
    table = crossovers(frame_of(_curve({"10": 0.2, "50": 0.05, "100": -0.01, "all": 0.0})))
    row = table.iloc[0]
    assert row["crossover_size"] == "100"
    # Seeds that agree exactly leave no doubt: the interval is the point.
    assert row["crossover_low"] == row["crossover_high"] == "100"
    assert "scratch catches up at size 100" in row["summary"]


def test_crossover_needs_scratch_to_stay_ahead() -> None:
    table = crossovers(frame_of(_curve({"10": 0.2, "50": -0.05, "100": 0.01, "all": -0.02})))
    assert table.iloc[0]["crossover_size"] == "all"


def test_no_crossover_when_transfer_stays_ahead() -> None:
    row = crossovers(frame_of(_curve({"10": 0.2, "50": 0.1, "all": 0.01}))).iloc[0]
    assert pd.isna(row["crossover_size"]) and pd.isna(row["crossover_high"])
    assert "transfer stays ahead" in row["summary"]


def test_crossover_at_smallest_size_when_scratch_always_level() -> None:
    row = crossovers(frame_of(_curve({"10": -0.1, "50": -0.1, "all": 0.0}))).iloc[0]
    assert row["crossover_size"] == "10"


def test_crossover_per_backbone_and_skips_sizes_without_scratch() -> None:
    frame = frame_of(
        _curve({"10": 0.2, "50": -0.1}, backbone="cnn"),
        _curve({"10": 0.2, "50": 0.1}, backbone="vit"),
        run_rows({"full": [0.1, 0.1]}, size="all", backbone="cnn"),  # no scratch here: not compared
    )
    table = crossovers(frame).set_index("backbone")
    assert table.loc["cnn", "crossover_size"] == "50"
    assert table.loc["cnn", "sizes_compared"] == "10, 50"
    assert pd.isna(table.loc["vit", "crossover_size"])


def test_crossover_interval_widens_with_seed_noise() -> None:
    # At 50/class transfer leads on average but one seed of three goes the other way, so some
    # bootstrap draws put the crossover at 50 and others beyond it.
    frame = frame_of(
        run_rows({"scratch": [0.5, 0.5, 0.5], "full": [0.7, 0.7, 0.7]}, size="10"),
        run_rows({"scratch": [0.7, 0.7, 0.7], "full": [0.73, 0.72, 0.66]}, size="50"),
        run_rows({"scratch": [0.8, 0.8, 0.8], "full": [0.79, 0.78, 0.80]}, size="all"),
    )
    row = crossovers(frame).iloc[0]
    assert row["crossover_size"] == "all"
    assert row["crossover_low"] == "50" and row["crossover_high"] == "all"
    assert row["crossover_method"] == "percentile bootstrap over seeds"


def test_crossover_follows_the_arm_chosen_on_validation() -> None:
    # frozen has the better test accuracy at 50/class but full is chosen on validation there.
    frame = frame_of(
        run_rows({"scratch": [0.5] * 3, "full": [0.7] * 3, "frozen": [0.6] * 3}, size="10"),
        run_rows(
            {"scratch": [0.8] * 3, "full": [0.75] * 3, "frozen": [0.9] * 3}, size="50",
            val={"full": [0.9] * 3, "frozen": [0.7] * 3},
        ),
    )
    assert crossovers(frame).iloc[0]["crossover_size"] == "50"


# -- across datasets -----------------------------------------------------------------------------


def test_iqm_across_cells_on_known_gains() -> None:
    gains = [-0.10, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.50]
    frame = frame_of(*(
        run_rows({"scratch": [0.4] * 3, "full": [0.4 + g] * 3}, dataset=f"d{i}") for i, g in enumerate(gains)
    ))
    row = across_datasets(frame).iloc[0]
    assert row["n_cells"] == 8
    assert row["iqm_gain"] == pytest.approx(np.mean([0.02, 0.03, 0.04, 0.05]))  # the middle half
    assert row["mean_gain"] == pytest.approx(np.mean(gains))
    assert row["frac_cells_better"] == pytest.approx(7 / 8)
    # Seeds that agree leave nothing to resample: the interval is the point.
    assert row["iqm_low"] == pytest.approx(row["iqm_gain"]) == row["iqm_high"]
    assert "stratified" in row["interval_method"]


def test_iqm_interval_and_flagged_cells() -> None:
    rng = np.random.default_rng(5)
    groups = [
        run_rows({"scratch": [0.5] * 4, "full": list(0.55 + rng.normal(0, 0.02, 4))}, dataset=f"d{i}", size=s)
        for i in range(3) for s in ("10", "50")
    ]
    flagged = run_rows({"scratch": [0.5] * 4, "full": [0.9] * 4}, dataset="bad", flags={"scratch": ["at_chance"] * 4})
    frame = frame_of(*groups, flagged)
    row = across_datasets(frame).iloc[0]
    assert (row["n_cells"], row["n_flagged_cells"]) == (6, 1)
    assert row["iqm_low"] < row["iqm_gain"] < row["iqm_high"]
    gains = cell_gains(frame)
    assert len(gains) == 6 and "bad" not in set(gains["dataset"])


def test_across_datasets_one_row_per_backbone_weights_strategy() -> None:
    frame = frame_of(
        run_rows({"scratch": [0.5] * 3, "full": [0.6] * 3, "frozen": [0.55] * 3}, backbone="a"),
        run_rows({"scratch": [0.5] * 3, "full": [0.7] * 3}, backbone="b", weights="hub"),
    )
    table = across_datasets(frame)
    assert list(zip(table["backbone"], table["weights"], table["strategy_label"])) == [
        ("a", "pretrain:shapes", "frozen"), ("a", "pretrain:shapes", "full"), ("b", "hub", "full"),
    ]


# -- LogME ranking ---------------------------------------------------------------------------------


def _logme_frame(backbones: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = []
    for backbone, (score, acc) in backbones.items():
        for size, offset in (("10", -0.2), ("all", 0.0)):
            part = run_rows({"scratch": [0.3] * 3, "frozen": [acc + offset - 0.05] * 3, "full": [acc + offset] * 3},
                            backbone=backbone, size=size)
            for row in part:
                # LogME at the largest size is the one that counts; the small size carries a decoy.
                row["logme"] = (score if size == "all" else -score) if row["strategy"] != "scratch" else math.nan
            rows += part
    return frame_of(rows)


def test_logme_ranking_agrees_when_order_matches() -> None:
    frame = _logme_frame({"a": (-0.9, 0.60), "b": (-0.5, 0.70), "c": (-0.1, 0.80)})
    models = logme_models(frame).set_index("backbone")
    assert (models["size"] == "all").all()
    assert models.loc["c", "logme"] == pytest.approx(-0.1)
    assert models.loc["c", "best_strategy"] == "full" and models.loc["c", "best_test_acc"] == pytest.approx(0.80)
    row = logme_ranking(frame).iloc[0]
    assert row["n_models"] == 3 and row["kendall_tau"] == pytest.approx(1.0)
    reversed_ = logme_ranking(_logme_frame({"a": (-0.1, 0.60), "b": (-0.5, 0.70), "c": (-0.9, 0.80)})).iloc[0]
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)


def test_logme_ranking_needs_three_backbones() -> None:
    row = logme_ranking(_logme_frame({"a": (-0.9, 0.60), "b": (-0.5, 0.70)})).iloc[0]
    assert math.isnan(row["kendall_tau"])
    assert "cannot be assessed" in row["summary"]
    assert logme_models(frame_of(run_rows({"scratch": [0.5], "full": [0.6]}))).empty
    ties = logme_ranking(_logme_frame({"a": (-0.9, 0.7), "b": (-0.5, 0.7), "c": (-0.1, 0.7)})).iloc[0]
    assert math.isnan(ties["kendall_tau"]) and "all tie" in ties["summary"]
