"""torchvision's datasets, through the real dataset classes: ``root`` and ``download`` go straight to them.

Fixed-size sets (CIFAR, SVHN, STL10, EuroSAT, MNIST) are loaded into memory as uint8 arrays;
variable-size sets (Flowers102, Pets, DTD, Food101, Aircraft) stay as files.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bench.config import DatasetConfig
from bench.data.registry import DatasetBuilder, ImageDataset, counts_dict, read_options, resolve_root
from bench.data.subsets import holdout_split
from bench.errors import DataError


@dataclass(frozen=True)
class TvSet:
    """How one torchvision class is asked for its training pool and test split.

    ``pool`` and ``test`` are the constructor arguments of each part (a pool of several parts,
    e.g. Flowers102's train + val, is concatenated); ``test=None`` means the set has no test
    split and one is held out with ``test_fraction``.
    """

    name: str
    cls: str
    description: str
    pool: tuple[dict[str, Any], ...]
    test: tuple[dict[str, Any], ...] | None
    in_memory: bool
    fixed: dict[str, Any] = field(default_factory=dict)


_TRAIN = ({"train": True},)
_TEST = ({"train": False},)
_SPLIT_TRAIN = ({"split": "train"},)
_SPLIT_TEST = ({"split": "test"},)

TV_SETS: dict[str, TvSet] = {
    spec.name: spec
    for spec in (
        TvSet("cifar10", "CIFAR10", "CIFAR-10, 32x32, 10 classes, 50k/10k", _TRAIN, _TEST, True),
        TvSet("cifar100", "CIFAR100", "CIFAR-100, 32x32, 100 classes, 50k/10k", _TRAIN, _TEST, True),
        TvSet("mnist", "MNIST", "MNIST digits, 28x28 grey, 10 classes, 60k/10k", _TRAIN, _TEST, True),
        TvSet("fashionmnist", "FashionMNIST", "Fashion-MNIST, 28x28 grey, 10 classes, 60k/10k", _TRAIN, _TEST, True),
        TvSet("svhn", "SVHN", "street-view house numbers, 32x32, 10 classes", _SPLIT_TRAIN, _SPLIT_TEST, True),
        TvSet("stl10", "STL10", "STL-10 labelled part, 96x96, 10 classes, 5k/8k", _SPLIT_TRAIN, _SPLIT_TEST, True),
        TvSet("eurosat", "EuroSAT", "EuroSAT RGB satellite tiles, 64x64, 10 classes, test held out", ({},), None, True),
        TvSet(
            "flowers102",
            "Flowers102",
            "Oxford 102 flowers; train+val pool, official test",
            ({"split": "train"}, {"split": "val"}),
            _SPLIT_TEST,
            False,
        ),
        TvSet(
            "oxfordiiitpet",
            "OxfordIIITPet",
            "Oxford-IIIT pets, 37 breeds; trainval pool, official test",
            ({"split": "trainval"},),
            _SPLIT_TEST,
            False,
            {"target_types": "category"},
        ),
        TvSet(
            "dtd",
            "DTD",
            "describable textures, 47 classes, partition 1; train+val pool, official test",
            ({"split": "train"}, {"split": "val"}),
            _SPLIT_TEST,
            False,
            {"partition": 1},
        ),
        TvSet("food101", "Food101", "Food-101, 101 classes, 75k/25k", _SPLIT_TRAIN, _SPLIT_TEST, False),
        TvSet(
            "fgvcaircraft",
            "FGVCAircraft",
            "FGVC aircraft, 100 variants; trainval pool, official test",
            ({"split": "trainval"},),
            _SPLIT_TEST,
            False,
            {"annotation_level": "variant"},
        ),
    )
}


def _construct(spec: TvSet, config: DatasetConfig, kwargs: dict[str, Any]) -> Any:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, spec.cls)
    try:
        return cls(root=str(resolve_root(config.root)), download=config.download, **spec.fixed, **kwargs)
    except (RuntimeError, OSError) as exc:
        # torchvision reports missing files as RuntimeError, failed downloads as URLError/OSError.
        if config.download:
            raise DataError(f"dataset {spec.name!r} could not be downloaded to {resolve_root(config.root)}: {exc}") from exc
        raise DataError(
            f"dataset {spec.name!r} not found under {resolve_root(config.root)}; set download: true in the suite "
            f"(needs internet) or point root at a copy"
        ) from exc


def _labels(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels"):
        value = getattr(ds, attr, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64)
    raise RuntimeError(f"cannot find the labels of torchvision {type(ds).__name__}")


def _files(ds: Any) -> list[str]:
    for attr in ("_image_files", "_images"):
        value = getattr(ds, attr, None)
        if value is not None:
            return [str(p) for p in value]
    samples = getattr(ds, "samples", None)
    if samples is not None:
        return [str(path) for path, _ in samples]
    raise RuntimeError(f"cannot find the image files of torchvision {type(ds).__name__}")


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _images(ds: Any) -> np.ndarray:
    """uint8 N x H x W x 3 from a torchvision set's in-memory array, or by decoding its files."""
    data = getattr(ds, "data", None)
    if data is None:
        paths = _files(ds)
        # Decoding is mostly in C with the GIL released, so threads help.
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            arrays = list(pool.map(_decode, paths))
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise RuntimeError(f"torchvision {type(ds).__name__} images differ in size: {sorted(shapes)[:3]}")
        return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), dtype=np.uint8)
    array = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    array = array.astype(np.uint8, copy=False)
    if array.ndim == 3:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array)


def _own_classes(ds: Any) -> list[str] | None:
    classes = getattr(ds, "classes", None)
    return [str(c) for c in classes] if classes else None


def _merged_classes(datasets: list[Any]) -> list[str]:
    """Class names in the first part's order, extended by names only later parts have."""
    merged: list[str] = []
    for ds in datasets:
        for name in _own_classes(ds) or []:
            if name not in merged:
                merged.append(name)
    if merged:
        return merged
    # SVHN has no class names; its labels are the digits themselves.
    return [str(i) for i in range(int(max(_labels(ds).max() for ds in datasets)) + 1)]


def _labels_in(ds: Any, classes: list[str]) -> np.ndarray:
    """``ds``'s labels as indices into ``classes``."""
    labels = _labels(ds)
    own = _own_classes(ds)
    if own is None or own == classes:
        return labels
    # DTD derives its class list from each split's file, so one index can name different classes.
    lookup = {name: i for i, name in enumerate(classes)}
    return np.array([lookup[name] for name in own], dtype=np.int64)[labels]


def _items(spec: TvSet, datasets: list[Any]) -> Any:
    if spec.in_memory:
        return np.concatenate([_images(ds) for ds in datasets])
    return [path for ds in datasets for path in _files(ds)]


def _take(items: Any, indices: np.ndarray) -> Any:
    return items[indices] if isinstance(items, np.ndarray) else [items[i] for i in indices.tolist()]


def _split(
    spec: TvSet, config: DatasetConfig, *, with_images: bool
) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """(classes, labels per split, images or files per split, or empty without ``with_images``)."""
    read_options(config, {})
    pool_sets = [_construct(spec, config, kwargs) for kwargs in spec.pool]
    test_sets = [_construct(spec, config, kwargs) for kwargs in spec.test or ()]
    classes = _merged_classes(pool_sets + test_sets)
    pool_labels = np.concatenate([_labels_in(ds, classes) for ds in pool_sets])
    pool_items = _items(spec, pool_sets) if with_images else None
    if spec.test is None:
        pool, test = holdout_split(pool_labels, config.test_fraction, seed=0)
        labels = {"train": pool_labels[pool], "test": pool_labels[test]}
        items = {"train": _take(pool_items, pool), "test": _take(pool_items, test)} if with_images else {}
    else:
        labels = {"train": pool_labels, "test": np.concatenate([_labels_in(ds, classes) for ds in test_sets])}
        items = {"train": pool_items, "test": _items(spec, test_sets)} if with_images else {}
    return classes, labels, items


def _loader(spec: TvSet) -> Callable[[DatasetConfig], ImageDataset]:
    def load(config: DatasetConfig) -> ImageDataset:
        classes, labels, items = _split(spec, config, with_images=True)
        kind = "images" if spec.in_memory else "files"
        return ImageDataset(
            name=config.display_name,
            classes=classes,
            train_labels=labels["train"],
            test_labels=labels["test"],
            **{f"train_{kind}": items["train"], f"test_{kind}": items["test"]},
        )

    load.__doc__ = f"torchvision {spec.cls} as an ImageDataset ({'in memory' if spec.in_memory else 'files'})."
    return load


def _counter(spec: TvSet) -> Callable[[DatasetConfig], dict[str, Any]]:
    def counts(config: DatasetConfig) -> dict[str, Any]:
        classes, labels, _ = _split(spec, config, with_images=False)
        return counts_dict(classes, labels["train"], labels["test"])

    counts.__doc__ = f"Per-class counts of torchvision {spec.cls}, from its labels alone."
    return counts


DATASETS = [
    DatasetBuilder(spec.name, f"torchvision: {spec.description}", _loader(spec), _counter(spec))
    for spec in TV_SETS.values()
]
