"""Backbone features: extracted once per backbone x weights x dataset x preprocessing, kept on disk.

A linear probe's backbone is fixed, so every seed, size and suite that probes the same weights
on the same images would compute the same features again. They are extracted once for the
whole training pool and the test set (the input of the classifier, captured with a forward
hook, images un-augmented as is the linear-probe convention) and stored under a content hash
of everything that shapes them. Subsets are nested index sets into the pool, so a cell picks
its rows by index.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.training.device import autocast
from bench.records import content_hash
from bench.strategies import StrategyPlan

# Bump when extraction changes what a feature vector holds; it is part of every cache key.
FEATURES_VERSION = "1"
EXTRACT_BATCH = 256


@torch.no_grad()
def extract_features(model: nn.Module, classifier: nn.Module, loader, device: torch.device, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``classifier`` receives for every image of ``loader``, and the labels, on ``device``."""
    captured: list[torch.Tensor] = []
    hook = classifier.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach().float()))
    labels: list[torch.Tensor] = []
    model.eval()
    try:
        for images, batch_labels in loader:
            with autocast(device, amp):
                model(images)
            labels.append(batch_labels)
    finally:
        hook.remove()
    if not captured:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(captured).flatten(1), torch.cat(labels).to(device)


@dataclass
class PoolFeatures:
    """Features of every training-pool image (row i is pool image i) and of the test set."""

    train: np.ndarray
    test: np.ndarray
    key: str
    cached: bool = False

    def rows(self, indices: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.train[np.asarray(indices, dtype=np.int64)])).to(device)

    def test_rows(self, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.test)).to(device)


def feature_key(identity: dict[str, Any]) -> str:
    """The cache key of a set of features: a hash of what decides their values."""
    import timm
    import torchvision

    # A library upgrade can change a hub tag's weights or a model's forward pass.
    versions = {"timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__}
    return content_hash({**identity, "libraries": versions, "features_version": FEATURES_VERSION})


def pool_features(
    model: nn.Module, classifier: nn.Module, dataset, *, identity: dict[str, Any], image_size: int,
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, amp: bool,
    cache_dir: str | Path | None, num_workers: int,
) -> PoolFeatures:
    """The pool's and the test set's features, from ``cache_dir`` when present, else extracted (and saved)."""
    shaping = {**identity, "image_size": image_size, "mean": list(mean), "std": list(std),
               # bf16 autocast changes feature values, so features made with it are a different set.
               "precision": "bf16" if amp and device.type == "cuda" else "fp32"}
    key = feature_key(shaping)
    if cache_dir is None:
        train, test = _extract_pool(model, classifier, dataset, image_size, mean, std, device, amp, num_workers)
        return PoolFeatures(train, test, key)
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.npz"
    with open(folder / f"{key}.lock", "w") as lock:
        # Two runs probing the same weights at once extract once; the second reads the file.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            try:
                with np.load(path) as stored:
                    return PoolFeatures(stored["train"], stored["test"], key, cached=True)
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a damaged cache file is rebuilt, never trusted
        train, test = _extract_pool(model, classifier, dataset, image_size, mean, std, device, amp, num_workers)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, train=train, test=test)
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps({**shaping, "key": key, "dim": int(train.shape[1])}, indent=2,
                                                        default=str))
    return PoolFeatures(train, test, key)


def _extract_pool(model, classifier, dataset, image_size, mean, std, device, amp, num_workers) -> tuple[np.ndarray, np.ndarray]:
    from bench.data import make_loader

    out = []
    for split in ("train", "test"):
        loader = make_loader(dataset, split, None, batch_size=EXTRACT_BATCH, image_size=image_size, mean=mean, std=std,
                             augment="none", shuffle=False, seed=0, device=device, num_workers=num_workers)
        features, _ = extract_features(model, classifier, loader, device, amp)
        out.append(features.cpu().numpy().astype(np.float32, copy=False))
    return out[0], out[1]


class FeatureLoader:
    """Batches of cached features, reshuffled each epoch by a seeded generator."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, *, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool = False):
        self.features, self.labels = features, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.num_samples = len(labels)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(self.num_samples, generator=self.generator) if self.shuffle else torch.arange(self.num_samples)
        order = order.to(self.features.device)
        for batch in range(len(self)):
            picked = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield self.features[picked], self.labels[picked]


def head_plan(plan: StrategyPlan) -> StrategyPlan:
    """The frozen strategy's optimizer groups, applied to the classifier alone."""
    return StrategyPlan(param_groups=plan.param_groups, frozen_names=[], eval_modules=[])
