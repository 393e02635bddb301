"""The typed settings of a suite: how runs train, which data, which backbones, the sweep, the verdict.

These pydantic models are the single source of every default a run uses. A suite holds them,
and a run reads them back from its ``RunSpec`` (``RunSpec.training_config``,
``RunSpec.dataset_config``), so no reader restates a default. Unknown keys are forbidden, so a
misspelt key is an error, never a silent default. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import did_you_mean
from bench.strategies import default_lrs, get_strategy
from bench.tuning import DEFAULT_EXTENSIONS, DEFAULT_GRID, LR_FACTOR

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}

# Training settings that change how fast a run goes but not what it learns stay out of the id.
NOT_IN_ID = ("num_workers", "timeout", "eval_batch_size", "compile")


# Shares of a dataset held out: test when it has no test split of its own, validation out of
# the training pool (never out of test).
DEFAULT_TEST_FRACTION = 0.25
DEFAULT_VAL_FRACTION = 0.1
# One percentage point: about the seed-to-seed spread of a small fine-tuning run and one test
# image in a hundred; a smaller gain rarely justifies changing how a model is trained. A suite
# can change it under ``verdict: {min_effect: ...}``.
DEFAULT_MIN_EFFECT = 0.01
# Seeds added where a call is open (bench.report.sequential). Pocock-type spending spends early,
# where a sequential design saves its seeds and where a call at the planned seeds stays possible;
# O'Brien-Fleming-type keeps nearly all of it for the last look and rarely stops early.
SPENDING_POCOCK = "pocock"
SPENDING_OBRIEN_FLEMING = "obrien-fleming"
SPENDING = (SPENDING_POCOCK, SPENDING_OBRIEN_FLEMING)
DEFAULT_SPENDING = SPENDING_POCOCK
# Two seeds a round: one seed moves a t interval little, and every round waits for its slowest run.
DEFAULT_SEED_BATCH = 2
# Runs sharing one GPU at once (gpus, ray), and retries of a cell whose worker or node was lost (ray).
DEFAULT_PER_GPU = 1
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class ExecutorEntry:
    """Where an executor's class lives, and what the command line says of it."""

    module: str
    cls: str
    note: str = ""  # shown beside the name in ``run --help``
    # Runs cells on a cluster reached with --address: ``check``, which has no such option, leaves it out.
    cluster: bool = False


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("bench.execution.local", "SubprocessExecutor", note="a child process per run"),
    "inprocess": ExecutorEntry("bench.execution.base", "InProcessExecutor"),
    "gpus": ExecutorEntry("bench.execution.gpus", "GpuSlotExecutor"),
    "ray": ExecutorEntry("bench.execution.ray_cluster", "RayExecutor", cluster=True),
}
EXECUTOR_NAMES = tuple(EXECUTORS)
DEFAULT_EXECUTOR = "local"


def parse_duration(value: float | int | str | None) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10m"`` or ``"1.5h"``; None stays None."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like 90, '90s', '10m' or '2h', got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Strict):
    """How each run trains; every field has a default so a short suite is valid."""

    epochs: int = Field(10, ge=1)
    min_steps: int | None = Field(
        200, ge=1, description="small subsets train for more epochs to reach this many optimizer steps"
    )
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=8, description="None: the backbone's pretrained input size")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float | dict[str, float] = Field(
        default_factory=lambda: default_lrs()
    )
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Literal["none", "light", "standard"] = "standard"
    patience: int | None = Field(None, ge=1, description="early stopping on validation accuracy")
    time_budget: float | None = Field(None, gt=0, description="seconds of training per run")
    timeout: float | None = Field(None, gt=0, description="hard per-run limit, seconds")
    amp: bool = True
    feature_cache: bool = Field(True, description="frozen: fit the head on features extracted once, un-augmented")
    channels_last: bool = True
    compile: bool = Field(False, description="torch.compile the training forward pass (CUDA only)")
    num_workers: int = Field(2, ge=0)

    @field_validator("time_budget", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @property
    def resolved_lr(self) -> float:
        """The one learning rate of a run: a cell's ``lr`` is resolved for its strategy when the suite expands."""
        if isinstance(self.lr, dict):
            raise ValueError("lr is still a per-strategy table; resolve it with lr_for(strategy)")
        return self.lr

    def lr_for(self, strategy: str) -> float:
        """The base learning rate of one strategy: a number, or a per-strategy table."""
        if isinstance(self.lr, dict):
            if strategy in self.lr:
                return self.lr[strategy]
            if "default" in self.lr:
                return self.lr["default"]
            return get_strategy(strategy).default_lr
        return self.lr


class DatasetConfig(_Strict):
    """A target dataset and the training-set sizes to sweep."""

    name: str
    label: str | None = None
    sizes: list[int | float | str] = Field(default_factory=lambda: [10, 50, "all"])
    root: str | None = None
    download: bool = False
    path: str | None = None
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, gt=0, lt=1)
    val_fraction: float = Field(DEFAULT_VAL_FRACTION, ge=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[Any]) -> list[Any]:
        if not sizes:
            raise ValueError("at least one size is needed")
        for size in sizes:
            if isinstance(size, bool):
                raise ValueError(f"size {size!r} is not a size")
            if isinstance(size, str) and size != "all":
                raise ValueError(f"size {size!r}: use samples per class (10), a fraction (0.1) or 'all'")
            if isinstance(size, int) and size < 1:
                raise ValueError(f"size {size} must be at least 1 sample per class")
            if isinstance(size, float) and not 0 < size <= 1:
                raise ValueError(f"size {size} must be a fraction in (0, 1]")
        return sizes

    @property
    def display_name(self) -> str:
        """How reports name the dataset: its label, else an image folder's own name, else the registry name."""
        if self.label:
            return self.label
        if self.name.lower() == "imagefolder" and self.path:
            return Path(self.path).expanduser().resolve().name or self.name
        return self.name

    def data_identity(self) -> dict[str, Any]:
        """The fields that decide which images a run sees (sizes and label excluded)."""
        return self.model_dump(exclude={"sizes", "label", "download"})


class BackboneConfig(_Strict):
    """A model name (timm by default, ``torchvision:NAME`` for torchvision) and weight sources."""

    name: str
    weights: list[str] = Field(default_factory=lambda: ["hub"])
    label: str | None = None

    @field_validator("weights", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PretrainConfig(_Strict):
    """A pretraining stage: the backbone trained from scratch on a source dataset, once."""

    dataset: DatasetConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="before")
    @classmethod
    def _dataset_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("dataset"), str):
            data = {**data, "dataset": {"name": data["dataset"]}}
        return data


class StrategyConfig(_Strict):
    """A strategy by name with parameter values; a list value sweeps that parameter."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TuningConfig(_Strict):
    """The sweep every arm gets: a grid per strategy (or for all), chosen on validation."""

    enabled: bool = True
    seeds: list[int] | None = Field(None, description="seeds the sweep runs on; default: the suite's first seed")
    grid: dict[str, dict[str, list[Any]]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_GRID.items()},
        description="strategy name (or 'all') -> training key (or lr_factor) -> values to try",
    )
    extend: int = Field(
        DEFAULT_EXTENSIONS, ge=0, le=10,
        description="how many times a sweep whose best value lies at the edge of its grid steps past that edge",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, data: Any) -> Any:
        # YAML reads `tuning: off` as False.
        if isinstance(data, bool):
            return {"enabled": data}
        return data

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        tunable = [k for k in TrainingConfig.model_fields if k not in NOT_IN_ID] + [LR_FACTOR]
        for strategy, keys in grid.items():
            for key, values in keys.items():
                if key not in tunable:
                    hint = did_you_mean(key, tunable)
                    raise ValueError(f"{strategy}.{key}: not a training setting{hint}; tunable: {', '.join(tunable)}")
                if not isinstance(values, list) or not values:
                    raise ValueError(f"{strategy}.{key}: give a non-empty list of values to try")
                if key == LR_FACTOR:
                    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
                        raise ValueError(f"{strategy}.{key}: factors must be positive numbers, got {values}")
                    continue
                for value in values:
                    try:
                        TrainingConfig.model_validate({key: value})
                    except ValidationError as exc:
                        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                        raise ValueError(f"{strategy}.{key}: {value!r}: {message}") from None
        return grid

    def grid_for(self, strategy: str) -> dict[str, list[Any]]:
        """The grid of one strategy: its own entries over those for all."""
        if not self.enabled:
            return {}
        return {**self.grid.get("all", {}), **self.grid.get(strategy, {})}


class VerdictConfig(_Strict):
    """What the verdict needs before it calls a winner."""

    min_effect: float = Field(
        DEFAULT_MIN_EFFECT, ge=0, lt=1, description="smallest difference in accuracy (0.01 = 1 point) worth a call"
    )
    max_seeds: int | None = Field(
        None, ge=1, le=1000,
        description="add seeds, in batches, to cells whose call is still open after the planned seeds, up to "
        "this many per cell, under a group-sequential rule; none: every cell gets the planned seeds only",
    )
    seed_batch: int = Field(DEFAULT_SEED_BATCH, ge=1, le=100, description="seeds added to an open cell per round")
    spending: Literal[SPENDING] = Field(
        DEFAULT_SPENDING, description="alpha-spending function of the sequential rule over its looks"
    )

