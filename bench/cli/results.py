"""``report`` and ``export``: what a suite's results store holds, as a report or as a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from bench.cli.output import guard, render
from bench.errors import BenchError
from bench.store import STORE_SUFFIX, suite_store_path


def resolve_db(target: str, results_dir: Path) -> tuple[Path, str]:
    """A store path and suite name from a ``.db`` path, a suite file, or a suite name."""
    path = Path(target)
    if path.suffix == STORE_SUFFIX:
        return path, path.stem
    if path.suffix in (".yaml", ".yml"):
        from bench.suite.model import load_suite

        suite = load_suite(path)
        return suite_store_path(results_dir, suite.name), suite.name
    return suite_store_path(results_dir, target), target


@guard
def report(
    target: str = typer.Argument(..., metavar="SUITE_OR_DB", help="A suite file, a suite name, or a results .db file."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default reports/<suite>/)."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
) -> None:
    """Render tables, plots and the transfer-vs-scratch verdict for a suite's results."""
    db, name = resolve_db(target, results_dir)
    render(db, out or Path("reports") / name)


@guard
def export(
    target: str = typer.Argument(..., metavar="SUITE_OR_DB", help="A suite file, a suite name, or a results .db file."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    out: Optional[Path] = typer.Option(None, help="Output file (default next to the store); - writes CSV to stdout."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
) -> None:
    """Write one row per run (grid coordinates, status, metrics, times, parameter counts).

    The column final is true for the runs the report's verdict and tables read: every run of an
    untuned arm, and a tuned arm's chosen configuration on every seed. The sweep's other points
    are false: filter on final to get the report's runs without re-deriving the choice.
    """
    from bench.store import ResultStore
    from bench.report.decide import mark_final

    if format not in ("csv", "parquet"):
        raise BenchError(f"--format {format!r}: use csv or parquet")
    to_stdout = out is not None and str(out) == "-"
    if to_stdout and format != "csv":
        raise BenchError(f"--out -: stdout takes csv; write --format {format} to a file")
    db, _ = resolve_db(target, results_dir)
    with ResultStore(db, readonly=True) as store:
        frame = mark_final(store.frame(), store.get_meta("suite"))
    if to_stdout:
        frame.to_csv(sys.stdout, index=False)
        return
    destination = out or db.with_suffix(f".{format}")
    if format == "csv":
        frame.to_csv(destination, index=False)
    else:
        try:
            frame.to_parquet(destination, index=False)
        except ImportError as exc:
            raise BenchError(f"parquet export needs pyarrow: pip install pyarrow ({exc})") from None
    typer.echo(f"{len(frame)} runs -> {destination}")
