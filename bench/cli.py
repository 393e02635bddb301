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
from bench.executors import DEFAULT_EXECUTOR, EXECUTORS

DEFAULT_SUITE = Path("suites/quick.yaml")

# Exit statuses, the same for every command; scripts and schedulers read them.
EXIT_DONE, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = (
    "\b\nExit status:\n"
    "  0    every cell done\n"
    "  1    the suite ran, but some cells failed (their errors are in the store and the report)\n"
    "  2    usage, suite, data or store error: one line on stderr, no traceback\n"
    "  130  interrupted, even by the single Ctrl-C that lets running cells finish"
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help=(
        "Does transfer learning pay on your data? Cross backbones x dataset sizes x strategies "
        "(scratch, frozen, partial, full) x seeds into training runs, keep every result in "
        "results/<suite>.db, and render the verdict into reports/<suite>/.\n\n"
        "Start with:  transfer-bench run suites/quick.yaml   (then open reports/quick/index.html)\n\n"
        + EXIT_CODES
    ),
)


def _executor_choices(*, notes: bool, cluster: bool) -> str:
    """The executor names for an option's help, from the one table of them."""
    names = []
    for name, entry in EXECUTORS.items():
        if entry.cluster and not cluster:
            continue
        said = [entry.note] if notes and entry.note else []
        said += ["default"] if name == DEFAULT_EXECUTOR else []
        names.append(f"{name} ({', '.join(said)})" if said else name)
    return ", ".join(names) + "."


list_app = typer.Typer(help="Discover names a suite can use (backbones, datasets, strategies) and shipped suites.", no_args_is_help=True)
app.add_typer(list_app, name="list")


def _fail(exc: BaseException) -> None:
    text = " ".join(str(exc).splitlines())  # one line, whatever the message holds
    typer.echo(f"error: {text}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _guard(fn):
    """Turn BenchError into one line and exit status 2, and Ctrl-C into exit status 130."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

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


@app.command(epilog=EXIT_CODES)
@_guard
def run(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help=_executor_choices(notes=True, cluster=True)),
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
    from bench.runner import preflight, run_suite
    from bench.suite import load_suite

    suite = load_suite(suite_file)
    preflight(suite, results_dir)
    _estimate_line(suite, results_dir, retry_failed=retry_failed or force)
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
        raise typer.Exit(EXIT_INTERRUPTED)
    observer.close()
    state = "interrupted" if summary.interrupted else "finished"
    typer.echo(
        f"{suite.name}: {state} in {summary.wall_s:.0f} s: {summary.done} done, {summary.failed} failed this time, "
        f"{summary.already_done} already done of {summary.planned} cells -> {summary.store_path}"
    )
    for run_id, error in summary.failures[:10]:
        typer.echo(f"  failed {run_id}: {error}", err=True)
    if summary.already_failed:
        typer.echo(f"  {summary.already_failed} cell(s) failed in an earlier run; --retry-failed runs them again",
                   err=True)
    if report:
        _render_after_run(summary, reports_dir / suite.name)
    raise typer.Exit(_run_status(summary))


def _run_status(summary: Any) -> int:
    """The exit status of a run: interrupted beats failed cells, which beat success."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED_CELLS if summary.failed or summary.already_failed else EXIT_DONE


def _render_after_run(summary: Any, out: Path) -> None:
    """The report once a suite stops; after an interruption a report that cannot be made is only a note."""
    try:
        _render(summary.store_path, out)
    except BenchError as exc:
        if not summary.interrupted:
            raise
        typer.echo(f"no report: {exc}", err=True)


@app.command()
@_guard
def plan(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
    limit: int = typer.Option(50, help="Rows of the table to show (0: all)."),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="Estimate the wall time (may time a few training steps)."),
) -> None:
    """Show the expanded matrix (count, table, cells already done), downloads and an estimated wall time; run nothing."""
    from bench.runner import preflight, store_path_for
    from bench.store import ResultStore
    from bench.suite import load_suite
    from bench.survey import survey_data

    suite = load_suite(suite_file)
    preflight(suite, results_dir)
    survey = survey_data(suite)
    planned = suite.plan()
    path = store_path_for(suite, results_dir)
    statuses: dict[str, str] = {}
    if path.is_file():
        # Closed at once: a connection left to the garbage collector can leave WAL files behind.
        with ResultStore(path, readonly=True) as store:
            statuses = store.statuses()
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
    _plan_costs(suite, survey, statuses, results_dir, estimate)


def _plan_costs(suite, survey, statuses: dict[str, str], results_dir: Path, estimate: bool) -> None:
    """What a first run downloads, and how long the cells still to run should take."""
    from bench.estimate import estimate_suite, format_bytes
    from bench.survey import downloads, missing_hub_weights

    fetch = [(f"{d.name} ({format_bytes(d.download_bytes)})", d.download_bytes, str(d.root)) for d in downloads(survey)]
    fetch += [(f"{w.backbone} {w.weights} ({format_bytes(w.approx_bytes)})", w.approx_bytes, w.where)
              for w in missing_hub_weights(suite)]
    for where in dict.fromkeys(place for _, _, place in fetch):
        names = [text for text, _, place in fetch if place == where]
        typer.echo(f"download on the first run into {where}: {', '.join(names)}")
    if fetch:
        total = sum(size or 0 for _, size, _ in fetch)
        typer.echo(f"download: {format_bytes(total)} in all; offline, put the files there first or use weights file:PATH")
    if not estimate:
        return
    result = estimate_suite(suite, results_dir=results_dir, statuses=statuses, survey=survey)
    typer.echo(result.line())
    for speed in result.speeds:
        typer.echo(f"  {speed.describe()}")


def _estimate_line(suite, results_dir: Path, *, retry_failed: bool) -> None:
    """One line of estimate as a run starts; a run never waits on a failed estimate."""
    from bench.estimate import estimate_suite

    try:
        typer.echo(estimate_suite(suite, results_dir=results_dir, retry_failed=retry_failed).line())
    except BenchError as exc:
        typer.echo(f"estimate: unavailable ({exc})", err=True)


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
    out: Optional[Path] = typer.Option(None, help="Output file (default next to the store); - writes CSV to stdout."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
) -> None:
    """Write one row per run (grid coordinates, status, metrics, times, parameter counts)."""
    from bench.store import ResultStore

    if format not in ("csv", "parquet"):
        raise BenchError(f"--format {format!r}: use csv or parquet")
    to_stdout = out is not None and str(out) == "-"
    if to_stdout and format != "csv":
        raise BenchError(f"--out -: stdout takes csv; write --format {format} to a file")
    db, _ = _resolve_db(target, results_dir)
    with ResultStore(db, readonly=True) as store:
        frame = store.frame()
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


@app.command(epilog=EXIT_CODES)
@_guard
def check(
    data: str = typer.Option(..., "--data", "-d", help="An image folder (train/ and test/ of class folders, or class folders) or a dataset name."),
    backbone: str = typer.Option("resnet18", help="timm name, or torchvision:NAME."),
    weights: str = typer.Option("hub", help="hub, hub:TAG or file:PATH (offline: a local state dict)."),
    sizes: Optional[str] = typer.Option(None, help="Comma list of per-class sizes, fractions or all (default: a few up to all)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per cell; the verdict pairs transfer and scratch by seed."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help="Wall time for the whole check, e.g. 15m, 2h (default 15m on a CPU, 2h on a GPU). Defaults you did not set shrink to fit: input size, then sizes, then training per run."),
    run_budget: Optional[str] = typer.Option(None, "--run-budget", help="Training time per run, e.g. 90s (a cap on each run, not on the check)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per run (default 10)."),
    min_steps: Optional[int] = typer.Option(None, min=1, help="Optimizer steps every run makes at least (default 200)."),
    tuning: bool = typer.Option(True, help="Sweep three learning rates per arm on the first seed, chosen on validation."),
    image_size: Optional[int] = typer.Option(None, help="Input size (default: what the weights expect)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size (default 64)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help=_executor_choices(notes=False, cluster=False)),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Runs at once with the local executor."),
    name: Optional[str] = typer.Option(None, help="Suite name (default check-<data>)."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<name>.db lives."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where reports/<name>/ is written."),
) -> None:
    """Does transfer beat scratch on new data? Runs an ad-hoc suite resumably and prints the verdict."""
    from bench.check import size_check
    from bench.estimate import format_duration
    from bench.runner import run_suite
    from bench.suite import parse_duration

    size_list = [_size(s) for s in sizes.split(",")] if sizes else None
    try:
        limit_s = parse_duration(time_limit)
        run_budget_s = parse_duration(run_budget)
    except ValueError as exc:
        raise BenchError(f"--time-limit/--run-budget: {exc}") from None
    sized = size_check(
        data, limit_s=limit_s, results_dir=results_dir, backbone=backbone, weights=weights, sizes=size_list,
        seeds=seeds, budget=run_budget_s, epochs=epochs, min_steps=min_steps, tuning=tuning, image_size=image_size,
        batch_size=batch_size, device=device, name=name,
    )
    plan = sized.plan
    if plan.problems:
        typer.echo(f"{len(plan.problems)} problem(s) in the data, skipped:", err=True)
        for problem in plan.problems[:20]:
            typer.echo(f"  {problem}", err=True)
        if len(plan.problems) > 20:
            typer.echo(f"  ... and {len(plan.problems) - 20} more", err=True)
    suite = plan.suite
    typer.echo(f"{suite.name}: {plan.classes} classes (smallest has {plan.smallest_class} training images), "
               f"sizes {suite.datasets[0].sizes}, {len(suite.seeds)} seeds, backbone {backbone} ({weights})")
    for change in sized.changes:
        typer.echo(f"  to fit {format_duration(sized.limit_s).removeprefix('about ')}: {change}")
    typer.echo(sized.estimate.line())
    if not sized.fits:
        typer.echo(f"warning: the estimate is over the {format_duration(sized.limit_s).removeprefix('about ')} "
                   "time limit with the options you set; --time-limit raises it", err=True)
    observer = _ProgressBars()
    try:
        summary = run_suite(suite, results_dir=results_dir, executor=executor, jobs=jobs, observer=observer)
    except KeyboardInterrupt:
        observer.close()
        typer.echo("interrupted: finished runs are saved; run the same command again to resume", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    observer.close()
    typer.echo(f"{summary.done} done, {summary.failed} failed, {summary.already_done} already done -> {summary.store_path}")
    _render_after_run(summary, reports_dir / suite.name)
    raise typer.Exit(_run_status(summary))


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


@app.command()
def schema() -> None:
    """Print the JSON Schema of suite files, for editors: transfer-bench schema > suites/suite.schema.json"""
    import json

    from bench.suitefiles import suite_json_schema

    typer.echo(json.dumps(suite_json_schema(), indent=2))


# -- list ---------------------------------------------------------------------------------


@list_app.command("suites")
@_guard
def list_suites_command(
    directory: Path = typer.Argument(Path("suites"), help="Folder of suite files."),
) -> None:
    """Suite files in a folder: name, cells once every sweep has chosen, description."""
    from bench.suitefiles import list_suites

    rows = []
    for entry in list_suites(directory):
        if entry.error:
            rows.append((str(entry.path), entry.name, "-", f"does not load: {entry.error}"))
        else:
            rows.append((str(entry.path), entry.name, str(entry.cells), entry.description))
    typer.echo(_table(("file", "name", "cells", "description"), rows) if rows else f"no suite files in {directory}")


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
