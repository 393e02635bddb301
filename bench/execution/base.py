"""What every executor shares: jobs and their outcomes, slots, one message queue, abandoning.

An executor starts a job on a free slot and reports back through one queue: progress events
and, last, one ``Outcome``. It never touches the store; the driver reads the queue on its
main thread and is the single writer. This module imports no executor of its own kind, so
each executor module can build on it without a circle.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.config import DEFAULT_MAX_RETRIES, DEFAULT_PER_GPU
from bench.execution.worker import describe_failure, execute

# Seconds between SIGTERM and SIGKILL when a run is stopped: time to flush, not to finish.
KILL_GRACE_S = 10.0
ABANDONED = "abandoned"


@dataclass
class Job:
    """A unit of work for a worker: a cell (``run``) or a pretrain stage (``pretrain``)."""

    kind: str
    key: str
    label: str
    payload: dict[str, Any]
    timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "payload": self.payload}


@dataclass
class Outcome:
    """How a job ended: a value, or an error (and its traceback when it was a bug)."""

    job: Job
    value: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    slot: int = 0
    worker_pid: int | None = None  # the child that ran it, where there was one


@dataclass
class Message:
    """What an executor posts: ``event`` (progress dict) or ``done`` (an Outcome)."""

    kind: str
    job: Job
    event: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None


@dataclass(frozen=True)
class ExecutorOptions:
    """Every option an executor can be built with by name; each executor reads the ones it has."""

    jobs: int | None = None
    per_gpu: int = DEFAULT_PER_GPU
    address: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    kill_grace_s: float = KILL_GRACE_S
    warm: bool = True
    threads: int | None = None


class Executor:
    """Base: a fixed number of slots, a message queue, and a way to abandon running work."""

    def __init__(self, slots: int = 1):
        self.slots = slots
        self.messages: queue.Queue[Message] = queue.Queue()
        self._busy: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._abandoned = threading.Event()

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        """Build this executor from the options ``make_executor`` takes."""
        return cls()

    def free_slots(self) -> int:
        with self._lock:
            return self.slots - len(self._busy)

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._busy.values())

    def submit(self, job: Job) -> None:
        """Start ``job`` on a free slot; its messages arrive on ``self.messages``."""
        with self._lock:
            slot = next(i for i in range(self.slots) if i not in self._busy)
            self._busy[slot] = job
        threading.Thread(target=self._run_slot, args=(slot, job), daemon=True, name=f"slot-{slot}").start()

    def _run_slot(self, slot: int, job: Job) -> None:
        try:
            outcome = self._execute(slot, job)
        except BaseException as exc:  # a failure in the executor itself still ends the job
            failure = describe_failure(exc)
            outcome = Outcome(job, error=failure["error"], traceback=failure["traceback"])
        outcome.slot = slot
        with self._lock:
            self._busy.pop(slot, None)
        self.messages.put(Message("done", job, outcome=outcome))

    def _execute(self, slot: int, job: Job) -> Outcome:
        raise NotImplementedError

    def abandon(self) -> None:
        """Stop everything running now; its jobs end with an 'abandoned' outcome."""
        self._abandoned.set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job is running; False if some still are after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.abandon()


class InProcessExecutor(Executor):
    """Runs jobs in a thread of this process: fastest to start, but a crash takes the driver down."""

    def __init__(self) -> None:
        super().__init__(slots=1)

    def _execute(self, slot: int, job: Job) -> Outcome:
        def emit(event: dict[str, Any]) -> None:
            if self._abandoned.is_set():
                raise KeyboardInterrupt(ABANDONED)
            self.messages.put(Message("event", job, event=event))

        try:
            return Outcome(job, value=execute(job.to_dict(), emit))
        except KeyboardInterrupt:
            return Outcome(job, error=ABANDONED)
