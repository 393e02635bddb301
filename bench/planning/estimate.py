"""Estimates before spending: how long the cells of a suite still to run will take, in one line.

Each cell's work is priced at its backbone's speed on the device a run would use
(``bench.planning.speeds``), counted on the data as it is before any download (``bench.planning.survey``).
Early stopping can only shorten a run, so the figure is an upper estimate of the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import DatasetConfig, TrainingConfig
from bench.planning.loading import LoadSpeed, loading_key
from bench.records import STATUS_DONE, STATUS_FAILED, RunSpec, pretrain_config
from bench.planning.speeds import (
    CACHE_FILE,
    CALIBRATION,
    EARLIER_RUNS,
    Speed,
    Work,
    cell_work,
    choose_loading,
    choose_speeds,
    device_label,
    schedule,
    speeds_from_store,
    split_sizes,
)
from bench.store import ResultStore, suite_store_path
from bench.suite.model import Suite
from bench.planning.survey import DataStatus, data_key, survey_data


@dataclass
class Estimate:
    """Seconds for the cells still to run (and the pretrain stages they need), one at a time on one device."""

    seconds: float
    device: str
    cells: int
    stages: int
    speeds: list[Speed] = field(default_factory=list)
    loading: list[LoadSpeed] = field(default_factory=list)

    @property
    def source(self) -> str:
        sources = sorted({s.source for s in self.speeds}, key=[EARLIER_RUNS, CALIBRATION].index)
        return " and ".join(sources) if sources else "nothing to run"

    def line(self) -> str:
        """One line: how long, where, for what, and from which source."""
        if not self.cells and not self.stages:
            return "estimate: nothing left to run"
        stages = f" and {self.stages} pretrain stage{'s' if self.stages != 1 else ''}" if self.stages else ""
        cells = f"{self.cells} cell{'s' if self.cells != 1 else ''}"
        return (f"estimate: {format_duration(self.seconds)} on {self.device} for {cells}{stages}, "
                f"one at a time, from {self.source}")


def format_duration(seconds: float) -> str:
    """``about 40 s``, ``about 12 min``, ``about 3.4 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def format_bytes(size: int | None) -> str:
    """``about 170 MB``, ``about 2.6 GB``; ``size unknown`` for None."""
    if size is None:
        return "size unknown"
    if size >= 1e9:
        return f"about {size / 1e9:.1f} GB"
    return f"about {max(1, round(size / 1e6))} MB"


def pending_cells(suite: Suite, statuses: dict[str, str], *, retry_failed: bool = False) -> list[RunSpec]:
    """Cells a ``run`` would still train: runnable ones not settled, and each tuned arm's final seeds.

    A final cell's point is chosen by its sweep; any point's cell stands in for it, all costing the same.
    """
    settled = {STATUS_DONE} if retry_failed else {STATUS_DONE, STATUS_FAILED}
    plan = suite.plan()
    todo = [c for c in plan.runnable if statuses.get(c.run_id) not in settled]
    for arm in plan.arms:
        for seed_index, cell in enumerate(arm.cells[0]):
            if cell.seed in arm.tuning_seeds:
                continue
            if any(statuses.get(point[seed_index].run_id) in settled for point in arm.cells):
                continue
            todo.append(cell)
    return todo


def estimate_suite(
    suite: Suite,
    *,
    results_dir: str | Path = "results",
    statuses: dict[str, str] | None = None,
    survey: dict[str, DataStatus] | None = None,
    retry_failed: bool = False,
    cache: bool = True,
) -> Estimate:
    """How long ``run`` would take on the device it would use, and where each speed came from."""
    results_dir = Path(results_dir)
    survey = survey if survey is not None else survey_data(suite)
    if statuses is None:
        path = suite_store_path(results_dir, suite.name)
        statuses = {}
        if path.is_file():
            with ResultStore(path, readonly=True) as store:
                statuses = store.statuses()
    from bench.execution.seed_rounds import worst_case

    # Seeds a sequential suite may add are counted as if every call stayed open: the worst case.
    cells = pending_cells(worst_case(suite), statuses, retry_failed=retry_failed)
    if not cells:
        # Resuming a finished suite: nothing to time, and no reason to import torch to name the device.
        return Estimate(seconds=0.0, device=suite.device, cells=0, stages=0)
    from bench.training.pretrain import checkpoint_path

    device = device_label(suite.device)

    # Each cell and each pretrain stage still to train: its speed key, work, training and data.
    jobs: list[_Job] = []
    for cell in cells:
        key = data_key(cell.dataset)
        jobs.append(_Job((cell.model_name, cell.training_config.image_size), cell_work(cell, survey[key].counts),
                         cell.training_config, cell.dataset_config, key, survey[key]))
    stages = {c.pretrain["key"]: c.pretrain for c in cells if c.pretrain}
    stage_count = 0
    for stage in stages.values():
        if checkpoint_path(results_dir / "pretrained", stage).is_file():
            continue
        stage_count += 1
        config = pretrain_config(stage)
        key = data_key(stage["config"]["dataset"])
        n_train, n_val, n_test, _ = split_sizes(config.dataset, "all", survey[key].counts)
        training = config.training
        jobs.append(_Job((stage["backbone"], training.image_size), schedule(n_train, n_val, n_test, training),
                         training, config.dataset, key, survey[key]))

    speeds = speeds_from_store(suite_store_path(results_dir, suite.name), device, survey)
    cache_path = results_dir / CACHE_FILE if cache else None
    needed = [(job.speed_key, job.training, len(job.data.counts["classes"])) for job in jobs]
    used = choose_speeds(needed, speeds, device, suite.device, cache_path)
    loading_of = _loading_keys(jobs, used, device)
    loading = choose_loading({key: (job.dataset, used[job.speed_key].pixels, job.training)
                              for job, key in zip(jobs, loading_of) if key is not None},
                             suite.device, cache_path)

    extracted: set[str] = set()
    total = 0.0
    for job, key in zip(jobs, loading_of):
        speed, load = used[job.speed_key], loading.get(key) if key is not None else None
        total += speed.seconds(job.work, load)
        if job.work.extract_key is not None and job.work.extract_key not in extracted:
            # Features are extracted once per backbone, weights and dataset, then read from disk.
            extracted.add(job.work.extract_key)
            total += job.work.extract_images * speed.eval_image_s(load)
    return Estimate(seconds=total, device=device, cells=len(cells), stages=stage_count, speeds=list(used.values()),
                    loading=list(loading.values()))


@dataclass(frozen=True)
class _Job:
    speed_key: tuple[str, Any]
    work: Work
    training: TrainingConfig
    dataset: DatasetConfig
    data_key: str
    data: DataStatus


def _loading_keys(jobs: list[_Job], used: dict[tuple[str, Any], Speed], device: str) -> list[str | None]:
    """Each job's loading key, where its loaders must be timed: a calibrated speed, on data already here.

    A speed measured by earlier runs already holds their loaders' time.
    """
    keys: list[str | None] = []
    for job in jobs:
        speed = used[job.speed_key]
        timed = speed.source == CALIBRATION and speed.pixels is not None and job.data.present
        keys.append(loading_key(job.data_key, speed.pixels, job.training, device)
                    if timed else None)
    return keys
