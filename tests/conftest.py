"""Shared fixtures: tiny suites on real data (digits, procedural shapes) and a tiny timm model."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

# Tests must never wait on a model hub: offline hub loads fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# Saved model-name lists and class counts go to a folder of this test session, not the user's cache.
os.environ.setdefault("TRANSFER_BENCH_CACHE", tempfile.mkdtemp(prefix="transfer-bench-cache-"))


try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the test tools are a separate install; tests that need Hypothesis import it themselves
    pass
else:
    # Property tests take as long as the machine makes them: no deadline per example, and slow
    # generation of examples on a busy machine is no failure.
    settings.register_profile("any-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("any-machine")


def pytest_configure(config: pytest.Config) -> None:
    # Declared here rather than in pyproject.toml, whose checksum decides when the venv is rebuilt.
    config.addinivalue_line("markers", "fuzz: property tests of hundreds to thousands of examples, a minute or so each")


@pytest.fixture(autouse=True)
def one_torch_thread_in_process() -> None:
    """Runs trained inside the test process use one thread, as each worker does on two cores.

    torch's default of a thread per core spins against whatever else the cores are doing, and a
    busy machine then made these tests several times slower. Worker processes keep their own
    share of the cores; torch is not imported here for tests that never need it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


TINY_TRAINING: dict[str, Any] = {
    "epochs": 1,
    # The default floor of optimizer steps would make every tiny run a long one.
    "min_steps": 1,
    "batch_size": 16,
    "image_size": 16,
    "augment": "none",
    "num_workers": 0,
    "warmup_epochs": 0,
}


def tiny_suite_dict(name: str = "tiny", **overrides: Any) -> dict[str, Any]:
    """A suite of a few seconds: test_resnet pretrained on shapes, digits at two sizes."""
    suite: dict[str, Any] = {
        "name": name,
        "backbones": [{"name": "test_resnet", "weights": ["pretrain:shapes"]}],
        "pretrain": {
            "shapes": {
                "dataset": {"name": "shapes", "options": {"classes": 4, "per_class": 20, "test_per_class": 5, "image_size": 16}},
                "training": dict(TINY_TRAINING),
            }
        },
        "datasets": [{"name": "digits", "sizes": [3, 5]}],
        "strategies": ["scratch", "frozen", {"name": "partial", "k": 1}, "full"],
        "seeds": [0],
        "training": dict(TINY_TRAINING),
        # One configuration per arm keeps a tiny suite tiny; the sweep has tests of its own.
        "tuning": False,
        "device": "cpu",
    }
    suite.update(overrides)
    return suite


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite dict (or raw text) to a YAML file and return its path."""

    def write(content: dict[str, Any] | str, filename: str = "suite.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
