"""Backbones: build a timm or torchvision classifier with a fresh head and chosen weights.

Weight sources: ``none`` (random init), ``hub`` or ``hub:TAG`` (timm pretrained tags,
torchvision weight enums; served from the local cache when offline), ``file:PATH`` (a state
dict or checkpoint) and ``pretrain:NAME`` (the suite's own pretrain stage, resolved to a file
by the runner). The model's structure comes from the libraries: timm's ``group_matcher`` or
torchvision's module tree gives the stage groups that ``partial`` unfreezes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.catalog import LIBRARIES, check_backbone, list_backbones, parse_backbone
from bench.errors import WeightsError
from bench.weights import cached_hub_file

__all__ = ["LIBRARIES", "Backbone", "build_backbone", "check_backbone", "list_backbones", "parse_backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A ready model plus what training needs to know about it."""

    model: nn.Module
    library: str
    name: str
    head: list[str]  # parameter names of the new classifier head
    stages: list[list[str]]  # parameter names per stage group, input to output, head excluded
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224

    @property
    def classifier(self) -> nn.Module:
        """The new head module (whose input is the backbone's feature vector)."""
        return self.model.get_submodule(self.head[0].rsplit(".", 1)[0])


def build_backbone(name: str, weights: str, num_classes: int, *, weights_file: str | Path | None = None) -> Backbone:
    """Create the model with a ``num_classes`` head and load ``weights``.

    ``weights_file`` is where a ``pretrain:NAME`` source was materialised by the runner.
    """
    library, model_name = parse_backbone(name)
    kind, _, arg = weights.partition(":")
    if kind == "pretrain":
        if weights_file is None:
            raise WeightsError(f"{weights}: the pretrain stage has not produced a checkpoint")
        kind, arg = "file", str(weights_file)
    if library == "timm":
        backbone = _build_timm(model_name, kind, arg, num_classes)
    else:
        backbone = _build_torchvision(model_name, kind, arg, num_classes)
    if kind == "file":
        load_weights_file(backbone, Path(arg).expanduser())
    return backbone


# -- timm ---------------------------------------------------------------------------------


def _build_timm(model_name: str, kind: str, tag: str, num_classes: int) -> Backbone:
    import timm
    from timm.models import group_parameters

    full_name = f"{model_name}.{tag}" if kind == "hub" and tag else model_name
    pretrained = kind == "hub"
    try:
        cached = cached_hub_file(full_name) if pretrained else None
        # A cached file is loaded as a local file: no hub round trip, and no minute of retries offline.
        overlay = {"file": cached} if cached else None
        model = timm.create_model(full_name, pretrained=pretrained, num_classes=num_classes,
                                  pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError) as exc:
        if pretrained:
            raise WeightsError(
                f"timm weights for {full_name!r} are not in the local cache and could not be downloaded "
                f"({type(exc).__name__}); fetch them once online, or load a local file: weights file:PATH in a suite, --weights file:PATH for check"
            ) from None
        raise
    config = timm.data.resolve_data_config(model=model)
    head = _module_param_names(model, model.get_classifier())
    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
        stages = [[n for n in names if n not in head] for names in grouped.values()]
        stages = [s for s in stages if s]
    except (AttributeError, NotImplementedError):
        stages = _module_tree_stages(model, set(head))
    return Backbone(
        model=model, library="timm", name=model_name, head=head, stages=stages,
        mean=tuple(config["mean"]), std=tuple(config["std"]), input_size=int(config["input_size"][-1]),
    )


# -- torchvision --------------------------------------------------------------------------


def _build_torchvision(model_name: str, kind: str, tag: str, num_classes: int) -> Backbone:
    import torchvision

    weights_enum = None
    if kind == "hub":
        enum = torchvision.models.get_model_weights(model_name)
        weights_enum = enum[tag] if tag and tag != "DEFAULT" else enum.DEFAULT
    try:
        model = torchvision.models.get_model(model_name, weights=weights_enum)
    except (OSError, RuntimeError) as exc:
        if weights_enum is not None:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise WeightsError(
                f"torchvision weights {weights_enum} are not in {cache} and could not be downloaded "
                f"({type(exc).__name__}); fetch them once online, or load a local file: weights file:PATH in a suite, --weights file:PATH for check"
            ) from None
        raise
    head_name = _replace_last_linear(model, num_classes)
    head = [f"{head_name}.{n}" for n, _ in model.get_submodule(head_name).named_parameters()]
    mean, std, size = IMAGENET_MEAN, IMAGENET_STD, 224
    if weights_enum is not None:
        preset = weights_enum.transforms()
        mean, std = tuple(preset.mean), tuple(preset.std)
        size = int(preset.crop_size[0]) if isinstance(preset.crop_size, (list, tuple)) else int(preset.crop_size)
    return Backbone(
        model=model, library="torchvision", name=model_name, head=head,
        stages=_module_tree_stages(model, set(head)), mean=mean, std=std, input_size=size,
    )


def _replace_last_linear(model: nn.Module, num_classes: int) -> str:
    """Swap the classifier (the last ``nn.Linear`` registered) for a fresh one; return its name."""
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise WeightsError(f"{type(model).__name__}: no linear classifier found to replace")
    name, old = linears[-1]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return name


def _module_tree_stages(model: nn.Module, head: set[str]) -> list[list[str]]:
    """Stage groups from the module tree: top-level blocks, opening the container that holds most weights.

    torchvision models keep their stages either as top-level children (ResNet's layer1-4) or
    inside one dominant container (``features`` in EfficientNet and VGG, ``encoder.layers``
    in ViT).
    """
    counts = {name: p.numel() for name, p in model.named_parameters() if name not in head}
    total = sum(counts.values()) or 1

    def owned(prefix: str) -> list[str]:
        return [n for n in counts if n == prefix or n.startswith(prefix + ".")]

    def weight(prefix: str) -> int:
        return sum(counts[n] for n in owned(prefix))

    groups: list[str] = []
    for name, module in model.named_children():
        if owned(name):
            groups.append(name)
    # Stages are groups that carry real weight; while fewer than three do, the weight sits
    # in one container (EfficientNet's ``features``, ViT's ``encoder.layers``): open it.
    for _ in range(4):
        if sum(weight(g) >= 0.02 * total for g in groups) >= 3:
            break
        dominant = max(groups, key=weight, default=None)
        if dominant is None or dominant.endswith(":own"):
            break
        module = model.get_submodule(dominant)
        children = [f"{dominant}.{n}" for n, _ in module.named_children() if owned(f"{dominant}.{n}")]
        if not children:
            break
        index = groups.index(dominant)
        loose = [n for n in owned(dominant) if not any(n.startswith(c + ".") for c in children)]
        groups[index:index + 1] = children
        if loose:  # parameters held directly by the container, e.g. ViT's position embedding
            groups.insert(index, dominant + ":own")
    stages = []
    for group in groups:
        if group.endswith(":own"):
            base = group[: -len(":own")]
            children = [g for g in groups if g.startswith(base + ".")]
            stages.append([n for n in owned(base) if not any(n.startswith(c + ".") for c in children)])
        else:
            stages.append(owned(group))
    return [s for s in stages if s]


def _module_param_names(model: nn.Module, module: nn.Module) -> list[str]:
    ids = {id(p) for p in module.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


# -- files --------------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare state dict or a checkpoint holding one."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights_file(backbone: Backbone, path: Path) -> None:
    """Load a state dict into the backbone; the head stays fresh, any other mismatch is an error."""
    state = read_state_dict(path)
    target = backbone.model.state_dict()
    head_prefixes = {name.rsplit(".", 1)[0] for name in backbone.head}
    is_head = lambda key: key.rsplit(".", 1)[0] in head_prefixes  # noqa: E731
    state = {k: v for k, v in state.items() if not is_head(k)}
    missing = [k for k in target if not is_head(k) and k not in state]
    unexpected = [k for k in state if k not in target]
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items() if k in target and v.shape != target[k].shape
    ]
    problems = []
    if wrong_shape:
        problems.append(f"shape mismatch: {'; '.join(wrong_shape[:3])}")
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise WeightsError(f"{path} does not fit {backbone.library}:{backbone.name}: {'; '.join(problems)}")
    backbone.model.load_state_dict(state, strict=False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
