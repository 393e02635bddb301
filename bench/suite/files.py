"""Suite files as files: the JSON Schema editors validate them with, and the catalogue of shipped suites.

The schema is pydantic's, widened to the shorthands ``load_suite`` accepts (a backbone or
dataset as a bare name, ``seeds: 5``, ``tuning: off``, ``{name: partial, k: 2}``, durations
such as ``10m``), so a suite that loads is a suite the editor accepts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
_DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(s|sec|m|min|h|hr)?\s*$"


def suite_json_schema() -> dict[str, Any]:
    """The JSON Schema of a suite file, shorthands included."""
    from bench.strategies import STRATEGIES
    from bench.suite.model import MAX_SEEDS, Suite

    schema = copy.deepcopy(Suite.model_json_schema())
    defs = schema["$defs"]
    props = schema["properties"]
    props.pop("source", None)  # set by the loader from the file's path, never written in one
    # The loader names a suite after its file when the file does not.
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    props["name"]["description"] = "default: the file name; names results/<name>.db and reports/<name>/"

    props["backbones"]["items"] = {"anyOf": [
        {"type": "string", "description": "a timm name, or torchvision:NAME"}, {"$ref": "#/$defs/BackboneConfig"},
    ]}
    props["datasets"]["items"] = {"anyOf": [
        {"type": "string", "description": "a dataset name; see `transfer-bench list datasets`"},
        {"$ref": "#/$defs/DatasetConfig"},
    ]}
    props["seeds"] = {
        "title": "Seeds", "description": "a count (3 means seeds 0, 1, 2) or a list of seeds",
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_SEEDS}, props["seeds"]],
    }
    props["tuning"] = {"anyOf": [{"type": "boolean", "description": "off: one configuration per arm"},
                                 {"$ref": "#/$defs/TuningConfig"}]}

    weights = defs["BackboneConfig"]["properties"]["weights"]
    weights["description"] = "none, hub, hub:TAG, file:PATH or pretrain:NAME; one or a list"
    defs["BackboneConfig"]["properties"]["weights"] = {**weights, "anyOf": [{"type": "string"}, {
        "type": "array", "items": {"type": "string"}}]}
    defs["BackboneConfig"]["properties"]["weights"].pop("type", None)
    defs["BackboneConfig"]["properties"]["weights"].pop("items", None)

    pretrain_dataset = defs["PretrainConfig"]["properties"]["dataset"]
    defs["PretrainConfig"]["properties"]["dataset"] = {"anyOf": [{"type": "string"}, pretrain_dataset]}

    for key in ("time_budget", "timeout"):
        prop = defs["TrainingConfig"]["properties"][key]
        prop["anyOf"].insert(1, {"type": "string", "pattern": _DURATION_PATTERN})
        prop["description"] = f"{prop.get('description', key)}: seconds, or a duration such as 90s, 10m, 2h"

    props["strategies"]["items"] = {"anyOf": [
        {"type": "string", "enum": list(STRATEGIES)},
        *[_strategy_shorthand(name, strategy.parameters, strategy.summary) for name, strategy in STRATEGIES.items()],
        {"$ref": "#/$defs/StrategyConfig"},
    ]}
    defs["StrategyConfig"]["properties"]["name"]["enum"] = list(STRATEGIES)
    return {"$schema": SCHEMA_DIALECT, **schema}


def _strategy_shorthand(name: str, parameters: dict[str, tuple[type, Any]], summary: str) -> dict[str, Any]:
    """``{name: partial, k: 2}`` or ``{name: partial, k: [1, 2]}`` (a list sweeps the parameter)."""
    properties: dict[str, Any] = {"name": {"const": name}}
    for key, (kind, default) in parameters.items():
        one = {"type": _JSON_TYPES[kind]}
        properties[key] = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}], "default": default}
    return {"type": "object", "description": summary, "properties": properties, "required": ["name"],
            "additionalProperties": False}


@dataclass(frozen=True)
class SuiteEntry:
    """One suite file: its name, description and cell count, or why it does not load."""

    path: Path
    name: str
    description: str = ""
    cells: int | None = None
    error: str | None = None


def list_suites(directory: str | Path = "suites") -> list[SuiteEntry]:
    """Every ``*.yaml`` suite in ``directory``, sorted by file name; a broken one carries its error."""
    from bench.suite.model import load_suite

    directory = Path(directory)
    if not directory.is_dir():
        raise BenchError(f"{directory}: no such folder of suites")
    entries = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            suite = load_suite(path)
        except BenchError as exc:
            entries.append(SuiteEntry(path=path, name=path.stem, error=str(exc)))
            continue
        entries.append(SuiteEntry(path=path, name=suite.name, description=suite.description,
                                  cells=suite.plan().final_count()))
    return entries
