"""``transfer-bench check`` on a small generated image folder, end to end."""

from __future__ import annotations

import re
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
    assert "no clear difference (n too small)" in done.stdout  # two seeds never make a call
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


def test_check_shrinks_only_what_the_user_left_at_its_default_to_fit_the_time_limit(image_folder, tmp_path):
    from bench.planning.check import MIN_RUN_BUDGET_S, SMALLER_IMAGE_SIZES, size_check

    options = dict(backbone="test_resnet", weights="none", seeds=2, device="cpu")
    roomy = size_check(str(image_folder), limit_s=1e9, results_dir=tmp_path, **options)
    assert roomy.fits and roomy.changes == []
    assert roomy.plan.suite.training.image_size is None

    # No check fits in a second: every default gives way, in order, and the check says it still does not fit.
    tight = size_check(str(image_folder), limit_s=1.0, results_dir=tmp_path, **options)
    assert not tight.fits
    assert [c.split()[0] for c in tight.changes] == ["image", "at"]  # sizes were already two plus all
    training = tight.plan.suite.training
    assert training.image_size == SMALLER_IMAGE_SIZES[-1]
    assert training.time_budget == MIN_RUN_BUDGET_S
    assert tight.estimate.seconds < roomy.estimate.seconds

    chosen = size_check(str(image_folder), limit_s=1.0, results_dir=tmp_path, image_size=24, budget=30.0, **options)
    assert chosen.changes == []
    assert chosen.plan.suite.training.image_size == 24 and chosen.plan.suite.training.time_budget == 30.0
