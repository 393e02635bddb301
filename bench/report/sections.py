"""The report's sections, in reading order, in a form both the HTML and the Markdown writer understand.

A section is data (heading, prose, bullets, a display table, a figure, notes); the writers only
lay it out, so the two formats cannot say different things.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from bench.report.display import (
    across_display,
    arms_display,
    classes_per_dataset,
    cost_display,
    equivalents_display,
    failed_display,
    logme_display,
    results_display,
    verdict_display,
    verdict_row_class,
    versions_display,
)
from bench.report.plotkit import Plot
from bench.report.rules import ALPHA
from bench.report.stats import LEVEL, N_BOOT
from bench.report.tables import SCRATCH, data_notes_table, training_version_warning
from bench.report.wording import SELECTION_NOTE, describe_methods, plural, verdict_counts_sentence


@dataclass
class Section:
    """One block of the report in a form both writers understand."""

    heading: str
    intro: str = ""
    table: pd.DataFrame | None = None
    bullets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: Plot | None = None
    row_class: Callable[[pd.Series], str] | None = None


def build_sections(
    frame: pd.DataFrame, tables: dict[str, pd.DataFrame], plots: list[Plot], min_effect: float
) -> list[Section]:
    """Every section of the report, the verdict first, from the computed tables and figures."""
    verdict, crossover = tables["verdict"], tables["crossover"]
    matched = verdict[verdict["baseline"] != SCRATCH] if "baseline" in verdict else verdict.iloc[0:0]
    verdict = verdict[verdict["baseline"] == SCRATCH] if "baseline" in verdict else verdict
    results, cost, failed, versions = (tables[k] for k in ("results", "cost", "failed", "versions"))
    classes = classes_per_dataset(frame)
    bullets = []
    for (backbone, dataset), group in verdict.groupby(["backbone", "dataset"], sort=False):
        bullets += list(group["summary"])
        match = crossover[(crossover["backbone"] == backbone) & (crossover["dataset"] == dataset)]
        bullets += list(match["summary"])
    sections = [
        Section(
            "Verdict: does transfer beat scratch?", intro=verdict_counts_sentence(verdict),
            bullets=bullets,
            table=verdict_display(verdict, classes), row_class=verdict_row_class,
            notes=[SELECTION_NOTE, describe_methods(min_effect)],
        )
    ]
    for label, group in matched.groupby("baseline", sort=True):
        sections.append(Section(
            f"Verdict against compute-matched scratch: {label}",
            intro=(
                f"{label} trains from random init on a longer schedule than every other arm (He et al. 2019: "
                "scratch needs more steps to catch up, so equal-epoch comparisons favour transfer). The same "
                "comparison as above, with this scratch as the baseline."
            ),
            bullets=list(group["summary"]),
            table=verdict_display(group, classes), row_class=verdict_row_class,
        ))
    arms = tables["arm_verdicts"]
    if not arms.empty:
        sections.append(Section(
            "Every transfer arm vs scratch",
            intro=(
                "Each transfer arm (strategy and weights) compared with scratch on its own, paired by "
                "seed, with the same Student-t interval and exact sign-flip p-value as above. All arms "
                "of a cell are judged on the same test results, so their p-values are Holm-adjusted "
                f"across the arms of that cell (family-wise error {ALPHA:.0%}), and a per-arm win or loss "
                f"also needs a Holm-adjusted p of at most {ALPHA:g}. An exact sign-flip p-value cannot go "
                "below 2/2^n, so with few seeds no single arm can be called here even when the headline can."
            ),
            table=arms_display(arms), row_class=verdict_row_class,
        ))
    profile = next((plot for plot in plots if plot.name == "performance_profile"), None)
    across = tables["across_datasets"]
    if not across.empty:
        sections.append(Section(
            "Across datasets",
            intro=(
                "For each backbone, weights and transfer strategy: the interquartile mean (IQM: the mean "
                "of the middle half) over dataset × size cells of the mean paired gain over scratch, with "
                f"a {LEVEL:.0%} stratified percentile bootstrap interval ({N_BOOT:,} resamples of the seeds "
                "within each cell, as rliable does). Cells where a compared run is flagged are left out."
            ),
            table=across_display(across),
        ))
        if profile is not None:
            sections.append(Section(profile.title, intro=profile.caption, plot=profile))
    equivalents = tables["scratch_equivalent"]
    if not equivalents.empty:
        sections.append(Section(
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
            table=equivalents_display(equivalents, classes),
        ))
    models, ranking = tables.get("logme"), tables.get("logme_ranking")
    if models is not None and not models.empty:
        sections.append(Section(
            "Does LogME predict the ranking?",
            intro=(
                "LogME (You et al. 2021) scores a backbone's features on a dataset without training. "
                "Per dataset, Kendall's tau between the LogME at the largest size and the test accuracy "
                "of the transfer arm chosen on validation at that size, across backbone × weights."
            ),
            bullets=list(ranking["summary"]) if ranking is not None else [],
            table=logme_display(models),
        ))
    for plot in plots:
        if plot is not profile:
            sections.append(Section(plot.title, intro=plot.caption, plot=plot))
    sections += _tuning_sections(tables["tuning"], tables["probe"], frame)
    sections.append(Section(
        "Results", intro="Test accuracy over seeds for every backbone, dataset, size, strategy and weights.",
        table=results_display(results),
    ))
    sections.append(Section(
        "Cost of transfer",
        intro=(
            "Accuracy gained over scratch of the same backbone, dataset and size, per extra "
            "wall-clock second and per million trainable parameters. Per-second figures are "
            "blank where the strategy is no slower than scratch: it then costs no extra time at all."
        ),
        table=cost_display(cost),
    ))
    if failed.empty:
        sections.append(Section("Failed runs", intro="No run failed."))
    else:
        sections.append(Section(
            "Failed runs", intro=f"{plural(len(failed), 'run')} failed; the first line of each error is shown.",
            table=failed_display(failed),
        ))
    notes = data_notes_table(frame)
    if not notes.empty:
        sections.append(Section(
            "Data problems", intro=f"{plural(len(notes), 'problem')} in the data, skipped by every run that used it.",
            table=notes,
        ))
    warning = training_version_warning(frame)
    sections.append(Section(
        "Environment", intro="Where the numbers came from: devices, training code version and library versions.",
        table=tables["environment"], notes=[warning] if warning else [],
    ))
    if not versions.empty:
        sections.append(Section("Library versions", table=versions_display(versions)))
    return sections


def _edge_note(tuning: pd.DataFrame) -> str:
    """How many arms extended their grid, how many are still at its edge, and what that does to the verdict."""
    known = tuning["extended_points"].notna()
    extended = int((tuning["extended_points"].fillna(0) > 0).sum())
    at_edge = int((tuning["grid_edge"] != "").sum())
    text = ""
    if known.any() and (extended or at_edge):
        runs, seconds = int(tuning["extension_runs"].sum()), float(tuning["extension_s"].sum())
        text = (f" {extended} of {plural(int(known.sum()), 'arm')} extended the sweep beyond the suite's grid, "
                f"where the best value lay at its edge, in {plural(runs, 'run')} and {seconds:.0f} s "
                "(columns extended_points, extension_runs, extension_s).")
    if at_edge:
        text += (f" {at_edge} of {plural(len(tuning), 'arm')} still chose a value at the edge of the points tried "
                 "(column grid_edge): the best value may lie beyond, so such an arm may be under-tuned, and the "
                 "verdict withholds any call against it (\"inconclusive\"); widen the grid, or raise tuning.extend, "
                 "in the suite file.")
    return text


def _seconds(value: object) -> str:
    return "unknown" if pd.isna(value) else f"{float(value):.0f}"


def _tuning_sections(tuning: pd.DataFrame, probe: pd.DataFrame, final: pd.DataFrame) -> list[Section]:
    """What each arm was tuned over, what was chosen on validation, and what the sweep cost."""
    sections = []
    if not tuning.empty:
        sweep_s = float(tuning["sweep_s"].sum())
        final_s = float(final["wall_s"].fillna(0).sum())
        share = f", {sweep_s / final_s:.2f}x the wall time of the runs reported" if final_s > 0 else ""
        sections.append(Section(
            "Tuning: the configuration each arm was given",
            intro=(
                "Every trained arm swept the same grid on the tuning seeds, and points beyond it where its best "
                "value lay at the grid's edge; the configuration with the best "
                "mean validation accuracy then ran on every seed, and only those runs enter the verdict. Test "
                f"accuracy played no part in any choice. The sweep's extra runs cost {sweep_s:.0f} s{share}."
                + _edge_note(tuning)
            ),
            table=tuning.assign(
                chosen_val_acc=tuning["chosen_val_acc"].map(lambda v: f"{v:.3f}"),
                sweep_s=tuning["sweep_s"].map(_seconds), extension_s=tuning["extension_s"].map(_seconds),
                **{c: tuning[c].map(lambda v: "unknown" if pd.isna(v) else str(v))
                   for c in ("extended_points", "extension_runs")},
            ),
        ))
    if not probe.empty:
        sections.append(Section(
            "Linear probe: L2 strength and feature scaling chosen on validation",
            intro=(
                "The frozen arm is a multinomial logistic regression on the backbone's pooled features, fitted "
                "to convergence with L-BFGS at each L2 strength of a log grid and each feature scaling (raw, "
                "each row L2-normalised, each dimension standardised on the training rows); the pair with the "
                "best validation accuracy is kept (Kornblith et al. 2019). Strengths are in units of features "
                "brought to a mean row norm of one."
            ),
            table=probe.assign(val_acc_mean=probe["val_acc_mean"].map(lambda v: f"{v:.3f}")),
        ))
    return sections
