"""What the command line shows: one-line errors and exit statuses, tables, the verdict, progress bars.

The pieces every command shares; the command line is the only place that prints and picks exit codes.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import typer

from bench.errors import BenchError

# Exit statuses, the same for every command; scripts and schedulers read them.
EXIT_DONE, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = (
    "\b\nExit status:\n"
    "  0    every cell done\n"
    "  1    the suite ran, but some cells failed (their errors are in the store and the report)\n"
    "  2    usage, suite, data or store error: one line on stderr, no traceback; or a check that\n"
    "       cannot fit --time-limit: what it would take, before anything runs\n"
    "  130  interrupted, even by the single Ctrl-C that lets running cells finish"
)


def fail(exc: BaseException) -> None:
    """A user's mistake as one line on stderr, and exit status 2."""
    text = " ".join(str(exc).splitlines())  # one line, whatever the message holds
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(EXIT_USAGE)


def guard(fn):
    """Turn BenchError into one line and exit status 2, and Ctrl-C into exit status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            fail(exc)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell under a header and a rule."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def render(db: Path, out: Path) -> None:
    """Render a store's report, then say where it went and show the verdict."""
    from bench.report import render_report

    report = render_report(db, out)
    typer.echo(f"report: {report.html_path} and {report.md_path}")
    verdict = getattr(report, "verdict", None)
    if verdict is not None and len(verdict):
        typer.echo(verdict_lines(verdict))


def verdict_lines(verdict) -> str:
    """The verdict as a short terminal table, one line per backbone, dataset and size; then why any is inconclusive.

    A suite that also runs a compute-matched scratch has a row per size against each baseline:
    the table then says which baseline each row is against.
    """
    from bench.report.rules import CALL_INCONCLUSIVE, CALL_TOO_FEW, CALL_UNCLEAR
    from bench.report.tables import SCRATCH
    from bench.report.wording import describe_interval, detect_clause, inconclusive_reason, pts

    baselines = list(dict.fromkeys(verdict["baseline"])) if "baseline" in verdict else [SCRATCH]
    several = len(baselines) > 1
    rows, reasons = [], []
    for _, row in verdict.iterrows():
        baseline = str(row.get("baseline", SCRATCH))
        if row["call"] == CALL_INCONCLUSIVE:
            against = f" vs {baseline}" if baseline != SCRATCH else ""
            where = f"{row['backbone']} {row['dataset']} {row['size']}{against}"
            reasons.append(f"{where}: inconclusive: {inconclusive_reason(row)}")
        elif row["call"] in (CALL_UNCLEAR, CALL_TOO_FEW) and (detect := detect_clause(row)):
            reasons.append(f"{row['backbone']} {row['dataset']} {row['size']}: {row['call']}: {detect}")
        if row.get("stopped"):
            reasons.append(f"{row['backbone']} {row['dataset']} {row['size']}: {int(row['n_pairs'])} paired seeds, "
                           f"{row['stopped']}")
        mde = row.get("mde")
        diff = row.get("mean_diff")
        interval = describe_interval(row)
        rows.append((
            str(row["backbone"]), str(row["dataset"]), str(row["size"]), str(row.get("best_strategy", "")),
            *([baseline] if several else []),
            "" if diff is None or diff != diff else pts(diff), interval,
            f"{int(row.get('wins', 0))}/{int(row.get('ties', 0))}/{int(row.get('losses', 0))}",
            "" if mde is None or mde != mde else f"{mde * 100:.1f}", str(row["call"]),
        ))
    against = ("against", "gain (pts)") if several else (f"vs {SCRATCH}",)
    header = ("backbone", "dataset", "size", "best transfer", *against, "95% CI (pts)", "W/T/L", "detects (pts)",
              "verdict")
    return "\n".join([table(header, rows), *reasons])


class ProgressBars:
    """tqdm bars for the runner: the suite, plus one epoch bar per running job."""

    def __init__(self) -> None:
        self.suite_bar = None
        self.bars: dict[str, Any] = {}
        self.done = self.failed = 0

    def suite_started(self, suite, total: int, done: int, todo: int) -> None:
        from tqdm import tqdm

        typer.echo(f"{suite.name}: {total} cells, {done} already done, {todo} to run")
        self.suite_bar = tqdm(total=todo, desc=suite.name, unit="run", dynamic_ncols=True, position=0)

    def job_started(self, job) -> None:
        from tqdm import tqdm

        used = {bar.pos for bar in self.bars.values()}
        position = next(i for i in range(1, 64) if i not in used and -i not in used)
        self.bars[job.key] = tqdm(desc=f"  {job.label}", unit="ep", leave=False, dynamic_ncols=True, position=position)

    def job_event(self, job, event: dict[str, Any]) -> None:
        bar = self.bars.get(job.key)
        if bar is None or event.get("type") != "epoch":
            return
        bar.total = event["total"]
        val = event.get("val_acc")
        bar.set_postfix(loss=f"{event['train_loss']:.3f}", val=f"{val:.3f}" if val is not None else "-", refresh=False)
        bar.update(1)

    def job_finished(self, job, result, outcome) -> None:
        from tqdm import tqdm

        bar = self.bars.pop(job.key, None)
        if bar is not None:
            bar.close()
        if job.kind == "pretrain":
            info = outcome.value or {}
            if outcome.error:
                tqdm.write(f"x {job.label}: {outcome.error}")
            elif info.get("cached"):
                tqdm.write(f"= {job.label}: reusing {info.get('path')}")
            else:
                tqdm.write(f"+ {job.label}: source test acc {info.get('source_test_acc', float('nan')):.3f} "
                           f"in {info.get('wall_s', 0):.0f} s")
            return
        if result is None:
            tqdm.write(f"- {job.label}: {outcome.error} (left pending)")
            return
        if result.status == "done":
            self.done += 1
            tqdm.write(
                f"+ {job.label}: test acc {result.test_acc:.3f}  val {result.val_acc or float('nan'):.3f}  "
                f"{result.wall_s:.1f} s  {result.trainable_params:,} trainable params"
            )
        else:
            self.failed += 1
            tqdm.write(f"x {job.label}: {result.error}")
        if self.suite_bar is not None:
            self.suite_bar.set_postfix(done=self.done, failed=self.failed, refresh=False)
            self.suite_bar.update(1)

    def note(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        if self.suite_bar is not None:
            self.suite_bar.close()

