"""The parameter-efficiency view: each arm's accuracy, trainable parameters and wall time as shares of full fine-tuning.

Parameter-efficient strategies are judged against full fine-tuning of the same backbone on the
same cell, so the figure puts every arm on full's scale: "LoRA keeps 98% of full's accuracy
with 1% of its trainable parameters" is one point, read off the axes, and its label adds the
share of full's wall time.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd

from bench.report.plotkit import STYLE, Plot, facet_title, legend, new_figure
from bench.report.tables import ordered_labels, results_table

FULL = "full"
CELL = ["backbone", "weights", "dataset", "size"]


def shares_of_full(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm and cell: accuracy, trainable parameters and wall time as % of the plain full arm's."""
    results = results_table(frame).dropna(subset=["acc_mean", "trainable_params"])
    full = results[results["strategy_label"] == FULL][CELL + ["acc_mean", "trainable_params", "wall_s_mean"]]
    others = results[results["strategy_label"] != FULL]
    if full.empty or others.empty:
        return pd.DataFrame(columns=[*CELL, "strategy_label", "acc_pct_of_full", "params_pct_of_full",
                                     "wall_pct_of_full"])
    table = others.merge(full, on=CELL, suffixes=("", "_full"))
    table = table[(table["acc_mean_full"] > 0) & (table["trainable_params_full"] > 0)]
    table["acc_pct_of_full"] = 100 * table["acc_mean"] / table["acc_mean_full"]
    table["params_pct_of_full"] = 100 * table["trainable_params"] / table["trainable_params_full"]
    table["wall_pct_of_full"] = 100 * table["wall_s_mean"] / table["wall_s_mean_full"]
    return table[[*CELL, "strategy_label", "acc_pct_of_full", "params_pct_of_full", "wall_pct_of_full"]]


def efficiency_plot(frame: pd.DataFrame, palette: dict[str, str]) -> Plot | None:
    """Accuracy against trainable parameters, both as % of full's, one panel per backbone; labels add wall time."""
    shares = shares_of_full(frame)
    shares = shares[shares["params_pct_of_full"] > 0]
    if shares.empty:
        return None
    backbones = sorted(shares["backbone"].unique())
    labels = ordered_labels(shares["strategy_label"])
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(1, len(backbones), (4.8, 3.6), sharey=True)
        for ax, backbone in zip(axes.flat, backbones):
            part = shares[shares["backbone"] == backbone]
            ax.axhline(100, color="black", lw=1, ls="--", zorder=1)
            ax.axvline(100, color="black", lw=1, ls=":", zorder=1)
            for label in labels:
                arm = part[part["strategy_label"] == label]
                if arm.empty:
                    continue
                # Every cell faint, the median over cells bold and labelled.
                ax.scatter(arm["params_pct_of_full"], arm["acc_pct_of_full"], s=18, alpha=0.35,
                           color=palette[label], lw=0, zorder=2)
                x, y = float(arm["params_pct_of_full"].median()), float(arm["acc_pct_of_full"].median())
                wall = arm["wall_pct_of_full"].median()
                ax.scatter([x], [y], s=70, color=palette[label], edgecolor="black", lw=0.8, zorder=3)
                timing = f", {wall:.0f}% time" if np.isfinite(wall) else ""
                share = f"{x:.2g}" if x < 10 else f"{x:.0f}"  # not 1e+02
                ax.annotate(f"{y:.0f}% acc @ {share}% params{timing}", (x, y), textcoords="offset points",
                            xytext=(6, 4), fontsize=7)
            ax.set_xscale("log")
            ax.set_title(facet_title(backbone))
            ax.set_xlabel("trainable parameters, % of full (log scale)")
            ax.set_ylabel("test accuracy, % of full")
        legend(fig, palette, labels)
    caption = (
        "Every arm against full fine-tuning of the same backbone on the same dataset and size: its test "
        "accuracy and its trainable parameters as a share of full's (dashed: full's accuracy). Faint "
        "points are single cells, bold points the median over cells, labelled with the share of full's "
        "wall time as well."
    )
    return Plot("efficiency", "Accuracy vs trainable parameters, relative to full", caption, fig)
