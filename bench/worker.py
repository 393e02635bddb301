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

Emit = Callable[[dict[str, Any]], None]


def execute(job: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run one job and return its outcome value: a RunResult dict or pretrain info."""
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
