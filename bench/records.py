"""The records that cross process boundaries: a cell to run and the result of running it.

Both are plain dataclasses of JSON-able values so a cell can travel to a child process or a
Ray worker and its result can come back without pickling model code. Nothing here imports
torch: the store and the report read these records on machines without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.config import DatasetConfig, PretrainConfig, TrainingConfig

# Bump when a change to training, evaluation, data splitting or strategy wiring can change a
# result. It is hashed into every cell id, so old numbers are never mixed with new ones.
TRAINING_VERSION = "3"

STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"

# What a finished run must report on the test set; a result without all three is a failure.
TEST_METRICS = ("test_acc", "test_balanced_acc", "test_macro_f1")


def content_hash(value: Any) -> str:
    """A short stable id for a JSON-able value: key order and float spelling don't matter."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _param_text(value: Any) -> str:
    # budget=2 rather than budget=2.0: a label reads like the suite file that asked for it.
    return f"{value:g}" if isinstance(value, float) else str(value)


def strategy_label(name: str, params: dict[str, Any]) -> str:
    """Render a strategy with its parameters the way the grid reads: ``partial[k=2]``."""
    if not params:
        return name
    inner = ",".join(f"{key}={_param_text(params[key])}" for key in sorted(params))
    return f"{name}[{inner}]"


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: everything a worker needs to train and evaluate one model.

    ``dataset``, ``training`` and ``pretrain`` are plain dicts (dumped pydantic models) so the
    spec is JSON-serialisable; ``run_id`` is a content hash of every field that can change
    the result, computed by ``bench.suite.plan``. Code that reads a setting goes through the typed
    views (``training_config``, ``dataset_config``, ``pretrain_config``), so every default has
    one source: the models in ``bench.config``.
    """

    run_id: str
    suite: str
    backbone: str
    weights: str
    dataset: dict[str, Any]
    size: str
    strategy: str
    strategy_params: dict[str, Any]
    seed: int
    training: dict[str, Any]
    device: str = "auto"
    pretrain: dict[str, Any] | None = None
    model: str | None = None  # the timm/torchvision name when ``backbone`` is a display label
    training_version: str = TRAINING_VERSION
    # What the starting weights are as content (a file's digest, a pretrain stage's key), so
    # caches keyed on it never confuse two files that share a path.
    weights_identity: str = ""
    # Tuning: ``arm`` groups the cells of one arm that differ only in ``tuned`` (the values of the
    # grid point this cell trains with) and the seed; empty when the arm has a single configuration.
    arm: str = ""
    tuned: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.model or self.backbone

    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])

    @property
    def strategy_label(self) -> str:
        return strategy_label(self.strategy, self.strategy_params)

    @cached_property
    def training_config(self) -> TrainingConfig:
        """``training`` as the suite's typed model (its ``lr`` already resolved to one number)."""
        from bench.config import TrainingConfig

        return TrainingConfig.model_validate(self.training)

    @cached_property
    def dataset_config(self) -> DatasetConfig:
        """``dataset`` as the suite's typed model."""
        from bench.config import DatasetConfig

        return DatasetConfig.model_validate(self.dataset)

    @cached_property
    def pretrain_config(self) -> PretrainConfig | None:
        """The pretrain stage this cell starts from, typed; None for any other weights."""
        return pretrain_config(self.pretrain) if self.pretrain else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


def pretrain_config(stage: dict[str, Any]) -> PretrainConfig:
    """A pretrain stage as a ``RunSpec`` carries it (``{"name", "backbone", "key", "config"}``), typed."""
    from bench.config import PretrainConfig

    return PretrainConfig.model_validate(stage["config"])


@dataclass
class EpochRecord:
    """One row of a run's learning curve."""

    epoch: int
    train_loss: float
    train_acc: float | None
    val_acc: float | None
    lr: float
    seconds: float


@dataclass
class RunResult:
    """What one run produced. ``status`` is ``done`` only when every metric is present."""

    run_id: str
    status: str
    error: str | None = None
    traceback: str | None = None
    test_acc: float | None = None
    test_balanced_acc: float | None = None
    test_macro_f1: float | None = None
    val_acc: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    wall_s: float | None = None
    images_per_s: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    peak_mem_mb: float | None = None
    device: str | None = None
    epochs_run: int | None = None
    stopped_early: bool = False
    batch_size: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    epochs: list[EpochRecord] = field(default_factory=list)
    train_indices: list[int] = field(default_factory=list)
    val_indices: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. images the dataset skipped as corrupt
    # Health of the run: "undertrained" (validation still climbing at the end), "at_chance".
    flags: list[str] = field(default_factory=list)
    # Strategy-specific facts worth keeping: the probe's chosen L2 strength and its sweep, LogME.
    details: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**{**data, "epochs": [EpochRecord(**row) for row in data.get("epochs", [])]})

    @classmethod
    def failure(cls, run_id: str, error: str, traceback: str | None = None, **extra: Any) -> RunResult:
        return cls(run_id=run_id, status=STATUS_FAILED, error=error, traceback=traceback, **extra)
