"""Layer-wise learning-rate decay (BEiT; Clark et al.'s ELECTRA): deeper from the head, slower.

The depths are timm's: ``param_groups_layer_decay`` numbers the model's fine groups from its
``group_matcher`` (the stem, each block; a ViT's final norm goes with its last block) and gives
each the head's rate times decay^depth, the head alone at depth 0 and the stem deepest. The same
rule serves ViTs and CNNs; a model without a ``group_matcher`` has no depths to decay by.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.backbones import Backbone


def layer_decay_groups(backbone: Backbone, lr: float, decay: float, *, label: str) -> list[dict[str, Any]]:
    """Optimizer groups of the parameters that require grad, each at ``lr * decay**depth``, head rate first.

    Weight decay is left to the optimizer builder, which splits every group by parameter shape.
    """
    from timm.optim import param_groups_layer_decay

    if not hasattr(backbone.model, "group_matcher"):
        raise ValueError(f"{label}: {backbone.name} has no timm group_matcher to give its layers a depth")
    grouped = param_groups_layer_decay(backbone.model, weight_decay=0.0, weight_decay_exclude_1d=False,
                                       layer_decay=decay)
    by_depth: dict[int, list] = {}
    for group in grouped:
        depth = round(math.log(group["lr_scale"]) / math.log(decay))
        by_depth.setdefault(depth, []).extend(group["params"])
    return [{"name": "head" if depth == 0 else f"depth {depth}", "params": params, "lr": lr * decay ** depth}
            for depth, params in sorted(by_depth.items())]
