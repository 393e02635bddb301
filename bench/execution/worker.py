"""What runs inside a worker: jobs (cells or pretrain stages) in, one outcome per job out.

``execute`` is the same function for every executor. Run as ``python -m bench.execution.worker``, it
reads jobs as JSON lines on stdin, one at a time, until stdin closes, and writes JSON-line
events to the file descriptor named by ``TRANSFER_BENCH_EVENT_FD``, so library output on
stdout and stderr can never corrupt the channel the driver reads results from. Whatever the
first job imports (torch, timm, torchvision, scikit-learn) and the datasets it loads stay in
the process for the jobs after it; a worker stops at the first job that raises.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EVENT_FD_ENV = "TRANSFER_BENCH_EVENT_FD"
FAULT_ENV = "TRANSFER_BENCH_FAULT"
THREADS_ENV = "TRANSFER_BENCH_THREADS"

Emit = Callable[[dict[str, Any]], None]


def execute(job: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run one job and return its outcome value: a RunResult dict or pretrain info."""
    _inject_fault(job)
    _use_thread_share()
    from bench.training.pretrain import checkpoint_path, ensure_pretrained
    from bench.records import RunSpec

    def on_epoch(record: Any, total: int) -> None:
        emit({"type": "epoch", "total": total, **dataclasses.asdict(record)})

    payload = job["payload"]
    if job["kind"] == "pretrain":
        return ensure_pretrained(payload["pretrain"], payload["cache_dir"], payload["device"], on_epoch)
    if job["kind"] == "run":
        from bench.training.cell import run

        spec = RunSpec.from_json(payload["spec"])
        weights_file = checkpoint_path(payload["cache_dir"], spec.pretrain) if spec.pretrain else None
        result = run(spec, weights_file=weights_file, on_epoch=on_epoch, features_dir=payload.get("features_dir"))
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


def _use_thread_share() -> None:
    """Pin torch's intra-op threads to the share the executor gave this worker, before every job."""
    threads = os.environ.get(THREADS_ENV)
    if not threads:
        return
    import torch

    # OMP_NUM_THREADS already set the count when torch started; setting it per job also undoes
    # whatever an earlier job in a warm worker may have changed.
    torch.set_num_threads(max(1, int(threads)))


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """An error event: a user-facing error as its one line, anything else with its traceback."""
    from bench.failures import describe

    error, trace = describe(exc)
    return {"type": "error", "error": error, "traceback": trace}


def main() -> int:
    """Serve jobs from stdin until it closes; 0 when every job returned, 1 after one that raised."""
    fd = int(os.environ[EVENT_FD_ENV])
    channel = os.fdopen(fd, "w", buffering=1)

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    served = 0
    for line in iter(sys.stdin.buffer.readline, b""):
        if not line.strip():
            continue
        if served:
            _reset_peak_memory()
        try:
            value = execute(json.loads(line), emit)
        except BaseException as exc:  # the driver records the reason; nothing else should die silently
            emit(describe_failure(exc))
            return 1
        emit({"type": "outcome", "value": value})
        served += 1
        _tidy()
    return 0


def _reset_peak_memory() -> None:
    """Start the process's peak resident set afresh, so a run's peak memory on CPU is its own."""
    # The kernel's high-water mark (ru_maxrss) otherwise keeps the largest job this worker ever ran.
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux: peak memory on CPU reads as the worker's, not the run's


def _tidy() -> None:
    """Free what the last job left, so the next one starts from the same memory a fresh process would."""
    # Tensors caught in reference cycles hold memory until a full collection finds them. What
    # survives it is the worker's lasting state (modules, cached datasets): frozen, it is never
    # scanned again, so this costs most of a second once per worker instead of after every job,
    # and the collector's own automatic passes during later jobs get cheaper too.
    gc.collect()
    gc.freeze()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
