"""Estimates: the schedule counted as the training loop counts it, data not yet downloaded, and speeds
from the store or from a calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.config import TrainingConfig
from bench.errors import SuiteError
from bench.planning.estimate import estimate_suite, format_bytes, format_duration, pending_cells
from bench.execution.driver import run_suite
from bench.planning.loading import LoadSpeed, time_loading
from bench.planning.speeds import CALIBRATION, EARLIER_RUNS, Speed, Work, schedule
from bench.store import ResultStore
from bench.suite.model import suite_from_dict
from bench.planning.survey import downloads, survey_data
from tests.conftest import TINY_TRAINING, tiny_suite_dict

TRAINING = {"batch_size": 16, "epochs": 1, "min_steps": 2}


@pytest.mark.parametrize(
    ("n_train", "training", "images"),
    [
        (30, TRAINING, 2 * 16),  # 1 step an epoch (last batch dropped): min_steps makes 2 epochs
        (50, TRAINING, 3 * 16),  # 3 steps an epoch, already past min_steps
        (10, TRAINING, 2 * 10),  # one short batch an epoch
        (100, {"batch_size": 10, "epochs": 3, "min_steps": None}, 3 * 10 * 10),
        (100, {"batch_size": 10, "epochs": 3, "min_steps": 95}, 10 * 10 * 10),
    ],
)
def test_schedule_counts_steps_as_the_training_loop_does(n_train, training, images):
    assert schedule(n_train, 0, 0, TrainingConfig(**training)).train_images == images


def test_schedule_counts_validations_up_to_the_cap_plus_the_test_set():
    from bench.training.cell import MAX_VALIDATIONS

    few = schedule(100, 7, 50, TrainingConfig(batch_size=10, epochs=5, min_steps=None))
    assert few.eval_images == 5 * 7 + 50
    many = schedule(100, 7, 50, TrainingConfig(batch_size=100, epochs=400, min_steps=None))
    assert many.eval_images == MAX_VALIDATIONS * 7 + 50


def test_speed_respects_the_time_budget_and_adds_the_probe():
    speed = Speed("m", 32, "cpu", train_s=0.01, forward_s=0.001, startup_s=1.0, source=CALIBRATION, detail="x")
    assert speed.seconds(Work(train_images=1000, eval_images=100)) == pytest.approx(1.0 + 10.0 + 0.1)
    assert speed.seconds(Work(train_images=1000, time_budget=2.0)) == pytest.approx(3.0)
    assert speed.seconds(Work(probe=True)) > speed.seconds(Work())


def test_loading_adds_to_a_cpus_work_and_hides_behind_a_gpus():
    speed = Speed("m", 32, "cpu", train_s=0.01, forward_s=0.001, startup_s=1.0, source=CALIBRATION, detail="x")
    work = Work(train_images=1000, eval_images=100)
    shared = LoadSpeed(train_s=0.004, eval_s=0.002, overlaps=False, detail="x")
    assert speed.seconds(work, shared) == pytest.approx(1.0 + 1000 * 0.014 + 100 * 0.003)
    overlapped = LoadSpeed(train_s=0.004, eval_s=0.002, overlaps=True, detail="x")
    # Workers feeding a GPU: the slower of model and loader sets each image's pace.
    assert speed.seconds(work, overlapped) == pytest.approx(1.0 + 1000 * 0.01 + 100 * 0.002)


def test_loading_is_timed_on_the_folders_own_files_at_the_runs_settings(tmp_path):
    from PIL import Image

    from bench.config import DatasetConfig

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not an image")
    config = DatasetConfig(name="imagefolder", path=str(tmp_path))
    loading = time_loading(config, 24, TrainingConfig(batch_size=4, augment="standard", num_workers=0), "cpu")
    assert 0 < loading.train_s < 1 and 0 < loading.eval_s < 1 and not loading.overlaps
    assert "loading" in loading.detail and "24 px" in loading.detail and "standard augmentation" in loading.detail
    # A batch that reaches the corrupt file: a run skips it, and so does the timing.
    every = time_loading(config, 24, TrainingConfig(batch_size=13, augment="standard", num_workers=0), "cpu")
    assert 0 < every.train_s < 1 and "not timed" not in every.detail


def test_durations_and_bytes_read_as_people_say_them():
    assert format_duration(40) == "about 40 s"
    assert format_duration(12 * 60) == "about 12 min"
    assert format_duration(3.4 * 3600) == "about 3.4 h"
    assert format_bytes(170_498_071) == "about 170 MB"
    assert format_bytes(2_640_397_119) == "about 2.6 GB"
    assert format_bytes(None) == "size unknown"


def _remote_suite(tmp_path, **dataset):
    cifar = {"name": "cifar10", "root": str(tmp_path / "data"), "sizes": [5, "all"], **dataset}
    raw = tiny_suite_dict(datasets=[cifar])
    raw["pretrain"] = {}
    raw["backbones"] = [{"name": "test_resnet", "weights": ["none"]}]
    raw["strategies"] = ["scratch"]
    return suite_from_dict(raw)


def test_a_set_not_downloaded_yet_is_counted_from_known_sizes(tmp_path):
    survey = survey_data(_remote_suite(tmp_path, download=True))
    (status,) = [s for s in survey.values() if s.name == "cifar10"]
    assert not status.present
    assert status.download_bytes == 170_498_071
    assert status.root == tmp_path / "data"
    assert status.counts["train"].tolist() == [5000] * 10
    assert downloads(survey) == [status]


def test_a_missing_set_without_download_stops_the_plan_naming_the_field(tmp_path):
    with pytest.raises(SuiteError, match=r"datasets\.0.*not found"):
        survey_data(_remote_suite(tmp_path, download=False))


def test_a_size_a_known_set_cannot_supply_is_caught_before_download(tmp_path):
    raw = tiny_suite_dict(datasets=[{"name": "flowers102", "root": str(tmp_path), "download": True, "sizes": [50]}])
    with pytest.raises(SuiteError, match=r"datasets\.0"):
        survey_data(suite_from_dict(raw))


def test_every_torchvision_set_has_known_sizes():
    from bench.data.known import KNOWN_SIZES, known_counts
    from bench.data.tvsets import TV_SETS

    assert set(KNOWN_SIZES) == set(TV_SETS)
    eurosat = known_counts("eurosat", 0.25)
    assert eurosat["train"].sum() + eurosat["test"].sum() == 27_000
    assert np.all(eurosat["test"] > 0)


def test_pending_counts_sweeps_and_the_final_seeds_they_wait_for():
    raw = tiny_suite_dict(seeds=[0, 1, 2], strategies=["scratch", "frozen"],
                          tuning={"grid": {"all": {"lr_factor": [1, 3]}}})
    suite = suite_from_dict(raw)
    plan = suite.plan()
    cells = pending_cells(suite, {})
    assert len(cells) == plan.final_count()
    done = {c.run_id: "done" for c in plan.runnable}
    left = pending_cells(suite, done)
    # Scratch's two final seeds per size still wait; everything runnable is done.
    assert len(left) == plan.final_count() - len(plan.runnable) == 2 * 2


@pytest.mark.slow
def test_calibration_first_then_earlier_runs_from_the_store(tmp_path):
    raw = tiny_suite_dict(strategies=["scratch", "frozen"])
    suite = suite_from_dict(raw)
    first = estimate_suite(suite, results_dir=tmp_path)
    assert first.source == CALIBRATION
    assert first.stages == 1 and first.cells == len(suite.plan().runnable)
    assert first.seconds > 0
    (speed,) = first.speeds
    assert speed.pixels == TINY_TRAINING["image_size"] and "calibration" in speed.detail
    cached = json.loads((tmp_path / "calibration.json").read_text())
    loading = [key for key in cached if json.loads(key)[0] == "loading"]
    # One backbone timed once; the loaders of the pretrain set and of the target set, each once.
    assert len(cached) - len(loading) == 1 and len(loading) == len(first.loading) == 2
    again = estimate_suite(suite, results_dir=tmp_path)
    assert "kept in" in again.speeds[0].detail and again.loading == first.loading

    run_suite(suite, results_dir=tmp_path, executor="inprocess")
    assert estimate_suite(suite, results_dir=tmp_path).line() == "estimate: nothing left to run"
    more = suite_from_dict({**raw, "seeds": [0, 1]})
    later = estimate_suite(more, results_dir=tmp_path)
    assert later.source == EARLIER_RUNS
    assert later.stages == 0  # the checkpoint is on disk
    assert later.cells == len(more.plan().runnable) - len(suite.plan().runnable)
    assert "earlier run" in later.speeds[0].detail


@pytest.mark.slow
def test_the_schedule_matches_the_images_a_run_trains_on(tmp_path):
    raw = tiny_suite_dict(strategies=["scratch"], datasets=[{"name": "digits", "sizes": [3, 5]}])
    suite = suite_from_dict(raw)
    summary = run_suite(suite, results_dir=tmp_path, executor="inprocess")
    survey = survey_data(suite)
    from bench.planning.speeds import cell_work
    from bench.planning.survey import data_key

    with ResultStore(summary.store_path, readonly=True) as store:
        for spec in store.specs():
            result = store.result(spec.run_id)
            seen = round(result.images_per_s * result.train_s)
            assert cell_work(spec, survey[data_key(spec.dataset)].counts).train_images == seen


@pytest.mark.slow
def test_run_prints_the_estimate_as_it_starts(tmp_path, write_suite):
    from typer.testing import CliRunner

    from bench.cli.app import app

    path = write_suite(tiny_suite_dict(strategies=["scratch"], datasets=[{"name": "digits", "sizes": [3]}]))
    args = ["run", str(path), "-e", "inprocess", "--no-report", "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("estimate: about ") and "for 1 cell, one at a time" in first


def test_hub_weights_missing_from_the_caches_are_listed_with_their_size(tmp_path, monkeypatch):
    import os

    import torchvision

    from bench.planning.survey import missing_hub_weights

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    raw = tiny_suite_dict(backbones=[{"name": "test_resnet", "weights": ["hub", "none"]},
                                     {"name": "torchvision:mobilenet_v3_small", "weights": ["hub"]}])
    suite = suite_from_dict(raw)
    missing = {w.backbone: w for w in missing_hub_weights(suite)}
    assert set(missing) == {"test_resnet", "torchvision:mobilenet_v3_small"}
    assert missing["test_resnet"].where == str(tmp_path / "hf")
    # 2.5 million float32 parameters.
    assert 9e6 < missing["torchvision:mobilenet_v3_small"].approx_bytes < 11e6

    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / os.path.basename(url)).write_bytes(b"cached")
    assert [w.backbone for w in missing_hub_weights(suite)] == ["test_resnet"]
