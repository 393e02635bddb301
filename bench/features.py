"""The frozen fast path: run the backbone once per image, then fit the head on its features.

A linear probe's backbone is fixed, so each epoch's forward pass through it would compute
the same features again. Extracting them once (the input of the classifier, captured with a
forward hook, images un-augmented as is the linear-probe convention) turns every epoch after
into a few matrix products; on the quick suite that is most of a frozen run's time.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from bench.strategies import StrategyPlan


@torch.no_grad()
def extract_features(model: nn.Module, classifier: nn.Module, loader, device: torch.device, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``classifier`` receives for every image of ``loader``, and the labels, on ``device``."""
    from bench.train import autocast

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
