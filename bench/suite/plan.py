"""Expansion of a suite into cells: the cross product, tuned arms, and each cell's content-hash id.

A pure function of a validated ``Suite``: backbones x weights x datasets x sizes x strategies x
seeds, each cell with an id hashed from everything that can change its result and nothing
that cannot (``NOT_IN_ID``), so an unchanged cell keeps its id and its stored result.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bench.config import NOT_IN_ID, BackboneConfig, DatasetConfig, TrainingConfig
from bench.records import TRAINING_VERSION, RunSpec, content_hash, strategy_label
from bench.strategies import Scratch, get_strategy
from bench.tuning import LR_FACTOR, TunedArm, grid_points

if TYPE_CHECKING:
    from bench.suite.model import Suite


@dataclass(frozen=True)
class Plan:
    """The expanded matrix: cells of single-configuration arms, tuned arms, and pairings skipped on purpose."""

    cells: list[RunSpec]
    arms: list[TunedArm]
    skipped: list[tuple[str, str]]

    @property
    def runnable(self) -> list[RunSpec]:
        """Cells that need no choice first: the fixed cells and every sweep cell."""
        sweeps = {c.run_id: c for arm in self.arms for c in arm.sweep_cells()}
        fixed = {c.run_id: c for c in self.cells}
        return list(fixed.values()) + [c for rid, c in sweeps.items() if rid not in fixed]

    def final_count(self) -> int:
        """Cells once every sweep has chosen: the fixed cells, the sweeps and each arm's chosen point on every seed."""
        extra = sum(len({c.seed for c in arm.cells[0]} - set(arm.tuning_seeds)) for arm in self.arms)
        return len(self.runnable) + extra


def plan_suite(suite: Suite) -> Plan:
    """Cells, tuned arms (each with its grid) and the pairings left out, each with its reason."""
    cells: dict[str, RunSpec] = {}
    arms: list[TunedArm] = []
    skipped: list[tuple[str, str]] = []
    tuning_seeds = suite.tuning_seeds
    for backbone in suite.backbones:
        for weights in backbone.weights:
            for dataset in suite.datasets:
                for size in dataset.sizes:
                    for strategy_config in suite.strategies:
                        strategy = get_strategy(strategy_config.name)
                        for params in strategy.expand_params(strategy_config.params):
                            cell_weights = weights if strategy.uses_pretrained else "none"
                            label = strategy_label(strategy.name, params)
                            reason = strategy.skip(cell_weights)
                            if reason:
                                skipped.append((f"{backbone.name} {weights} {label}", reason))
                                continue
                            grid = {k: v for k, v in suite.tuning.grid_for(strategy.name).items()
                                    if strategy.tunes("lr" if k == LR_FACTOR else k, params)}
                            points = grid_points(grid)
                            base = (backbone, cell_weights, dataset, size, strategy.name, params)
                            if len(points) <= 1:
                                for seed in suite.seeds:
                                    spec = _cell(suite, *base, seed, points[0] if points else {})
                                    # One configuration is nothing to choose between.
                                    cells.setdefault(spec.run_id, dataclasses.replace(spec, arm=""))
                                continue
                            by_point = [[_cell(suite, *base, seed, point) for seed in suite.seeds] for point in points]
                            arm_id = by_point[0][0].arm
                            if any(a.arm == arm_id for a in arms):
                                continue  # the same arm listed twice in the suite
                            arms.append(TunedArm(
                                arm=arm_id, label=f"{backbone.label or backbone.name} {label} "
                                f"{dataset.display_name}@{size}",
                                points=[c[0].tuned for c in by_point], cells=by_point, tuning_seeds=tuning_seeds,
                                grid=points, base=base,
                            ))
    return Plan(cells=list(cells.values()), arms=arms, skipped=list(dict.fromkeys(skipped)))


def point_cells(suite: Suite, arm: TunedArm, point: dict[str, Any]) -> list[RunSpec]:
    """A further grid point of ``arm`` (as the suite's grid writes it) on every seed of the suite."""
    return [_cell(suite, *arm.base, seed, point) for seed in suite.seeds]


def allowed_setting(key: str, value: Any) -> bool:
    """Whether a grid key can take ``value``: a positive learning-rate factor, a valid training setting."""
    if key == LR_FACTOR:
        return value > 0
    try:
        TrainingConfig.model_validate({key: value})
    except ValidationError:
        return False
    return True


def _cell(
    suite: Suite, backbone: BackboneConfig, weights: str, dataset: DatasetConfig, size: Any,
    strategy: str, params: dict[str, Any], seed: int, point: dict[str, Any],
) -> RunSpec:
    base_lr = suite.training.lr_for(strategy)
    tuned: dict[str, Any] = {}
    for key, value in point.items():
        tuned["lr" if key == LR_FACTOR else key] = base_lr * value if key == LR_FACTOR else value
    chosen = suite.training.model_copy(update={"lr": base_lr, **tuned})
    training = get_strategy(strategy).adjust_training(chosen, params).model_dump()
    pretrain = _pretrain_for(suite, backbone.name, weights)
    data = dataset.model_dump()
    data["label"] = dataset.display_name
    weights_id = _weights_identity(weights, pretrain)
    identity = {
        "backbone": backbone.name,
        "weights": weights_id,
        "dataset": dataset.data_identity(),
        "size": str(size),
        "strategy": strategy,
        "params": params,
        "seed": seed,
        "training": {k: v for k, v in training.items() if k not in NOT_IN_ID},
        "training_version": TRAINING_VERSION,
    }
    # The arm is the cell without its seed and grid point: what the sweep chooses within.
    arm_identity = {**identity, "seed": None, "training": {
        k: v for k, v in training.items() if k not in NOT_IN_ID and k not in tuned
    }}
    return RunSpec(
        run_id=content_hash(identity),
        suite=suite.name,
        backbone=backbone.label or backbone.name,
        weights=weights,
        dataset=data,
        size=str(size),
        strategy=strategy,
        strategy_params=params,
        seed=seed,
        training=training,
        device=suite.device,
        pretrain=pretrain,
        model=backbone.name,
        weights_identity=weights_id,
        arm=content_hash(arm_identity) if point else "",
        tuned=tuned,
    )


def _pretrain_for(suite: Suite, backbone: str, weights: str) -> dict[str, Any] | None:
    if not weights.startswith("pretrain:"):
        return None
    name = weights.split(":", 1)[1]
    stage = suite.pretrain[name]
    config = stage.model_dump()
    identity = {"backbone": backbone, "pretrain": config, "training_version": TRAINING_VERSION}
    config["training"]["lr"] = stage.training.lr_for(Scratch.name)
    return {"name": name, "backbone": backbone, "key": content_hash(identity), "config": config}


def _weights_identity(weights: str, pretrain: dict[str, Any] | None) -> str:
    """What the starting weights are, as content: a file's digest, a pretrain stage's key."""
    if pretrain is not None:
        return f"pretrain:{pretrain['key']}"
    if weights.startswith("file:"):
        path = Path(weights.split(":", 1)[1]).expanduser()
        if path.is_file():
            return f"file:{file_digest(path)}"
    return weights


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

