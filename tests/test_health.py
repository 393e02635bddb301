"""Run health flags: a run still climbing or stuck at chance is marked, from its own curve."""

from __future__ import annotations

import pytest

from bench.training.health import AT_CHANCE, UNDERTRAINED, chance_threshold, run_flags, still_improving
from bench.records import EpochRecord


def _curve(val_accs, train_accs=None):
    train_accs = train_accs or [0.9] * len(val_accs)
    return [EpochRecord(epoch=i + 1, train_loss=1.0, train_acc=t, val_acc=v, lr=1e-3, seconds=0.1)
            for i, (v, t) in enumerate(zip(val_accs, train_accs))]


def test_a_curve_rising_to_its_last_epochs_is_undertrained():
    rising = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    assert run_flags(_curve(rising), 10, 200, stopped_by_patience=False) == [UNDERTRAINED]


def test_a_plateau_is_healthy_and_early_stopping_is_never_undertrained():
    plateau = [0.5, 0.8, 0.9, 0.91, 0.91, 0.905, 0.91, 0.912]
    assert run_flags(_curve(plateau), 10, 200, stopped_by_patience=False) == []
    rising = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    assert run_flags(_curve(rising), 10, 200, stopped_by_patience=True) == []


def test_a_rise_of_one_validation_image_is_noise():
    # 30 validation images: one image is 3.3 points, below the two-image threshold.
    tail_of_one_image = [0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7 + 1 / 30]
    assert not still_improving(tail_of_one_image, 30)
    assert still_improving(tail_of_one_image[:-1] + [0.7 + 3 / 30], 30)


@pytest.mark.parametrize("classes, threshold", [(2, 0.55), (10, 0.19), (100, 0.02)])
def test_chance_threshold_scales_with_the_number_of_classes(classes, threshold):
    assert chance_threshold(classes) == pytest.approx(threshold)


def test_near_chance_training_or_validation_is_at_chance():
    assert AT_CHANCE in run_flags(_curve([0.11, 0.12, 0.1, 0.12]), 10, 100, stopped_by_patience=True)
    stuck_training = _curve([0.6, 0.6, 0.6, 0.6], train_accs=[0.1, 0.1, 0.12, 0.11])
    assert run_flags(stuck_training, 10, 100, stopped_by_patience=True) == [AT_CHANCE]
    assert run_flags(_curve([0.25, 0.3, 0.3, 0.3]), 10, 100, stopped_by_patience=True) == []
