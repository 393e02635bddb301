"""Exit statuses and one-line errors of the command line: 0 done, 1 failed cells, 2 user errors, 130 interrupted.

Commands run in-process through typer's runner, so a traceback would show up as an exception
other than SystemExit; ``tests/test_faults.py`` covers the signals against real processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.app import app
from bench.execution.worker import FAULT_ENV
from tests.conftest import TINY_TRAINING


def tiny(name: str = "codes", **extra: Any) -> dict[str, Any]:
    """One cell of a few seconds: test_resnet from scratch on digits."""
    return {
        "name": name, "backbones": [{"name": "test_resnet", "weights": "none"}],
        "datasets": [{"name": "digits", "sizes": [3]}], "strategies": ["scratch"], "seeds": [0],
        "training": dict(TINY_TRAINING), "tuning": False, "device": "cpu", **extra,
    }


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: raised {result.exception!r} instead of exiting") from result.exception
    return result


def one_line(result: Any) -> str:
    """The single line a user error prints, after checking there is exactly one."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def write(path: Path, suite: dict[str, Any] | str) -> Path:
    path.write_text(suite if isinstance(suite, str) else yaml.safe_dump(suite, sort_keys=False))
    return path


def test_help_documents_every_exit_status():
    for args in (["--help"], ["run", "--help"], ["check", "--help"]):
        text = cli(*args).output
        for code, meaning in (("0", "every cell done"), ("1", "some cells failed"), ("2", "usage, suite, data or store"),
                              ("130", "interrupted")):
            assert any(line.strip().startswith(code) and meaning in line for line in text.splitlines()), (args, code)


# -- 0 and 1: the suite ran -----------------------------------------------------------------


@pytest.mark.slow
def test_a_run_exits_0_when_every_cell_is_done_and_1_while_any_failed(tmp_path, monkeypatch):
    path = write(tmp_path / "codes.yaml", tiny())
    results = tmp_path / "results"
    common = ("--results-dir", results, "--no-report", "-e", "inprocess")

    monkeypatch.setenv(FAULT_ENV, "oom")
    failed = cli("run", path, *common)
    assert failed.exit_code == 1, failed.output
    assert "0 done, 1 failed this time" in failed.stdout

    monkeypatch.delenv(FAULT_ENV)
    again = cli("run", path, *common)
    assert again.exit_code == 1, "a failed cell left as it was keeps the suite from being done"
    assert "failed in an earlier run; --retry-failed runs them again" in again.stderr

    retried = cli("run", path, *common, "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert "1 done, 0 failed this time" in retried.stdout
    assert cli("run", path, *common).exit_code == 0


# -- 2: usage, suite, data, weights, store ------------------------------------------------


def test_usage_errors_exit_2():
    assert cli("run", "--jobs", "0").exit_code == 2
    assert cli("no-such-command").exit_code == 2
    assert cli("export", "x.db", "--format", "xlsx").exit_code == 2


def test_a_suite_nested_thousands_of_levels_deep_is_one_line(tmp_path):
    path = write(tmp_path / "deep.yaml", "name: deep\nbackbones: " + "[" * 5000 + "]" * 5000 + "\n")
    for command in ("plan", "run"):
        result = cli(command, path, "--results-dir", tmp_path / "r")
        assert result.exit_code == 2
        line = one_line(result)
        assert "deep.yaml" in line and "nested more than" in line
    assert not (tmp_path / "r").exists()


def test_offline_hub_weights_stop_plan_and_run_before_any_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    suite = tiny("hub", backbones=[{"name": "test_resnet", "weights": ["none", "hub"]}],
                 strategies=["scratch", "full"])
    path = write(tmp_path / "hub.yaml", suite)
    # The time limit is on waiting for a hub, not on importing torch and timm, slow on a loaded machine.
    import timm  # noqa: F401

    lines = []
    for command in ("plan", "run"):
        started = time.monotonic()
        result = cli(command, path, "--results-dir", tmp_path / "results", "--no-estimate" if command == "plan"
                     else "--no-report")
        assert result.exit_code == 2, result.output
        assert time.monotonic() - started < 30
        if command == "plan":
            # plan shows the matrix first, then refuses; its last line is run's one line.
            assert "suite hub:" in result.stdout and "Traceback" not in result.output
            lines.append(result.stderr.strip().splitlines()[-1])
        else:
            lines.append(one_line(result))
    assert lines[0] == lines[1], "plan refuses what run refuses, in the same words"
    line = lines[0]
    assert "hub.yaml: backbones.0.weights.1" in line and "test_resnet" in line and "not in the local cache" in line
    assert "HF_HUB_OFFLINE" in line and "file:PATH" in line and "create_model" in line
    assert not (tmp_path / "results" / "hub.db").exists(), "nothing ran and nothing was written"


def test_weights_used_by_no_cell_are_not_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Scratch starts from random weights whatever the backbone lists, so the hub is never needed.
    suite = tiny("unused", backbones=[{"name": "test_resnet", "weights": ["hub"]}])
    from bench.suite.model import check_weights, suite_from_dict

    check_weights(suite_from_dict(suite))


def test_a_missing_or_unreadable_weights_file_is_named_by_plan(tmp_path):
    weights = tmp_path / "r.pt"
    suite = tiny("file", backbones=[{"name": "test_resnet", "weights": f"file:{weights}"}], strategies=["full"])
    path = write(tmp_path / "file.yaml", suite)
    result = cli("plan", path, "--results-dir", tmp_path / "r", "--no-estimate")
    assert result.exit_code == 2
    line = one_line(result)
    assert str(weights) in line and "backbones.0.weights.0" in line

    if os.geteuid() != 0:  # root reads a file whatever its mode
        weights.write_bytes(b"x")
        weights.chmod(0)
        result = cli("plan", path, "--results-dir", tmp_path / "r", "--no-estimate")
        assert result.exit_code == 2 and "cannot be read" in result.stderr.strip().splitlines()[-1]


def test_plan_refuses_a_results_path_under_a_file_as_run_does(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = write(tmp_path / "s.yaml", tiny("blocked"))
    lines = []
    for command, extra in (("plan", "--no-estimate"), ("run", "--no-report")):
        result = cli(command, path, "--results-dir", blocker / "results", extra)
        assert result.exit_code == 2, result.output
        lines.append(one_line(result))
    assert lines[0] == lines[1]
    assert "cannot create results folder" in lines[0] and "a-file" in lines[0]


def test_a_dataset_path_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nonexistent_dir"
    suite = tiny("nodata", datasets=[{"name": "imagefolder", "path": str(missing), "sizes": [3]}])
    path = write(tmp_path / "nodata.yaml", suite)
    result = cli("plan", path, "--results-dir", tmp_path / "r", "--no-estimate")
    assert result.exit_code == 2
    line = one_line(result)
    assert str(missing) in line and "does not exist" in line

    os.chdir(tmp_path)
    for data in ("nonexistent_dir", str(missing)):
        result = cli("check", "--data", data, "--backbone", "test_resnet", "--weights", "none",
                     "--results-dir", tmp_path / "r", "--reports-dir", tmp_path / "p")
        assert result.exit_code == 2
        line = one_line(result)
        assert "nonexistent_dir" in line and "does not exist" in line, line


@pytest.fixture(autouse=True)
def _keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


# -- 130: interrupted ---------------------------------------------------------------------


def test_ctrl_c_outside_a_run_exits_130_without_a_traceback(tmp_path, monkeypatch):
    import bench.suite.model

    def interrupted(path: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.suite.model, "load_suite", interrupted)
    result = cli("plan", tmp_path / "x.yaml")
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted"


def test_an_interrupted_run_exits_130_even_when_running_cells_finished(tmp_path, monkeypatch):
    import bench.execution.driver

    path = write(tmp_path / "stopped.yaml", tiny("stopped"))

    def stopped_after_one(suite: Any, **kwargs: Any) -> Any:
        return bench.execution.driver.RunSummary(store_path=tmp_path / "stopped.db", planned=2, already_done=0, ran=1, done=1,
                                       interrupted=True)

    monkeypatch.setattr(bench.execution.driver, "run_suite", stopped_after_one)
    result = cli("run", path, "--results-dir", tmp_path / "r", "--no-report")
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stdout
