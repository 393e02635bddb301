"""Each strategy trains exactly the parameters it claims, and nothing frozen moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.backbones import build_backbone
from bench.config import TrainingConfig
from bench.strategies import STRATEGIES, get_strategy
from bench.training.cell import TrainingFailed, assert_unchanged, build_optimizer, snapshot_frozen


def _count(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """An independent count: parameters whose names start with one of ``prefixes``."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


def _apply(name: str, backbone, **params):
    return get_strategy(name).apply(backbone, params, lr=1e-3, backbone_lr_scale=0.1)


def test_resnet18_frozen_trains_exactly_the_new_head():
    backbone = build_backbone("torchvision:resnet18", "none", 10)
    plan = _apply("frozen", backbone)
    assert plan.trainable_params == 512 * 10 + 10 == 5130
    optimizer = build_optimizer(plan, TrainingConfig(optimizer="adamw", weight_decay=0.05))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 5130
    assert sum(p.numel() for p in backbone.model.parameters() if p.requires_grad) == 5130


@pytest.mark.parametrize(
    ("k", "prefixes"),
    [(1, ("layer4.", "fc.")), (2, ("layer3.", "layer4.", "fc.")), (4, ("layer1.", "layer2.", "layer3.", "layer4.", "fc."))],
)
def test_partial_trains_head_plus_last_k_stages_timm(k, prefixes):
    backbone = build_backbone("test_resnet", "none", 7)
    plan = _apply("partial", backbone, k=k)
    assert plan.trainable_params == _count(backbone.model, prefixes)
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in backbone.model.named_parameters() if n.startswith(prefixes)}


def test_partial_uses_torchvision_module_tree():
    backbone = build_backbone("torchvision:resnet18", "none", 10)
    plan = _apply("partial", backbone, k=1)
    assert plan.trainable_params == _count(backbone.model, ("layer4.", "fc."))


def test_partial_on_a_vit_follows_its_block_groups():
    backbone = build_backbone("test_vit", "none", 5)
    plan = _apply("partial", backbone, k=1)
    head = _count(backbone.model, ("head.",))
    assert head < plan.trainable_params < sum(p.numel() for p in backbone.model.parameters())


def test_partial_with_more_stages_than_the_model_has_is_an_error():
    backbone = build_backbone("test_resnet", "none", 3)
    with pytest.raises(ValueError, match="only"):
        _apply("partial", backbone, k=99)


@pytest.mark.parametrize("name", ["scratch", "full"])
def test_scratch_and_full_train_everything(name):
    backbone = build_backbone("test_resnet", "none", 10)
    plan = _apply(name, backbone)
    assert plan.trainable_params == sum(p.numel() for p in backbone.model.parameters())
    assert plan.frozen_names == [] and plan.eval_modules == []


def test_full_puts_backbone_at_a_lower_learning_rate():
    backbone = build_backbone("test_resnet", "none", 10)
    groups = {g["name"]: g["lr"] for g in _apply("full", backbone).param_groups}
    assert groups == {"head": 1e-3, "backbone": pytest.approx(1e-4)}


def test_training_moves_only_what_the_strategy_trains():
    torch.manual_seed(0)
    backbone = build_backbone("test_resnet", "none", 4)
    plan = _apply("partial", backbone, k=1)
    model = backbone.model
    frozen = snapshot_frozen(model, plan)
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(plan, TrainingConfig(optimizer="sgd", weight_decay=0.0, momentum=0.9))
    model.train()
    for module in plan.eval_modules:
        module.eval()
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 4, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_unchanged(model, frozen)  # frozen weights and frozen BatchNorm statistics
    assert any(not torch.equal(p, trained_before[n]) for n, p in model.named_parameters() if n in trained_before)
    assert plan.eval_modules, "frozen BatchNorm layers are held in eval mode"
    assert all(not m.training for m in plan.eval_modules)


def test_a_moved_frozen_weight_fails_the_run():
    backbone = build_backbone("test_resnet", "none", 4)
    plan = _apply("frozen", backbone)
    frozen = snapshot_frozen(backbone.model, plan)
    with torch.no_grad():
        backbone.model.conv1[0].weight.view(-1)[0] += 1e-7
    with pytest.raises(TrainingFailed, match="frozen tensors changed"):
        assert_unchanged(backbone.model, frozen)


def test_transfer_strategies_refuse_random_weights_with_a_reason():
    assert get_strategy("scratch").skip("none") is None
    for name in ("frozen", "partial", "full"):
        assert "pretrained" in STRATEGIES[name].skip("none")
        assert STRATEGIES[name].skip("pretrain:x") is None


def test_unknown_strategy_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'partial'"):
        get_strategy("partal")


def test_lp_ft_probes_first_then_trains_everything():
    backbone = build_backbone("test_resnet", "none", 4)
    strategy = get_strategy("lp_ft")
    phases = strategy.phases(backbone, {"lp_epochs": 2}, lr=1e-3, backbone_lr_scale=0.1, epochs=5)
    assert [p.epochs for p in phases] == [2, 3]
    probe = phases[0].make_plan()
    assert probe.trainable_params == _count(backbone.model, ("fc.",))
    assert not any(p.requires_grad for n, p in backbone.model.named_parameters() if not n.startswith("fc."))
    tune = phases[1].make_plan()
    assert tune.trainable_params == sum(p.numel() for p in backbone.model.parameters())
    assert all(p.requires_grad for p in backbone.model.parameters())


def test_lp_ft_needs_epochs_left_to_fine_tune():
    backbone = build_backbone("test_resnet", "none", 4)
    with pytest.raises(ValueError, match="no fine-tuning epochs"):
        get_strategy("lp_ft").phases(backbone, {"lp_epochs": 3}, lr=1e-3, backbone_lr_scale=0.1, epochs=3)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_declares_what_it_means_on_its_class(name):
    strategy = STRATEGIES[name]
    assert strategy.summary and strategy.default_lr > 0
    assert isinstance(strategy.order, int)
    assert not strategy.skip("hub")


def test_report_order_default_suite_and_default_rates_come_from_the_classes():
    from bench.report.tables import STRATEGY_ORDER as report_order
    from bench.strategies import DEFAULT_STRATEGIES, STRATEGY_ORDER

    assert report_order == STRATEGY_ORDER == tuple(sorted(STRATEGIES, key=lambda n: STRATEGIES[n].order))
    assert STRATEGY_ORDER[0] == "scratch" and set(DEFAULT_STRATEGIES) == {"scratch", "frozen", "partial", "full"}
    training = TrainingConfig()
    assert {n: training.lr_for(n) for n in STRATEGIES} == {n: s.default_lr for n, s in STRATEGIES.items()}
    assert TrainingConfig(lr={"default": 0.5}).lr_for("lp_ft") == 0.5
    assert TrainingConfig(lr={"full": 0.5}).lr_for("lp_ft") == STRATEGIES["lp_ft"].default_lr
