"""What a cell costs, and how fast a backbone trains here: from earlier runs, else from a calibration.

Speed comes per backbone x image size x device: from earlier runs in the suite's store when it
holds any, else from a short calibration (a few optimizer steps of the backbone, randomly
initialised, on random images at the suite's image size and batch size, timed on the device),
kept in a small cache beside the stores. A cell's cost is its optimizer steps as the training
loop counts them (epochs x steps per epoch, at least ``min_steps``) times its batch, plus the
images it evaluates and a start-up cost.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import DatasetConfig, TrainingConfig
from bench.planning.loading import LoadSpeed, loading_key, time_loading
from bench.records import STATUS_DONE, RunSpec, content_hash
from bench.planning.survey import DataStatus, data_key

EARLIER_RUNS = "earlier runs"
CALIBRATION = "calibration"

CALIBRATION_STEPS = 3
MAX_CALIBRATION_STEPS = 50
CALIBRATION_MIN_S = 1.0
# A CPU's time per image hardly depends on the batch, and a full batch of a ResNet-50 at 224 px
# takes the better part of a minute there: calibrate on fewer images per step.
CPU_CALIBRATION_BATCH = 16
# A forward pass without gradients costs about a third of a training step's forward, backward
# and update; used when the store holds no evaluation timings.
FORWARD_SHARE = 1 / 3
# Per cell: handing the cell to a worker, its dataset and loaders (the model build is timed).
STARTUP_S = 1.0
# The logistic-regression probe's sweep of scalings and L2 strengths on cached features: one to
# four CPU seconds for 50 to 1,200 rows of 96 to 1,280 features.
PROBE_FIT_S = 3.0
CACHE_FILE = "calibration.json"
# Calibrations made by this process, by cache key: a check prices several shapes before its
# results folder exists, and one backbone at one input size is timed once.
_CALIBRATED: dict[str, Speed] = {}
_LOADING: dict[str, LoadSpeed] = {}


# -- work per cell ------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """What one cell computes: images it trains on (counting repeats), images it only evaluates."""

    train_images: int = 0
    eval_images: int = 0
    time_budget: float | None = None
    # A linear probe: features of the whole pool and test set, extracted once per key.
    extract_key: str | None = None
    extract_images: int = 0
    probe: bool = False


def schedule(n_train: int, n_val: int, n_test: int, training: TrainingConfig) -> Work:
    """The training loop's schedule for ``n_train`` images, as ``bench.training.loop.fit`` counts it."""
    from bench.training.loop import epoch_schedule

    batch = training.batch_size
    steps_per_epoch = n_train // batch if n_train > batch else 1
    epochs, every = epoch_schedule(steps_per_epoch, training.epochs, training.min_steps)
    validations = epochs // every + (epochs % every != 0)
    return Work(
        train_images=epochs * steps_per_epoch * min(batch, n_train),
        eval_images=n_val * validations + n_test,
        time_budget=training.time_budget,
    )


def split_sizes(dataset: DatasetConfig, size: str, counts: dict[str, Any]) -> tuple[int, int, int, int]:
    """Images a cell trains on, validates on and tests on at ``size``, and the whole training pool."""
    from bench.data import resolve_per_class
    from bench.data.subsets import val_per_class

    val_fraction = dataset.val_fraction
    n_train = int(resolve_per_class(size, counts["train"], val_fraction).sum())
    n_val = int(val_per_class(counts["train"], val_fraction).sum())
    return n_train, n_val, int(counts["test"].sum()), int(counts["train"].sum())


def cell_work(spec: RunSpec, counts: dict[str, Any]) -> Work:
    """The work of one cell given its dataset's per-class counts."""
    from bench.strategies import get_strategy

    n_train, n_val, n_test, n_pool = split_sizes(spec.dataset_config, spec.size, counts)
    strategy = get_strategy(spec.strategy)
    training = spec.training_config
    if strategy.fits_linear_probe(spec.strategy_params):
        key = content_hash([spec.model_name, spec.weights_identity or spec.weights, data_key(spec.dataset),
                            training.image_size])
        return Work(extract_key=key, extract_images=n_pool + n_test, probe=True)
    if strategy.trains_on_features(spec.strategy_params) and training.feature_cache:
        # The head trains on features extracted once per run; its own steps are negligible.
        return Work(eval_images=n_train + n_val + n_test)
    return schedule(n_train, n_val, n_test, training)


# -- speed --------------------------------------------------------------------------------


@dataclass
class Speed:
    """Seconds per training image, per evaluated image and per cell, for one backbone x image size x device."""

    model: str
    image_size: int | None  # the suite's setting; None: the backbone's own input size
    device: str
    train_s: float
    forward_s: float
    startup_s: float
    source: str
    detail: str
    pixels: int | None = None  # the size actually used, when known

    def seconds(self, work: Work, loading: LoadSpeed | None = None) -> float:
        """A cell's seconds; ``loading`` adds what its loaders cost, which a calibration leaves out."""
        train = work.train_images * (loading.per_train_image(self.train_s) if loading else self.train_s)
        if work.time_budget is not None:
            train = min(train, work.time_budget)
        probe = PROBE_FIT_S if work.probe else 0.0
        return self.startup_s + train + work.eval_images * self.eval_image_s(loading) + probe

    def eval_image_s(self, loading: LoadSpeed | None = None) -> float:
        return loading.per_eval_image(self.forward_s) if loading else self.forward_s

    def describe(self) -> str:
        size = f"{self.pixels} px" if self.pixels else (f"{self.image_size} px" if self.image_size else "its own size")
        return (f"{self.model} at {size} on {self.device}: {_per_image(self.train_s)} per training image, "
                f"from {self.detail}")


def device_label(requested: str) -> str:
    """The device a run would use, named as runs record it."""
    import torch

    from bench.training.device import resolve_device

    device = resolve_device(requested)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def speeds_from_store(path: Path, device: str, survey: dict[str, DataStatus]) -> dict[tuple[str, Any], Speed]:
    """Speeds measured by the finished runs of a store on ``device``, per backbone and image size."""
    from bench.store import ResultStore
    from bench.strategies import get_strategy

    if not path.is_file():
        return {}
    with ResultStore(path, readonly=True) as store:
        frame = store.frame()
        specs = {spec.run_id: spec for spec in store.specs()}
    samples: dict[tuple[str, Any], list[tuple[float, float | None, float]]] = {}
    for row in frame.itertuples(index=False):
        spec = specs.get(row.run_id)
        if spec is None or row.status != STATUS_DONE or row.device != device:
            continue
        if get_strategy(spec.strategy).trains_on_features(spec.strategy_params):
            continue  # a probe's images per second time feature extraction, not training
        if not row.images_per_s or not row.images_per_s > 0 or row.wall_s is None:
            continue
        train_s = 1.0 / row.images_per_s
        status = survey.get(data_key(spec.dataset))
        forward_s, rest = None, float(row.wall_s) - float(row.train_s or 0.0) - float(row.eval_s or 0.0)
        if status is not None:
            n_train, n_val, n_test, _ = split_sizes(spec.dataset_config, spec.size, status.counts)
            if n_test and row.eval_s:
                forward_s = float(row.eval_s) / n_test
                rest -= (schedule(n_train, n_val, 0, spec.training_config).eval_images) * forward_s
        samples.setdefault((spec.model_name, spec.training_config.image_size), []).append((train_s, forward_s, rest))
    speeds = {}
    for (model, size), rows in samples.items():
        train_s = statistics.median(r[0] for r in rows)
        forwards = [r[1] for r in rows if r[1] is not None]
        speeds[(model, size)] = Speed(
            model=model, image_size=size, device=device, train_s=train_s,
            forward_s=statistics.median(forwards) if forwards else train_s * FORWARD_SHARE,
            startup_s=max(0.0, statistics.median(r[2] for r in rows)), source=EARLIER_RUNS,
            detail=f"{len(rows)} earlier run{'s' if len(rows) != 1 else ''} in the store",
        )
    return speeds


def calibrate(model_name: str, image_size: int | None, training: TrainingConfig, device_name: str,
              num_classes: int) -> Speed:
    """Time a few optimizer steps and a forward pass of the backbone on random images."""
    import torch
    import torch.nn.functional as F

    from bench.backbones import build_backbone
    from bench.training.device import autocast, resolve_device

    device = resolve_device(device_name)
    label = device_label(device_name)
    started = time.perf_counter()
    # Random init: the speed is the same as with pretrained weights, and needs no download.
    backbone = build_backbone(model_name, "none", num_classes)
    pixels = int(image_size or backbone.input_size)
    model = backbone.model.to(device)
    channels_last = device.type == "cuda" and training.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    build_s = time.perf_counter() - started
    batch = training.batch_size
    if device.type == "cpu":
        batch = min(batch, CPU_CALIBRATION_BATCH)
    amp = training.amp
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, pixels, pixels, generator=generator).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> float:
        started = time.perf_counter()
        with autocast(device, amp):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        return time.perf_counter() - started

    model.train()
    step()  # the first step allocates and picks kernels
    times: list[float] = []
    # A CPU takes several steps to settle, a GPU a few: small models step until a second has
    # passed, large ones stop after CALIBRATION_STEPS.
    while len(times) < MAX_CALIBRATION_STEPS and (len(times) < CALIBRATION_STEPS or sum(times) < CALIBRATION_MIN_S):
        times.append(step())
    # The median of the settled half: one step slowed by a neighbour on a shared machine does not set the pace.
    train_s = statistics.median(times[len(times) // 2:]) / batch
    model.eval()
    forwards: list[float] = []
    with torch.no_grad(), autocast(device, amp):
        model(images)
        while len(forwards) < MAX_CALIBRATION_STEPS and (len(forwards) < 2 or sum(forwards) < CALIBRATION_MIN_S / 4):
            sync()
            started = time.perf_counter()
            model(images)
            sync()
            forwards.append(time.perf_counter() - started)
    forward_s = statistics.median(forwards) / batch
    if device.type == "cuda":
        # The driver keeps running after a plan or a run's first line: hand the memory back.
        model = optimizer = images = None
        torch.cuda.empty_cache()
    full = training.batch_size
    shown = f"batch {batch}" if batch == full else f"{batch} of the batch's {full} images"
    return Speed(model=model_name, image_size=image_size, device=label, train_s=train_s, forward_s=forward_s,
                 startup_s=STARTUP_S + build_s, source=CALIBRATION, pixels=pixels,
                 detail=f"a calibration ({len(times)} timed steps, {shown})")


def _cache_key(model: str, image_size: int | None, training: TrainingConfig, device: str) -> str:
    import torch

    return json.dumps([model, image_size, training.batch_size, training.amp,
                       training.channels_last, device, torch.__version__, torch.get_num_threads()])


def read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a new calibration
    return data if isinstance(data, dict) else {}


def write_cache(path: Path | None, cache: dict[str, Any]) -> None:
    # ``plan`` runs nothing and makes no folder: the cache waits until a run has made the results folder.
    if path is None or not path.parent.is_dir():
        return
    try:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # an estimate must never stop a plan; the next one calibrates again


def _per_image(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.1f} s"


def choose_speeds(
    needed: list[tuple[tuple[str, Any], TrainingConfig, int]], measured: dict[tuple[str, Any], Speed],
    device: str, requested_device: str, cache_path: Path | None,
) -> dict[tuple[str, Any], Speed]:
    """A speed per (backbone, image size) in ``needed``: measured by earlier runs, else cached, else calibrated now."""
    cached = read_cache(cache_path)
    used: dict[tuple[str, Any], Speed] = {}
    for key, training, classes in needed:
        if key in used:
            continue
        if key in measured:
            used[key] = measured[key]
            continue
        cache_key = _cache_key(key[0], key[1], training, device)
        if cache_key in cached:
            entry = cached[cache_key]
            used[key] = Speed(**{**entry, "detail": f"{entry['detail']}, kept in {cache_path}"})
            continue
        used[key] = _measure_once(cache_key, _CALIBRATED, cached, cache_path,
                                  lambda: calibrate(key[0], key[1], training, requested_device, classes))
    return used


def choose_loading(
    needed: dict[str, tuple[DatasetConfig, int, TrainingConfig]], requested_device: str, cache_path: Path | None,
) -> dict[str, LoadSpeed]:
    """A loading time per ``loading_key`` in ``needed``: cached, else timed now on the data."""
    cached = read_cache(cache_path)
    used: dict[str, LoadSpeed] = {}
    for key, (config, pixels, training) in needed.items():
        if key in cached:
            used[key] = LoadSpeed(**cached[key])
            continue
        used[key] = _measure_once(key, _LOADING, cached, cache_path,
                                  lambda: time_loading(config, pixels, training, requested_device))
    return used


def _measure_once(key: str, measured: dict[str, Any], cached: dict[str, Any], cache_path: Path | None,
                  measure: Callable[[], Any]) -> Any:
    """Measure once per process, and keep the figure in the cache file for the next one."""
    if key not in measured:
        measured[key] = measure()
    cached[key] = measured[key].__dict__
    write_cache(cache_path, cached)
    return measured[key]
