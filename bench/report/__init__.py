"""The report: tables, figures and the transfer-vs-scratch verdict, rendered from a results store.

Nothing here imports torch; a report renders from the ``.db`` file alone. The public names are
loaded on first use, so that ``plan`` reading one constant of a submodule does not pay for
pandas' plotting stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Report": "bench.report.render",
    "render_report": "bench.report.render",
    "crossovers": "bench.report.across",
    "verdicts": "bench.report.verdict",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench.report' has no attribute {name!r}")
