"""Suite files: the ``Suite`` model, loading with one-line errors, and the checks of names.

A suite is YAML validated by pydantic with unknown keys forbidden, so a misspelt key is an
error, never a silent default. The settings models live in ``bench.config``, the bounded YAML
reader in ``bench.suite.load`` and the expansion into cells in ``bench.suite.plan``; this module
ties them together and re-exports their public names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from bench.config import (  # noqa: F401  (re-exported: importers reach the models through bench.suite.model)
    DEFAULT_EXECUTOR, EXECUTOR_NAMES, BackboneConfig, DatasetConfig, PretrainConfig, StrategyConfig, TrainingConfig,
    TuningConfig, VerdictConfig, _Strict, parse_duration,
)
from bench.errors import SuiteError, shown
from bench.records import RunSpec
from bench.strategies import DEFAULT_STRATEGIES
from bench.tuning import tuning_seeds_of
from bench.suite.load import default_name, read_yaml, suite_error
from bench.suite.plan import Plan, file_digest, plan_suite  # noqa: F401  (re-exported)

MAX_SEEDS = 10_000
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Suite(_Strict):
    """A whole benchmark: what to cross, how to train, where to run."""

    name: str
    description: str = ""
    backbones: list[BackboneConfig]
    _plan: Plan | None = PrivateAttr(None)
    datasets: list[DatasetConfig]
    strategies: list[StrategyConfig] = Field(
        default_factory=lambda: [StrategyConfig(name=n) for n in DEFAULT_STRATEGIES]
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
        """Cells, tuned arms (each with its grid) and the pairings left out, each with its reason.

        Worked out once per suite: a suite is frozen, and ``plan``, the weights check, the
        estimate and the runner each ask for it (hashing every cell's spec each time).
        """
        if self._plan is None:
            self._plan = plan_suite(self)
        return self._plan

    @property
    def tuning_seeds(self) -> list[int]:
        return tuning_seeds_of(self.seeds, self.tuning.seeds)

    @model_validator(mode="after")
    def _cross_references(self) -> Suite:
        most = self.verdict.max_seeds
        if most is not None and most < len(self.seeds):
            raise ValueError(f"verdict.max_seeds: {most} is fewer than the suite's {len(self.seeds)} seeds")
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


def _strategy_entry(entry: Any) -> Any:
    """Accept ``scratch``, ``{name: partial, k: [1, 2]}`` or ``{name: ..., params: {...}}``."""
    if isinstance(entry, str):
        return {"name": entry}
    if isinstance(entry, dict) and "params" not in entry:
        params = {k: v for k, v in entry.items() if k != "name"}
        return {"name": entry.get("name"), "params": params} if params or "name" in entry else entry
    return entry


def load_suite(path: str | Path) -> Suite:
    """Read, validate and cross-check a suite file; any problem is one ``SuiteError`` line."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise SuiteError("no such suite file", file=file)
    raw = read_yaml(path, file)
    if raw is None:
        raise SuiteError("the file is empty; a suite needs at least 'backbones' and 'datasets'", file=file)
    if not isinstance(raw, dict):
        raise SuiteError(f"expected a mapping of settings, got {type(raw).__name__}", file=file)
    raw.setdefault("name", default_name(path))
    try:
        return suite_from_dict(raw, file=file)
    except RecursionError:
        raise SuiteError("nested too deeply to validate", file=file) from None



def suite_from_dict(raw: dict[str, Any], *, file: str | None = None) -> Suite:
    """Validate a suite given as a dict (from YAML or built by ``check``)."""
    try:
        suite = Suite.model_validate({**raw, "source": file})
    except ValidationError as exc:
        raise suite_error(exc, Suite, file) from None
    _check_registries(suite, file)
    return suite



def _check_registries(suite: Suite, file: str | None) -> None:
    """Names that must exist in a registry: strategies, datasets, backbones, weights sources."""
    from bench.catalog import check_backbone
    from bench.weights import check_weights_source
    from bench.data import list_datasets, unknown_dataset
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
            raise SuiteError(unknown_dataset(dataset.name), file=file, field=f"{field}.name", value=dataset.name)
        if dataset.name.lower() == "imagefolder" and not dataset.path:
            raise SuiteError("an imagefolder dataset needs 'path'", file=file, field=f"{field}.path")
    for i, backbone in enumerate(suite.backbones):
        try:
            check_backbone(backbone.name)
        except KeyError as exc:
            message = exc.args[0].replace(repr(backbone.name), shown(repr(backbone.name)))
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
    from bench.weights import weights_available

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
