"""The training loop every strategy and the pretrain stage share.

AdamW or SGD with no weight decay on biases and norm weights, a cosine schedule with linear
warm-up, bf16 autocast on CUDA, validation spread over the run, early stopping on validation
accuracy, a time budget, and a check that nothing frozen moved.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.backbones import Backbone
from bench.config import TrainingConfig
from bench.training.device import autocast
from bench.training.evaluate import predict
from bench.failures import TrainingFailed, non_finite_loss
from bench.records import EpochRecord
from bench.strategies import StrategyPlan

EpochCallback = Callable[[EpochRecord, int], None]

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


def build_optimizer(plan: StrategyPlan, training: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the plan's groups; no weight decay on biases and norm weights."""
    groups = []
    for group in plan.param_groups:
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        for params, wd in ((decay, training.weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": group["lr"], "weight_decay": wd, "name": group["name"]})
    if training.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=training.momentum, nesterov=True)
    return torch.optim.AdamW(groups)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor



def epoch_schedule(steps_per_epoch: int, epochs: int, min_steps: int | None) -> tuple[int, int]:
    """The epochs a run trains (at least ``epochs``, and at least ``min_steps`` optimizer steps)
    and how many epochs apart it validates (it also validates at its last)."""
    epochs = max(epochs, math.ceil((min_steps or 0) / steps_per_epoch))
    return epochs, max(1, math.ceil(epochs / MAX_VALIDATIONS))


def fit(
    model: nn.Module,
    plan: StrategyPlan,
    train_loader,
    val_loader,
    training: TrainingConfig,
    device: torch.device,
    *,
    on_epoch: EpochCallback | None = None,
) -> FitOutcome:
    """Train in place; restore the weights of the best validation epoch before returning."""
    steps_per_epoch = max(1, len(train_loader))
    # A fixed epoch count gives a 5-per-class subset a handful of optimizer steps; min_steps
    # lengthens small runs so a learning curve measures data rather than training time.
    min_steps = training.min_steps or 0
    epochs, validate_every = epoch_schedule(steps_per_epoch, training.epochs, min_steps)
    optimizer = build_optimizer(plan, training)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(epochs * steps_per_epoch, int(training.warmup_epochs * steps_per_epoch))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)
    amp, budget, patience = training.amp, training.time_budget, training.patience
    # Compilation pays back over many steps of one shape; evaluation keeps the eager module.
    forward = torch.compile(model) if training.compile and device.type == "cuda" else model
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
            raise non_finite_loss(epoch)
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



def fit_frozen_head(
    model: nn.Module, backbone: Backbone, plan: StrategyPlan, train_loader, val_loader, training: TrainingConfig,
    device: torch.device, seed: int, on_epoch: EpochCallback | None,
) -> FitOutcome:
    """The linear probe on features extracted once; the extraction counts as training time."""
    from bench.training.features import FeatureLoader, extract_features, head_plan

    started = time.perf_counter()
    amp = training.amp
    train_x, train_y = extract_features(model, backbone.classifier, train_loader, device, amp)
    val_x, val_y = extract_features(model, backbone.classifier, val_loader, device, amp)
    batch = training.batch_size
    features_train = FeatureLoader(train_x, train_y, batch_size=batch, shuffle=True, seed=seed,
                                   drop_last=len(train_y) > batch)
    features_val = FeatureLoader(val_x, val_y, batch_size=4 * batch, shuffle=False, seed=seed)
    extraction_s = time.perf_counter() - started
    outcome = fit(backbone.classifier, head_plan(plan), features_train, features_val, training.model_copy(update={"amp": False}),
                  device, on_epoch=on_epoch)
    outcome.train_s += extraction_s
    return outcome
