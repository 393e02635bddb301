"""Evaluation: predictions over a loader and the test metrics every run reports."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from bench.training.device import autocast
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


def classification_metrics(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Top-1 accuracy, balanced accuracy and macro-F1, averaged over the classes the test set holds."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_recall_fscore_support

    if truth.size == 0:
        raise TrainingFailed("the test set is empty")
    present = np.unique(truth)
    with warnings.catch_warnings():
        # A class predicted but absent from the test set is expected, not worth a warning per run.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(truth, predicted)
        precision, recall, _, _ = precision_recall_fscore_support(truth, predicted, labels=present, zero_division=0)
    # F1 as the harmonic mean of precision and recall rather than scikit-learn's 2tp / (2tp + fp + fn):
    # equal in exact arithmetic, and this form keeps every stored macro-F1 the same to the last bit.
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(len(present)), where=denominator > 0)
    return float(accuracy_score(truth, predicted)), float(balanced), float(f1.mean())
