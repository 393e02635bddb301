"""Recognising a results file and opening it without harming it.

A store says what it is in its header (``application_id`` and ``user_version``), so a file that
is not one, or is from a newer version, is refused before SQLite writes a byte of it. A new
store appears whole, a reader never writes, and a failed open takes away the WAL files it made
and the temporaries a killed process left, but nothing another process may be using.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sqlite3
import time
import urllib.parse
import uuid
from pathlib import Path

from bench.errors import StoreError
from bench.procs import pid_alive
from bench.store.failures import DAMAGE, os_reason, release_cursors, short, sqlite_reason
from bench.store.schema import APPLICATION_ID, SCHEMA_VERSION, migrate, newer, schema_columns, upgrade

# A suite's results live in one file, ``<results dir>/<suite name>.db``.
STORE_SUFFIX = ".db"
# How long opening waits for another driver's lock before it gives up.
OPEN_TIMEOUT_S = 30.0

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


def suite_store_path(results_dir: str | os.PathLike[str], suite_name: str) -> Path:
    """Where the results of the suite named ``suite_name`` live under ``results_dir``."""
    return Path(results_dir) / f"{suite_name}{STORE_SUFFIX}"


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
        # Recognised, of a version this one reads, undamaged.
        open_store(path, readonly=True, timeout_s=OPEN_TIMEOUT_S).close()
        if not os.access(path, os.W_OK):
            raise StoreError(f"{path}: results store is read-only")


def open_store(path: Path, *, readonly: bool, timeout_s: float) -> sqlite3.Connection:
    """A checked connection to the store at ``path``; for writing, the store is made or migrated first."""
    if readonly:
        if not path.is_file():
            raise StoreError(f"{path}: no results store here (run the suite first)")
        recognise(path)
    else:
        check_store_path(path)
        _prepare_folder(path)
        if not path.exists():
            _create(path)
    existed = _sidecars(path)
    db: sqlite3.Connection | None = None
    try:
        if readonly:
            db = _open_for_reading(path, timeout_s, existed)
        else:
            db = _connect(path, _uri(path, "mode=rw"), timeout_s, readonly=False)
            migrate(db, path)
        _verify(db, path)
    except BaseException:
        if db is not None:
            db.close()
        _remove_unused_sidecars(path, existed)
        raise
    return db


def recognise(path: Path) -> int:
    """The schema version of the store at ``path``; StoreError for anything that is not one we can use.

    Reads the header's bytes directly; only a file from before the header carried the
    application id is opened with SQLite, as immutable or read-only, which writes nothing.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read results store: {os_reason(exc)}") from exc
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
        raise StoreError(newer(path, version))
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
    except DAMAGE as exc:
        release_cursors(exc)
        raise StoreError(f"{path}: cannot read results store: {sqlite_reason(exc)}") from exc
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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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


def _connect(path: Path, target: str, timeout_s: float, *, readonly: bool) -> sqlite3.Connection:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _open(target, timeout_s, readonly=readonly)
        except sqlite3.OperationalError as exc:
            # Switching to WAL needs a moment alone with the file and does not wait on the busy
            # timeout: a second driver opening the same store at once just tries again.
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise StoreError(f"{path}: cannot open results store: {sqlite_reason(exc)}") from exc
            time.sleep(0.05)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path}: cannot open results store: {sqlite_reason(exc)}") from exc


def _open(target: str, timeout_s: float, *, readonly: bool) -> sqlite3.Connection:
    db = sqlite3.connect(target, timeout=timeout_s, uri=True, isolation_level=None)
    try:
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        if readonly:
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


def _open_for_reading(path: Path, timeout_s: float, existed: set[str]) -> sqlite3.Connection:
    """A connection that never writes: read-write mode when allowed, else read-only, else immutable.

    A read-write connection that only reads is what lets SQLite remove the WAL files it
    made when it closes; a read-only one would leave them behind. Where neither the file nor
    its folder can be written (a read-only mount, an immutable file), ``mode=ro`` still reads
    a store that a writer has open, and with no WAL beside the file nothing can be writing
    it, so reading it as immutable is safe.
    """
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if writable:
        try:
            return _connect(path, _uri(path, "mode=rw"), timeout_s, readonly=True)
        except StoreError:
            _remove_unused_sidecars(path, existed)
    wal = Path(f"{path}-wal")
    return _connect(path, _uri(path, "mode=ro" if wal.exists() else "immutable=1"), timeout_s, readonly=True)


def _verify(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file or one a newer version wrote, with what was found."""
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(newer(path, version))
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise StoreError(f"{path}: results store is damaged ({short(problem)}); restore it from a copy")
        # A damaged schema can rename a column and still pass the check; what every reader needs must be there.
        for table, needed in schema_columns(min(version, SCHEMA_VERSION)).items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if needed - have:
                missing = ", ".join(sorted(needed - have)[:5])
                raise StoreError(f"{path}: results store is damaged: table '{table}' has no {missing}; "
                                 "restore it from a copy")
    except DAMAGE as exc:
        release_cursors(exc)
        raise StoreError(f"{path}: cannot read results store: {sqlite_reason(exc)}") from exc


def _prepare_folder(path: Path) -> None:
    """Create the results folder, then write to it: os.access says yes to root on a read-only mount or a full disk."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{folder}: cannot create results folder: {exc.strerror or exc}") from exc
    _remove_stale_temporaries(folder, path.name)
    probe = folder / f".{path.name}.probe-{_temp_tag()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 8192)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise StoreError(f"{folder}: results folder cannot be written: {os_reason(exc)}") from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _create(path: Path) -> None:
    """Build a complete new store beside the path, then link it into place.

    The file appears whole, header and schema included, so no other process ever sees an
    empty or half-made store; when two drivers create one at once, the first link wins and
    the other opens it.
    """
    temp = path.parent / f".{path.name}.new-{_temp_tag()}"
    try:
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            upgrade(db)
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another driver made it first: theirs is as good
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            # No hard links on this file system: a rename is atomic too, only not exclusive.
            if not path.exists():
                os.replace(temp, path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot create results store: {sqlite_reason(exc)}") from exc
    except OSError as exc:
        raise StoreError(f"{path}: cannot create results store: {os_reason(exc)}") from exc
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{temp}{suffix}").unlink(missing_ok=True)
