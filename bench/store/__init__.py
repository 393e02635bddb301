"""The SQLite results store: one file per suite, one row per run, one transaction per result.

- ``schema``: the tables, their migrations and the type each column holds
- ``files``: recognising a results file by its header and opening it without harming it
- ``claims``: owner ids and whether a claim's driver still lives
- ``failures``: SQLite's and the OS's failures as one StoreError line; transactions
- ``results``: ``ResultStore``, its claims, writes, reads and ``frame()``

This package must not import torch: a report renders from the ``.db`` file alone.
"""

from __future__ import annotations

from bench.store.claims import STALE_CLAIM_S, owner_id, retire_owner
from bench.store.files import STORE_SUFFIX, check_store_path, suite_store_path
from bench.store.results import DETAIL_COLUMNS, ResultStore
from bench.store.schema import APPLICATION_ID, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "DETAIL_COLUMNS",
    "SCHEMA_VERSION",
    "STALE_CLAIM_S",
    "STORE_SUFFIX",
    "ResultStore",
    "check_store_path",
    "owner_id",
    "retire_owner",
    "suite_store_path",
]
