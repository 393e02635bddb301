"""Helpers for the fault tests: tiny suites on disk, drivers as real processes, store checks, /proc scans."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from bench.procs import group_has_live_member
from bench.suite import suite_from_dict
from tests.conftest import TINY_TRAINING

TAG_ENV = "TRANSFER_BENCH_TEST_TAG"
METRICS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "train_s", "eval_s", "wall_s",
           "trainable_params", "total_params", "epochs_run")
REPO = Path(__file__).resolve().parents[1]


def scratch_suite(name: str = "faults", *, sizes: list[Any] | None = None, seeds: list[int] | None = None,
                  **training: Any) -> dict[str, Any]:
    """A suite of child runs of a few seconds each: test_resnet from scratch on digits."""
    return {
        "name": name,
        "backbones": [{"name": "test_resnet", "weights": "none"}],
        "datasets": [{"name": "digits", "sizes": sizes or [3, 5]}],
        "strategies": ["scratch"],
        "seeds": seeds if seeds is not None else [0, 1],
        "training": {**TINY_TRAINING, **training},
        # One configuration per arm: these tests count cells, and the sweep has tests of its own.
        "tuning": False,
        "device": "cpu",
    }


def write_yaml(path: Path, suite: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def cell_ids(suite: dict[str, Any]) -> list[str]:
    return [cell.run_id for cell in suite_from_dict(suite).expand()]


def new_tag() -> str:
    return uuid.uuid4().hex


def driver_env(tag: str, **extra: str) -> dict[str, str]:
    """The environment of a driver under test: tagged so its children can be found in /proc."""
    # One thread per child: concurrent drivers on a small machine would otherwise oversubscribe its cores.
    return {**os.environ, TAG_ENV: tag, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", **extra}


def start_driver(suite_path: Path, results_dir: Path, *args: str, tag: str, log: Path,
                 env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """``python -m bench run`` in its own session (as a terminal's foreground job would be)."""
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", str(suite_path), "--results-dir", str(results_dir), "--no-report",
         *args],
        stdout=handle, stderr=subprocess.STDOUT, env=env or driver_env(tag), start_new_session=True, cwd=REPO,
        **popen,
    )


def tagged_processes(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``tag``, found through /proc."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        state = stat[stat.rindex(b")") + 2:].split()[0]
        if state != b"Z" and needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def group_gone(pgid: int) -> bool:
    """True when no live process is left in a process group (zombies awaiting their reaper don't count)."""
    return not group_has_live_member(pgid)


def wait_for(predicate: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it is truthy; return its value, or the last falsy one at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def kill_tagged(tag: str) -> None:
    """Test cleanup: SIGKILL whatever a failed test left behind, found by its tag."""
    for pid in tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def read_store(db: Path) -> dict[str, dict[str, Any]]:
    """Every row of the runs table by run id, plus its number of epoch rows, read with plain sqlite3."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        rows = {row["run_id"]: dict(row) for row in connection.execute("SELECT * FROM runs")}
        for run_id, count in connection.execute("SELECT run_id, count(*) FROM epochs GROUP BY run_id"):
            if run_id in rows:
                rows[run_id]["n_epochs"] = count
    finally:
        connection.close()
    return rows


def integrity_ok(db: Path) -> bool:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def assert_store_sound(db: Path) -> dict[str, dict[str, Any]]:
    """Integrity ok, and every done row whole: all metrics and one epoch row per epoch run."""
    assert integrity_ok(db), f"{db}: integrity check failed"
    rows = read_store(db)
    for run_id, row in rows.items():
        if row["status"] == "done":
            missing = [m for m in METRICS if row[m] is None]
            assert not missing, f"{run_id}: done but missing {missing}"
            assert row.get("n_epochs", 0) == int(row["epochs_run"]) >= 1, f"{run_id}: epochs rows do not match"
            assert row["written_at"] is not None
        elif row["status"] == "failed":
            assert row["error"], f"{run_id}: failed without an error"
    return rows


def finished(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {run_id: row for run_id, row in rows.items() if row["status"] in ("done", "failed")}


def image_folder(root: Path, classes: int = 3, per_class: int = 12) -> Path:
    """Class folders of 12x12 PNGs, each class brightest in its own channel."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            pixels[..., c % 3] = 200
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
