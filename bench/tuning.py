"""The sweep stage: every arm gets the same small grid, chosen on validation accuracy alone.

An arm (backbone x weights x dataset x size x strategy) with more than one configuration first
runs each grid point on the tuning seeds. The point with the best mean validation accuracy is
then run on every seed; the tuning seed's run of that point is reused, not repeated. Test
accuracy is never read here: ``choose`` is given validation accuracies and nothing else.

Pure functions of plain values and frames, without torch, so the runner (which launches the
final cells) and the report (which shows what was chosen and what the sweep cost) make the
same choice from the same store.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# A grid key that is no training setting: it multiplies each strategy's own learning rate, so
# one grid serves arms whose defaults differ by orders of magnitude.
LR_FACTOR = "lr_factor"
# Three learning rates a half-decade apart around each default: the smallest grid that can tell
# "too low" and "too high" from "about right", at three times the cost of one configuration.
DEFAULT_GRID: dict[str, dict[str, list[Any]]] = {"all": {LR_FACTOR: [0.3, 1.0, 3.0]}}
# A best point at the edge of its grid says the optimum may lie beyond it; the sweep steps past
# that edge at most this many times. Two steps of a half-decade grid reach ten times past it,
# and every arm gets the same allowance, so the tuning budget stays equal by rule.
DEFAULT_EXTENSIONS = 2


@dataclass(frozen=True)
class TunedArm:
    """One arm with several configurations: its grid points and their cells."""

    arm: str
    label: str
    points: list[dict[str, Any]]  # the tuned values of each point, in canonical order
    cells: list[list[Any]]  # cells[i]: point i on every seed of the suite (RunSpec)
    tuning_seeds: list[int]
    grid: list[dict[str, Any]] = field(default_factory=list)  # point i as the suite's grid writes it (lr_factor)
    base: tuple = ()  # what the plan needs to build the cells of a further point

    def sweep_cells(self) -> list[Any]:
        return [cell for point in self.cells for cell in point if cell.seed in self.tuning_seeds]

    def final_cells(self, chosen: int) -> list[Any]:
        return list(self.cells[chosen])


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cross product of a grid, in canonical order (see ``point_order``)."""
    keys = sorted(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    return sorted(points, key=point_order)


def point_order(point: Mapping[str, Any]) -> tuple:
    """Sort key of a grid point: by key, numbers numerically, anything else as text.

    Ties in validation accuracy go to the first point in this order (the smallest learning
    rate of a learning-rate grid, the most conservative choice), and the report can recompute
    the order from the stored values alone.
    """
    return tuple((key, (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v)))
                 for key, v in sorted(point.items()))


def point_label(point: Mapping[str, Any]) -> str:
    """``lr=0.003, weight_decay=0.05``: how a configuration reads in a table."""
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(point.items())) or "default"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def choose(val_accs: Sequence[Sequence[float | None]]) -> int | None:
    """Index of the point with the best mean validation accuracy over the tuning seeds.

    ``val_accs[i]`` holds point i's validation accuracy per tuning seed, None where that run
    failed or has none. A point with any missing seed is not eligible: its mean would be over
    fewer seeds than its rivals'. None when no point is eligible.
    """
    best, best_mean = None, -math.inf
    for index, values in enumerate(val_accs):
        if not values or any(v is None or not math.isfinite(v) for v in values):
            continue
        mean = sum(values) / len(values)  # type: ignore[arg-type]
        if mean > best_mean:
            best, best_mean = index, mean
    return best


def tuned_key(tuned: Mapping[str, Any] | str) -> str:
    """A grid point as canonical JSON, the form the store keeps it in."""
    if isinstance(tuned, str):
        tuned = json.loads(tuned or "{}")
    return json.dumps(dict(tuned), sort_keys=True)


def grid_edge(chosen: Mapping[str, Any], tried: Sequence[Mapping[str, Any]]) -> str:
    """The numeric settings of ``chosen`` at the smallest or largest value tried, e.g. ``lr_factor=3 (largest)``.

    A choice at the edge of its grid says the best value may lie beyond it: the arm may be
    under-tuned, and a wider grid is the fix. Settings with fewer than three values have no inside.
    """
    edges = []
    for key, value in sorted(chosen.items()):
        values = sorted({p[key] for p in tried if isinstance(p.get(key), (int, float)) and not isinstance(p[key], bool)})
        if len(values) < 3 or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if value == values[0] or value == values[-1]:
            edges.append(f"{key}={_short(value)} ({'smallest' if value == values[0] else 'largest'})")
    return ", ".join(edges)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def step_beyond(values: Sequence[float], upward: bool) -> float | None:
    """The next value past the largest (or smallest) of ``values``, at the grid's own spacing.

    Evenly spaced values step by their difference; others (a log grid such as 0.3, 1, 3) by the
    ratio of the edge to its neighbour. Integer axes stay integers. None when the step leaves
    the numbers the axis can take (a ratio across zero, an integer step that rounds back).
    """
    ordered = sorted(set(values))
    edge, neighbour = (ordered[-1], ordered[-2]) if upward else (ordered[0], ordered[1])
    gaps = [b - a for a, b in zip(ordered, ordered[1:])]
    if max(gaps) - min(gaps) <= 1e-9 * max(abs(edge), abs(neighbour)):
        value = edge + (edge - neighbour)
    elif edge > 0 and neighbour > 0:
        value = edge * (edge / neighbour)
    else:
        return None
    if all(isinstance(v, int) for v in values):
        value = round(value)
        return None if value == edge else value
    return float(value)


def extension_points(
    chosen: int, tried: Sequence[Mapping[str, Any]], scores: Sequence[float | None],
    allowed: Callable[[str, Any], bool] = lambda key, value: True,
) -> list[dict[str, Any]]:
    """The points one step past each edge the chosen point ``tried[chosen]`` sits on, not tried before.

    Only numeric axes with at least three values tried have an inside and so an edge (as in
    ``grid_edge``). The edge must also beat its inside neighbour on that axis (``scores``, the
    mean validation accuracy of each point): a flat sweep, every point at chance, says nothing
    about which way to go. Each new point is the chosen one with one axis moved past its edge,
    so a grid of several axes grows by one point per edge rather than by a whole slice.
    ``allowed`` says whether a setting can take a value: an edge at the end of its domain (no
    weight decay below zero) is where the search ends.
    """
    point = tried[chosen]
    new: list[dict[str, Any]] = []
    for key, value in sorted(point.items()):
        if not _is_number(value):
            continue
        values = sorted({p[key] for p in tried if _is_number(p.get(key))})
        if len(values) < 3 or value not in (values[0], values[-1]):
            continue
        upward = value == values[-1]
        if not _beats_its_neighbour(chosen, key, upward, tried, scores):
            continue
        beyond = step_beyond(values, upward)
        candidate = {**point, key: beyond}
        if beyond is not None and allowed(key, beyond) and candidate not in tried:
            new.append(candidate)
    return new


def _beats_its_neighbour(chosen: int, key: str, upward: bool, tried: Sequence[Mapping[str, Any]],
                         scores: Sequence[float | None]) -> bool:
    point, score = tried[chosen], scores[chosen]
    line = [i for i, p in enumerate(tried) if i != chosen and _is_number(p.get(key))
            and {k: v for k, v in p.items() if k != key} == {k: v for k, v in point.items() if k != key}]
    if not line:
        return True
    nearest = max(line, key=lambda i: tried[i][key]) if upward else min(line, key=lambda i: tried[i][key])
    other = scores[nearest]
    return score is not None and (other is None or score > other)


# -- reading choices back from a results frame ---------------------------------------------


def selections(frame: Any, tuning_seeds: Sequence[int]) -> dict[str, str]:
    """arm -> the chosen point (canonical JSON), recomputed from a ``store.frame()``.

    Only done runs on the tuning seeds are read, and only their ``val_acc``.
    """
    chosen: dict[str, str] = {}
    if frame.empty or "arm" not in frame:
        return chosen
    tuned_rows = frame[(frame["arm"] != "") & frame["seed"].isin(list(tuning_seeds))]
    for arm, rows in tuned_rows.groupby("arm", sort=False):
        points = sorted({tuned_key(t) for t in rows["tuned"]}, key=lambda t: point_order(json.loads(t)))
        vals: list[list[float | None]] = []
        for point in points:
            runs = rows[rows["tuned"].map(tuned_key) == point]
            per_seed = []
            for seed in tuning_seeds:
                hit = runs[(runs["seed"] == seed) & (runs["status"] == "done")]
                per_seed.append(float(hit["val_acc"].iloc[0]) if len(hit) and hit["val_acc"].notna().iloc[0] else None)
            vals.append(per_seed)
        index = choose(vals)
        if index is not None:
            chosen[str(arm)] = points[index]
    return chosen


def final_mask(frame: Any, seeds: Sequence[int], tuning_seeds: Sequence[int]) -> Any:
    """Which runs of a frame are final (see ``split_final``), as a boolean Series on its index."""
    import pandas as pd

    if frame.empty or "arm" not in frame:
        return pd.Series(True, index=frame.index, dtype=bool)
    chosen = selections(frame, tuning_seeds)
    tuned = frame["arm"] != ""
    is_chosen = frame["arm"].map(chosen).eq(frame["tuned"].map(tuned_key))
    return (~tuned | (is_chosen & frame["seed"].isin(list(seeds)))).astype(bool)


def split_final(frame: Any, seeds: Sequence[int], tuning_seeds: Sequence[int]) -> tuple[Any, Any]:
    """(final runs, sweep-only runs) of a frame: what the verdict compares, and what tuning cost.

    A run of an untuned arm is final. A run of a tuned arm is final when it used its arm's
    chosen point and its seed is one of the suite's seeds; every other run of a tuned arm is
    sweep cost. Arms whose sweep has no eligible point yet contribute no final runs.
    """
    final = final_mask(frame, seeds, tuning_seeds)
    return frame[final], frame[~final]


def tuning_seeds_of(seeds: Sequence[int], chosen: Sequence[int] | None) -> list[int]:
    """The seeds a sweep runs on: the suite's ``tuning.seeds`` if it names any, else its first seed alone."""
    return [int(s) for s in (chosen or seeds[:1])]


def stored_seeds(suite: Any, frame: Any) -> tuple[list[int], list[int]]:
    """The suite's seeds and the sweep's, from a store's ``suite`` meta (or the runs, for hand-made stores)."""
    config = suite if isinstance(suite, dict) else {}
    seeds = [int(s) for s in config.get("seeds") or sorted(frame["seed"].unique())]
    tuning = config.get("tuning") if isinstance(config.get("tuning"), dict) else {}
    return seeds, tuning_seeds_of(seeds, tuning.get("seeds"))


def mark_final(frame: Any, suite: Any) -> Any:
    """``frame`` with a boolean ``final`` column: what ``split_final`` gives the report, by the stored suite's seeds."""
    return frame.assign(final=final_mask(frame, *stored_seeds(suite, frame)))


def arm_edges(frame: Any, tuning_seeds: Sequence[int]) -> dict[str, str]:
    """arm -> ``grid_edge`` of its chosen point among every point it tried, extensions included ('' inside)."""
    chosen = selections(frame, tuning_seeds)
    if not chosen:
        return {}
    edges = {}
    for arm, tuned in frame[frame["arm"].isin(list(chosen))].groupby("arm", sort=False)["tuned"]:
        tried = [json.loads(key) for key in {tuned_key(t) for t in tuned}]
        edges[str(arm)] = grid_edge(json.loads(chosen[str(arm)]), tried)
    return edges


def _planned(runs: Any, planned_ids: Any) -> Any:
    """Which of one arm's runs the stored plan lists; None when the store cannot tell its grid from what came after.

    The plan lists the fixed cells and the grid's own sweep cells (``planned_ids``), never the
    points the driver adds beyond an edge, nor the final runs on the other seeds. An arm none of
    whose runs it lists (a store without a plan, or an arm of an earlier version of the suite)
    cannot be told apart.
    """
    if not isinstance(planned_ids, (list, tuple, set)):
        return None
    planned = runs["run_id"].isin({str(run_id) for run_id in planned_ids})
    return planned if planned.any() else None


TUNING_COLUMNS = [
    "backbone", "weights", "dataset", "size", "strategy", "grid_points", "extended_points", "chosen",
    "chosen_val_acc", "grid_edge", "sweep_runs", "sweep_s", "extension_runs", "extension_s",
]


def tuning_summary(
    frame: Any, seeds: Sequence[int], tuning_seeds: Sequence[int], planned_ids: Any = None,
) -> Any:
    """One row per tuned arm: the points tried, the chosen configuration, its validation accuracy, the sweep's cost.

    ``grid_points`` counts every point the arm tried, ``extended_points`` those beyond the
    suite's own grid, and ``extension_runs``/``extension_s`` what trying them cost (missing when
    the store cannot tell them from the grid's runs: see ``_planned``).
    ``grid_edge`` is read over every point tried: an arm still at its edge after extending.
    """
    import pandas as pd

    if frame.empty or "arm" not in frame or not (frame["arm"] != "").any():
        return pd.DataFrame(columns=TUNING_COLUMNS)
    chosen = selections(frame, tuning_seeds)
    edges = arm_edges(frame, tuning_seeds)
    _, sweep_only = split_final(frame, seeds, tuning_seeds)
    rows = []
    for arm, runs in frame[frame["arm"] != ""].groupby("arm", sort=False):
        first = runs.iloc[0]
        point = chosen.get(str(arm))
        keys = runs["tuned"].map(tuned_key)
        on_tuning = runs[runs["seed"].isin(list(tuning_seeds)) & (keys == point)]
        extra = sweep_only[sweep_only["arm"] == arm]
        planned = _planned(runs, planned_ids)
        points = n_beyond = beyond_s = None
        if planned is not None:
            # A run on a tuning seed that the plan does not list tried a point beyond the grid.
            beyond = ~planned & runs["seed"].isin(list(tuning_seeds))
            points = len(set(keys[beyond]) - set(keys[planned]))
            n_beyond, beyond_s = int(beyond.sum()), float(runs.loc[beyond, "wall_s"].fillna(0).sum())
        rows.append({
            "backbone": first["backbone"], "weights": first["weights"], "dataset": first["dataset"],
            "size": first["size"], "strategy": first["strategy_label"],
            "grid_points": keys.nunique(), "extended_points": points,
            "chosen": point_label(json.loads(point)) if point else "pending",
            "chosen_val_acc": float(on_tuning["val_acc"].mean()) if len(on_tuning) else math.nan,
            "grid_edge": edges.get(str(arm), ""),
            "sweep_runs": len(extra), "sweep_s": float(extra["wall_s"].fillna(0).sum()),
            "extension_runs": n_beyond, "extension_s": beyond_s,
        })
    table = pd.DataFrame(rows, columns=TUNING_COLUMNS)
    for column in ("extended_points", "extension_runs"):
        table[column] = table[column].astype("Int64")
    table["extension_s"] = table["extension_s"].astype(float)
    return table
