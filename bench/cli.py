"""The ``transfer-bench`` command line: thin wrappers over the library, the only place that prints.

Every user mistake surfaces as one line on stderr and exit status 2; a bug keeps its
traceback. Long work shows tqdm bars: the suite, and each running cell's epochs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from bench.errors import BenchError

DEFAULT_SUITE = Path("suites/quick.yaml")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help=(
        "Does transfer learning pay on your data? Cross backbones x dataset sizes x strategies "
        "(scratch, frozen, partial, full) x seeds into training runs, keep every result in "
        "results/<suite>.db, and render the verdict into reports/<suite>/.\n\n"
        "Start with:  transfer-bench run suites/quick.yaml   (then open reports/quick/index.html)"
    ),
)
list_app = typer.Typer(help="Discover names a suite can use: backbones, datasets, strategies.", no_args_is_help=True)
app.add_typer(list_app, name="list")


def _fail(exc: BaseException) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _guard(fn):
    """Turn BenchError into one line and exit status 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            _fail(exc)

    return wrapper


def _resolve_db(target: str, results_dir: Path) -> tuple[Path, str]:
    """A store path and suite name from a ``.db`` path, a suite file, or a suite name."""
    path = Path(target)
    if path.suffix == ".db":
        return path, path.stem
    if path.suffix in (".yaml", ".yml"):
        from bench.suite import load_suite

        suite = load_suite(path)
        return results_dir / f"{suite.name}.db", suite.name
    return results_dir / f"{target}.db", target


# -- run / plan ---------------------------------------------------------------------------


@app.command()
@_guard
def run(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help="local (a child process per run, default), inprocess, gpus, ray."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Runs at once (local: default 1; ray: default the cluster's GPUs or CPUs)."),
    per_gpu: int = typer.Option(1, "--per-gpu", min=1, help="gpus, ray: runs sharing one GPU at once."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster, 'auto' or ray://HOST:PORT (default: a local instance)."),
    max_retries: int = typer.Option(2, "--max-retries", min=0, help="ray: retries of a cell whose worker or node was lost."),
    oom_retry: bool = typer.Option(False, "--oom-retry", help="Retry a cell out of CUDA memory once at half the batch size."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed cells again."),
    force: bool = typer.Option(False, "--force", help="Run every cell again, done ones included."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where reports/<suite>/ is written."),
    report: bool = typer.Option(True, "--report/--no-report", help="Render the report when the suite ends."),
) -> None:
    """Run every cell of SUITE not yet done (resumable: re-running skips finished cells)."""
    from bench.runner import run_suite
    from bench.suite import load_suite

    suite = load_suite(suite_file)
    observer = _ProgressBars()
    try:
        summary = run_suite(
            suite, results_dir=results_dir, executor=executor, jobs=jobs,
            retry_failed=retry_failed, force=force, observer=observer,
            per_gpu=per_gpu, address=address, max_retries=max_retries, oom_retry=int(oom_retry),
        )
    except KeyboardInterrupt:
        observer.close()
        typer.echo("interrupted: finished runs are saved; run the same command again to resume", err=True)
        raise typer.Exit(130)
    observer.close()
    state = "interrupted" if summary.interrupted else "finished"
    typer.echo(
        f"{suite.name}: {state} in {summary.wall_s:.0f} s: {summary.done} done, {summary.failed} failed this time, "
        f"{summary.already_done} already done of {summary.planned} cells -> {summary.store_path}"
    )
    for run_id, error in summary.failures[:10]:
        typer.echo(f"  failed {run_id}: {error}", err=True)
    if report:
        _render(summary.store_path, reports_dir / suite.name)


@app.command()
@_guard
def plan(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
    limit: int = typer.Option(50, help="Rows of the table to show (0: all)."),
) -> None:
    """Show the expanded matrix (count, table, cells already done) without running anything."""
    from bench.runner import check_sizes, store_path_for
    from bench.store import ResultStore
    from bench.suite import load_suite

    suite = load_suite(suite_file)
    check_sizes(suite)
    planned = suite.plan()
    path = store_path_for(suite, results_dir)
    statuses = ResultStore(path, readonly=True).statuses() if path.is_file() else {}
    known = planned.runnable
    done = sum(statuses.get(c.run_id) == "done" for c in known)
    failed = sum(statuses.get(c.run_id) == "failed" for c in known)
    waiting = planned.final_count() - len(known)
    typer.echo(f"suite {suite.name}: {planned.final_count()} cells, {done} done, {failed} failed, "
               f"{len(known) - done - failed} to run" + (f", {waiting} wait for their sweep" if waiting else "")
               + f" -> {path}")
    if planned.arms:
        grid = len(planned.arms[0].points)
        typer.echo(f"tuning: {len(planned.arms)} arms sweep {grid} configurations each on seed(s) "
                   f"{', '.join(map(str, suite.tuning_seeds))}, chosen on validation accuracy; "
                   "the chosen one then runs on every seed")
    header = ("run_id", "backbone", "weights", "dataset", "size", "strategy", "tuned", "seed", "status")
    rows = [
        (c.run_id, c.backbone, c.weights, c.dataset_name, c.size, c.strategy_label,
         ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.tuned.items()) or "-",
         str(c.seed), statuses.get(c.run_id, "pending"))
        for c in known
    ]
    shown = rows if limit == 0 else rows[:limit]
    typer.echo(_table(header, shown))
    if len(shown) < len(rows):
        typer.echo(f"... {len(rows) - len(shown)} more (--limit 0 shows all)")
    for what, reason in planned.skipped:
        typer.echo(f"skipped {what}: {reason}")
    from bench.report.verdict import MIN_PAIRS_FOR_CALL

    if len(suite.seeds) < MIN_PAIRS_FOR_CALL:
        typer.echo(f"warning: {len(suite.seeds)} seed(s) cannot support any verdict: a call needs at least "
                   f"{MIN_PAIRS_FOR_CALL} paired seeds (5 or more give intervals worth quoting)", err=True)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


# -- report / export ----------------------------------------------------------------------


def _render(db: Path, out: Path) -> None:
    from bench.report import render_report

    report = render_report(db, out)
    typer.echo(f"report: {report.html_path} and {report.md_path}")
    verdict = getattr(report, "verdict", None)
    if verdict is not None and len(verdict):
        typer.echo(_verdict_lines(verdict))


def _verdict_lines(verdict) -> str:
    """The verdict as a short terminal table: one line per backbone, dataset and size."""
    from bench.report.verdict import describe_interval

    rows = []
    for _, row in verdict.iterrows():
        diff = row.get("mean_diff")
        interval = describe_interval(row)
        rows.append((
            str(row["backbone"]), str(row["dataset"]), str(row["size"]), str(row.get("best_strategy", "")),
            "" if diff != diff or diff is None else f"{100 * diff:+.1f} pts", interval,
            f"{int(row.get('wins', 0))}/{int(row.get('ties', 0))}/{int(row.get('losses', 0))}", str(row["call"]),
        ))
    header = ("backbone", "dataset", "size", "best transfer", "vs scratch", "95% CI (pts)", "W/T/L", "verdict")
    return _table(header, rows)


@app.command()
@_guard
def report(
    target: str = typer.Argument(..., metavar="SUITE_OR_DB", help="A suite file, a suite name, or a results .db file."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default reports/<suite>/)."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
) -> None:
    """Render tables, plots and the transfer-vs-scratch verdict for a suite's results."""
    db, name = _resolve_db(target, results_dir)
    _render(db, out or Path("reports") / name)


@app.command()
@_guard
def export(
    target: str = typer.Argument(..., metavar="SUITE_OR_DB", help="A suite file, a suite name, or a results .db file."),
    format: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    out: Optional[Path] = typer.Option(None, help="Output file (default next to the store)."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
) -> None:
    """Write one row per run (grid coordinates, status, metrics, times, parameter counts)."""
    from bench.store import ResultStore

    if format not in ("csv", "parquet"):
        raise BenchError(f"--format {format!r}: use csv or parquet")
    db, _ = _resolve_db(target, results_dir)
    with ResultStore(db, readonly=True) as store:
        frame = store.frame()
    destination = out or db.with_suffix(f".{format}")
    if format == "csv":
        frame.to_csv(destination, index=False)
    else:
        try:
            frame.to_parquet(destination, index=False)
        except ImportError as exc:
            raise BenchError(f"parquet export needs pyarrow: pip install pyarrow ({exc})") from None
    typer.echo(f"{len(frame)} runs -> {destination}")


@app.command()
@_guard
def check(
    data: str = typer.Option(..., "--data", "-d", help="An image folder (train/ and test/ of class folders, or class folders) or a dataset name."),
    backbone: str = typer.Option("resnet18", help="timm name, or torchvision:NAME."),
    weights: str = typer.Option("hub", help="hub, hub:TAG or file:PATH (offline: a local state dict)."),
    sizes: Optional[str] = typer.Option(None, help="Comma list of per-class sizes, fractions or all (default: a few up to all)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per cell; the verdict pairs transfer and scratch by seed."),
    budget: Optional[str] = typer.Option(None, help="Training time budget per run, e.g. 90s, 10m."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per run (default 10)."),
    min_steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps every run makes at least (default 200)."),
    tuning: bool = typer.Option(True, help="Sweep three learning rates per arm on the first seed, chosen on validation."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: what the weights expect)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size (default 64)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help="local (default), inprocess, gpus."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Runs at once with the local executor."),
    name: Optional[str] = typer.Option(None, help="Suite name (default check-<data>)."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<name>.db lives."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where reports/<name>/ is written."),
) -> None:
    """Does transfer beat scratch on new data? Runs an ad-hoc suite resumably and prints the verdict."""
    from bench.check import build_check
    from bench.runner import run_suite

    size_list = [_size(s) for s in sizes.split(",")] if sizes else None
    plan = build_check(
        data, backbone=backbone, weights=weights, sizes=size_list, seeds=seeds, budget=budget, epochs=epochs,
        min_steps=min_steps, tuning=tuning, image_size=image_size, batch_size=batch_size, device=device, name=name,
    )
    if plan.problems:
        typer.echo(f"{len(plan.problems)} problem(s) in the data, skipped:", err=True)
        for problem in plan.problems[:20]:
            typer.echo(f"  {problem}", err=True)
        if len(plan.problems) > 20:
            typer.echo(f"  ... and {len(plan.problems) - 20} more", err=True)
    suite = plan.suite
    typer.echo(f"{suite.name}: {plan.classes} classes (smallest has {plan.smallest_class} training images), "
               f"sizes {suite.datasets[0].sizes}, {len(suite.seeds)} seeds, backbone {backbone} ({weights})")
    observer = _ProgressBars()
    try:
        summary = run_suite(suite, results_dir=results_dir, executor=executor, jobs=jobs, observer=observer)
    except KeyboardInterrupt:
        observer.close()
        typer.echo("interrupted: finished runs are saved; run the same command again to resume", err=True)
        raise typer.Exit(130)
    observer.close()
    typer.echo(f"{summary.done} done, {summary.failed} failed, {summary.already_done} already done -> {summary.store_path}")
    _render(summary.store_path, reports_dir / suite.name)


def _size(text: str) -> int | float | str:
    text = text.strip()
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise BenchError(f"--sizes: {text!r} is not a size (use 10, 0.1 or all)") from None


# -- list ---------------------------------------------------------------------------------


@list_app.command("backbones")
def list_backbones_command(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*' or 'test_*'."),
    library: str = typer.Option("timm", help="timm or torchvision."),
    pretrained: bool = typer.Option(False, help="timm: list pretrained tags (name.tag) instead."),
) -> None:
    """Backbone names (timm by default; torchvision ones are written torchvision:NAME)."""
    from bench.backbones import list_backbones

    if pretrained and library == "timm":
        import timm

        names = timm.list_pretrained(pattern)
    else:
        names = list_backbones(pattern, library)
    typer.echo("\n".join(names) if names else f"no {library} backbone matches {pattern!r}")


@list_app.command("datasets")
def list_datasets_command() -> None:
    """Dataset names a suite's datasets[].name can take."""
    from bench.data import describe_datasets

    for name, text in describe_datasets().items():
        typer.echo(f"{name:16} {text}")


@list_app.command("strategies")
def list_strategies_command() -> None:
    """Strategies and their parameters."""
    from bench.strategies import STRATEGIES

    for name, strategy in STRATEGIES.items():
        params = ", ".join(f"{k}={d}" for k, (_, d) in strategy.parameters.items())
        typer.echo(f"{name:10} {strategy.summary}" + (f"  [params: {params}]" if params else ""))


# -- progress -----------------------------------------------------------------------------


class _ProgressBars:
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
