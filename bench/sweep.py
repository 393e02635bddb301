"""Where each tuned arm's sweep stands, read from the store: still sweeping, extending, or chosen.

A sweep runs its grid on the tuning seeds and chooses on validation. When the best point sits
at the edge of a numeric axis, the optimum may lie beyond it, so the sweep steps past that edge
(``tuning.extension_points``) and chooses again, at most ``tuning.extend`` times; every arm
gets the same rule. The state is worked out afresh from the store each time, so a driver that
was killed mid-extension resumes with exactly the points it had reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.plan import allowed_setting, point_cells
from bench.records import STATUS_DONE, RunSpec
from bench.tuning import TunedArm, choose, extension_points, point_order

if TYPE_CHECKING:
    from bench.plan import Plan
    from bench.store import ResultStore
    from bench.suite import Suite


@dataclass
class SweepState:
    """What every tuned arm needs next."""

    finals: list[RunSpec] = field(default_factory=list)  # chosen points on every seed
    sweeping: list[RunSpec] = field(default_factory=list)  # sweep cells (extensions too) without a result
    failed: list[tuple[TunedArm, str]] = field(default_factory=list)  # arms whose every point failed
    waiting: int = 0  # final cells that wait for a sweep to finish
    extended: int = 0  # arms that have stepped past their grid's edge


def sweep_state(suite: Suite, plan: Plan, store: ResultStore) -> SweepState:
    """Each tuned arm's next cells, from the results in ``store`` (validation accuracy only)."""
    state = SweepState()
    for arm in plan.arms:
        _advance(suite, arm, store, state)
    return state


def _advance(suite: Suite, arm: TunedArm, store: ResultStore, state: SweepState) -> None:
    grid, cells = list(arm.grid), [list(point) for point in arm.cells]
    finals_waiting = sum(c.seed not in arm.tuning_seeds for c in cells[0])
    for extension in range(suite.tuning.extend + 1):
        unfinished, val_accs = _sweep_results(arm, cells, store)
        if unfinished:
            state.sweeping += unfinished
            state.waiting += finals_waiting
            return
        # The order the report recomputes from stored values, so both break ties alike.
        order = sorted(range(len(cells)), key=lambda i: point_order(cells[i][0].tuned))
        best = choose([val_accs[i] for i in order])
        if best is None:
            state.failed.append((arm, f"every configuration of the sweep failed ({len(cells)} tried)"))
            return
        chosen = order[best]
        means = [sum(v) / len(v) if v and all(x is not None for x in v) else None for v in val_accs]
        beyond = extension_points(chosen, grid, means, allowed_setting) if extension < suite.tuning.extend else []
        if not beyond:
            state.finals += cells[chosen]
            state.extended += extension > 0
            return
        for point in beyond:
            grid.append(point)
            cells.append(point_cells(suite, arm, point))


def _sweep_results(arm: TunedArm, cells: list[list[RunSpec]], store: ResultStore) -> tuple[list[RunSpec], list[Any]]:
    """(sweep cells without a result, each point's validation accuracy per tuning seed)."""
    unfinished: list[RunSpec] = []
    val_accs: list[list[float | None]] = []
    for point in cells:
        per_seed: list[float | None] = []
        for cell in point:
            if cell.seed not in arm.tuning_seeds:
                continue
            result = store.result(cell.run_id)
            if result is None:
                unfinished.append(cell)
            per_seed.append(result.val_acc if result is not None and result.status == STATUS_DONE else None)
        val_accs.append(per_seed)
    return unfinished, val_accs
