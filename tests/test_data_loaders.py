"""Batch loaders: shapes, normalisation, coverage, seeded order and augmentation, in-memory and file-backed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import ImageDataset, load_dataset, make_loader, select_subset
from bench.data.loaders import light_pad
from bench.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def loader(dataset: ImageDataset, indices=None, split: str = "train", **overrides):
    args = dict(
        batch_size=8, image_size=16, mean=MEAN, std=STD, augment="none", shuffle=False, seed=0, device="cpu"
    )
    args.update(overrides)
    return make_loader(dataset, split, indices, **args)


def batches(batch_loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batch_loader]


def memory_set(images: np.ndarray, labels: np.ndarray) -> ImageDataset:
    return ImageDataset(
        name="tiny",
        classes=[str(c) for c in range(int(labels.max()) + 1)],
        train_labels=labels,
        test_labels=labels[:2],
        train_images=images,
        test_images=images[:2],
    )


def indexed_set(n: int = 25, size: int = 16) -> ImageDataset:
    """Image i is filled with the value i, so a batch reveals which images it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    return memory_set(images, np.arange(n) % 5)


def image_ids(x: torch.Tensor) -> list[int]:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    raw = (x * std + mean) * 255
    return raw[:, 0, 0, 0].round().long().tolist()


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset({"name": "digits"})


def test_batches_have_the_promised_shape_dtype_and_count(digits: ImageDataset):
    subset = select_subset(digits.train_labels, 5, seed=0, val_fraction=0.1)
    eval_loader = loader(digits, subset.train, image_size=32)
    got = batches(eval_loader)
    assert eval_loader.num_samples == 50 and len(eval_loader) == 7 == len(got)
    assert [len(y) for _, y in got] == [8] * 6 + [2]
    x, y = got[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in got]), torch.from_numpy(digits.train_labels[subset.train]))
    dropping = loader(digits, subset.train, drop_last=True)
    assert len(dropping) == 6 == len(batches(dropping))


def test_normalisation_maps_pixel_values_through_mean_and_std():
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    images[1] = 255
    data = memory_set(images, np.array([0, 1]))
    (x, _), = batches(loader(data, image_size=12))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(x[0], (-mean / std).expand(3, 12, 12), atol=1e-5)
    assert torch.allclose(x[1], ((1 - mean) / std).expand(3, 12, 12), atol=1e-5)


def test_downsampling_is_antialiased():
    # Bright columns exactly where a 4x bilinear shrink samples: without antialiasing the result is
    # all bright, with it each output pixel averages its four columns to half brightness.
    stripes = np.zeros((32, 32), dtype=np.uint8)
    stripes[:, np.isin(np.arange(32) % 4, [1, 2])] = 255
    data = memory_set(np.repeat(stripes[None, ..., None], 3, axis=-1), np.array([0]))
    (x, _), = batches(loader(data, image_size=8, mean=(0.0,) * 3, std=(1.0,) * 3))
    assert torch.allclose(x[..., 1:-1], torch.full_like(x[..., 1:-1], 0.5), atol=0.02)


def test_every_selected_image_appears_once_per_shuffled_epoch():
    data = indexed_set()
    chosen = np.array([1, 3, 4, 9, 10, 11, 17, 20, 24])
    batch_loader = loader(data, chosen, batch_size=4, shuffle=True, seed=3)
    for _ in range(2):
        seen = [i for x, _ in batch_loader for i in image_ids(x)]
        assert sorted(seen) == chosen.tolist()


def test_shuffle_is_reproducible_per_seed_and_changes_between_epochs():
    data = indexed_set()

    def epoch_orders(seed: int) -> list[list[int]]:
        batch_loader = loader(data, batch_size=25, shuffle=True, seed=seed)
        return [image_ids(x) for _ in range(2) for x, _ in batch_loader]

    first = epoch_orders(1)
    assert first == epoch_orders(1)
    assert first[0] != first[1]
    assert epoch_orders(2)[0] != first[0]
    assert image_ids(next(iter(loader(data, batch_size=25)))[0]) == list(range(25))


def test_unaugmented_epochs_repeat_while_light_augmentation_varies(digits: ImageDataset):
    indices = np.arange(32)
    plain = loader(digits, indices, batch_size=16, augment="none")
    a, b = batches(plain), batches(plain)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b))
    light = loader(digits, indices, batch_size=16, augment="light", seed=4)
    c, d = batches(light), batches(light)
    assert not all(torch.equal(xc, xd) for (xc, _), (xd, _) in zip(c, d))
    replay = batches(loader(digits, indices, batch_size=16, augment="light", seed=4))
    assert all(torch.equal(xc, xr) for (xc, _), (xr, _) in zip(c, replay))


def test_light_augmentation_only_translates_within_the_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (1, 16, 16, 3), dtype=np.uint8)
    data = memory_set(np.repeat(image, 12, axis=0), np.zeros(12, dtype=np.int64))
    plain = loader(data, batch_size=12, mean=(0.0,) * 3, std=(1.0 / 255,) * 3)
    (reference, _), = batches(plain)
    (shifted, _), = batches(loader(data, batch_size=12, augment="light", seed=9, mean=(0.0,) * 3, std=(1.0 / 255,) * 3))
    pad = light_pad(16)
    padded = torch.nn.functional.pad(reference[0], (pad, pad, pad, pad))
    offsets = set()
    for out in shifted:
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out, padded[:, dy : dy + 16, dx : dx + 16])
        ]
        assert matches, "a light-augmented image is not a translation of the original (flipped or warped?)"
        offsets.update(matches)
    assert len(offsets) > 1


def test_standard_augmentation_flips_some_images_and_keeps_the_size():
    half = np.zeros((16, 16, 3), dtype=np.uint8)
    half[:, 8:] = 255  # dark left, bright right
    data = memory_set(np.repeat(half[None], 32, axis=0), np.zeros(32, dtype=np.int64))
    (x, _), = batches(loader(data, batch_size=32, augment="standard", seed=5, mean=(0.0,) * 3, std=(1.0,) * 3))
    assert x.shape == (32, 3, 16, 16)
    left, right = x[..., :4].mean(dim=(1, 2, 3)), x[..., -4:].mean(dim=(1, 2, 3))
    flipped = int((left > right).sum())
    assert 4 <= flipped <= 28
    assert float(x.min()) >= -1e-4 and float(x.max()) <= 1 + 1e-4


def test_bad_augment_name_is_a_data_error(digits: ImageDataset):
    with pytest.raises(DataError, match="augment 'heavy'"):
        loader(digits, augment="heavy")


@pytest.fixture()
def file_set(tmp_path: Path) -> tuple[ImageDataset, np.ndarray]:
    """The same 10 random 16x16 images as PNG files of two classes, and as an array."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        path = tmp_path / f"class{i % 2}" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path)
    # A larger, non-square image: the file path must resize it to the same shape.
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "class0" / "big.png")
    data = load_dataset({"name": "imagefolder", "path": str(tmp_path), "test_fraction": 0.2})
    return data, images


def test_file_backed_loader_yields_the_same_shapes_and_labels(file_set):
    data, _ = file_set
    batch_loader = loader(data, batch_size=4, image_size=24, augment="standard", shuffle=True, seed=2)
    got = batches(batch_loader)
    assert len(batch_loader) == len(got) == 3 and batch_loader.num_samples == len(data.train_labels) == 9
    assert all(x.shape[1:] == (3, 24, 24) and x.dtype == torch.float32 for x, _ in got)
    assert sorted(torch.cat([y for _, y in got]).tolist()) == sorted(data.train_labels.tolist())
    assert len(loader(data, batch_size=4, drop_last=True)) == 2


def test_file_backed_augmentation_is_reproducible_and_independent_of_workers(file_set):
    data, _ = file_set
    settings = dict(batch_size=4, augment="standard", shuffle=True, seed=6)
    in_process = loader(data, **settings)
    first, second = batches(in_process), batches(in_process)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, second))
    worker_loader = loader(data, num_workers=1, **settings)
    for in_process_epoch in (first, second):
        with_worker = batches(worker_loader)
        assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(in_process_epoch, with_worker))


def test_workers_that_outlive_an_epoch_still_draw_each_epochs_augmentation(file_set):
    data, _ = file_set
    # Unshuffled, so only the augmentation can tell two epochs apart.
    worker_loader = loader(data, batch_size=4, augment="standard", shuffle=False, seed=6, num_workers=1)
    first, second = batches(worker_loader), batches(worker_loader)
    assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(first, second))
    assert not any(torch.equal(a, b) for (a, _), (b, _) in zip(first, second))


def test_a_file_backed_pass_left_early_still_ends_its_epoch(file_set):
    data, _ = file_set
    settings = dict(batch_size=4, augment="standard", shuffle=True, seed=6, num_workers=1)
    reference = loader(data, **settings)
    first, second = batches(reference), batches(reference)
    left_early = loader(data, **settings)
    next(iter(left_early))  # a time budget ends the pass after one batch
    after = batches(left_early)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(second, after))
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, after))


def test_file_backed_and_in_memory_paths_agree_without_augmentation(file_set):
    data, images = file_set
    by_name = {Path(p).name: i for i, p in enumerate(data.files("train"))}
    names = sorted(n for n in by_name if n != "big.png")
    (from_files, _), = batches(loader(data, [by_name[n] for n in names], batch_size=10))
    array = np.stack([images[int(n.split(".")[0])] for n in names])
    (from_memory, _), = batches(loader(memory_set(array, np.zeros(len(names), dtype=np.int64)), batch_size=10))
    assert torch.allclose(from_files, from_memory, atol=1e-5)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_file_backed_pass_leaves_torchs_global_generator_alone(file_set, num_workers):
    # Training draws dropout and initialisation from the global generator: a loader that drew
    # from it too would make results depend on the worker count.
    data, _ = file_set
    batch_loader = loader(data, batch_size=4, augment="standard", shuffle=True, seed=6, num_workers=num_workers)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    batches(batch_loader)
    batches(batch_loader)
    assert torch.equal(torch.random.get_rng_state(), before)
