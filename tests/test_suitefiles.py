"""Suite files as files: the JSON Schema, the shipped suites, and the commands that show them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.suite.model import load_suite
from bench.suite.files import list_suites, suite_json_schema
from tests.conftest import tiny_suite_dict

SUITES = Path(__file__).resolve().parents[1] / "suites"
SHIPPED = sorted(SUITES.glob("*.yaml"))


def test_at_least_four_suites_are_shipped():
    assert {"quick", "overnight", "vtab1k", "sim2real"} <= {p.stem for p in SHIPPED}


def test_the_schema_is_json_with_the_suite_fields():
    schema = json.loads(json.dumps(suite_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    fields = {"backbones", "datasets", "strategies", "seeds", "training", "pretrain", "tuning"}
    assert fields <= set(schema["properties"])
    assert "source" not in schema["properties"]
    assert schema["required"] == ["backbones", "datasets"]


def test_the_shipped_schema_file_is_current():
    shipped = json.loads((SUITES / "suite.schema.json").read_text())
    assert shipped == suite_json_schema(), "regenerate it: transfer-bench schema > suites/suite.schema.json"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_suite_loads(path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert suite.description
    assert suite.plan().final_count() > 0


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_suite_validates_against_the_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = suite_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors]


def test_the_schema_accepts_the_shorthands_and_rejects_a_misspelt_key():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(suite_json_schema())
    short = {
        "backbones": ["resnet18"], "datasets": ["digits"], "seeds": 3, "tuning": False,
        "strategies": ["scratch", {"name": "partial", "k": [1, 2]}, {"name": "lp_ft", "params": {"lp_epochs": 2}}],
        "training": {"time_budget": "10m", "timeout": 600}, "pretrain": {"s": {"dataset": "shapes"}},
    }
    assert not list(validator.iter_errors(short))
    assert list(validator.iter_errors({**short, "training": {"epoch": 3}}))
    assert list(validator.iter_errors({**short, "strategies": [{"name": "partial", "kk": 2}]}))
    assert list(validator.iter_errors({**short, "strategies": ["scrach"]}))


def test_list_suites_gives_names_descriptions_and_cell_counts(tmp_path):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(tiny_suite_dict(name="good")))
    (tmp_path / "bad.yaml").write_text("backbones: [test_resnet]\ndatasets: [digits]\nseeds: -1\n")
    entries = {e.name: e for e in list_suites(tmp_path)}
    assert entries["good"].cells == 8 and entries["good"].error is None
    assert "seeds" in entries["bad"].error and entries["bad"].cells is None


def test_cli_schema_prints_valid_json():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == suite_json_schema()


def test_cli_list_suites_shows_the_shipped_ones():
    result = CliRunner().invoke(app, ["list", "suites", str(SUITES)])
    assert result.exit_code == 0, result.output
    for name in ("quick", "overnight", "vtab1k", "sim2real"):
        assert name in result.stdout
    sim2real = next(line for line in result.stdout.splitlines() if "sim2real.yaml" in line)
    assert f" {load_suite(SUITES / 'sim2real.yaml').plan().final_count()} " in sim2real


@pytest.mark.slow
def test_cli_plan_says_what_it_downloads_and_how_long_it_takes(tmp_path, write_suite):
    cifar = {"name": "cifar10", "root": str(tmp_path / "data"), "download": True, "sizes": [5]}
    raw = tiny_suite_dict(datasets=[cifar], strategies=["scratch"], seeds=[0, 1, 2])
    path = write_suite(raw)
    result = CliRunner().invoke(app, ["plan", str(path), "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert f"download on the first run into {tmp_path / 'data'}: cifar10 (about 170 MB)" in result.stdout
    assert "estimate: about" in result.stdout and "from calibration" in result.stdout
    assert "test_resnet at 16 px on cpu" in result.stdout
    assert not (tmp_path / "data").exists(), "plan downloads nothing"


def test_cli_plan_without_estimate_times_nothing(tmp_path, write_suite):
    path = write_suite(tiny_suite_dict())
    result = CliRunner().invoke(app, ["plan", str(path), "--no-estimate", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "estimate:" not in result.stdout
    assert not (tmp_path / "calibration.json").exists()


def test_cli_export_to_stdout_writes_csv(tmp_path):
    from tests.report_fixtures import build_store

    db = build_store(tmp_path / "demo.db")
    result = CliRunner().invoke(app, ["export", str(db), "--out", "-"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run_id,") and len(lines) > 10
    assert not (tmp_path / "demo.csv").exists()
    refused = CliRunner().invoke(app, ["export", str(db), "--out", "-", "-f", "parquet"])
    assert refused.exit_code == 2
