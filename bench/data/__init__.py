"""Datasets by name, nested stratified subsets of their training pools, and fast batch loaders.

The loaders need torch; they are imported on first use so that listing and validating dataset
names, counting classes and choosing subsets stay torch-free.
"""

from __future__ import annotations

from typing import Any

from bench.data.registry import (
    ImageDataset,
    class_counts,
    dataset_config,
    describe_datasets,
    list_datasets,
    load_dataset,
    unknown_dataset,
)
from bench.data.subsets import Subset, parse_size, resolve_per_class, select_subset

_LOADER_NAMES = ("AUGMENTS", "BatchLoader", "make_loader")

__all__ = [
    "AUGMENTS",
    "BatchLoader",
    "ImageDataset",
    "Subset",
    "class_counts",
    "dataset_config",
    "describe_datasets",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "parse_size",
    "resolve_per_class",
    "select_subset",
    "unknown_dataset",
]


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from bench.data import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
