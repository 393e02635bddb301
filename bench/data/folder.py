"""A user's folder of class folders: either ``train/`` and ``test/`` splits, or one folder with a held-out test."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.config import DatasetConfig
from bench.data.registry import DatasetBuilder, ImageDataset, read_options, resolve_path
from bench.data.subsets import holdout_split
from bench.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class _Scan:
    """Class folder name -> usable image paths, plus what was skipped on the way."""

    files: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def unreadable(path: str) -> str | None:
    """Why ``path`` cannot be used as an image, or None when PIL can open and verify it."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # PIL raises many types for a bad file; any of them means "skip it"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def _scan(split_dir: Path, *, verify: bool) -> _Scan:
    scan = _Scan()
    class_dirs = sorted(
        (entry for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    ignored: list[str] = []
    for entry in class_dirs:
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                (found if _is_image_name(name) else ignored).append(full)
        scan.files[entry.name] = found
    if ignored:
        scan.problems.append(
            f"ignored {len(ignored)} file(s) without an image extension under {split_dir} (e.g. {ignored[0]})"
        )

    candidates = [path for paths in scan.files.values() for path in paths]
    if verify:
        # Opening files is I/O bound, so threads overlap the waits.
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            reasons = dict(zip(candidates, pool.map(unreadable, candidates)))
    else:
        # Planning must stay cheap: only zero-byte files are caught without decoding.
        reasons = {path: ("empty file" if os.path.getsize(path) == 0 else None) for path in candidates}
    for class_name, paths in list(scan.files.items()):
        usable = []
        for path in paths:
            reason = reasons[path]
            if reason is None:
                usable.append(path)
            else:
                scan.problems.append(f"skipped corrupt image {path}: {reason}")
        if usable:
            scan.files[class_name] = usable
        else:
            scan.problems.append(f"dropped empty class folder {os.path.join(split_dir, class_name)}")
            del scan.files[class_name]
    return scan


def _folder(config: DatasetConfig) -> Path:
    path = resolve_path(config.path)
    if path is None:
        raise DataError("dataset 'imagefolder' needs a 'path': a folder of class folders, or with train/ and test/")
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist or is not a folder")
    return path


def _collect(config: DatasetConfig, *, verify: bool) -> ImageDataset:
    """The folder as a file-backed dataset; ``verify`` decodes headers to catch corrupt files."""
    read_options(config, {})
    root = _folder(config)
    label = config.display_name
    train_dir, test_dir = root / "train", root / "test"
    if test_dir.is_dir() and not train_dir.is_dir():
        raise DataError(f"image folder {root} has test/ but no train/")

    if train_dir.is_dir() and test_dir.is_dir():
        train, test = _scan(train_dir, verify=verify), _scan(test_dir, verify=verify)
        classes = sorted(train.files)
        _require_classes(classes, train_dir)
        for class_name in sorted(test.files):
            if class_name not in train.files:
                raise DataError(f"class {class_name!r} has images in {test_dir} but none in {train_dir}")
        if not test.files:
            raise DataError(f"image folder {test_dir} has no usable images")
        return ImageDataset(
            name=label,
            classes=classes,
            train_labels=_labels_of(train, classes),
            test_labels=_labels_of(test, classes),
            train_files=_files_of(train, classes),
            test_files=_files_of(test, classes),
            problems=train.problems + test.problems,
        )

    split_dir = train_dir if train_dir.is_dir() else root
    scan = _scan(split_dir, verify=verify)
    classes = sorted(scan.files)
    _require_classes(classes, split_dir)
    files, labels = _files_of(scan, classes), _labels_of(scan, classes)
    pool, test = holdout_split(labels, config.test_fraction, seed=0)
    if split_dir == train_dir:
        scan.problems.append(f"no test/ beside {train_dir}: held out {config.test_fraction:g} of each class for test")
    return ImageDataset(
        name=label,
        classes=classes,
        train_labels=labels[pool],
        test_labels=labels[test],
        train_files=[files[i] for i in pool],
        test_files=[files[i] for i in test],
        problems=scan.problems,
    )


def _files_of(scan: _Scan, classes: list[str]) -> list[str]:
    return [path for name in classes for path in scan.files.get(name, [])]


def _labels_of(scan: _Scan, classes: list[str]) -> np.ndarray:
    return np.array([i for i, name in enumerate(classes) for _ in scan.files.get(name, [])], dtype=np.int64)


def _require_classes(classes: list[str], split_dir: Path) -> None:
    if not classes:
        raise DataError(
            f"image folder {split_dir} has no usable images in class folders "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    if len(classes) < 2:
        raise DataError(
            f"image folder {split_dir} has only one usable class folder ({classes[0]!r}); need two or more"
        )


def load_imagefolder(config: DatasetConfig) -> ImageDataset:
    """Every image PIL can verify, labelled by its class folder; bad files and empty classes go to ``problems``."""
    return _collect(config, verify=True)


def list_imagefolder(config: DatasetConfig) -> ImageDataset:
    """The folder's images without decoding any (zero-byte files excluded, other corrupt files not yet)."""
    return _collect(config, verify=False)


def count_imagefolder(config: DatasetConfig) -> dict[str, Any]:
    """Per-class file counts without decoding (zero-byte files excluded, other corrupt files not yet)."""
    return list_imagefolder(config).class_counts()


DATASETS = [
    DatasetBuilder(
        "imagefolder",
        "your own images: path/ with train/ and test/ of class folders, or class folders with test held out",
        load_imagefolder,
        count_imagefolder,
    ),
]
