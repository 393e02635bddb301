"""Executors with real child processes: outcomes of crashes, hard timeouts, abandons, orphans, GPU slots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bench.errors import BenchError
from bench.execution.executors import ABANDONED, DEFAULT_EXECUTOR, EXECUTOR_NAMES, Job, executor_class, make_executor
from bench.execution.gpus import gpu_slot_env
from bench.execution.driver import normalise_error
from bench.execution.local import SubprocessExecutor
from bench.execution.worker import FAULT_ENV
from bench.execution.pool import cpu_share_env, describe_exit
from tests.faults_helpers import (
    KILL_LATENESS_S, PATIENCE_S, REPO, TAG_ENV, group_gone, kill_tagged, new_tag, tagged_processes, wait_for,
)


def _job(key: str = "cafe0001", timeout_s: float | None = None) -> Job:
    return Job("run", key, f"cell {key}", {"spec": "{}", "cache_dir": "."}, timeout_s)


def _outcome(executor, timeout_s: float = PATIENCE_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = executor.messages.get(timeout=timeout_s)
        if message.kind == "done":
            return message.outcome
    raise AssertionError("no outcome")


@pytest.fixture
def tagged(monkeypatch):
    """A tag in this process's environment, inherited by every child it starts."""
    tag = new_tag()
    monkeypatch.setenv(TAG_ENV, tag)
    yield tag
    kill_tagged(tag)


@pytest.mark.parametrize("fault, expected", [
    ("segfault", "worker died from SIGSEGV (segmentation fault)"),
    ("exit", "worker exited with status 3 without a result"),
    ("exit=0", "worker exited with status 0 without a result"),
])
def test_a_child_that_dies_ends_its_job_with_the_reason(monkeypatch, tagged, fault, expected):
    monkeypatch.setenv(FAULT_ENV, fault)
    executor = SubprocessExecutor()
    executor.submit(_job())
    outcome = _outcome(executor)
    assert outcome.value is None and outcome.error.startswith(expected), outcome.error
    assert executor.free_slots() == 1 and not tagged_processes(tagged)


def test_a_hard_timeout_kills_the_whole_group_after_the_grace(monkeypatch, tagged):
    monkeypatch.setenv(FAULT_ENV, "hang")  # deaf to SIGTERM, with a forked helper in its group
    executor = SubprocessExecutor(kill_grace_s=0.5)
    started = time.monotonic()
    executor.submit(_job(timeout_s=1.0))
    outcome = _outcome(executor)
    took = time.monotonic() - started
    assert outcome.error.startswith("timed out"), outcome.error
    # Deaf to SIGTERM, the group can only end by the SIGKILL that comes a grace after the limit.
    assert 1.0 + 0.5 <= took <= 1.0 + 0.5 + KILL_LATENESS_S, took
    assert not tagged_processes(tagged)


def test_abandon_kills_running_children_and_reports_them_abandoned(monkeypatch, tagged):
    monkeypatch.setenv(FAULT_ENV, "hang")
    executor = SubprocessExecutor(slots=2, kill_grace_s=0.5)
    executor.submit(_job("aa"))
    executor.submit(_job("bb"))
    assert wait_for(lambda: len(tagged_processes(tagged)) >= 4, PATIENCE_S), "two children and their helpers"
    groups = {os.getpgid(pid) for pid in tagged_processes(tagged)}
    executor.abandon()
    outcomes = [_outcome(executor), _outcome(executor)]
    assert [o.error for o in outcomes] == [ABANDONED, ABANDONED]
    assert all(group_gone(pgid) for pgid in groups) and not tagged_processes(tagged)
    assert executor.wait_idle(1.0)


_DRIVER = textwrap.dedent("""
    import sys, time
    from bench.execution.executors import Job
    from bench.execution.local import SubprocessExecutor
    executor = SubprocessExecutor(kill_grace_s=30)
    executor.submit(Job("run", "cafe", "cell", {"spec": "{}", "cache_dir": "."}))
    time.sleep(600)
""")


def test_children_die_with_a_driver_killed_by_sigkill(tagged):
    env = {**os.environ, FAULT_ENV: "hang", TAG_ENV: tagged}
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], env=env, cwd=REPO, start_new_session=True)
    try:
        assert wait_for(lambda: len(tagged_processes(tagged)) >= 3, PATIENCE_S), "driver, child and helper"
        groups = {os.getpgid(pid) for pid in tagged_processes(tagged) if pid != driver.pid}
        assert len(groups) == 1 and driver.pid not in groups, "the child leads its own group"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        # The child hangs for ever: only the lifeline can end it, however long this takes.
        assert wait_for(lambda: not tagged_processes(tagged), PATIENCE_S), "orphans outlived their driver"
        assert all(group_gone(pgid) for pgid in groups)
    finally:
        if driver.poll() is None:
            driver.kill()


def test_progress_events_pass_through_and_garbage_is_ignored(monkeypatch):
    executor = SubprocessExecutor()
    job = _job()
    executor._event(job, b'{"type": "epoch", "epoch": 1}', {})
    assert executor._event(job, b"not json", {"x": 1}) == {"x": 1}
    assert executor._event(job, b"[1, 2]", {}) == {}
    assert executor._event(job, b'{"type": "outcome", "value": {}}', {}) == {"type": "outcome", "value": {}}
    message = executor.messages.get_nowait()
    assert message.kind == "event" and message.event["epoch"] == 1


def test_gpu_slots_spread_runs_across_gpus_and_share_them(monkeypatch):
    assert gpu_slot_env(["0", "1"], 2) == [{"CUDA_VISIBLE_DEVICES": g} for g in ("0", "1", "0", "1")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    executor = make_executor("gpus", per_gpu=2)
    assert executor.slots == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BenchError, match="needs at least one visible GPU"):
        make_executor("gpus")
    with pytest.raises(BenchError, match="unknown executor"):
        make_executor("cluster")
    with pytest.raises(BenchError, match="per-gpu"):
        make_executor("local", per_gpu=0)


def test_every_executor_name_comes_from_one_table_whose_classes_load_only_when_asked():
    from bench.execution.base import Executor
    from bench.suite.model import Suite

    assert Suite.model_json_schema()["properties"]["executor"]["enum"] == list(EXECUTOR_NAMES)
    assert DEFAULT_EXECUTOR in EXECUTOR_NAMES
    assert all(issubclass(executor_class(name), Executor) for name in EXECUTOR_NAMES)
    # A suite and the table load without the libraries only some executors need.
    probe = "import sys, bench.suite.model, bench.execution.executors; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "[]"


def test_parallel_children_share_the_cores_unless_told_otherwise(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert cpu_share_env(1) == {}
    assert cpu_share_env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert cpu_share_env(cores * 4)["OMP_NUM_THREADS"] == "1"


def test_every_spelling_of_cuda_out_of_memory_reads_the_same():
    assert normalise_error("OutOfMemoryError: CUDA out of memory. Tried 2 GiB") == "CUDA out of memory. Tried 2 GiB"
    assert normalise_error("torch.OutOfMemoryError: boom") == "CUDA out of memory: boom"
    assert normalise_error("RuntimeError: CUDA error: out of memory").startswith("CUDA out of memory: RuntimeError")
    assert normalise_error("CUDA out of memory: x") == "CUDA out of memory: x"
    assert normalise_error("ValueError: other") == "ValueError: other"
    assert normalise_error(None) is None


def test_exit_descriptions_name_the_signal():
    assert describe_exit(-signal.SIGKILL, "") == "worker died from SIGKILL (killed: out of memory?)"
    assert describe_exit(-signal.SIGTERM, "") == "worker died from SIGTERM"
    assert describe_exit(1, "warning\nImportError: no module\n\n") == (
        "worker exited with status 1 without a result: ImportError: no module"
    )
