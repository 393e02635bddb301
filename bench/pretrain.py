"""The pretrain stage: train a backbone from scratch on a source dataset once, cache the weights.

A checkpoint's file name carries the hash of the backbone, the stage's config and the
training version, so any change trains a new one and an unchanged one is reused across
suites. Writing goes through a temporary file and a rename under a lock, so a crash never
leaves a half-written checkpoint and two drivers never train the same one twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from bench.records import EpochRecord
from bench.strategies import Scratch


def checkpoint_path(cache_dir: str | Path, pretrain: dict[str, Any]) -> Path:
    """Where the checkpoint of a pretrain stage (as carried by a ``RunSpec``) lives."""
    backbone = re.sub(r"[^A-Za-z0-9_.-]", "_", pretrain["backbone"])
    return Path(cache_dir) / f"{backbone}-{pretrain['name']}-{pretrain['key']}.pt"


def ensure_pretrained(
    pretrain: dict[str, Any], cache_dir: str | Path, device: str = "auto",
    on_epoch: Any = None,
) -> dict[str, Any]:
    """Return the stage's checkpoint info, training it first if no finished checkpoint exists."""
    path = checkpoint_path(cache_dir, pretrain)
    path.parent.mkdir(parents=True, exist_ok=True)
    info_path = path.with_suffix(".json")
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and info_path.is_file():
            return {**json.loads(info_path.read_text()), "path": str(path), "cached": True}
        info = _train(pretrain, path, device, on_epoch)
        tmp = info_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, info_path)
    return {**info, "path": str(path), "cached": False}


def _train(pretrain: dict[str, Any], path: Path, device_name: str, on_epoch: Any) -> dict[str, Any]:
    from bench.data import select_subset
    from bench.train import (
        assert_unchanged, classification_metrics, dataset_for, fit, make_loaders, predict, prepare, resolve_device,
        snapshot_frozen,
    )

    config = pretrain["config"]
    training = config["training"]
    device = resolve_device(device_name)
    started = time.time()
    dataset = dataset_for(config["dataset"])
    subset = select_subset(dataset.train_labels, "all", 0, config["dataset"].get("val_fraction", 0.1))
    backbone, image_size = prepare(pretrain["backbone"], "none", dataset, training, 0, device, None)
    plan = Scratch().apply(backbone, {}, lr=training["lr"], backbone_lr_scale=1.0)
    model = backbone.model.to(device)
    frozen = snapshot_frozen(model, plan)
    train_loader, val_loader, test_loader = make_loaders(
        dataset, subset.train, subset.val, backbone, training, image_size, device, 0, augment=training["augment"],
    )
    outcome = fit(model, plan, train_loader, val_loader, training, device, on_epoch=on_epoch)
    assert_unchanged(model, frozen)
    predicted, truth = predict(model, test_loader, device, training["amp"])
    accuracy, _, _ = classification_metrics(predicted, truth, dataset.num_classes)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    curve: list[EpochRecord] = outcome.epochs
    return {
        "backbone": pretrain["backbone"], "stage": pretrain["name"], "key": pretrain["key"],
        "source_dataset": dataset.name, "source_classes": dataset.num_classes,
        "source_test_acc": accuracy, "best_val_acc": outcome.best_val_acc,
        "epochs": len(curve), "train_s": outcome.train_s, "wall_s": time.time() - started,
    }
