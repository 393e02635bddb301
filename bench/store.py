"""The SQLite results store: one file per suite, one row per run, one transaction per result.

The driver process is the only writer. Cells are claimed before they run (``status =
'running'``, owner and heartbeat) so two drivers on one suite never run a cell twice, and a
claim whose owner died is free again. Readers (report, export) use WAL snapshots and never
block the writer. This module must not import torch.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.records import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_RUNNING,
    RunResult,
    RunSpec,
)

# Details of a run the report reads as columns of ``frame()``.
DETAIL_COLUMNS = ("probe_l2", "logme")

# A claim not refreshed for this long is presumed dead even when its owner is on another host.
STALE_CLAIM_S = 15 * 60

_RESULT_COLUMNS = (
    "error", "traceback", "test_acc", "test_balanced_acc", "test_macro_f1", "val_acc",
    "train_s", "eval_s", "wall_s", "images_per_s", "trainable_params", "total_params",
    "peak_mem_mb", "device", "epochs_run", "stopped_early", "batch_size",
    "started_at", "finished_at",
)

_SCHEMA_V1 = f"""
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    backbone TEXT NOT NULL,
    weights TEXT NOT NULL,
    dataset TEXT NOT NULL,
    size TEXT NOT NULL,
    strategy TEXT NOT NULL,
    strategy_label TEXT NOT NULL,
    strategy_params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    {", ".join(f"{c} {'TEXT' if c in ('error', 'traceback', 'device') else 'REAL'}" for c in _RESULT_COLUMNS)},
    versions TEXT,
    training_version TEXT NOT NULL,
    spec TEXT NOT NULL,
    train_indices TEXT,
    val_indices TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_at REAL,
    prev_status TEXT,
    written_at REAL
);
CREATE INDEX runs_status ON runs(status);
CREATE TABLE epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL,
    train_acc REAL,
    val_acc REAL,
    lr REAL,
    seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Each entry migrates a store from version i to i + 1; PRAGMA user_version records where a
# file stands, so an old results file keeps opening after the schema grows.
_SCHEMA_V2 = "ALTER TABLE runs ADD COLUMN notes TEXT"

# Run health flags, strategy details (the probe's sweep), and the tuning arm and grid point.
_SCHEMA_V3 = """
ALTER TABLE runs ADD COLUMN flags TEXT;
ALTER TABLE runs ADD COLUMN details TEXT;
ALTER TABLE runs ADD COLUMN arm TEXT;
ALTER TABLE runs ADD COLUMN tuned TEXT
"""

_MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3)
SCHEMA_VERSION = len(_MIGRATIONS)


# Owners started by this process and not yet finished: a claim by this pid with a token not in
# here belongs to a driver that ended without giving it back, so it is dead even though the pid lives.
_LOCAL_OWNERS: set[str] = set()


def owner_id() -> str:
    """A new driver identity for claims: host, pid, the process's start time and a unique token."""
    pid = os.getpid()
    owner = f"{socket.gethostname()}:{pid}:{_process_start(pid) or 0}:{uuid.uuid4().hex[:12]}"
    _LOCAL_OWNERS.add(owner)
    return owner


def retire_owner(owner: str) -> None:
    """Mark a driver identity of this process as finished: its leftover claims are dead."""
    _LOCAL_OWNERS.discard(owner)


def _process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
        # The command name may hold spaces or parentheses, so fields are counted after the last ')'.
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _owner_alive(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    host, pid_text, *rest = owner.split(":")
    if host != socket.gethostname():
        return True  # cannot see other hosts' processes; the heartbeat age decides instead
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except ValueError:
        return False
    except PermissionError:
        pass
    if rest and rest[0] != "0":
        started = _process_start(pid)
        if started is not None and started != rest[0]:
            return False  # the pid now belongs to another process
    if pid == os.getpid() and len(rest) >= 2:
        return owner in _LOCAL_OWNERS
    return True


class ResultStore:
    """Results of one suite in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout_s: float = 30.0):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no results store here (run the suite first)")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self._db = self._connect(uri, timeout_s, uri=True)
        else:
            self._check_writable()
            self._db = self._connect(str(self.path), timeout_s)
            self._migrate()

    # -- connection -----------------------------------------------------------------------

    def _connect(self, target: str, timeout_s: float, uri: bool = False) -> sqlite3.Connection:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._open(target, timeout_s, uri)
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs a moment alone with the file and does not wait on the busy
                # timeout: a second driver opening the same store at once just tries again.
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: cannot open results store: {exc}") from exc
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: cannot open results store: {exc}") from exc

    def _open(self, target: str, timeout_s: float, uri: bool) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=timeout_s, uri=uri, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            if not self.readonly:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _check_writable(self) -> None:
        """Fail before the first write when the folder cannot take one: missing, read-only or full."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{folder}: cannot create results folder: {exc.strerror or exc}") from exc
        if not folder.is_dir():
            raise StoreError(f"{folder}: results folder is not a folder")
        if not os.access(folder, os.W_OK):
            raise StoreError(f"{folder}: results folder is not writable")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(f"{self.path}: results store is read-only")
        # os.access says yes to root even on a read-only mount or a full disk; a real write does not.
        probe = folder / f".{self.path.name}.probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 8192)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StoreError(f"{folder}: results folder cannot be written: {_os_reason(exc)}") from exc
        finally:
            try:
                probe.unlink()
            except OSError:
                pass

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema v{version} is newer than this transfer-bench (v{SCHEMA_VERSION}); upgrade it"
            )
        while version < SCHEMA_VERSION:
            with self._write():
                # Read again under the write lock: another driver may have migrated meanwhile.
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    break
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={version + 1}")
            version += 1

    def _write(self) -> _Transaction:
        return _Transaction(self._db, self.path)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one state of the file, even while a driver writes it."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- claims and resume ----------------------------------------------------------------

    def statuses(self) -> dict[str, str]:
        """Map every stored run id to its status, with dead claims reported as pending."""
        now = time.time()
        out: dict[str, str] = {}
        for row in self._db.execute("SELECT run_id, status, claimed_by, claimed_at FROM runs"):
            status = row["status"]
            if status == STATUS_RUNNING and not self._claim_live(row, now):
                status = "pending"
            out[row["run_id"]] = status
        return out

    @staticmethod
    def _claim_live(row: sqlite3.Row, now: float) -> bool:
        fresh = row["claimed_at"] is not None and now - row["claimed_at"] < STALE_CLAIM_S
        return fresh and _owner_alive(row["claimed_by"])

    def pending(self, specs: Sequence[RunSpec], *, retry_failed: bool = False, force: bool = False) -> list[RunSpec]:
        """Cells still to run: never run, abandoned, or (when asked) failed or done."""
        if force:
            return list(specs)
        statuses = self.statuses()
        todo = []
        for spec in specs:
            status = statuses.get(spec.run_id, "pending")
            if status == "pending" or (retry_failed and status == STATUS_FAILED):
                todo.append(spec)
        return todo

    def claim(
        self, spec: RunSpec, owner: str, *, allow: Iterable[str] = (), written_before: float | None = None,
    ) -> bool:
        """Mark a cell as running by ``owner``; False if another live driver holds or finished it.

        ``allow`` lists finished statuses that may be taken over (``failed`` for a retry,
        ``done`` for a forced rerun); with ``written_before``, only results written before
        that time may be, so a driver never reruns what another finished after it planned.
        The check and the write happen in one ``BEGIN IMMEDIATE`` transaction, so two
        drivers cannot both win.
        """
        allowed = set(allow)
        now = time.time()
        with self._write():
            row = self._db.execute(
                "SELECT status, claimed_by, claimed_at, written_at FROM runs WHERE run_id = ?", (spec.run_id,)
            ).fetchone()
            if row is not None:
                status = row["status"]
                if status == STATUS_RUNNING and row["claimed_by"] != owner and self._claim_live(row, now):
                    return False
                if status in (STATUS_DONE, STATUS_FAILED):
                    if status not in allowed:
                        return False
                    if written_before is not None and (row["written_at"] or 0) >= written_before:
                        return False
                self._db.execute(
                    "UPDATE runs SET prev_status = CASE WHEN status = ? THEN prev_status ELSE status END,"
                    " status = ?, claimed_by = ?, claimed_at = ?, attempts = attempts + 1 WHERE run_id = ?",
                    (STATUS_RUNNING, STATUS_RUNNING, owner, now, spec.run_id),
                )
            else:
                self._db.execute(
                    """INSERT INTO runs (run_id, suite, backbone, weights, dataset, size, strategy,
                        strategy_label, strategy_params, seed, arm, tuned, status, training_version, spec,
                        attempts, claimed_by, claimed_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)""",
                    (*self._spec_columns(spec), STATUS_RUNNING, spec.training_version, spec.to_json(), owner, now),
                )
        return True

    def heartbeat(self, run_ids: Iterable[str], owner: str) -> None:
        """Refresh this driver's claims so they are not taken for dead."""
        ids = list(run_ids)
        if not ids:
            return
        with self._write():
            self._db.executemany(
                "UPDATE runs SET claimed_at = ? WHERE run_id = ? AND claimed_by = ? AND status = ?",
                [(time.time(), run_id, owner, STATUS_RUNNING) for run_id in ids],
            )

    def release(self, run_id: str, owner: str) -> None:
        """Give an unfinished claim back: the cell is pending again, nothing of it kept."""
        with self._write():
            self._release(run_id, owner)

    def release_all(self, owner: str) -> list[str]:
        """Give back every claim ``owner`` still holds; return the run ids released."""
        with self._write():
            held = [
                row[0] for row in self._db.execute(
                    "SELECT run_id FROM runs WHERE status = ? AND claimed_by = ?", (STATUS_RUNNING, owner)
                )
            ]
            for run_id in held:
                self._release(run_id, owner)
        return held

    def _release(self, run_id: str, owner: str) -> None:
        row = self._db.execute(
            "SELECT status, claimed_by, written_at FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None or row["status"] != STATUS_RUNNING or row["claimed_by"] != owner:
            return
        if row["written_at"] is None:
            self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        else:  # a forced rerun or retry: the previous finished result stays as it was
            self._db.execute(
                "UPDATE runs SET status = prev_status, claimed_by = NULL, claimed_at = NULL WHERE run_id = ?",
                (run_id,),
            )

    # -- writing results ------------------------------------------------------------------

    @staticmethod
    def _spec_columns(spec: RunSpec) -> tuple[Any, ...]:
        return (
            spec.run_id, spec.suite, spec.backbone, spec.weights, spec.dataset_name, spec.size,
            spec.strategy, spec.strategy_label, json.dumps(spec.strategy_params, sort_keys=True), spec.seed,
            spec.arm, json.dumps(spec.tuned, sort_keys=True),
        )

    def write(self, spec: RunSpec, result: RunResult) -> None:
        """Store a finished run (done or failed) and its curve in one transaction."""
        if result.run_id != spec.run_id:
            raise ValueError(f"result {result.run_id} does not belong to cell {spec.run_id}")
        values = [getattr(result, column) for column in _RESULT_COLUMNS]
        now = time.time()
        with self._write():
            self._db.execute(
                """INSERT INTO runs (run_id, suite, backbone, weights, dataset, size, strategy,
                        strategy_label, strategy_params, seed, arm, tuned, status, training_version, spec, attempts)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    ON CONFLICT(run_id) DO NOTHING""",
                (*self._spec_columns(spec), result.status, spec.training_version, spec.to_json()),
            )
            self._db.execute(
                f"""UPDATE runs SET status = ?, {", ".join(f"{c} = ?" for c in _RESULT_COLUMNS)},
                        versions = ?, train_indices = ?, val_indices = ?, notes = ?, flags = ?, details = ?,
                        arm = ?, tuned = ?, claimed_by = NULL, claimed_at = NULL, written_at = ?
                    WHERE run_id = ?""",
                (
                    result.status, *values, json.dumps(result.versions, sort_keys=True),
                    json.dumps(result.train_indices), json.dumps(result.val_indices), json.dumps(result.notes),
                    ",".join(result.flags), json.dumps(result.details, sort_keys=True),
                    spec.arm, json.dumps(spec.tuned, sort_keys=True), now, spec.run_id,
                ),
            )
            self._db.execute("DELETE FROM epochs WHERE run_id = ?", (spec.run_id,))
            self._db.executemany(
                "INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (spec.run_id, e.epoch, e.train_loss, e.train_acc, e.val_acc, e.lr, e.seconds)
                    for e in result.epochs
                ],
            )

    def set_meta(self, key: str, value: Any) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- reading --------------------------------------------------------------------------

    def result(self, run_id: str) -> RunResult | None:
        """Read one stored run back as a ``RunResult`` (None when absent or unfinished)."""
        from bench.records import EpochRecord

        with self._snapshot():
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] not in (STATUS_DONE, STATUS_FAILED):
                return None
            epochs = [
                EpochRecord(**{k: r[k] for k in ("epoch", "train_loss", "train_acc", "val_acc", "lr", "seconds")})
                for r in self._db.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,))
            ]
        fields = {column: row[column] for column in _RESULT_COLUMNS}
        for integer in ("trainable_params", "total_params", "epochs_run", "batch_size"):
            if fields[integer] is not None:
                fields[integer] = int(fields[integer])
        fields["stopped_early"] = bool(fields["stopped_early"])
        return RunResult(
            run_id=run_id, status=row["status"], versions=json.loads(row["versions"] or "{}"),
            epochs=epochs, train_indices=json.loads(row["train_indices"] or "[]"),
            val_indices=json.loads(row["val_indices"] or "[]"), notes=json.loads(row["notes"] or "[]"),
            flags=[f for f in (row["flags"] or "").split(",") if f], details=json.loads(row["details"] or "{}"),
            **fields,
        )

    def frame(self, *, include_running: bool = False):
        """One row per run as a pandas DataFrame: the only input the report needs."""
        import pandas as pd

        statuses = (STATUS_DONE, STATUS_FAILED, STATUS_RUNNING) if include_running else (STATUS_DONE, STATUS_FAILED)
        marks = ",".join("?" * len(statuses))
        with self._snapshot():
            frame = pd.read_sql_query(
                f"""SELECT *, coalesce(json_array_length(train_indices), 0) AS n_train FROM runs
                    WHERE status IN ({marks}) ORDER BY backbone, dataset, strategy_label, seed""",
                self._db, params=statuses,
            )
        frame = frame.drop(columns=["spec", "train_indices", "val_indices", "claimed_by", "claimed_at"])
        frame["size_order"] = frame["size"].map(_size_order)
        frame["flags"] = frame["flags"].fillna("")
        frame["arm"] = frame["arm"].fillna("")
        frame["tuned"] = frame["tuned"].fillna("{}")
        details = frame.pop("details").map(lambda text: json.loads(text) if text else {})
        # The few details the report reads become columns; the rest stay in the .db.
        for key in DETAIL_COLUMNS:
            frame[key] = details.map(lambda d, key=key: d.get(key)).astype(float)
        return frame

    def epochs_frame(self):
        """Per-epoch curves joined with each run's grid coordinates."""
        import pandas as pd

        return pd.read_sql_query(
            """SELECT e.*, r.backbone, r.weights, r.dataset, r.size, r.strategy, r.strategy_label, r.seed
               FROM epochs e JOIN runs r USING (run_id) ORDER BY e.run_id, e.epoch""",
            self._db,
        )

    def specs(self) -> list[RunSpec]:
        return [RunSpec.from_json(row[0]) for row in self._db.execute("SELECT spec FROM runs")]

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _size_order(size: str) -> float:
    """Sort key for sizes: per-class counts and fractions ascending, ``all`` last."""
    if size == "all":
        return float("inf")
    return float(size)


def _os_reason(exc: OSError) -> str:
    """An OS error in words, with the usual cause spelled out."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{exc.strerror} (the disk is full or a size limit was reached)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (read-only or not permitted)"
    return exc.strerror or str(exc)


def _sqlite_reason(exc: sqlite3.Error) -> str:
    """SQLite's message, with the likely cause when it is the disk."""
    text = str(exc) or type(exc).__name__
    if "full" in text or "I/O error" in text:
        return f"{text} (is the disk full?); results written before this are intact"
    if "readonly" in text or "read-only" in text:
        return f"{text} (the results folder or file is read-only)"
    return text


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; any SQLite failure rolls back and becomes a StoreError.

    A rolled-back transaction leaves the file as it was before it, so a full disk or a
    read-only file can stop a suite but never leave a half-written result.
    """

    def __init__(self, db: sqlite3.Connection, path: Path):
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot write results store: {_sqlite_reason(exc)}") from exc

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as commit_exc:
                self._rollback()
                reason = _sqlite_reason(commit_exc)
                raise StoreError(f"{self._path}: cannot write results store: {reason}") from commit_exc
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{self._path}: cannot write results store: {_sqlite_reason(exc)}") from exc

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk does that); nothing is left to undo then.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
