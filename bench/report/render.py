"""Render a results store into one self-contained HTML page, a Markdown twin, CSVs and figures.

This module assembles the report: it loads the store, computes every table and figure, and
hands the sections to the writers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.errors import BenchError, ReportError
from bench.planning.fitting import FITTED_META
from bench.report.across import across_datasets, cell_gains, crossovers, logme_models, logme_ranking
from bench.report.cells import group_cells
from bench.report.decide import final_frame, verdict_seeds
from bench.report.equivalent import scratch_equivalents
from bench.report.plotkit import save_plot
from bench.report.plots import PLOT_NAMES, build_plots
from bench.report.rules import DEFAULT_MIN_EFFECT
from bench.report.sections import build_sections
from bench.report.tables import (
    SCRATCH,
    Progress,
    cost_table,
    environment_table,
    failed_table,
    probe_table,
    progress,
    results_table,
    training_version_warning,
    versions_table,
)
from bench.report.verdict import arm_verdicts, verdicts
from bench.report.wording import plural
from bench.report.writers import html_page, markdown_page, write_text
from bench.store import ResultStore
from bench.tuning import tuning_summary


@dataclass
class Report:
    """Where a rendered report lives and what it found."""

    out_dir: Path
    html_path: Path
    md_path: Path
    verdict: pd.DataFrame
    crossover: pd.DataFrame
    partial: bool
    n_done: int
    n_failed: int
    planned: int | None = None
    plots: list[str] = field(default_factory=list)


def _load(db_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, int]:
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no results store")
    try:
        with ResultStore(db_path, readonly=True) as store:
            frame = store.frame()
            epochs = store.epochs_frame()
            meta = {"suite": store.get_meta("suite"), "planned": store.get_meta("planned"),
                    "planned_ids": store.get_meta("planned_ids"), "added_ids": store.get_meta("added_ids"),
                    "fitted": store.get_meta(FITTED_META)}
            n_running = sum(1 for status in store.statuses().values() if status == "running")
    except BenchError as exc:
        raise ReportError(str(exc)) from exc
    return frame, epochs, meta, n_running


def _in_current_plan(
    frame: pd.DataFrame, planned_ids: object, seeds: list[int], added_ids: object = None
) -> pd.Series | None:
    """Which runs belong to the suite as last run, from the cell ids it stored; None when it stored none.

    A tuned arm's final cells are not known until its sweep has chosen, so a run also belongs when
    its arm is one of the planned cells' arms and its seed one of the suite's seeds (the seeds it
    may add included); so does every cell the driver added where a call was open (``added_ids``).
    """
    if not isinstance(planned_ids, list) or frame.empty:
        return None
    ids = {str(run_id) for run_id in [*planned_ids, *(added_ids if isinstance(added_ids, list) else [])]}
    planned = frame["run_id"].isin(ids)
    arms = set(frame.loc[planned & (frame["arm"] != ""), "arm"])
    return planned | (frame["arm"].isin(arms) & frame["seed"].isin(seeds))


def _banners(prog: Progress, frame: pd.DataFrame) -> list[tuple[str, str]]:
    banners = []
    if prog.partial:
        banners.append(("partial", prog.sentence()))
    if prog.n_failed:
        banners.append(("warn", f"{plural(prog.n_failed, 'run')} failed; see Failed runs below."))
    warning = training_version_warning(frame)
    if warning:
        banners.append(("warn", warning))
    return banners


def _fitted_banners(fitted: object) -> list[tuple[str, str]]:
    """What ``check`` gave up to fit its time limit, first on the page: the answer is to a smaller question."""
    if not isinstance(fitted, dict) or not fitted.get("changes"):
        return []
    limit = float(fitted.get("limit_s") or 0) / 60
    changes = "; ".join(str(c.get("text", "")) for c in fitted["changes"] if isinstance(c, dict))
    return [("fitted", f"To fit its {limit:.3g} min time limit, the check changed what was left at its default: "
                       f"{changes}. No run was cut below its minimum steps.")]


def _min_effect(config: dict, db_path: Path) -> float:
    """The suite's minimum effect for a call (a fraction; 0.01 is one point), else the default."""
    value = (config.get("verdict") or {}).get("min_effect", DEFAULT_MIN_EFFECT)
    try:
        effect = float(value)
    except (TypeError, ValueError):
        effect = math.nan
    if not 0.0 <= effect < 1.0:
        raise ReportError(f"{db_path}: suite verdict.min_effect is {value!r}; expected a fraction in [0, 1)")
    return effect



def _baselines(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The frame the main verdict reads (plain scratch as the baseline) and one per compute-matched scratch.

    A suite may run scratch with a longer schedule (``scratch[budget=3]``) beside plain scratch.
    Each scratch variant is a baseline of its own: transfer is compared with each in turn, never
    with their mixture.
    """
    scratch = frame["strategy"] == SCRATCH
    labels = sorted(set(frame.loc[scratch, "strategy_label"]) - {SCRATCH})
    if not labels:
        return frame, {}
    matched = {label: frame[~scratch | (frame["strategy_label"] == label)] for label in labels}
    main = frame[~scratch | (frame["strategy_label"] == SCRATCH)]
    return main, matched


def render_report(
    db_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, title: str | None = None
) -> Report:
    """Render the store at ``db_path`` into ``out_dir``: index.html, report.md, tables/, plots/.

    Raises ReportError (one line) when the store is missing or unreadable, when it holds no
    done or failed run, or when the report folder cannot be written.
    """
    db_path = Path(db_path)
    out = Path(out_dir)
    frame, epochs, meta, n_running = _load(db_path)
    if frame.empty:
        raise ReportError(f"{db_path}: no finished runs yet")
    # The driver stores the whole suite config; older or hand-made stores may hold just a name.
    config = meta["suite"] if isinstance(meta["suite"], dict) else {"name": meta["suite"]}
    suite = config.get("name") or (str(frame["suite"].iloc[0]) if "suite" in frame else db_path.stem)
    title = title or f"transfer-bench report: {suite}"
    seeds, tuning_seeds, design = verdict_seeds(config, frame)
    current = _in_current_plan(frame, meta.get("planned_ids"), seeds, meta.get("added_ids"))
    prog = progress(frame if current is None else frame[current], meta["planned"], n_running)
    others = 0 if current is None else int((~current).sum())
    # The verdict and every table of results read the chosen configuration's runs alone.
    frame, all_runs = final_frame(frame, config)
    min_effect = _min_effect(config, db_path)
    frame, matched = _baselines(frame)
    # Grouped once: every table below reads the same cells (each compute-matched baseline's
    # frame is grouped once, inside its own ``verdicts``).
    cells = group_cells(frame)
    equivalents = scratch_equivalents(frame, cells=cells)
    verdict = verdicts(frame, min_effect=min_effect, equivalents=equivalents, cells=cells, design=design)
    verdict.insert(0, "baseline", SCRATCH)
    for label, against in matched.items():
        extra = verdicts(against, min_effect=min_effect, design=design)
        extra.insert(0, "baseline", label)
        verdict = pd.concat([verdict, extra], ignore_index=True)
    crossover = crossovers(frame, verdict, cells=cells)
    logme = logme_models(frame, cells=cells)
    results = results_table(pd.concat([frame, *[f[f["strategy"] == SCRATCH] for f in matched.values()]]))
    computed = {
        "verdict": verdict, "arm_verdicts": arm_verdicts(frame, min_effect=min_effect, cells=cells), "crossover": crossover,
        "scratch_equivalent": equivalents, "across_datasets": across_datasets(frame, cells=cells),
        "results": results, "cost": cost_table(frame, results), "failed": failed_table(all_runs),
        "tuning": tuning_summary(all_runs, seeds, tuning_seeds, meta.get("planned_ids")),
        "probe": probe_table(frame),
        "environment": environment_table(frame), "versions": versions_table(frame),
    }
    if not logme.empty:
        computed.update(logme=logme, logme_ranking=logme_ranking(frame, logme))
    plots = build_plots(frame, epochs, crossover=crossover, gains=cell_gains(frame, cells=cells))
    sections = build_sections(frame, computed, plots, min_effect)
    if design is not None:
        sections[0].notes.append(design.describe())

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    subtitle = f"Suite {suite} · store {db_path} · rendered {stamp}"
    if config.get("description"):
        subtitle = f"{config['description']} · {subtitle}"
    if not prog.partial:
        subtitle += f" · {prog.sentence()}"
    banners = _fitted_banners(meta.get("fitted")) + _banners(prog, frame)
    if others:
        banners.append(("warn", (
            f"This store also holds {plural(others, 'finished run')} that suite {suite} as last run does not "
            "plan: an earlier suite of the same name, or an earlier version of this one. The counts above are "
            "for the cells it plans; the tables below include every run in the store."
        )))
    tables = {**computed, "runs": all_runs.drop(columns=["traceback"], errors="ignore")}
    html_path = out / "index.html"
    md_path = out / "report.md"
    try:
        (out / "tables").mkdir(parents=True, exist_ok=True)
        pngs = {plot.name: save_plot(plot, out / "plots") for plot in plots}
        for name in set(PLOT_NAMES) - set(pngs):  # a figure the data no longer supports must not linger
            for suffix in (".png", ".svg"):
                (out / "plots" / f"{name}{suffix}").unlink(missing_ok=True)
        for name, table in tables.items():
            table.to_csv(out / "tables" / f"{name}.csv", index=False)
        write_text(html_path, html_page(title, subtitle, banners, sections, pngs))
        write_text(md_path, markdown_page(title, subtitle, banners, sections))
    except OSError as exc:
        raise ReportError(f"{out}: cannot write report: {exc.strerror or exc}") from exc
    return Report(
        out_dir=out, html_path=html_path, md_path=md_path, verdict=verdict, crossover=crossover,
        partial=prog.partial, n_done=prog.n_done, n_failed=prog.n_failed, planned=prog.planned,
        plots=[plot.name for plot in plots],
    )
