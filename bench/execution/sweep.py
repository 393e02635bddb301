"""Where each tuned arm's sweep stands, read from the store: still sweeping, extending, or chosen.

A sweep runs its grid on the tuning seeds and chooses on validation. When the best point sits
at the edge of a numeric axis, the optimum may lie beyond it, so the sweep steps past that edge
(``tuning.extension_points``) and chooses again, at most ``tuning.extend`` times; every arm
gets the same rule. The state is worked out afresh from the store each time, so a driver that
was killed mid-extension resumes with exactly the points it had reached. ``finish_sweeps`` is the
driver's loop over it: run what the sweeps ask for, read the state again, until none asks for more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.suite.plan import allowed_setting, point_cells
from bench.records import STATUS_DONE, RunSpec
from bench.tuning import TunedArm, choose, extension_points, point_order

if TYPE_CHECKING:
    from bench.suite.plan import Plan
    from bench.store import ResultStore
    from bench.suite.model import Suite


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


def finish_sweeps(suite: Suite, plan: Any, store: ResultStore, driver: Any, ran: set[str]) -> None:
    """Have ``driver`` run what the sweeps ask for next (steps past a grid's edge, then chosen points on every
    seed) until no arm asks for more. An arm whose every configuration failed gets its final
    cells recorded as failed with the reason, so the suite ends with an exit status that says so.
    """
    original = {c.run_id for arm in plan.arms for c in arm.sweep_cells()}
    failed_arms: set[str] = set()
    while not driver.stopping:
        sweeps = sweep_state(suite, plan, store)
        for arm, reason in sweeps.failed:
            if arm.arm not in failed_arms:
                failed_arms.add(arm.arm)
                driver.fail_arm(arm, reason)
        batch = [c for c in store.pending([*sweeps.sweeping, *sweeps.finals], retry_failed=driver.retry_failed,
                                          force=driver.force) if c.run_id not in ran]
        if not batch:
            return
        sweeping = {c.run_id for c in sweeps.sweeping}
        beyond = [c for c in batch if c.run_id in sweeping and c.run_id not in original]
        if beyond:
            driver.observer.note(f"{len({c.arm for c in beyond})} arm(s) chose the edge of their grid: "
                                 f"trying {len(beyond)} point(s) beyond it")
        ran |= {c.run_id for c in batch}
        driver.run(batch)
