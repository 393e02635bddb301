"""The sweep stage: same grid for every arm, choice on validation only, chosen point on every seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bench.training.cell
from bench.errors import SuiteError
from bench.execution.driver import run_suite
from bench.store import ResultStore
from bench.suite.model import suite_from_dict
from bench.tuning import choose, grid_points, selections, split_final, tuning_summary
from tests.conftest import tiny_suite_dict


def _tuned_suite(**overrides):
    raw = tiny_suite_dict(
        strategies=["scratch", "frozen", "full"], datasets=[{"name": "digits", "sizes": [5]}], seeds=[0, 1],
        tuning={"grid": {"all": {"lr_factor": [0.3, 3.0]}}},
    )
    raw["training"] = {**raw["training"], "min_steps": 4}
    raw.update(overrides)
    return suite_from_dict(raw)


def test_choose_takes_the_best_mean_validation_and_breaks_ties_by_order():
    assert choose([[0.5, 0.7], [0.8, 0.5], [0.6, 0.6]]) == 1
    assert choose([[0.5, 0.5], [0.9, 0.9]]) == 1
    assert choose([[0.7], [0.7]]) == 0, "ties go to the first point in canonical order"
    assert choose([[0.9, None], [0.6, 0.6]]) == 1, "a point missing a seed is not eligible"
    assert choose([[None], [float("nan")]]) is None


def test_grid_points_are_in_a_canonical_order():
    points = grid_points({"lr_factor": [3.0, 0.3, 1.0], "augment": ["none", "light"]})
    assert len(points) == 6
    assert points[0] == {"augment": "light", "lr_factor": 0.3}
    assert [p["lr_factor"] for p in points[:3]] == [0.3, 1.0, 3.0]


def test_default_grid_gives_every_trained_arm_three_learning_rates_around_its_own_default():
    raw = tiny_suite_dict(strategies=["scratch", "frozen", "full"], datasets=[{"name": "digits", "sizes": [5]}])
    del raw["tuning"]
    raw["training"] = {**raw["training"], "lr": {"scratch": 1e-3, "full": 1e-4}}
    plan = suite_from_dict(raw).plan()
    lrs = {arm.label.split()[1]: [p["lr"] for p in arm.points] for arm in plan.arms}
    assert lrs["scratch"] == pytest.approx([3e-4, 1e-3, 3e-3])
    assert lrs["full"] == pytest.approx([3e-5, 1e-4, 3e-4])
    # The probe sweeps its own L2 strength: no learning-rate grid for it, one cell per seed.
    assert not any("frozen" in arm.label for arm in plan.arms)
    assert [c.strategy for c in plan.cells] == ["frozen"]


def test_tuning_off_and_strategy_specific_grids():
    assert not _tuned_suite(tuning=False).plan().arms
    plan = _tuned_suite(tuning={"grid": {"all": {"lr_factor": [0.3, 3.0]}, "full": {"weight_decay": [0.0, 0.1]}}}).plan()
    sizes = {arm.label.split()[1]: len(arm.points) for arm in plan.arms}
    assert sizes == {"scratch": 2, "full": 4}


@pytest.mark.parametrize("tuning, message", [
    ({"grid": {"all": {"lr_factr": [1.0]}}}, "did you mean 'lr_factor'"),
    ({"grid": {"all": {"lr_factor": [0]}}}, "positive"),
    ({"grid": {"all": {"augment": ["heavy"]}}}, "augment"),
    ({"grid": {"all": {"epochs": []}}}, "non-empty"),
    ({"grid": {"fullish": {"lr_factor": [1.0]}}}, "unknown strategy"),
])
def test_bad_grids_are_one_line_errors(tuning, message):
    with pytest.raises(SuiteError) as error:
        _tuned_suite(tuning=tuning)
    assert message in str(error.value) and "tuning" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_chosen_point_runs_on_every_seed_and_the_sweep_is_reused(tmp_path):
    suite = _tuned_suite()
    plan = suite.plan()
    summary = run_suite(suite, results_dir=tmp_path, executor="inprocess")
    assert summary.failed == 0
    # 2 arms x (2 points on seed 0 + the chosen point on seed 1) + frozen on 2 seeds.
    assert summary.planned == plan.final_count() == 8 and summary.ran == 8
    with ResultStore(summary.store_path) as store:
        frame = store.frame()
    final, sweep = split_final(frame, [0, 1], [0])
    chosen = selections(frame, [0])
    assert set(chosen) == {arm.arm for arm in plan.arms}
    for arm in plan.arms:
        runs = final[final["arm"] == arm.arm]
        assert sorted(runs["seed"]) == [0, 1] and runs["tuned"].nunique() == 1
        on_seed0 = frame[(frame["arm"] == arm.arm) & (frame["seed"] == 0)]
        assert runs["tuned"].iloc[0] == on_seed0.loc[on_seed0["val_acc"].idxmax(), "tuned"] or \
            on_seed0["val_acc"].nunique() == 1
    assert len(sweep) == 2 and set(sweep["seed"]) == {0}
    summary_table = tuning_summary(frame, [0, 1], [0])
    assert list(summary_table["grid_points"]) == [2, 2] and (summary_table["sweep_runs"] == 1).all()
    again = run_suite(suite, results_dir=tmp_path, executor="inprocess")
    assert again.ran == 0 and again.already_done == 8


def test_swapping_the_test_labels_changes_no_selection(tmp_path, monkeypatch):
    """Selection reads validation only: scrambled test labels move test accuracy, never a choice."""
    suite = _tuned_suite(seeds=[0], tuning={"grid": {"all": {"lr_factor": [0.1, 1.0, 10.0]}}})
    honest = run_suite(suite, results_dir=tmp_path / "honest", executor="inprocess")
    original = bench.training.cell.dataset_for

    def scrambled(config):
        dataset = original(config)
        copy = bench.training.cell.ImageDataset(**{**dataset.__dict__})
        copy.test_labels = np.random.default_rng(0).permutation(dataset.test_labels)
        return copy

    monkeypatch.setattr(bench.training.cell, "dataset_for", scrambled)
    swapped = run_suite(suite, results_dir=tmp_path / "swapped", executor="inprocess")
    frames = []
    for summary in (honest, swapped):
        with ResultStore(summary.store_path) as store:
            frames.append(store.frame().set_index("run_id").sort_index())
    assert selections(frames[0], [0]) == selections(frames[1], [0])
    assert frames[0]["val_acc"].tolist() == pytest.approx(frames[1]["val_acc"].tolist())
    assert frames[0]["test_acc"].tolist() != frames[1]["test_acc"].tolist()


def test_a_choice_at_the_edge_of_its_grid_is_named():
    from bench.tuning import grid_edge

    tried = [{"lr_factor": f, "augment": a} for f in (0.3, 1.0, 3.0) for a in ("none", "light")]
    assert grid_edge({"lr_factor": 3.0, "augment": "none"}, tried) == "lr_factor=3 (largest)"
    assert grid_edge({"lr_factor": 0.3, "augment": "none"}, tried) == "lr_factor=0.3 (smallest)"
    assert grid_edge({"lr_factor": 1.0, "augment": "light"}, tried) == ""
    assert grid_edge({"lr_factor": 3.0}, [{"lr_factor": 1.0}, {"lr_factor": 3.0}]) == ""  # two values have no inside


def _sweep_frame(arms: dict, *, seeds=(0, 1, 2), tuning_seeds=(0, 1)):
    """A frame of tuned arms: ``arms[name] = (grid {lr: val}, beyond {lr: (val, wall_s)})``.

    Every point runs on the tuning seeds (grid runs for 1 s, each point beyond for its own
    wall time); the best point then runs on the other seeds. Returns the frame and the plan's ids.
    """
    import json

    import pandas as pd

    rows, planned = [], []
    for name, (grid, beyond) in arms.items():
        points = {lr: (val, 1.0) for lr, val in grid.items()} | beyond
        best = max(points, key=lambda lr: points[lr][0])
        cells = [(lr, seed) for lr in points for seed in tuning_seeds]
        cells += [(best, seed) for seed in seeds if seed not in tuning_seeds]
        for lr, seed in cells:
            run_id = f"{name}-{lr}-{seed}"
            rows.append({
                "run_id": run_id, "backbone": "cnn", "weights": "none", "dataset": "digits", "size": "5",
                "strategy_label": name, "arm": name, "tuned": json.dumps({"lr": lr}), "seed": seed,
                "status": "done", "val_acc": points[lr][0], "wall_s": points[lr][1],
            })
            if lr in grid and seed in tuning_seeds:
                planned.append(run_id)
    return pd.DataFrame(rows), planned


def test_the_tuning_table_counts_what_extending_the_grid_cost():
    frame, planned = _sweep_frame({
        # Best at 0.01, the grid's edge; 0.03 beyond it is better still, 0.1 worse: inside after two points.
        "scratch": ({0.001: 0.4, 0.003: 0.45, 0.01: 0.5}, {0.03: (0.55, 5.0), 0.1: (0.3, 6.5)}),
        "full": ({0.0001: 0.6, 0.0003: 0.7, 0.001: 0.65}, {}),  # best inside: nothing to extend
        "partial": ({1.0: 0.5, 2.0: 0.6, 3.0: 0.7}, {4.0: (0.8, 2.5)}),  # still at its edge after extending
    })
    table = tuning_summary(frame, [0, 1, 2], [0, 1], planned).set_index("strategy")
    assert table.loc["scratch", ["grid_points", "extended_points", "extension_runs"]].tolist() == [5, 2, 4]
    assert table.loc["scratch", "extension_s"] == 2 * (5.0 + 6.5)
    assert table.loc["scratch", "chosen"] == "lr=0.03" and table.loc["scratch", "grid_edge"] == ""
    # The unchosen points on the tuning seeds are sweep cost: three of the grid, 0.1 beyond it.
    assert (table.loc["scratch", "sweep_runs"], table.loc["scratch", "sweep_s"]) == (8, 6 * 1.0 + 2 * 6.5)
    assert table.loc["full", ["extended_points", "extension_runs", "extension_s"]].tolist() == [0, 0, 0.0]
    assert table.loc["partial", ["extended_points", "extension_runs", "extension_s"]].tolist() == [1, 2, 5.0]
    assert table.loc["partial", "grid_edge"] == "lr=4 (largest)"
    # Without the plan's ids nothing tells the grid from the points beyond it.
    unknown = tuning_summary(frame, [0, 1, 2], [0, 1])
    assert unknown[["extended_points", "extension_runs", "extension_s"]].isna().all().all()
    assert list(unknown["grid_edge"]) == list(table["grid_edge"])


def test_a_step_beyond_the_edge_keeps_the_grids_spacing():
    from bench.tuning import step_beyond

    assert step_beyond([0.3, 1.0, 3.0], upward=True) == pytest.approx(9.0)
    assert step_beyond([0.3, 1.0, 3.0], upward=False) == pytest.approx(0.09)
    assert step_beyond([0.0, 0.05, 0.1], upward=True) == pytest.approx(0.15)
    assert step_beyond([0.0, 0.05, 0.1], upward=False) == pytest.approx(-0.05), "the caller bounds the domain"
    assert step_beyond([5, 10, 20], upward=True) == 40 and isinstance(step_beyond([5, 10, 20], upward=True), int)
    assert step_beyond([1, 2, 3], upward=False) == 0
    assert step_beyond([-1.0, 1.0, 4.0], upward=False) is None, "no ratio across zero"


def test_extension_points_step_past_an_edge_that_beats_its_neighbour():
    from bench.tuning import extension_points

    grid = [{"lr_factor": f} for f in (0.3, 1.0, 3.0)]
    assert extension_points(2, grid, [0.5, 0.6, 0.7]) == [{"lr_factor": pytest.approx(9.0)}]
    assert extension_points(0, grid, [0.7, 0.6, 0.5]) == [{"lr_factor": pytest.approx(0.09)}]
    assert extension_points(1, grid, [0.5, 0.7, 0.6]) == [], "an interior optimum is found"
    assert extension_points(0, grid, [0.1, 0.1, 0.1]) == [], "a flat sweep gives no direction"
    assert extension_points(2, grid[:2] + [{"lr_factor": 3.0}], [0.5, 0.6, 0.7], lambda k, v: v < 5) == []
    two = [{"lr_factor": 1.0}, {"lr_factor": 3.0}]
    assert extension_points(1, two, [0.5, 0.7]) == [], "two values are a choice, not a search"
    # Several axes: one new point per edge the chosen point sits on, along that axis only.
    product = [{"lr_factor": f, "weight_decay": w} for f in (0.3, 1.0, 3.0) for w in (0.0, 0.05, 0.1)]
    scores = [0.1 * i for i in range(len(product))]  # best: lr_factor=3, weight_decay=0.1
    assert extension_points(len(product) - 1, product, scores) == [
        {"lr_factor": pytest.approx(9.0), "weight_decay": 0.1},
        {"lr_factor": 3.0, "weight_decay": pytest.approx(0.15)},
    ]


def _lr_sweep_suite(name: str, factors: list[float], extend: int):
    # Adam at learning rates a hundred apart on 10 digits per class: below 1e-5 nothing moves in
    # forty steps, 0.1 trains best, 10 diverges. The optimum is known, and it lies past the grid.
    raw = tiny_suite_dict(name=name, strategies=["scratch"], datasets=[{"name": "digits", "sizes": [10]}],
                          seeds=[0], tuning={"grid": {"all": {"lr_factor": factors}}, "extend": extend})
    raw["training"] = {**raw["training"], "lr": {"scratch": 1.0}, "min_steps": 40}
    return suite_from_dict(raw)


def _tried(store_path):
    with ResultStore(store_path) as store:
        frame = store.frame()
    return frame, sorted(json.loads(t)["lr"] for t in frame["tuned"])


@pytest.mark.slow
def test_a_sweep_at_its_edge_extends_until_its_optimum_is_inside(tmp_path):
    summary = run_suite(_lr_sweep_suite("edge", [1e-7, 1e-5, 1e-3], extend=3), results_dir=tmp_path,
                        executor="inprocess")
    frame, tried = _tried(summary.store_path)
    assert summary.failed == 0
    # 1e-3 beat 1e-5, so the sweep tried 0.1, which beat it, then 10, which did not: it stops
    # there with one extension to spare.
    assert tried == pytest.approx([1e-7, 1e-5, 1e-3, 0.1, 10.0])
    with ResultStore(summary.store_path) as store:
        planned_ids = store.get_meta("planned_ids")
    table = tuning_summary(frame, [0], [0], planned_ids)
    assert table["chosen"].iloc[0] == "lr=0.1" and table["grid_edge"].iloc[0] == ""
    assert table["extended_points"].iloc[0] == 2 and table["extension_runs"].iloc[0] == 2
    assert run_suite(_lr_sweep_suite("edge", [1e-7, 1e-5, 1e-3], extend=3), results_dir=tmp_path,
                     executor="inprocess").ran == 0, "a finished sweep is not extended again"


@pytest.mark.slow
def test_a_sweep_with_an_interior_optimum_does_not_extend(tmp_path):
    summary = run_suite(_lr_sweep_suite("inside", [1e-3, 0.1, 10.0], extend=2), results_dir=tmp_path,
                        executor="inprocess")
    _, tried = _tried(summary.store_path)
    assert tried == pytest.approx([1e-3, 0.1, 10.0])


@pytest.mark.slow
def test_the_extension_cap_holds_and_the_edge_stays_marked(tmp_path):
    # More optimizer steps train better all the way, so every step past the edge improves.
    raw = tiny_suite_dict(name="cap", strategies=["scratch"], datasets=[{"name": "digits", "sizes": [10]}],
                          seeds=[0, 1], tuning={"grid": {"all": {"min_steps": [5, 10, 20]}}, "extend": 1})
    raw["training"] = {**raw["training"], "lr": {"scratch": 1e-3}}
    summary = run_suite(suite_from_dict(raw), results_dir=tmp_path, executor="inprocess")
    with ResultStore(summary.store_path) as store:
        frame = store.frame()
    steps = sorted(json.loads(t)["min_steps"] for t in frame.loc[frame["seed"] == 0, "tuned"])
    assert steps == [5, 10, 20, 40]
    final, _ = split_final(frame, [0, 1], [0])
    assert [json.loads(t) for t in final["tuned"]] == [{"min_steps": 40}] * 2, "the chosen point runs on every seed"
    assert tuning_summary(frame, [0, 1], [0])["grid_edge"].iloc[0] == "min_steps=40 (largest)"
