"""The report: tables, figures and the transfer-vs-scratch verdict, rendered from a results store.

Nothing here imports torch; a report renders from the ``.db`` file alone.
"""

from __future__ import annotations

from bench.report.across import crossovers
from bench.report.render import Report, render_report
from bench.report.verdict import verdicts

__all__ = ["Report", "crossovers", "render_report", "verdicts"]
