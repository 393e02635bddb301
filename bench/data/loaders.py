"""Batches of normalised images on a device: batched tensor ops for in-memory sets, a DataLoader for files.

Both loaders are reproducible: shuffling and augmentation draw from generators seeded by
``seed`` alone, so the same arguments give the same batches, epoch after epoch.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.registry import ImageDataset
from bench.errors import DataError

AUGMENTS = ("none", "light", "standard")

# standard augmentation: area and aspect-ratio ranges of the random crop.
CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1
# The DataLoader draws its workers' base seed from a generator of its own at each pass; without
# one it would draw from torch's global generator, and the worker count would change training.
_LOADER_STREAM = 2


def _derived_seed(*words: int) -> int:
    """A 63-bit seed for torch from non-negative integers, distinct per tuple."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_derived_seed(seed, stream))


def light_pad(image_size: int) -> int:
    """Padding (pixels per side) of the light augmentation: an eighth of the side, at least one."""
    return max(1, image_size // 8)


class BatchLoader:
    """Iterable of (x float32 N x 3 x S x S normalised, y int64) on ``device``; one pass is one epoch."""

    num_samples: int
    batch_size: int
    drop_last: bool

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError


class MemoryBatchLoader(BatchLoader):
    """Holds the selected uint8 images on the device and resizes, augments and normalises whole batches there."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        *,
        batch_size: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str,
        shuffle: bool,
        seed: int,
        device: torch.device,
        drop_last: bool,
        channels_last: bool = True,
    ) -> None:
        self.num_samples = len(indices)
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.image_size = image_size
        self.augment = augment
        self.shuffle = shuffle
        self.device = device
        selected = np.ascontiguousarray(images[indices])
        self._x = torch.from_numpy(selected).permute(0, 3, 1, 2).contiguous().to(device)
        self._y = torch.from_numpy(np.asarray(labels[indices], dtype=np.int64)).to(device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std folded into one multiply and one subtract.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = mean_t / std_t
        self._order_gen = _generator(seed, _ORDER_STREAM)
        self._augment_gen = _generator(seed, _AUGMENT_STREAM)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        if self.shuffle:
            order = torch.randperm(n, generator=self._order_gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self._prepare(self._x[idx]), self._y[idx]

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float()
        size = self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (size, size):
            shrinking = h > size or w > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
        if self.augment == "light":
            x = random_translate(x, light_pad(size), self._augment_gen)
        elif self.augment == "standard":
            x = random_resized_crop_flip(x, self._augment_gen)
        x = x.mul_(self._scale).sub_(self._shift)
        if self.channels_last and x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` then crop back to size at a random offset per image (a random translation)."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_resized_crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image, a random crop of CROP_SCALE area and CROP_RATIO aspect, resized back, flipped with p=0.5."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    # Centres in normalised [-1, 1] coordinates, chosen so the crop stays inside the image.
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def file_transform(image_size: int, mean: Sequence[float], std: Sequence[float], augment: str) -> Any:
    """The torchvision.transforms.v2 pipeline from a PIL image to a normalised float tensor."""
    from torchvision.transforms import v2

    size = image_size
    if augment == "standard":
        geometry = [
            v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        if augment == "light":
            geometry.append(v2.RandomCrop(size, padding=light_pad(size)))
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    )


class _FileSplit(torch.utils.data.Dataset):
    """Decodes and transforms one file per ``(epoch, item)`` key; augmentation is seeded by (seed, epoch, item)."""

    def __init__(
        self, files: list[str], labels: np.ndarray, transform: Any, seed: int, random: bool, draft: int
    ) -> None:
        self.files = files
        self.labels = labels
        self.transform = transform
        self.seed = seed
        self.random = random
        self.draft = draft

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        epoch, item = key
        with Image.open(self.files[item]) as image:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; keep at least twice the output size.
            image.draft("RGB", (self.draft, self.draft))
            rgb = image.convert("RGB")
        if self.random:
            # Seeding per item makes augmentation independent of worker count and order.
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(_derived_seed(self.seed, _AUGMENT_STREAM, epoch, item))
                x = self.transform(rgb)
        else:
            x = self.transform(rgb)
        return x.as_subclass(torch.Tensor), int(self.labels[item])


class _EpochTagged(torch.utils.data.Sampler):
    """Yields ``(epoch, item)``: the epoch reaches workers that live across epochs through the keys they fetch."""

    def __init__(self, items: torch.utils.data.Sampler) -> None:
        self.items = items
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for item in self.items:
            yield epoch, item


class FileBatchLoader(BatchLoader):
    """A torch DataLoader over image files, with batches moved to the device."""

    def __init__(
        self,
        files: list[str],
        labels: np.ndarray,
        indices: np.ndarray,
        *,
        batch_size: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str,
        shuffle: bool,
        seed: int,
        device: torch.device,
        drop_last: bool,
        num_workers: int,
    ) -> None:
        self.num_samples = len(indices)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = device
        split = _FileSplit(
            [files[i] for i in indices.tolist()],
            np.asarray(labels[indices], dtype=np.int64),
            file_transform(image_size, mean, std, augment),
            seed,
            random=augment != "none",
            draft=2 * image_size,
        )
        items = (torch.utils.data.RandomSampler(split, generator=_generator(seed, _ORDER_STREAM)) if shuffle
                 else torch.utils.data.SequentialSampler(split))
        self._sampler = _EpochTagged(items)
        self._epoch = 0
        self._loader = torch.utils.data.DataLoader(
            split,
            batch_size=batch_size,
            sampler=self._sampler,
            generator=_generator(seed, _LOADER_STREAM),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            drop_last=drop_last,
            # A subset of a few dozen images makes hundreds of one-step epochs: starting workers
            # for each cost more than the training (0.15 s an epoch on 2 CPU cores).
            persistent_workers=num_workers > 0,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Set before the pass starts: a pass left early (a time budget) still ends its epoch.
        self._sampler.epoch = self._epoch
        self._epoch += 1
        cuda = self.device.type == "cuda"
        for x, y in self._loader:
            x = x.to(self.device, non_blocking=cuda)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=cuda)


def make_loader(
    dataset: ImageDataset,
    split: str,
    indices: np.ndarray | Sequence[int] | None,
    *,
    batch_size: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: str,
    shuffle: bool,
    seed: int,
    device: torch.device | str,
    drop_last: bool = False,
    num_workers: int = 0,
    channels_last: bool = True,
) -> BatchLoader:
    """A reproducible loader over ``indices`` of ``split`` ("train" is the pool; None means all of it)."""
    if augment not in AUGMENTS:
        raise DataError(f"augment {augment!r} is not one of {', '.join(AUGMENTS)}")
    if batch_size < 1 or image_size < 1:
        raise ValueError(f"batch_size and image_size must be positive, got {batch_size} and {image_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need three values (RGB), got {mean} and {std}")
    labels = dataset.labels(split)
    idx = np.arange(len(labels), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {idx.shape}")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(labels)):
        raise IndexError(f"indices outside the {len(labels)} images of the {split} split")
    common = dict(
        batch_size=batch_size,
        image_size=image_size,
        mean=mean,
        std=std,
        augment=augment,
        shuffle=shuffle,
        seed=seed,
        device=torch.device(device),
        drop_last=drop_last,
    )
    if dataset.in_memory:
        return MemoryBatchLoader(dataset.images(split), labels, idx, channels_last=channels_last, **common)
    return FileBatchLoader(dataset.files(split), labels, idx, num_workers=num_workers, **common)
