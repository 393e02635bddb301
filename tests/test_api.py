"""The Python API README shows: ``bench.run`` then ``bench.render``, each callable again in one process."""

from __future__ import annotations

import pytest

import bench
from tests.conftest import tiny_suite_dict

pytestmark = pytest.mark.slow


def test_run_and_render_work_twice_in_one_process(write_suite, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tiny_suite_dict("api", strategies=["scratch", "full"], seeds=[0, 1, 2]))

    first = bench.run(suite, executor="inprocess")
    assert (first.planned, first.done, first.failed) == (12, 12, 0)
    again = bench.run(str(suite), executor="inprocess")
    assert (again.done, again.already_done) == (0, 12)

    report = bench.render("results/api.db")
    assert (tmp_path / "reports" / "api" / "index.html").is_file()
    columns = ["backbone", "dataset", "size", "best_strategy", "mean_diff", "call"]
    assert len(report.verdict[columns]) == 2  # one row per size
    # A second call must find the function, not the subpackage the first call imported.
    second = bench.render(tmp_path / "results" / "api.db", tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "index.html").is_file()
    assert second.verdict[columns].equals(report.verdict[columns])
