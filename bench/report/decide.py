"""The runs a verdict reads, and the verdict of a store as it stands, for the report and for the driver.

The driver asks which cells are still open after each round of added seeds; it must see exactly
the runs, the design and the calls the report will show, so both read them here.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report.rules import DEFAULT_MIN_EFFECT
from bench.report.sequential import SeedDesign, added_seeds, design_of
from bench.report.tables import SCRATCH
from bench.report.verdict import verdicts
from bench.tuning import arm_edges, final_mask, stored_seeds


def verdict_seeds(config: dict, frame: pd.DataFrame) -> tuple[list[int], list[int], SeedDesign | None]:
    """(every seed a final run may have: the suite's and any it may add, the sweep's seeds, the design)."""
    config = config if isinstance(config, dict) else {}  # hand-made or old stores may hold just a name
    seeds, tuning_seeds = stored_seeds(config, frame)
    design = design_of(config, len(seeds))
    if design is not None:
        seeds = seeds + added_seeds(seeds, design.max_seeds)
    return seeds, tuning_seeds, design


def mark_final(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """``frame`` with a boolean ``final`` column: the runs the verdict reads, added seeds included."""
    seeds, tuning_seeds, _ = verdict_seeds(config, frame)
    return frame.assign(final=final_mask(frame, seeds, tuning_seeds))


def final_frame(frame: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the final runs the verdict and the tables read, every run marked ``final``).

    Sweep runs of configurations that were not chosen are cost, not results. Whether a choice lies
    at the edge of what its arm tried is read from every run of the arm, before they are dropped.
    """
    _, tuning_seeds, _ = verdict_seeds(config, frame)
    all_runs = mark_final(frame, config)
    final = all_runs[all_runs["final"]]
    edges = arm_edges(all_runs, tuning_seeds)
    return final.assign(grid_edge=final["arm"].map(lambda arm: edges.get(arm, ""))), all_runs


def min_effect_of(config: dict) -> float:
    """The suite's minimum effect for a call (a fraction); NaN when the stored value is not a number."""
    value = (config.get("verdict") or {}).get("min_effect", DEFAULT_MIN_EFFECT)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def store_verdict(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The headline verdict (plain scratch as the baseline) of a store's runs, under the suite's design."""
    final, _ = final_frame(frame, config)
    if final.empty:
        return verdicts(final)
    final = final[(final["strategy"] != SCRATCH) | (final["strategy_label"] == SCRATCH)]
    _, _, design = verdict_seeds(config, frame)
    return verdicts(final, min_effect=min_effect_of(config), design=design)
