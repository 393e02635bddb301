"""The dataset record and the name -> builder table every lookup goes through.

A dataset is described by the suite's one schema, ``bench.config.DatasetConfig``; ``dataset_config``
checks a plain dict against it.

Builders live in ``synthetic``, ``rendered``, ``folder`` and ``tvsets``; each declares its own ``DATASETS``
so a name is defined in exactly one place. They are imported on first lookup, and none of them
imports torchvision at module level, so listing or validating names stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from pydantic import ValidationError

from bench.config import DatasetConfig
from bench.errors import DataError, did_you_mean, shown

DEFAULT_ROOT = "~/.cache/transfer-bench/datasets"
ROOT_ENV = "TRANSFER_BENCH_DATA"
SPLITS = ("train", "test")

_BUILDER_MODULES = ("bench.data.synthetic", "bench.data.rendered", "bench.data.folder", "bench.data.tvsets")


def dataset_config(cfg: Mapping[str, Any] | DatasetConfig) -> DatasetConfig:
    """``cfg`` as the suite's dataset schema with its name stripped and lower-cased; a bad field raises DataError."""
    if not isinstance(cfg, DatasetConfig):
        if not isinstance(cfg.get("name"), str) or not cfg["name"].strip():
            raise DataError(f"dataset config needs a 'name' (one of: {', '.join(list_datasets())})")
        try:
            # A dumped model carries None for unset fields; None means "use the default".
            cfg = DatasetConfig.model_validate({key: value for key, value in cfg.items() if value is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise DataError(f"dataset {shown(repr(cfg['name']))}: {where} {shown(repr(error.get('input')))}: {message}") from None
    return cfg.model_copy(update={"name": cfg.name.strip().lower()})


def read_options(config: DatasetConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overlaid with the config's options; an option the dataset does not take raises DataError."""
    unknown = sorted(set(config.options) - set(defaults))
    if unknown:
        accepted = ", ".join(sorted(defaults)) or "none"
        raise DataError(
            f"dataset {config.name!r} has no option {', '.join(repr(k) for k in unknown)} (accepted: {accepted})"
        )
    return {**defaults, **{k: v for k, v in config.options.items() if v is not None}}


def resolve_path(path: str | os.PathLike[str] | None) -> Path | None:
    """A dataset's own ``path`` (an image folder), with ``~`` expanded."""
    return None if path is None else Path(path).expanduser()


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The torchvision root: the config's value, else $TRANSFER_BENCH_DATA, else the user cache."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_ROOT).expanduser()


@dataclass
class ImageDataset:
    """A labelled image set: a training pool and a fixed test split, held in memory or as files.

    In memory: ``train_images``/``test_images`` are uint8 arrays N x H x W x 3, one size for all.
    File-backed: ``train_files``/``test_files`` are image paths decoded on demand.
    """

    name: str
    classes: list[str]
    train_labels: np.ndarray
    test_labels: np.ndarray
    train_images: np.ndarray | None = None
    test_images: np.ndarray | None = None
    train_files: list[str] | None = None
    test_files: list[str] | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        self.test_labels = np.asarray(self.test_labels, dtype=np.int64)
        in_memory = self.train_images is not None
        if in_memory == (self.train_files is not None):
            raise ValueError("an ImageDataset holds either images in memory or files, exactly one")
        for split in SPLITS:
            labels = self.labels(split)
            store = getattr(self, f"{split}_images" if in_memory else f"{split}_files")
            if store is None:
                raise ValueError(f"{split} split is missing its {'images' if in_memory else 'files'}")
            if len(store) != len(labels):
                raise ValueError(f"{split}: {len(store)} images but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise ValueError(f"{split} labels fall outside the {len(self.classes)} classes")
            if in_memory and (store.dtype != np.uint8 or store.ndim != 4 or store.shape[-1] != 3):
                raise ValueError(f"{split} images must be uint8 N x H x W x 3, got {store.dtype} {store.shape}")

    @property
    def in_memory(self) -> bool:
        """True when images are uint8 arrays; False when they are files."""
        return self.train_images is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def labels(self, split: str) -> np.ndarray:
        """Labels of ``split`` ("train" is the pool)."""
        return getattr(self, f"{_check_split(split)}_labels")

    def images(self, split: str) -> np.ndarray:
        """The uint8 N x H x W x 3 array of ``split``; only for in-memory sets."""
        if not self.in_memory:
            raise TypeError(f"dataset {self.name!r} is file-backed; use files()")
        return getattr(self, f"{_check_split(split)}_images")

    def files(self, split: str) -> list[str]:
        """The image paths of ``split``; only for file-backed sets."""
        if self.in_memory:
            raise TypeError(f"dataset {self.name!r} is held in memory; use images()")
        return getattr(self, f"{_check_split(split)}_files")

    def class_counts(self) -> dict[str, Any]:
        """Per-class image counts of both splits, in the shape ``class_counts(cfg)`` returns."""
        return counts_dict(self.classes, self.train_labels, self.test_labels)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def counts_dict(classes: list[str], train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    """``{'classes', 'train', 'test'}`` with int64 per-class counts."""
    k = len(classes)
    return {
        "classes": list(classes),
        "train": np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=k).astype(np.int64),
        "test": np.bincount(np.asarray(test_labels, dtype=np.int64), minlength=k).astype(np.int64),
    }


@dataclass(frozen=True)
class DatasetBuilder:
    """One registry entry: how to load a dataset and how to count its classes without decoding."""

    name: str
    description: str
    load: Callable[[DatasetConfig], ImageDataset]
    counts: Callable[[DatasetConfig], dict[str, Any]]


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, DatasetBuilder]:
    table: dict[str, DatasetBuilder] = {}
    for module_name in _BUILDER_MODULES:
        module = importlib.import_module(module_name)
        for builder in module.DATASETS:
            if builder.name in table:
                raise RuntimeError(f"dataset {builder.name!r} is registered twice")
            table[builder.name] = builder
    return table


def list_datasets() -> list[str]:
    """All registered dataset names, sorted."""
    return sorted(_table())


def describe_datasets() -> dict[str, str]:
    """Name -> one-line description, for ``transfer-bench list datasets``."""
    return {name: builder.description for name, builder in sorted(_table().items())}


def get_builder(name: str) -> DatasetBuilder:
    """The builder for ``name`` (case-insensitive); an unknown name raises DataError with suggestions."""
    key = str(name).strip().lower()
    table = _table()
    if key in table:
        return table[key]
    raise DataError(unknown_dataset(name))


def unknown_dataset(name: object) -> str:
    """The one wording of a dataset name the registry does not hold, with the closest names it does."""
    hint = did_you_mean(str(name).strip().lower(), _table())
    return f"unknown dataset {shown(repr(name))}{hint}; see 'transfer-bench list datasets'"


def load_dataset(cfg: Mapping[str, Any]) -> ImageDataset:
    """Load the dataset a config dict names: training pool, fixed test split and any problems found."""
    config = dataset_config(cfg)
    return get_builder(config.name).load(config)


def class_counts(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class counts of the training pool (``train``) and test split, cheap enough for planning.

    Counting can mean importing scikit-learn or torchvision, or reading every label of a
    dataset; ``plan`` and ``run`` count every dataset of a suite each time. So counts are saved
    in the user's cache under a key of everything they depend on: the config, the library
    versions, and for a folder on disk the state of its directories.
    """
    config = dataset_config(cfg)
    path = _counts_path(config)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return {"classes": list(saved["classes"]), **{s: np.asarray(saved[s], dtype=np.int64) for s in SPLITS}}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    counts = get_builder(config.name).counts(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"classes": list(counts["classes"]),
                                       **{s: [int(n) for n in counts[s]] for s in SPLITS}}), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # counting again next time is the only cost
    return counts


def folder_fingerprint(folder: str) -> tuple[Any, ...]:
    """Identity and modification time of a folder and of the folders two levels below it."""
    # Adding, removing or renaming a file changes its directory's mtime; an image folder keeps
    # its files at most two levels down (split/class/file), so this sees every such change.
    seen: list[tuple[str, int, int]] = []
    level = [folder]
    try:
        for depth in range(3):
            below = []
            for directory in level:
                stat = os.stat(directory)
                seen.append((directory, stat.st_ino, stat.st_mtime_ns))
                if depth < 2:
                    with os.scandir(directory) as entries:
                        below.extend(e.path for e in entries if e.is_dir(follow_symlinks=True))
            level = sorted(below)
    except OSError as exc:
        return ("unreadable", type(exc).__name__, *seen)
    return tuple(seen)


# Bumped when a builder's counting changes, so no count saved before is trusted.
COUNTS_VERSION = 1


def _counts_path(config: DatasetConfig) -> Path:
    from importlib import metadata

    from bench.catalog import cache_dir

    def version(library: str) -> str:
        try:
            return metadata.version(library)
        except metadata.PackageNotFoundError:
            return "-"

    path, root = resolve_path(config.path), resolve_root(config.root)
    on_disk = path if path is not None else root / config.name
    key = [COUNTS_VERSION, config.name, sorted(config.options.items(), key=str), str(path), str(root),
           config.download, config.test_fraction, version("scikit-learn"), version("torchvision"),
           folder_fingerprint(str(on_disk))]
    digest = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "counts" / f"{config.name}-{digest}.json"
