"""What runs inside a worker: one job (a cell or a pretrain stage) in, one outcome out.

``execute`` is the same function for every executor. Run as ``python -m bench.worker``, it
reads a job as JSON on stdin and writes JSON-line events to the file descriptor named by
``TRANSFER_BENCH_EVENT_FD``, so library output on stdout and stderr can never corrupt the
channel the driver reads results from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

EVENT_FD_ENV = "TRANSFER_BENCH_EVENT_FD"
FAULT_ENV = "TRANSFER_BENCH_FAULT"

Emit = Callable[[dict[str, Any]], None]


def execute(job: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run one job and return its outcome value: a RunResult dict or pretrain info."""
    _inject_fault(job)
    from bench.pretrain import checkpoint_path, ensure_pretrained
    from bench.records import RunSpec

    def on_epoch(record: Any, total: int) -> None:
        emit({"type": "epoch", "total": total, **dataclasses.asdict(record)})

    payload = job["payload"]
    if job["kind"] == "pretrain":
        return ensure_pretrained(payload["pretrain"], payload["cache_dir"], payload.get("device", "auto"), on_epoch)
    if job["kind"] == "run":
        from bench.train import run

        spec = RunSpec.from_json(payload["spec"])
        weights_file = checkpoint_path(payload["cache_dir"], spec.pretrain) if spec.pretrain else None
        result = run(spec, weights_file=weights_file, on_epoch=on_epoch)
        return dataclasses.asdict(result)
    raise ValueError(f"unknown job kind {job['kind']!r}")


def _inject_fault(job: dict[str, Any]) -> None:
    """Fault-injection hook for the harness's own tests: TRANSFER_BENCH_FAULT=KIND[=ARG][:RUN_ID_PREFIX]."""
    fault = os.environ.get(FAULT_ENV)
    if not fault or job["kind"] != "run":
        return
    kind, _, prefix = fault.partition(":")
    kind, _, arg = kind.partition("=")
    if not job["key"].startswith(prefix):
        return
    if kind == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif kind == "exit":
        os._exit(int(arg or 3))
    elif kind == "oom":  # ARG: only while the batch size is at least this
        batch_size = json.loads(job["payload"]["spec"])["training"]["batch_size"]
        if batch_size >= int(arg or 1):
            import torch

            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected at batch size {batch_size})")
    elif kind == "hang":  # deaf to SIGTERM, with a forked helper in its group, like a stuck DataLoader
        import signal
        import time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.fork()
        while True:
            time.sleep(1)


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """An error event: a user-facing error as its one line, anything else with its traceback."""
    from bench.errors import BenchError

    if isinstance(exc, BenchError):
        return {"type": "error", "error": str(exc), "traceback": None}
    return {"type": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "traceback": traceback.format_exc()}


def main() -> int:
    fd = int(os.environ[EVENT_FD_ENV])
    channel = os.fdopen(fd, "w", buffering=1)

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    job = json.loads(sys.stdin.read())
    try:
        value = execute(job, emit)
    except BaseException as exc:  # the driver records the reason; nothing else should die silently
        emit(describe_failure(exc))
        return 1
    emit({"type": "outcome", "value": value})
    return 0


if __name__ == "__main__":
    sys.exit(main())
