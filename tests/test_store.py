"""The results store: round trip, resume bookkeeping, claims, schema version, export."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from bench.errors import StoreError
from bench.records import EpochRecord, RunResult
from bench.store import SCHEMA_VERSION, ResultStore
from bench.suite.model import suite_from_dict
from bench.tuning import split_final, stored_seeds
from tests.conftest import tiny_suite_dict
from tests.report_fixtures import TUNED_SEEDS, build_tuned_store

EXPORT_COLUMNS = [
    "run_id", "backbone", "weights", "dataset", "size", "strategy", "seed", "status",
    "test_acc", "val_acc", "train_s", "wall_s", "trainable_params", "total_params",
]


def _cells():
    return suite_from_dict(tiny_suite_dict(seeds=[0, 1])).expand()


def _result(spec, accuracy=0.5, status="done"):
    return RunResult(
        run_id=spec.run_id, status=status, test_acc=accuracy, test_balanced_acc=accuracy, test_macro_f1=accuracy,
        val_acc=accuracy, train_s=1.5, eval_s=0.1, wall_s=2.0, images_per_s=100.0, trainable_params=5130,
        total_params=11_000_000, peak_mem_mb=321.0, device="cpu", epochs_run=2, versions={"torch": "x"},
        epochs=[EpochRecord(1, 2.0, 0.3, 0.4, 1e-3, 0.7), EpochRecord(2, 1.0, 0.6, accuracy, 5e-4, 0.8)],
        train_indices=[3, 1, 2], val_indices=[9], error=None if status == "done" else "boom",
    )


def test_round_trip_keeps_every_field(tmp_path):
    spec = _cells()[0]
    written = _result(spec, 0.75)
    with ResultStore(tmp_path / "s.db") as store:
        store.write(spec, written)
        assert store.result(spec.run_id) == written
        assert store.specs() == [spec]
        frame = store.frame()
    assert frame.loc[0, "test_acc"] == 0.75 and frame.loc[0, "n_train"] == 3
    assert frame.loc[0, "strategy_label"] == spec.strategy_label


def test_pending_skips_done_and_optionally_failed(tmp_path):
    cells = _cells()
    with ResultStore(tmp_path / "s.db") as store:
        store.write(cells[0], _result(cells[0]))
        store.write(cells[1], _result(cells[1], status="failed"))
        assert store.pending(cells) == cells[2:]
        assert store.pending(cells, retry_failed=True) == [cells[1], *cells[2:]]
        assert store.pending(cells, force=True) == cells


def test_a_claim_blocks_a_second_owner_until_released(tmp_path):
    spec = _cells()[0]
    with ResultStore(tmp_path / "s.db") as store, ResultStore(tmp_path / "s.db") as other:
        # An owner on another host cannot be checked for liveness, so its fresh claim holds.
        assert store.claim(spec, "other-host:1")
        assert not other.claim(spec, "other-host:2")
        store.release(spec.run_id, "other-host:1")
        assert other.statuses() == {}, "a released claim leaves nothing behind"
        assert other.claim(spec, "other-host:2")


def test_a_live_claim_is_respected_and_a_dead_one_is_not(tmp_path):
    import os
    import socket

    spec = _cells()[0]
    live = f"{socket.gethostname()}:{os.getpid()}"
    dead = f"{socket.gethostname()}:999999999"
    with ResultStore(tmp_path / "s.db") as store:
        assert store.claim(spec, live)
        assert not store.claim(spec, "someone-else")
        assert store.pending([spec]) == []
    with ResultStore(tmp_path / "t.db") as store:
        assert store.claim(spec, dead)
        assert store.pending([spec]) == [spec], "a claim whose process is gone is pending again"
        assert store.claim(spec, live)
    with ResultStore(tmp_path / "u.db") as store:
        assert store.claim(spec, f"{socket.gethostname()}:{2**70}")
        assert store.pending([spec]) == [spec], "a pid no process can have is no owner"


def test_released_rerun_keeps_the_previous_result(tmp_path):
    spec = _cells()[0]
    with ResultStore(tmp_path / "s.db") as store:
        store.write(spec, _result(spec, 0.6))
        assert store.claim(spec, "h:1", allow=("done",))
        store.release(spec.run_id, "h:1")
        assert store.result(spec.run_id).test_acc == 0.6


def test_schema_version_is_recorded_and_a_newer_file_refused(tmp_path):
    path = tmp_path / "s.db"
    ResultStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this transfer-bench"):
        ResultStore(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_text("not sqlite at all" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        ResultStore(path)


def test_missing_store_for_reading_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "none.db", readonly=True)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_one_row_per_run_with_the_documented_columns(tmp_path, fmt):
    cells = _cells()
    db = tmp_path / "s.db"
    with ResultStore(db) as store:
        for i, spec in enumerate(cells[:3]):
            store.write(spec, _result(spec, 0.1 * i))
    out = tmp_path / f"out.{fmt}"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "export", str(db), "--format", fmt, "--out", str(out)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(frame) == 3
    assert set(EXPORT_COLUMNS) <= set(frame.columns)
    assert sorted(frame["run_id"]) == sorted(c.run_id for c in cells[:3])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_marks_the_runs_the_verdict_reads_as_final(tmp_path, fmt):
    db = build_tuned_store(tmp_path / "tuned.db", extend=True)
    out = tmp_path / f"out.{fmt}"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "export", str(db), "--format", fmt, "--out", str(out)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    exported = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert exported["final"].dtype == bool
    with ResultStore(db, readonly=True) as store:
        frame, suite = store.frame(), store.get_meta("suite")
    final, sweep = split_final(frame, *stored_seeds(suite, frame))
    assert set(exported.loc[exported["final"], "run_id"]) == set(final["run_id"])
    assert set(exported.loc[~exported["final"], "run_id"]) == set(sweep["run_id"])
    # What the verdict compares: each tuned arm's chosen point on every seed, and the untuned arm.
    chosen = {("scratch", 0.01), ("full", 0.0003), ("frozen", None)}
    assert set(final["run_id"]) == {f"{s}-{lr}-{seed}" for s, lr in chosen for seed in TUNED_SEEDS}


def version_1_store(path):
    """A store as the first schema wrote it, holding one finished run with id 'old'."""
    from bench.store.schema import _SCHEMA_V1

    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1 + ";PRAGMA user_version=1;")
    db.execute(
        "INSERT INTO runs (run_id, suite, backbone, weights, dataset, size, strategy, strategy_label,"
        " strategy_params, seed, status, training_version, spec, test_acc) VALUES"
        " ('old', 's', 'b', 'none', 'digits', '5', 'scratch', 'scratch', '{}', 0, 'done', '1', '{}', 0.5)"
    )
    db.commit()
    db.close()
    return path


def test_a_version_1_store_is_migrated_in_place_and_keeps_its_runs(tmp_path):
    path = version_1_store(tmp_path / "old.db")
    with ResultStore(path) as store:
        assert store.frame()["test_acc"].tolist() == [0.5]
        spec = _cells()[0]
        written = _result(spec)
        written.notes = ["skipped corrupt image a.png: truncated"]
        store.write(spec, written)
        assert store.result(spec.run_id).notes == written.notes
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_a_frame_with_running_cells_reads_their_missing_details(tmp_path):
    cells = _cells()
    with ResultStore(tmp_path / "s.db") as store:
        done = _result(cells[0])
        done.details = {"probe_l2": 0.01, "probe_scaling": "unit_norm"}
        store.write(cells[0], done)
        assert store.claim(cells[1], "other-host:1")
        frame = store.frame(include_running=True).set_index("run_id")
    assert frame.loc[cells[0].run_id, "probe_l2"] == 0.01
    assert frame.loc[cells[0].run_id, "probe_scaling"] == "unit_norm"
    assert frame.loc[cells[1].run_id, "status"] == "running" and frame.loc[cells[1].run_id, "probe_l2"] != 0.01
    assert pd.isna(frame.loc[cells[1].run_id, "probe_scaling"])
