"""How jobs get run, by name: in this process, in warm worker children (per slot or per GPU), or as Ray tasks.

``EXECUTORS`` is the one table of executor names: the suite schema, the command line's help and
``make_executor`` all read it. Each name says where its class lives, and the class is imported
only when that executor is built, so Ray, an optional extra, loads only for ``ray``. Executor
modules build on ``bench.executor_base`` and never import this one, so no import runs in a circle.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench.errors import BenchError
from bench.executor_base import (
    ABANDONED,
    KILL_GRACE_S,
    Executor,
    ExecutorOptions,
    InProcessExecutor,
    Job,
    Message,
    Outcome,
)

__all__ = [
    "ABANDONED", "DEFAULT_EXECUTOR", "EXECUTORS", "EXECUTOR_NAMES", "KILL_GRACE_S", "Executor", "ExecutorEntry",
    "ExecutorOptions", "InProcessExecutor", "Job", "Message", "Outcome", "executor_class", "make_executor",
]


@dataclass(frozen=True)
class ExecutorEntry:
    """Where an executor's class lives, and what the command line says of it."""

    module: str
    cls: str
    note: str = ""  # shown beside the name in ``run --help``
    # Runs cells on a cluster reached with --address: ``check``, which has no such option, leaves it out.
    cluster: bool = False


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry("bench.subprocess_executor", "SubprocessExecutor", note="a child process per run"),
    "inprocess": ExecutorEntry("bench.executor_base", "InProcessExecutor"),
    "gpus": ExecutorEntry("bench.gpu_executor", "GpuSlotExecutor"),
    "ray": ExecutorEntry("bench.ray_executor", "RayExecutor", cluster=True),
}
EXECUTOR_NAMES = tuple(EXECUTORS)
DEFAULT_EXECUTOR = "local"


def executor_class(name: str) -> type[Executor]:
    """The class behind an executor name, imported now."""
    entry = EXECUTORS[name]
    return getattr(importlib.import_module(entry.module), entry.cls)


def make_executor(
    kind: str, *, jobs: int | None = None, per_gpu: int = 1, address: str | None = None,
    max_retries: int = 2, kill_grace_s: float = KILL_GRACE_S, warm: bool = True, threads: int | None = None,
) -> Executor:
    """Build an executor by its name in ``EXECUTORS``; each takes the options it understands.

    ``warm`` and ``threads`` are the ``SubprocessExecutor`` options of ``local`` and ``gpus``.
    """
    if per_gpu < 1:
        raise BenchError(f"--per-gpu {per_gpu}: need at least one run per GPU")
    if kind not in EXECUTORS:
        *others, last = EXECUTOR_NAMES
        raise BenchError(f"unknown executor {kind!r}: use {', '.join(others)} or {last}")
    options = ExecutorOptions(jobs=jobs, per_gpu=per_gpu, address=address, max_retries=max_retries,
                              kill_grace_s=kill_grace_s, warm=warm, threads=threads)
    return executor_class(kind).from_options(options)
