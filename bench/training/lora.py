"""LoRA adapters (Hu et al., 2022) injected into a backbone in place through Hugging Face peft.

peft's ``inject_adapter_in_model`` swaps each target layer for a wrapper that keeps the
original as ``<name>.base_layer`` and adds ``lora_A``/``lora_B`` beside it. The model object,
its head and every other parameter name stay as they were, so the strategy machinery (groups,
the frozen-tensor check, the feature hook on the classifier) works on it unchanged. The head is
not wrapped: peft's ``modules_to_save`` would keep a second, frozen copy of a head that is
freshly initialised anyway; the strategy trains the head itself instead. Adapters are never
merged, so the frozen check compares the base tensors themselves and evaluation runs the base
layer plus the active adapter.

peft is an optional extra; ``missing`` says how to install it, before a suite plans a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

INSTALL_HINT = "pip install 'transfer-bench[peft]' (or: pip install peft)"
# lora_alpha = r: the update's scale alpha / r stays 1 whatever the rank, so a sweep over r
# changes the adapter's capacity and not also its step size.
ALPHA_PER_RANK = 1.0
# Convolutions peft adapts with a low-rank pair of convolutions; larger kernels (a ViT's 16x16
# patch embedding, a ResNet-50's 7x7 stem) are left frozen, as is every grouped convolution.
CONV_KERNELS = ((1, 1), (3, 3))


def missing() -> str | None:
    """Why LoRA cannot run in this environment, or None."""
    try:
        import peft  # noqa: F401
    except ImportError:
        return f"strategy 'lora' needs the peft library, which is not installed: {INSTALL_HINT}"
    return None


def lora_targets(model: nn.Module, head: list[str]) -> list[str]:
    """Full module names of the layers LoRA adapts: linear layers and 1x1/3x3 convolutions outside the head."""
    from torch import nn

    head_modules = {name.rsplit(".", 1)[0] for name in head}
    targets = []
    for name, module in model.named_modules():
        if name in head_modules:
            continue
        if isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.kernel_size in CONV_KERNELS and module.groups == 1
        ):
            targets.append(name)
    return targets


def adapter_names(model: nn.Module) -> list[str]:
    """Parameter names of the LoRA adapters in ``model``."""
    return [name for name, _ in model.named_parameters() if ".lora_A." in name or ".lora_B." in name]


def add_lora(model: nn.Module, head: list[str], r: int, *, label: str) -> list[str]:
    """Inject rank-``r`` adapters into ``model`` once and return their parameter names.

    ``label`` names the strategy and model in the one-line error when nothing can be adapted.
    """
    if r < 1:
        raise ValueError(f"{label}: r={r} must be at least 1")
    existing = adapter_names(model)
    if existing:
        return existing
    problem = missing()
    if problem:
        raise ImportError(problem)
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(model, head)
    if not targets:
        raise ValueError(f"{label}: the model has no linear layer or 1x1/3x3 convolution outside its head to adapt")
    config = LoraConfig(r=r, lora_alpha=ALPHA_PER_RANK * r, lora_dropout=0.0, target_modules=targets, bias="none")
    inject_adapter_in_model(config, model)
    return adapter_names(model)
