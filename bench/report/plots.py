"""The report's figures, each built from DataFrames onto a fresh Agg-backed Figure from ``plotkit``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from bench.report.efficiency import efficiency_plot
from bench.report.plotkit import (
    MARKERS,
    SCRATCH_COLOUR,
    STYLE,
    Plot,
    facet_title,
    human_count,
    legend,
    new_figure,
    strategy_palette,
)
from bench.report.tables import SCRATCH, cost_table, done_runs, ordered_labels, results_table, strategy_sort_key

PLOT_NAMES = ("learning_curve", "performance_profile", "transfer_gain", "pareto", "efficiency", "epoch_curves")


def pareto_mask(cost: Iterable[float], value: Iterable[float]) -> np.ndarray:
    """True for points no other point beats: not slower and not worse, and strictly better in one."""
    x = np.asarray(list(cost), dtype=float)
    y = np.asarray(list(value), dtype=float)
    n = x.size
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        keep[i] = not dominated.any()
    return keep


def _size_axis(done: pd.DataFrame) -> tuple[pd.Series, str, bool]:
    """The x axis of a learning curve: training images on a log scale, else ordinal sizes."""
    if done["n_train"].gt(0).all():
        return done["n_train"].astype(float), "training images (log scale)", True
    order = {size: i for i, size in enumerate(done.sort_values("size_order")["size"].unique())}
    return done["size"].map(order).astype(float), "training-set size (samples per class, fraction or all)", False


def _mark_crossover(ax, part: pd.DataFrame, row: dict) -> bool:
    """Draw a crossover size and its bootstrap interval on one learning-curve panel; False when there is none."""
    where = part.groupby("size")["x"].median()
    point, low, high = (row.get(k) for k in ("crossover_size", "crossover_low", "crossover_high"))
    if _absent(low) and _absent(point):
        return False
    right = float(where.max())
    lo = float(where.get(low, right)) if not _absent(low) else right
    hi = float(where.get(high, right)) if not _absent(high) else right
    if hi > lo:
        ax.axvspan(lo, hi, color="grey", alpha=0.15, lw=0, zorder=0)
    if not _absent(point) and point in where:
        ax.axvline(float(where[point]), color="black", ls="--", lw=1, zorder=1)
    return True


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def learning_curve(
    frame: pd.DataFrame, palette: dict[str, str], crossover: pd.DataFrame | None = None
) -> Plot | None:
    """Test accuracy against training-set size per strategy, band = ±1 std over seeds, crossover marked."""
    done = done_runs(frame)
    if done.empty:
        return None
    done = done.copy()
    done["acc_pct"] = done["test_acc"] * 100
    done["x"], xlabel, log = _size_axis(done)
    weights = done.loc[done["strategy"] != SCRATCH, "weights"].unique()
    style = "weights" if len(weights) > 1 else None
    panels = list(done.groupby(["backbone", "dataset"], sort=True))
    labels = ordered_labels(done["strategy_label"])
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    crossings = {} if crossover is None else {
        (r["backbone"], r["dataset"]): r for r in crossover.to_dict("records")
    }
    marked = False
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(nrows, ncols, (4.4, 3.4), sharey=True)
        for ax in axes.flat[len(panels):]:
            ax.set_axis_off()
        for ax, ((backbone, dataset), part) in zip(axes.flat, panels):
            sns.lineplot(
                data=part, x="x", y="acc_pct", hue="strategy_label", style=style, palette=palette,
                hue_order=[label for label in labels if label in set(part["strategy_label"])],
                errorbar="sd", marker="o", legend=False, ax=ax,
            )
            if log:
                ax.set_xscale("log")
                # Label the sizes actually run; decades alone hide where the points sit.
                ticks = sorted(part["x"].unique())
                ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ticks = part.drop_duplicates("size").sort_values("size_order")
                ax.set_xticks(ticks["x"], ticks["size"])
            if (backbone, dataset) in crossings:
                marked |= _mark_crossover(ax, part, crossings[(backbone, dataset)])
            ax.set_title(facet_title(backbone, dataset))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)")
            ax.yaxis.set_tick_params(labelleft=True)
        extra = []
        if marked:
            extra = [
                Line2D([], [], color="black", ls="--", lw=1, label="crossover"),
                Line2D([], [], color="grey", alpha=0.3, lw=8, label="95% bootstrap"),
            ]
        legend(fig, palette, labels, extra)
    caption = (
        "Mean test accuracy over seeds at each training-set size; the shaded band is ±1 standard "
        "deviation over seeds (absent with a single seed)."
    )
    if marked:
        caption += (
            " The dashed vertical line marks the crossover: the smallest size from which scratch is no "
            "longer worse than the transfer arm chosen on validation. The grey band is its 95% bootstrap "
            "interval over seeds; a band running to the right edge means transfer may still lead at the "
            "largest size."
        )
    if style:
        caption += " Line style distinguishes weight sources."
    return Plot("learning_curve", "Learning curves: accuracy vs training-set size", caption, fig)


def profile_steps(values: np.ndarray, left: float, right: float) -> tuple[np.ndarray, np.ndarray]:
    """The exact step function x -> share of ``values`` above x, as corners for a steps-post line."""
    x = np.concatenate([[left], np.unique(values), [right]])
    share = (np.asarray(values)[None, :] > x[:, None]).mean(axis=1)
    return x, share


def performance_profile(gains: pd.DataFrame, palette: dict[str, str]) -> Plot | None:
    """Fraction of dataset x size cells whose gain over scratch exceeds x, one line per transfer arm."""
    if gains is None or gains.empty:
        return None
    gains = gains.assign(pts=gains["gain"] * 100)
    backbones = sorted(gains["backbone"].unique())
    weights = sorted(gains["weights"].unique())
    dashes = {w: ("-", "--", ":", "-.")[i % 4] for i, w in enumerate(weights)}
    low, high = float(gains["pts"].min()), float(gains["pts"].max())
    pad = max((high - low) * 0.1, 1.0)
    left, right = min(low, 0.0) - pad, max(high, 0.0) + pad
    labels = ordered_labels(gains["strategy_label"])
    with matplotlib.rc_context(STYLE):
        ncols = min(len(backbones), 3)
        fig, axes = new_figure(math.ceil(len(backbones) / ncols), ncols, (4.6, 3.4), sharey=True)
        for ax in axes.flat[len(backbones):]:
            ax.set_axis_off()
        for ax, backbone in zip(axes.flat, backbones):
            part = gains[gains["backbone"] == backbone]
            for (label, weight), arm in part.groupby(["strategy_label", "weights"], sort=True):
                x, share = profile_steps(arm["pts"].to_numpy(), left, right)
                ax.plot(x, share, color=palette.get(label, "black"), ls=dashes[weight], lw=1.8, drawstyle="steps-post")
            ax.axvline(0.0, color=SCRATCH_COLOUR, lw=1, ls=":")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(facet_title(backbone))
            ax.set_xlabel("gain over scratch, x (pts)")
            ax.set_ylabel("fraction of cells with gain > x")
            ax.yaxis.set_tick_params(labelleft=True)
        extra = [Line2D([], [], color="grey", ls=dashes[w], label=w) for w in weights] if len(weights) > 1 else []
        legend(fig, palette, labels, extra)
    n_cells = gains.groupby(["backbone", "weights", "strategy_label"]).size().max()
    caption = (
        "Performance profile: for each transfer arm, the fraction of dataset × size cells (up to "
        f"{n_cells}) whose mean paired gain over scratch exceeds x. A curve further right and higher "
        "is better everywhere; where it crosses the dotted zero line is the share of cells it wins. "
        "Cells with a flagged run are left out."
    )
    if len(weights) > 1:
        caption += " Line style distinguishes weight sources."
    return Plot("performance_profile", "Performance profile across datasets", caption, fig)


def gain_heatmap(frame: pd.DataFrame) -> Plot | None:
    """Transfer gain over scratch (points) as strategy x size heatmaps per backbone and dataset."""
    cost = cost_table(frame)
    if cost.empty:
        return None
    results = results_table(frame)
    cost = cost.merge(
        results[["backbone", "dataset", "size", "size_order"]].drop_duplicates(), on=["backbone", "dataset", "size"]
    )
    several = cost.groupby(["strategy_label"])["weights"].nunique().max() > 1
    cost["arm"] = cost["strategy_label"] + (" · " + cost["weights"] if several else "")
    panels = list(cost.groupby(["backbone", "dataset"], sort=True))
    limit = max(float(cost["gain_pts"].abs().max()), 1.0)
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    n_arms = cost["arm"].nunique()
    n_sizes = cost["size"].nunique()
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(nrows, ncols, (1.3 * n_sizes + 3.0, 0.5 * n_arms + 1.6))
        for ax in axes.flat[len(panels):]:
            ax.set_axis_off()
        for ax, ((backbone, dataset), part) in zip(axes.flat, panels):
            sizes = part.sort_values("size_order")["size"].unique()
            arms = sorted(part["arm"].unique(), key=lambda a: (strategy_sort_key(a.split(" · ")[0]), a))
            grid = part.pivot_table(index="arm", columns="size", values="gain_pts").reindex(index=arms, columns=sizes)
            sns.heatmap(
                grid, ax=ax, cmap="RdBu", vmin=-limit, vmax=limit, annot=True, fmt="+.1f",
                linewidths=0.5, cbar_kws={"label": "gain over scratch (pts)"},
            )
            ax.set_title(facet_title(backbone, dataset))
            ax.set_xlabel("training-set size")
            ax.set_ylabel("strategy")
            ax.tick_params(axis="y", rotation=0)
    caption = (
        "Mean test accuracy of each transfer strategy minus mean test accuracy of scratch in the "
        "same backbone, dataset and size, in percentage points; blue is a gain, red a loss."
    )
    return Plot("transfer_gain", "Transfer gain over scratch", caption, fig)


def pareto_plot(frame: pd.DataFrame, palette: dict[str, str]) -> Plot | None:
    """Accuracy vs wall time per dataset and size, Pareto front marked, markers sized by trainable params."""
    results = results_table(frame).dropna(subset=["wall_s_mean", "acc_mean"])
    if results.empty:
        return None
    results = results.assign(acc_pct=results["acc_mean"] * 100)
    datasets = sorted(results["dataset"].unique())
    sizes = list(results.sort_values("size_order")["size"].unique())
    backbones = sorted(results["backbone"].unique())
    markers = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(backbones)}
    params = results["trainable_params"].fillna(0).clip(lower=0)
    top = float(params.max()) or 1.0
    results["marker_area"] = 30 + 320 * np.sqrt(params / top)
    labels = ordered_labels(results["strategy_label"])
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(datasets), len(sizes), (3.9, 3.3))
        for r, dataset in enumerate(datasets):
            for c, size in enumerate(sizes):
                ax = axes[r, c]
                part = results[(results["dataset"] == dataset) & (results["size"] == size)]
                if part.empty:
                    ax.set_axis_off()
                    continue
                front = part[pareto_mask(part["wall_s_mean"], part["acc_pct"])].sort_values("wall_s_mean")
                ax.step(front["wall_s_mean"], front["acc_pct"], where="post", color="black", ls="--", lw=1, zorder=1)
                for _, row in part.iterrows():
                    ax.scatter(
                        row["wall_s_mean"], row["acc_pct"], s=row["marker_area"], marker=markers[row["backbone"]],
                        color=palette[row["strategy_label"]], alpha=0.85, edgecolor="white", lw=0.8, zorder=2,
                    )
                ax.scatter(
                    front["wall_s_mean"], front["acc_pct"], s=front["marker_area"], marker="o",
                    facecolor="none", edgecolor="black", lw=1.3, zorder=3,
                )
                spread = part["wall_s_mean"].max() / max(part["wall_s_mean"].min(), 1e-9)
                if spread > 20:
                    ax.set_xscale("log")
                ax.set_title(facet_title(dataset, f"size {size}"))
                ax.set_xlabel("mean wall time per run (s)")
                ax.set_ylabel("mean test accuracy (%)")
        extra = [Line2D([], [], color="black", ls="--", lw=1, label="Pareto front")]
        # Two reference markers let a reader decode marker area into trainable parameters.
        for count in sorted({float(params[params > 0].min()) if (params > 0).any() else top, top}):
            area = 30 + 320 * math.sqrt(count / top)
            extra.append(Line2D([], [], color="grey", marker="o", ls="none", markersize=math.sqrt(area),
                                label=f"{human_count(count)} trainable"))
        if len(backbones) > 1:
            extra += [
                Line2D([], [], color="grey", marker=markers[b], ls="none", label=b) for b in backbones
            ]
        legend(fig, palette, labels, extra)
    caption = (
        "Each point is one strategy (and backbone) at one size: mean wall time against mean test "
        "accuracy. Marker area grows with the number of trainable parameters; circled points on "
        "the dashed line are Pareto-optimal (nothing else is both faster and more accurate)."
    )
    return Plot("pareto", "Accuracy vs wall time", caption, fig)


def epoch_curves(frame: pd.DataFrame, epochs: pd.DataFrame, palette: dict[str, str]) -> Plot | None:
    """Validation accuracy per epoch for finished runs, band = ±1 std over seeds."""
    if epochs.empty:
        return None
    done_ids = set(done_runs(frame)["run_id"])
    curves = epochs[epochs["run_id"].isin(done_ids) & epochs["val_acc"].notna()].copy()
    if curves.empty:
        return None
    curves["val_pct"] = curves["val_acc"] * 100
    order = frame.drop_duplicates("size").set_index("size")["size_order"]
    curves["size_order"] = curves["size"].map(order)
    curves["panel"] = curves["backbone"] + " · " + curves["dataset"]
    panels = sorted(curves["panel"].unique())
    sizes = list(curves.sort_values("size_order")["size"].unique())
    labels = ordered_labels(curves["strategy_label"])
    weights = curves.loc[curves["strategy"] != SCRATCH, "weights"].unique()
    style = "weights" if len(weights) > 1 else None
    with matplotlib.rc_context(STYLE):
        fig, axes = new_figure(len(panels), len(sizes), (3.6, 2.9), sharey=True)
        for r, panel in enumerate(panels):
            for c, size in enumerate(sizes):
                ax = axes[r, c]
                part = curves[(curves["panel"] == panel) & (curves["size"] == size)]
                if part.empty:
                    ax.set_axis_off()
                    continue
                sns.lineplot(
                    data=part, x="epoch", y="val_pct", hue="strategy_label", style=style, palette=palette,
                    hue_order=[label for label in labels if label in set(part["strategy_label"])],
                    errorbar="sd", legend=False, ax=ax,
                )
                ax.set_title(facet_title(panel, f"size {size}"))
                ax.set_xlabel("epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylabel("validation accuracy (%)")
        legend(fig, palette, labels)
    caption = "Validation accuracy after each epoch, mean over seeds with a ±1 std band."
    return Plot("epoch_curves", "Per-epoch validation curves", caption, fig)


def build_plots(
    frame: pd.DataFrame, epochs: pd.DataFrame, *, crossover: pd.DataFrame | None = None,
    gains: pd.DataFrame | None = None,
) -> list[Plot]:
    """Every figure the data supports, sharing one strategy palette.

    ``crossover`` (from ``across.crossovers``) is marked on the learning curves; ``gains`` (from
    ``across.cell_gains``) feeds the performance profile, which is left out without it.
    """
    palette = strategy_palette(frame["strategy_label"]) if not frame.empty else {}
    built = [
        learning_curve(frame, palette, crossover),
        performance_profile(gains, palette),
        gain_heatmap(frame),
        pareto_plot(frame, palette),
        efficiency_plot(frame, palette),
        epoch_curves(frame, epochs, palette),
    ]
    return [plot for plot in built if plot is not None]
