"""One classifier for how a run fails: the wording the run writes is the wording the driver reads."""

from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.failures import (
    NON_FINITE, OUT_OF_MEMORY, TIMEOUT, classify, describe, non_finite_loss, normalise_error, timed_out,
)


@pytest.mark.parametrize("error, kind", [
    ("OutOfMemoryError: CUDA out of memory. Tried 2 GiB", OUT_OF_MEMORY),
    ("torch.OutOfMemoryError: boom", OUT_OF_MEMORY),
    ("RuntimeError: CUDA error: out of memory", OUT_OF_MEMORY),
    ("RuntimeError: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate", OUT_OF_MEMORY),
    (str(non_finite_loss(3)), NON_FINITE),
    ("run ended with non-finite test metrics", NON_FINITE),
    (timed_out(12.5), TIMEOUT),
    ("timed out: cancelled after the hard limit of 3 s", TIMEOUT),
    ("ValueError: other", None),
    (None, None),
])
def test_each_failure_is_recognised_from_its_one_line(error, kind):
    assert classify(error) == kind


def test_out_of_memory_reads_the_same_however_cuda_said_it():
    assert normalise_error("OutOfMemoryError: CUDA out of memory. Tried 2 GiB") == "CUDA out of memory. Tried 2 GiB"
    assert normalise_error("torch.OutOfMemoryError: boom") == "CUDA out of memory: boom"
    assert normalise_error("CUDA out of memory: x") == "CUDA out of memory: x"
    assert normalise_error("ValueError: other") == "ValueError: other"


def test_a_user_error_has_no_traceback_and_a_bug_keeps_one():
    try:
        raise BenchError("dataset 'x' has no class 3")
    except BenchError as exc:
        assert describe(exc) == ("dataset 'x' has no class 3", None)
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as exc:
        error, trace = describe(exc)
    assert error == "ValueError: first line" and "Traceback" in trace
