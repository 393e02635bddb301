"""How jobs get run, by name: in this process, in warm worker children (per slot or per GPU), or as Ray tasks.

``EXECUTORS``, the one table of executor names, lives with the settings in ``bench.config`` so
that the suite schema reads it without importing this package; the command line's help and
``make_executor`` read it too. Each name says where its class lives, and the class is imported
only when that executor is built, so Ray, an optional extra, loads only for ``ray``. Executor
modules build on ``bench.execution.base`` and never import this one, so no import runs in a circle.
"""

from __future__ import annotations

import importlib

from bench.config import (
    DEFAULT_EXECUTOR, DEFAULT_MAX_RETRIES, DEFAULT_PER_GPU, EXECUTOR_NAMES, EXECUTORS, ExecutorEntry,
)
from bench.errors import BenchError
from bench.execution.base import (
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


def executor_class(name: str) -> type[Executor]:
    """The class behind an executor name, imported now."""
    entry = EXECUTORS[name]
    return getattr(importlib.import_module(entry.module), entry.cls)


def make_executor(
    kind: str, *, jobs: int | None = None, per_gpu: int = DEFAULT_PER_GPU, address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES, kill_grace_s: float = KILL_GRACE_S, warm: bool = True, threads: int | None = None,
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
