"""Benchmark: the harness's training loop against a bare timm-benchmark-style loop, on one GPU.

``pytest tests/perf/test_gpu_throughput.py --benchmark-enable -s`` on a CUDA machine. Both
sides train a random-init timm model at 224 px with bf16 autocast and channels_last on images
already on the device: the harness through ``bench.training.cell.fit`` fed by its in-memory loader,
the reference on one synthetic batch in a tight loop, as timm's ``benchmark.py`` does
(cudnn autotuning on, a synchronize either side of the timed steps). Their ratio,
harness / reference, is the share of the card's training speed a run keeps; it goes to
``extra_info`` and is printed. Speed is not asserted: the figures belong to the card.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest
import torch
from torch import nn

from bench.backbones import build_backbone
from bench.data.loaders import MemoryBatchLoader
from bench.config import TrainingConfig
from bench.strategies import get_strategy
from bench.training.cell import fit

# What fit reads from a suite's training block, at the suite's defaults where speed allows.
TRAINING = {
    "epochs": 1, "min_steps": None, "optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05, "momentum": 0.9,
    "warmup_epochs": 0.0, "label_smoothing": 0.0, "amp": True, "time_budget": None, "patience": None,
}
NUM_CLASSES = 1000  # timm benchmark.py's head, so the two sides build the same model


def _bf16(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only, as the harness runs it; full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_images_per_s(
    model_name: str, device: torch.device, *, batch_size: int, image_size: int = 224, steps: int = 20,
    warmup: int = 5, amp: bool = True, channels_last: bool = True, cudnn_benchmark: bool = True,
    num_classes: int = NUM_CLASSES, model: nn.Module | None = None,
) -> float:
    """Training images/s of a tight forward/backward/AdamW loop on one batch kept on the device.

    ``model``, when given, replaces the freshly built one (a compiled module, say).
    """
    import timm

    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        torch.manual_seed(0)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        if model is None:
            model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
            model = model.to(device).to(memory_format=layout)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["lr"])
        criterion = nn.CrossEntropyLoss()
        x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=layout)
        y = torch.randint(0, num_classes, (batch_size,), device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with _bf16(device, amp):
                loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return steps * batch_size / (time.perf_counter() - started)
    finally:
        torch.backends.cudnn.benchmark = previous


def random_images(count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """uint8 N x S x S x 3, the layout of the harness's decoded in-memory datasets."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, image_size, image_size, 3), dtype=torch.uint8, generator=generator).numpy()


def harness_setup(
    model_name: str, device: torch.device, *, batch_size: int, steps_per_epoch: int, image_size: int = 224,
    channels_last: bool = True, augment: str = "none", num_classes: int = NUM_CLASSES,
    images: np.ndarray | None = None, labels: np.ndarray | None = None,
):
    """Model, scratch plan and in-memory loader, prepared the way ``bench.training.cell.run`` prepares them."""
    backbone = build_backbone(model_name, "none", num_classes)
    model = backbone.model.to(device)
    if device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = get_strategy("scratch").apply(backbone, {}, lr=TRAINING["lr"], backbone_lr_scale=1.0)
    if images is None:
        images = random_images(batch_size * steps_per_epoch, image_size)
    if labels is None:
        labels = np.arange(len(images), dtype=np.int64) % num_classes
    loader = MemoryBatchLoader(
        images, labels, np.arange(len(images)), batch_size=batch_size, image_size=image_size,
        mean=backbone.mean, std=backbone.std, augment=augment, shuffle=True, seed=0, device=device, drop_last=True,
    )
    return model, plan, loader


def harness_images_per_s(model: nn.Module, plan, loader, device: torch.device, *, epochs: int, amp: bool = True) -> float:
    """Training images/s of ``fit`` over its epochs after the first, which pays for allocation and autotuning."""
    records = []
    fit(model, plan, loader, None, TrainingConfig(**{**TRAINING, "epochs": epochs, "amp": amp}), device,
        on_epoch=lambda record, total: records.append(record))
    timed = records[1:] or records
    images = len(timed) * len(loader) * loader.batch_size
    return images / sum(r.seconds for r in timed)


BATCH = 128
STEPS_PER_EPOCH = 8
EPOCHS = 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measures GPU training throughput; needs CUDA")
@pytest.mark.benchmark(group="gpu-train-224")
@pytest.mark.parametrize("model_name", ["resnet50", "resnet18"])
def test_fit_against_reference_loop(benchmark, model_name):
    device = torch.device("cuda")
    reference = reference_images_per_s(model_name, device, batch_size=BATCH)
    torch.cuda.empty_cache()
    model, plan, loader = harness_setup(model_name, device, batch_size=BATCH, steps_per_epoch=STEPS_PER_EPOCH)
    rates: list[float] = []
    benchmark.pedantic(
        lambda: rates.append(harness_images_per_s(model, plan, loader, device, epochs=EPOCHS)),
        rounds=3, iterations=1,
    )
    harness = statistics.median(rates)
    ratio = harness / reference
    benchmark.extra_info.update({
        "gpu": torch.cuda.get_device_name(device), "model": model_name, "batch_size": BATCH, "image_size": 224,
        "reference_images_per_s": round(reference, 1), "harness_images_per_s": round(harness, 1),
        "harness_over_reference": round(ratio, 3),
        "reference_cudnn_benchmark": True, "harness_cudnn_benchmark": torch.backends.cudnn.benchmark,
    })
    print(f"\n{model_name} b{BATCH} 224px bf16 channels_last on {torch.cuda.get_device_name(device)}: "
          f"reference {reference:.0f} img/s, harness {harness:.0f} img/s, harness/reference {ratio:.3f}")
    assert math.isfinite(reference) and reference > 0
    assert math.isfinite(harness) and harness > 0
