"""Benchmark: warm workers against a process per cell, on one suite of tiny cells, in one run.

``pytest tests/perf/test_warm_workers.py --benchmark-enable``: each arm runs the same suite
(test_resnet from scratch on digits, 16-pixel images, two epochs) through ``run_suite`` into
a fresh store. At the end a summary prints the ratios against the references measured in the
same run (warm against a process per cell; two jobs with their share of the cores against
two jobs that each take every core) and each arm's fixed cost per cell: the cell's wall time
seen by the driver minus the run's own ``train_s + eval_s``, split into what lies outside the
run (process start, imports, passing the job and its result, the store write) and what lies
inside it (dataset loading, model building, per-epoch validation). Each arm reports the first
cell of each worker apart from the later ones, which are what a warm worker makes cheap. The
same figures go into each benchmark's ``extra_info``. Without ``--benchmark-enable`` every arm runs once, on fewer cells, and must
finish with every cell done.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from bench.procs import cpu_count
from bench.execution.driver import SilentObserver, run_suite
from bench.execution.local import SubprocessExecutor
from bench.suite.model import suite_from_dict
from tests.faults_helpers import scratch_suite

# name -> (jobs, warm, threads per job; None: the executor's share of the cores)
ARMS: dict[str, tuple[int, bool, int | None]] = {
    "process-per-cell": (1, False, None),
    "warm": (1, True, None),
    "warm-2-jobs-share": (2, True, None),
    "warm-2-jobs-all-cores-each": (2, True, cpu_count()),
}
ROUNDS = 2


def _suite(seeds: int) -> dict[str, Any]:
    return scratch_suite("warm-bench", sizes=[3, 5], seeds=list(range(seeds)), epochs=2, min_steps=1)


class _Cells(SilentObserver):
    """Each cell's wall time from submit to outcome, its train and eval time, and the worker that ran it."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.cells: list[dict[str, Any]] = []

    def job_started(self, job) -> None:
        self.started[job.key] = time.perf_counter()

    def job_finished(self, job, result, outcome) -> None:
        wall = time.perf_counter() - self.started[job.key]
        assert result is not None and result.status == "done", outcome.error
        self.cells.append({"wall": wall, "run": result.wall_s, "work": result.train_s + result.eval_s,
                           "pid": outcome.worker_pid})


@pytest.fixture(scope="module")
def ledger(request):
    """Every arm's rounds; the comparison is printed once all arms have run."""
    rounds: dict[str, list[dict[str, Any]]] = {}
    yield rounds
    # Output is captured at the file-descriptor level during teardown too; the summary is for the terminal.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(_summary(rounds)))


def _summary(rounds: dict[str, list[dict[str, Any]]]) -> list[str]:
    if not rounds:
        return []
    header = (f"[warm-workers] {cpu_count()} cores. Per arm: mean suite wall; mean fixed cost per cell (wall minus"
              " train_s + eval_s) over all cells, a worker's first cells, its later cells (outside + inside the run)")
    lines = ["", header]
    for name, runs in rounds.items():
        stats = _stats(runs)
        later = "n/a" if stats["later_s"] is None else (
            f"{stats['later_s']:5.2f} s ({stats['later_outside_s']:.2f} + {stats['later_inside_s']:.2f})")
        lines.append(
            f"[warm-workers] {name:28s} suite {stats['suite_s']:7.2f} s   fixed/cell: all {stats['fixed_s']:5.2f} s"
            f"   first {stats['first_s']:5.2f} s ({stats['first_outside_s']:.2f} + {stats['first_inside_s']:.2f})"
            f"   later {later}"
        )
    for slow, fast, label in (
        ("process-per-cell", "warm", "warm vs process per cell (suite wall)"),
        ("warm-2-jobs-all-cores-each", "warm-2-jobs-share", "2 jobs, a share of the cores vs all cores each"),
        ("warm", "warm-2-jobs-share", "2 jobs with a share vs 1 job"),
    ):
        if slow in rounds and fast in rounds:
            ratio = _stats(rounds[slow])["suite_s"] / _stats(rounds[fast])["suite_s"]
            lines.append(f"[warm-workers] speed-up, {label}: x{ratio:.2f}")
    return lines


def _stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean suite wall over rounds; mean fixed costs over the cells of every round, first and later apart."""
    cells: dict[str, list[dict[str, Any]]] = {"first": [], "later": []}
    for run in runs:
        seen: set[int | None] = set()
        for cell in run["cells"]:
            cells["later" if cell["pid"] in seen else "first"].append(cell)
            seen.add(cell["pid"])
    stats: dict[str, Any] = {
        "suite_s": statistics.mean(run["suite_s"] for run in runs),
        "fixed_s": statistics.mean(c["wall"] - c["work"] for c in cells["first"] + cells["later"]),
        "cells": len(cells["first"]) + len(cells["later"]),
    }
    for which, group in cells.items():
        stats[f"{which}_s"] = statistics.mean(c["wall"] - c["work"] for c in group) if group else None
        stats[f"{which}_outside_s"] = statistics.mean(c["wall"] - c["run"] for c in group) if group else None
        stats[f"{which}_inside_s"] = statistics.mean(c["run"] - c["work"] for c in group) if group else None
    return stats


@pytest.mark.slow
@pytest.mark.benchmark(group="warm-workers")
@pytest.mark.parametrize("arm", list(ARMS))
def test_suite_of_tiny_cells(benchmark, ledger, tmp_path, arm):
    jobs, warm, threads = ARMS[arm]
    if benchmark.disabled and arm == "warm-2-jobs-all-cores-each":
        pytest.skip("a speed reference only: it runs with --benchmark-enable")
    suite = suite_from_dict(_suite(seeds=1 if benchmark.disabled else 3))
    rounds = 1 if benchmark.disabled else ROUNDS
    runs = ledger.setdefault(arm, [])
    counter = iter(range(rounds + 1))

    def setup():
        # A fresh store per round: a store that already holds the cells would skip them all.
        return (tmp_path / f"round{next(counter)}",), {}

    def one_suite(results: Path) -> None:
        observer = _Cells()
        executor = SubprocessExecutor(slots=jobs, warm=warm, threads=threads)
        started = time.perf_counter()
        summary = run_suite(suite, results_dir=results, executor=executor, observer=observer)
        runs.append({"suite_s": time.perf_counter() - started, "cells": observer.cells})
        assert summary.failed == 0 and summary.done == len(observer.cells) > 0, summary.failures
        pids = {cell["pid"] for cell in observer.cells}
        if warm:
            assert len(pids) <= jobs, f"{len(pids)} workers for {jobs} slots: a healthy worker was not reused"
        else:
            assert len(pids) == len(observer.cells), "a process per cell"

    benchmark.pedantic(one_suite, setup=setup, rounds=rounds, iterations=1)
    stats = _stats(runs)
    benchmark.extra_info.update(stats)
    benchmark.extra_info.update({"jobs": jobs, "warm": warm, "threads": threads or "share"})
    if arm != "process-per-cell" and "process-per-cell" in ledger:
        benchmark.extra_info["speedup_vs_process_per_cell"] = _stats(ledger["process-per-cell"])["suite_s"] / stats[
            "suite_s"]
