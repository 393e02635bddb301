"""The decision rule that puts a paired interval into words."""

from __future__ import annotations

from bench.report.paired import classify
from bench.report.rules import (
    CALL_EQUIVALENT,
    CALL_SCRATCH,
    CALL_TOO_FEW,
    CALL_TRANSFER,
    CALL_UNCLEAR,
    MIN_PAIRS_FOR_CALL,
)


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
