"""The results of one suite in one SQLite file: claims, writes and reads.

The driver process is the only writer. Cells are claimed before they run (``status =
'running'``, owner and heartbeat) so two drivers on one suite never run a cell twice, and a
claim whose owner died is free again. Readers (report, export) use WAL snapshots and never
block the writer, and can read a store they may not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
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
from bench.store.claims import claim_live
from bench.store.failures import DAMAGE, Transaction, reading
from bench.store.files import OPEN_TIMEOUT_S, open_store
from bench.store.schema import LATER_COLUMNS, RESULT_COLUMNS, coerce, numbers

# Details of a run the report reads as columns of ``frame()``: numbers, then words.
DETAIL_COLUMNS = ("probe_l2", "logme")
DETAIL_TEXT_COLUMNS = ("probe_scaling",)


class ResultStore:
    """Results of one suite in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout_s: float = OPEN_TIMEOUT_S):
        self.path = Path(path)
        self.readonly = readonly
        self._db = open_store(self.path, readonly=readonly, timeout_s=timeout_s)

    def _write(self) -> Transaction:
        return Transaction(self._db, self.path)

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

    @reading
    def statuses(self) -> dict[str, str]:
        """Map every stored run id to its status, with dead claims reported as pending."""
        now = time.time()
        out: dict[str, str] = {}
        for row in self._db.execute("SELECT run_id, status, claimed_by, claimed_at FROM runs"):
            status = row["status"]
            if status == STATUS_RUNNING and not claim_live(row["claimed_by"], row["claimed_at"], now):
                status = "pending"
            out[row["run_id"]] = status
        return out

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
                if status == STATUS_RUNNING and row["claimed_by"] != owner and claim_live(
                    row["claimed_by"], row["claimed_at"], now
                ):
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
        values = [getattr(result, column) for column in RESULT_COLUMNS]
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
                f"""UPDATE runs SET status = ?, {", ".join(f"{c} = ?" for c in RESULT_COLUMNS)},
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

    @reading
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- reading --------------------------------------------------------------------------

    @reading
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
        fields = {column: row.get(column) for column in RESULT_COLUMNS}
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

    @reading
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
        for column in LATER_COLUMNS:
            if column not in frame:
                frame[column] = None
        frame = frame.drop(columns=["spec", "train_indices", "val_indices", "claimed_by", "claimed_at"])
        coerce(frame)
        frame["size_order"] = frame["size"].map(_size_order)
        frame["flags"] = frame["flags"].fillna("")
        frame["arm"] = frame["arm"].fillna("")
        frame["tuned"] = frame["tuned"].fillna("{}")
        # Missing details read as NaN in a column of text: only text is JSON.
        details = frame.pop("details").map(lambda text: json.loads(text) if isinstance(text, str) and text else {})
        # The few details the report reads become columns; the rest stay in the .db.
        for key in DETAIL_COLUMNS:
            frame[key] = numbers(details.map(lambda d, key=key: d.get(key) if isinstance(d, dict) else None))
        for key in DETAIL_TEXT_COLUMNS:
            frame[key] = details.map(lambda d, key=key: d.get(key) if isinstance(d, dict) and isinstance(d.get(key), str)
                                     else None)
        return frame

    @reading
    def epochs_frame(self):
        """Per-epoch curves joined with each run's grid coordinates."""
        with self._snapshot():
            frame = self._query(
                """SELECT e.*, r.backbone, r.weights, r.dataset, r.size, r.strategy, r.strategy_label, r.seed
                   FROM epochs e JOIN runs r USING (run_id) ORDER BY e.run_id, e.epoch""",
            )
        coerce(frame)
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

    @reading
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
        except DAMAGE:
            return False


def _size_order(size: str) -> float:
    """Sort key for sizes: per-class counts and fractions ascending, ``all`` last; NaN for anything else."""
    if size == "all":
        return float("inf")
    try:
        return float(size)
    except (TypeError, ValueError):
        return float("nan")
