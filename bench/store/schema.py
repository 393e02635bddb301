"""The store's tables, the migrations that build them, and the type each column holds.

Each migration takes a store from version i to i + 1; ``PRAGMA user_version`` records where a
file stands, so an old results file keeps opening after the schema grows.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

from bench.errors import StoreError
from bench.store.failures import Transaction

RESULT_COLUMNS = (
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
    {", ".join(f"{c} {'TEXT' if c in ('error', 'traceback', 'device') else 'REAL'}" for c in RESULT_COLUMNS)},
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

# Columns added by migrations after v1, absent from an older store that is read without migrating it.
LATER_COLUMNS = ("notes", "flags", "details", "arm", "tuned")
_NUMBER_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in ("error", "traceback", "device")) + (
    "seed", "attempts", "written_at", "n_train", "epoch", "train_loss", "train_acc", "lr", "seconds",
)
_TEXT_COLUMNS = ("run_id", "suite", "backbone", "weights", "dataset", "size", "strategy", "strategy_label", "status")


def upgrade(db: sqlite3.Connection, version: int = 0) -> None:
    """Run the migrations after ``version`` and stamp the header as a store of this version."""
    _apply(db, _MIGRATIONS[version:])
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a store to this version's schema and mark it as ours, in one transaction."""
    version, app = _stamp(db)
    if version > SCHEMA_VERSION:
        raise StoreError(newer(path, version))
    if version == SCHEMA_VERSION and app == APPLICATION_ID:
        return
    with Transaction(db, path):
        # Read again under the write lock: another driver may have migrated meanwhile.
        version, app = _stamp(db)
        if version == SCHEMA_VERSION and app == APPLICATION_ID:
            return
        upgrade(db, version)


def _stamp(db: sqlite3.Connection) -> tuple[int, int]:
    return db.execute("PRAGMA user_version").fetchone()[0], db.execute("PRAGMA application_id").fetchone()[0]


def _apply(db: sqlite3.Connection, migrations: tuple[str, ...]) -> None:
    for migration in migrations:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)


@functools.lru_cache(maxsize=None)
def schema_columns(version: int) -> dict[str, frozenset[str]]:
    """The columns of each table of a store at schema ``version``, from the migrations themselves."""
    db = sqlite3.connect(":memory:")
    try:
        _apply(db, _MIGRATIONS[:version])
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: frozenset(row[1] for row in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        db.close()


def newer(path: Path, version: int) -> str:
    """What to say about a store a newer transfer-bench wrote."""
    return f"{path}: store schema v{version} is newer than this transfer-bench (v{SCHEMA_VERSION}); upgrade it"


def numbers(values):
    """Numbers as floats; anything that is not one becomes NaN."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").astype(float)


def coerce(frame) -> None:
    """Give every column the type its schema declares, even where a damaged file stored another.

    SQLite keeps whatever type a value was written (or flipped) with; the report may then meet
    text where it expects a number. Only columns that hold an unexpected type are converted.
    """
    import pandas as pd

    for column in _NUMBER_COLUMNS:
        if column in frame and not pd.api.types.is_numeric_dtype(frame[column]):
            values = frame[column]
            if values.map(lambda v: not _missing(v) and not isinstance(v, (int, float))).any():
                frame[column] = numbers(values)
    for column in _TEXT_COLUMNS:
        if column in frame:
            values = frame[column]
            if values.map(lambda v: not _missing(v) and not isinstance(v, str)).any():
                frame[column] = values.map(lambda v: v if isinstance(v, str) or _missing(v) else str(v))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
