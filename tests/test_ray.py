"""The Ray executor against a real local Ray cluster: cells as tasks, a lost worker retried then failed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bench.execution.executors import Job
from bench.execution.worker import FAULT_ENV
from tests.faults_helpers import (
    PATIENCE_S, REPO, assert_store_sound, cell_ids, group_gone, scratch_suite, wait_for, write_yaml,
)

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'transfer-bench[ray]'")

SUITE = {**scratch_suite("on-ray", sizes=[3], seeds=[0, 1, 2]), "device": "auto"}
LOST = cell_ids(SUITE)[1]  # its worker dies mid-task, every time
QUIET = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster started for these tests, its workers primed to lose one cell.

    It declares one GPU, which Ray hands out as a resource whether or not a device is there, so
    cells that want CUDA take the GPU path (a GPU share, a fresh worker each) even on a CPU box.
    """
    log = tmp_path_factory.mktemp("ray") / "ray-start.log"
    port = _free_port()
    env = {**os.environ, **QUIET, FAULT_ENV: f"exit:{LOST}"}
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2",
        "--num-gpus=1", "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=100000000",
        "--block",
    ]
    head = subprocess.Popen(command, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = wait_for(lambda: head.poll() is not None or "Ray runtime started" in log.read_text(errors="replace"),
                           PATIENCE_S, 0.2)
        if head.poll() is not None or not started:
            pytest.skip(f"a local Ray cluster could not start here: {log.read_text(errors='replace')[-300:]}")
        yield f"127.0.0.1:{port}"
    finally:
        # Everything the cluster started shares the head's process group: end exactly that group.
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        wait_for(lambda: group_gone(head.pid), 10.0)


@pytest.mark.slow
def test_cells_run_as_ray_tasks_and_a_lost_worker_is_retried_then_failed(cluster, tmp_path):
    path = write_yaml(tmp_path / "on-ray.yaml", SUITE)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(path), "--executor", "ray", "--address", cluster,
         "--per-gpu", "2", "--max-retries", "1", "--results-dir", str(tmp_path / "results"), "--no-report"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, **QUIET},
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr  # the suite ran, one cell failed
    assert "2 done, 1 failed this time" in done.stdout, done.stdout
    rows = assert_store_sound(tmp_path / "results" / "on-ray.db")
    assert set(rows) == set(cell_ids(SUITE))
    assert rows[LOST]["status"] == "failed"
    assert rows[LOST]["error"].startswith("Ray worker lost after 2 attempt(s)"), rows[LOST]["error"]
    assert all(row["status"] == "done" for run_id, row in rows.items() if run_id != LOST)
    sys.stderr.write(f"\n[ray] 3 cells in {took:.1f} s: 2 done, 1 failed after its worker was lost twice\n")

    again = subprocess.run(
        [sys.executable, "-m", "bench", "run", str(path), "--executor", "ray", "--address", cluster,
         "--results-dir", str(tmp_path / "results"), "--no-report"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, **QUIET},
    )
    assert again.returncode == 1 and "0 done, 0 failed this time, 3 already done" in again.stdout


def test_a_cell_asks_ray_for_a_gpu_only_when_it_wants_cuda_and_the_cluster_has_one():
    from bench.execution.ray_cluster import RayExecutor

    def job(device: str) -> Job:
        return Job("run", "k", "cell", {"spec": json.dumps({"device": device}), "cache_dir": "."})

    executor = RayExecutor.__new__(RayExecutor)
    executor.cluster_gpus, executor.gpu_share = 2.0, 1.0
    assert [executor.task_gpus(job(d)) for d in ("auto", "cuda", "cuda:1", "cpu")] == [1.0, 1.0, 1.0, 0.0]
    executor.gpu_share = 0.5  # --per-gpu 2
    assert executor.task_gpus(job("auto")) == 0.5
    executor.cluster_gpus = 0.0
    assert executor.task_gpus(job("cuda")) == 0.0


def test_no_cluster_at_the_address_is_one_clear_error():
    from bench.errors import BenchError
    from bench.execution.ray_cluster import RayExecutor

    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    address = f"ray://127.0.0.1:{_free_port()}"
    with pytest.raises(BenchError, match=f"cannot reach a Ray cluster at {address}") as caught:
        RayExecutor(address=address)
    assert "\n" not in str(caught.value)
    assert not ray.is_initialized()
