"""transfer-bench: does transfer learning beat training from scratch on your data?

Everything the command line does is one call from Python::

    import bench
    summary = bench.run("suites/quick.yaml")
    report = bench.render("results/quick.db", "reports/quick")

(``render`` and not ``report``: ``bench.report`` is the subpackage that does the work, and a
function of that name would be replaced by it the first time the subpackage is imported.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def run(suite: str | Path | Any, **options: Any):
    """Run a suite (a path or a ``Suite``) resumably; see ``bench.execution.driver.run_suite``."""
    from bench.execution.driver import run_suite
    from bench.suite.model import Suite, load_suite

    return run_suite(suite if isinstance(suite, Suite) else load_suite(suite), **options)


def render(db: str | Path, out_dir: str | Path | None = None, **options: Any):
    """Render the report of a results store; see ``bench.report.render_report``."""
    from bench.report import render_report

    db = Path(db)
    return render_report(db, Path(out_dir) if out_dir else Path("reports") / db.stem, **options)
