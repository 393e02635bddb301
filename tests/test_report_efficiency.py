"""The efficiency view puts every arm on full fine-tuning's scale of accuracy, parameters and time."""

from __future__ import annotations

import pytest

from bench.report.efficiency import efficiency_plot, shares_of_full
from bench.report.plotkit import strategy_palette
from tests.report_fixtures import frame_of, run_rows


def _frame(with_full: bool = True):
    accs = {"scratch": [0.5, 0.5], "frozen": [0.6, 0.6], "lora[r=8]": [0.784, 0.784], "bitfit": [0.7, 0.7]}
    if with_full:
        accs["full"] = [0.8, 0.8]
    frame = frame_of(run_rows(accs, size="10"), run_rows({k: [v[0] / 2] for k, v in accs.items()}, size="50"))
    counts = {"scratch": 1000, "frozen": 10, "lora[r=8]": 10, "bitfit": 50, "full": 1000}
    walls = {"scratch": 10.0, "frozen": 1.0, "lora[r=8]": 6.0, "bitfit": 5.0, "full": 10.0}
    frame["trainable_params"] = frame["strategy_label"].map(counts)
    frame["wall_s"] = frame["strategy_label"].map(walls)
    frame["total_params"] = 1000
    frame["test_balanced_acc"] = frame["test_macro_f1"] = frame["test_acc"]
    return frame


def test_each_arm_is_a_share_of_full_on_the_same_cell():
    shares = shares_of_full(_frame()).set_index(["size", "strategy_label"])
    assert shares.loc[("10", "lora[r=8]"), "acc_pct_of_full"] == pytest.approx(98.0)
    assert shares.loc[("10", "lora[r=8]"), "params_pct_of_full"] == pytest.approx(1.0)
    assert shares.loc[("10", "lora[r=8]"), "wall_pct_of_full"] == pytest.approx(60.0)
    assert shares.loc[("50", "bitfit"), "acc_pct_of_full"] == pytest.approx(87.5)
    assert "full" not in shares.index.get_level_values("strategy_label")


def test_without_a_full_arm_there_is_no_scale_and_no_figure():
    frame = _frame(with_full=False)
    assert shares_of_full(frame).empty
    assert efficiency_plot(frame, strategy_palette(frame["strategy_label"])) is None


def test_the_figure_labels_the_median_point():
    frame = _frame()
    plot = efficiency_plot(frame, strategy_palette(frame["strategy_label"]))
    texts = [t.get_text() for ax in plot.figure.axes for t in ax.texts]
    assert "98% acc @ 1% params, 60% time" in texts
