"""A suite file: bounded loading with one-line errors, the ``Suite``, and its expansion into cells.

The public names are loaded on first use, so that importing one module of the package (the
plan's hashing, the YAML reader) does not build the whole model first.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODEL = "model"
_WHERE = {name: _MODEL for name in ("Suite", "load_suite", "suite_from_dict", "check_weights", "parse_duration")}
_WHERE.update({"Plan": "plan", "plan_suite": "plan", "list_suites": "files", "suite_json_schema": "files"})
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
