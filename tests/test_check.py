"""``transfer-bench check`` on a small generated image folder, end to end."""

from __future__ import annotations

import re
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bench.backbones import build_backbone
from bench.planning.check import build_check, default_sizes, dataset_entry

pytestmark = pytest.mark.slow


@pytest.fixture
def image_folder(tmp_path):
    """Three classes of 14 coloured 16x16 images each, plus one corrupt file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "my-photos"
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(14):
            pixels = np.clip(rng.normal(colour, 40, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_check_builds_sizes_every_class_can_supply(image_folder):
    plan = build_check(str(image_folder), backbone="test_resnet", weights="none", seeds=2)
    assert plan.classes == 3
    assert any("broken.png" in p for p in plan.problems)
    sizes = plan.suite.datasets[0].sizes
    assert sizes[-1] == "all" and all(s < plan.smallest_class for s in sizes[:-1])
    assert plan.suite.name == "check-my-photos"


def test_default_sizes_and_entries():
    assert default_sizes(1000, 0.1) == [5, 10, 25, 50, "all"]
    assert default_sizes(12, 0.1) == [5, 10, "all"]
    assert dataset_entry("cifar10") == {"name": "cifar10"}
    assert dataset_entry("./photos")["name"] == "imagefolder"


def test_check_end_to_end_prints_the_verdict_and_writes_the_report(image_folder, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "random-init.pt"
    torch.save(build_backbone("test_resnet", "none", 5).model.state_dict(), weights)
    command = [
        sys.executable, "-m", "bench", "check", "--data", str(image_folder), "--backbone", "test_resnet",
        "--weights", f"file:{weights}", "--sizes", "3,all", "--seeds", "2", "--epochs", "1", "--min-steps", "3", "--image-size", "16",
        "--batch-size", "8", "--device", "cpu", "--executor", "inprocess",
        "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 problem(s) in the data" in done.stderr and "broken.png" in done.stderr
    # Three trained arms sweep three learning rates on seed 0 and rerun the chosen one on seed 1;
    # the probe runs once per seed: (3 x (3 + 1) + 2) x 2 sizes, and a sweep whose best rate lies
    # at its grid's edge adds up to two points past it.
    ran = re.search(r"(\d+) done, 0 failed", done.stdout)
    assert "verdict" in done.stdout and ran and 28 <= int(ran.group(1)) <= 28 + 2 * 6, done.stdout[-2000:]
    # Two seeds never make a call (tiny runs on 3 x 3 images may also be flagged: no call either).
    assert "transfer wins" not in done.stdout and "scratch wins" not in done.stdout
    assert "no clear difference (n too small)" in done.stdout or "inconclusive" in done.stdout
    page = (tmp_path / "reports" / "check-my-photos" / "index.html").read_text()
    assert "Data problems" in page and "broken.png" in page, "the skipped image is named in the report"

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert again.returncode == 0 and "0 done, 0 failed, 28 already done" in again.stdout


def test_check_offline_hub_weights_name_the_way_out(image_folder, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "check", "--data", str(image_folder), "--backbone", "test_resnet",
         "--sizes", "3", "--seeds", "1", "--epochs", "1", "--min-steps", "3", "--no-tuning", "--image-size", "16", "--device", "cpu",
         "--executor", "inprocess", "--results-dir", str(tmp_path / "r"), "--reports-dir", str(tmp_path / "p")],
        capture_output=True, text=True, timeout=600, env=_env(),
    )
    assert "not in the local cache" in done.stdout + done.stderr
    assert "--weights file:PATH" in done.stdout + done.stderr


def _env():
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _fake_cost(shape):
    """Seconds from made-up speeds: 1 s per step of a trained arm at 224 px, cost falling with the side squared."""
    side = shape.image_size or shape.native_size
    per_step = (side / 224) ** 2
    total = 0.0
    for strategy in shape.strategies:
        for size in shape.sizes:
            if strategy == "frozen":
                total += 5.0 * 3
                continue
            images = 5000 if size == "all" else 100 * size
            steps = max(200, (shape.epochs or 10) * images // 64)
            points = 5 if shape.tuning else 1  # three rates and two steps past the edge on the first seed
            total += steps * per_step * (points + 2)
    return total


def test_concessions_come_in_their_documented_order_and_stop_as_soon_as_the_check_fits():
    from bench.planning.fitting import CONCESSIONS, Shape, fit, image_floor

    order = [c.name for c in CONCESSIONS]
    assert order == ["partial", "all", "grid", "image", "epochs", "sizes", "full"]
    start = Shape(strategies=("scratch", "frozen", "partial", "full"), sizes=(5, 10, 25, 50, "all"), native_size=224)
    full_cost = _fake_cost(start)
    heard = []
    seen = set()
    for share in (1.0, 0.9, 0.6, 0.3, 0.1, 0.03, 0.01, 0.003, 0.0):
        fitted = fit(start, _fake_cost, share * full_cost, on_change=lambda name, text: heard.append(name))
        # Whatever the limit, what is given up is a prefix of the order, each concession named once.
        assert fitted.dropped == order[:len(fitted.dropped)]
        seen.update(fitted.dropped)
    assert heard and set(heard) == seen == set(order)

    assert fit(start, _fake_cost, full_cost).changes == []
    # Small sizes already train for just their minimum steps: fewer epochs would save nothing, so nothing is given up.
    small = fit(Shape(strategies=("scratch", "full"), sizes=(5, 10), native_size=64, tuning=False), _fake_cost, 0.0)
    assert "epochs" not in small.dropped and small.shape.epochs is None
    nothing_left = fit(start, _fake_cost, 0.0)
    assert not nothing_left.fits
    shape = nothing_left.shape
    # The smallest decisive check: scratch and one transfer arm at the smallest size, no sweep, at the floor.
    assert shape.strategies == ("scratch", "frozen") and shape.sizes == (5,)
    assert not shape.tuning and shape.epochs == 1
    assert shape.image_size == 64 and image_floor(224) <= 64 < 96
    sizes_text = dict(nothing_left.changes)["sizes"]
    assert "10, 25, 50" in sizes_text and "5 stay" in sizes_text

    # Options the user set are never given up: only the arms and the sweep can go.
    kept = fit(replace(start, fixed=frozenset({"sizes", "image_size", "epochs"})), _fake_cost, 0.0)
    assert kept.dropped == ["partial", "grid", "full"]
    assert kept.shape.sizes == start.sizes and kept.shape.image_size is None and kept.shape.epochs is None


def _tiny_weights(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "random-init.pt"
    torch.save(build_backbone("test_resnet", "none", 5).model.state_dict(), weights)
    return weights


def test_a_time_limit_no_decisive_check_fits_stops_before_any_run_and_says_what_it_would_take(image_folder, tmp_path):
    weights = _tiny_weights(tmp_path)
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "check", "--data", str(image_folder), "--backbone", "test_resnet",
         "--weights", f"file:{weights}", "--time-limit", "1s", "--image-size", "16", "--batch-size", "8",
         "--device", "cpu", "--executor", "inprocess", "--results-dir", str(results),
         "--reports-dir", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=600, env=_env(),
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    # A healthy scratch run makes its 200 steps: the check says how long that takes here and what would fit it.
    said = re.search(r"smallest decisive check \(scratch and frozen at size 5, 3 seeds, 16 px, at least 200 steps "
                     r"a run\) would take about (\d+) (s|min) on cpu", done.stderr)
    assert said, done.stderr
    assert re.search(r"--time-limit \d+m", done.stderr) and "a GPU" in done.stderr and "--run-anyway" in done.stderr
    # Size 5 already trains for just its minimum steps: fewer epochs would save nothing and are not given up.
    given_up = [line.split(": ", 1)[1].split(";")[0] for line in done.stdout.splitlines() if "to fit the time limit" in line]
    assert given_up == ["dropped partial fine-tuning", "dropped size all", "dropped the learning-rate sweep",
                        "dropped full fine-tuning"], done.stdout
    assert not list(results.glob("*.db")), "nothing ran, and no store was made"
    assert not (tmp_path / "reports").exists()


def test_a_check_that_fits_drops_whole_arms_names_them_and_cuts_no_run_short(image_folder, tmp_path):
    from bench.store import ResultStore

    weights = _tiny_weights(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    options = dict(backbone="test_resnet", weights=f"file:{weights}", sizes=[3], seeds=3, epochs=1, min_steps=3,
                   tuning=False, image_size=16, batch_size=8, device="cpu")
    # Priced in a process like the command's, whose calibration it then reads from the cache beside the stores.
    # Priced twice: the second, like the command, spends no time calibrating.
    price = (f"from bench.planning.check import size_check\nfor _ in range(2): s = size_check({str(image_folder)!r}, "
             f"limit_s=1e9, results_dir={str(results)!r}, **{options!r})\nprint(s.fits, s.changes, s.seconds)")
    priced = subprocess.run([sys.executable, "-c", price], capture_output=True, text=True, timeout=600, env=_env())
    fits, changes, seconds = priced.stdout.split()
    assert fits == "True" and changes == "[]", priced.stdout + priced.stderr[-2000:]
    limit = 0.9 * float(seconds)
    command = [
        sys.executable, "-m", "bench", "check", "--data", str(image_folder), "--backbone", "test_resnet",
        "--weights", f"file:{weights}", "--sizes", "3", "--seeds", "3", "--epochs", "1", "--min-steps", "3",
        "--no-tuning", "--image-size", "16", "--batch-size", "8", "--time-limit", f"{limit:.3f}s",
        "--device", "cpu", "--executor", "inprocess", "--results-dir", str(results),
        "--reports-dir", str(tmp_path / "reports"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "to fit the time limit: dropped partial fine-tuning" in done.stdout
    assert "dropped full" not in done.stdout, "one concession was enough"
    with ResultStore(results / "check-my-photos.db", readonly=True) as store:
        frame = store.frame()
        suite = store.get_meta("suite")
    assert set(frame["strategy"]) == {"scratch", "frozen", "full"} and (frame["status"] == "done").all()
    assert suite["training"]["time_budget"] is None
    trained = frame[frame["strategy"] != "frozen"]
    # Nine images in batches of eight make one step an epoch: three epochs are the three minimum steps.
    assert (trained["epochs_run"] >= 3).all() and not trained["stopped_early"].astype(bool).any()
    page = (tmp_path / "reports" / "check-my-photos" / "report.md").read_text()
    first = page.split("## ")[0]
    assert "FITTED TO THE TIME LIMIT" in first and "dropped partial fine-tuning" in first


def test_a_concession_priced_later_does_not_look_cheaper_for_the_time_spent_pricing():
    from bench.planning.fitting import Shape, fit

    clock = iter(range(10_000))

    def cost_with_time_spent(shape):
        # A real check's cost grows by the time its calibrations took: one second each call here.
        return _fake_cost(shape) + next(clock)

    start = Shape(strategies=("scratch", "frozen"), sizes=(5, 10), native_size=64, tuning=False)
    assert "epochs" not in fit(start, cost_with_time_spent, 0.0).dropped
