"""End to end: a tiny real suite trains, records, resumes, and reports trainable counts exactly."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys

import pytest
import torch
from torch import nn

from bench.records import RunSpec
from bench.execution.driver import run_suite
from bench.store import ResultStore
from bench.config import TrainingConfig
from bench.suite.model import suite_from_dict
from bench.training.cell import TrainingFailed, fit
from tests.conftest import tiny_suite_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny suite run once in-process; tests read its store."""
    results = tmp_path_factory.mktemp("results")
    suite = suite_from_dict(tiny_suite_dict())
    summary = run_suite(suite, results_dir=results, executor="inprocess")
    return suite, summary, results


def test_every_cell_finishes_with_all_metrics(finished):
    suite, summary, _ = finished
    assert (summary.ran, summary.done, summary.failed) == (8, 8, 0), summary.failures
    with ResultStore(summary.store_path, readonly=True) as store:
        frame = store.frame()
        curves = store.epochs_frame()
    assert len(frame) == 8
    for column in ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "train_s", "eval_s", "wall_s",
                   "images_per_s", "trainable_params", "total_params", "peak_mem_mb"):
        assert frame[column].notna().all(), column
    assert frame["test_acc"].between(0, 1).all()
    assert set(curves["run_id"]) == set(frame["run_id"])
    assert (frame["training_version"] == suite.expand()[0].training_version).all()


def test_trainable_counts_match_an_independent_count(finished):
    from bench.backbones import build_backbone

    _, summary, _ = finished
    model = build_backbone("test_resnet", "none", 10).model
    count = lambda *prefixes: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))  # noqa: E731
    expected = {
        "scratch": count(""), "full": count(""), "frozen": count("fc."), "partial[k=1]": count("fc.", "layer4."),
    }
    with ResultStore(summary.store_path, readonly=True) as store:
        frame = store.frame()
    got = frame.groupby("strategy_label")["trainable_params"].unique().to_dict()
    assert {k: list(v) for k, v in got.items()} == {k: [v] for k, v in expected.items()}


def test_indices_are_kept_nested_and_stratified(finished):
    _, summary, _ = finished
    with ResultStore(summary.store_path, readonly=True) as store:
        results = {spec.size: store.result(spec.run_id) for spec in store.specs() if spec.strategy == "scratch"}
    small, large = set(results["3"].train_indices), set(results["5"].train_indices)
    assert len(small) == 30 and len(large) == 50
    assert small < large
    assert results["3"].val_indices == results["5"].val_indices
    assert not small & set(results["3"].val_indices)


def test_rerun_runs_nothing_and_a_partial_store_runs_only_the_missing(finished, tmp_path):
    suite, summary, results = finished
    again = run_suite(suite, results_dir=results, executor="inprocess")
    assert (again.ran, again.already_done) == (0, 8)

    copy = tmp_path / f"{suite.name}.db"
    with sqlite3.connect(summary.store_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        gone = [row[0] for row in db.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 2")]
        db.executemany("DELETE FROM runs WHERE run_id = ?", [(g,) for g in gone])
    partial = run_suite(suite, results_dir=tmp_path, executor="inprocess")
    assert (partial.ran, partial.already_done) == (2, 6)
    with ResultStore(copy, readonly=True) as store:
        assert set(store.statuses()) == {c.run_id for c in suite.expand()}
        assert all(s == "done" for s in store.statuses().values())


def test_pretrain_checkpoint_is_cached_and_reused(finished):
    _, _, results = finished
    checkpoints = list((results / "pretrained").glob("*.pt"))
    assert len(checkpoints) == 1
    info = checkpoints[0].with_suffix(".json")
    assert info.is_file() and "source_test_acc" in info.read_text()


def test_a_failing_cell_is_stored_with_its_error_and_the_suite_goes_on(tmp_path):
    raw = tiny_suite_dict(strategies=["scratch", {"name": "partial", "k": 50}])
    summary = run_suite(suite_from_dict(raw), results_dir=tmp_path, executor="inprocess")
    assert (summary.done, summary.failed) == (2, 2)
    with ResultStore(summary.store_path, readonly=True) as store:
        frame = store.frame()
    failed = frame[frame["status"] == "failed"]
    assert failed["error"].str.contains("only .* stage groups", regex=True).all()
    assert failed["test_acc"].isna().all()


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x.flatten(1)[:, :4]) * float("nan")


def test_nan_loss_fails_the_run_instead_of_recording_it():
    from bench.strategies import StrategyPlan

    model = _Exploding()
    plan = StrategyPlan(param_groups=[{"name": "head", "params": list(model.parameters()), "lr": 0.1}], frozen_names=[])
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]))]

    class Loader(list):
        num_samples = 4

    training = TrainingConfig(epochs=2, min_steps=None, weight_decay=0.0, warmup_epochs=0, amp=False)
    with pytest.raises(TrainingFailed, match="non-finite"):
        fit(model, plan, Loader(batches), None, training, torch.device("cpu"))


def test_subprocess_executor_runs_a_cell_end_to_end(tmp_path, write_suite):
    raw = tiny_suite_dict(name="child", strategies=["scratch"], datasets=[{"name": "digits", "sizes": [3]}])
    path = write_suite(raw)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(path), "--results-dir", str(tmp_path / "r"), "--no-report"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "1 done, 0 failed" in done.stdout
    with ResultStore(tmp_path / "r" / "child.db", readonly=True) as store:
        (result,) = [store.result(s.run_id) for s in store.specs()]
    assert result.status == "done" and math.isfinite(result.test_acc)
    assert RunSpec.from_json(RunSpec.from_json(store_spec_json(tmp_path / "r" / "child.db")).to_json()).size == "3"


def store_spec_json(db) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT spec FROM runs").fetchone()[0]


def test_lp_ft_runs_both_phases_as_one_curve(tmp_path):
    raw = tiny_suite_dict(strategies=[{"name": "lp_ft", "lp_epochs": 1}], datasets=[{"name": "digits", "sizes": [3]}])
    raw["training"] = {**raw["training"], "epochs": 3}
    summary = run_suite(suite_from_dict(raw), results_dir=tmp_path, executor="inprocess")
    assert (summary.done, summary.failed) == (1, 0), summary.failures
    with ResultStore(summary.store_path, readonly=True) as store:
        (spec,) = store.specs()
        result = store.result(spec.run_id)
    assert [e.epoch for e in result.epochs] == [1, 2, 3]
    assert result.trainable_params == result.total_params
    assert spec.strategy_label == "lp_ft[lp_epochs=1]"


def test_min_steps_lengthens_runs_on_small_subsets(tmp_path):
    raw = tiny_suite_dict(strategies=["scratch"], datasets=[{"name": "digits", "sizes": [3]}])
    raw["training"] = {**raw["training"], "epochs": 2, "batch_size": 8, "min_steps": 12, "patience": 1}
    summary = run_suite(suite_from_dict(raw), results_dir=tmp_path, executor="inprocess")
    with ResultStore(summary.store_path, readonly=True) as store:
        (spec,) = store.specs()
        result = store.result(spec.run_id)
    # 30 images in batches of 8 with the last dropped: 3 steps an epoch, so 12 steps take 4
    # epochs, and patience cannot end the run before them.
    assert result.epochs_run >= 4


@pytest.mark.parametrize("strategy", ["scratch", {"name": "lp_ft", "lp_epochs": 1}])
def test_progress_reports_the_epochs_a_run_really_makes(tmp_path, strategy):
    from bench.training.pretrain import checkpoint_path, ensure_pretrained
    from bench.training.cell import run

    raw = tiny_suite_dict(strategies=[strategy], datasets=[{"name": "digits", "sizes": [3]}])
    raw["training"] = {**raw["training"], "epochs": 2, "batch_size": 8, "min_steps": 12}
    spec = suite_from_dict(raw).expand()[0]
    weights = None
    if spec.pretrain:
        ensure_pretrained(spec.pretrain, tmp_path)
        weights = checkpoint_path(tmp_path, spec.pretrain)
    seen: list[tuple[int, int]] = []
    result = run(spec, weights_file=weights, on_epoch=lambda record, total: seen.append((record.epoch, total)))
    assert result.status == "done", result.error
    assert [epoch for epoch, _ in seen] == list(range(1, result.epochs_run + 1))
    assert seen[-1][1] == result.epochs_run, "the bar's total is the run's real length"
