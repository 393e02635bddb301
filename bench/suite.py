"""Suite files: the schema, loading with one-line errors, and expansion into ``RunSpec`` cells.

A suite is YAML validated by pydantic with unknown keys forbidden, so a misspelt key is an
error, never a silent default. ``Suite.expand()`` is a pure function of the suite: the cross
product of backbones x weights x datasets x sizes x strategies x seeds, each cell with an id
hashed from everything that can change its result.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import SuiteError
from bench.executors import DEFAULT_EXECUTOR, EXECUTOR_NAMES
from bench.tuning import DEFAULT_GRID, LR_FACTOR, TunedArm, grid_points
from bench.records import TRAINING_VERSION, RunSpec, content_hash, strategy_label

MAX_SEEDS = 10_000
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}

# Training settings that change how fast a run goes but not what it learns stay out of the id.
_NOT_IN_ID = ("num_workers", "timeout", "eval_batch_size", "compile")


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
        default_factory=lambda: {"scratch": 1e-3, "frozen": 1e-2, "partial": 1e-3, "full": 1e-3}
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

    def lr_for(self, strategy: str) -> float:
        """The base learning rate of one strategy: a number, or a per-strategy table."""
        if isinstance(self.lr, dict):
            if strategy in self.lr:
                return self.lr[strategy]
            if "default" in self.lr:
                return self.lr["default"]
            return 1e-3
        return self.lr


class DatasetConfig(_Strict):
    """A target dataset and the training-set sizes to sweep."""

    name: str
    label: str | None = None
    sizes: list[int | float | str] = Field(default_factory=lambda: [10, 50, "all"])
    root: str | None = None
    download: bool = False
    path: str | None = None
    test_fraction: float = Field(0.25, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
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
        if self.label:
            return self.label
        if self.name.lower() == "imagefolder" and self.path:
            return Path(self.path).name or self.name
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
        tunable = [k for k in TrainingConfig.model_fields if k not in _NOT_IN_ID] + [LR_FACTOR]
        for strategy, keys in grid.items():
            for key, values in keys.items():
                if key not in tunable:
                    hint = _did_you_mean(key, tunable)
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
        0.01, ge=0, lt=1, description="smallest difference in accuracy (0.01 = 1 point) worth a call"
    )


class Suite(_Strict):
    """A whole benchmark: what to cross, how to train, where to run."""

    name: str
    description: str = ""
    backbones: list[BackboneConfig]
    datasets: list[DatasetConfig]
    strategies: list[StrategyConfig] = Field(
        default_factory=lambda: [StrategyConfig(name=n) for n in ("scratch", "frozen", "partial", "full")]
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    pretrain: dict[str, PretrainConfig] = Field(default_factory=dict)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    device: str = "auto"
    executor: Literal[EXECUTOR_NAMES] = DEFAULT_EXECUTOR
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("backbones"), list):
            data["backbones"] = [{"name": b} if isinstance(b, str) else b for b in data["backbones"]]
        if isinstance(data.get("datasets"), list):
            data["datasets"] = [{"name": d} if isinstance(d, str) else d for d in data["datasets"]]
        if isinstance(data.get("strategies"), list):
            data["strategies"] = [_strategy_entry(s) for s in data["strategies"]]
        return data

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        """``seeds: 3`` means seeds 0, 1 and 2."""
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"a seed count must be between 1 and {MAX_SEEDS}")
            return list(range(value))
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not SUITE_NAME.match(name):
            raise ValueError(
                f"{name!r} is not a safe file name: use letters, digits, '.', '_' and '-' (at most 64)"
            )
        return name

    @field_validator("backbones", "datasets", "strategies", "seeds")
    @classmethod
    def _non_empty(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("must list at least one entry")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", device):
            raise ValueError(f"device {device!r}: use auto, cpu, cuda, cuda:N or mps")
        return device

    # -- expansion ------------------------------------------------------------------------

    def expand(self) -> list[RunSpec]:
        """Every cell that can run before any choice is made: untuned arms and every sweep."""
        return self.plan().runnable

    def plan(self) -> Plan:
        """Cells, tuned arms (each with its grid) and the pairings left out, each with its reason."""
        from bench.strategies import get_strategy

        cells: dict[str, RunSpec] = {}
        arms: list[TunedArm] = []
        skipped: list[tuple[str, str]] = []
        tuning_seeds = self.tuning_seeds
        for backbone in self.backbones:
            for weights in backbone.weights:
                for dataset in self.datasets:
                    for size in dataset.sizes:
                        for strategy_config in self.strategies:
                            strategy = get_strategy(strategy_config.name)
                            for params in strategy.expand_params(strategy_config.params):
                                cell_weights = weights if strategy.uses_pretrained else "none"
                                label = strategy_label(strategy.name, params)
                                reason = strategy.skip(cell_weights)
                                if reason:
                                    skipped.append((f"{backbone.name} {weights} {label}", reason))
                                    continue
                                grid = {k: v for k, v in self.tuning.grid_for(strategy.name).items()
                                        if strategy.tunes("lr" if k == LR_FACTOR else k, params)}
                                points = grid_points(grid)
                                base = (backbone, cell_weights, dataset, size, strategy.name, params)
                                if len(points) <= 1:
                                    for seed in self.seeds:
                                        spec = self._cell(*base, seed, points[0] if points else {})
                                        # One configuration is nothing to choose between.
                                        cells.setdefault(spec.run_id, dataclasses.replace(spec, arm=""))
                                    continue
                                by_point = [[self._cell(*base, seed, point) for seed in self.seeds] for point in points]
                                arm_id = by_point[0][0].arm
                                if any(a.arm == arm_id for a in arms):
                                    continue  # the same arm listed twice in the suite
                                arms.append(TunedArm(
                                    arm=arm_id, label=f"{backbone.label or backbone.name} {label} "
                                    f"{dataset.display_name}@{size}",
                                    points=[c[0].tuned for c in by_point], cells=by_point, tuning_seeds=tuning_seeds,
                                ))
        return Plan(cells=list(cells.values()), arms=arms, skipped=list(dict.fromkeys(skipped)))

    @property
    def tuning_seeds(self) -> list[int]:
        return list(self.tuning.seeds) if self.tuning.seeds else self.seeds[:1]

    def _cell(
        self, backbone: BackboneConfig, weights: str, dataset: DatasetConfig, size: Any,
        strategy: str, params: dict[str, Any], seed: int, point: dict[str, Any],
    ) -> RunSpec:
        training = self.training.model_dump()
        base_lr = self.training.lr_for(strategy)
        training["lr"] = base_lr
        tuned: dict[str, Any] = {}
        for key, value in point.items():
            if key == LR_FACTOR:
                training["lr"] = tuned["lr"] = base_lr * value
            else:
                training[key] = tuned[key] = value
        from bench.strategies import get_strategy

        training = get_strategy(strategy).adjust_training(training, params)
        pretrain = self._pretrain_for(backbone.name, weights)
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
            "training": {k: v for k, v in training.items() if k not in _NOT_IN_ID},
            "training_version": TRAINING_VERSION,
        }
        # The arm is the cell without its seed and grid point: what the sweep chooses within.
        arm_identity = {**identity, "seed": None, "training": {
            k: v for k, v in training.items() if k not in _NOT_IN_ID and k not in tuned
        }}
        return RunSpec(
            run_id=content_hash(identity),
            suite=self.name,
            backbone=backbone.label or backbone.name,
            weights=weights,
            dataset=data,
            size=str(size),
            strategy=strategy,
            strategy_params=params,
            seed=seed,
            training=training,
            device=self.device,
            pretrain=pretrain,
            model=backbone.name,
            weights_identity=weights_id,
            arm=content_hash(arm_identity) if point else "",
            tuned=tuned,
        )

    def _pretrain_for(self, backbone: str, weights: str) -> dict[str, Any] | None:
        if not weights.startswith("pretrain:"):
            return None
        name = weights.split(":", 1)[1]
        stage = self.pretrain[name]
        config = stage.model_dump()
        identity = {"backbone": backbone, "pretrain": config, "training_version": TRAINING_VERSION}
        config["training"]["lr"] = stage.training.lr_for("scratch")
        return {"name": name, "backbone": backbone, "key": content_hash(identity), "config": config}

    @model_validator(mode="after")
    def _cross_references(self) -> Suite:
        for i, backbone in enumerate(self.backbones):
            for j, weights in enumerate(backbone.weights):
                if weights.startswith("pretrain:"):
                    name = weights.split(":", 1)[1]
                    if name not in self.pretrain:
                        known = ", ".join(sorted(self.pretrain)) or "none defined"
                        raise ValueError(
                            f"backbones.{i}.weights.{j}: {weights!r} names no pretrain stage (defined: {known})"
                        )
        return self


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


def _strategy_entry(entry: Any) -> Any:
    """Accept ``scratch``, ``{name: partial, k: [1, 2]}`` or ``{name: ..., params: {...}}``."""
    if isinstance(entry, str):
        return {"name": entry}
    if isinstance(entry, dict) and "params" not in entry:
        params = {k: v for k, v in entry.items() if k != "name"}
        return {"name": entry.get("name"), "params": params} if params or "name" in entry else entry
    return entry


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


# -- loading ------------------------------------------------------------------------------

# A suite is a few kilobytes and a handful of levels deep (pretrain.NAME.dataset.options.KEY);
# far past these a file is generated, hostile or not a suite, and is refused before it costs
# memory, time or a RecursionError.
MAX_SUITE_BYTES = 256 << 10
MAX_DEPTH = 32
# What validation walks once YAML aliases are expanded: nodes, and characters of text.
MAX_EXPANDED_NODES = 100_000
MAX_EXPANDED_CHARS = 4 << 20


class _TooDeep(Exception):
    def __init__(self, mark: Any):
        self.mark = mark


class _SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a bound on nesting; its composer would otherwise recurse without one."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_suite(path: str | Path) -> Suite:
    """Read, validate and cross-check a suite file; any problem is one ``SuiteError`` line."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise SuiteError("no such suite file", file=file)
    raw = _read_yaml(path, file)
    if raw is None:
        raise SuiteError("the file is empty; a suite needs at least 'backbones' and 'datasets'", file=file)
    if not isinstance(raw, dict):
        raise SuiteError(f"expected a mapping of settings, got {type(raw).__name__}", file=file)
    raw.setdefault("name", _default_name(path))
    try:
        return suite_from_dict(raw, file=file)
    except RecursionError:
        raise SuiteError("nested too deeply to validate", file=file) from None


def _read_yaml(path: Path, file: str) -> Any:
    """The file's YAML document, bounded in size, depth and alias expansion."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SUITE_BYTES + 1)
        if len(data) > MAX_SUITE_BYTES:
            raise SuiteError(f"larger than {MAX_SUITE_BYTES // 1024} KiB; a suite file is a few KiB of YAML", file=file)
        text = data.decode("utf-8")
    except OSError as exc:
        raise SuiteError(f"cannot read: {exc.strerror or exc}", file=file) from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"not UTF-8 text (byte {exc.start}); save it as UTF-8", file=file) from None
    loader: _SuiteLoader | None = None
    try:
        loader = _SuiteLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, file)
        return loader.construct_document(node)
    except _TooDeep as exc:
        raise SuiteError(
            f"line {exc.mark.line + 1}, column {exc.mark.column + 1}: nested more than {MAX_DEPTH} levels deep",
            file=file,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(f"{where}invalid YAML: {problem}", file=file) from None
    except RecursionError:
        raise SuiteError(f"nested too deeply (more than {MAX_DEPTH} levels, or merge keys chained too far)",
                         file=file) from None
    except (ValueError, TypeError, OverflowError, AttributeError, KeyError, IndexError) as exc:
        # PyYAML's scalar constructors on values they do not expect: an integer longer than Python
        # converts, a '!!timestamp' that is no date (AttributeError), a '!!binary' that is no base64.
        raise SuiteError(f"a value cannot be read: {_shown(str(exc) or type(exc).__name__)}", file=file) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse aliases that expand to more than validation should walk, or that contain themselves."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            nodes, chars = 1, 0
            for child in _children(node):
                child_nodes, child_chars = sizes[id(child)]
                nodes, chars = nodes + child_nodes, chars + child_chars
            if nodes > MAX_EXPANDED_NODES or chars > MAX_EXPANDED_CHARS:
                mark = node.start_mark
                raise SuiteError(
                    f"line {mark.line + 1}, column {mark.column + 1}: holds more than {MAX_EXPANDED_NODES:,} values "
                    f"or {MAX_EXPANDED_CHARS >> 20} MiB of text once aliases are expanded", file=file,
                )
            sizes[key] = (nodes, chars)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            mark = node.start_mark
            raise SuiteError(f"line {mark.line + 1}, column {mark.column + 1}: an alias refers to a value that "
                             "contains it", file=file)
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value))
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _shown(value: Any, limit: int = 60) -> str:
    """A value as it appears in a one-line message: its repr, cut short."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _default_name(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).strip("-.") or "suite"


def suite_from_dict(raw: dict[str, Any], *, file: str | None = None) -> Suite:
    """Validate a suite given as a dict (from YAML or built by ``check``)."""
    try:
        suite = Suite.model_validate({**raw, "source": file})
    except ValidationError as exc:
        raise _suite_error(exc, raw, file) from None
    _check_registries(suite, file)
    return suite


def _suite_error(exc: ValidationError, raw: dict[str, Any], file: str | None) -> SuiteError:
    """Turn pydantic's first error into one line: field path, bad value, what is allowed."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    value = error.get("input")
    field = ".".join(loc)
    if error["type"] == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(key, allowed)
        return SuiteError(
            f"unknown key {_shown(repr(key))}{hint}; allowed here: {', '.join(allowed)}",
            file=file, field=_shown(field, 200), value=key,
        )
    if error["type"] == "missing":
        return SuiteError("required field is missing", file=file, field=field)
    message = error["msg"].removeprefix("Value error, ")
    text = repr(value)
    if text in message:
        message = message.replace(text, _shown(text))  # a validator quoted the value; a long one is cut
    shown = "" if isinstance(value, (dict, list)) or text in error["msg"] else f" (got {_shown(text)})"
    return SuiteError(f"{message}{shown}", file=file, field=_shown(field, 200) or None, value=value)


def _allowed_keys(loc: list[str]) -> list[str]:
    """Field names of the model found at ``loc`` inside a suite."""
    model: type[BaseModel] = Suite
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        nested = _model_in(annotation)
        if nested is None:
            if model is Suite and part == "pretrain":
                model = PretrainConfig
                continue
            if model is PretrainConfig:
                continue
            break
        model = nested
    return [name for name in model.model_fields if name != "source"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_registries(suite: Suite, file: str | None) -> None:
    """Names that must exist in a registry: strategies, datasets, backbones, weights sources."""
    from bench.backbones import check_backbone, check_weights_source
    from bench.data import list_datasets
    from bench.strategies import StrategyParamError, get_strategy

    for i, config in enumerate(suite.strategies):
        try:
            get_strategy(config.name).expand_params(config.params)
        except (KeyError, StrategyParamError) as exc:
            raise SuiteError(exc.args[0], file=file, field=f"strategies.{i}") from None
    for key in suite.tuning.grid:
        if key != "all":
            try:
                get_strategy(key)
            except KeyError as exc:
                raise SuiteError(f"{exc.args[0]}; or 'all'", file=file, field=f"tuning.grid.{key}") from None
    known = list_datasets()
    stages = [(f"datasets.{i}", d) for i, d in enumerate(suite.datasets)]
    stages += [(f"pretrain.{n}.dataset", p.dataset) for n, p in suite.pretrain.items()]
    for field, dataset in stages:
        if dataset.name.lower() not in known:
            hint = _did_you_mean(dataset.name.lower(), known)
            raise SuiteError(
                f"unknown dataset {_shown(repr(dataset.name))}{hint}; see 'transfer-bench list datasets'",
                file=file, field=f"{field}.name", value=dataset.name,
            )
        if dataset.name.lower() == "imagefolder" and not dataset.path:
            raise SuiteError("an imagefolder dataset needs 'path'", file=file, field=f"{field}.path")
    for i, backbone in enumerate(suite.backbones):
        try:
            check_backbone(backbone.name)
        except KeyError as exc:
            message = exc.args[0].replace(repr(backbone.name), _shown(repr(backbone.name)))
            raise SuiteError(message, file=file, field=f"backbones.{i}.name", value=backbone.name) from None
        for j, weights in enumerate(backbone.weights):
            try:
                check_weights_source(backbone.name, weights)
            except ValueError as exc:
                raise SuiteError(str(exc), file=file, field=f"backbones.{i}.weights.{j}", value=weights) from None


def check_weights(suite: Suite) -> None:
    """Every weights source a cell starts from is usable now: before a minute of compute is spent on it.

    Hub weights must be in the local cache or the hub reachable at once, ``file:`` paths
    readable; ``pretrain:`` stages were checked when the suite loaded.
    """
    from bench.backbones import weights_available

    plan = suite.plan()
    used = {(c.model_name, c.weights) for c in plan.runnable}
    used |= {(c.model_name, c.weights) for arm in plan.arms for point in arm.cells for c in point}
    for i, backbone in enumerate(suite.backbones):
        for j, weights in enumerate(backbone.weights):
            if (backbone.name, weights) not in used:
                continue
            problem = weights_available(backbone.name, weights)
            if problem:
                raise SuiteError(problem, file=suite.source, field=f"backbones.{i}.weights.{j}", value=weights)
