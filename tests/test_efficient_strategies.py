"""LoRA and BitFit train exactly what they claim, leave the base weights alone, and layer decay sets depth rates."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from bench.backbones import Backbone, build_backbone
from bench.config import TrainingConfig
from bench.suite.plan import plan_suite
from bench.records import RunResult
from bench.strategies import StrategyParamError, get_strategy
from bench.suite.model import SuiteError, suite_from_dict
from bench.training.cell import build_optimizer, train_cell
from tests.conftest import tiny_suite_dict

CLASSES = 5


def _apply(name: str, backbone, **params):
    return get_strategy(name).apply(backbone, params, lr=1e-3, backbone_lr_scale=0.1)


def _optimized(plan) -> int:
    optimizer = build_optimizer(plan, TrainingConfig())
    return sum(p.numel() for g in optimizer.param_groups for p in g["params"])


def _lora_linear(r: int, fan_in: int, fan_out: int) -> int:
    return r * fan_in + fan_out * r  # A: r x in, B: out x r


def _lora_conv(r: int, fan_in: int, fan_out: int, k: int) -> int:
    return r * fan_in * k * k + fan_out * r  # A: a k x k conv to r channels, B: a 1x1 conv back


# test_vit: 6 blocks of width 64, qkv 64->192, proj 64->64, fc1 64->192, fc2 192->64.
VIT_HEAD = 64 * CLASSES + CLASSES
VIT_LORA_4 = 6 * (_lora_linear(4, 64, 192) + _lora_linear(4, 64, 64) + _lora_linear(4, 64, 192)
                  + _lora_linear(4, 192, 64)) + VIT_HEAD
# patch_embed.proj bias, then per block norm1, qkv, proj, norm2, fc1, fc2 biases, then the final norm.
VIT_BIASES = 64 + 6 * (64 + 192 + 64 + 64 + 192 + 64) + 64 + VIT_HEAD
# test_resnet: a 3x3 stem (3->16->16->32), then one block per stage; every convolution is 1x1 or 3x3.
RESNET_HEAD = 96 * CLASSES + CLASSES
RESNET_LORA_2 = sum([
    _lora_conv(2, 3, 16, 3), _lora_conv(2, 16, 16, 3), _lora_conv(2, 16, 32, 3),  # stem
    _lora_conv(2, 32, 32, 3), _lora_conv(2, 32, 32, 3),  # layer1: basic block
    _lora_conv(2, 32, 48, 3), _lora_conv(2, 48, 48, 3), _lora_conv(2, 32, 48, 1),  # layer2 + downsample
    _lora_conv(2, 48, 48, 1), _lora_conv(2, 48, 48, 3), _lora_conv(2, 48, 192, 1), _lora_conv(2, 48, 192, 1),  # layer3
    _lora_conv(2, 192, 96, 3), _lora_conv(2, 96, 96, 3), _lora_conv(2, 192, 96, 1),  # layer4 + downsample
]) + RESNET_HEAD
# Convolutions have no bias: the BatchNorm shifts are the biases (stem 16, 16, bn1 32, then per stage).
RESNET_BIASES = 16 + 16 + 32 + (32 + 32) + (48 + 48 + 48) + (48 + 48 + 192 + 192) + (96 + 96 + 96) + RESNET_HEAD


@pytest.mark.parametrize(("model", "strategy", "params", "expected"), [
    ("test_vit", "lora", {"r": 4}, VIT_LORA_4),
    ("test_resnet", "lora", {"r": 2}, RESNET_LORA_2),
    ("test_vit", "bitfit", {}, VIT_BIASES),
    ("test_resnet", "bitfit", {}, RESNET_BIASES),
])
def test_trainable_count_is_the_hand_count_and_what_the_optimizer_updates(model, strategy, params, expected):
    backbone = build_backbone(model, "none", CLASSES)
    plan = _apply(strategy, backbone, **params)
    assert plan.trainable_params == expected
    assert _optimized(plan) == expected
    assert sum(p.numel() for p in backbone.model.parameters() if p.requires_grad) == expected


def test_bitfit_holds_batchnorm_statistics_and_scales():
    backbone = build_backbone("test_resnet", "none", CLASSES)
    plan = _apply("bitfit", backbone)
    norms = [m for m in backbone.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(m) for m in plan.eval_modules} == {id(m) for m in norms}
    assert all(m.bias.requires_grad and not m.weight.requires_grad for m in norms)


def _run(tmp_path, model: str, strategy: dict) -> tuple[RunResult, nn.Module, dict[str, torch.Tensor]]:
    """A real few-step run on digits from a saved 'pretrained' file; returns the result, model and file."""
    torch.manual_seed(1)
    source = build_backbone(model, "none", CLASSES).model.state_dict()
    path = tmp_path / f"{model}.pt"
    torch.save(source, path)
    raw = tiny_suite_dict(backbones=[{"name": model, "weights": [f"file:{path}"]}], pretrain={},
                          strategies=[strategy], datasets=[{"name": "digits", "sizes": [5]}])
    raw["training"] = {**raw["training"], "epochs": 3, "lr": 1e-2}
    (spec,) = plan_suite(suite_from_dict(raw)).cells
    result = RunResult(run_id=spec.run_id, status="running", started_at=0.0)
    trained = train_cell(spec, result)
    return result, trained, source


@pytest.mark.slow
@pytest.mark.parametrize(("model", "strategy", "expected"), [
    ("test_vit", {"name": "lora", "r": 4}, VIT_LORA_4 - VIT_HEAD),
    ("test_resnet", {"name": "lora", "r": 2}, RESNET_LORA_2 - RESNET_HEAD),
    ("test_vit", {"name": "bitfit"}, VIT_BIASES - VIT_HEAD),
    ("test_resnet", {"name": "bitfit"}, RESNET_BIASES - RESNET_HEAD),
])
def test_a_real_run_trains_only_its_parameters_and_keeps_the_base_weights(tmp_path, model, strategy, expected):
    result, trained, source = _run(tmp_path, model, strategy)
    width = 96 if model == "test_resnet" else 64
    digits_head = width * 10 + 10  # digits has ten classes
    assert result.trainable_params == expected + digits_head
    assert 0.0 <= result.test_acc <= 1.0
    after = {n.replace(".base_layer", ""): t for n, t in trained.state_dict().items() if ".lora_" not in n}
    head_prefix = "fc." if model == "test_resnet" else "head."
    moved = [n for n, t in source.items() if not n.startswith(head_prefix) and not torch.equal(after[n], t)]
    if strategy["name"] == "lora":
        assert moved == []  # the base tensors themselves: adapters are never merged into them
        assert any(p.abs().sum() > 0 for n, p in trained.named_parameters() if ".lora_B." in n)
    else:
        assert moved and all(n.endswith(".bias") for n in moved)


def test_lora_rank_zero_is_a_one_line_error_naming_strategy_and_model():
    backbone = build_backbone("test_vit", "none", CLASSES)
    with pytest.raises(StrategyParamError, match=r"^lora\[r=0\] on test_vit: r=0 must be at least 1$"):
        _apply("lora", backbone, r=0)
    with pytest.raises(StrategyParamError, match="^strategy 'lora': r=0 must be at least 1$"):
        get_strategy("lora").expand_params({"r": 0})


def test_lora_on_a_model_with_nothing_to_adapt_is_a_one_line_error():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, CLASSES))
    backbone = Backbone(model=model, library="timm", name="pool_linear", head=["2.weight", "2.bias"], stages=[])
    with pytest.raises(StrategyParamError, match=r"^lora\[r=8\] on pool_linear: the model has no linear layer") as info:
        _apply("lora", backbone)
    assert "\n" not in str(info.value)


def test_a_suite_naming_lora_without_peft_fails_in_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(SuiteError, match=r"pip install 'transfer-bench\[peft\]'") as info:
        suite_from_dict(tiny_suite_dict(strategies=["scratch", {"name": "lora", "r": 8}]))
    assert "\n" not in str(info.value)
    suite_from_dict(tiny_suite_dict(strategies=["scratch", "bitfit"]))  # nothing else needs it


def _rates(plan) -> dict[str, float]:
    """Each trained parameter's rate in the optimizer actually built."""
    optimizer = build_optimizer(plan, TrainingConfig())
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return by_id


# Depth below the head, by hand, from timm's fine groups: a ViT's head is alone on top, its final
# norm goes with the last of its 6 blocks, and its stem lies under them all.
def _vit_depth(name: str) -> int:
    if name.startswith("head."):
        return 0
    if name.startswith("norm."):
        return 1
    if name.startswith("blocks."):
        return 6 - int(name.split(".")[1])
    return 7  # cls_token, pos_embed, patch_embed


def _resnet_depth(name: str) -> int:
    for depth, prefix in enumerate(("fc.", "layer4.", "layer3.", "layer2.", "layer1.")):
        if name.startswith(prefix):
            return depth
    return 5  # the stem: conv1, bn1


@pytest.mark.parametrize(("model", "depth"), [("test_vit", _vit_depth), ("test_resnet", _resnet_depth)])
@pytest.mark.parametrize("strategy", ["full", "partial", "lp_ft"])
def test_layer_decay_gives_each_layer_the_head_rate_times_decay_to_its_depth(model, depth, strategy):
    backbone = build_backbone(model, "none", CLASSES)
    params = {"layer_decay": 0.5, **({"k": 2} if strategy == "partial" else {})}
    if strategy == "lp_ft":
        phases = get_strategy("lp_ft").phases(backbone, {"lp_epochs": 1, **params}, lr=1e-2,
                                               backbone_lr_scale=0.1, epochs=3)
        plan = phases[1].make_plan()
    else:
        plan = get_strategy(strategy).apply(backbone, params, lr=1e-2, backbone_lr_scale=0.1)
    rates = _rates(plan)
    named = dict(backbone.model.named_parameters())
    trained = {n: p for n, p in named.items() if p.requires_grad}
    assert set(map(id, trained.values())) == set(rates)
    assert {n: rates[id(p)] for n, p in trained.items()} == {n: pytest.approx(1e-2 * 0.5 ** depth(n)) for n in trained}
    assert len({depth(n) for n in trained}) >= 3
    assert plan.param_groups[0]["name"] == "head"


def test_layer_decay_replaces_the_backbone_scale_and_is_checked():
    strategy = get_strategy("full")
    assert strategy.tunes("backbone_lr_scale", {}) and not strategy.tunes("backbone_lr_scale", {"layer_decay": 0.75})
    assert strategy.expand_params({}) == [{}]  # no decay keeps old labels
    with pytest.raises(StrategyParamError, match="layer_decay=1.5 must be in"):
        strategy.expand_params({"layer_decay": 1.5})
    torchvision = build_backbone("torchvision:resnet18", "none", CLASSES)
    with pytest.raises(ValueError, match=r"full\[layer_decay=0.75\]: resnet18 has no timm group_matcher"):
        strategy.apply(torchvision, {"layer_decay": 0.75}, lr=1e-3, backbone_lr_scale=0.1)
