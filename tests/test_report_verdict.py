"""The verdict's statistics on constructed frames whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.report.across import across_datasets, crossovers, logme_models
from bench.report.equivalent import scratch_equivalents
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
from bench.report.stats import TIE_EPS, t_interval
from bench.report.verdict import VERDICT_COLUMNS, arm_verdicts, verdicts
from bench.report.wording import describe_interval
from tests.report_fixtures import frame_of, run_rows

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


# -- arms still at the edge of their grid --------------------------------------------------------


def _edged(accs: dict, edges: dict) -> pd.DataFrame:
    """A frame whose arms carry the ``grid_edge`` the report reads from their sweeps ('' inside)."""
    frame = frame_of(run_rows(accs))
    frame["grid_edge"] = frame["strategy_label"].map(lambda label: edges.get(label, ""))
    return frame


WIN = {"scratch": SCRATCH, "full": _plus(SCRATCH, [0.20, 0.22, 0.19, 0.21, 0.18])}
LOSS = {"scratch": SCRATCH, "full": _plus(SCRATCH, [-0.05, -0.04, -0.06, -0.05, -0.05])}


def test_a_win_against_scratch_at_its_grids_edge_is_withheld() -> None:
    row = _one(_edged(WIN, {"scratch": "lr=0.006 (largest)"}))
    assert row["call"] == CALL_INCONCLUSIVE
    assert row["withheld"] == "scratch still at the edge of its grid, lr=0.006 (largest)"
    assert row["scratch_edge"] == "lr=0.006 (largest)" and row["transfer_edge"] == ""
    assert row["summary"].startswith(
        "resnet18 on digits, 10/class: inconclusive: scratch still at the edge of its grid, lr=0.006 (largest), "
        "so it may be under-tuned and no call is made against it. full (pretrain:shapes) vs scratch +20.0 pts"
    )
    assert "transfer wins" not in row["summary"]
    # The same numbers with scratch's optimum inside its grid earn the call.
    assert _one(_edged(WIN, {"scratch": ""}))["call"] == CALL_TRANSFER


def test_a_loss_for_a_transfer_arm_at_its_grids_edge_is_withheld() -> None:
    row = _one(_edged(LOSS, {"full": "lr=0.001 (smallest)"}))
    assert row["call"] == CALL_INCONCLUSIVE
    assert row["withheld"] == "full (pretrain:shapes) still at the edge of its grid, lr=0.001 (smallest)"
    assert "no call is made against it" in row["summary"]
    assert _one(_edged(LOSS, {}))["call"] == CALL_SCRATCH


def test_an_edge_on_the_winning_side_or_without_a_call_withholds_nothing() -> None:
    assert _one(_edged(WIN, {"full": "lr=0.003 (largest)"}))["call"] == CALL_TRANSFER
    assert _one(_edged(LOSS, {"scratch": "lr=0.006 (largest)"}))["call"] == CALL_SCRATCH
    both = {"scratch": "lr=0.006 (largest)", "full": "lr=0.001 (smallest)"}
    row = _one(_edged({"scratch": SCRATCH, "full": SCRATCH}, both))
    assert (row["call"], row["withheld"]) == (CALL_EQUIVALENT, "")
    unclear = _one(_edged({"scratch": SCRATCH, "full": _plus(SCRATCH, [0.05, -0.04, 0.03, -0.02, 0.0])}, both))
    assert (unclear["call"], unclear["withheld"]) == (CALL_UNCLEAR, "")


def test_per_arm_calls_against_an_edge_are_withheld_and_holm_still_comes_first() -> None:
    base = [0.5] * 6
    frame = frame_of(run_rows({"scratch": base, "full": _plus(base, [0.20, 0.21, 0.22, 0.23, 0.24, 0.25])}))
    frame["grid_edge"] = np.where(frame["strategy"] == "scratch", "lr=0.006 (largest)", "")
    row = arm_verdicts(frame).iloc[0]
    assert row["call"] == CALL_INCONCLUSIVE
    assert row["withheld"] == "scratch still at the edge of its grid, lr=0.006 (largest)"
    assert "inconclusive: scratch still at the edge of its grid" in row["summary"]
    # Two arms: Holm holds both wins back, so there is no call against scratch to withhold.
    frame = frame_of(run_rows({
        "scratch": base, "full": _plus(base, [0.20, 0.21, 0.22, 0.23, 0.24, 0.25]),
        "frozen": _plus(base, [0.10, 0.11, 0.12, 0.13, 0.14, 0.15]),
    }))
    frame["grid_edge"] = np.where(frame["strategy"] == "scratch", "lr=0.006 (largest)", "")
    table = arm_verdicts(frame)
    assert (table["call"] == CALL_UNCLEAR).all() and (table["withheld"] == "").all()


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
