"""What a failing disk or a damaged file raises, said as one StoreError line with its likely cause.

Writes go through ``Transaction`` and reads through ``reading``, so no SQLite error, OS error or
undecodable text reaches the user as a traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import sqlite3
import traceback
from pathlib import Path
from typing import Any

from bench.errors import StoreError

# What reading a damaged file raises: SQLite's errors, and text that is not UTF-8 (even in SQLite's own messages).
DAMAGE = (sqlite3.Error, UnicodeDecodeError)


def release_cursors(exc: BaseException) -> None:
    """Free the cursors an error's traceback holds: while one lives its connection cannot really
    close, and the WAL files SQLite made stay beside the store."""
    traceback.clear_frames(exc.__traceback__)


def short(text: str, limit: int = 200) -> str:
    """SQLite's text on one line, cut where it starts quoting the file's contents at length."""
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else f"{text[:limit]}..."


def os_reason(exc: OSError) -> str:
    """An OS error in words, with the usual cause spelled out."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{exc.strerror} (the disk is full or a size limit was reached)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror} (read-only or not permitted)"
    return exc.strerror or str(exc)


def sqlite_reason(exc: BaseException) -> str:
    """SQLite's message, with the likely cause when it is the disk or a damaged file."""
    if isinstance(exc, UnicodeDecodeError) or "Could not decode to UTF-8" in str(exc):
        return "a stored text is not valid UTF-8 (the file is damaged)"
    text = short(str(exc) or type(exc).__name__)
    if "malformed" in text or "not a database" in text:
        return f"{text} (the file is damaged or truncated)"
    if "full" in text or "I/O error" in text:
        return f"{text} (is the disk full?); results written before this are intact"
    if "readonly" in text or "read-only" in text:
        return f"{text} (the results folder or file is read-only)"
    return text


def reading(method):
    """Turn what a damaged file raises while a store's method reads it into one StoreError line."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DAMAGE as exc:
            release_cursors(exc)
            raise StoreError(f"{self.path}: cannot read results store: {sqlite_reason(exc)}") from exc
        except json.JSONDecodeError as exc:
            release_cursors(exc)
            raise StoreError(f"{self.path}: a stored value is not valid JSON ({exc.msg}); the store is damaged") from exc

    return wrapper


class Transaction:
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
        except DAMAGE as exc:
            raise StoreError(f"{self._path}: cannot write results store: {sqlite_reason(exc)}") from exc

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as commit_exc:
                self._rollback()
                reason = sqlite_reason(commit_exc)
                raise StoreError(f"{self._path}: cannot write results store: {reason}") from commit_exc
        self._rollback()
        if isinstance(exc, DAMAGE):
            raise StoreError(f"{self._path}: cannot write results store: {sqlite_reason(exc)}") from exc

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (a full disk does that); nothing is left to undo then.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
