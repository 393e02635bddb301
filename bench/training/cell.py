"""One run: fit and evaluate a ``RunSpec``, return a ``RunResult``.

The run's entry point: load the data and its subset, build the backbone, hand it to the
strategy's phases (the loop in ``bench.training.loop``, or the converged linear probe on cached
features), then test once on the fixed test set (``bench.training.evaluate``). Known failures come back
as a failed result, never raised, so one bad cell never stops a suite.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.backbones import Backbone, build_backbone, count_parameters
from bench.config import TrainingConfig
from bench.data import ImageDataset, load_dataset, make_loader, select_subset
from bench.data.registry import folder_fingerprint
from bench.training.device import library_versions, peak_memory_mb, resolve_device, seed_everything
from bench.training.evaluate import classification_metrics, predict
from bench.failures import TrainingFailed, describe, normalise_error
from bench.training.health import NOT_CONVERGED, run_flags
from bench.training.loop import (
    STOP_PATIENCE, EpochCallback, FitOutcome, assert_unchanged, fit, fit_frozen_head, snapshot_frozen,
)
from bench.training.loop import MAX_VALIDATIONS as MAX_VALIDATIONS, build_optimizer as build_optimizer  # re-exported
from bench.records import STATUS_DONE, TEST_METRICS, EpochRecord, RunResult, RunSpec
from bench.strategies import get_strategy

MAX_NOTES = 50


def _shifted(on_epoch: EpochCallback | None, offset: int, later: int) -> EpochCallback | None:
    """Report a phase's epochs as epochs of the whole run (``later``: epochs of the phases after it)."""
    if on_epoch is None:
        return None
    return lambda record, total: on_epoch(dataclasses.replace(record, epoch=record.epoch + offset), offset + total + later)


@lru_cache(maxsize=4)
def _cached_dataset(config_json: str, folder_state: tuple[Any, ...]) -> ImageDataset:
    # Several cells in one process (a warm worker, the in-process executor, a pretrain stage)
    # share one load; ``folder_state`` is only part of the key.
    return load_dataset(json.loads(config_json))


def dataset_for(config: dict[str, Any]) -> ImageDataset:
    """The dataset a config names, loaded once per process while its image folder stays the same.

    A process that runs many cells must see what a fresh process would: a folder that gained,
    lost or renamed files (or vanished) since the last load is loaded again.
    """
    folder = config.get("path")
    state = folder_fingerprint(str(Path(folder).expanduser())) if folder else ()
    return _cached_dataset(json.dumps(config, sort_keys=True), state)


def prepare(
    spec_model: str, weights: str, dataset: ImageDataset, training: TrainingConfig, seed: int,
    device: torch.device, weights_file: str | Path | None,
) -> tuple[Backbone, int]:
    """Build the backbone on ``device`` and settle the image size the run uses."""
    seed_everything(seed)
    backbone = build_backbone(spec_model, weights, dataset.num_classes, weights_file=weights_file)
    image_size = training.image_size or backbone.input_size
    return backbone, int(image_size)


def run(
    spec: RunSpec, *, weights_file: str | Path | None = None, on_epoch: EpochCallback | None = None,
    features_dir: str | Path | None = None,
) -> RunResult:
    """Train and evaluate one cell. Known failures come back as a failed result, never raised.

    ``features_dir`` is where a linear probe keeps the backbone features it extracts, shared by
    every cell that probes the same weights on the same images; None keeps them in memory only.
    """
    started_at = time.time()
    result = RunResult(run_id=spec.run_id, status="failed", started_at=started_at, batch_size=spec.training_config.batch_size)
    try:
        train_cell(spec, result, weights_file=weights_file, on_epoch=on_epoch, features_dir=features_dir)
        missing = [m for m in TEST_METRICS if getattr(result, m) is None]
        if missing:
            raise TrainingFailed(f"run ended without {', '.join(missing)}")
        if not all(math.isfinite(getattr(result, m)) for m in TEST_METRICS):
            raise TrainingFailed("run ended with non-finite test metrics")
        result.status = STATUS_DONE
    except Exception as exc:  # a bug or a library error keeps its traceback for the report
        error, result.traceback = describe(exc)
        result.status, result.error = "failed", normalise_error(error)
    result.finished_at = time.time()
    result.wall_s = result.finished_at - started_at
    return result


def train_cell(
    spec: RunSpec, result: RunResult, *, weights_file: str | Path | None = None,
    on_epoch: EpochCallback | None = None, features_dir: str | Path | None = None,
) -> nn.Module:
    """Fit and test one cell into ``result`` and return the trained model; failures are raised.

    ``run`` turns the failures into a failed result; the pretrain stage lets them fail the stage.
    """
    device = resolve_device(spec.device)
    result.device = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
    result.versions = library_versions(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    training = spec.training_config
    dataset = dataset_for(spec.dataset)
    subset = select_subset(dataset.train_labels, spec.size, spec.seed, spec.dataset_config.val_fraction)
    result.train_indices, result.val_indices = subset.train.tolist(), subset.val.tolist()
    result.notes = dataset.problems[:MAX_NOTES] + (
        [f"... and {len(dataset.problems) - MAX_NOTES} more"] if len(dataset.problems) > MAX_NOTES else []
    )

    backbone, image_size = prepare(spec.model_name, spec.weights, dataset, training, spec.seed, device, weights_file)
    strategy = get_strategy(spec.strategy)
    model = backbone.model.to(device)
    if device.type == "cuda" and training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result.total_params = count_parameters(model)
    if strategy.fits_linear_probe(spec.strategy_params):
        _probe_into(spec, result, dataset, subset, backbone, image_size, device, features_dir, on_epoch)
        return model

    frozen_fast_path = strategy.trains_on_features(spec.strategy_params) and training.feature_cache
    train_loader, val_loader, test_loader = make_loaders(
        dataset, subset.train, subset.val, backbone, training, image_size, device, spec.seed,
        augment="none" if frozen_fast_path else training.augment,
        drop_last=not frozen_fast_path,  # features are extracted for every image; batches drop later
    )
    phases = strategy.phases(backbone, spec.strategy_params, lr=training.resolved_lr,
                             backbone_lr_scale=training.backbone_lr_scale, epochs=training.epochs)
    trained: dict[int, int] = {}
    outcome = FitOutcome([], None, 0.0, 0)
    for index, phase in enumerate(phases):
        later = sum(p.epochs for p in phases[index + 1:])
        plan = phase.make_plan()
        trained.update((id(p), p.numel()) for group in plan.param_groups for p in group["params"])
        frozen = snapshot_frozen(model, plan)
        phase_training: dict[str, Any] = {"epochs": phase.epochs}
        if training.min_steps:
            phase_training["min_steps"] = round(training.min_steps * phase.epochs / training.epochs)
        if training.time_budget:
            phase_training["time_budget"] = max(1e-3, training.time_budget - outcome.train_s)
        phase_training = training.model_copy(update=phase_training)
        if frozen_fast_path:
            step = fit_frozen_head(model, backbone, plan, train_loader, val_loader, phase_training, device, spec.seed,
                                   _shifted(on_epoch, len(outcome.epochs), later))
        else:
            step = fit(model, plan, train_loader, val_loader, phase_training, device,
                       on_epoch=_shifted(on_epoch, len(outcome.epochs), later))
        assert_unchanged(model, frozen)
        outcome = outcome.then(step)
        if step.stopped_early and training.time_budget and outcome.train_s >= training.time_budget:
            break
    result.trainable_params = sum(trained.values())
    result.epochs, result.val_acc = outcome.epochs, outcome.best_val_acc
    result.train_s, result.epochs_run, result.stopped_early = outcome.train_s, len(outcome.epochs), outcome.stopped_early
    result.images_per_s = outcome.images_seen / outcome.train_s if outcome.train_s > 0 else None
    result.flags = run_flags(outcome.epochs, dataset.num_classes, len(subset.val),
                             stopped_by_patience=outcome.stopped_by == STOP_PATIENCE)

    eval_started = time.perf_counter()
    predicted, truth = predict(model, test_loader, device, training.amp)
    result.eval_s = time.perf_counter() - eval_started
    result.test_acc, result.test_balanced_acc, result.test_macro_f1 = classification_metrics(predicted, truth)
    result.peak_mem_mb = peak_memory_mb(device)
    return model


def _probe_into(spec: RunSpec, result: RunResult, dataset: ImageDataset, subset, backbone: Backbone, image_size: int,
                device: torch.device, features_dir, on_epoch: EpochCallback | None) -> None:
    """The linear probe: cached features, scaling and L2 strength chosen on validation, test on the chosen fit."""
    from bench.training.features import pool_features
    from bench.training.logme import logme
    from bench.training.probe import sweep_probe

    training = spec.training_config
    started = time.perf_counter()
    identity = {"model": spec.model_name, "weights": spec.weights_identity or spec.weights,
                "dataset": spec.dataset_config.data_identity()}
    features = pool_features(
        backbone.model, backbone.classifier, dataset, device=device, amp=training.amp, image_size=image_size,
        identity=identity, mean=backbone.mean, std=backbone.std, cache_dir=features_dir,
        num_workers=training.num_workers,
    )
    extract_s = time.perf_counter() - started
    labels = torch.as_tensor(dataset.train_labels, device=device)
    train_rows, val_rows = torch.as_tensor(subset.train, device=device), torch.as_tensor(subset.val, device=device)
    probe = sweep_probe(features.rows(subset.train, device), labels[train_rows],
                        features.rows(subset.val, device), labels[val_rows], dataset.num_classes)
    train_s = time.perf_counter() - started
    record = EpochRecord(epoch=1, train_loss=probe.train_loss, train_acc=probe.train_acc, val_acc=probe.val_acc,
                         lr=0.0, seconds=train_s)
    if on_epoch is not None:
        on_epoch(record, 1)
    result.epochs, result.val_acc, result.epochs_run = [record], probe.val_acc, 1
    result.train_s = train_s
    result.images_per_s = len(subset.train) / train_s if train_s > 0 else None
    result.trainable_params = probe.weight.numel() + probe.bias.numel()
    result.flags = run_flags([record], dataset.num_classes, len(subset.val), stopped_by_patience=False)
    if not probe.converged:
        result.flags.append(NOT_CONVERGED)
    result.details = {
        "probe_l2": probe.l2, "probe_scaling": probe.scaling, "probe_path": probe.path, "features": features.key,
        "features_cached": features.cached, "extract_s": extract_s,
        "logme": logme(features.train[subset.train], dataset.train_labels[subset.train]),
    }

    eval_started = time.perf_counter()
    # The classifier applied to its own input: the test features are exactly what it would see, and
    # the probe scales them as it scaled the training rows.
    predicted = probe.logits(features.test_rows(device)).argmax(dim=1).cpu().numpy()
    result.eval_s = time.perf_counter() - eval_started
    result.test_acc, result.test_balanced_acc, result.test_macro_f1 = classification_metrics(predicted, dataset.test_labels)
    result.peak_mem_mb = peak_memory_mb(device)


def make_loaders(
    dataset: ImageDataset, train: np.ndarray, val: np.ndarray, backbone: Backbone, training: TrainingConfig,
    image_size: int, device: torch.device, seed: int, *, augment: str, drop_last: bool = True,
):
    """Train (shuffled, augmented), validation and fixed test loaders for one run."""
    common = dict(image_size=image_size, mean=backbone.mean, std=backbone.std, device=device,
                  num_workers=training.num_workers, channels_last=training.channels_last)
    batch = training.batch_size
    eval_batch = training.eval_batch_size or 2 * batch
    train_loader = make_loader(dataset, "train", train, batch_size=batch, augment=augment, shuffle=True, seed=seed,
                               drop_last=drop_last and len(train) > batch, **common)
    val_loader = make_loader(dataset, "train", val, batch_size=eval_batch, augment="none", shuffle=False, seed=seed,
                             **common)
    test_loader = make_loader(dataset, "test", np.arange(len(dataset.test_labels)), batch_size=eval_batch,
                              augment="none", shuffle=False, seed=0, **common)
    return train_loader, val_loader, test_loader

