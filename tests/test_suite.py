"""Suite loading, validation errors, matrix expansion and cell-id stability."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bench.suite.plan
from bench.errors import SuiteError
from bench.suite.model import load_suite, parse_duration, suite_from_dict
from tests.conftest import tiny_suite_dict


def test_three_line_suite_is_valid_with_defaults(write_suite):
    path = write_suite("backbones: [test_resnet]\ndatasets: [digits]\nseeds: 1\n", "three.yaml")
    suite = load_suite(path)
    assert suite.name == "three"
    assert [s.name for s in suite.strategies] == ["scratch", "frozen", "partial", "full"]
    assert suite.backbones[0].weights == ["hub"]
    assert suite.seeds == [0]
    assert suite.training.epochs >= 1


def test_expansion_is_the_cross_product_with_scratch_on_random_init():
    suite = suite_from_dict(tiny_suite_dict(
        backbones=[{"name": "test_resnet", "weights": ["pretrain:shapes", "none"]}],
        strategies=["scratch", "frozen", {"name": "partial", "k": [1, 2]}, "full"],
        seeds=[0, 1, 2],
    ))
    plan = suite.plan()
    sizes, seeds = 2, 3
    # scratch appears once per size and seed whatever the weights list says; transfer
    # strategies pair only with real pretrained weights, so 'none' is skipped for them.
    transfer = 4  # frozen, partial[k=1], partial[k=2], full
    assert len(plan.cells) == sizes * seeds * (1 + transfer)
    assert {c.weights for c in plan.cells if c.strategy == "scratch"} == {"none"}
    assert {c.weights for c in plan.cells if c.strategy != "scratch"} == {"pretrain:shapes"}
    assert {c.strategy_label for c in plan.cells} == {"scratch", "frozen", "partial[k=1]", "partial[k=2]", "full"}
    assert any("frozen" in what and "none" in what for what, _ in plan.skipped)
    assert len({c.run_id for c in plan.cells}) == len(plan.cells)


def test_cell_ids_are_stable_and_follow_what_changes_results(monkeypatch):
    base = tiny_suite_dict()
    ids = [c.run_id for c in suite_from_dict(base).expand()]
    assert ids == [c.run_id for c in suite_from_dict(tiny_suite_dict()).expand()]

    reordered = dict(reversed(list(tiny_suite_dict().items())))
    assert sorted(ids) == sorted(c.run_id for c in suite_from_dict(reordered).expand())

    slower = tiny_suite_dict(training={**base["training"], "num_workers": 3})
    assert ids == [c.run_id for c in suite_from_dict(slower).expand()], "loader workers do not change results"

    longer = tiny_suite_dict(training={**base["training"], "epochs": 2})
    assert not set(ids) & {c.run_id for c in suite_from_dict(longer).expand()}

    renamed = tiny_suite_dict(name="other")
    assert ids == [c.run_id for c in suite_from_dict(renamed).expand()], "a suite's name is not part of a result"

    longer_pretrain = tiny_suite_dict()
    longer_pretrain["pretrain"]["shapes"]["training"]["epochs"] = 3
    changed = {c.run_id for c in suite_from_dict(longer_pretrain).expand() if c.strategy != "scratch"}
    assert not changed & set(ids), "a different source model is a different cell"

    monkeypatch.setattr(bench.suite.plan, "TRAINING_VERSION", "changed-loop")
    assert not set(ids) & {c.run_id for c in suite_from_dict(base).expand()}


def test_file_weights_id_follows_file_content(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"first")
    suite = tiny_suite_dict(backbones=[{"name": "test_resnet", "weights": [f"file:{weights}"]}], strategies=["frozen"])
    before = {c.run_id for c in suite_from_dict(suite).expand()}
    weights.write_bytes(b"second")
    after = {c.run_id for c in suite_from_dict(suite).expand()}
    assert before and not before & after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("backbones: [test_resnet]\ndatasets: [digits]\ntraining: {epoch: 3}\n", ["training.epoch", "did you mean 'epochs'"]),
        ("backbones: [test_resnet]\ndatasets: [digits]\nstrategies: [fozen]\n", ["strategies.0", "did you mean 'frozen'"]),
        ("backbones: [test_resnt]\ndatasets: [digits]\n", ["backbones.0.name", "test_resnet", "transfer-bench list backbones"]),
        ("backbones: [test_resnet]\ndatasets: [digts]\n", ["datasets.0.name", "did you mean 'digits'"]),
        ("backbones: [test_resnet]\ndatasets: [{name: digits, sizes: [0]}]\n", ["datasets.0.sizes", "at least 1"]),
        ("backbones: [test_resnet]\ndatasets: [{name: digits, sizes: [ten]}]\n", ["datasets.0.sizes", "'ten'"]),
        ("name: ../evil\nbackbones: [test_resnet]\ndatasets: [digits]\n", ["name", "not a safe file name"]),
        ("backbones: [test_resnet]\ndatasets: [digits\n", ["invalid YAML", "line"]),
        ("", ["empty"]),
        ("- just\n- a list\n", ["expected a mapping"]),
        ("backbones: [test_resnet]\n", ["datasets", "missing"]),
        ("backbones: [{name: test_resnet, weights: [pretrain:nope]}]\ndatasets: [digits]\n", ["pretrain:nope", "names no pretrain stage"]),
        ("backbones: [{name: test_resnet, weights: [file:/no/such.pt]}]\ndatasets: [digits]\n", ["backbones.0.weights.0", "does not exist"]),
        ("backbones: [{name: test_resnet, weights: [imagenet]}]\ndatasets: [digits]\n", ["weights.0", "use none, hub"]),
        ("backbones: [test_resnet]\ndatasets: [digits]\ntraining: {epochs: ten}\n", ["training.epochs", "'ten'"]),
        ("backbones: [test_resnet]\ndatasets: [digits]\nstrategies: [{name: partial, k: 0}]\n", ["strategies.0", "k=0"]),
        ("backbones: [test_resnet]\ndatasets: [digits]\nstrategies: [{name: partial, depth: 2}]\n", ["no parameter 'depth'"]),
        ("backbones: [test_resnet]\ndatasets: [digits]\ntraining: {time_budget: soon}\n", ["training.time_budget", "duration"]),
        ("backbones: [torchvision:resnet181]\ndatasets: [digits]\n", ["resnet18"]),
    ],
)
def test_bad_suites_give_one_line_naming_the_problem(write_suite, text, expected):
    path = write_suite(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message, message


def test_impossible_size_is_an_error_at_plan_time(write_suite):
    from bench.execution.driver import check_sizes

    suite = load_suite(write_suite("backbones: [test_resnet]\ndatasets: [{name: digits, sizes: [10, 500]}]\n"))
    with pytest.raises(SuiteError, match=r"datasets\.0.*size 500.*only"):
        check_sizes(suite)


def test_cli_plan_bad_suite_exits_2_with_one_line(write_suite):
    path = write_suite("backbones: [test_resnet]\ndatasets: [digits]\ntraining: {lr_rate: 0.1}\n")
    done = subprocess.run([sys.executable, "-m", "bench", "plan", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.lr_rate" in lines[0]


def test_cli_plan_prints_matrix_without_running(write_suite, tmp_path):
    path = write_suite(tiny_suite_dict())
    done = subprocess.run(
        [sys.executable, "-m", "bench", "plan", str(path), "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "8 cells, 0 done" in done.stdout
    assert "partial[k=1]" in done.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (None, None)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds
