"""One run: fit and evaluate a ``RunSpec``, return a ``RunResult``.

A single training loop serves every strategy and the pretrain stage: AdamW or SGD, a cosine
schedule with linear warm-up, bf16 autocast and channels_last on CUDA, early stopping on
validation accuracy, a time budget, and a check at the end that nothing frozen moved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.backbones import Backbone, build_backbone, count_parameters
from bench.device import autocast, library_versions, peak_memory_mb, resolve_device, seed_everything
from bench.data import ImageDataset, load_dataset, make_loader, select_subset
from bench.data.registry import folder_fingerprint
from bench.errors import BenchError
from bench.health import NOT_CONVERGED, run_flags
from bench.records import STATUS_DONE, EpochRecord, RunResult, RunSpec
from bench.strategies import StrategyPlan, get_strategy

EpochCallback = Callable[[EpochRecord, int], None]
MAX_NOTES = 50


class TrainingFailed(BenchError):
    """The run itself went wrong: NaN loss, a frozen weight moved, no metrics."""


STOP_PATIENCE = "patience"
STOP_BUDGET = "time budget"
# Validating after every one-step epoch of a tiny subset would cost more than training it; a
# run validates at most this many times, evenly spread, and always at its last epoch.
MAX_VALIDATIONS = 40


@dataclass
class FitOutcome:
    epochs: list[EpochRecord]
    best_val_acc: float | None
    train_s: float
    images_seen: int
    stopped_by: str | None = None  # STOP_PATIENCE, STOP_BUDGET, or None for the full schedule

    @property
    def stopped_early(self) -> bool:
        return self.stopped_by is not None

    def then(self, later: FitOutcome) -> FitOutcome:
        """This phase followed by ``later``: curves joined, epochs renumbered, times added."""
        offset = len(self.epochs)
        shifted = [dataclasses.replace(e, epoch=e.epoch + offset) for e in later.epochs]
        # The last phase's weights are what gets tested, so its best validation is the one reported.
        best = later.best_val_acc if later.best_val_acc is not None else self.best_val_acc
        return FitOutcome(self.epochs + shifted, best, self.train_s + later.train_s,
                          self.images_seen + later.images_seen, later.stopped_by)


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


# -- the loop ------------------------------------------------------------------------------


def build_optimizer(plan: StrategyPlan, training: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD over the plan's groups; no weight decay on biases and norm weights."""
    groups = []
    for group in plan.param_groups:
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        for params, wd in ((decay, training["weight_decay"]), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": group["lr"], "weight_decay": wd, "name": group["name"]})
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(groups, momentum=training["momentum"], nesterov=True)
    return torch.optim.AdamW(groups)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels over a loader, model in eval mode."""
    model.eval()
    predicted, truth = [], []
    for images, labels in loader:
        with autocast(device, amp):
            logits = model(images)
        predicted.append(logits.argmax(dim=1).cpu())
        truth.append(labels.cpu())
    if not predicted:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return torch.cat(predicted).numpy(), torch.cat(truth).numpy()


def fit(
    model: nn.Module,
    plan: StrategyPlan,
    train_loader,
    val_loader,
    training: dict[str, Any],
    device: torch.device,
    *,
    on_epoch: EpochCallback | None = None,
) -> FitOutcome:
    """Train in place; restore the weights of the best validation epoch before returning."""
    steps_per_epoch = max(1, len(train_loader))
    # A fixed epoch count gives a 5-per-class subset a handful of optimizer steps; min_steps
    # lengthens small runs so a learning curve measures data rather than training time.
    min_steps = training.get("min_steps") or 0
    epochs = max(training["epochs"], math.ceil(min_steps / steps_per_epoch))
    validate_every = max(1, math.ceil(epochs / MAX_VALIDATIONS))
    optimizer = build_optimizer(plan, training)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(epochs * steps_per_epoch, int(training["warmup_epochs"] * steps_per_epoch))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=training["label_smoothing"])
    amp, budget, patience = training["amp"], training.get("time_budget"), training.get("patience")
    # Compilation pays back over many steps of one shape; evaluation keeps the eager module.
    forward = torch.compile(model) if training.get("compile") and device.type == "cuda" else model
    history: list[EpochRecord] = []
    best_acc, best_state, since_best = None, None, 0
    images_seen, train_s, stopped_by, step = 0, 0.0, None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        for module in plan.eval_modules:
            module.eval()
        started = time.perf_counter()
        # Sums stay on the device: an .item() per step would stall the GPU queue.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for images, labels in train_loader:
            with autocast(device, amp):
                logits = forward(images)
                loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            batch = labels.shape[0]
            loss_sum += loss.detach().float() * batch
            correct += (logits.argmax(dim=1) == labels).sum()
            seen += batch
            if budget is not None and train_s + time.perf_counter() - started > budget:
                stopped_by = STOP_BUDGET
                break
        if not math.isfinite(loss_sum.item()):
            raise TrainingFailed(f"loss became non-finite during epoch {epoch}")
        epoch_s = time.perf_counter() - started
        train_s += epoch_s
        images_seen += seen
        val_acc = None
        last = epoch == epochs or stopped_by is not None
        if val_loader is not None and val_loader.num_samples and (epoch % validate_every == 0 or last):
            predicted, truth = predict(model, val_loader, device, amp)
            val_acc = float((predicted == truth).mean())
        record = EpochRecord(
            epoch=epoch, train_loss=loss_sum.item() / max(1, seen), train_acc=correct.item() / max(1, seen),
            val_acc=val_acc, lr=optimizer.param_groups[0]["lr"], seconds=epoch_s,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record, epochs)
        if val_acc is not None:
            if best_acc is None or val_acc > best_acc:
                best_acc, since_best = val_acc, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        # Patience counts validations, so a run validated every few epochs waits as many checks.
        if stopped_by is None and patience is not None and since_best >= patience and step >= min_steps:
            stopped_by = STOP_PATIENCE
        if stopped_by is not None:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitOutcome(history, best_acc, train_s, images_seen, stopped_by)


def snapshot_frozen(model: nn.Module, plan: StrategyPlan) -> dict[str, torch.Tensor]:
    """Copies of every frozen parameter and of the buffers of modules kept in eval mode."""
    named = dict(model.named_parameters())
    snapshot = {name: named[name].detach().clone() for name in plan.frozen_names}
    eval_ids = {id(m) for m in plan.eval_modules}
    for module_name, module in model.named_modules():
        if id(module) in eval_ids:
            for buffer_name, buffer in module.named_buffers(recurse=False):
                snapshot[f"{module_name}.{buffer_name}"] = buffer.detach().clone()
    return snapshot


def assert_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Fail the run if any frozen tensor differs by a single bit."""
    current = dict(model.named_parameters()) | dict(model.named_buffers())
    moved = [name for name, before in snapshot.items() if not torch.equal(current[name].detach(), before)]
    if moved:
        raise TrainingFailed(f"{len(moved)} frozen tensors changed during training (first: {moved[0]})")


def prepare(
    spec_model: str, weights: str, dataset: ImageDataset, training: dict[str, Any], seed: int,
    device: torch.device, weights_file: str | Path | None,
) -> tuple[Backbone, int]:
    """Build the backbone on ``device`` and settle the image size the run uses."""
    seed_everything(seed)
    backbone = build_backbone(spec_model, weights, dataset.num_classes, weights_file=weights_file)
    image_size = training.get("image_size") or backbone.input_size
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
    result = RunResult(run_id=spec.run_id, status="failed", started_at=started_at, batch_size=spec.training["batch_size"])
    try:
        _run_into(spec, result, weights_file, on_epoch, features_dir)
        missing = [m for m in ("test_acc", "test_balanced_acc", "test_macro_f1") if getattr(result, m) is None]
        if missing:
            raise TrainingFailed(f"run ended without {', '.join(missing)}")
        if not all(math.isfinite(getattr(result, m)) for m in ("test_acc", "test_balanced_acc", "test_macro_f1")):
            raise TrainingFailed("run ended with non-finite test metrics")
        result.status = STATUS_DONE
    except BenchError as exc:
        result.status, result.error = "failed", str(exc)
    except torch.cuda.OutOfMemoryError as exc:
        result.status, result.error = "failed", f"CUDA out of memory: {str(exc).splitlines()[0]}"
        result.traceback = traceback.format_exc()
    except Exception as exc:  # a bug or a library error: keep the traceback for the report
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
        result.traceback = traceback.format_exc()
    result.finished_at = time.time()
    result.wall_s = result.finished_at - started_at
    return result


def _run_into(spec: RunSpec, result: RunResult, weights_file, on_epoch, features_dir) -> None:
    device = resolve_device(spec.device)
    result.device = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
    result.versions = library_versions(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    training = spec.training
    dataset = dataset_for(spec.dataset)
    subset = select_subset(dataset.train_labels, spec.size, spec.seed, spec.dataset.get("val_fraction", 0.1))
    result.train_indices, result.val_indices = subset.train.tolist(), subset.val.tolist()
    result.notes = dataset.problems[:MAX_NOTES] + (
        [f"... and {len(dataset.problems) - MAX_NOTES} more"] if len(dataset.problems) > MAX_NOTES else []
    )

    backbone, image_size = prepare(spec.model_name, spec.weights, dataset, training, spec.seed, device, weights_file)
    strategy = get_strategy(spec.strategy)
    model = backbone.model.to(device)
    if device.type == "cuda" and training.get("channels_last", True):
        model = model.to(memory_format=torch.channels_last)
    result.total_params = count_parameters(model)
    if strategy.fits_linear_probe(spec.strategy_params):
        _probe_into(spec, result, dataset, subset, backbone, image_size, device, features_dir, on_epoch)
        return

    frozen_fast_path = strategy.trains_on_features(spec.strategy_params) and training.get("feature_cache", True)
    train_loader, val_loader, test_loader = make_loaders(
        dataset, subset.train, subset.val, backbone, training, image_size, device, spec.seed,
        augment="none" if frozen_fast_path else training["augment"],
        drop_last=not frozen_fast_path,  # features are extracted for every image; batches drop later
    )
    phases = strategy.phases(backbone, spec.strategy_params, lr=training["lr"],
                             backbone_lr_scale=training["backbone_lr_scale"], epochs=training["epochs"])
    trained: dict[int, int] = {}
    outcome = FitOutcome([], None, 0.0, 0)
    for index, phase in enumerate(phases):
        later = sum(p.epochs for p in phases[index + 1:])
        plan = phase.make_plan()
        trained.update((id(p), p.numel()) for group in plan.param_groups for p in group["params"])
        frozen = snapshot_frozen(model, plan)
        phase_training = {**training, "epochs": phase.epochs}
        if training.get("min_steps"):
            phase_training["min_steps"] = round(training["min_steps"] * phase.epochs / training["epochs"])
        if training.get("time_budget"):
            phase_training["time_budget"] = max(1e-3, training["time_budget"] - outcome.train_s)
        if frozen_fast_path:
            step = fit_frozen_head(model, backbone, plan, train_loader, val_loader, phase_training, device, spec.seed,
                                   _shifted(on_epoch, len(outcome.epochs), later))
        else:
            step = fit(model, plan, train_loader, val_loader, phase_training, device,
                       on_epoch=_shifted(on_epoch, len(outcome.epochs), later))
        assert_unchanged(model, frozen)
        outcome = outcome.then(step)
        if step.stopped_early and training.get("time_budget") and outcome.train_s >= training["time_budget"]:
            break
    result.trainable_params = sum(trained.values())
    result.epochs, result.val_acc = outcome.epochs, outcome.best_val_acc
    result.train_s, result.epochs_run, result.stopped_early = outcome.train_s, len(outcome.epochs), outcome.stopped_early
    result.images_per_s = outcome.images_seen / outcome.train_s if outcome.train_s > 0 else None
    result.flags = run_flags(outcome.epochs, dataset.num_classes, len(subset.val),
                             stopped_by_patience=outcome.stopped_by == STOP_PATIENCE)

    eval_started = time.perf_counter()
    predicted, truth = predict(model, test_loader, device, training["amp"])
    result.eval_s = time.perf_counter() - eval_started
    result.test_acc, result.test_balanced_acc, result.test_macro_f1 = classification_metrics(predicted, truth, dataset.num_classes)
    result.peak_mem_mb = peak_memory_mb(device)


def _probe_into(spec: RunSpec, result: RunResult, dataset: ImageDataset, subset, backbone: Backbone, image_size: int,
                device: torch.device, features_dir, on_epoch: EpochCallback | None) -> None:
    """The linear probe: cached features, an L2 sweep chosen on validation, test on the chosen fit."""
    from bench.features import pool_features
    from bench.logme import logme
    from bench.probe import sweep_probe

    training = spec.training
    started = time.perf_counter()
    data_identity = {k: v for k, v in spec.dataset.items() if k not in ("sizes", "label", "download")}
    features = pool_features(
        backbone.model, backbone.classifier, dataset, device=device, amp=training["amp"], image_size=image_size,
        identity={"model": spec.model_name, "weights": spec.weights_identity or spec.weights, "dataset": data_identity},
        mean=backbone.mean, std=backbone.std, cache_dir=features_dir, num_workers=training.get("num_workers", 0),
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
        "probe_l2": probe.l2, "probe_path": probe.path, "features": features.key,
        "features_cached": features.cached, "extract_s": extract_s,
        "logme": logme(features.train[subset.train], dataset.train_labels[subset.train]),
    }

    eval_started = time.perf_counter()
    # The classifier applied to its own input: the test features are exactly what it would see.
    test_x = features.test_rows(device).to(probe.weight.dtype)
    predicted = (test_x @ probe.weight.T + probe.bias).argmax(dim=1).cpu().numpy()
    result.eval_s = time.perf_counter() - eval_started
    result.test_acc, result.test_balanced_acc, result.test_macro_f1 = classification_metrics(
        predicted, dataset.test_labels, dataset.num_classes
    )
    result.peak_mem_mb = peak_memory_mb(device)


def make_loaders(
    dataset: ImageDataset, train: np.ndarray, val: np.ndarray, backbone: Backbone, training: dict[str, Any],
    image_size: int, device: torch.device, seed: int, *, augment: str, drop_last: bool = True,
):
    """Train (shuffled, augmented), validation and fixed test loaders for one run."""
    common = dict(image_size=image_size, mean=backbone.mean, std=backbone.std, device=device,
                  num_workers=training.get("num_workers", 0), channels_last=training.get("channels_last", True))
    batch = training["batch_size"]
    eval_batch = training.get("eval_batch_size") or 2 * batch
    train_loader = make_loader(dataset, "train", train, batch_size=batch, augment=augment, shuffle=True, seed=seed,
                               drop_last=drop_last and len(train) > batch, **common)
    val_loader = make_loader(dataset, "train", val, batch_size=eval_batch, augment="none", shuffle=False, seed=seed,
                             **common)
    test_loader = make_loader(dataset, "test", np.arange(len(dataset.test_labels)), batch_size=eval_batch,
                              augment="none", shuffle=False, seed=0, **common)
    return train_loader, val_loader, test_loader


def fit_frozen_head(
    model: nn.Module, backbone: Backbone, plan: StrategyPlan, train_loader, val_loader, training: dict[str, Any],
    device: torch.device, seed: int, on_epoch: EpochCallback | None,
) -> FitOutcome:
    """The linear probe on features extracted once; the extraction counts as training time."""
    from bench.features import FeatureLoader, extract_features, head_plan

    started = time.perf_counter()
    amp = training["amp"]
    train_x, train_y = extract_features(model, backbone.classifier, train_loader, device, amp)
    val_x, val_y = extract_features(model, backbone.classifier, val_loader, device, amp)
    batch = training["batch_size"]
    features_train = FeatureLoader(train_x, train_y, batch_size=batch, shuffle=True, seed=seed,
                                   drop_last=len(train_y) > batch)
    features_val = FeatureLoader(val_x, val_y, batch_size=4 * batch, shuffle=False, seed=seed)
    extraction_s = time.perf_counter() - started
    outcome = fit(backbone.classifier, head_plan(plan), features_train, features_val, {**training, "amp": False},
                  device, on_epoch=on_epoch)
    outcome.train_s += extraction_s
    return outcome


def classification_metrics(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[float, float, float]:
    """Top-1 accuracy, balanced accuracy and macro-F1 from a confusion matrix."""
    if truth.size == 0:
        raise TrainingFailed("the test set is empty")
    confusion = np.bincount(truth * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)
    true_per_class = confusion.sum(axis=1)
    predicted_per_class = confusion.sum(axis=0)
    hits = np.diag(confusion)
    present = true_per_class > 0
    recall = np.divide(hits, true_per_class, out=np.zeros(num_classes), where=present)
    precision = np.divide(hits, predicted_per_class, out=np.zeros(num_classes), where=predicted_per_class > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return float(hits.sum() / truth.size), float(recall[present].mean()), float(f1[present].mean())
