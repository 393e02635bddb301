"""The ``transfer-bench`` command line: thin wrappers over the library, the only place that prints.

Every user mistake surfaces as one line on stderr and exit status 2; a bug keeps its
traceback. Long work shows tqdm bars: the suite, and each running cell's epochs. The commands
that plan and run suites live here; ``report`` and ``export`` in ``bench.cli.results``, ``list``
and ``schema`` in ``bench.cli.discover``, and what they all print with in ``bench.cli.output``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from bench.cli.discover import list_app, schema
from bench.cli.output import (
    EXIT_CODES,
    EXIT_DONE,
    EXIT_FAILED_CELLS,
    EXIT_INTERRUPTED,
    ProgressBars,
    guard,
    render,
    table,
)
from bench.cli.results import export, report
from bench.config import DEFAULT_EXECUTOR, DEFAULT_MAX_RETRIES, DEFAULT_PER_GPU, EXECUTORS
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


@guard
def run(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help=_executor_choices(notes=True, cluster=True)),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Runs at once (local: default 1; ray: default the cluster's GPUs or CPUs)."),
    per_gpu: int = typer.Option(DEFAULT_PER_GPU, "--per-gpu", min=1, help="gpus, ray: runs sharing one GPU at once."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster, 'auto' or ray://HOST:PORT (default: a local instance)."),
    max_retries: int = typer.Option(DEFAULT_MAX_RETRIES, "--max-retries", min=0, help="ray: retries of a cell whose worker or node was lost."),
    oom_retry: bool = typer.Option(False, "--oom-retry", help="Retry a cell out of CUDA memory once at half the batch size."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed cells again."),
    force: bool = typer.Option(False, "--force", help="Run every cell again, done ones included."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
    reports_dir: Path = typer.Option(Path("reports"), help="Where reports/<suite>/ is written."),
    report: bool = typer.Option(True, "--report/--no-report", help="Render the report when the suite ends."),
    max_seeds: Optional[int] = typer.Option(
        None, "--max-seeds", min=1,
        help="Add seeds, in batches, to cells whose call is still open, up to this many (the suite's verdict.max_seeds).",
    ),
) -> None:
    """Run every cell of SUITE not yet done (resumable: re-running skips finished cells)."""
    from bench.execution.driver import preflight, run_suite
    from bench.suite.model import load_suite

    suite = load_suite(suite_file)
    if max_seeds is not None:
        suite = _with_max_seeds(suite, max_seeds)
    preflight(suite, results_dir)
    _estimate_line(suite, results_dir, retry_failed=retry_failed or force)
    observer = ProgressBars()
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


def _with_max_seeds(suite: Any, max_seeds: int) -> Any:
    """``suite`` with ``verdict.max_seeds`` set from the command line, checked as the suite file would be."""
    from bench.errors import SuiteError
    from bench.suite.model import suite_from_dict

    data = suite.model_dump(mode="json")
    data["verdict"] = {**data["verdict"], "max_seeds": max_seeds}
    try:
        return suite_from_dict(data, file=suite.source)
    except SuiteError as exc:
        raise SuiteError(f"--max-seeds {max_seeds}: {exc}") from None


def _run_status(summary: Any) -> int:
    """The exit status of a run: interrupted beats failed cells, which beat success."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED_CELLS if summary.failed or summary.already_failed else EXIT_DONE


def _render_after_run(summary: Any, out: Path) -> None:
    """The report once a suite stops; after an interruption a report that cannot be made is only a note."""
    try:
        render(summary.store_path, out)
    except BenchError as exc:
        if not summary.interrupted:
            raise
        typer.echo(f"no report: {exc}", err=True)


@guard
def plan(
    suite_file: Path = typer.Argument(DEFAULT_SUITE, metavar="SUITE", help="Suite YAML file."),
    results_dir: Path = typer.Option(Path("results"), help="Where results/<suite>.db lives."),
    limit: int = typer.Option(50, help="Rows of the table to show (0: all)."),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="Estimate the wall time (may time a few training steps)."),
) -> None:
    """Show the expanded matrix (count, table, cells already done), downloads and an estimated wall time; run nothing."""
    from bench.errors import SuiteError
    from bench.execution.driver import store_path_for
    from bench.store import ResultStore, check_store_path
    from bench.suite.model import check_weights, load_suite
    from bench.planning.survey import survey_data

    suite = load_suite(suite_file)
    check_store_path(store_path_for(suite, results_dir))
    try:
        check_weights(suite)
        unusable_weights = None
    except SuiteError as exc:
        # Refused like run refuses it, but after the plan and its estimate: what a suite would
        # cost is worth knowing before fetching the weights it needs.
        unusable_weights = exc
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
    from bench.execution.seed_rounds import worst_case

    more = worst_case(suite).plan().final_count() - planned.final_count()
    typer.echo(f"suite {suite.name}: {planned.final_count()} cells, {done} done, {failed} failed, "
               f"{len(known) - done - failed} to run" + (f", {waiting} wait for their sweep" if waiting else "")
               + f" -> {path}")
    if more:
        typer.echo(f"sequential seeds: up to {more} more cells if no call is ever made ({len(suite.seeds)} seeds "
                   f"planned, up to {suite.verdict.max_seeds} per open cell, {suite.verdict.seed_batch} at a time)")
    if planned.arms:
        grid = len(planned.arms[0].points)
        typer.echo(f"tuning: {len(planned.arms)} arms sweep {grid} configurations each on seed(s) "
                   f"{', '.join(map(str, suite.tuning_seeds))}, chosen on validation accuracy; "
                   "the chosen one then runs on every seed"
                   + (f"; a best value at the edge of its grid steps past it up to {suite.tuning.extend} times"
                      if suite.tuning.extend else ""))
    header = ("run_id", "backbone", "weights", "dataset", "size", "strategy", "tuned", "seed", "status")
    rows = [
        (c.run_id, c.backbone, c.weights, c.dataset_name, c.size, c.strategy_label,
         ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.tuned.items()) or "-",
         str(c.seed), statuses.get(c.run_id, "pending"))
        for c in known
    ]
    shown = rows if limit == 0 else rows[:limit]
    typer.echo(table(header, shown))
    if len(shown) < len(rows):
        typer.echo(f"... {len(rows) - len(shown)} more (--limit 0 shows all)")
    for what, reason in planned.skipped:
        typer.echo(f"skipped {what}: {reason}")
    from bench.report.rules import MIN_PAIRS_FOR_CALL

    if len(suite.seeds) < MIN_PAIRS_FOR_CALL:
        typer.echo(f"warning: {len(suite.seeds)} seed(s) cannot support any verdict: a call needs at least "
                   f"{MIN_PAIRS_FOR_CALL} paired seeds (5 or more give intervals worth quoting)", err=True)
    _plan_costs(suite, survey, statuses, results_dir, estimate)
    if unusable_weights is not None:
        raise unusable_weights


def _plan_costs(suite, survey, statuses: dict[str, str], results_dir: Path, estimate: bool) -> None:
    """What a first run downloads, and how long the cells still to run should take."""
    from bench.planning.estimate import estimate_suite, format_bytes
    from bench.planning.survey import downloads, missing_hub_weights

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
    for loading in result.loading:
        typer.echo(f"  {loading.detail}")


def _estimate_line(suite, results_dir: Path, *, retry_failed: bool) -> None:
    """One line of estimate as a run starts; a run never waits on a failed estimate."""
    from bench.planning.estimate import estimate_suite

    try:
        typer.echo(estimate_suite(suite, results_dir=results_dir, retry_failed=retry_failed).line())
    except BenchError as exc:
        typer.echo(f"estimate: unavailable ({exc})", err=True)


@guard
def check(
    data: str = typer.Option(..., "--data", "-d", help="An image folder (train/ and test/ of class folders, or class folders) or a dataset name."),
    backbone: str = typer.Option("resnet18", help="timm name, or torchvision:NAME."),
    weights: str = typer.Option("hub", help="hub, hub:TAG or file:PATH (offline: a local state dict)."),
    sizes: Optional[str] = typer.Option(None, help="Comma list of per-class sizes, fractions or all (default: a few up to all)."),
    seeds: int = typer.Option(3, min=1, help="Seeds per cell; the verdict pairs transfer and scratch by seed."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help="Wall time for the whole check, e.g. 15m, 2h (default 15m on a CPU, 2h on a GPU). To fit, parts you did not set are dropped, each printed: partial, size all, the learning-rate sweep, input size down to a floor, epochs beyond the minimum steps, larger sizes, full. No run is cut below its minimum steps."),
    run_anyway: bool = typer.Option(False, "--run-anyway", help="Run even when no decisive check fits --time-limit (otherwise check says how long one would take and exits 2)."),
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
    from bench.execution.driver import run_suite, store_path_for
    from bench.planning.check import record_fit, size_check
    from bench.planning.estimate import format_duration
    from bench.suite.model import parse_duration

    size_list = [_size(s) for s in sizes.split(",")] if sizes else None
    try:
        limit_s = parse_duration(time_limit)
        run_budget_s = parse_duration(run_budget)
    except ValueError as exc:
        raise BenchError(f"--time-limit/--run-budget: {exc}") from None

    def conceded(name: str, text: str) -> None:
        typer.echo(f"  to fit the time limit: {text}")

    sized = size_check(
        data, limit_s=limit_s, results_dir=results_dir, on_change=conceded, backbone=backbone, weights=weights,
        sizes=size_list, seeds=seeds, budget=run_budget_s, epochs=epochs, min_steps=min_steps, tuning=tuning,
        image_size=image_size, batch_size=batch_size, device=device, name=name,
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
    typer.echo(sized.estimate.line())
    room = " and room for every sweep to step past its grid's edge" if sized.fit.shape.tuning else ""
    typer.echo(f"  {format_duration(sized.seconds)} with the time spent timing this machine{room}; "
               f"the time limit is {format_duration(sized.limit_s).removeprefix('about ')}")
    if not sized.fits:
        _too_long(sized, run_anyway)
    record_fit(sized, store_path_for(suite, results_dir))
    observer = ProgressBars()
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


def _too_long(sized, run_anyway: bool) -> None:
    """Before anything runs: how long the smallest check the fitter reached takes here, and what would make it fit."""
    import math

    from bench.planning.estimate import format_duration

    need, limit = sized.seconds, sized.limit_s
    kept = [f"--{k.replace('_', '-')}" for k in sorted(sized.fit.shape.fixed) if k != "tuning"]
    held = f" (options you set were kept: {', '.join(kept)})" if kept else ""
    typer.echo(
        f"does not fit: the smallest decisive check ({sized.decisive()}) would take "
        f"{format_duration(need)} on {sized.estimate.device}, over the {format_duration(limit).removeprefix('about ')} "
        f"time limit{held}", err=True)
    ways = [f"--time-limit {math.ceil(need * 1.1 / 60)}m", "a smaller backbone (--backbone)"]
    if sized.estimate.device == "cpu":
        ways.append("a GPU (--device cuda)")
    typer.echo(f"to fit: {', or '.join(ways)}; --run-anyway runs it as it is", err=True)
    if not run_anyway:
        raise typer.Exit(2)


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


# ``--help`` lists the commands in the order they are registered here.
app.command(epilog=EXIT_CODES)(run)
app.command()(plan)
app.command()(report)
app.command()(export)
app.command(epilog=EXIT_CODES)(check)
app.command()(schema)
app.add_typer(list_app, name="list")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
