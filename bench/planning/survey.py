"""What a suite's data is before anything runs: per-class counts, and what a first run downloads.

Nothing here downloads. A dataset on disk is counted where it lies; a torchvision set not there
yet is counted from the table of known sizes, with the bytes its download weighs, and hub
weights not in a local cache are listed with about what they weigh.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DataError, SuiteError
from bench.records import content_hash
from bench.suite.model import Suite


@dataclass(frozen=True)
class DataStatus:
    """One dataset of a suite: its per-class counts and whether a run must download it first."""

    field: str
    name: str
    counts: dict[str, Any]
    present: bool
    root: Path | None = None
    download_bytes: int | None = None


def data_key(dataset: dict[str, Any]) -> str:
    """Which images a dataset config means (sizes, label and the download flag aside)."""
    return content_hash({k: v for k, v in dataset.items() if k not in ("sizes", "label", "download")})


def survey_data(suite: Suite) -> dict[str, DataStatus]:
    """Counts of every dataset the suite reads, without downloading; sizes checked as ``run`` checks them.

    A torchvision set not on disk yet but with ``download: true`` is counted from the table of
    known sizes and marked for download; one without it is a ``SuiteError``, as it is for ``run``.
    """
    from bench.data import class_counts, resolve_per_class
    from bench.data.registry import resolve_root
    from bench.data.known import download_bytes, known_counts

    entries = [(f"datasets.{i}", d, d.sizes) for i, d in enumerate(suite.datasets)]
    entries += [(f"pretrain.{name}.dataset", stage.dataset, ["all"]) for name, stage in suite.pretrain.items()]
    survey: dict[str, DataStatus] = {}
    for where, dataset, sizes in entries:
        config = dataset.model_dump()
        try:
            status = DataStatus(where, dataset.display_name, class_counts({**config, "download": False}), True)
        except DataError as exc:
            counts = known_counts(dataset.name, dataset.test_fraction) if dataset.download else None
            if counts is None:
                raise SuiteError(str(exc), file=suite.source, field=where) from None
            status = DataStatus(where, dataset.display_name, counts, False, resolve_root(dataset.root),
                                download_bytes(dataset.name))
        try:
            for size in sizes:
                resolve_per_class(size, status.counts["train"], dataset.val_fraction,
                                  classes=status.counts.get("classes"))
        except DataError as exc:
            raise SuiteError(str(exc), file=suite.source, field=where) from None
        survey.setdefault(data_key(config), status)
    return survey


def downloads(survey: dict[str, DataStatus]) -> list[DataStatus]:
    """The datasets a first ``run`` will download, each once."""
    seen: dict[tuple[str, str], DataStatus] = {}
    for status in survey.values():
        if not status.present:
            seen.setdefault((status.name, str(status.root)), status)
    return list(seen.values())


@dataclass(frozen=True)
class HubWeights:
    """Hub weights a suite uses that are not in the local cache yet."""

    backbone: str
    weights: str
    where: str  # the cache they will be fetched into
    approx_bytes: int | None = None


def missing_hub_weights(suite: Suite) -> list[HubWeights]:
    """The ``hub`` weights no local cache holds: a first run fetches them, or fails offline."""
    missing = []
    for backbone in suite.backbones:
        for weights in backbone.weights:
            kind, _, tag = weights.partition(":")
            if kind != "hub":
                continue
            found = _hub_cache_state(backbone.name, tag)
            if found is not None:
                missing.append(HubWeights(backbone.name, weights, found, _weights_bytes(backbone.name)))
    return missing


def _hub_cache_state(name: str, tag: str) -> str | None:
    """None when the weights are cached, else the cache they would be fetched into."""
    import torch

    from bench.backbones import parse_backbone

    library, model = parse_backbone(name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if library == "torchvision":
        import torchvision

        enum = torchvision.models.get_model_weights(model)
        url = (enum[tag] if tag and tag != "DEFAULT" else enum.DEFAULT).url
        return None if (checkpoints / os.path.basename(url)).is_file() else str(checkpoints)
    import timm

    from bench.weights import cached_hub_file

    full_name = f"{model}.{tag}" if tag else model
    cfg = timm.models.get_pretrained_cfg(full_name)
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import constants

        return None if cached_hub_file(full_name) else str(constants.HF_HUB_CACHE)
    url = getattr(cfg, "url", None) if cfg else None
    if url and (checkpoints / os.path.basename(url)).is_file():
        return None
    return str(checkpoints)


def _weights_bytes(name: str) -> int | None:
    """About what a float32 checkpoint of the model weighs, from its parameter count (built without memory)."""
    import torch

    from bench.backbones import parse_backbone

    library, model = parse_backbone(name)
    try:
        with torch.device("meta"):
            if library == "torchvision":
                import torchvision

                built = torchvision.models.get_model(model)
            else:
                import timm

                built = timm.create_model(model, pretrained=False)
    except Exception:  # a model that cannot be built on the meta device only loses its size
        return None
    return 4 * sum(p.numel() for p in built.parameters())
