"""Helpers for the fault tests: tiny suites on disk, drivers as real processes, store checks, /proc scans."""

from __future__ import annotations

import os
import random
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
from bench.suite.model import suite_from_dict
from tests.conftest import TINY_TRAINING

TAG_ENV = "TRANSFER_BENCH_TEST_TAG"
METRICS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc", "train_s", "eval_s", "wall_s",
           "trainable_params", "total_params", "epochs_run")
REPO = Path(__file__).resolve().parents[1]
# How long a test waits for something that must happen (a child starting, a group dying, a result
# landing) before calling it missing. A wait ends as soon as its event comes, so this costs nothing
# when all is well; it is long because on a loaded machine starting Python and importing torch can
# take many times as long as at rest.
PATIENCE_S = 120.0
# How long each cell of ``budget_suite`` trains, on any machine.
CELL_S = 1.0
# How late a timed kill may land on a loaded machine, where the watchdog, the slot thread and the
# driver each wait their turn for a core. Tests pass a short grace, and this stays below the
# default one (KILL_GRACE_S), so a kill that waited the default grace instead still fails them.
KILL_LATENESS_S = 5.0


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


def budget_suite(name: str, *, cell_s: float = CELL_S, **kwargs: Any) -> dict[str, Any]:
    """A ``scratch_suite`` whose cells each train for ``cell_s`` seconds, on a fast machine as on a slow one.

    Each cell asks for more epochs than any machine gets through in ``cell_s`` and stops at its time
    budget, so a cell lasts at least that long after its driver claimed it, and a driver killed a
    moment after it was seen claiming a cell always dies while that cell runs.
    """
    return scratch_suite(name, epochs=100_000, time_budget=cell_s, **kwargs)


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


def claims_of(db: Path, pid: int) -> dict[str, float]:
    """The cells the driver with ``pid`` holds as running in the store, with when it claimed each."""
    return {run_id: row["claimed_at"] for run_id, row in _rows_now(db).items()
            if row["status"] == "running" and _claimant(row) == pid}


def landed(db: Path) -> dict[str, float]:
    """The finished cells in the store, with when each result was written."""
    return {run_id: row["written_at"] for run_id, row in finished(_rows_now(db)).items()}


def _rows_now(db: Path) -> dict[str, dict[str, Any]]:
    """``read_store``, or nothing while the store does not exist yet or is being created."""
    try:
        return read_store(db) if db.exists() else {}
    except sqlite3.Error:
        return {}


def _claimant(row: dict[str, Any]) -> int | None:
    """The pid in a claim's owner id (host:pid:start:token)."""
    parts = (row.get("claimed_by") or "").split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


# Moments in a driver's life to kill it at, each recognised in the store, and whether a cell of
# its own is then certain to be running: the kill lands mid-cell.
MOMENTS = {
    "start-up": False,  # a drawn moment before its first claim: imports, store open, migrations, planning
    "cell starting": True,  # its first claim: the cell's worker is still starting (Python, torch, data)
    "result landed": False,  # just after its first result: the next claim or write may be in flight
    "warm cell": True,  # a claim made after its first result: that cell trains on a warm worker
}


def await_moment(moment: str, driver: subprocess.Popen[bytes], db: Path, rng: random.Random,
                 cell_s: float = CELL_S) -> str | None:
    """Wait for ``moment`` (one of ``MOMENTS``) in the life of ``driver``, a run of a ``budget_suite``.

    Returns the cell the driver is then certain to be running, for a moment that has one, or None;
    returns at once if the driver ends. Every moment comes before any slot finishes a second cell:
    a driver killed at one has finished at most one cell per slot, however fast the machine.
    """
    pid = driver.pid

    def until(predicate: Callable[[], dict[str, float]], timeout_s: float = PATIENCE_S) -> dict[str, float]:
        """``predicate``'s first non-empty value, or an empty one once the driver ended or time ran out."""
        value = wait_for(lambda: driver.poll() is not None or predicate(), timeout_s, 0.02)
        return value if isinstance(value, dict) else {}

    if moment == "start-up":
        until(lambda: claims_of(db, pid), rng.uniform(0.0, 1.5))
        return None
    if moment == "cell starting":
        held = until(lambda: claims_of(db, pid))
    else:
        before = set(landed(db))
        new = until(lambda: {k: t for k, t in landed(db).items() if k not in before})
        if moment == "result landed" or not new:
            return None
        first = min(new.values())
        held = until(lambda: {k: t for k, t in claims_of(db, pid).items() if t > first})
    if not held:
        return None
    # Into the cell, but well inside its budget: it cannot end before ``cell_s`` after its claim.
    time.sleep(rng.uniform(0.0, cell_s / 4))
    return max(held, key=held.__getitem__)


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
