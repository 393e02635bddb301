"""The SQLite results store: one file per suite, one row per run, one transaction per result.

The driver process is the only writer. Cells are claimed before they run (``status =
'running'``, owner and heartbeat) so two drivers on one suite never run a cell twice, and a
claim whose owner died is free again. Readers (report, export) use WAL snapshots and never
block the writer, and can read a store they may not write.

A store says what it is in its header (``application_id`` and ``user_version``), so a file
that is not one, or is from a newer version, is refused before SQLite writes a byte of it.
This module must not import torch.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import sqlite3
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.procs import pid_alive, process_start, same_process
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

# Written into every store's header (bytes 68-71) when it is made, so a store is told apart from
# any other SQLite file by reading 100 bytes, without letting SQLite touch the file.
APPLICATION_ID = int.from_bytes(b"tfbn", "big")
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Stores written before the header carried the application id are recognised by these columns.
_LEGACY_TABLES = {
    "runs": {"run_id", "suite", "status", "spec", "training_version"},
    "epochs": {"run_id", "epoch"},
    "meta": {"key", "value"},
}
# SQLite maps its WAL index in 32 KiB regions: a smaller -shm file was never usable by any connection.
_SHM_REGION = 32 * 1024
_FIX = "move it aside or choose another --results-dir"

# What reading a damaged file raises: SQLite's errors, and text that is not UTF-8 (even in SQLite's own messages).
_DAMAGE = (sqlite3.Error, UnicodeDecodeError)


def check_store_path(path: str | os.PathLike[str]) -> None:
    """Raise the StoreError that opening ``path`` for a run would raise, without writing anything.

    Covers the results folder (creatable, a folder, writable) and an existing file (an
    undamaged transfer-bench store of a version this one reads, writable); ``plan`` calls it so
    that it refuses what ``run`` would.
    """
    path = Path(path)
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != folder:
        if not existing.is_dir():
            raise StoreError(f"{folder}: cannot create results folder: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StoreError(f"{folder}: cannot create results folder: {existing} is not writable")
        return
    if not folder.is_dir():
        raise StoreError(f"{folder}: results folder is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"{folder}: results folder is not writable")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise StoreError(f"{path}: not a file, so not a results store; {_FIX}")
        ResultStore(path, readonly=True).close()  # recognised, of a version this one reads, undamaged
        if not os.access(path, os.W_OK):
            raise StoreError(f"{path}: results store is read-only")


def _recognise(path: Path) -> int:
    """The schema version of the store at ``path``; StoreError for anything that is not one we can use.

    Reads the header's bytes directly; only a file from before the header carried the
    application id is opened with SQLite, as immutable or read-only, which writes nothing.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read results store: {_os_reason(exc)}") from exc
    if not header:
        raise StoreError(f"{path}: empty file (0 bytes), not a transfer-bench results store; {_FIX}")
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path}: not a transfer-bench results store (not an SQLite database); {_FIX}")
    version = int.from_bytes(header[60:64], "big")
    application = int.from_bytes(header[68:72], "big")
    if application == APPLICATION_ID:
        if version < 1:
            raise StoreError(f"{path}: results store has no schema version; it is damaged, restore it from a copy")
    elif application == 0:
        _check_legacy_tables(path)
    else:
        raise StoreError(
            f"{path}: not a transfer-bench results store (an SQLite database of another application, "
            f"id {application:#010x}); {_FIX}"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(_newer(path, version))
    return version


def _check_legacy_tables(path: Path) -> None:
    """Refuse an SQLite file without the tables of a results store (a foreign or empty database)."""
    # With no WAL beside it nothing is writing the file, and immutable mode reads it without
    # creating a WAL, a lock or a byte; with one, a read-only connection shares it.
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        db = sqlite3.connect(_uri(path, mode), uri=True)
        try:
            names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            columns = {
                name: {row[1] for row in db.execute(f"PRAGMA table_info({_quote(name)})")}
                for name in names if name in _LEGACY_TABLES
            }
        finally:
            db.close()
    except _DAMAGE as exc:
        _release(exc)
        raise StoreError(f"{path}: cannot read results store: {_sqlite_reason(exc)}") from exc
    if not names:
        raise StoreError(f"{path}: an SQLite database with no tables, not a transfer-bench results store; {_FIX}")
    for table, needed in _LEGACY_TABLES.items():
        if table not in columns:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise StoreError(
                f"{path}: not a transfer-bench results store (no '{table}' table; its tables: {shown}); {_FIX}"
            )
        missing = needed - columns[table]
        if missing:
            raise StoreError(
                f"{path}: not a transfer-bench results store (its '{table}' table has no "
                f"{', '.join(sorted(missing))}); {_FIX}"
            )


@functools.lru_cache(maxsize=None)
def _schema_columns(version: int) -> dict[str, frozenset[str]]:
    """The columns of each table of a store at schema ``version``, from the migrations themselves."""
    db = sqlite3.connect(":memory:")
    try:
        for migration in _MIGRATIONS[:version]:
            for statement in migration.split(";"):
                if statement.strip():
                    db.execute(statement)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: frozenset(row[1] for row in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


def _release(exc: BaseException) -> None:
    """Free the cursors an error's traceback holds: while one lives its connection cannot really
    close, and the WAL files SQLite made stay beside the store."""
    traceback.clear_frames(exc.__traceback__)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _newer(path: Path, version: int) -> str:
    return f"{path}: store schema v{version} is newer than this transfer-bench (v{SCHEMA_VERSION}); upgrade it"


def _uri(path: Path, query: str) -> str:
    """An SQLite URI for a path, escaped so that '?', '#' and '%' in a name stay part of it."""
    return f"file:{urllib.parse.quote(str(path.resolve()), safe='/')}?{query}"


def _sidecars(path: Path) -> set[str]:
    return {suffix for suffix in ("-wal", "-shm") if Path(f"{path}{suffix}").exists()}


def _remove_unused_sidecars(path: Path, existed: set[str]) -> None:
    """Remove a WAL and WAL index that a failed open made and no connection can be using.

    Only files that were not there before, an empty WAL (nothing in it to lose) and an index
    smaller than one mapped region (never usable) qualify, so another process's files are safe.
    """
    if existed:
        return
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        if wal.exists() and wal.stat().st_size:
            return
        if shm.exists() and shm.stat().st_size >= _SHM_REGION:
            return
        shm.unlink(missing_ok=True)
        wal.unlink(missing_ok=True)
    except OSError:
        pass


def _temp_tag() -> str:
    """A name part that says which process made a temporary file: host, pid, a unique token."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove temporaries beside a store left by a process of this host that was killed."""
    host = socket.gethostname()
    try:
        entries = list(folder.glob(f".{name}.*"))
    except OSError:
        return
    for entry in entries:
        kind, _, tag = entry.name[len(name) + 2:].partition("-")
        if kind not in ("new", "probe"):
            continue
        for suffix in ("-journal", "-wal", "-shm"):
            tag = tag.removesuffix(suffix)
        parts = tag.rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or _maybe_alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()


def _maybe_alive(pid: int) -> bool:
    try:
        return pid_alive(pid)
    except OverflowError:
        return True  # no pid of this host, so no process to judge by: the file stays


# Owners started by this process and not yet finished: a claim by this pid with a token not in
# here belongs to a driver that ended without giving it back, so it is dead even though the pid lives.
_LOCAL_OWNERS: set[str] = set()


def owner_id() -> str:
    """A new driver identity for claims: host, pid, the process's start time and a unique token."""
    pid = os.getpid()
    owner = f"{socket.gethostname()}:{pid}:{process_start(pid) or 0}:{uuid.uuid4().hex[:12]}"
    _LOCAL_OWNERS.add(owner)
    return owner


def retire_owner(owner: str) -> None:
    """Mark a driver identity of this process as finished: its leftover claims are dead."""
    _LOCAL_OWNERS.discard(owner)


def _owner_alive(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    host, pid_text, *rest = owner.split(":")
    if host != socket.gethostname():
        return True  # cannot see other hosts' processes; the heartbeat age decides instead
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    # A start time of 0 was recorded where none could be read: the pid alone must do.
    if not same_process(pid, rest[0] if rest and rest[0] != "0" else None):
        return False
    if pid == os.getpid() and len(rest) >= 2:
        return owner in _LOCAL_OWNERS
    return True


def _reading(method):
    """Turn what a damaged file raises while it is read into one StoreError line."""

    @functools.wraps(method)
    def wrapper(self: ResultStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _DAMAGE as exc:
            _release(exc)
            raise StoreError(f"{self.path}: cannot read results store: {_sqlite_reason(exc)}") from exc
        except json.JSONDecodeError as exc:
            _release(exc)
            raise StoreError(f"{self.path}: a stored value is not valid JSON ({exc.msg}); the store is damaged") from exc

    return wrapper


class ResultStore:
    """Results of one suite in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout_s: float = 30.0):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no results store here (run the suite first)")
            _recognise(self.path)
        else:
            check_store_path(self.path)
            self._prepare_folder()
            if not self.path.exists():
                self._create()
        sidecars = _sidecars(self.path)
        db: sqlite3.Connection | None = None
        try:
            if readonly:
                db = self._db = self._open_for_reading(timeout_s, sidecars)
            else:
                db = self._db = self._connect(_uri(self.path, "mode=rw"), timeout_s)
                self._migrate()
            self._verify()
        except BaseException:
            if db is not None:
                db.close()
            _remove_unused_sidecars(self.path, sidecars)
            raise

    # -- opening --------------------------------------------------------------------------

    def _connect(self, target: str, timeout_s: float) -> sqlite3.Connection:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._open(target, timeout_s)
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs a moment alone with the file and does not wait on the busy
                # timeout: a second driver opening the same store at once just tries again.
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: cannot open results store: {_sqlite_reason(exc)}") from exc
                time.sleep(0.05)
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                raise StoreError(f"{self.path}: cannot open results store: {_sqlite_reason(exc)}") from exc

    def _open(self, target: str, timeout_s: float) -> sqlite3.Connection:
        db = sqlite3.connect(target, timeout=timeout_s, uri=True, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            if self.readonly:
                db.execute("PRAGMA query_only=ON")
            else:
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def _open_for_reading(self, timeout_s: float, sidecars: set[str]) -> sqlite3.Connection:
        """A connection that never writes: read-write mode when allowed, else read-only, else immutable.

        A read-write connection that only reads is what lets SQLite remove the WAL files it
        made when it closes; a read-only one would leave them behind. Where neither the file nor
        its folder can be written (a read-only mount, an immutable file), ``mode=ro`` still reads
        a store that a writer has open, and with no WAL beside the file nothing can be writing
        it, so reading it as immutable is safe.
        """
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        if writable:
            try:
                return self._connect(_uri(self.path, "mode=rw"), timeout_s)
            except StoreError:
                _remove_unused_sidecars(self.path, sidecars)
        wal = Path(f"{self.path}-wal")
        return self._connect(_uri(self.path, "mode=ro" if wal.exists() else "immutable=1"), timeout_s)

    def _verify(self) -> None:
        """Refuse a damaged file or one a newer version wrote, with what was found."""
        db = self._db
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(_newer(self.path, version))
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StoreError(f"{self.path}: results store is damaged ({_short(problem)}); restore it from a copy")
            # A damaged schema can rename a column and still pass the check; what every reader needs must be there.
            for table, needed in _schema_columns(min(version, SCHEMA_VERSION)).items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if needed - have:
                    missing = ", ".join(sorted(needed - have)[:5])
                    raise StoreError(f"{self.path}: results store is damaged: table '{table}' has no {missing}; "
                                     "restore it from a copy")
        except _DAMAGE as exc:
            _release(exc)
            raise StoreError(f"{self.path}: cannot read results store: {_sqlite_reason(exc)}") from exc

    def _prepare_folder(self) -> None:
        """Create the results folder, then write to it: os.access says yes to root on a read-only mount or a full disk."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{folder}: cannot create results folder: {exc.strerror or exc}") from exc
        _remove_stale_temporaries(folder, self.path.name)
        probe = folder / f".{self.path.name}.probe-{_temp_tag()}"
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

    def _create(self) -> None:
        """Build a complete new store beside the path, then link it into place.

        The file appears whole, header and schema included, so no other process ever sees an
        empty or half-made store; when two drivers create one at once, the first link wins and
        the other opens it.
        """
        temp = self.path.parent / f".{self.path.name}.new-{_temp_tag()}"
        try:
            db = sqlite3.connect(temp, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                for migration in _MIGRATIONS:
                    for statement in migration.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute("COMMIT")
                db.execute("PRAGMA journal_mode=WAL")
            finally:
                db.close()
            try:
                os.link(temp, self.path)
            except FileExistsError:
                pass  # another driver made it first: theirs is as good
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                    raise
                # No hard links on this file system: a rename is atomic too, only not exclusive.
                if not self.path.exists():
                    os.replace(temp, self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot create results store: {_sqlite_reason(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create results store: {_os_reason(exc)}") from exc
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{temp}{suffix}").unlink(missing_ok=True)

    def _migrate(self) -> None:
        """Bring a store to this version's schema and mark it as ours, in one transaction."""
        version, app = self._stamp()
        if version > SCHEMA_VERSION:
            raise StoreError(_newer(self.path, version))
        if version == SCHEMA_VERSION and app == APPLICATION_ID:
            return
        with self._write():
            # Read again under the write lock: another driver may have migrated meanwhile.
            version, app = self._stamp()
            if version == SCHEMA_VERSION and app == APPLICATION_ID:
                return
            for migration in _MIGRATIONS[version:]:
                for statement in migration.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")

    def _stamp(self) -> tuple[int, int]:
        db = self._db
        return db.execute("PRAGMA user_version").fetchone()[0], db.execute("PRAGMA application_id").fetchone()[0]

    def _write(self) -> _Transaction:
        return _Transaction(self._db, self.path)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one state of the file, even while a driver writes it."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            # SQLite ends the transaction itself on some errors (a damaged page); there is then nothing to undo.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


    # -- claims and resume ----------------------------------------------------------------

    @_reading
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

    @_reading
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- reading --------------------------------------------------------------------------

    @_reading
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
        # A store of an older schema, read without migrating it, lacks the newer columns.
        row = {key: row[key] for key in row.keys()}
        fields = {column: row.get(column) for column in _RESULT_COLUMNS}
        for integer in ("trainable_params", "total_params", "epochs_run", "batch_size"):
            if fields[integer] is not None:
                fields[integer] = int(fields[integer])
        fields["stopped_early"] = bool(fields["stopped_early"])
        return RunResult(
            run_id=run_id, status=row["status"], versions=json.loads(row.get("versions") or "{}"),
            epochs=epochs, train_indices=json.loads(row.get("train_indices") or "[]"),
            val_indices=json.loads(row.get("val_indices") or "[]"), notes=json.loads(row.get("notes") or "[]"),
            flags=[f for f in (row.get("flags") or "").split(",") if f],
            details=json.loads(row.get("details") or "{}"), **fields,
        )

    @_reading
    def frame(self, *, include_running: bool = False):
        """One row per run as a pandas DataFrame: the only input the report needs."""
        statuses = (STATUS_DONE, STATUS_FAILED, STATUS_RUNNING) if include_running else (STATUS_DONE, STATUS_FAILED)
        marks = ",".join("?" * len(statuses))
        with self._snapshot():
            frame = self._query(
                f"""SELECT *, coalesce(json_array_length(train_indices), 0) AS n_train FROM runs
                    WHERE status IN ({marks}) ORDER BY backbone, dataset, strategy_label, seed""",
                statuses,
            )
        for column in _LATER_COLUMNS:
            if column not in frame:
                frame[column] = None
        frame = frame.drop(columns=["spec", "train_indices", "val_indices", "claimed_by", "claimed_at"])
        _coerce(frame)
        frame["size_order"] = frame["size"].map(_size_order)
        frame["flags"] = frame["flags"].fillna("")
        frame["arm"] = frame["arm"].fillna("")
        frame["tuned"] = frame["tuned"].fillna("{}")
        # Missing details read as NaN in a column of text: only text is JSON.
        details = frame.pop("details").map(lambda text: json.loads(text) if isinstance(text, str) and text else {})
        # The few details the report reads become columns; the rest stay in the .db.
        for key in DETAIL_COLUMNS:
            frame[key] = _numbers(details.map(lambda d, key=key: d.get(key) if isinstance(d, dict) else None))
        return frame

    @_reading
    def epochs_frame(self):
        """Per-epoch curves joined with each run's grid coordinates."""
        with self._snapshot():
            frame = self._query(
                """SELECT e.*, r.backbone, r.weights, r.dataset, r.size, r.strategy, r.strategy_label, r.seed
                   FROM epochs e JOIN runs r USING (run_id) ORDER BY e.run_id, e.epoch""",
            )
        _coerce(frame)
        return frame

    def _query(self, sql: str, params: Sequence[Any] = ()):
        """A query's rows as a DataFrame; SQLite's own error, not pandas' wrapping of it, when it fails."""
        import pandas as pd

        cursor = self._db.execute(sql, params)
        try:
            columns = [d[0] for d in cursor.description]
            rows = [tuple(row) for row in cursor.fetchall()]
        finally:
            # A cursor kept alive by a traceback keeps the connection from closing, and its WAL files with it.
            cursor.close()
        return pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)

    @_reading
    def specs(self) -> list[RunSpec]:
        specs = []
        for run_id, text in self._db.execute("SELECT run_id, spec FROM runs"):
            try:
                specs.append(RunSpec.from_json(text))
            except (ValueError, TypeError, KeyError) as exc:
                raise StoreError(f"{self.path}: run {run_id}: stored cell cannot be read ({type(exc).__name__}); "
                                 "the store is damaged") from exc
        return specs

    def integrity_ok(self) -> bool:
        try:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        except _DAMAGE:
            return False


# Columns added by migrations after v1, absent from an older store that is read without migrating it.
_LATER_COLUMNS = ("notes", "flags", "details", "arm", "tuned")
_NUMBER_COLUMNS = tuple(c for c in _RESULT_COLUMNS if c not in ("error", "traceback", "device")) + (
    "seed", "attempts", "written_at", "n_train", "epoch", "train_loss", "train_acc", "lr", "seconds",
)
_TEXT_COLUMNS = ("run_id", "suite", "backbone", "weights", "dataset", "size", "strategy", "strategy_label", "status")


def _numbers(values):
    """Numbers as floats; anything that is not one becomes NaN."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").astype(float)


def _coerce(frame) -> None:
    """Give every column the type its schema declares, even where a damaged file stored another.

    SQLite keeps whatever type a value was written (or flipped) with; the report may then meet
    text where it expects a number. Only columns that hold an unexpected type are converted.
    """
    import pandas as pd

    for column in _NUMBER_COLUMNS:
        if column in frame and not pd.api.types.is_numeric_dtype(frame[column]):
            values = frame[column]
            if values.map(lambda v: not _missing(v) and not isinstance(v, (int, float))).any():
                frame[column] = _numbers(values)
    for column in _TEXT_COLUMNS:
        if column in frame:
            values = frame[column]
            if values.map(lambda v: not _missing(v) and not isinstance(v, str)).any():
                frame[column] = values.map(lambda v: v if isinstance(v, str) or _missing(v) else str(v))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _size_order(size: str) -> float:
    """Sort key for sizes: per-class counts and fractions ascending, ``all`` last; NaN for anything else."""
    if size == "all":
        return float("inf")
    try:
        return float(size)
    except (TypeError, ValueError):
        return float("nan")


def _short(text: str, limit: int = 200) -> str:
    """SQLite's text on one line, cut where it starts quoting the file's contents at length."""
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else f"{text[:limit]}..."


def _os_reason(exc: OSError) -> str:
    """An OS error in words, with the usual cause spelled out."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{exc.strerror} (the disk is full or a size limit was reached)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (read-only or not permitted)"
    return exc.strerror or str(exc)


def _sqlite_reason(exc: BaseException) -> str:
    """SQLite's message, with the likely cause when it is the disk or a damaged file."""
    if isinstance(exc, UnicodeDecodeError) or "Could not decode to UTF-8" in str(exc):
        return "a stored text is not valid UTF-8 (the file is damaged)"
    text = _short(str(exc) or type(exc).__name__)
    if "malformed" in text or "not a database" in text:
        return f"{text} (the file is damaged or truncated)"
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
        except _DAMAGE as exc:
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
        if isinstance(exc, _DAMAGE):
            raise StoreError(f"{self._path}: cannot write results store: {_sqlite_reason(exc)}") from exc

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk does that); nothing is left to undo then.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
