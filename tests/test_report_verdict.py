"""The verdict's statistics on constructed frames whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.report_fixtures import frame_of, run_rows

from bench.report.across import across_datasets, cell_gains, crossovers, logme_models, logme_ranking
from bench.report.cells import flag_list
from bench.report.equivalent import scratch_equivalents
from bench.report.paired import (
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
    classify,
)
from bench.report.stats import TIE_EPS, t_interval
from bench.report.verdict import VERDICT_COLUMNS, arm_verdicts, verdicts
from bench.report.wording import describe_interval

SCRATCH = [0.50, 0.52, 0.51, 0.49, 0.50]


def _one(frame: pd.DataFrame, **kw) -> pd.Series:
    table = verdicts(frame, **kw)
    assert len(table) == 1
    return table.iloc[0]


def _plus(base: list[float], diffs: list[float]) -> list[float]:
    return [a + d for a, d in zip(base, diffs)]


# -- the headline call ---------------------------------------------------------------------------


def test_clear_win() -> None:
    transfer = _plus(SCRATCH, [0.20, 0.22, 0.19, 0.21, 0.18])
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "partial[k=2]": transfer})))
    assert row["call"] == CALL_TRANSFER
    assert row["best_strategy"] == "partial[k=2]"
    assert row["mean_diff"] == pytest.approx(0.20)
    assert 0.18 <= row["ci_low"] < 0.20 < row["ci_high"] <= 0.22
    assert row["ci_method"] == "Student t"
    assert row["p_value"] == pytest.approx(2 / 2**5) and row["p_method"] == "exact sign-flip permutation"
    assert row["prob_improvement"] == 1.0
    assert 0.5 < row["prob_improvement_low"] < row["prob_improvement_high"] == 1.0
    assert row["prob_improvement_method"] == "Wilson score"
    assert (row["wins"], row["ties"], row["losses"], row["n_pairs"]) == (5, 0, 0, 5)
    assert "transfer wins" in row["summary"] and "+20.0 pts" in row["summary"]
    assert "t interval" in row["summary"] and "sign-flip p = 0.062" in row["summary"]


def test_clear_loss() -> None:
    transfer = _plus(SCRATCH, [-0.05, -0.04, -0.06, -0.05, -0.05])
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "frozen": transfer})))
    assert row["call"] == CALL_SCRATCH
    assert row["mean_diff"] == pytest.approx(-0.05)
    assert row["ci_high"] < 0
    assert (row["wins"], row["ties"], row["losses"]) == (0, 0, 5)
    assert "scratch wins" in row["summary"] and "5.0 pts" in row["summary"]


def test_exact_tie_is_equivalent() -> None:
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "full": SCRATCH})))
    assert row["call"] == CALL_EQUIVALENT
    assert (row["wins"], row["ties"], row["losses"]) == (0, 5, 0)
    assert row["mean_diff"] == 0 and row["ci_low"] == row["ci_high"] == 0
    assert row["prob_improvement"] == 0.5  # ties count one half
    assert row["p_value"] == 1.0


def test_float_noise_counts_as_tie() -> None:
    transfer = [a + TIE_EPS / 10 for a in SCRATCH]
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "full": transfer})))
    assert row["ties"] == 5
    assert row["call"] == CALL_EQUIVALENT


def test_small_tight_difference_is_not_a_win() -> None:
    # +0.3 pts on every seed: the interval excludes zero by a mile, but it lies wholly inside the
    # ±1 point band, so the two are equivalent, not a transfer win.
    transfer = _plus(SCRATCH, [0.0030, 0.0031, 0.0029, 0.0030, 0.0030])
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "full": transfer})))
    assert row["ci_low"] > 0
    assert row["call"] == CALL_EQUIVALENT
    assert "transfer wins" not in row["summary"]


def test_difference_clear_of_zero_but_below_min_effect_is_unclear() -> None:
    # Mean +0.8 pts, interval about +0.2 to +1.4: clear of zero, neither a 1-point win nor
    # inside the ±1 band.
    transfer = _plus(SCRATCH, [0.002, 0.014, 0.008, 0.004, 0.012])
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "full": transfer})))
    assert 0 < row["ci_low"] < DEFAULT_MIN_EFFECT < row["ci_high"]
    assert row["call"] == CALL_UNCLEAR
    assert "below the 1.0 pts minimum effect" in row["summary"]
    # With a half-point minimum effect the same numbers are a win.
    assert _one(frame_of(run_rows({"scratch": SCRATCH, "full": transfer})), min_effect=0.005)["call"] == CALL_TRANSFER


def test_min_effect_is_recorded_and_raises_the_bar() -> None:
    transfer = _plus(SCRATCH, [0.030, 0.032, 0.029, 0.031, 0.028])
    frame = frame_of(run_rows({"scratch": SCRATCH, "full": transfer}))
    assert _one(frame)["call"] == CALL_TRANSFER
    row = _one(frame, min_effect=0.05)
    assert row["min_effect"] == 0.05
    # +3 pts, tightly: a win at a 1-point bar, within the noise band at a 5-point one.
    assert row["call"] == CALL_EQUIVALENT


def test_noisy_difference_is_unclear() -> None:
    transfer = _plus(SCRATCH, [0.02, -0.02, 0.01, -0.015, 0.005])
    row = _one(frame_of(run_rows({"scratch": SCRATCH, "full": transfer})))
    assert row["call"] == CALL_UNCLEAR
    assert row["ci_low"] < 0 < row["ci_high"]
    assert (row["wins"], row["ties"], row["losses"]) == (3, 0, 2)


def test_one_seed_has_no_interval() -> None:
    row = _one(frame_of(run_rows({"scratch": [0.5], "full": [0.9]})))
    assert row["n_pairs"] == 1
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["call"] == CALL_TOO_FEW
    assert row["mean_diff"] == pytest.approx(0.4)
    assert "no confidence interval" in row["summary"]
    assert describe_interval(row) == "none (one paired seed)"


def test_pairs_only_seeds_present_in_both() -> None:
    # scratch has seeds 0-2, transfer 1-3; the unmatched seeds carry extreme values that would
    # move any unpaired mean.
    scratch = run_rows({"scratch": [0.0, 0.50, 0.60]}, seeds=[0, 1, 2])
    transfer = run_rows({"full": [0.55, 0.70, 1.0]}, seeds=[1, 2, 3])
    row = _one(frame_of(scratch, transfer))
    assert row["n_pairs"] == 2
    assert row["mean_diff"] == pytest.approx(((0.55 - 0.50) + (0.70 - 0.60)) / 2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(np.array([0.05, 0.10])))
    # Two agreeing seeds are not evidence: the interval is shown, the call is withheld.
    assert row["call"] == CALL_TOO_FEW
    assert "at least 3 paired seeds" in row["summary"]


def test_no_shared_seed() -> None:
    row = _one(frame_of(run_rows({"scratch": [0.5, 0.5]}, seeds=[0, 1]), run_rows({"full": [0.9]}, seeds=[5])))
    assert row["n_pairs"] == 0
    assert row["call"] == CALL_TOO_FEW
    assert "shares no seed" in row["summary"]


# -- selection on validation ---------------------------------------------------------------------


def test_best_test_but_worse_validation_is_not_selected() -> None:
    frame = frame_of(run_rows(
        {"scratch": [0.50, 0.50, 0.50], "frozen": [0.90, 0.91, 0.92], "full": [0.60, 0.61, 0.62]},
        val={"frozen": [0.70, 0.70, 0.70], "full": [0.80, 0.80, 0.80]},
    ))
    row = _one(frame)
    assert (row["best_strategy"], row["selected_on"], row["n_candidates"]) == ("full", "validation", 2)
    assert row["best_val_mean"] == pytest.approx(0.80)
    # The test accuracies compared are those of the arm chosen on validation.
    assert row["transfer_mean"] == pytest.approx(0.61)
    assert row["mean_diff"] == pytest.approx(0.11)
    assert "chosen on validation from 2 arms" in row["summary"]


def test_best_strategy_is_highest_validation_mean_and_deterministic() -> None:
    frame = frame_of(run_rows({
        "scratch": [0.5, 0.5, 0.5],
        "frozen": [0.6, 0.6, 0.6],
        "partial[k=2]": [0.7, 0.8, 0.75],
        "full": [0.7, 0.8, 0.75],
    }))
    row = _one(frame)
    assert row["n_candidates"] == 3
    assert row["best_strategy"] == "full"  # equal means: first label in sort order
    assert _one(frame.iloc[::-1])["best_strategy"] == "full"
    assert row["transfer_mean"] == pytest.approx(0.75)


def test_no_validation_accuracy_means_no_choice() -> None:
    frame = frame_of(run_rows({"scratch": [0.5] * 3, "frozen": [0.6] * 3, "full": [0.9] * 3})).drop(columns="val_acc")
    row = _one(frame)
    assert row["call"] == CALL_NO_VALIDATION and row["best_strategy"] == ""
    assert "none can be chosen without looking at test results" in row["summary"]
    # A single arm needs no choosing.
    alone = frame_of(run_rows({"scratch": [0.5] * 3, "full": [0.9] * 3})).drop(columns="val_acc")
    assert (_one(alone)["best_strategy"], _one(alone)["selected_on"]) == ("full", "only arm")


def test_arm_without_validation_is_not_chosen_over_one_with_it() -> None:
    frame = frame_of(run_rows(
        {"scratch": [0.5] * 3, "frozen": [0.6] * 3, "full": [0.9] * 3},
        val={"frozen": [0.6] * 3, "full": [None] * 3},
    ))
    assert _one(frame)["best_strategy"] == "frozen"


def test_weights_are_separate_arms() -> None:
    frame = frame_of(
        run_rows({"scratch": [0.5, 0.5], "full": [0.6, 0.6]}, weights="hub"),
        run_rows({"full": [0.9, 0.9]}, weights="file:/x.pt"),
    )
    row = _one(frame)
    assert (row["best_strategy"], row["best_weights"]) == ("full", "file:/x.pt")
    assert row["n_candidates"] == 2


# -- health flags --------------------------------------------------------------------------------


def test_flagged_scratch_run_makes_the_cell_inconclusive() -> None:
    transfer = _plus(SCRATCH, [0.20, 0.22, 0.19, 0.21, 0.18])
    frame = frame_of(run_rows(
        {"scratch": SCRATCH, "full": transfer}, flags={"scratch": ["", "at_chance", "", "", ""]}
    ))
    row = _one(frame)
    assert row["call"] == CALL_INCONCLUSIVE
    assert "inconclusive: scratch seed 1 at_chance" in row["summary"]
    assert "transfer wins" not in row["summary"]


def test_flags_of_the_chosen_arm_count_and_others_do_not() -> None:
    transfer = _plus(SCRATCH, [0.20, 0.22, 0.19, 0.21, 0.18])
    chosen = frame_of(run_rows(
        {"scratch": SCRATCH, "full": transfer}, flags={"full": ["", "", "undertrained,at_chance", "", ""]}
    ))
    row = _one(chosen)
    assert row["call"] == CALL_INCONCLUSIVE
    assert row["flags"] == "full (pretrain:shapes) seed 2 undertrained; full (pretrain:shapes) seed 2 at_chance"
    # A flagged arm that validation did not choose leaves the headline alone.
    other = frame_of(run_rows(
        {"scratch": SCRATCH, "full": transfer, "frozen": SCRATCH},
        flags={"frozen": ["undertrained"] * 5},
    ))
    assert _one(other)["call"] == CALL_TRANSFER


@pytest.mark.parametrize("value", [None, math.nan, ""])
def test_missing_flags_mean_healthy(value) -> None:
    transfer = _plus(SCRATCH, [0.20, 0.22, 0.19, 0.21, 0.18])
    frame = frame_of(run_rows({"scratch": SCRATCH, "full": transfer}))
    frame["flags"] = pd.Series([value] * len(frame), dtype=object)
    assert _one(frame)["call"] == CALL_TRANSFER
    assert _one(frame.drop(columns="flags"))["call"] == CALL_TRANSFER
    assert flag_list(value) == []
    assert flag_list(" undertrained , at_chance,") == ["undertrained", "at_chance"]


# -- the table -----------------------------------------------------------------------------------


def test_failed_runs_are_ignored() -> None:
    frame = frame_of(run_rows({"scratch": [0.5, 0.5, 0.5], "full": [0.6, 0.6, 0.6]}))
    frame.loc[frame.index[-1], ["status", "test_acc"]] = ["failed", np.nan]
    assert _one(frame)["n_pairs"] == 2


def test_missing_arms_are_named() -> None:
    only_scratch = frame_of(run_rows({"scratch": [0.5, 0.6]}))
    only_transfer = frame_of(run_rows({"full": [0.5, 0.6, 0.7]}))
    assert _one(only_scratch)["call"] == CALL_NO_TRANSFER
    row = _one(only_transfer)
    assert row["call"] == CALL_NO_SCRATCH
    # Several seeds and no scratch: nothing may claim there was a single seed.
    assert describe_interval(row) == "no scratch baseline"
    assert "seed" not in row["summary"]


def test_one_row_per_cell_in_size_order() -> None:
    frame = frame_of(*(
        run_rows({"scratch": [0.5, 0.5], "full": [0.6, 0.6]}, size=size, backbone=backbone)
        for size in ("all", "10", "100") for backbone in ("vit", "cnn")
    ))
    table = verdicts(frame)
    assert list(zip(table["backbone"], table["size"])) == [
        ("cnn", "10"), ("cnn", "100"), ("cnn", "all"), ("vit", "10"), ("vit", "100"), ("vit", "all"),
    ]
    assert list(table.columns) == VERDICT_COLUMNS


def test_empty_frame() -> None:
    assert verdicts(pd.DataFrame()).empty
    assert crossovers(pd.DataFrame()).empty
    assert arm_verdicts(pd.DataFrame()).empty
    assert across_datasets(pd.DataFrame()).empty
    assert scratch_equivalents(pd.DataFrame()).empty
    assert logme_models(pd.DataFrame()).empty


def test_classify() -> None:
    assert classify(0.01, 0.03, 3) == CALL_TRANSFER
    assert classify(-0.03, -0.01, 3) == CALL_SCRATCH
    assert classify(-0.01, 0.02, 3) == CALL_UNCLEAR
    assert classify(0.0, 0.0, 3) == CALL_EQUIVALENT
    assert classify(-0.005, 0.009, 3) == CALL_EQUIVALENT
    assert classify(0.001, 0.009, 3) == CALL_EQUIVALENT  # clear of zero, yet too small to matter
    assert classify(0.001, 0.017, 3) == CALL_UNCLEAR  # mean 0.9 pts: below the 1-point bar
    assert classify(0.001, 0.017, 3, min_effect=0.005) == CALL_TRANSFER
    assert classify(0.01, 0.03, 2) == CALL_TOO_FEW
    assert MIN_PAIRS_FOR_CALL == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=1, max_size=12))
def test_calls_agree_with_their_interval(values: list[float]) -> None:
    diffs = np.array(values)
    frame = frame_of(run_rows({"scratch": [0.5] * diffs.size, "full": list(0.5 + diffs)}))
    row = _one(frame)
    if diffs.size < MIN_PAIRS_FOR_CALL:
        assert row["call"] == CALL_TOO_FEW
        return
    assert row["ci_low"] <= row["mean_diff"] + 1e-12 <= row["ci_high"] + 2e-12
    if row["call"] == CALL_TRANSFER:
        assert row["ci_low"] > 0 and row["mean_diff"] >= DEFAULT_MIN_EFFECT - 1e-9
    if row["call"] == CALL_SCRATCH:
        assert row["ci_high"] < 0 and row["mean_diff"] <= -DEFAULT_MIN_EFFECT + 1e-9
    if row["call"] == CALL_EQUIVALENT:
        assert -DEFAULT_MIN_EFFECT < row["ci_low"] and row["ci_high"] < DEFAULT_MIN_EFFECT
    assert 0 < row["p_value"] <= 1
    assert 0 <= row["prob_improvement_low"] <= row["prob_improvement"] <= row["prob_improvement_high"] <= 1


def test_interval_through_verdicts_is_the_t_interval() -> None:
    rng = np.random.default_rng(11)
    scratch = rng.normal(0.7, 0.02, 8)
    transfer = scratch + 0.03 + rng.normal(0, 0.02, 8)
    row = _one(frame_of(run_rows({"scratch": scratch, "full": transfer})))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(transfer - scratch))


# -- every arm, Holm-corrected -------------------------------------------------------------------


def test_every_arm_gets_a_row_with_holm_adjusted_p() -> None:
    base = [0.5] * 6
    frame = frame_of(run_rows({
        "scratch": base,
        "frozen": _plus(base, [0.10, 0.11, 0.12, 0.13, 0.14, 0.15]),
        "full": _plus(base, [0.20, 0.21, 0.22, 0.23, 0.24, 0.25]),
        "partial[k=2]": _plus(base, [0.01, -0.01, 0.02, -0.02, 0.0, 0.01]),
    }))
    table = arm_verdicts(frame).set_index("strategy_label")
    assert list(table.index) == ["frozen", "partial[k=2]", "full"]  # reading order
    assert (table["n_arms"] == 3).all()
    # All six paired differences positive: exact p = 2 / 2^6 for frozen and full.
    assert table.loc["frozen", "p_value"] == pytest.approx(2 / 64)
    assert table.loc["full", "p_value"] == pytest.approx(2 / 64)
    p_partial = table.loc["partial[k=2]", "p_value"]
    # Holm: smallest two p-values times 3 then 2, running maximum, capped at 1.
    assert table.loc["frozen", "p_holm"] == pytest.approx(3 * 2 / 64)
    assert table.loc["full", "p_holm"] == pytest.approx(3 * 2 / 64)
    assert table.loc["partial[k=2]", "p_holm"] == pytest.approx(min(1.0, max(3 * 2 / 64, p_partial)))
    # 0.094 > 0.05: the interval alone would call both wins, the family-wise correction does not.
    assert (table.loc[["frozen", "full"], "call"] == CALL_UNCLEAR).all()
    assert "Holm-adjusted p is above 0.05" in table.loc["full", "summary"]


def test_single_arm_with_enough_seeds_can_win_after_holm() -> None:
    base = [0.5] * 6
    frame = frame_of(run_rows({"scratch": base, "full": _plus(base, [0.20, 0.21, 0.22, 0.23, 0.24, 0.25])}))
    row = arm_verdicts(frame).iloc[0]
    assert row["p_holm"] == pytest.approx(2 / 64)
    assert row["call"] == CALL_TRANSFER


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
    assert pd.isna(_one(frame)["scratch_equivalent_n"])


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
