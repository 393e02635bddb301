"""What feeding a backbone its images costs: decoding, resizing and augmenting, timed on the real data.

A backbone's calibration trains on random tensors already on the device, so it leaves out the
loader. For a folder of image files the loader is often the larger part on a CPU: each training
image is decoded, resized and augmented every epoch, and a subset of a few dozen images makes
hundreds of one-step epochs whose every batch waits on its files. So the estimate times a few
passes of the run's own loaders, over a batch of the dataset's own images at the run's image
size, augmentation and worker count, and charges every image a run trains on or evaluates.

On a CPU the loader and the model share the cores, so their times add; on a GPU with loader
workers, decoding overlaps the device's work and the slower of the two sets the pace.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from bench.config import DatasetConfig, TrainingConfig

# Passes timed after a first one that starts the workers: until this much time, at least two.
LOADING_MIN_S = 0.5
MIN_PASSES = 2
MAX_PASSES = 20


@dataclass(frozen=True)
class LoadSpeed:
    """Seconds a loader takes per training image (augmented) and per evaluated image (not)."""

    train_s: float
    eval_s: float
    overlaps: bool  # loader workers feeding a GPU: loading hides behind the device's work
    detail: str

    def per_train_image(self, model_s: float) -> float:
        return max(model_s, self.train_s) if self.overlaps else model_s + self.train_s

    def per_eval_image(self, model_s: float) -> float:
        return max(model_s, self.eval_s) if self.overlaps else model_s + self.eval_s


def loading_key(dataset_key: str, pixels: int, training: TrainingConfig, device: str) -> str:
    """What a loading time depends on, as the calibration cache's key."""
    import torch

    return json.dumps(["loading", dataset_key, pixels, training.augment, training.num_workers, training.batch_size,
                       training.eval_batch_size, training.channels_last, device, torch.get_num_threads()])


def _images_for_timing(config: DatasetConfig):
    """The dataset's images; a folder is listed without verifying every file, which a run does anyway."""
    from bench.data.folder import list_imagefolder
    from bench.data.registry import get_builder

    return list_imagefolder(config) if config.name == "imagefolder" else get_builder(config.name).load(config)


def time_loading(config: DatasetConfig, pixels: int, training: TrainingConfig, device_name: str) -> LoadSpeed:
    """Time passes of the run's train and evaluation loaders over one batch of the dataset's training pool."""
    import numpy as np

    from bench.data import make_loader
    from bench.data.folder import unreadable
    from bench.training.device import resolve_device

    device = resolve_device(device_name)
    dataset = _images_for_timing(config)
    pool = len(dataset.train_labels)
    # A spread of the pool, not its first files: one class's images may all be small or large.
    eval_batch = training.eval_batch_size or 2 * training.batch_size

    def per_image(augment: str, batch: int) -> float:
        chosen = np.linspace(0, pool - 1, num=min(pool, batch)).round().astype(np.int64)
        if not dataset.in_memory:
            # A run skips the files it cannot decode; so does the timing.
            files = dataset.files("train")
            chosen = np.array([i for i in chosen if unreadable(files[i]) is None], dtype=np.int64)
        loader = make_loader(dataset, "train", chosen, batch_size=batch, image_size=pixels, mean=(0.5,) * 3,
                             std=(0.5,) * 3, augment=augment, shuffle=augment != "none", seed=0, device=device,
                             num_workers=training.num_workers, channels_last=training.channels_last)

        def one_pass() -> float:
            started = time.perf_counter()
            for images, _ in loader:
                images.sum().item()  # waits for a device's queue
            return time.perf_counter() - started

        one_pass()  # starts the workers, once per run
        passes: list[float] = []
        while len(passes) < MAX_PASSES and (len(passes) < MIN_PASSES or sum(passes) < LOADING_MIN_S):
            passes.append(one_pass())
        return statistics.median(passes) / len(chosen)

    try:
        train_s = per_image(training.augment, training.batch_size)
        eval_s = per_image("none", eval_batch)
    except Exception as exc:  # a corrupt file a run would skip: the estimate goes on without the loader's time
        return LoadSpeed(train_s=0.0, eval_s=0.0, overlaps=False,
                         detail=f"loading {config.display_name}: not timed ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})")
    overlaps = device.type == "cuda" and training.num_workers > 0
    return LoadSpeed(train_s=train_s, eval_s=eval_s, overlaps=overlaps,
                     detail=f"loading {config.display_name} at {pixels} px: {train_s * 1e3:.2f} ms per training image, "
                            f"{eval_s * 1e3:.2f} ms per evaluated one ({training.augment} augmentation, "
                            f"{training.num_workers} workers{', overlapping the device' if overlaps else ''})")
