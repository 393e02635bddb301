"""Seeds added where a call is open, on a real tiny suite: who gets them, and a driver killed mid-round."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.report.decide import store_verdict
from bench.report.sequential import STOP_DECIDED, open_call
from bench.execution.seed_rounds import cell_key, worst_case
from bench.store import ResultStore
from bench.suite.model import suite_from_dict
from tests.conftest import TINY_TRAINING, tiny_suite_dict
from tests.faults_helpers import (
    PATIENCE_S,
    REPO,
    assert_store_sound,
    claims_of,
    driver_env,
    finished,
    kill_tagged,
    new_tag,
    start_driver,
    tagged_processes,
    wait_for,
    write_yaml,
)

PLANNED = [0, 1, 2]


def _colours(root: Path) -> Path:
    """Three classes, each a near-constant colour: scratch learns them perfectly in a few steps."""
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 30, (12, 12, 3), dtype=np.uint8)
            pixels[..., c] += 220
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def _suite(tmp_path: Path) -> dict[str, Any]:
    """Two verdict cells: colours, where every seed gives the same large gap (a call at 3 seeds), and
    digits at 5 per class, where the arms trade places from seed to seed (no call at 3 seeds)."""
    return tiny_suite_dict(
        "sequential", strategies=["scratch", "full"], seeds=PLANNED,
        training={**TINY_TRAINING, "epochs": 60, "patience": 5, "lr": 0.01},
        datasets=[{"name": "imagefolder", "path": str(_colours(tmp_path / "colours")), "sizes": [5],
                   "test_fraction": 0.3}, {"name": "digits", "sizes": [5]}],
        verdict={"max_seeds": 5, "seed_batch": 2},
    )


@pytest.fixture
def tag():
    value = new_tag()
    yield value
    kill_tagged(value)


@pytest.mark.slow
def test_only_the_open_cell_gets_more_seeds_and_a_kill_mid_round_loses_and_repeats_nothing(tmp_path, tag):
    raw = _suite(tmp_path)
    suite = suite_from_dict(raw)
    path = write_yaml(tmp_path / "sequential.yaml", raw)
    results, db = tmp_path / "results", tmp_path / "results" / "sequential.db"
    planned = {c.run_id for c in suite.plan().runnable}
    added = {c.run_id: c for c in worst_case(suite).plan().runnable if c.seed not in PLANNED}
    assert len(added) == 2 * 2 * 2  # two cells, two arms, two added seeds: what plan counts at worst

    log = tmp_path / "driver.log"
    driver = start_driver(path, results, tag=tag, log=log)
    # Killed as soon as it claims a cell of an added seed: mid-round, that cell unfinished.
    held = wait_for(lambda: driver.poll() is not None or set(claims_of(db, driver.pid)) & set(added), PATIENCE_S * 3)
    assert driver.poll() is None, f"the driver ended ({driver.returncode}) before adding a seed: {log.read_text()}"
    assert held, log.read_text()
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert wait_for(lambda: not tagged_processes(tag), PATIENCE_S), "children outlived the killed driver"
    before = finished(assert_store_sound(db))
    assert planned <= set(before), "a planned cell was left unfinished before any seed was added"
    assert not set(held) & set(before)

    resumed = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--results-dir", str(results),
                              "--no-report"], capture_output=True, text=True, env=driver_env(tag), cwd=REPO,
                             timeout=PATIENCE_S * 5)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = finished(assert_store_sound(db))
    for run_id, row in before.items():
        assert rows[run_id]["written_at"] == row["written_at"], f"{run_id} was run again"

    config = suite.model_dump(mode="json")
    with ResultStore(db, readonly=True) as store:
        frame = store.frame()
    at_planned = store_verdict(frame[frame["seed"].isin(PLANNED)], config)
    final = store_verdict(frame, config)
    open_at_3 = {(r.backbone, r.dataset, r.size) for r in at_planned.itertuples() if open_call(r.call)}
    assert len(open_at_3) == 1, at_planned[["dataset", "call"]]
    assert ("test_resnet", "digits", "5") in open_at_3
    # Only the open cell got seeds, every arm of it both added seeds; the called one kept its three.
    got = {run_id for run_id in rows if run_id in added}
    assert got == {run_id for run_id, c in added.items() if cell_key(c) in open_at_3}
    assert set(rows) == planned | got
    stopped = dict(zip(final["dataset"], final["stopped"]))
    assert stopped["imagefolder"] == f"{STOP_DECIDED} at 3 seeds"
    assert dict(zip(final["dataset"], final["n_pairs"]))["digits"] == 5

    from bench.report import render_report

    report = render_report(db, tmp_path / "report")
    text = report.md_path.read_text()
    assert "group-sequential test on the paired t statistic" in text and "seeds: why they stopped" in text
    assert f"Seeds: 3, {STOP_DECIDED} at 3 seeds." in text
    assert "also holds" not in text  # the added seeds count as the suite's own runs


def test_plan_and_the_estimate_count_every_seed_that_may_be_added(tmp_path):
    from typer.testing import CliRunner

    from bench.cli.app import app
    from bench.planning.estimate import estimate_suite

    raw = tiny_suite_dict("worst", strategies=["scratch", "full"], seeds=PLANNED,
                          datasets=[{"name": "digits", "sizes": [3, 5]}], verdict={"max_seeds": 6})
    path = write_yaml(tmp_path / "worst.yaml", raw)
    # Two sizes and two arms: 12 cells on the planned seeds, 12 more if no call is ever made.
    assert estimate_suite(suite_from_dict(raw), results_dir=tmp_path / "r").cells == 24
    result = CliRunner().invoke(app, ["plan", str(path), "--results-dir", str(tmp_path / "r"), "--no-estimate"])
    assert result.exit_code == 0, result.output
    assert "12 cells" in result.output and "up to 12 more cells if no call is ever made" in result.output

    refused = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r"), "--max-seeds", "2"])
    assert refused.exit_code == 2
    assert "--max-seeds 2" in refused.output and "fewer than the suite's 3 seeds" in refused.output
    assert not (tmp_path / "r" / "worst.db").exists()
