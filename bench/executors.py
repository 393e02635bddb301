"""How jobs get run: in this process, or each in its own child process on a slot.

An executor starts a job on a free slot and reports back through one queue: progress events
and, last, one ``Outcome``. It never touches the store; the driver reads the queue on its
main thread and is the single writer. A child process runs in its own session so a hard
timeout or an abandon can kill its whole process group, DataLoader workers included.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.worker import EVENT_FD_ENV, describe_failure, execute

# Seconds between SIGTERM and SIGKILL when a run is stopped: time to flush, not to finish.
KILL_GRACE_S = 10.0


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


@dataclass
class Message:
    """What an executor posts: ``event`` (progress dict) or ``done`` (an Outcome)."""

    kind: str
    job: Job
    event: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome | None = None


class Executor:
    """Base: a fixed number of slots, a message queue, and a way to abandon running work."""

    def __init__(self, slots: int = 1):
        self.slots = slots
        self.messages: queue.Queue[Message] = queue.Queue()
        self._busy: dict[int, Job] = {}
        self._lock = threading.Lock()

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

    def close(self) -> None:
        self.abandon()


class InProcessExecutor(Executor):
    """Runs jobs in a thread of this process: fastest to start, but a crash takes the driver down."""

    def __init__(self) -> None:
        super().__init__(slots=1)
        self._abandoned = threading.Event()

    def _execute(self, slot: int, job: Job) -> Outcome:
        def emit(event: dict[str, Any]) -> None:
            if self._abandoned.is_set():
                raise KeyboardInterrupt("abandoned")
            self.messages.put(Message("event", job, event=event))

        try:
            return Outcome(job, value=execute(job.to_dict(), emit))
        except KeyboardInterrupt:
            return Outcome(job, error="abandoned")

    def abandon(self) -> None:
        self._abandoned.set()


class SubprocessExecutor(Executor):
    """Each job in a fresh ``python -m bench.worker`` child; ``slot_env`` pins slots to GPUs."""

    def __init__(self, slots: int = 1, slot_env: list[dict[str, str]] | None = None, kill_grace_s: float = KILL_GRACE_S):
        super().__init__(slots=slots)
        self.slot_env = slot_env or [{} for _ in range(slots)]
        self.kill_grace_s = kill_grace_s
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._abandoned = threading.Event()

    def _execute(self, slot: int, job: Job) -> Outcome:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **self.slot_env[slot % len(self.slot_env)], EVENT_FD_ENV: str(write_fd), "PYTHONUNBUFFERED": "1"}
        with tempfile.TemporaryFile() as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.worker"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=stderr, env=env, pass_fds=(write_fd,), start_new_session=True,
            )
            os.close(write_fd)
            with self._lock:
                self._children[slot] = child
            try:
                assert child.stdin is not None
                child.stdin.write(json.dumps(job.to_dict()).encode())
                child.stdin.close()
            except BrokenPipeError:
                pass
            final: dict[str, Any] = {}
            timed_out = threading.Event()
            watchdog = None
            if job.timeout_s:
                watchdog = threading.Timer(job.timeout_s, self._timeout, args=(child, timed_out))
                watchdog.daemon = True
                watchdog.start()
            with os.fdopen(read_fd, "r") as channel:
                for line in channel:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("type") in ("outcome", "error"):
                        final = event
                    else:
                        self.messages.put(Message("event", job, event=event))
            code = child.wait()
            if watchdog is not None:
                watchdog.cancel()
            with self._lock:
                self._children.pop(slot, None)
            stderr.seek(0)
            tail = stderr.read()[-4000:].decode(errors="replace")
        if final.get("type") == "outcome":
            return Outcome(job, value=final["value"])
        if final.get("type") == "error":
            return Outcome(job, error=final["error"], traceback=final.get("traceback"))
        if self._abandoned.is_set():
            return Outcome(job, error="abandoned")
        if timed_out.is_set():
            return Outcome(job, error=f"timed out: killed after the hard limit of {job.timeout_s:.0f} s", traceback=tail or None)
        return Outcome(job, error=describe_exit(code, tail), traceback=tail or None)

    def _timeout(self, child: subprocess.Popen[bytes], flag: threading.Event) -> None:
        flag.set()
        terminate_group(child, self.kill_grace_s)

    def abandon(self) -> None:
        self._abandoned.set()
        with self._lock:
            children = list(self._children.values())
        threads = [threading.Thread(target=terminate_group, args=(c, self.kill_grace_s)) for c in children]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def terminate_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace_s``."""
    try:
        pgid = os.getpgid(child.pid)
    except ProcessLookupError:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if child.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_exit(code: int, stderr_tail: str) -> str:
    """Why a child ended without an outcome, in one line."""
    if code < 0:
        name = signal.Signals(-code).name
        hint = {"SIGKILL": " (killed: out of memory?)", "SIGSEGV": " (segmentation fault)", "SIGABRT": " (aborted)"}
        return f"worker died from {name}{hint.get(name, '')}"
    last = next((line for line in reversed(stderr_tail.strip().splitlines()) if line.strip()), "")
    return f"worker exited with status {code} without a result" + (f": {last[:200]}" if last else "")


def visible_gpus() -> list[str]:
    """GPU ids this process may use, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def make_executor(kind: str, *, jobs: int | None = None, per_gpu: int = 1) -> Executor:
    """Build an executor by name: ``local`` (default), ``inprocess`` or ``gpus``."""
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "local":
        return SubprocessExecutor(slots=jobs or 1)
    if kind == "gpus":
        gpus = visible_gpus()
        if not gpus:
            from bench.errors import BenchError

            raise BenchError("executor 'gpus' needs at least one visible GPU; use --executor local")
        envs = [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus for _ in range(per_gpu)]
        return SubprocessExecutor(slots=len(envs), slot_env=envs)
    if kind == "ray":
        from bench.errors import BenchError

        raise BenchError("executor 'ray' is not available in this build; use local or gpus")
    raise ValueError(f"unknown executor {kind!r}")
