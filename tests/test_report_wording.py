"""The verdict's sentences: the pieces the tables and the sentences share, and the counts that open the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.wording import (
    arm_sentence,
    crossover_sentence,
    inconclusive_reason,
    p_text,
    pts,
    size_text,
    verdict_counts_sentence,
)


def test_numbers_read_the_same_in_tables_and_sentences() -> None:
    assert p_text(0.0625) == "0.062" and p_text(np.float64(0.0004)) == "4.0e-04"
    assert p_text(math.nan) == p_text(None) == "–"
    assert pts(0.015) == "+1.5 pts" and pts(-0.2) == "-20.0 pts"
    assert [size_text(s) for s in ("10", "0.1", "all")] == ["10/class", "10% of the data", "all data"]


def test_counts_add_up_to_the_cells() -> None:
    calls = ["transfer wins", "transfer wins", "scratch wins", "equivalent", "inconclusive", "no clear difference"]
    text = verdict_counts_sentence(pd.DataFrame({"call": calls}))
    assert text.startswith("Across 6 backbone × dataset × size cells: transfer wins in 2, scratch wins in 1,")
    assert "equivalent in 1, 1 are inconclusive" in text and "and 1 show no clear difference" in text
    assert "no verdict" in verdict_counts_sentence(pd.DataFrame({"call": []}))


def test_crossover_interval_names_open_ends() -> None:
    text = crossover_sentence("cnn on digits", ["10", "50"], None, "50", None)
    assert text == (
        "cnn on digits: transfer stays ahead at every size up to 50/class. 95% bootstrap interval over "
        "seeds: 50 to beyond the largest size compared."
    )
    assert crossover_sentence("cnn on digits", [], None, None, None).endswith("on a shared seed.")


def test_an_inconclusive_comparison_says_why() -> None:
    edge = "scratch still at the edge of its grid, lr=0.006 (largest)"
    assert inconclusive_reason({"flags": "", "withheld": edge}) == (
        f"{edge}, so it may be under-tuned and no call is made against it"
    )
    # A flagged run makes a comparison inconclusive whatever the interval says, so it is the reason given.
    assert inconclusive_reason({"flags": "scratch seed 1 at_chance", "withheld": edge}) == "scratch seed 1 at_chance"
    row = {
        "strategy_label": "full", "weights": "imagenet", "n_pairs": 1, "mean_diff": 0.2, "flags": "", "withheld": edge,
    }
    assert arm_sentence(row, "inconclusive", held_back=False, alpha=0.05) == (
        f"full (imagenet) vs scratch +20.0 pts; inconclusive: {edge}, so it may be under-tuned and no call is "
        "made against it"
    )
    text = verdict_counts_sentence(pd.DataFrame({"call": ["inconclusive"]}))
    assert "1 are inconclusive because a compared run is flagged or the arm that would lose is still at the edge" \
        in text
