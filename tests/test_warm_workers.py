"""Warm workers: one process serves cell after cell, any failure replaces it, results match a process per cell."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from bench.execution.executors import Job, make_executor
from bench.procs import cpu_count
from bench.execution.local import SubprocessExecutor
from bench.suite.model import suite_from_dict
from bench.execution.worker import EVENT_FD_ENV, FAULT_ENV, THREADS_ENV
from bench.execution.pool import cpu_share_env
from tests.faults_helpers import (
    KILL_LATENESS_S, PATIENCE_S, TAG_ENV, group_gone, image_folder, kill_tagged, new_tag, scratch_suite,
    tagged_processes, wait_for,
)

# Cells of a fraction of a second once a worker is warm: the tests time processes, not training.
QUICK = {"min_steps": 1, "epochs": 1}
# Job keys that a fault prefix matches; run ids are hex, so they never start with these.
FAILING, HANGING = "fail-", "hang-"
METRICS = ("test_acc", "test_balanced_acc", "test_macro_f1", "val_acc")


@pytest.fixture
def tagged(monkeypatch):
    """A tag in this process's environment, inherited by every worker it starts."""
    tag = new_tag()
    monkeypatch.setenv(TAG_ENV, tag)
    # One thread per job: tests share a small machine, and oversubscribed threads slow every cell.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield tag
    kill_tagged(tag)


def _specs(count: int = 2, **training):
    """``count`` distinct tiny cells of digits."""
    seeds = list(range(count))
    cells = suite_from_dict(scratch_suite("warm", sizes=[3], seeds=seeds, **{**QUICK, **training})).expand()
    assert len(cells) >= count
    return cells[:count]


def _job(spec, key: str | None = None, timeout_s: float | None = None) -> Job:
    key = key or spec.run_id
    return Job("run", key, f"cell {key}", {"spec": spec.to_json(), "cache_dir": "."}, timeout_s)


def _run(executor: SubprocessExecutor, job: Job, timeout_s: float = PATIENCE_S):
    executor.submit(job)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = executor.messages.get(timeout=timeout_s)
        if message.kind == "done":
            return message.outcome
    raise AssertionError(f"no outcome for {job.key}")


def _done(outcome) -> dict:
    assert outcome.error is None, outcome.error
    assert outcome.value["status"] == "done", outcome.value["error"]
    return outcome.value


@pytest.mark.slow
@pytest.mark.parametrize("fault, reason", [
    ("segfault", "worker died from SIGSEGV"),
    ("oom", "OutOfMemoryError: CUDA out of memory"),
])
def test_a_worker_serves_cell_after_cell_and_is_replaced_after_a_failure(monkeypatch, tagged, fault, reason):
    monkeypatch.setenv(FAULT_ENV, f"{fault}:{FAILING}")
    first, second = _specs()
    executor = SubprocessExecutor()
    try:
        one, two = _run(executor, _job(first)), _run(executor, _job(second))
        _done(one), _done(two)
        assert one.worker_pid == two.worker_pid, "a successful cell hands its worker to the next"
        assert tagged_processes(tagged) == [one.worker_pid], "an idle warm worker, alone"

        failed = _run(executor, _job(first, key=FAILING + first.run_id))
        assert failed.error and failed.error.startswith(reason), failed.error
        assert failed.worker_pid == one.worker_pid
        assert not tagged_processes(tagged) and group_gone(one.worker_pid), "retired before its outcome came back"

        after = _run(executor, _job(second))
        assert after.worker_pid != one.worker_pid, "the slot's next cell gets a fresh worker"
        assert _done(after)["test_acc"] == two.value["test_acc"]
    finally:
        executor.close()
    assert not tagged_processes(tagged), "close ends idle workers"




@pytest.mark.slow
def test_a_cell_that_fails_retires_its_worker_and_a_vanished_folder_is_not_served_from_cache(tmp_path, tagged):
    root = image_folder(tmp_path / "images")
    raw = scratch_suite("folder", sizes=[3], seeds=[0, 1], **QUICK)
    raw["datasets"] = [{"name": "imagefolder", "path": str(root), "sizes": [3], "test_fraction": 0.3}]
    first, second = suite_from_dict(raw).expand()[:2]
    (digits,) = _specs(1)
    executor = SubprocessExecutor()
    try:
        one = _run(executor, _job(first))
        _done(one)
        shutil.rmtree(root)
        gone = _run(executor, _job(second))
        assert gone.worker_pid == one.worker_pid
        # The worker's cached copy of the folder would have served this cell; a fresh process would fail it.
        assert gone.value["status"] == "failed" and "does not exist" in gone.value["error"], gone.value
        assert not tagged_processes(tagged), "a failed cell, even one that returned, retires its worker"
        after = _run(executor, _job(digits))
        _done(after)
        assert after.worker_pid != one.worker_pid
    finally:
        executor.close()


@pytest.mark.slow
def test_a_hung_cell_on_a_warm_worker_is_killed_with_its_group_at_its_timeout(monkeypatch, tagged):
    monkeypatch.setenv(FAULT_ENV, f"hang:{HANGING}")  # deaf to SIGTERM, with a forked helper in its group
    (spec,) = _specs(1)
    executor = SubprocessExecutor(kill_grace_s=0.5)
    try:
        warm = _run(executor, _job(spec))
        _done(warm)
        started = time.monotonic()
        executor.submit(_job(spec, key=HANGING + spec.run_id, timeout_s=1.0))
        assert wait_for(lambda: len(tagged_processes(tagged)) >= 2, PATIENCE_S), "the warm worker and its helper"
        assert {os.getpgid(pid) for pid in tagged_processes(tagged)} == {warm.worker_pid}
        outcome = _run_pending(executor)
        took = time.monotonic() - started
        assert outcome.error.startswith("timed out"), outcome.error
        assert outcome.worker_pid == warm.worker_pid
        # Deaf to SIGTERM, the group can only end by the SIGKILL that comes a grace after the limit.
        assert 1.0 + 0.5 <= took <= 1.0 + 0.5 + KILL_LATENESS_S, took
        assert group_gone(warm.worker_pid) and not tagged_processes(tagged)
    finally:
        executor.close()


def _run_pending(executor: SubprocessExecutor, timeout_s: float = PATIENCE_S):
    while True:
        message = executor.messages.get(timeout=timeout_s)
        if message.kind == "done":
            return message.outcome


@pytest.mark.slow
def test_a_warm_worker_gives_the_results_of_a_process_per_cell(tagged):
    first, second = _specs(epochs=2)
    cold = SubprocessExecutor(warm=False)
    warm = make_executor("local", warm=True)
    try:
        fresh = [_run(cold, _job(spec)) for spec in (first, second)]
        assert fresh[0].worker_pid != fresh[1].worker_pid, "warm=False: a process per cell"
        assert not tagged_processes(tagged)
        reused = [_run(warm, _job(spec)) for spec in (first, second)]
        assert reused[0].worker_pid == reused[1].worker_pid
    finally:
        warm.close()
    for cold_outcome, warm_outcome in zip(fresh, reused):
        expected, got = _done(cold_outcome), _done(warm_outcome)
        # The second warm cell ran after another in the same process: nothing of the first may leak into it.
        assert {m: got[m] for m in METRICS} == {m: expected[m] for m in METRICS}
        assert [e["train_loss"] for e in got["epochs"]] == pytest.approx([e["train_loss"] for e in expected["epochs"]])


def test_each_job_gets_its_share_of_the_cores(monkeypatch):
    share = str(max(1, cpu_count() // 2))
    assert cpu_share_env(2, threads=3)["OMP_NUM_THREADS"] == "3"
    assert cpu_share_env(1, threads=2)["MKL_NUM_THREADS"] == "2"
    with pytest.raises(ValueError, match="threads"):
        SubprocessExecutor(threads=0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _worker_env(SubprocessExecutor(slots=2))[THREADS_ENV] == share
    assert THREADS_ENV not in _worker_env(SubprocessExecutor(slots=1)), "one job alone: torch's own default"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _worker_env(SubprocessExecutor(slots=2))[THREADS_ENV] == "1", "the user's own setting wins"
    env = _worker_env(SubprocessExecutor(slots=2, threads=2))
    assert env["OMP_NUM_THREADS"] == env[THREADS_ENV] == "2", "an explicit count wins over both"


def _worker_env(executor: SubprocessExecutor) -> dict[str, str]:
    """The environment a worker starts with, read back from /proc while it waits for its first job."""
    worker = executor._spawn(0)
    try:
        env = wait_for(lambda: _exec_environ(worker.proc.pid), PATIENCE_S)
    finally:
        executor._retire(worker, 0.0)
    assert env, "the worker's environment never showed in /proc"
    return env


def _exec_environ(pid: int) -> dict[str, str]:
    """A worker's environment once its program has started, else empty.

    The spawn can return before the kernel has laid out the new program's environment, and
    /proc reads empty (or the parent's) until then; only a worker's own names its event pipe.
    """
    with open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = [item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item]
    env = {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return env if EVENT_FD_ENV in env else {}


def test_a_worker_pins_torch_to_its_share_before_each_job(monkeypatch):
    import torch

    from bench.execution.worker import _use_thread_share

    before = torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "1")
    try:
        torch.set_num_threads(2)  # what an earlier job in the same worker might have left
        _use_thread_share()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
