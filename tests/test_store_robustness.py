"""Hostile results files: each is refused in one line, keeps its bytes, and leaves nothing beside it.

Covers the store on its own (read and write opening) and through ``plan``, ``run``, ``report``
and ``export``; plus read-only and immutable stores, failed opens on a full disk, stores from
before the header carried the application id, and the report's counts for a reused suite name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.errors import StoreError
from bench.records import EpochRecord, RunResult, RunSpec
from bench.store import APPLICATION_ID, SCHEMA_VERSION, ResultStore
from tests.test_exit_codes import cli, one_line, tiny, write

NAME = "hostile"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def beside(path: Path) -> list[str]:
    """Files next to a store other than itself: WAL files, temporaries."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path
                  or p.name.startswith(f".{path.name}"))


def small_store(path: Path, *, runs: int = 6) -> Path:
    """A real store: scratch and full on two seeds or more, with curves and indices (overflow pages)."""
    with ResultStore(path) as store:
        for i in range(runs):
            strategy = ("scratch", "full")[i % 2]
            spec = RunSpec(
                run_id=f"run{i}", suite=NAME, backbone="test_resnet", weights="none" if i % 2 == 0 else "hub",
                dataset={"name": "digits"}, size="5", strategy=strategy, strategy_params={}, seed=i // 2,
                training={"epochs": 2},
            )
            acc = 0.5 + i / 100
            store.write(spec, RunResult(
                run_id=spec.run_id, status="done", test_acc=acc, test_balanced_acc=acc, test_macro_f1=acc,
                val_acc=acc, train_s=1.0, eval_s=0.1, wall_s=1.2, images_per_s=50.0, trainable_params=100,
                total_params=1000, device="cpu", epochs_run=2, versions={"torch": "x"},
                epochs=[EpochRecord(1, 1.0, 0.4, acc, 0.01, 0.5), EpochRecord(2, 0.5, 0.6, acc, 0.005, 0.5)],
                train_indices=list(range(400 * i, 400 * i + 600)), val_indices=list(range(50)),
            ))
        store.set_meta("suite", {"name": NAME, "seeds": [0, 1, 2]})
        store.set_meta("planned", runs)
        store.set_meta("planned_ids", [f"run{i}" for i in range(runs)])
    return path


def _sqlite(path: Path, *statements: str, wal: bool = False) -> None:
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def _truncated(path: Path) -> None:
    data = small_store(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _newer(path: Path) -> None:
    small_store(path)
    _sqlite(path, f"PRAGMA user_version={SCHEMA_VERSION + 1}")


def _other_application(path: Path) -> None:
    small_store(path)
    _sqlite(path, "PRAGMA application_id=1234")


# Each writes a file at the path that is not a store this version may use.
BAD: dict[str, Callable[[Path], Any]] = {
    "zero-byte": lambda p: p.write_bytes(b""),
    "random-bytes": lambda p: p.write_bytes(os.urandom(16384)),
    "short-text": lambda p: p.write_text("SQLite format 3"),
    "table-less": lambda p: _sqlite(p, "CREATE TABLE t(x)", "DROP TABLE t"),
    "foreign-runs-table": lambda p: _sqlite(p, "CREATE TABLE runs(a, b)", "INSERT INTO runs VALUES (1, 2)"),
    "foreign-wal": lambda p: _sqlite(p, "CREATE TABLE runs(run_id, status)", "CREATE TABLE other(x)", wal=True),
    "truncated": _truncated,
    "newer-version": _newer,
    "other-application": _other_application,
}
WORDS = {
    "zero-byte": "empty file", "random-bytes": "not an SQLite database", "short-text": "not an SQLite database",
    "table-less": "no tables", "foreign-runs-table": "not a transfer-bench results store",
    "foreign-wal": "not a transfer-bench results store", "truncated": "damaged or truncated",
    "newer-version": "newer than this transfer-bench", "other-application": "another application",
}


@pytest.fixture
def hostile(tmp_path):
    """A suite file and, for each bad kind, its results folder holding such a file as the suite's store."""
    suite = write(tmp_path / f"{NAME}.yaml", tiny(NAME))

    def make(kind: str) -> Path:
        path = tmp_path / kind / f"{NAME}.db"
        path.parent.mkdir()
        BAD[kind](path)
        return path

    return suite, make


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("readonly", [True, False], ids=["read", "write"])
def test_the_store_refuses_a_bad_file_in_one_line_and_keeps_its_bytes(hostile, kind, readonly):
    _, make = hostile
    path = make(kind)
    before = digest(path)
    with pytest.raises(StoreError) as caught:
        ResultStore(path, readonly=readonly)
    text = str(caught.value)
    assert str(path) in text and WORDS[kind] in text and "\n" not in text, text
    assert digest(path) == before, "a refused file must keep its bytes"
    assert beside(path) == [], "a refused file gets no WAL, index or temporary beside it"


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_command_refuses_a_bad_store_with_one_line_and_exit_2(hostile, kind, tmp_path):
    suite, make = hostile
    path = make(kind)
    before = digest(path)
    commands = {
        "plan": ("plan", suite, "--results-dir", path.parent, "--no-estimate"),
        "run": ("run", suite, "--results-dir", path.parent, "--no-report", "-e", "inprocess"),
        "report": ("report", path, "--out", tmp_path / "report"),
        "export": ("export", path, "--out", tmp_path / "out.csv"),
    }
    for command, args in commands.items():
        result = cli(*args)
        assert result.exit_code == 2, (command, result.output)
        line = one_line(result)
        assert str(path) in line and WORDS[kind] in line, (command, line)
        assert digest(path) == before, f"{command} changed the file"
        assert beside(path) == [], f"{command} left {beside(path)}"
    assert not (tmp_path / "out.csv").exists()


def test_an_unreadable_or_missing_store_is_one_line(tmp_path):
    folder = tmp_path / "results"
    (folder / f"{NAME}.db").mkdir(parents=True)  # a folder where the file should be
    suite = write(tmp_path / f"{NAME}.yaml", tiny(NAME))
    for args in (("plan", suite, "--results-dir", folder, "--no-estimate"), ("report", folder / f"{NAME}.db"),
                 ("export", folder / f"{NAME}.db"), ("export", tmp_path / "none.db")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        line = one_line(result)
        assert f"{NAME}.db" in line or "none.db" in line, line
    if os.geteuid() != 0:  # root reads whatever the mode says
        path = small_store(tmp_path / "locked" / f"{NAME}.db")
        path.chmod(0)
        try:
            result = cli("export", path, "--out", tmp_path / "x.csv")
        finally:
            path.chmod(0o644)
        assert result.exit_code == 2 and "cannot read results store" in one_line(result)


# -- stores that are ours -----------------------------------------------------------------


def test_a_new_store_carries_the_application_id_and_version_from_its_first_byte(tmp_path):
    path = tmp_path / "new.db"
    ResultStore(path).close()
    header = path.read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(header[60:64], "big") == SCHEMA_VERSION
    assert beside(path) == []


def test_a_store_from_before_the_application_id_is_read_as_is_and_adopted_when_written(tmp_path):
    path = small_store(tmp_path / "old.db")
    data = bytearray(path.read_bytes())
    data[68:72] = bytes(4)  # as written by a version that did not stamp the header
    path.write_bytes(bytes(data))
    before = digest(path)
    with ResultStore(path, readonly=True) as store:
        assert len(store.frame()) == 6
    assert digest(path) == before
    ResultStore(path).close()
    assert int.from_bytes(path.read_bytes()[68:72], "big") == APPLICATION_ID


def test_an_older_schema_is_read_without_migrating_it(tmp_path):
    from tests.test_store import version_1_store

    path = version_1_store(tmp_path / "v1.db")
    before = digest(path)
    with ResultStore(path, readonly=True) as store:
        frame = store.frame()
        assert list(frame["run_id"]) == ["old"] and frame.loc[0, "flags"] == ""
        assert store.result("old").notes == []
    assert digest(path) == before


def test_readers_leave_nothing_beside_the_store(tmp_path):
    path = small_store(tmp_path / f"{NAME}.db")
    with ResultStore(path, readonly=True) as store:
        store.frame()
        store.epochs_frame()
    assert beside(path) == []
    result = cli("export", path, "--out", tmp_path / "x.csv")
    assert result.exit_code == 0 and beside(path) == []


def test_a_read_only_store_can_be_exported_and_reported(tmp_path):
    folder = tmp_path / "frozen"
    path = small_store(folder / f"{NAME}.db")
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        # Root writes through any mode; an immutable file and folder refuse even root.
        locked = subprocess.run(["chattr", "+i", str(path), str(folder)], capture_output=True)
        if locked.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {locked.stderr.decode().strip()}")
    else:
        path.chmod(0o444)
        folder.chmod(0o555)
    try:
        exported = cli("export", path, "--out", tmp_path / "out.csv")
        reported = cli("report", path, "--out", tmp_path / "report")
        plan = cli("plan", write(tmp_path / f"{NAME}.yaml", tiny(NAME)), "--results-dir", folder, "--no-estimate")
        listing = sorted(p.name for p in folder.iterdir())
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path), str(folder)], check=True)
        else:
            folder.chmod(0o755)
            path.chmod(0o644)
    assert exported.exit_code == 0, exported.output
    assert "6 runs" in exported.stdout and (tmp_path / "out.csv").is_file()
    assert reported.exit_code == 0, reported.output
    assert listing == [f"{NAME}.db"]
    # A plan is for a run, which could not write here: it says so, as run would.
    assert plan.exit_code == 2 and ("not writable" in one_line(plan) or "read-only" in one_line(plan))


def test_a_killed_creation_leaves_nothing_that_outlives_the_next_open(tmp_path):
    path = tmp_path / f"{NAME}.db"
    dead = 2 ** 22 + 12345  # above pid_max's default: no such process
    host = __import__("socket").gethostname()
    leftovers = [tmp_path / f".{path.name}.new-{host}.{dead}.abcd1234", tmp_path / f".{path.name}.probe-{host}.{dead}.ab"]
    for leftover in leftovers:
        leftover.write_bytes(b"partial")
    mine = tmp_path / f".{path.name}.new-{host}.{os.getpid()}.live"
    mine.write_bytes(b"in progress")
    ResultStore(path).close()
    assert not any(p.exists() for p in leftovers)
    assert mine.exists(), "a temporary of a live process is not touched"


def test_damage_found_while_reading_is_a_store_error(tmp_path):
    path = small_store(tmp_path / f"{NAME}.db")
    _sqlite(path, "UPDATE runs SET details = '{not json' WHERE run_id = 'run1'",
            "UPDATE runs SET spec = 'garbage' WHERE run_id = 'run2'")
    with ResultStore(path, readonly=True) as store:
        with pytest.raises(StoreError, match="not valid JSON"):
            store.frame()
        with pytest.raises(StoreError, match="run2"):
            store.specs()
        assert len(store.statuses()) == 6, "the store stays usable after a failed read"


def test_a_renamed_column_or_bad_text_is_damage_named_in_one_line(tmp_path):
    renamed = small_store(tmp_path / "renamed" / f"{NAME}.db")
    _sqlite(renamed, "PRAGMA writable_schema=ON",
            "UPDATE sqlite_master SET sql = replace(sql, 'test_balanced_acc', 'tesu_balanced_acc') WHERE name = 'runs'")
    garbled = small_store(tmp_path / "garbled" / f"{NAME}.db")
    _sqlite(garbled, "UPDATE runs SET spec = CAST(X'7bff22' AS TEXT) WHERE run_id = 'run3'",
            "UPDATE runs SET backbone = CAST(X'ff' AS TEXT) WHERE run_id = 'run4'")
    for path, words in ((renamed, "has no test_balanced_acc"), (garbled, "not valid UTF-8")):
        before = digest(path)
        for args in (("export", path, "--out", tmp_path / "x.csv"), ("report", path, "--out", tmp_path / "r")):
            result = cli(*args)
            assert result.exit_code == 2 and words in one_line(result), result.output
            assert digest(path) == before and beside(path) == [], beside(path)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_full_disk_leaves_no_wal_files_beside_the_store(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        path = small_store(mount / f"{NAME}.db")
        filler = mount / "filler"
        with open(filler, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass
        # Room for the probe write, none for a WAL index: the open itself fails part way.
        with open(filler, "r+b") as handle:
            handle.truncate(filler.stat().st_size - 12 * 1024)
        before = digest(path)
        with pytest.raises(StoreError, match="disk"):
            ResultStore(path)
        assert beside(path) == [] and digest(path) == before
        with ResultStore(path, readonly=True) as store:
            assert len(store.frame()) == 6
        assert beside(path) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- what the report says -----------------------------------------------------------------


def test_a_reused_suite_name_is_reported_with_counts_from_the_current_plan(tmp_path):
    from bench.report import render_report

    path = small_store(tmp_path / f"{NAME}.db")
    with ResultStore(path) as store:  # a smaller suite of the same name ran last
        store.set_meta("planned", 2)
        store.set_meta("planned_ids", ["run0", "run1"])
    report = render_report(path, tmp_path / "out")
    assert (report.n_done, report.n_failed, report.planned) == (2, 0, 2)
    text = report.md_path.read_text(encoding="utf-8")
    assert "All 2 planned cells finished (2 done, 0 failed)" in text
    assert "also holds 4 finished runs" in text and "same name" in text
