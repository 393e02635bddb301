"""Cells as Ray tasks on an existing cluster; results come back to the driver, the store's only writer.

``ray`` is an optional dependency, imported only when this executor is built. Each job is one
task asking for a GPU share when its device wants CUDA and the cluster has GPUs. A worker or
node lost mid-task is Ray's to retry (``max_retries``); once those are spent the cell is
recorded as failed with the reason. Hard timeouts and abandons cancel the task by force.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.config import DEFAULT_MAX_RETRIES, DEFAULT_PER_GPU
from bench.errors import BenchError
from bench.execution.base import ABANDONED, Executor, ExecutorOptions, Job, Outcome

_POLL_S = 0.25


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError("executor 'ray' needs Ray: pip install 'transfer-bench[ray]'") from None
    return ray


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """The task body: run one job in the Ray worker and return an outcome or error event."""
    from bench.execution.worker import describe_failure, execute

    try:
        return {"type": "outcome", "value": execute(job, lambda event: None)}
    except Exception as exc:  # the cell's own failure travels back as data; a lost worker is Ray's to retry
        return describe_failure(exc)


def wants_cuda(job: Job) -> bool:
    """Whether a job's device setting asks for CUDA (``auto`` counts: it takes a GPU when there is one)."""
    if job.kind == "run":
        device = json.loads(job.payload["spec"]).get("device", "auto")
    else:
        device = job.payload.get("device", "auto")
    return device == "auto" or device.startswith("cuda")


class RayExecutor(Executor):
    """One Ray task per job on the cluster at ``address`` (``auto``, ``ray://host:port``, or None: local)."""

    def __init__(
        self, address: str | None = None, *, slots: int | None = None, per_gpu: int = DEFAULT_PER_GPU, max_retries: int = DEFAULT_MAX_RETRIES,
        runtime_env: dict[str, Any] | None = None, init_options: dict[str, Any] | None = None,
    ):
        ray = _import_ray()
        self._ray = ray
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            env = dict(runtime_env or {})
            if address and address.startswith("ray://"):
                # A client-mode cluster runs elsewhere: ship this package so workers run the same code.
                env.setdefault("py_modules", [str(Path(__file__).resolve().parent)])
            try:
                ray.init(address=address, runtime_env=env or None, log_to_driver=False,
                         **(init_options or {}))
            except Exception as exc:  # Ray raises many types for an unreachable or refused cluster
                where = address or "a new local instance"
                text = str(exc).strip()
                reason = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
                raise BenchError(
                    f"cannot reach a Ray cluster at {where}: {reason}"
                    " (start one with 'ray start --head', or pass --address ray://HOST:PORT)"
                ) from None
            runtime_env = None
        resources = ray.cluster_resources()
        self.cluster_gpus = float(resources.get("GPU", 0))
        self.gpu_share = 1.0 / max(1, per_gpu)
        if slots is None:
            slots = int(self.cluster_gpus * per_gpu) if self.cluster_gpus else int(resources.get("CPU", 1))
        super().__init__(slots=max(1, slots))
        self.max_retries = max_retries
        self.runtime_env = runtime_env
        self._refs: dict[int, Any] = {}
        self._remote = ray.remote(run_job)
        # A worker that ran a GPU cell keeps its CUDA context and cached memory: GPU cells get a fresh one.
        self._remote_fresh = ray.remote(max_calls=1)(run_job)

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> RayExecutor:
        return cls(address=options.address, slots=options.jobs, per_gpu=options.per_gpu,
                   max_retries=options.max_retries)

    def task_gpus(self, job: Job) -> float:
        """The GPU share a job asks Ray for: a share when CUDA is wanted and the cluster has GPUs, else 0."""
        return self.gpu_share if self.cluster_gpus and wants_cuda(job) else 0.0

    def _execute(self, slot: int, job: Job) -> Outcome:
        ray = self._ray
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        gpus = self.task_gpus(job)
        options: dict[str, Any] = {
            "num_cpus": 1, "num_gpus": gpus, "max_retries": self.max_retries, "retry_exceptions": False,
            "name": job.label,
        }
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        remote = self._remote_fresh if gpus else self._remote
        ref = remote.options(**options).remote(job.to_dict())
        with self._lock:
            self._refs[slot] = ref
        try:
            deadline = time.monotonic() + job.timeout_s if job.timeout_s else None
            while True:
                ready, _ = ray.wait([ref], timeout=_POLL_S)
                if ready:
                    break
                if self._abandoned.is_set():
                    ray.cancel(ref, force=True)
                    return Outcome(job, error=ABANDONED)
                if deadline is not None and time.monotonic() > deadline:
                    ray.cancel(ref, force=True)
                    return Outcome(job, error=f"timed out: cancelled after the hard limit of {job.timeout_s:g} s")
            try:
                reply = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                return Outcome(job, error=ABANDONED if self._abandoned.is_set() else "cancelled by Ray")
            except ray.exceptions.RayError as exc:
                attempts = self.max_retries + 1
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                error = f"Ray worker lost after {attempts} attempt(s): {type(exc).__name__}: {text}"
                return Outcome(job, error=error[:500])
        finally:
            with self._lock:
                self._refs.pop(slot, None)
        if reply.get("type") == "outcome":
            return Outcome(job, value=reply["value"])
        return Outcome(job, error=reply.get("error") or "unknown failure", traceback=reply.get("traceback"))

    def abandon(self) -> None:
        """Cancel every running task by force; the slot threads then report them abandoned."""
        self._abandoned.set()
        with self._lock:
            refs = list(self._refs.values())
        for ref in refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # a task that already ended cannot be cancelled; nothing to do
                pass

    def close(self) -> None:
        self.abandon()
        self.wait_idle(10.0)
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()

