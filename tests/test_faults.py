"""Fault injection against real processes: nothing finished is lost, nothing runs twice, nothing is left running.

Drivers run as ``python -m bench run`` children where signals matter, and cells fail on
demand through the worker's ``TRANSFER_BENCH_FAULT`` hook (segfault, hang, exit, oom).
"""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.errors import StoreError
from bench.execution.executors import Job
from bench.execution.driver import SilentObserver, run_suite
from bench.store import ResultStore
from bench.execution.local import SubprocessExecutor
from bench.suite.model import suite_from_dict
from bench.execution.worker import FAULT_ENV
from tests.faults_helpers import (
    KILL_LATENESS_S,
    MOMENTS,
    PATIENCE_S,
    REPO,
    assert_store_sound,
    await_moment,
    budget_suite,
    cell_ids,
    claims_of,
    driver_env,
    finished,
    group_gone,
    image_folder,
    integrity_ok,
    kill_tagged,
    new_tag,
    read_store,
    scratch_suite,
    start_driver,
    tagged_processes,
    wait_for,
    write_yaml,
)

# Where the six kills come, in a drawn order. Four land mid-cell; the two that wait for a result
# each cost a worker's start-up (Python, torch, the data), so there are only two of those.
KILL_MOMENTS = ("start-up", "cell starting", "cell starting", "cell starting", "result landed", "warm cell")
GRACE_S = 2.0
HARD_LIMIT_S = 3.0  # the least hard limit: a cell on a warm worker takes a fraction of a second


class Timings(SilentObserver):
    """Records when each job started and how it ended."""

    def __init__(self, on_finish=None) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, tuple[float, Any]] = {}
        self.notes: list[str] = []
        self.on_finish = on_finish

    def job_started(self, job) -> None:
        self.started[job.key] = time.monotonic()

    def job_finished(self, job, result, outcome) -> None:
        self.ended[job.key] = (time.monotonic(), outcome)
        if self.on_finish is not None:
            self.on_finish(job, result, outcome)

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.fixture
def tag():
    value = new_tag()
    yield value
    kill_tagged(value)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240,
         **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout,
                          env=env or driver_env("none"), cwd=REPO, **popen)


# -- the driver killed at any moment ------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_runs_nothing_twice(tmp_path, tag):
    """SIGKILL the driver six times, four of them mid-cell, then let a last run finish the suite.

    The kills land on any machine, fast, slow or busy, because each waits for a moment seen in
    the store, never for a delay: before the driver's first claim, at a claim, just after a
    result, at a claim made after a result (a warm worker's cell). Each cell trains for a time
    budget it cannot finish in, so it lasts ``CELL_S`` seconds everywhere: a driver killed at
    those moments has finished at most one cell per slot, so the suite always outlives its
    kills, and a kill timed on a claim always comes while that cell runs.
    """
    # Two runs that reach a result finish at most two cells each: two cells or more are left for the last run.
    suite = budget_suite("killed", sizes=[3], seeds=list(range(6)))
    path = write_yaml(tmp_path / "killed.yaml", suite)
    results, db = tmp_path / "results", tmp_path / "results" / "killed.db"
    ids = set(cell_ids(suite))
    rng = random.Random(1234)
    moments = rng.sample(KILL_MOMENTS, len(KILL_MOMENTS))
    log = tmp_path / "driver.log"
    kept: dict[str, dict[str, Any]] = {}
    mid_cell = 0
    for moment in moments:
        driver = start_driver(path, results, "-j", "2", tag=tag, log=log)
        held = await_moment(moment, driver, db, rng)
        assert driver.poll() is None, f"the driver ended ({driver.returncode}) before '{moment}': {log.read_text()}"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not tagged_processes(tag), PATIENCE_S), "children outlived the killed driver"
        if not db.exists():
            continue
        rows = assert_store_sound(db)
        assert set(rows) <= ids
        # Only the driver writes the store: after its death, its claims are the cells it was running.
        in_flight = claims_of(db, driver.pid)
        if MOMENTS[moment]:
            assert held is not None, f"'{moment}' never came: {log.read_text()}"
            assert held in in_flight, f"the kill at '{moment}' came after {held} ended"
        mid_cell += bool(in_flight)
        now = finished(rows)
        for run_id, row in kept.items():
            assert run_id in now, f"{run_id} was finished before the kill and is gone"
            assert now[run_id]["written_at"] == row["written_at"], f"{run_id} was run again"
            assert now[run_id]["test_acc"] == row["test_acc"]
        kept = now
    assert mid_cell >= sum(MOMENTS[m] for m in KILL_MOMENTS), f"only {mid_cell} kills landed mid-cell"

    done = _cli("run", str(path), "--results-dir", str(results), "--no-report", "-j", "2", env=driver_env(tag))
    assert done.returncode == 0, done.stderr
    assert f"{len(ids) - len(kept)} done, 0 failed this time, {len(kept)} already done" in done.stdout
    rows = assert_store_sound(db)
    assert set(rows) == ids and all(row["status"] == "done" for row in rows.values())
    for run_id, row in kept.items():
        assert rows[run_id]["written_at"] == row["written_at"]
    assert not tagged_processes(tag)
    _report("kills", len(moments), "mid-cell", mid_cell, "finished before last run", len(kept))


def _report(*pairs: Any) -> None:
    """Figures for the log of a -s run."""
    text = ", ".join(f"{pairs[i]}={pairs[i + 1]}" for i in range(0, len(pairs), 2))
    sys.stderr.write(f"\n[faults] {text}\n")


# -- hung, crashing and out-of-memory cells -----------------------------------------------


@pytest.mark.slow
def test_a_hung_run_is_killed_with_its_group_within_timeout_plus_grace(tmp_path, monkeypatch, tag):
    """The healthy cell shares the hung cell's hard limit, so the limit must leave it room on any
    machine: both workers are warmed first (torch imported, the data loaded), and the limit is
    set well above what a cell on a warm worker took here, now."""
    # The limit is not part of a cell's id: the workers can learn which cell hangs before it is set.
    hung, healthy = cell_ids(scratch_suite("hung", sizes=[3], seeds=[0, 1]))
    monkeypatch.setenv(FAULT_ENV, f"hang:{hung}")
    monkeypatch.setenv("TRANSFER_BENCH_TEST_TAG", tag)
    executor = SubprocessExecutor(slots=2, kill_grace_s=GRACE_S)
    warm_up = suite_from_dict(scratch_suite("warm-up", sizes=[3], seeds=[2, 3])).expand()
    _warm_up(executor, warm_up, tmp_path)
    limit = max(HARD_LIMIT_S, 10 * _warm_up(executor, warm_up, tmp_path))
    suite = scratch_suite("hung", sizes=[3], seeds=[0, 1], timeout=limit)
    assert cell_ids(suite) == [hung, healthy]
    timings = Timings()
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path, observer=timings, executor=executor)
    took = timings.ended[hung][0] - timings.started[hung]
    # Deaf to SIGTERM, the hung group can only end by the SIGKILL that comes a grace after the limit.
    assert limit <= took <= limit + GRACE_S + KILL_LATENESS_S, took
    assert not tagged_processes(tag), "the hung run or its forked helper survived"
    rows = assert_store_sound(summary.store_path)
    assert rows[hung]["status"] == "failed" and rows[hung]["error"].startswith("timed out")
    assert rows[healthy]["status"] == "done", "the suite went on past the hung cell"
    _report("hung run killed after s", round(took, 2), "timeout+grace", limit + GRACE_S)


def _warm_up(executor: SubprocessExecutor, specs: list[Any], cache: Path) -> float:
    """Run a cell on each of the executor's workers, which stay warm; the slowest cell's wall time."""
    for spec in specs:
        executor.submit(Job("run", spec.run_id, "warm-up", {"spec": spec.to_json(), "cache_dir": str(cache)}))
    walls = []
    while len(walls) < len(specs):
        message = executor.messages.get(timeout=PATIENCE_S)
        if message.kind == "done":
            value = message.outcome.value
            assert value is not None and value["status"] == "done", message.outcome.error
            walls.append(value["wall_s"])
    return max(walls)


@pytest.mark.slow
@pytest.mark.parametrize("fault, reason", [("segfault", "SIGSEGV"), ("exit", "exited with status 3")])
def test_a_crashing_child_fails_only_its_cell(tmp_path, monkeypatch, fault, reason):
    suite = scratch_suite(f"crash-{fault}", sizes=[3], seeds=[0, 1])
    crashing, healthy = cell_ids(suite)
    monkeypatch.setenv(FAULT_ENV, f"{fault}:{crashing}")
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path, executor="local", jobs=2)
    assert (summary.done, summary.failed) == (1, 1)
    rows = assert_store_sound(summary.store_path)
    assert reason in rows[crashing]["error"]
    assert rows[healthy]["status"] == "done"


@pytest.mark.slow
def test_out_of_memory_is_recorded_as_such_and_retried_at_half_batch(tmp_path, monkeypatch):
    suite = scratch_suite("oom", sizes=[3], seeds=[0], batch_size=16)
    (cell,) = cell_ids(suite)
    monkeypatch.setenv(FAULT_ENV, "oom=16")  # only at batch size 16 or more: half of it fits
    timings = Timings()
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path / "retry", oom_retry=1, observer=timings)
    row = assert_store_sound(summary.store_path)[cell]
    assert row["status"] == "done" and int(row["batch_size"]) == 8
    assert int(row["attempts"]) == 2
    assert any("retrying at 8" in note for note in timings.notes)

    monkeypatch.setenv(FAULT_ENV, "oom")  # never fits: failed after the retry, and says so
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path / "never", oom_retry=1)
    row = read_store(summary.store_path)[cell]
    assert row["status"] == "failed" and row["error"].startswith("CUDA out of memory"), row["error"]
    assert "batch size 8" in row["error"] and int(row["attempts"]) == 2


# -- Ctrl-C -------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_twice_abandons_running_cells_and_leaves_no_process(tmp_path, tag):
    # Cells that would train for ten minutes: whatever the machine, they are still running at each Ctrl-C.
    suite = budget_suite("interrupted", cell_s=600, sizes=[3, 5], seeds=[0, 1])
    path = write_yaml(tmp_path / "interrupted.yaml", suite)
    results, log = tmp_path / "results", tmp_path / "driver.log"
    driver = start_driver(path, results, "-j", "2", tag=tag, log=log)
    assert wait_for(lambda: len(tagged_processes(tag)) >= 3, PATIENCE_S), "two children never started"
    children = [pid for pid in tagged_processes(tag) if pid != driver.pid]
    os.killpg(driver.pid, signal.SIGINT)  # the terminal sends Ctrl-C to the foreground group
    assert wait_for(lambda: "stopping: running cells will finish" in log.read_text(), PATIENCE_S), log.read_text()
    assert driver.poll() is None, "one Ctrl-C must let running cells finish"
    assert set(children) <= set(tagged_processes(tag)), "one Ctrl-C must leave running cells alone"
    os.killpg(driver.pid, signal.SIGINT)
    code = driver.wait(timeout=PATIENCE_S)
    assert code == 130, log.read_text()
    assert wait_for(lambda: not tagged_processes(tag), PATIENCE_S), "processes left after Ctrl-C"
    assert all(group_gone(pid) for pid in children)
    rows = assert_store_sound(results / "interrupted.db")
    assert not any(row["status"] == "running" for row in rows.values()), "abandoned cells must go back to pending"
    _report("processes left after Ctrl-C", len(tagged_processes(tag)), "children killed", len(children))


@pytest.mark.slow
def test_one_ctrl_c_stops_scheduling_and_lets_running_cells_finish(tmp_path, tag):
    suite = scratch_suite("stopped", sizes=[3, 5], seeds=[0, 1])
    path = write_yaml(tmp_path / "stopped.yaml", suite)
    results = tmp_path / "results"
    driver = start_driver(path, results, "-j", "1", tag=tag, log=tmp_path / "driver.log")
    # A worker starts only for a job handed to it: one cell is running, and must finish.
    assert wait_for(lambda: len(tagged_processes(tag)) >= 2, PATIENCE_S), "no child started"
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=PATIENCE_S) == 130, "a stopped suite is not a finished one"
    log = (tmp_path / "driver.log").read_text()
    assert "interrupted" in log and "1 done, 0 failed this time" in log, log
    rows = assert_store_sound(results / "stopped.db")
    assert [row["status"] for row in rows.values()] == ["done"]
    assert not tagged_processes(tag)


# -- the results folder -------------------------------------------------------------------


@pytest.mark.slow
def test_results_folder_that_cannot_be_created_is_one_clear_line(tmp_path, tag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    path = write_yaml(tmp_path / "s.yaml", scratch_suite("ro"))
    done = _cli("run", str(path), "--results-dir", str(blocker / "results"), "--no-report", env=driver_env(tag))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert "cannot create results folder" in done.stderr and "a-file" in done.stderr
    assert not tagged_processes(tag), "nothing may start before the store opens"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 555; other tests cover root")
def test_read_only_results_folder_is_one_clear_line(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    path = write_yaml(tmp_path / "s.yaml", scratch_suite("ro"))
    try:
        done = _cli("run", str(path), "--results-dir", str(results), "--no-report")
    finally:
        results.chmod(0o755)
    assert done.returncode == 2 and "not writable" in done.stderr and "Traceback" not in done.stderr


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_full_disk_stops_the_suite_with_one_line_and_keeps_the_store_whole(tmp_path, tag):
    suite = scratch_suite("full", sizes=[3], seeds=[0, 1])
    path = write_yaml(tmp_path / "full.yaml", suite)
    results, db = tmp_path / "results", tmp_path / "results" / "full.db"
    first = run_suite(suite_from_dict(scratch_suite("full", sizes=[3], seeds=[0])), results_dir=results,
                      executor="inprocess")
    assert first.done == 1
    before = read_store(db)
    # Files may not grow past what the store already takes: the next write hits the limit
    # (EFBIG, as a full disk gives ENOSPC) and SQLite must roll back.
    limit = max(p.stat().st_size for p in results.iterdir() if p.is_file())
    done = _cli("run", str(path), "--results-dir", str(results), "--no-report", env=driver_env(tag),
                preexec_fn=_file_size_limit(limit))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "full.db" in lines[0] or str(results) in lines[0]
    assert wait_for(lambda: not tagged_processes(tag), PATIENCE_S)
    assert integrity_ok(db)
    after = read_store(db)
    for run_id, row in before.items():
        assert after[run_id]["written_at"] == row["written_at"]
    rerun = run_suite(suite_from_dict(suite), results_dir=results, executor="inprocess")
    assert (rerun.already_done, rerun.done) == (1, 1)


# -- concurrency: two drivers, readers during a run ---------------------------------------


@pytest.mark.slow
def test_two_drivers_on_one_suite_never_run_a_cell_twice(tmp_path, tag):
    suite = scratch_suite("shared", sizes=[3, 5], seeds=[0, 1])
    path = write_yaml(tmp_path / "shared.yaml", suite)
    results = tmp_path / "results"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    drivers = [start_driver(path, results, "-j", "1", tag=tag, log=log) for log in logs]
    for driver in drivers:
        assert driver.wait(timeout=180) == 0
    rows = assert_store_sound(results / "shared.db")
    assert set(rows) == set(cell_ids(suite))
    assert all(row["status"] == "done" and row["attempts"] == 1 for row in rows.values()), \
        {k: (r["status"], r["attempts"]) for k, r in rows.items()}
    ran = [int(re.search(r"(\d+) done, \d+ failed this time", log.read_text()).group(1)) for log in logs]
    assert sum(ran) == len(rows), ran


@pytest.mark.slow
def test_report_and_export_read_the_store_while_a_suite_writes_it(tmp_path, tag):
    # Each cell trains for its budget on any machine, so results land one round of cells apart and
    # the readers below see the store part-written however fast the machine is.
    suite = budget_suite("busy", sizes=[3, 5], seeds=[0, 1])
    path = write_yaml(tmp_path / "busy.yaml", suite)
    results, db = tmp_path / "results", tmp_path / "results" / "busy.db"
    driver = start_driver(path, results, "-j", "2", tag=tag, log=tmp_path / "driver.log")
    assert wait_for(lambda: driver.poll() is not None or db.exists(), PATIENCE_S)
    seen: list[int] = []  # finished cells at each read the driver outlived
    exported: set[int] = set()
    while driver.poll() is None:
        with ResultStore(db, readonly=True) as store:
            store.frame(include_running=True)
            store.epochs_frame()
            count = len(store.frame())
        if driver.poll() is None:
            seen.append(count)
        if count not in exported:  # export once at each state: the driver writes on meanwhile
            exported.add(count)
            export = _cli("export", str(db), "--out", str(tmp_path / "busy.csv"), env=driver_env(tag))
            assert export.returncode == 0, export.stderr
        time.sleep(0.05)
    assert driver.returncode == 0
    assert seen and max(seen) <= 4
    assert any(0 < count < 4 for count in seen), f"no read while the suite was part-written: {seen}"
    report = _cli("report", str(db), "--out", str(tmp_path / "report"), env=driver_env(tag))
    assert report.returncode == 0, report.stderr


# -- suites edited between runs -----------------------------------------------------------


@pytest.mark.slow
def test_an_edited_suite_gets_new_ids_and_keeps_old_results(tmp_path):
    first = scratch_suite("edited", sizes=[3], seeds=[0])
    summary = run_suite(suite_from_dict(first), results_dir=tmp_path, executor="inprocess")
    old = read_store(summary.store_path)
    (old_id,) = old

    more_seeds = scratch_suite("edited", sizes=[3], seeds=[0, 1])
    again = run_suite(suite_from_dict(more_seeds), results_dir=tmp_path, executor="inprocess")
    assert (again.already_done, again.done) == (1, 1), "an unchanged cell is not run again"

    longer = scratch_suite("edited", sizes=[3], seeds=[0], epochs=2)
    (new_id,) = cell_ids(longer)
    assert new_id not in old, "a changed cell gets a new id"
    run_suite(suite_from_dict(longer), results_dir=tmp_path, executor="inprocess")
    rows = assert_store_sound(summary.store_path)
    assert len(rows) == 3
    assert rows[old_id]["written_at"] == old[old_id]["written_at"] and rows[old_id]["epochs_run"] == 1
    assert rows[new_id]["epochs_run"] == 2


# -- bad input ----------------------------------------------------------------------------




def _folder_suite(name: str, root: Path, **extra: Any) -> dict[str, Any]:
    suite = scratch_suite(name, sizes=[3], seeds=[0, 1])
    suite["datasets"] = [{"name": "imagefolder", "path": str(root), "sizes": [3], "test_fraction": 0.3}]
    suite.update(extra)
    return suite


@pytest.mark.slow
def test_corrupt_images_and_empty_class_folders_are_skipped_or_named(tmp_path):
    root = image_folder(tmp_path / "images")
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG not really an image" * 10)
    (root / "class1" / "empty.png").write_bytes(b"")
    (root / "class-empty").mkdir()
    summary = run_suite(suite_from_dict(_folder_suite("messy", root)), results_dir=tmp_path / "r", executor="inprocess")
    assert (summary.done, summary.failed) == (2, 0), summary.failures

    # Planning counts files without decoding them; the run decodes, finds nothing usable, and says where.
    nothing = tmp_path / "nothing"
    for name in ("a", "b"):
        (nothing / name).mkdir(parents=True)
        for i in range(12):
            (nothing / name / f"{i}.png").write_bytes(b"garbage" * 20)
    summary = run_suite(suite_from_dict(_folder_suite("corrupt", nothing)), results_dir=tmp_path / "r",
                        executor="inprocess")
    rows = read_store(summary.store_path)
    assert len(rows) == 2
    for row in rows.values():
        assert row["status"] == "failed" and str(nothing) in row["error"] and "no usable images" in row["error"]
        assert row["traceback"] is None, "a data problem is the user's to fix, not a bug"

    empty = tmp_path / "empty"
    for name in ("a", "b"):
        (empty / name).mkdir(parents=True)
    path = write_yaml(tmp_path / "empty.yaml", _folder_suite("empty", empty))
    done = _cli("plan", str(path), "--results-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(empty) in done.stderr and done.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_a_dataset_folder_that_vanishes_mid_suite_fails_the_rest_by_name(tmp_path):
    import shutil

    root = image_folder(tmp_path / "vanishing")

    def remove_after_first(job, result, outcome) -> None:
        shutil.rmtree(root, ignore_errors=True)

    suite = _folder_suite("vanishing", root)
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path / "r", observer=Timings(remove_after_first))
    assert (summary.done, summary.failed) == (1, 1)
    (run_id, error), = summary.failures
    assert str(root) in error and "does not exist" in error


@pytest.mark.slow
def test_a_weights_file_that_is_not_a_checkpoint_fails_its_cells_by_name(tmp_path):
    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(os.urandom(2048))
    suite = scratch_suite("bogus", sizes=[3], seeds=[0])
    suite["backbones"] = [{"name": "test_resnet", "weights": f"file:{bogus}"}]
    suite["strategies"] = ["frozen"]
    summary = run_suite(suite_from_dict(suite), results_dir=tmp_path / "r", executor="inprocess")
    assert summary.failed == 1
    (_, error), = summary.failures
    assert str(bogus) in error and "not a PyTorch checkpoint" in error


# -- claims: the store's half of "never twice" -------------------------------------------


def _spec(name: str = "claims"):
    return suite_from_dict(scratch_suite(name, sizes=[3], seeds=[0])).expand()[0]


def test_a_result_written_after_a_driver_planned_is_never_taken_over(tmp_path):
    from bench.records import RunResult

    spec = _spec()
    with ResultStore(tmp_path / "s.db") as store:
        planned = time.time()
        store.write(spec, RunResult.failure(spec.run_id, "boom"))
        assert not store.claim(spec, "h:1", allow=("failed",), written_before=planned)
        assert store.claim(spec, "h:1", allow=("failed",), written_before=time.time() + 1)


def test_a_claim_whose_pid_was_reused_or_whose_driver_ended_is_dead(tmp_path):
    import socket

    from bench.store import owner_id, retire_owner

    spec = _spec()
    host = socket.gethostname()
    with ResultStore(tmp_path / "s.db") as store:
        assert store.claim(spec, f"{host}:{os.getpid()}:1:oldtoken")  # this pid, another start time
        assert store.pending([spec]) == [spec]
        mine = owner_id()
        assert store.claim(spec, mine)
        assert store.pending([spec]) == [] and not store.claim(spec, owner_id())
        retire_owner(mine)  # a driver of this very process that ended without giving its claims back
        assert store.pending([spec]) == [spec]
        other = owner_id()
        assert store.claim(spec, other)
        assert store.release_all(other) == [spec.run_id] and store.statuses() == {}


def test_drivers_opening_a_new_store_at_once_all_succeed(tmp_path):
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            ResultStore(tmp_path / "race.db").close()
        except BaseException as exc:  # collected and reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert integrity_ok(tmp_path / "race.db")


def test_a_store_path_that_cannot_be_written_fails_before_any_write(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create results folder"):
        ResultStore(tmp_path / "file" / "sub" / "s.db")
