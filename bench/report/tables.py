"""The report's tables, each a pure function of ``store.frame()``.

Accuracies stay fractions in [0, 1] in every table (CSV readers get raw numbers); gains over
scratch are in percentage points because that is how they are read and compared.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import pandas as pd

SCRATCH = "scratch"

# The vocabulary users know, in the order a reader expects it; anything else sorts after.
from bench.strategies import STRATEGY_ORDER  # noqa: E402

RESULT_COLUMNS = [
    "backbone", "dataset", "size", "size_order", "n_train", "strategy", "strategy_label", "weights",
    "n", "acc_mean", "acc_std", "balanced_acc_mean", "macro_f1_mean", "wall_s_mean",
    "trainable_params", "total_params",
]

COST_COLUMNS = [
    "backbone", "dataset", "size", "strategy_label", "weights", "acc_mean", "scratch_acc_mean",
    "gain_pts", "wall_s_mean", "scratch_wall_s_mean", "extra_wall_s", "gain_pts_per_extra_s",
    "trainable_params", "gain_pts_per_m_trainable", "note",
]

FAILED_COLUMNS = ["backbone", "weights", "dataset", "size", "strategy_label", "seed", "attempts", "error", "run_id"]


def done_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished runs that have a test accuracy."""
    if frame.empty:
        return frame
    mask = (frame["status"] == "done") & frame["test_acc"].notna()
    return frame.loc[mask]


def _natural(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def strategy_sort_key(label: str) -> tuple:
    """Sort key for strategy labels: scratch, frozen, partial, full, lp_ft, then the rest; k=2 < k=10."""
    name = label.split("[", 1)[0]
    rank = STRATEGY_ORDER.index(name) if name in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return (rank, name, _natural(label))


def ordered_labels(labels) -> list[str]:
    """Distinct strategy labels in reading order."""
    return sorted({str(label) for label in labels}, key=strategy_sort_key)


def _sort(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table.reset_index(drop=True)
    keys = table["strategy_label"].map(strategy_sort_key)
    ordered = table.assign(_key=keys).sort_values(
        ["backbone", "dataset", "size_order", "_key", "weights"], kind="stable"
    )
    return ordered.drop(columns="_key").reset_index(drop=True)


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy mean and std over seeds per backbone x dataset x size x strategy x weights."""
    done = done_runs(frame)
    if done.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    keys = ["backbone", "dataset", "size", "strategy", "strategy_label", "weights"]
    table = done.groupby(keys, sort=False, dropna=False).agg(
        size_order=("size_order", "first"),
        n_train=("n_train", "median"),
        n=("seed", "nunique"),
        acc_mean=("test_acc", "mean"),
        acc_std=("test_acc", "std"),
        balanced_acc_mean=("test_balanced_acc", "mean"),
        macro_f1_mean=("test_macro_f1", "mean"),
        wall_s_mean=("wall_s", "mean"),
        trainable_params=("trainable_params", "median"),
        total_params=("total_params", "median"),
    )
    return _sort(table.reset_index()[RESULT_COLUMNS])


def cost_table(frame: pd.DataFrame, results: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each transfer arm's accuracy gain over scratch of the same cell, per extra second and per parameter.

    ``gain_pts_per_extra_s`` is NaN when the arm is not slower than scratch: it then costs
    nothing extra and the ``note`` says so instead of dividing by a non-positive time.
    """
    results = results_table(frame) if results is None else results
    scratch = results[results["strategy"] == SCRATCH][
        ["backbone", "dataset", "size", "acc_mean", "wall_s_mean"]
    ].rename(columns={"acc_mean": "scratch_acc_mean", "wall_s_mean": "scratch_wall_s_mean"})
    scratch = scratch.drop_duplicates(subset=["backbone", "dataset", "size"])
    transfer = results[results["strategy"] != SCRATCH]
    if transfer.empty or scratch.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    table = transfer.merge(scratch, on=["backbone", "dataset", "size"], how="inner")
    table["gain_pts"] = (table["acc_mean"] - table["scratch_acc_mean"]) * 100
    table["extra_wall_s"] = table["wall_s_mean"] - table["scratch_wall_s_mean"]
    slower = table["extra_wall_s"] > 0
    table["gain_pts_per_extra_s"] = (table["gain_pts"] / table["extra_wall_s"]).where(slower)
    millions = table["trainable_params"] / 1e6
    table["gain_pts_per_m_trainable"] = (table["gain_pts"] / millions).where(millions > 0)
    table["note"] = ["" if s else "no slower than scratch" for s in slower]
    table.loc[table["extra_wall_s"].isna(), "note"] = "wall time missing"
    return _sort(table)[COST_COLUMNS]


PROBE_COLUMNS = ["backbone", "weights", "dataset", "size", "runs", "l2_chosen", "scaling_chosen", "val_acc_mean"]


def probe_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The linear probe's L2 strength and feature scaling chosen on validation, per cell: the frozen arm's tuning."""
    if frame.empty or "probe_l2" not in frame or frame["probe_l2"].isna().all():
        return pd.DataFrame(columns=PROBE_COLUMNS)
    runs = done_runs(frame)
    runs = runs[runs["probe_l2"].notna()]
    rows = []
    for (backbone, weights, dataset, size), cell in runs.groupby(["backbone", "weights", "dataset", "size"], sort=False):
        chosen = sorted(cell["probe_l2"].unique())
        # Runs stored before the scaling was chosen have none to show.
        scalings = cell["probe_scaling"].dropna().value_counts() if "probe_scaling" in cell else pd.Series(dtype=int)
        rows.append({
            "backbone": backbone, "weights": weights, "dataset": dataset, "size": size, "runs": len(cell),
            "l2_chosen": ", ".join(f"{v:.0e}" for v in chosen),
            "scaling_chosen": ", ".join(f"{name} x{count}" if len(scalings) > 1 else str(name)
                                        for name, count in sorted(scalings.items(), key=lambda nc: (-nc[1], nc[0]))),
            "val_acc_mean": float(cell["val_acc"].mean()),
            "size_order": float(cell["size_order"].iloc[0]),
        })
    table = pd.DataFrame(rows)
    return table.sort_values(["backbone", "dataset", "size_order"], kind="stable")[PROBE_COLUMNS].reset_index(drop=True)


def _first_line(text: object, limit: int = 300) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "(no error message)"
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else "(no error message)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failed_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Failed runs with the first line of their error."""
    if frame.empty:
        return pd.DataFrame(columns=FAILED_COLUMNS)
    failed = frame[frame["status"] == "failed"].copy()
    failed["error"] = failed["error"].map(_first_line)
    failed = failed.sort_values(["backbone", "dataset", "size_order", "strategy_label", "seed"], kind="stable")
    return failed[FAILED_COLUMNS].reset_index(drop=True)


def data_notes_table(frame: pd.DataFrame) -> pd.DataFrame:
    """What the datasets skipped (corrupt images, empty classes), once per dataset and note."""
    rows = []
    if "notes" in frame:
        for dataset, text in zip(frame["dataset"], frame["notes"]):
            for note in json.loads(text) if isinstance(text, str) and text else []:
                rows.append((dataset, note))
    table = pd.DataFrame(rows, columns=["dataset", "note"])
    return table.drop_duplicates().reset_index(drop=True)


def _versions(text: object) -> dict[str, str]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def versions_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Library versions seen across finished runs: one row per library, ``mixed`` when several."""
    counts: dict[str, dict[str, int]] = {}
    for text in frame.get("versions", pd.Series(dtype=object)):
        for library, version in _versions(text).items():
            seen = counts.setdefault(library, {})
            seen[version] = seen.get(version, 0) + 1
    rows = [
        {
            "library": library,
            "versions": ", ".join(sorted(seen, key=_natural)),
            "runs": sum(seen.values()),
            "mixed": len(seen) > 1,
        }
        for library, seen in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["library", "versions", "runs", "mixed"])


def _counted(values: pd.Series) -> str:
    counts = values.dropna().astype(str).value_counts()
    return ", ".join(f"{value} ({count} runs)" for value, count in sorted(counts.items())) or "unknown"


def environment_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Where and with which code the results were produced: devices, training versions, time span."""
    rows = [
        ("devices", _counted(frame["device"]) if "device" in frame else "unknown"),
        ("training_version", _counted(frame["training_version"]) if "training_version" in frame else "unknown"),
    ]
    finished = frame["finished_at"].dropna() if "finished_at" in frame else pd.Series(dtype=float)
    if not finished.empty:
        first = pd.to_datetime(finished.min(), unit="s", utc=True).strftime("%Y-%m-%d %H:%M UTC")
        last = pd.to_datetime(finished.max(), unit="s", utc=True).strftime("%Y-%m-%d %H:%M UTC")
        rows.append(("runs finished", f"{first} to {last}"))
    if "wall_s" in frame and frame["wall_s"].notna().any():
        rows.append(("total wall time", f"{frame['wall_s'].sum() / 3600:.2f} h over {len(frame)} runs"))
    return pd.DataFrame(rows, columns=["item", "value"])


def training_version_warning(frame: pd.DataFrame) -> str | None:
    """A warning sentence when the store mixes results of more than one training version."""
    if "training_version" not in frame:
        return None
    versions = sorted(frame["training_version"].dropna().astype(str).unique(), key=_natural)
    if len(versions) <= 1:
        return None
    return (
        f"This store holds results from {len(versions)} training versions ({', '.join(versions)}); "
        "numbers from different versions of the training code may not be comparable."
    )


@dataclass(frozen=True)
class Progress:
    """How far the suite has got: finished, failed, running and planned cells."""

    n_done: int
    n_failed: int
    n_running: int
    planned: int | None

    @property
    def finished(self) -> int:
        return self.n_done + self.n_failed

    @property
    def partial(self) -> bool:
        return self.planned is not None and self.planned > self.finished

    def sentence(self) -> str:
        """One line saying how complete the results are."""
        counts = f"{self.n_done} done, {self.n_failed} failed"
        if self.n_running:
            counts += f", {self.n_running} running"
        if self.planned is None:
            return f"{counts} (planned total unknown)."
        if self.partial:
            return (
                f"PARTIAL RESULTS: {self.finished} of {self.planned} planned cells finished ({counts}); "
                "every number below may change when the suite completes."
            )
        return f"All {self.planned} planned cells finished ({counts})."


def progress(frame: pd.DataFrame, planned: object, n_running: int = 0) -> Progress:
    """Count finished and failed runs against the suite's planned cell count (when known)."""
    statuses = frame["status"] if not frame.empty else pd.Series(dtype=object)
    try:
        total = int(planned) if planned is not None else None
    except (TypeError, ValueError):
        total = None
    return Progress(
        n_done=int((statuses == "done").sum()),
        n_failed=int((statuses == "failed").sum()),
        n_running=n_running,
        planned=total,
    )
