"""Benchmark: batches from the in-memory device loader vs a per-image DataLoader pipeline.

Run with ``pytest tests/perf --benchmark-enable``; both sides produce the same batches (the
digits training pool resized to 32x32, light augmentation, normalised), so the ratio of their
means is the speed-up of the fast path. Without ``--benchmark-enable`` each runs once as a
correctness check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from bench.data import load_dataset, make_loader

SIZE, BATCH = 32, 64
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits"})


def _epoch(loader) -> int:
    seen = 0
    for images, labels in loader:
        assert images.shape[1:] == (3, SIZE, SIZE)
        seen += labels.shape[0]
    return seen


class _PerImage(torch.utils.data.Dataset):
    """The reference: what a torchvision-style pipeline does, one PIL-free tensor at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.ToImage(), v2.Resize(SIZE, antialias=True), v2.RandomCrop(SIZE, padding=SIZE // 8),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


@pytest.mark.benchmark(group="loader-epoch")
def test_reference_per_image_dataloader(benchmark, digits):
    reference = torch.utils.data.DataLoader(
        _PerImage(digits.train_images, digits.train_labels), batch_size=BATCH, shuffle=True, num_workers=0
    )
    assert benchmark(_epoch, reference) == len(digits.train_labels)


@pytest.mark.benchmark(group="loader-epoch")
def test_in_memory_device_loader(benchmark, digits):
    fast = make_loader(
        digits, "train", np.arange(len(digits.train_labels)), batch_size=BATCH, image_size=SIZE, mean=MEAN,
        std=STD, augment="light", shuffle=True, seed=0, device=torch.device("cpu"),
    )
    assert benchmark(_epoch, fast) == len(digits.train_labels)
