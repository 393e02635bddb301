"""The ``gpus`` executor: warm worker slots pinned to the visible GPUs, one or more per GPU."""

from __future__ import annotations

import os

from bench.config import DEFAULT_PER_GPU
from bench.errors import BenchError
from bench.execution.base import ExecutorOptions
from bench.execution.local import SubprocessExecutor


def visible_gpus() -> list[str]:
    """GPU ids this process may use, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def gpu_slot_env(gpus: list[str], per_gpu: int = DEFAULT_PER_GPU) -> list[dict[str, str]]:
    """One environment per slot: each GPU repeated ``per_gpu`` times, slots spread across GPUs."""
    return [{"CUDA_VISIBLE_DEVICES": gpu} for _ in range(per_gpu) for gpu in gpus]


class GpuSlotExecutor(SubprocessExecutor):
    """A ``SubprocessExecutor`` with ``per_gpu`` slots on each visible GPU, each slot's worker seeing only its GPU."""

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> GpuSlotExecutor:
        gpus = visible_gpus()
        if not gpus:
            raise BenchError("executor 'gpus' needs at least one visible GPU; use --executor local")
        envs = gpu_slot_env(gpus, options.per_gpu)
        return cls(slots=len(envs), slot_env=envs, kill_grace_s=options.kill_grace_s, warm=options.warm,
                   threads=options.threads)
