"""Runs grouped into cells and arms: the parts a hand-made frame can get wrong."""

from __future__ import annotations

import math

import pytest

from bench.report.cells import flag_list


@pytest.mark.parametrize("value", [None, math.nan, ""])
def test_missing_flags_mean_healthy(value) -> None:
    assert flag_list(value) == []


def test_flags_are_comma_separated_text() -> None:
    assert flag_list(" undertrained , at_chance,") == ["undertrained", "at_chance"]
