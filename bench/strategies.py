"""Strategies: what a run trains. Each is a small declared class in one registry.

A strategy names its parameters (a list value in a suite sweeps them), says which weight
sources it cannot use (``skip``), and turns a backbone into optimizer parameter groups plus
the modules that must stay in eval mode. Everything not in a group is frozen: its
``requires_grad`` is off and the run checks at its end that it did not move. Everything else
a strategy means is declared on its class too (default learning rate, backbone rate scaling,
feature-cache use, report order), so adding one is one class here and one test. The module
imports torch only inside methods: the report reads ``STRATEGY_ORDER`` without it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from bench.backbones import Backbone
    from bench.config import TrainingConfig


class StrategyParamError(ValueError):
    """A strategy parameter that is unknown or has a bad value."""


@dataclass
class StrategyPlan:
    """What to optimise and what to hold still."""

    param_groups: list[dict[str, Any]]
    frozen_names: list[str]
    eval_modules: list[nn.Module] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for group in self.param_groups for p in group["params"])


@dataclass
class Phase:
    """A stretch of epochs under one plan; ``make_plan`` (re-)freezes the model when it starts."""

    make_plan: Callable[[], StrategyPlan]
    epochs: int


class Strategy:
    """Base class: subclasses set ``name``, ``summary``, ``default_lr``, ``order`` and implement ``trainable``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # The base learning rate when a suite gives none for this strategy.
    default_lr: ClassVar[float]
    # Where the strategy reads in tables and legends: lower first.
    order: ClassVar[int]
    # Whether a suite that lists no strategies runs this one.
    in_default_suite: ClassVar[bool] = False
    parameters: ClassVar[dict[str, tuple[type, Any]]] = {}  # name -> (type, default)
    uses_pretrained: ClassVar[bool] = True
    # Parameters left out of a cell (and so of its label) when they hold their default: a
    # variant added later must not rename every existing result.
    quiet_defaults: ClassVar[frozenset[str]] = frozenset()
    # Pretrained features deserve a gentler rate than a fresh head; random ones do not.
    scales_backbone_lr: ClassVar[bool] = True

    def skip(self, weights: str) -> str | None:
        """A reason this strategy cannot use these weights, or None."""
        if self.uses_pretrained and weights == "none":
            return f"{self.name} needs pretrained weights; 'none' would measure a random feature extractor"
        return None

    def missing(self) -> str | None:
        """Why this strategy cannot run in this environment (an optional library not installed), or None."""
        return None

    def expand_params(self, given: dict[str, Any]) -> list[dict[str, Any]]:
        """The cross product of the given parameter values, defaults filled in."""
        problem = self.missing()
        if problem:
            raise StrategyParamError(problem)
        unknown = set(given) - set(self.parameters)
        if unknown:
            allowed = ", ".join(self.parameters) or "none"
            raise StrategyParamError(f"strategy {self.name!r} has no parameter {sorted(unknown)[0]!r} (allowed: {allowed})")
        axes = []
        for key, (kind, default) in self.parameters.items():
            values = given.get(key, default)
            values = values if isinstance(values, list) else [values]
            checked = []
            for value in values:
                if kind is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                    raise StrategyParamError(f"strategy {self.name!r}: {key}={value!r} should be {kind.__name__}")
                self.check_param(key, value)
                checked.append(value)
            axes.append([(key, v) for v in checked])
        combos = [dict(combo) for combo in itertools.product(*axes)]
        return [
            {k: v for k, v in combo.items() if not (k in self.quiet_defaults and v == self.parameters[k][1])}
            for combo in combos
        ]

    def check_param(self, key: str, value: Any) -> None:
        """Reject a parameter value outside its range."""

    def param(self, params: dict[str, Any], key: str) -> Any:
        """A parameter's value in a cell, its declared default when the cell leaves it out (``quiet_defaults``)."""
        return params[key] if key in params else self.parameters[key][1]

    def fits_linear_probe(self, params: dict[str, Any]) -> bool:
        """Whether the run is a logistic regression on fixed features rather than a training loop."""
        return False

    def trains_on_features(self, params: dict[str, Any]) -> bool:
        """Whether only the head trains, so its minibatch loop can run on features extracted once."""
        return False

    def adjust_training(self, training: TrainingConfig, params: dict[str, Any]) -> TrainingConfig:
        """The training settings this strategy runs with, given the suite's."""
        return training

    def tunes(self, key: str, params: dict[str, Any]) -> bool:
        """Whether training setting ``key`` changes what this strategy learns, so a grid over it is worth running."""
        # A probe sweeps its own L2 strength; no training-loop setting reaches it.
        if key == "backbone_lr_scale" and (not self.scales_backbone_lr or params.get("layer_decay", 1.0) < 1.0):
            return False  # layer decay sets every backbone rate itself
        return not self.fits_linear_probe(params)

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(head parameter names, backbone parameter names) this strategy trains."""
        raise NotImplementedError

    def phases(self, backbone: Backbone, params: dict[str, Any], *, lr: float, backbone_lr_scale: float,
               epochs: int) -> list[Phase]:
        """The plans a run goes through, in order; each call to ``apply`` re-freezes the model."""
        return [Phase(lambda: self.apply(backbone, params, lr=lr, backbone_lr_scale=backbone_lr_scale), epochs)]

    def apply(self, backbone: Backbone, params: dict[str, Any], *, lr: float, backbone_lr_scale: float) -> StrategyPlan:
        """Freeze what is not trained and group the rest for the optimizer."""
        from torch import nn

        head_names, body_names = self.trainable(backbone, params)
        named = dict(backbone.model.named_parameters())
        train = set(head_names) | set(body_names)
        for name, param in named.items():
            param.requires_grad_(name in train)
        groups = [{"name": "head", "params": [named[n] for n in head_names], "lr": lr}]
        decay = params.get("layer_decay", 1.0)
        if body_names and decay < 1.0:
            from bench.training.layer_decay import layer_decay_groups

            # Decay replaces the one backbone scale: the head's rate, times decay per layer below it.
            groups = layer_decay_groups(backbone, lr, decay, label=f"{self.name}[layer_decay={decay}]")
        elif body_names:
            body_lr = lr * backbone_lr_scale if self.scales_backbone_lr else lr
            groups.append({"name": "backbone", "params": [named[n] for n in body_names], "lr": body_lr})
        # A BatchNorm with a frozen scale (frozen outright, or shifted only, as in BitFit) must not
        # update its running statistics either, or the "frozen" features would drift with the target data.
        eval_modules = [
            module for module in backbone.model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and (module.weight is None or not module.weight.requires_grad)
        ]
        frozen = [n for n in named if n not in train]
        return StrategyPlan(param_groups=[g for g in groups if g["params"]], frozen_names=frozen, eval_modules=eval_modules)


# Shared by the strategies that fine-tune pretrained layers: 1.0 (no decay) is left out of labels.
LAYER_DECAY = {"layer_decay": (float, 1.0)}


def _check_layer_decay(strategy: str, value: float) -> None:
    if not 0 < value <= 1:
        raise StrategyParamError(f"strategy {strategy!r}: layer_decay={value} must be in (0, 1]")


def _all_body(backbone: Backbone) -> list[str]:
    head = set(backbone.head)
    return [n for n, _ in backbone.model.named_parameters() if n not in head]


class Scratch(Strategy):
    name = "scratch"
    summary = "random init, everything trained: the baseline every verdict is against"
    default_lr = 1e-3
    order = 0
    in_default_suite = True
    uses_pretrained = False
    scales_backbone_lr = False
    # budget=N trains N times the schedule every arm gets (epochs, min_steps and any time budget):
    # He et al. (2019) found equal-epoch comparisons biased against scratch, which needs longer.
    parameters = {"budget": (float, 1.0)}
    quiet_defaults = frozenset({"budget"})

    def check_param(self, key: str, value: Any) -> None:
        if value <= 0:
            raise StrategyParamError(f"strategy 'scratch': budget={value} must be positive")

    def adjust_training(self, training: TrainingConfig, params: dict[str, Any]) -> TrainingConfig:
        budget = self.param(params, "budget")
        if budget == self.parameters["budget"][1]:
            return training
        scaled: dict[str, Any] = {"epochs": max(1, math.ceil(training.epochs * budget))}
        if training.min_steps:
            scaled["min_steps"] = math.ceil(training.min_steps * budget)
        if training.time_budget:
            scaled["time_budget"] = training.time_budget * budget
        return training.model_copy(update=scaled)

    def tunes(self, key: str, params: dict[str, Any]) -> bool:
        # Scratch trains its whole model at one rate; the backbone scale never applies.
        return key != "backbone_lr_scale"

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return list(backbone.head), _all_body(backbone)


class Frozen(Strategy):
    name = "frozen"
    summary = (
        "linear probe: pretrained backbone frozen, a logistic-regression head fitted to convergence on its "
        "features with the L2 strength chosen on validation (head=sgd: a minibatch-trained head)"
    )
    # A head alone on fixed features tolerates, and needs, a faster rate than a whole network.
    default_lr = 1e-2
    order = 1
    in_default_suite = True
    parameters = {"head": (str, "logistic")}
    quiet_defaults = frozenset({"head"})
    HEADS = ("logistic", "sgd")

    def check_param(self, key: str, value: Any) -> None:
        if value not in self.HEADS:
            raise StrategyParamError(f"strategy 'frozen': head={value!r} must be one of {', '.join(self.HEADS)}")

    def fits_linear_probe(self, params: dict[str, Any]) -> bool:
        return self.param(params, "head") == "logistic"

    def trains_on_features(self, params: dict[str, Any]) -> bool:
        return True

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return list(backbone.head), []


class BitFit(Strategy):
    """BitFit (Ben Zaken et al., 2022): only the bias vectors and the head train.

    Every parameter named ``bias`` outside the head counts, norm biases included (a ResNet's
    convolutions have none; its BatchNorm shifts are its biases). Norm scales stay frozen, and
    BatchNorm running statistics with them, as ``apply`` holds any BatchNorm whose scale is
    frozen: the adapted model differs from the pretrained one in its bias vectors alone.
    """

    name = "bitfit"
    summary = "only the backbone's biases (norm biases included) and the head trained, all at lr"
    # A few thousand bias entries move the features little per step; they take the head's rate.
    default_lr = 1e-3
    order = 2
    scales_backbone_lr = False

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return list(backbone.head), [n for n in _all_body(backbone) if n.rsplit(".", 1)[-1] == "bias"]


class LoRA(Strategy):
    """LoRA (Hu et al., 2022) through peft (``bench.training.lora``): adapters start as a zero update."""

    name = "lora"
    summary = "rank-r adapters on every linear layer and 1x1/3x3 convolution, base weights frozen, head trained"
    # Adapters are new weights, as the head is: one rate for both, the usual LoRA rate for AdamW.
    default_lr = 1e-3
    order = 3
    parameters = {"r": (int, 8)}
    scales_backbone_lr = False

    def missing(self) -> str | None:
        from bench.training.lora import missing
        return missing()

    def check_param(self, key: str, value: Any) -> None:
        if value < 1:
            raise StrategyParamError(f"strategy 'lora': r={value} must be at least 1")

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        from bench.training.lora import add_lora

        r = self.param(params, "r")
        label = f"lora[r={r}] on {backbone.name}"
        try:
            return list(backbone.head), add_lora(backbone.model, backbone.head, r, label=label)
        except ValueError as exc:
            raise StrategyParamError(exc.args[0]) from None


class Partial(Strategy):
    name = "partial"
    summary = "head plus the last k stage groups fine-tuned, earlier stages frozen"
    default_lr = 1e-3
    order = 4
    in_default_suite = True
    parameters = {"k": (int, 1), **LAYER_DECAY}
    quiet_defaults = frozenset(LAYER_DECAY)

    def check_param(self, key: str, value: Any) -> None:
        if key == "layer_decay":
            _check_layer_decay(self.name, value)
        elif value < 1:
            raise StrategyParamError(f"strategy 'partial': k={value} must be at least 1 stage")

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        k = self.param(params, "k")
        if k > len(backbone.stages):
            raise StrategyParamError(
                f"partial[k={k}]: {backbone.name} has only {len(backbone.stages)} stage groups"
            )
        return list(backbone.head), [n for stage in backbone.stages[-k:] for n in stage]


class Full(Strategy):
    name = "full"
    summary = "everything fine-tuned from pretrained, backbone at lr x backbone_lr_scale (or x layer_decay^depth)"
    default_lr = 1e-3
    order = 5
    in_default_suite = True
    parameters = dict(LAYER_DECAY)
    quiet_defaults = frozenset(LAYER_DECAY)

    def check_param(self, key: str, value: Any) -> None:
        _check_layer_decay(self.name, value)

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return list(backbone.head), _all_body(backbone)


class LinearProbeThenFineTune(Strategy):
    """LP-FT (Kumar et al., 2022): fit the head on frozen features first, then fine-tune all.

    Fine-tuning from a trained head instead of a random one keeps the early gradients from
    distorting the pretrained features.
    """

    name = "lp_ft"
    summary = "linear probe for lp_epochs, then everything fine-tuned (backbone at lr x backbone_lr_scale)"
    default_lr = 1e-3
    order = 6
    parameters = {"lp_epochs": (int, 2), **LAYER_DECAY}
    quiet_defaults = frozenset(LAYER_DECAY)

    def check_param(self, key: str, value: Any) -> None:
        if key == "layer_decay":
            _check_layer_decay(self.name, value)
        elif value < 1:
            raise StrategyParamError(f"strategy 'lp_ft': lp_epochs={value} must be at least 1")

    def trainable(self, backbone: Backbone, params: dict[str, Any]) -> tuple[list[str], list[str]]:
        return list(backbone.head), _all_body(backbone)

    def phases(self, backbone: Backbone, params: dict[str, Any], *, lr: float, backbone_lr_scale: float,
               epochs: int) -> list[Phase]:
        probe = self.param(params, "lp_epochs")
        if probe >= epochs:
            raise StrategyParamError(f"lp_ft[lp_epochs={probe}] leaves no fine-tuning epochs of {epochs}")
        return [
            Phase(lambda: Frozen().apply(backbone, {}, lr=lr, backbone_lr_scale=backbone_lr_scale), probe),
            Phase(lambda: self.apply(backbone, params, lr=lr, backbone_lr_scale=backbone_lr_scale), epochs - probe),
        ]


STRATEGIES: dict[str, Strategy] = {
    cls.name: cls()
    for cls in sorted((Scratch, Frozen, BitFit, LoRA, Partial, Full, LinearProbeThenFineTune), key=lambda c: c.order)
}
# Reading order of strategy names in reports; the report imports it without torch.
STRATEGY_ORDER: tuple[str, ...] = tuple(STRATEGIES)
DEFAULT_STRATEGIES: tuple[str, ...] = tuple(name for name, s in STRATEGIES.items() if s.in_default_suite)


def default_lrs() -> dict[str, float]:
    """Base learning rates of the strategies a suite runs by default, the table a suite's ``lr`` starts as."""
    return {name: STRATEGIES[name].default_lr for name in DEFAULT_STRATEGIES}


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by name; KeyError with suggestions when unknown."""
    from bench.errors import did_you_mean

    try:
        return STRATEGIES[name]
    except KeyError:
        hint = did_you_mean(str(name), STRATEGIES)
        raise KeyError(
            f"unknown strategy {name!r}{hint}; known: {', '.join(STRATEGIES)} (see 'transfer-bench list strategies')"
        ) from None
