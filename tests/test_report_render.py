"""Rendering a real small results store: files, self-containment, content, tables and errors."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.report_fixtures import (
    EXTENSION_WALL_S,
    FAILED_ERROR,
    SIZES,
    STRATEGIES,
    build_store,
    build_tuned_store,
    frame_of,
    run_rows,
)

from bench.cli.output import verdict_lines
from bench.errors import ReportError
from bench.records import RunResult, RunSpec
from bench.report import Report, render_report
from bench.report.plots import (
    PLOT_NAMES,
    learning_curve,
    pareto_mask,
    performance_profile,
    profile_steps,
)
from bench.report.plotkit import strategy_palette
from bench.report.across import cell_gains, crossovers
from bench.report.tables import (
    cost_table,
    failed_table,
    ordered_labels,
    probe_table,
    progress,
    results_table,
    training_version_warning,
)
from bench.store import ResultStore


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Report, float]:
    root = tmp_path_factory.mktemp("render")
    db = build_store(root / "quick.db")
    # CPU seconds, not wall-clock ones: other processes on a busy machine do not count against the render.
    start = time.process_time()
    report = render_report(db, root / "report")
    return report, time.process_time() - start


@pytest.fixture(scope="module")
def page(rendered) -> str:
    return rendered[0].html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def markdown(rendered) -> str:
    return rendered[0].md_path.read_text(encoding="utf-8")


def test_report_record(rendered) -> None:
    report, seconds = rendered
    n_cells = len(SIZES) * len(STRATEGIES) * 3
    assert (report.n_done, report.n_failed) == (n_cells - 1, 1)
    assert report.partial and report.planned == n_cells + 12
    assert len(report.verdict) == len(SIZES)
    assert sorted(report.plots) == sorted(PLOT_NAMES)
    assert seconds < 10


def test_all_files_exist(rendered) -> None:
    out = rendered[0].out_dir
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    for name in PLOT_NAMES:
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert "<svg" in (out / "plots" / f"{name}.svg").read_text(encoding="utf-8")[:2000]
    for name in (
        "verdict", "arm_verdicts", "crossover", "scratch_equivalent", "across_datasets", "results", "cost",
        "failed", "environment", "versions", "runs",
    ):
        assert (out / "tables" / f"{name}.csv").is_file()
    assert not (out / "tables" / "logme.csv").exists()  # no run recorded a LogME score


def test_html_is_self_contained(page: str) -> None:
    assert not re.search(r"<(link|iframe|object|embed)\b", page, re.I)
    assert not re.search(r"<script\b", page, re.I)
    assert not re.search(r"@import|url\(", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    for href in re.findall(r"""href\s*=\s*["']([^"']*)""", page, re.I):
        assert href.startswith("#"), href
    images = re.findall(r"<img\b[^>]*>", page, re.I)
    assert len(images) == len(PLOT_NAMES)
    for tag in images:
        match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert match, tag[:120]
        assert base64.b64decode(match.group(1)).startswith(b"\x89PNG")


def test_verdict_comes_first(page: str, markdown: str) -> None:
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", page)
    assert headings[0].startswith("Verdict")
    assert re.findall(r"^## (.*)$", markdown, re.M)[0].startswith("Verdict")
    assert "transfer wins" in page and "no clear difference" in page
    assert "scratch catches up only at the largest size, all." in page


def test_report_names_its_methods_and_selection(page: str, markdown: str) -> None:
    for text in (page, markdown):
        assert "chosen by its mean validation accuracy, never by test accuracy" in text
        assert "optimistic" not in text
        for method in ("Student-t", "sign-flip", "Wilson", "Holm", "stratified", "IQM", "minimum effect"):
            assert method in text, method
        assert "1.0 pts (the minimum effect)" in text
        assert "95% Student-t CI (pts)" in text and "Holm-adjusted p" in text
    headings = re.findall(r"^## (.*)$", markdown, re.M)
    for heading in ("Every transfer arm vs scratch", "Across datasets", "Scratch-equivalent data"):
        assert heading in headings
    assert headings.index("Across datasets") + 1 == headings.index("Performance profile across datasets")
    assert "Does LogME predict the ranking?" not in headings  # no LogME scores in this store
    assert "matches scratch trained on about" in markdown and "/class" in markdown


def test_partial_is_prominent(page: str, markdown: str) -> None:
    assert re.search(r'class="banner partial">PARTIAL RESULTS: 36 of 48 planned cells', page)
    assert "> **PARTIAL:**" in markdown
    assert page.index("PARTIAL RESULTS") < page.index("<h2")


def test_failed_run_and_its_error_appear(page: str, markdown: str) -> None:
    for text in (page, markdown):
        assert FAILED_ERROR in text
        assert "(see traceback)" not in text  # only the first line of the error is shown
        assert "1 run failed" in text


def test_environment_is_reported(page: str) -> None:
    assert "training_version" in page and "2.14.1" in page and "cpu (36 runs)" in page
    assert "training versions" not in page  # one version: no warning


def test_markdown_links_existing_pngs(rendered, markdown: str) -> None:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == len(PLOT_NAMES)
    for link in links:
        assert link.endswith(".png") and (rendered[0].out_dir / link).is_file()
    assert "| backbone | dataset | size |" in markdown


def test_csv_tables_parse_back(rendered) -> None:
    tables = rendered[0].out_dir / "tables"
    results = pd.read_csv(tables / "results.csv", dtype={"size": str})
    assert len(results) == len(SIZES) * len(STRATEGIES)
    assert set(results["size"]) == set(SIZES)
    assert results["acc_mean"].between(0, 1).all()
    assert results.loc[results["strategy"] == "full", "n"].tolist() == [3, 2, 3]
    verdict = pd.read_csv(tables / "verdict.csv", dtype={"size": str})
    pd.testing.assert_series_equal(verdict["mean_diff"], rendered[0].verdict["mean_diff"], check_dtype=False)
    for column in (
        "p_value", "p_method", "prob_improvement", "prob_improvement_low", "prob_improvement_high",
        "ci_low", "ci_high", "ci_method", "min_effect", "call", "selected_on", "flags",
        "scratch_equivalent_n", "scratch_equivalent_ratio",
    ):
        assert column in verdict, column
    assert (verdict["ci_method"] == "Student t").all()
    assert (verdict["p_method"] == "exact sign-flip permutation").all()
    assert (verdict["min_effect"] == 0.01).all()
    assert (verdict["selected_on"] == "validation").all()
    assert verdict["scratch_equivalent_ratio"].between(0, 100).all()
    arms = pd.read_csv(tables / "arm_verdicts.csv", dtype={"size": str})
    assert len(arms) == len(SIZES) * (len(STRATEGIES) - 1)
    assert (arms["p_holm"] >= arms["p_value"]).all()
    failed = pd.read_csv(tables / "failed.csv")
    assert len(failed) == 1 and failed.loc[0, "error"] == FAILED_ERROR
    cost = pd.read_csv(tables / "cost.csv", dtype={"size": str})
    assert len(cost) == len(SIZES) * (len(STRATEGIES) - 1)
    runs = pd.read_csv(tables / "runs.csv")
    assert len(runs) == len(SIZES) * len(STRATEGIES) * 3


def test_rerender_into_the_same_folder(rendered) -> None:
    report = rendered[0]
    db = report.out_dir.parent / "quick.db"
    again = render_report(db, report.out_dir, title="Digits, again")
    pd.testing.assert_frame_equal(again.verdict, report.verdict)
    assert "<title>Digits, again</title>" in again.html_path.read_text(encoding="utf-8")
    assert not list(report.out_dir.glob(".*.tmp"))


def test_complete_store_is_not_partial_and_mixed_versions_warn(tmp_path: Path) -> None:
    db = build_store(tmp_path / "full.db", planned_extra=0, failed=False, training_versions=("1", "2"))
    report = render_report(db, tmp_path / "out")
    assert not report.partial and report.n_failed == 0
    text = report.html_path.read_text(encoding="utf-8")
    assert "PARTIAL" not in text and "No run failed." in text
    assert "2 training versions (1, 2)" in text


def test_missing_store_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no results store") as caught:
        render_report(tmp_path / "results" / "x.db", tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_empty_store_is_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    ResultStore(db).close()
    with pytest.raises(ReportError, match=r"x\.db: no finished runs yet$"):
        render_report(db, tmp_path / "out")


def test_corrupt_store_is_report_error(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    db.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ReportError):
        render_report(db, tmp_path / "out")


def test_report_does_not_import_torch(rendered, tmp_path: Path) -> None:
    db = rendered[0].out_dir.parent / "quick.db"
    code = (
        "import sys; from bench.report import render_report; "
        f"render_report({str(db)!r}, {str(tmp_path / 'out')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_min_effect_comes_from_the_stored_suite(tmp_path: Path) -> None:
    db = build_store(tmp_path / "q.db", failed=False)
    with ResultStore(db) as store:
        store.set_meta("suite", {"name": "quick", "verdict": {"min_effect": 0.3}})
    report = render_report(db, tmp_path / "out")
    assert (report.verdict["min_effect"] == 0.3).all()
    # +25 pts with a tight interval is inside a ±30-point band: equivalent, not a win.
    assert (report.verdict["call"] != "transfer wins").all()
    assert "30.0 pts (the minimum effect)" in report.md_path.read_text(encoding="utf-8")
    with ResultStore(db) as store:
        store.set_meta("suite", {"name": "quick", "verdict": {"min_effect": "big"}})
    with pytest.raises(ReportError, match="min_effect"):
        render_report(db, tmp_path / "out2")


def test_several_seeds_without_scratch_never_claim_one_seed(tmp_path: Path) -> None:
    db = tmp_path / "noscratch.db"
    with ResultStore(db) as store:
        for seed in (0, 1, 2):
            spec = RunSpec(
                run_id=f"full{seed}", suite="quick", backbone="resnet18", weights="pretrain:shapes",
                dataset={"name": "digits"}, size="10", strategy="full", strategy_params={}, seed=seed, training={},
            )
            store.write(spec, RunResult(
                run_id=spec.run_id, status="done", test_acc=0.8 + seed / 100, test_balanced_acc=0.8,
                test_macro_f1=0.8, val_acc=0.8, wall_s=1.0, trainable_params=10, total_params=10, device="cpu",
                train_indices=list(range(100)),
            ))
    report = render_report(db, tmp_path / "out")
    assert list(report.verdict["call"]) == ["no scratch baseline"]
    for path in (report.html_path, report.md_path, report.out_dir / "tables" / "verdict.csv"):
        text = path.read_text(encoding="utf-8")
        assert "1 seed" not in text and "one seed" not in text and "one paired seed" not in text
    assert "no scratch baseline" in report.md_path.read_text(encoding="utf-8")


def test_a_call_against_an_arm_at_its_grids_edge_waits_for_the_extension(tmp_path: Path) -> None:
    """Scratch's best lr is its grid's largest: no win over it, until a point beyond the edge puts it inside."""
    edged = render_report(build_tuned_store(tmp_path / "edged.db"), tmp_path / "edged")
    row = edged.verdict.iloc[0]
    assert (row["call"], row["best_strategy"]) == ("inconclusive", "full")
    assert row["withheld"] == "scratch still at the edge of its grid, lr=0.01 (largest)"
    verdict = pd.read_csv(edged.out_dir / "tables" / "verdict.csv")
    assert verdict.loc[0, "withheld"] == row["withheld"]
    sentence = "inconclusive: scratch still at the edge of its grid, lr=0.01 (largest), so it may be under-tuned"
    markdown = edged.md_path.read_text(encoding="utf-8")
    assert sentence in markdown and sentence in edged.html_path.read_text(encoding="utf-8")
    assert "1 of 2 arms still chose a value at the edge of the points tried" in markdown
    assert "0 of 2 arms extended the sweep beyond the suite's grid" in markdown
    assert verdict_lines(edged.verdict).splitlines()[-1].startswith(f"resnet18 digits 10: {sentence}")

    extended = render_report(build_tuned_store(tmp_path / "extended.db", extend=True), tmp_path / "extended")
    row = extended.verdict.iloc[0]
    assert (row["call"], row["withheld"], row["scratch_edge"]) == ("transfer wins", "", "")
    tuning = pd.read_csv(extended.out_dir / "tables" / "tuning.csv").set_index("strategy")
    assert tuning.loc["scratch", ["grid_points", "extended_points", "extension_runs"]].tolist() == [4, 1, 1]
    assert tuning.loc["scratch", "extension_s"] == EXTENSION_WALL_S
    assert tuning.loc["full", ["extended_points", "extension_runs"]].tolist() == [0, 0]
    markdown = extended.md_path.read_text(encoding="utf-8")
    assert "1 of 2 arms extended the sweep beyond the suite's grid, where the best value lay at its edge, " \
        f"in 1 run and {EXTENSION_WALL_S:.0f} s" in markdown
    assert "still chose a value at the edge" not in markdown


def test_each_baseline_is_judged_by_its_own_edge(tmp_path: Path) -> None:
    """Plain scratch is still at its edge; compute-matched scratch, tuned inside its grid, can lose."""
    report = render_report(build_tuned_store(tmp_path / "m.db", matched=True), tmp_path / "m")
    calls = report.verdict.set_index("baseline")[["call", "withheld"]]
    assert calls.loc["scratch", "call"] == "inconclusive"
    assert tuple(calls.loc["scratch[budget=2]"]) == ("transfer wins", "")
    markdown = report.md_path.read_text(encoding="utf-8")
    section = markdown[markdown.index("## Verdict against compute-matched scratch: scratch[budget=2]"):]
    assert "transfer wins: full (pretrain:shapes)" in section.split("\n## ")[0]



def test_a_compute_matched_scratch_adds_verdict_rows_but_not_crossover_sizes(tmp_path: Path) -> None:
    """The crossover is where plain scratch catches up: one comparison per size, whatever other baselines ran."""
    report = render_report(build_tuned_store(tmp_path / "m.db", matched=True), tmp_path / "m")
    assert sorted(report.verdict["baseline"]) == ["scratch", "scratch[budget=2]"]
    crossover = pd.read_csv(report.out_dir / "tables" / "crossover.csv", dtype=str)
    assert list(crossover["sizes_compared"]) == ["10"]
    assert list(report.crossover["sizes_compared"]) == ["10"]
    # The terminal's summary says which baseline each of the two rows of the one size is against.
    header, _, *rows = verdict_lines(report.verdict).splitlines()[:4]
    assert "against" in header.split() and "vs scratch" not in header
    assert [row.split()[4] for row in rows] == ["scratch", "scratch[budget=2]"]
    plain = verdict_lines(report.verdict[report.verdict["baseline"] == "scratch"]).splitlines()
    assert "vs scratch" in plain[0] and "against" not in plain[0].split()


def test_a_render_groups_each_baseline_frame_into_cells_once(tmp_path: Path, monkeypatch) -> None:
    import bench.report.across
    import bench.report.cells
    import bench.report.equivalent
    import bench.report.render
    import bench.report.verdict

    grouped = []
    real = bench.report.cells.group_cells

    def counted(frame):
        grouped.append(len(frame))
        return real(frame)

    for module in (bench.report.across, bench.report.equivalent, bench.report.render, bench.report.verdict):
        monkeypatch.setattr(module, "group_cells", counted)
    render_report(build_tuned_store(tmp_path / "m.db", matched=True), tmp_path / "m")
    assert len(grouped) == 2  # plain scratch's frame, then the compute-matched scratch's

# -- the pure pieces under the page ---------------------------------------------------------


def test_palette_is_stable_and_distinct() -> None:
    labels = ["full", "scratch", "partial[k=2]", "frozen", "partial[k=10]"]
    palette = strategy_palette(labels)
    assert palette == strategy_palette(reversed(labels))
    assert palette["scratch"] == "#4d4d4d"
    assert len(set(palette.values())) == len(labels)
    assert ordered_labels(labels) == ["scratch", "frozen", "partial[k=2]", "partial[k=10]", "full"]


def test_learning_curve_uses_palette_colours_and_survives_unknown_sizes() -> None:
    frame = frame_of(*(run_rows({"scratch": [0.5, 0.6], "frozen": [0.7, 0.8]}, size=s) for s in ("10", "all")))
    palette = strategy_palette(frame["strategy_label"])
    plot = learning_curve(frame, palette)  # n_train is 0 here: the axis falls back to ordinal sizes
    assert plot is not None
    colours = {line.get_color() for line in plot.figure.axes[0].get_lines()}
    assert colours and colours <= set(palette.values())
    assert [t.get_text() for t in plot.figure.axes[0].get_xticklabels()] == ["10", "all"]


def test_learning_curve_marks_the_crossover() -> None:
    frame = frame_of(
        run_rows({"scratch": [0.5, 0.5, 0.5], "full": [0.7, 0.7, 0.7]}, size="10"),
        run_rows({"scratch": [0.7, 0.7, 0.7], "full": [0.73, 0.72, 0.66]}, size="50"),
        run_rows({"scratch": [0.8, 0.8, 0.8], "full": [0.79, 0.78, 0.80]}, size="all"),
    )
    crossover = crossovers(frame)
    assert (crossover.loc[0, "crossover_size"], crossover.loc[0, "crossover_low"]) == ("all", "50")
    plot = learning_curve(frame, strategy_palette(frame["strategy_label"]), crossover)
    ax = plot.figure.axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [2.0, 2.0]  # "all" on the ordinal axis
    assert len(ax.patches) == 1  # the bootstrap band from 50/class to all
    assert "crossover" in plot.caption
    assert "crossover" not in learning_curve(frame, strategy_palette(frame["strategy_label"])).caption


def test_performance_profile_steps() -> None:
    x, share = profile_steps(np.array([1.0, 2.0, 3.0, 2.0]), -5.0, 5.0)
    assert list(x) == [-5.0, 1.0, 2.0, 3.0, 5.0]
    assert list(share) == [1.0, 0.75, 0.25, 0.0, 0.0]
    frame = frame_of(*(
        run_rows({"scratch": [0.5] * 3, "full": [0.5 + g] * 3, "frozen": [0.5 - g] * 3}, dataset=f"d{i}")
        for i, g in enumerate((0.01, 0.02, 0.05))
    ))
    palette = strategy_palette(frame["strategy_label"])
    plot = performance_profile(cell_gains(frame), palette)
    arms = {palette["full"], palette["frozen"]}
    lines = [line for line in plot.figure.axes[0].get_lines() if line.get_color() in arms]
    assert len(lines) == 2
    full = next(line for line in lines if line.get_color() == palette["full"])
    assert list(full.get_ydata()) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0])
    assert performance_profile(cell_gains(frame.iloc[0:0]), palette) is None


def test_pareto_mask() -> None:
    wall = [1, 2, 3, 4, 2]
    acc = [0.5, 0.7, 0.6, 0.9, 0.7]
    assert pareto_mask(wall, acc).tolist() == [True, True, False, True, True]


def test_cost_table_against_scratch_of_same_cell() -> None:
    frame = frame_of(run_rows({"scratch": [0.5, 0.5], "full": [0.7, 0.7], "frozen": [0.6, 0.6]}))
    frame["wall_s"] = np.where(frame["strategy"] == "full", 11.0, np.where(frame["strategy"] == "frozen", 0.5, 1.0))
    frame["trainable_params"] = np.where(frame["strategy"] == "frozen", 2_000_000, 10_000_000)
    for column in ("test_balanced_acc", "test_macro_f1", "total_params"):
        frame[column] = np.nan
    cost = cost_table(frame).set_index("strategy_label")
    assert cost.loc["full", "gain_pts"] == pytest.approx(20.0)
    assert cost.loc["full", "gain_pts_per_extra_s"] == pytest.approx(2.0)
    assert cost.loc["full", "gain_pts_per_m_trainable"] == pytest.approx(2.0)
    assert np.isnan(cost.loc["frozen", "gain_pts_per_extra_s"])
    assert cost.loc["frozen", "note"] == "no slower than scratch"
    assert list(results_table(frame)["strategy_label"]) == ["scratch", "frozen", "full"]


def test_failed_table_keeps_first_line() -> None:
    frame = frame_of(run_rows({"full": [0.5]}))
    frame["status"] = "failed"
    frame["error"] = "\n  ValueError: bad size\nmore"
    frame["attempts"] = 2
    assert failed_table(frame).loc[0, "error"] == "ValueError: bad size"


def test_progress_and_version_warning() -> None:
    frame = pd.DataFrame({"status": ["done", "done", "failed"], "training_version": ["1", "1", "1"]})
    assert progress(frame, 5).partial and not progress(frame, 3).partial
    assert not progress(frame, None).partial
    assert training_version_warning(frame) is None
    frame.loc[0, "training_version"] = "2"
    assert "2 training versions" in training_version_warning(frame)


def test_store_with_only_failed_runs_still_reports_them(tmp_path: Path) -> None:
    db = tmp_path / "failed.db"
    with ResultStore(db) as store:
        for seed in (0, 1):
            spec = RunSpec(
                run_id=f"run{seed}", suite="quick", backbone="resnet18", weights="none", dataset={"name": "digits"},
                size="10", strategy="scratch", strategy_params={}, seed=seed, training={},
            )
            store.write(spec, RunResult.failure(spec.run_id, "DataError: digits: too few images\nmore"))
    report = render_report(db, tmp_path / "out")
    assert (report.n_done, report.n_failed, report.plots) == (0, 2, [])
    text = report.html_path.read_text(encoding="utf-8")
    assert "no verdict" in text and "DataError: digits: too few images" in text


def test_unwritable_report_folder_is_report_error(rendered, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the report folder should go")
    with pytest.raises(ReportError, match="cannot write report"):
        render_report(rendered[0].out_dir.parent / "quick.db", blocker / "report")


def test_probe_table_reports_each_cells_chosen_strength_and_scaling() -> None:
    rows = run_rows({"frozen": [0.8, 0.82, 0.81], "scratch": [0.5, 0.5, 0.5]}, size="5") \
        + run_rows({"frozen": [0.9, 0.91, 0.9]}, size="all")
    frame = frame_of(rows)
    frame["probe_l2"] = np.where(frame["strategy"] == "frozen", 1e-3, np.nan)
    frame.loc[frame["size"] == "all", "probe_l2"] = 1e-5
    frame["probe_scaling"] = None
    small_frozen = frame.index[(frame["size"] == "5") & (frame["strategy"] == "frozen")]
    frame.loc[small_frozen, "probe_scaling"] = ["standard", "none", "standard"]
    # A run stored before scalings were chosen carries none; it still counts as a run.
    frame.loc[frame.index[(frame["size"] == "all") & (frame["strategy"] == "frozen")], "probe_scaling"] = \
        ["unit_norm", "unit_norm", None]

    table = probe_table(frame)

    assert table["size"].tolist() == ["5", "all"]
    assert table["runs"].tolist() == [3, 3]
    assert table["l2_chosen"].tolist() == ["1e-03", "1e-05"]
    assert table["scaling_chosen"].tolist() == ["standard x2, none x1", "unit_norm"]
    assert table["val_acc_mean"].iloc[1] == pytest.approx(np.mean([0.9, 0.91, 0.9]))
