"""Test metrics: scikit-learn's, averaged over the classes the test set holds, equal to a hand count."""

from __future__ import annotations

import numpy as np
import pytest

from bench.training.evaluate import classification_metrics
from bench.failures import TrainingFailed


def _by_hand(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[float, float, float]:
    """The confusion-matrix count the metrics were first computed with; stored results hold these values."""
    confusion = np.bincount(truth * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)
    true_per_class, predicted_per_class, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = true_per_class > 0
    recall = np.divide(hits, true_per_class, out=np.zeros(num_classes), where=present)
    precision = np.divide(hits, predicted_per_class, out=np.zeros(num_classes), where=predicted_per_class > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0)
    return float(hits.sum() / truth.size), float(recall[present].mean()), float(f1[present].mean())


def test_metrics_equal_the_hand_count_to_the_last_bit():
    rng = np.random.default_rng(0)
    for trial in range(500):
        classes = int(rng.integers(2, 30))
        # Every third test set holds only some classes, while predictions range over all of them.
        held = classes if trial % 3 else max(1, classes // 2)
        truth = rng.integers(0, held, int(rng.integers(1, 300)))
        predicted = np.where(rng.random(truth.size) < rng.random(), truth, rng.integers(0, classes, truth.size))
        assert classification_metrics(predicted, truth) == _by_hand(predicted, truth, classes)


def test_a_class_absent_from_the_test_set_does_not_dilute_the_averages():
    truth = np.array([0, 0, 1, 1])
    predicted = np.array([0, 2, 1, 1])  # class 2 is predicted, never present
    acc, balanced, f1 = classification_metrics(predicted, truth)
    assert acc == 0.75 and balanced == pytest.approx(0.75) and f1 == pytest.approx((2 / 3 + 1) / 2)


def test_an_empty_test_set_fails_the_run():
    with pytest.raises(TrainingFailed, match="empty"):
        classification_metrics(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
