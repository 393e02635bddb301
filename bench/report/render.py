"""Render a results store into one self-contained HTML page, a Markdown twin, CSVs and figures.

The HTML embeds every figure as a base64 PNG and carries its own CSS, so it opens offline
from a mail attachment or a laptop with no network. The Markdown links the PNG files beside it.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.errors import BenchError, ReportError
from bench.report.plots import PLOT_NAMES, Plot, build_plots, human_count, save_plot
from bench.report.tables import (
    Progress,
    cost_table,
    data_notes_table,
    environment_table,
    failed_table,
    probe_table,
    progress,
    results_table,
    training_version_warning,
    versions_table,
)
from bench.report.verdict import (
    ALPHA,
    SCRATCH,
    CALL_EQUIVALENT,
    CALL_INCONCLUSIVE,
    CALL_SCRATCH,
    CALL_TRANSFER,
    DEFAULT_MIN_EFFECT,
    LEVEL,
    N_BOOT,
    SELECTION_NOTE,
    across_datasets,
    arm_verdicts,
    cell_gains,
    crossovers,
    describe_interval,
    describe_methods,
    logme_models,
    logme_ranking,
    scratch_equivalents,
    verdicts,
)
from bench.store import ResultStore
from bench.tuning import split_final, tuning_summary


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


@dataclass
class _Section:
    """One block of the report in a form both writers understand."""

    heading: str
    intro: str = ""
    table: pd.DataFrame | None = None
    bullets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: Plot | None = None
    row_class: Callable[[pd.Series], str] | None = None


# -- loading ------------------------------------------------------------------------------


def _load(db_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, int]:
    if not db_path.is_file():
        raise ReportError(f"{db_path}: no results store")
    try:
        with ResultStore(db_path, readonly=True) as store:
            frame = store.frame()
            epochs = store.epochs_frame()
            meta = {"suite": store.get_meta("suite"), "planned": store.get_meta("planned"),
                    "planned_ids": store.get_meta("planned_ids")}
            n_running = sum(1 for status in store.statuses().values() if status == "running")
    except BenchError as exc:
        raise ReportError(str(exc)) from exc
    return frame, epochs, meta, n_running


# -- number formatting ---------------------------------------------------------------------


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value: object, digits: int = 1) -> str:
    return "–" if _missing(value) else f"{float(value) * 100:.{digits}f}"


def _pts(value: object) -> str:
    return "–" if _missing(value) else f"{float(value):+.1f}"


def _num(value: object, fmt: str = ".1f") -> str:
    return "–" if _missing(value) else format(float(value), fmt)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _pval(value: object) -> str:
    if _missing(value):
        return "–"
    return f"{float(value):.3f}" if float(value) >= 0.001 else f"{float(value):.1e}"


def _count(value: object) -> str:
    return "–" if _missing(value) else human_count(float(value))


# -- display tables ------------------------------------------------------------------------


def _arm_text(strategy: object, weights: object) -> str:
    arm = str(strategy or "–")
    return arm if weights in ("", "none", None) else f"{arm} ({weights})"


def _equivalent_cell(row: pd.Series, classes: float) -> str:
    status = row.get("scratch_equivalent_status", "")
    if status == "beyond":
        return "beyond the largest size measured"
    if status == "below":
        return "below the smallest size measured"
    n = row.get("scratch_equivalent_n")
    if _missing(n):
        return "–"
    size = f"{n / classes:,.0f}/class" if classes > 0 else f"{n:,.0f} images"
    return f"{size} ({row['scratch_equivalent_ratio']:.1f}x)"


def _bounds_text(low: object, high: object, classes: float) -> str:
    def one(n: float) -> str:
        if n == math.inf:
            return "beyond largest"
        if n == 0:
            return "below smallest"
        return f"{n / classes:,.0f}" if classes > 0 else f"{n:,.0f}"

    return "–" if _missing(low) or _missing(high) else f"{one(float(low))} to {one(float(high))}"


def _classes(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Classes per backbone x dataset, from per-class sizes, so sizes can be shown per class."""
    out: dict[tuple[str, str], float] = {}
    if frame.empty or "n_train" not in frame:
        return out
    per_class = frame["size"].astype(str).str.fullmatch(r"\d+") & (frame["n_train"] > 0)
    rows = frame[per_class]
    for key, part in rows.groupby(["backbone", "dataset"], sort=False):
        out[key] = float((part["n_train"] / part["size"].astype(float)).median())
    return out


def _verdict_display(table: pd.DataFrame, classes: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        n = r["n_pairs"]
        pi = "–"
        if n >= 1:
            pi = f"{r['prob_improvement']:.2f} [{r['prob_improvement_low']:.2f}, {r['prob_improvement_high']:.2f}]"
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "transfer arm (chosen on validation)": _arm_text(r["best_strategy"], r["best_weights"]),
            "transfer acc %": _pct(r["transfer_mean"]), "scratch acc %": _pct(r["scratch_mean"]),
            "mean diff (pts)": _pts(r["mean_diff"] * 100),
            f"{LEVEL:.0%} Student-t CI (pts)": describe_interval(r),
            "sign-flip p (exact)": _pval(r["p_value"]),
            f"P(transfer > scratch) [{LEVEL:.0%} Wilson]": pi,
            "won/tied/lost": f"{r['wins']}/{r['ties']}/{r['losses']}", "paired seeds": str(n),
            "scratch-equivalent data": _equivalent_cell(r, classes.get((r["backbone"], r["dataset"]), math.nan)),
            "verdict": r["call"],
        })
    return pd.DataFrame(rows)


def _arms_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "strategy": r["strategy_label"], "weights": r["weights"],
            "val acc %": _pct(r["val_mean"]), "test acc %": _pct(r["transfer_mean"]),
            "mean diff (pts)": _pts(r["mean_diff"] * 100),
            f"{LEVEL:.0%} Student-t CI (pts)": describe_interval(r),
            "sign-flip p": _pval(r["p_value"]), "Holm-adjusted p": _pval(r["p_holm"]),
            "paired seeds": str(r["n_pairs"]), "verdict": r["call"],
        })
    return pd.DataFrame(rows)


def _across_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "weights": table["weights"], "strategy": table["strategy_label"],
        "cells": table["n_cells"].astype(str),
        "IQM gain (pts)": (table["iqm_gain"] * 100).map(_pts),
        f"{LEVEL:.0%} stratified bootstrap (pts)": [
            "–" if _missing(lo) else f"{lo * 100:+.1f} to {hi * 100:+.1f}"
            for lo, hi in zip(table["iqm_low"], table["iqm_high"])
        ],
        "mean gain (pts)": (table["mean_gain"] * 100).map(_pts),
        "share of cells better": table["frac_cells_better"].map(lambda v: _num(v, ".2f")),
        "flagged cells left out": table["n_flagged_cells"].astype(str),
    })


def _equivalents_display(table: pd.DataFrame, classes: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        per = classes.get((r["backbone"], r["dataset"]), math.nan)
        unit = "/class" if per > 0 else " images"
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "strategy": r["strategy_label"], "weights": r["weights"],
            "train images": _num(r["n_train"], ".0f"), "transfer acc %": _pct(r["transfer_mean"]),
            "scratch would need": _equivalent_cell(r, per),
            f"{LEVEL:.0%} bootstrap ({unit.strip()})": _bounds_text(
                r["scratch_equivalent_low"], r["scratch_equivalent_high"], per
            ),
        })
    return pd.DataFrame(rows)


def _logme_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": table["dataset"], "backbone": table["backbone"], "weights": table["weights"],
        "size": table["size"], "LogME": table["logme"].map(lambda v: _num(v, ".3f")),
        "best transfer (on validation)": table["best_strategy"],
        "its test acc %": table["best_test_acc"].map(_pct),
    })


def _results_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "dataset": table["dataset"], "size": table["size"],
        "train images": table["n_train"].map(lambda v: _num(v, ".0f")),
        "strategy": table["strategy_label"], "weights": table["weights"],
        "test acc % (mean ± std)": [
            f"{_pct(m)} ± {_pct(s)}" if not _missing(s) else _pct(m)
            for m, s in zip(table["acc_mean"], table["acc_std"])
        ],
        "seeds": table["n"].astype(str),
        "balanced acc %": table["balanced_acc_mean"].map(_pct),
        "macro-F1 %": table["macro_f1_mean"].map(_pct),
        "wall time (s)": table["wall_s_mean"].map(_num),
        "trainable params": table["trainable_params"].map(_count),
    })


def _cost_display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "backbone": table["backbone"], "dataset": table["dataset"], "size": table["size"],
        "strategy": table["strategy_label"], "weights": table["weights"],
        "gain over scratch (pts)": table["gain_pts"].map(_pts),
        "extra wall time (s)": table["extra_wall_s"].map(lambda v: _num(v, "+.1f")),
        "gain per extra second (pts/s)": table["gain_pts_per_extra_s"].map(lambda v: _num(v, "+.3f")),
        "trainable params": table["trainable_params"].map(_count),
        "gain per 1M trainable params (pts)": table["gain_pts_per_m_trainable"].map(lambda v: _num(v, "+.2f")),
        "note": table["note"],
    })


def _failed_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.drop(columns=["run_id"]).copy()
    shown["seed"] = shown["seed"].astype(str)
    shown["attempts"] = shown["attempts"].map(lambda v: _num(v, ".0f"))
    shown = shown.rename(columns={"strategy_label": "strategy"})
    shown.insert(len(shown.columns), "run id", table["run_id"].str.slice(0, 12))
    return shown


def _versions_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table.copy()
    shown["runs"] = shown["runs"].astype(str)
    shown["mixed"] = shown["mixed"].map(lambda m: "MIXED" if m else "")
    return shown


def _verdict_class(row: pd.Series) -> str:
    return {CALL_TRANSFER: "win", CALL_SCRATCH: "loss", CALL_INCONCLUSIVE: "flagged"}.get(row["verdict"], "unclear")


# -- sections ------------------------------------------------------------------------------


def _verdict_intro(verdict: pd.DataFrame) -> str:
    if verdict.empty:
        return "No finished runs with a test accuracy yet, so there is no verdict."
    calls = verdict["call"]
    counts = {
        call: int((calls == call).sum())
        for call in (CALL_TRANSFER, CALL_SCRATCH, CALL_EQUIVALENT, CALL_INCONCLUSIVE)
    }
    rest = len(verdict) - sum(counts.values())
    return (
        f"Across {_plural(len(verdict), 'backbone × dataset × size cell')}: transfer wins in "
        f"{counts[CALL_TRANSFER]}, scratch wins in {counts[CALL_SCRATCH]}, the two are equivalent in "
        f"{counts[CALL_EQUIVALENT]}, {counts[CALL_INCONCLUSIVE]} are inconclusive because a compared run "
        f"is flagged, and {rest} show no clear difference or lack the seeds to tell."
    )


def _sections(
    frame: pd.DataFrame, tables: dict[str, pd.DataFrame], plots: list[Plot], min_effect: float
) -> list[_Section]:
    verdict, crossover = tables["verdict"], tables["crossover"]
    matched = verdict[verdict["baseline"] != SCRATCH] if "baseline" in verdict else verdict.iloc[0:0]
    verdict = verdict[verdict["baseline"] == SCRATCH] if "baseline" in verdict else verdict
    results, cost, failed, versions = (tables[k] for k in ("results", "cost", "failed", "versions"))
    classes = _classes(frame)
    bullets = []
    for (backbone, dataset), group in verdict.groupby(["backbone", "dataset"], sort=False):
        bullets += list(group["summary"])
        match = crossover[(crossover["backbone"] == backbone) & (crossover["dataset"] == dataset)]
        bullets += list(match["summary"])
    sections = [
        _Section(
            "Verdict: does transfer beat scratch?", intro=_verdict_intro(verdict),
            bullets=bullets,
            table=_verdict_display(verdict, classes), row_class=_verdict_class,
            notes=[SELECTION_NOTE, describe_methods(min_effect)],
        )
    ]
    for label, group in matched.groupby("baseline", sort=True):
        sections.append(_Section(
            f"Verdict against compute-matched scratch: {label}",
            intro=(
                f"{label} trains from random init on a longer schedule than every other arm (He et al. 2019: "
                "scratch needs more steps to catch up, so equal-epoch comparisons favour transfer). The same "
                "comparison as above, with this scratch as the baseline."
            ),
            bullets=list(group["summary"]),
            table=_verdict_display(group, classes), row_class=_verdict_class,
        ))
    arms = tables["arm_verdicts"]
    if not arms.empty:
        sections.append(_Section(
            "Every transfer arm vs scratch",
            intro=(
                "Each transfer arm (strategy and weights) compared with scratch on its own, paired by "
                "seed, with the same Student-t interval and exact sign-flip p-value as above. All arms "
                "of a cell are judged on the same test results, so their p-values are Holm-adjusted "
                f"across the arms of that cell (family-wise error {ALPHA:.0%}), and a per-arm win or loss "
                f"also needs a Holm-adjusted p of at most {ALPHA:g}. An exact sign-flip p-value cannot go "
                "below 2/2^n, so with few seeds no single arm can be called here even when the headline can."
            ),
            table=_arms_display(arms), row_class=_verdict_class,
        ))
    profile = next((plot for plot in plots if plot.name == "performance_profile"), None)
    across = tables["across_datasets"]
    if not across.empty:
        sections.append(_Section(
            "Across datasets",
            intro=(
                "For each backbone, weights and transfer strategy: the interquartile mean (IQM: the mean "
                "of the middle half) over dataset × size cells of the mean paired gain over scratch, with "
                f"a {LEVEL:.0%} stratified percentile bootstrap interval ({N_BOOT:,} resamples of the seeds "
                "within each cell, as rliable does). Cells where a compared run is flagged are left out."
            ),
            table=_across_display(across),
        ))
        if profile is not None:
            sections.append(_Section(profile.title, intro=profile.caption, plot=profile))
    equivalents = tables["scratch_equivalent"]
    if not equivalents.empty:
        sections.append(_Section(
            "Scratch-equivalent data",
            intro=(
                "How much data scratch would need to match each transfer arm (\"effective data "
                "transferred\", Hernandez et al. 2021): scratch's mean test accuracy against training "
                "images is made monotone (isotonic fit) and interpolated as a power law between the "
                "sizes measured, then read off at the arm's accuracy. Nothing is extrapolated: an arm "
                "more accurate than scratch at its largest size is beyond the largest size measured. "
                f"The interval is a {LEVEL:.0%} percentile bootstrap over seeds, resampled within every size."
            ),
            bullets=[text for text in equivalents["summary"] if text],
            table=_equivalents_display(equivalents, classes),
        ))
    models, ranking = tables.get("logme"), tables.get("logme_ranking")
    if models is not None and not models.empty:
        sections.append(_Section(
            "Does LogME predict the ranking?",
            intro=(
                "LogME (You et al. 2021) scores a backbone's features on a dataset without training. "
                "Per dataset, Kendall's tau between the LogME at the largest size and the test accuracy "
                "of the transfer arm chosen on validation at that size, across backbone × weights."
            ),
            bullets=list(ranking["summary"]) if ranking is not None else [],
            table=_logme_display(models),
        ))
    for plot in plots:
        if plot is not profile:
            sections.append(_Section(plot.title, intro=plot.caption, plot=plot))
    sections += _tuning_sections(tables["tuning"], tables["probe"], frame)
    sections.append(_Section(
        "Results", intro="Test accuracy over seeds for every backbone, dataset, size, strategy and weights.",
        table=_results_display(results),
    ))
    sections.append(_Section(
        "Cost of transfer",
        intro=(
            "Accuracy gained over scratch of the same backbone, dataset and size, per extra "
            "wall-clock second and per million trainable parameters. Per-second figures are "
            "blank where the strategy is no slower than scratch: it then costs no extra time at all."
        ),
        table=_cost_display(cost),
    ))
    if failed.empty:
        sections.append(_Section("Failed runs", intro="No run failed."))
    else:
        sections.append(_Section(
            "Failed runs", intro=f"{_plural(len(failed), 'run')} failed; the first line of each error is shown.",
            table=_failed_display(failed),
        ))
    notes = data_notes_table(frame)
    if not notes.empty:
        sections.append(_Section(
            "Data problems", intro=f"{_plural(len(notes), 'problem')} in the data, skipped by every run that used it.",
            table=notes,
        ))
    warning = training_version_warning(frame)
    sections.append(_Section(
        "Environment", intro="Where the numbers came from: devices, training code version and library versions.",
        table=tables["environment"], notes=[warning] if warning else [],
    ))
    if not versions.empty:
        sections.append(_Section("Library versions", table=_versions_display(versions)))
    return sections


# -- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;
max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}.meta{color:#555;font-size:13px;margin:0 0 14px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-weight:600}
.banner.partial{background:#fff4ce;border:2px solid #d9a300;color:#5c4400;font-size:17px}
.banner.warn{background:#fde7e9;border:1px solid #d13438;color:#6e0b0e}
ul.summary li{margin:3px 0}.notes{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 4px;width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
tr.win td{background:#e6f4ea}tr.loss td{background:#fde7e9}tr.flagged td{background:#fff4ce}
.scroll{overflow-x:auto;max-height:640px;overflow-y:auto}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:13px}nav a{margin-right:12px;font-size:13px}
"""


def _html_table(table: pd.DataFrame, row_class: Callable[[pd.Series], str] | None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for _, row in table.iterrows():
        cls = f' class="{row_class(row)}"' if row_class else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _anchor(heading: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")


def _html(
    title: str, subtitle: str, banners: list[tuple[str, str]], sections: list[_Section], pngs: dict[str, bytes]
) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(subtitle)}</p>',
    ]
    parts += [f'<div class="banner {kind}">{html.escape(text)}</div>' for kind, text in banners]
    links = "".join(f'<a href="#{_anchor(s.heading)}">{html.escape(s.heading)}</a>' for s in sections)
    parts.append(f"<nav>{links}</nav>")
    for section in sections:
        parts.append(f'<h2 id="{_anchor(section.heading)}">{html.escape(section.heading)}</h2>')
        if section.intro and section.plot is None:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        if section.bullets:
            items = "".join(f"<li>{html.escape(b)}</li>" for b in section.bullets)
            parts.append(f'<ul class="summary">{items}</ul>')
        if section.plot is not None:
            data = base64.b64encode(pngs[section.plot.name]).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(section.plot.title)}">'
                f"<figcaption>{html.escape(section.plot.caption)}</figcaption></figure>"
            )
        if section.table is not None and not section.table.empty:
            parts.append(_html_table(section.table, section.row_class))
        for note in section.notes:
            parts.append(f'<p class="notes">{html.escape(note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown ------------------------------------------------------------------------------


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame's values as strings."""
    lines = [
        "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _markdown(title: str, subtitle: str, banners: list[tuple[str, str]], sections: list[_Section]) -> str:
    parts = [f"# {title}", "", subtitle, ""]
    for kind, text in banners:
        parts += [f"> **{'PARTIAL' if kind == 'partial' else 'WARNING'}:** {text}", ""]
    for section in sections:
        parts += [f"## {section.heading}", ""]
        if section.intro and section.plot is None:
            parts += [section.intro, ""]
        if section.bullets:
            parts += [f"- {b}" for b in section.bullets] + [""]
        if section.plot is not None:
            parts += [f"![{section.plot.title}](plots/{section.plot.name}.png)", "", f"*{section.plot.caption}*", ""]
        if section.table is not None and not section.table.empty:
            parts += [markdown_table(section.table), ""]
        for note in section.notes:
            parts += [f"*{note}*", ""]
    return "\n".join(parts)


# -- writing -------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    # Write beside and rename so a browser never shows a half-written page.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _in_current_plan(frame: pd.DataFrame, planned_ids: object, seeds: list[int]) -> pd.Series | None:
    """Which runs belong to the suite as last run, from the cell ids it stored; None when it stored none.

    A tuned arm's final cells are not known until its sweep has chosen, so a run also belongs when
    its arm is one of the planned cells' arms and its seed one of the suite's seeds.
    """
    if not isinstance(planned_ids, list) or frame.empty:
        return None
    ids = {str(run_id) for run_id in planned_ids}
    planned = frame["run_id"].isin(ids)
    arms = set(frame.loc[planned & (frame["arm"] != ""), "arm"])
    return planned | (frame["arm"].isin(arms) & frame["seed"].isin(seeds))


def _banners(prog: Progress, frame: pd.DataFrame) -> list[tuple[str, str]]:
    banners = []
    if prog.partial:
        banners.append(("partial", prog.sentence()))
    if prog.n_failed:
        banners.append(("warn", f"{_plural(prog.n_failed, 'run')} failed; see Failed runs below."))
    warning = training_version_warning(frame)
    if warning:
        banners.append(("warn", warning))
    return banners


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


def _tuning_sections(tuning: pd.DataFrame, probe: pd.DataFrame, final: pd.DataFrame) -> list[_Section]:
    """What each arm was tuned over, what was chosen on validation, and what the sweep cost."""
    sections = []
    if not tuning.empty:
        sweep_s = float(tuning["sweep_s"].sum())
        final_s = float(final["wall_s"].fillna(0).sum())
        share = f", {sweep_s / final_s:.2f}x the wall time of the runs reported" if final_s > 0 else ""
        sections.append(_Section(
            "Tuning: the configuration each arm was given",
            intro=(
                "Every trained arm swept the same grid on the tuning seeds; the configuration with the best "
                "mean validation accuracy then ran on every seed, and only those runs enter the verdict. Test "
                f"accuracy played no part in any choice. The sweep's extra runs cost {sweep_s:.0f} s{share}."
            ),
            table=tuning.assign(chosen_val_acc=tuning["chosen_val_acc"].map(lambda v: f"{v:.3f}"),
                                sweep_s=tuning["sweep_s"].map(lambda v: f"{v:.0f}")),
        ))
    if not probe.empty:
        sections.append(_Section(
            "Linear probe: L2 strength chosen on validation",
            intro=(
                "The frozen arm is a multinomial logistic regression on standardised backbone features, fitted "
                "to convergence with L-BFGS at each L2 strength of a log grid; the strength with the best "
                "validation accuracy is kept (Kornblith et al. 2019)."
            ),
            table=probe.assign(val_acc_mean=probe["val_acc_mean"].map(lambda v: f"{v:.3f}")),
        ))
    return sections


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


def _seeds(config: dict, frame: pd.DataFrame) -> tuple[list[int], list[int]]:
    """The suite's seeds and the sweep's, from the stored config (or the runs, for hand-made stores)."""
    seeds = [int(s) for s in config.get("seeds") or sorted(frame["seed"].unique())]
    tuning = config.get("tuning") if isinstance(config.get("tuning"), dict) else {}
    return seeds, [int(s) for s in tuning.get("seeds") or seeds[:1]]


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
    seeds, tuning_seeds = _seeds(config, frame)
    current = _in_current_plan(frame, meta.get("planned_ids"), seeds)
    prog = progress(frame if current is None else frame[current], meta["planned"], n_running)
    others = 0 if current is None else int((~current).sum())
    all_runs = frame
    # Sweep runs of configurations that were not chosen are cost, not results: the verdict and
    # every table of results read the chosen configuration's runs alone.
    frame, _ = split_final(all_runs, seeds, tuning_seeds)
    min_effect = _min_effect(config, db_path)
    frame, matched = _baselines(frame)
    equivalents = scratch_equivalents(frame)
    verdict = verdicts(frame, min_effect=min_effect, equivalents=equivalents)
    verdict.insert(0, "baseline", SCRATCH)
    for label, against in matched.items():
        extra = verdicts(against, min_effect=min_effect)
        extra.insert(0, "baseline", label)
        verdict = pd.concat([verdict, extra], ignore_index=True)
    crossover = crossovers(frame, verdict)
    logme = logme_models(frame)
    results = results_table(pd.concat([frame, *[f[f["strategy"] == SCRATCH] for f in matched.values()]]))
    computed = {
        "verdict": verdict, "arm_verdicts": arm_verdicts(frame, min_effect=min_effect), "crossover": crossover,
        "scratch_equivalent": equivalents, "across_datasets": across_datasets(frame),
        "results": results, "cost": cost_table(frame, results), "failed": failed_table(all_runs),
        "tuning": tuning_summary(all_runs, seeds, tuning_seeds), "probe": probe_table(frame),
        "environment": environment_table(frame), "versions": versions_table(frame),
    }
    if not logme.empty:
        computed.update(logme=logme, logme_ranking=logme_ranking(frame, logme))
    plots = build_plots(frame, epochs, crossover=crossover, gains=cell_gains(frame))
    sections = _sections(frame, computed, plots, min_effect)

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    subtitle = f"Suite {suite} · store {db_path} · rendered {stamp}"
    if config.get("description"):
        subtitle = f"{config['description']} · {subtitle}"
    if not prog.partial:
        subtitle += f" · {prog.sentence()}"
    banners = _banners(prog, frame)
    if others:
        banners.append(("warn", (
            f"This store also holds {_plural(others, 'finished run')} that suite {suite} as last run does not "
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
        _write_text(html_path, _html(title, subtitle, banners, sections, pngs))
        _write_text(md_path, _markdown(title, subtitle, banners, sections))
    except OSError as exc:
        raise ReportError(f"{out}: cannot write report: {exc.strerror or exc}") from exc
    return Report(
        out_dir=out, html_path=html_path, md_path=md_path, verdict=verdict, crossover=crossover,
        partial=prog.partial, n_done=prog.n_done, n_failed=prog.n_failed, planned=prog.planned,
        plots=[plot.name for plot in plots],
    )
