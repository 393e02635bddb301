"""What every figure of the report shares: the Plot record, one strategy palette, the Agg figure, the legend, saving.

Figures are created without pyplot so rendering keeps no global figure state, opens no window
and leaves the caller's matplotlib backend and rcParams untouched. One palette maps each
strategy label to one colour in every figure.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.tables import SCRATCH, ordered_labels

SCRATCH_COLOUR = "#4d4d4d"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("notebook", font_scale=0.85),
    "svg.fonttype": "none",
    "figure.dpi": 100,
}


@dataclass
class Plot:
    """A finished figure with the words that go around it."""

    name: str
    title: str
    caption: str
    figure: Figure


def strategy_palette(labels: Iterable[str]) -> dict[str, str]:
    """Map every strategy label to one hex colour: scratch dark grey, the rest colour-blind safe."""
    ordered = ordered_labels(labels)
    others = [label for label in ordered if label.split("[", 1)[0] != SCRATCH]
    # The colour-blind palette's grey (index 7) is reserved in spirit for scratch; skip it.
    base = [c for i, c in enumerate(sns.color_palette("colorblind", 10).as_hex()) if i != 7]
    if len(others) > len(base):
        base = sns.color_palette("husl", len(others)).as_hex()
    palette = {label: base[i] for i, label in enumerate(others)}
    palette.update({label: SCRATCH_COLOUR for label in ordered if label.split("[", 1)[0] == SCRATCH})
    return palette


def new_figure(nrows: int, ncols: int, panel: tuple[float, float], **kw) -> tuple[Figure, np.ndarray]:
    """An Agg-backed figure of ``nrows`` x ``ncols`` panels of ``panel`` inches each, without pyplot."""
    fig = Figure(figsize=(panel[0] * ncols + 0.6, panel[1] * nrows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def legend(fig: Figure, palette: dict[str, str], labels: list[str], extra: list[Line2D] = ()) -> None:
    """One legend above all panels: a line per strategy label, then any ``extra`` handles."""
    handles = [Line2D([], [], color=palette[label], marker="o", lw=2, label=label) for label in labels]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 6), frameon=False)


def human_count(value: float) -> str:
    """Short parameter counts for labels: 950, 12.3k, 11.2M, 1.1B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def facet_title(*parts: str) -> str:
    """A panel title from its non-empty parts."""
    return " · ".join(str(p) for p in parts if p)


def save_plot(plot: Plot, folder: Path, *, dpi: int = 110) -> bytes:
    """Write ``<name>.png`` and ``<name>.svg`` under ``folder``; return the PNG bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    plot.figure.savefig(buffer, format="png", dpi=dpi)
    png = buffer.getvalue()
    (folder / f"{plot.name}.png").write_bytes(png)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "transfer-bench"}):
        plot.figure.savefig(folder / f"{plot.name}.svg", format="svg", metadata={"Date": None})
    return png
