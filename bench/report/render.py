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
    progress,
    results_table,
    training_version_warning,
    versions_table,
)
from bench.report.verdict import (
    CALL_SCRATCH,
    CALL_TRANSFER,
    LEVEL,
    N_BOOT,
    OPTIMISM_NOTE,
    TIE_EPS,
    crossovers,
    verdicts,
)
from bench.store import ResultStore


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
            meta = {"suite": store.get_meta("suite"), "planned": store.get_meta("planned")}
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


def _count(value: object) -> str:
    return "–" if _missing(value) else human_count(float(value))


# -- display tables ------------------------------------------------------------------------


def _verdict_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        if r["n_pairs"] >= 2:
            interval = f"{r['ci_low'] * 100:+.1f} to {r['ci_high'] * 100:+.1f}"
        elif r["n_pairs"] == 1:
            interval = "none (one seed)"
        else:
            interval = "–"
        arm = r["best_strategy"] or "–"
        if r["best_weights"] not in ("", "none"):
            arm = f"{arm} ({r['best_weights']})"
        rows.append({
            "backbone": r["backbone"], "dataset": r["dataset"], "size": r["size"],
            "best transfer": arm,
            "transfer acc %": _pct(r["transfer_mean"]), "scratch acc %": _pct(r["scratch_mean"]),
            "diff (pts)": _pts(r["mean_diff"] * 100), "95% CI (pts)": interval,
            "won/tied/lost": f"{r['wins']}/{r['ties']}/{r['losses']}", "paired seeds": str(r["n_pairs"]),
            "verdict": r["call"],
        })
    return pd.DataFrame(rows)


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
    return {CALL_TRANSFER: "win", CALL_SCRATCH: "loss"}.get(row["verdict"], "unclear")


# -- sections ------------------------------------------------------------------------------


def _sections(
    frame: pd.DataFrame, verdict: pd.DataFrame, crossover: pd.DataFrame, plots: list[Plot],
    tables: dict[str, pd.DataFrame],
) -> list[_Section]:
    results, cost, failed, versions = (tables[k] for k in ("results", "cost", "failed", "versions"))
    transfer_wins = int((verdict["call"] == CALL_TRANSFER).sum())
    scratch_wins = int((verdict["call"] == CALL_SCRATCH).sum())
    if verdict.empty:
        intro = "No finished runs with a test accuracy yet, so there is no verdict."
    else:
        intro = (
            f"Across {_plural(len(verdict), 'backbone × dataset × size cell')}: transfer wins in "
            f"{transfer_wins}, scratch wins in {scratch_wins}, and {len(verdict) - transfer_wins - scratch_wins} "
            "show no clear difference or lack the seeds to tell."
        )
    bullets = []
    for (backbone, dataset), group in verdict.groupby(["backbone", "dataset"], sort=False):
        bullets += list(group["summary"])
        match = crossover[(crossover["backbone"] == backbone) & (crossover["dataset"] == dataset)]
        bullets += list(match["summary"])
    method = (
        "Method: within each cell, the transfer strategy with the highest mean test accuracy is "
        "compared with scratch on the seeds both have (paired by seed; unmatched seeds are "
        f"ignored). The interval is a {LEVEL:.0%} percentile bootstrap of the mean paired "
        f"difference ({N_BOOT} resamples, fixed random seed). \"transfer wins\" means the whole "
        "interval lies above zero, \"scratch wins\" below; fewer than three paired seeds give no "
        f"verdict, and one gives no interval. Paired differences within {TIE_EPS:g} of zero count as ties."
    )
    sections = [
        _Section(
            "Verdict: does transfer beat scratch?", intro=intro,
            bullets=bullets,
            table=_verdict_display(verdict), row_class=_verdict_class,
            notes=[OPTIMISM_NOTE, method],
        )
    ]
    for plot in plots:
        sections.append(_Section(plot.title, intro=plot.caption, plot=plot))
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
tr.win td{background:#e6f4ea}tr.loss td{background:#fde7e9}
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
    prog = progress(frame, meta["planned"], n_running)
    verdict = verdicts(frame)
    crossover = crossovers(frame, verdict)
    plots = build_plots(frame, epochs)
    results = results_table(frame)
    computed = {
        "results": results, "cost": cost_table(frame, results), "failed": failed_table(frame),
        "environment": environment_table(frame), "versions": versions_table(frame),
    }
    sections = _sections(frame, verdict, crossover, plots, computed)

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    subtitle = f"Suite {suite} · store {db_path} · rendered {stamp}"
    if config.get("description"):
        subtitle = f"{config['description']} · {subtitle}"
    if not prog.partial:
        subtitle += f" · {prog.sentence()}"
    banners = _banners(prog, frame)
    tables = {
        "verdict": verdict, "crossover": crossover, **computed,
        "runs": frame.drop(columns=["traceback"], errors="ignore"),
    }
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
