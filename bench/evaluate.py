"""Evaluation: predictions over a loader and the test metrics every run reports."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench.device import autocast
from bench.failures import TrainingFailed


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
