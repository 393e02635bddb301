"""How a run fails, worded and recognised in one place: out of memory, a non-finite loss, a timeout.

A failure crosses process boundaries as one line of text, so the same wording must be written
by the run, the worker and the executors and read back by the driver (an out-of-memory cell is
retried at half its batch size) and the report. Nothing here imports torch: CUDA's
out-of-memory error is recognised by its type's name and its message.
"""

from __future__ import annotations

import traceback

from bench.errors import BenchError

OUT_OF_MEMORY = "out_of_memory"
NON_FINITE = "non_finite"
TIMEOUT = "timeout"

OOM_PREFIX = "CUDA out of memory"
TIMEOUT_PREFIX = "timed out"
NON_FINITE_LOSS = "loss became non-finite"
# CUDA libraries that run out of memory inside a kernel say so in their own words.
_OOM_MARKERS = ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


class TrainingFailed(BenchError):
    """The run itself went wrong: NaN loss, a frozen weight moved, no metrics."""


def non_finite_loss(epoch: int) -> TrainingFailed:
    """The failure of a run whose loss overflowed or became NaN."""
    return TrainingFailed(f"{NON_FINITE_LOSS} during epoch {epoch}")


def timed_out(limit_s: float, how: str = "killed") -> str:
    """The error of a run stopped at its hard limit."""
    return f"{TIMEOUT_PREFIX}: {how} after the hard limit of {limit_s:g} s"


def one_line(exc: BaseException) -> str:
    """An exception as one line: a user-facing error as its message, anything else with its type."""
    if isinstance(exc, BenchError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def describe(exc: BaseException) -> tuple[str, str | None]:
    """(one-line error, traceback): a user-facing error needs no traceback, a bug or library error keeps it."""
    if isinstance(exc, BenchError):
        return str(exc), None
    return one_line(exc), traceback.format_exc()


def normalise_error(error: str | None) -> str | None:
    """Make every way CUDA reports running out of memory start with 'CUDA out of memory'."""
    if not error or error.startswith(OOM_PREFIX):
        return error
    head, _, rest = error.partition(": ")
    if head.rsplit(".", 1)[-1] == "OutOfMemoryError" and rest:
        return rest if rest.startswith(OOM_PREFIX) else f"{OOM_PREFIX}: {rest}"
    if any(marker in error for marker in _OOM_MARKERS):
        return f"{OOM_PREFIX}: {error}"
    return error


def classify(error: str | None) -> str | None:
    """OUT_OF_MEMORY, NON_FINITE, TIMEOUT, or None for any other failure (or none)."""
    error = normalise_error(error)
    if not error:
        return None
    if error.startswith(OOM_PREFIX):
        return OUT_OF_MEMORY
    if error.startswith(TIMEOUT_PREFIX):
        return TIMEOUT
    if NON_FINITE_LOSS in error or "non-finite" in error:
        return NON_FINITE
    return None
