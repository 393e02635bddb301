"""Estimates before spending: what a suite will download, and how long its cells still to run will take.

Speed comes per backbone x image size x device: from earlier runs in the suite's store when it
holds any, else from a short calibration (a few optimizer steps of the backbone, randomly
initialised, on random images at the suite's image size and batch size, timed on the device).
A cell's cost is its optimizer steps as the training loop counts them (epochs x steps per
epoch, at least ``min_steps``) times its batch, plus the images it evaluates and a start-up
cost. Early stopping can only shorten a run, so the figure is an upper estimate of the schedule.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import DataError, SuiteError
from bench.records import STATUS_DONE, STATUS_FAILED, RunSpec, content_hash
from bench.suite import Suite

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
# The logistic-regression probe's L2 sweep on cached features.
PROBE_FIT_S = 2.0
CACHE_FILE = "calibration.json"


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataStatus:
    """One dataset of a suite: its per-class counts and whether a run must download it first."""

    field: str
    name: str
    counts: dict[str, Any]
    present: bool
    root: Path | None = None
    download_bytes: int | None = None


def data_key(dataset: dict[str, Any]) -> str:
    """Which images a dataset config means (sizes, label and the download flag aside)."""
    return content_hash({k: v for k, v in dataset.items() if k not in ("sizes", "label", "download")})


def survey_data(suite: Suite) -> dict[str, DataStatus]:
    """Counts of every dataset the suite reads, without downloading; sizes checked as ``run`` checks them.

    A torchvision set not on disk yet but with ``download: true`` is counted from the table of
    known sizes and marked for download; one without it is a ``SuiteError``, as it is for ``run``.
    """
    from bench.data import DataConfig, class_counts, resolve_per_class
    from bench.data.known import download_bytes, known_counts

    entries = [(f"datasets.{i}", d, d.sizes) for i, d in enumerate(suite.datasets)]
    entries += [(f"pretrain.{name}.dataset", stage.dataset, ["all"]) for name, stage in suite.pretrain.items()]
    survey: dict[str, DataStatus] = {}
    for where, dataset, sizes in entries:
        config = dataset.model_dump()
        try:
            status = DataStatus(where, dataset.display_name, class_counts({**config, "download": False}), True)
        except DataError as exc:
            counts = known_counts(dataset.name, dataset.test_fraction) if dataset.download else None
            if counts is None:
                raise SuiteError(str(exc), file=suite.source, field=where) from None
            status = DataStatus(where, dataset.display_name, counts, False, DataConfig.from_dict(config).root,
                                download_bytes(dataset.name))
        try:
            for size in sizes:
                resolve_per_class(size, status.counts["train"], dataset.val_fraction,
                                  classes=status.counts.get("classes"))
        except DataError as exc:
            raise SuiteError(str(exc), file=suite.source, field=where) from None
        survey.setdefault(data_key(config), status)
    return survey


def downloads(survey: dict[str, DataStatus]) -> list[DataStatus]:
    """The datasets a first ``run`` will download, each once."""
    seen: dict[tuple[str, str], DataStatus] = {}
    for status in survey.values():
        if not status.present:
            seen.setdefault((status.name, str(status.root)), status)
    return list(seen.values())


@dataclass(frozen=True)
class HubWeights:
    """Hub weights a suite uses that are not in the local cache yet."""

    backbone: str
    weights: str
    where: str  # the cache they will be fetched into
    approx_bytes: int | None = None


def missing_hub_weights(suite: Suite) -> list[HubWeights]:
    """The ``hub`` weights no local cache holds: a first run fetches them, or fails offline."""
    missing = []
    for backbone in suite.backbones:
        for weights in backbone.weights:
            kind, _, tag = weights.partition(":")
            if kind != "hub":
                continue
            found = _hub_cache_state(backbone.name, tag)
            if found is not None:
                missing.append(HubWeights(backbone.name, weights, found, _weights_bytes(backbone.name)))
    return missing


def _hub_cache_state(name: str, tag: str) -> str | None:
    """None when the weights are cached, else the cache they would be fetched into."""
    import torch

    from bench.backbones import parse_backbone

    library, model = parse_backbone(name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if library == "torchvision":
        import torchvision

        enum = torchvision.models.get_model_weights(model)
        url = (enum[tag] if tag and tag != "DEFAULT" else enum.DEFAULT).url
        return None if (checkpoints / os.path.basename(url)).is_file() else str(checkpoints)
    import timm

    from bench.backbones import cached_hub_file

    full_name = f"{model}.{tag}" if tag else model
    cfg = timm.models.get_pretrained_cfg(full_name)
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import constants

        return None if cached_hub_file(full_name) else str(constants.HF_HUB_CACHE)
    url = getattr(cfg, "url", None) if cfg else None
    if url and (checkpoints / os.path.basename(url)).is_file():
        return None
    return str(checkpoints)


def _weights_bytes(name: str) -> int | None:
    """About what a float32 checkpoint of the model weighs, from its parameter count (built without memory)."""
    import torch

    from bench.backbones import parse_backbone

    library, model = parse_backbone(name)
    try:
        with torch.device("meta"):
            if library == "torchvision":
                import torchvision

                built = torchvision.models.get_model(model)
            else:
                import timm

                built = timm.create_model(model, pretrained=False)
    except Exception:  # a model that cannot be built on the meta device only loses its size
        return None
    return 4 * sum(p.numel() for p in built.parameters())


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


def schedule(n_train: int, n_val: int, n_test: int, training: dict[str, Any]) -> Work:
    """The training loop's schedule for ``n_train`` images, as ``bench.train.fit`` counts it."""
    from bench.train import MAX_VALIDATIONS

    batch = int(training["batch_size"])
    steps_per_epoch = n_train // batch if n_train > batch else 1
    epochs = max(int(training["epochs"]), math.ceil((training.get("min_steps") or 0) / steps_per_epoch))
    every = max(1, math.ceil(epochs / MAX_VALIDATIONS))
    validations = epochs // every + (epochs % every != 0)
    return Work(
        train_images=epochs * steps_per_epoch * min(batch, n_train),
        eval_images=n_val * validations + n_test,
        time_budget=training.get("time_budget"),
    )


def _split_sizes(spec_dataset: dict[str, Any], size: str, counts: dict[str, Any]) -> tuple[int, int, int, int]:
    from bench.data import resolve_per_class
    from bench.data.subsets import val_per_class

    val_fraction = spec_dataset.get("val_fraction", 0.1)
    n_train = int(resolve_per_class(size, counts["train"], val_fraction).sum())
    n_val = int(val_per_class(counts["train"], val_fraction).sum())
    return n_train, n_val, int(counts["test"].sum()), int(counts["train"].sum())


def cell_work(spec: RunSpec, counts: dict[str, Any]) -> Work:
    """The work of one cell given its dataset's per-class counts."""
    from bench.strategies import get_strategy

    n_train, n_val, n_test, n_pool = _split_sizes(spec.dataset, spec.size, counts)
    strategy = get_strategy(spec.strategy)
    training = spec.training
    if strategy.fits_linear_probe(spec.strategy_params):
        key = content_hash([spec.model_name, spec.weights_identity or spec.weights, data_key(spec.dataset),
                            training.get("image_size")])
        return Work(extract_key=key, extract_images=n_pool + n_test, probe=True)
    if strategy.trains_on_features(spec.strategy_params) and training.get("feature_cache", True):
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

    def seconds(self, work: Work) -> float:
        train = work.train_images * self.train_s
        if work.time_budget is not None:
            train = min(train, work.time_budget)
        probe = PROBE_FIT_S if work.probe else 0.0
        return self.startup_s + train + work.eval_images * self.forward_s + probe

    def describe(self) -> str:
        size = f"{self.pixels} px" if self.pixels else (f"{self.image_size} px" if self.image_size else "its own size")
        return (f"{self.model} at {size} on {self.device}: {_per_image(self.train_s)} per training image, "
                f"from {self.detail}")


def device_label(requested: str) -> str:
    """The device a run would use, named as runs record it."""
    import torch

    from bench.device import resolve_device

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
            n_train, n_val, n_test, _ = _split_sizes(spec.dataset, spec.size, status.counts)
            if n_test and row.eval_s:
                forward_s = float(row.eval_s) / n_test
                rest -= (schedule(n_train, n_val, 0, spec.training).eval_images) * forward_s
        samples.setdefault((spec.model_name, spec.training.get("image_size")), []).append((train_s, forward_s, rest))
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


def calibrate(model_name: str, image_size: int | None, training: dict[str, Any], device_name: str,
              num_classes: int) -> Speed:
    """Time a few optimizer steps and a forward pass of the backbone on random images."""
    import torch
    import torch.nn.functional as F

    from bench.backbones import build_backbone
    from bench.device import autocast, resolve_device

    device = resolve_device(device_name)
    label = device_label(device_name)
    started = time.perf_counter()
    # Random init: the speed is the same as with pretrained weights, and needs no download.
    backbone = build_backbone(model_name, "none", num_classes)
    pixels = int(image_size or backbone.input_size)
    model = backbone.model.to(device)
    channels_last = device.type == "cuda" and training.get("channels_last", True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    build_s = time.perf_counter() - started
    batch = int(training["batch_size"])
    if device.type == "cpu":
        batch = min(batch, CPU_CALIBRATION_BATCH)
    amp = bool(training.get("amp", True))
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
    full = training["batch_size"]
    shown = f"batch {batch}" if batch == full else f"{batch} of the batch's {full} images"
    return Speed(model=model_name, image_size=image_size, device=label, train_s=train_s, forward_s=forward_s,
                 startup_s=STARTUP_S + build_s, source=CALIBRATION, pixels=pixels,
                 detail=f"a calibration ({len(times)} timed steps, {shown})")


def _cache_key(model: str, image_size: int | None, training: dict[str, Any], device: str) -> str:
    import torch

    return json.dumps([model, image_size, training["batch_size"], bool(training.get("amp", True)),
                       bool(training.get("channels_last", True)), device, torch.__version__, torch.get_num_threads()])


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a damaged cache only costs a new calibration
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path | None, cache: dict[str, Any]) -> None:
    # ``plan`` runs nothing and makes no folder: the cache waits until a run has made the results folder.
    if path is None or not path.parent.is_dir():
        return
    try:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # an estimate must never stop a plan; the next one calibrates again


# -- the estimate -------------------------------------------------------------------------


@dataclass
class Estimate:
    """Seconds for the cells still to run (and the pretrain stages they need), one at a time on one device."""

    seconds: float
    device: str
    cells: int
    stages: int
    speeds: list[Speed] = field(default_factory=list)

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


def _per_image(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.1f} s"


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
    from bench.pretrain import checkpoint_path

    results_dir = Path(results_dir)
    survey = survey if survey is not None else survey_data(suite)
    if statuses is None:
        from bench.store import ResultStore

        path = results_dir / f"{suite.name}.db"
        statuses = ResultStore(path, readonly=True).statuses() if path.is_file() else {}
    device = device_label(suite.device)
    cells = pending_cells(suite, statuses, retry_failed=retry_failed)

    # (speed key, work, training, classes) for each cell and each pretrain stage still to train.
    jobs: list[tuple[tuple[str, Any], Work, dict[str, Any], int]] = []
    for cell in cells:
        counts = survey[data_key(cell.dataset)].counts
        jobs.append(((cell.model_name, cell.training.get("image_size")), cell_work(cell, counts), cell.training,
                     len(counts["classes"])))
    stages = {c.pretrain["key"]: c.pretrain for c in cells if c.pretrain}
    stage_count = 0
    for stage in stages.values():
        if checkpoint_path(results_dir / "pretrained", stage).is_file():
            continue
        stage_count += 1
        config = stage["config"]
        counts = survey[data_key(config["dataset"])].counts
        n_train, n_val, n_test, _ = _split_sizes(config["dataset"], "all", counts)
        training = config["training"]
        jobs.append(((stage["backbone"], training.get("image_size")), schedule(n_train, n_val, n_test, training),
                     training, len(counts["classes"])))

    speeds = speeds_from_store(results_dir / f"{suite.name}.db", device, survey)
    cache_path = results_dir / CACHE_FILE if cache else None
    cached = _read_cache(cache_path)
    used: dict[tuple[str, Any], Speed] = {}
    for key, _, training, classes in jobs:
        if key in used:
            continue
        if key in speeds:
            used[key] = speeds[key]
            continue
        cache_key = _cache_key(key[0], key[1], training, device)
        if cache_key in cached:
            entry = cached[cache_key]
            used[key] = Speed(**{**entry, "detail": f"{entry['detail']}, kept in {cache_path}"})
            continue
        used[key] = calibrate(key[0], key[1], training, suite.device, classes)
        cached[cache_key] = used[key].__dict__
        _write_cache(cache_path, cached)

    extracted: set[str] = set()
    total = 0.0
    for key, work, _, _ in jobs:
        speed = used[key]
        total += speed.seconds(work)
        if work.extract_key is not None and work.extract_key not in extracted:
            # Features are extracted once per backbone, weights and dataset, then read from disk.
            extracted.add(work.extract_key)
            total += work.extract_images * speed.forward_s
    return Estimate(seconds=total, device=device, cells=len(cells), stages=stage_count, speeds=list(used.values()))
