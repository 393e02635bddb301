"""Seeds added where a call is still open: each round's cells, worked out afresh from the store.

After its planned seeds, a cell (backbone x dataset x size) whose verdict is still "no clear
difference" gets ``verdict.seed_batch`` more seeds, on every arm it compares, at the setting each
arm's sweep chose (nothing is tuned again), and is looked at again once they are in, until it is
called or reaches ``verdict.max_seeds``. The rule that keeps the repeated looks honest lives in
``bench.report.sequential``; the calls are the report's own (``bench.report.decide``).

Nothing is remembered between rounds: a batch is open once any of its cells is in the store,
and a look happens only when every opened batch has settled. So a driver killed mid-round and
started again finishes the batch it had opened, and looks at exactly the data it would have.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.records import STATUS_DONE, STATUS_FAILED, RunSpec
from bench.report.sequential import added_seeds, open_call
from bench.execution.sweep import sweep_state

if TYPE_CHECKING:
    from bench.store import ResultStore
    from bench.suite.model import Suite

_SETTLED = (STATUS_DONE, STATUS_FAILED)


def with_seeds(suite: Suite, seeds: list[int]) -> Suite:
    """``suite`` with other seeds; cell ids do not depend on the seed list, so shared cells keep theirs."""
    copy = suite.model_copy(update={"seeds": list(seeds)})
    copy._plan = None  # the copy's plan is its own
    return copy


def worst_case(suite: Suite) -> Suite:
    """``suite`` with every seed it may add: what ``plan`` and the estimate count when no call is ever made."""
    extra = added_seeds(suite.seeds, suite.verdict.max_seeds)
    return with_seeds(suite, [*suite.seeds, *extra]) if extra else suite


def cell_key(spec: RunSpec) -> tuple[str, str, str]:
    """The verdict cell a run belongs to: backbone, dataset and size, as the report's frame names them."""
    return (spec.backbone, spec.dataset_name, spec.size)


def seed_round(suite: Suite, store: ResultStore) -> list[RunSpec]:
    """The cells to run next: unsettled cells of the batches already opened, else the next batch of each open cell.

    A cell is looked at only when its planned cells have settled and its sweeps have chosen.
    """
    extra = added_seeds(suite.seeds, suite.verdict.max_seeds)
    if not extra:
        return []
    batch = suite.verdict.seed_batch
    batches = [extra[i:i + batch] for i in range(0, len(extra), batch)]
    statuses = store.statuses()
    plan = suite.plan()
    sweeps = sweep_state(suite, plan, store)
    unready = {cell_key(c) for c in sweeps.sweeping}
    unready |= {cell_key(c) for c in [*plan.cells, *sweeps.finals] if statuses.get(c.run_id) not in _SETTLED}
    full = worst_case(suite)
    full_plan = full.plan()
    by_cell: dict[tuple[str, str, str], dict[int, list[RunSpec]]] = {}
    for spec in [*full_plan.cells, *sweep_state(full, full_plan, store).finals]:
        if spec.seed in extra and cell_key(spec) not in unready:
            by_cell.setdefault(cell_key(spec), {}).setdefault(spec.seed, []).append(spec)
    if not by_cell:
        return []
    calls = _open_calls(suite, store)
    todo: list[RunSpec] = []
    for key, seeds in by_cell.items():
        opened = 0
        for k, seeds_of_batch in enumerate(batches):
            if any(c.run_id in statuses for s in seeds_of_batch for c in seeds.get(s, [])):
                opened = k + 1
        unsettled = [c for b in batches[:opened] for s in b for c in seeds.get(s, [])
                     if statuses.get(c.run_id) not in _SETTLED]
        if unsettled:
            todo += unsettled
        elif opened < len(batches) and calls.get(key, False):
            todo += [c for s in batches[opened] for c in seeds.get(s, [])]
    return todo


def _open_calls(suite: Suite, store: ResultStore) -> dict[tuple[str, str, str], bool]:
    """Per verdict cell, whether its headline call (against plain scratch) is still open."""
    from bench.report.decide import store_verdict

    verdict = store_verdict(store.frame(), suite.model_dump(mode="json"))
    return {
        (str(row.backbone), str(row.dataset), str(row.size)): open_call(str(row.call))
        for row in verdict.itertuples()
    }


def add_seeds(suite: Suite, store: ResultStore, driver: Any, ran: set[str]) -> None:
    """Run ``seed_round`` after round on ``driver`` (the runner's) until no cell asks for more seeds.

    ``ran`` holds the cells this driver already ran, which it never runs twice.
    """
    while not driver.stopping:
        batch = [c for c in store.pending(seed_round(suite, store), retry_failed=driver.retry_failed,
                                          force=driver.force) if c.run_id not in ran]
        if not batch:
            return
        cells = {cell_key(c) for c in batch}
        driver.observer.note(f"{len(cells)} cell(s) with no call yet: {len(batch)} run(s) on more seeds")
        # Recorded before they run, so the report counts them as the suite's own even after a kill.
        store.set_meta("added_ids", sorted({*(store.get_meta("added_ids") or []), *(c.run_id for c in batch)}))
        ran |= {c.run_id for c in batch}
        driver.run(batch)
