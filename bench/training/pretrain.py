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

from bench.records import STATUS_RUNNING, RunResult, RunSpec
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


def stage_spec(pretrain: dict[str, Any], device: str) -> RunSpec:
    """The stage as a cell: the backbone from random weights on the whole source training set, seed 0."""
    config = pretrain["config"]
    return RunSpec(
        run_id=pretrain["key"], suite="", backbone=pretrain["backbone"], weights="none", dataset=config["dataset"],
        size="all", strategy=Scratch.name, strategy_params={}, seed=0, training=config["training"], device=device,
        pretrain=None, model=pretrain["backbone"],
    )


def _train(pretrain: dict[str, Any], path: Path, device_name: str, on_epoch: Any) -> dict[str, Any]:
    # The stage trains through the same call as every cell, so its recipe cannot drift from theirs.
    from bench.training.cell import dataset_for, train_cell

    spec = stage_spec(pretrain, device_name)
    started = time.time()
    result = RunResult(run_id=spec.run_id, status=STATUS_RUNNING, started_at=started)
    model = train_cell(spec, result, on_epoch=on_epoch)
    dataset = dataset_for(spec.dataset)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return {
        "backbone": pretrain["backbone"], "stage": pretrain["name"], "key": pretrain["key"],
        "source_dataset": dataset.name, "source_classes": dataset.num_classes,
        "source_test_acc": result.test_acc, "best_val_acc": result.val_acc,
        "epochs": len(result.epochs), "train_s": result.train_s, "wall_s": time.time() - started,
    }
