"""The ``local`` executor: each slot's jobs run in a warm worker child, replaced after any failure."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any

from bench.execution.base import ABANDONED, KILL_GRACE_S, Executor, ExecutorOptions, Job, Message, Outcome
from bench.procs import exited, terminate_group
from bench.records import STATUS_DONE
from bench.execution.pool import Watchdog, WorkerProcess, describe_exit, retire_worker, spawn_worker, worker_env


class SubprocessExecutor(Executor):
    """Jobs in worker children, each in its own session; ``slot_env`` pins slots to GPUs.

    ``warm`` (the default) keeps a slot's worker for the next job once a job succeeds, so torch,
    timm and the datasets load once per worker instead of once per cell; any other ending (a
    failed cell, a crash, a timeout, an abandon) retires the worker, and the slot's next job gets
    a fresh one. ``warm=False`` starts a fresh child for every job. ``threads`` is each job's
    count of intra-op threads; by default the cores are shared out among the slots.
    """

    def __init__(
        self, slots: int = 1, slot_env: list[dict[str, str]] | None = None, kill_grace_s: float = KILL_GRACE_S,
        *, warm: bool = True, threads: int | None = None,
    ):
        super().__init__(slots=slots)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.slot_env = slot_env or [{} for _ in range(slots)]
        self.kill_grace_s = kill_grace_s
        self.warm = warm
        self.threads = threads
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # workers running a job: what abandon kills
        self._idle: dict[int, WorkerProcess] = {}  # warm workers waiting for their slot's next job

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> SubprocessExecutor:
        return cls(slots=options.jobs or 1, kill_grace_s=options.kill_grace_s, warm=options.warm,
                   threads=options.threads)

    def _execute(self, slot: int, job: Job) -> Outcome:
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        worker = self._checkout(slot)
        final: dict[str, Any] = {}
        keep = timed_out = False
        watchdog: Watchdog | None = None
        tail = ""
        try:
            worker.begin()
            worker.send(job, last=not self.warm)
            if job.timeout_s:
                watchdog = Watchdog(worker.proc, job.timeout_s, self.kill_grace_s)
            final = self._read_events(job, worker)
            timed_out = watchdog.stop() if watchdog is not None else False
            keep = self.warm and not timed_out and _succeeded(job, final) and worker.alone()
        finally:
            if watchdog is not None:
                timed_out = watchdog.stop()
                watchdog.join()  # a kill in flight lands before the worker is reaped, never on a reused pid
            with self._lock:
                self._children.pop(slot, None)
                keep = keep and not self._abandoned.is_set()
                if keep:
                    self._idle[slot] = worker
            if not keep:
                tail = self._retire(worker, self.kill_grace_s)
        outcome = self._outcome(job, final, worker, timed_out, tail)
        outcome.worker_pid = worker.proc.pid
        return outcome

    def _outcome(self, job: Job, final: dict[str, Any], worker: WorkerProcess, timed_out: bool, tail: str) -> Outcome:
        if final.get("type") == "outcome":
            return Outcome(job, value=final["value"])
        if final.get("type") == "error":
            return Outcome(job, error=final["error"], traceback=final.get("traceback"))
        if timed_out:
            error = f"timed out: killed after the hard limit of {job.timeout_s:g} s"
            return Outcome(job, error=error, traceback=tail or None)
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        code = worker.proc.returncode if worker.proc.returncode is not None else -signal.SIGKILL
        return Outcome(job, error=describe_exit(code, tail), traceback=tail or None)

    def _checkout(self, slot: int) -> WorkerProcess:
        """The slot's warm worker if it is still alive, else a new one; registered as running."""
        with self._lock:
            worker = self._idle.pop(slot, None)
        if worker is not None and exited(worker.proc):  # died while idle: the OOM killer, a stray signal
            self._retire(worker, 0.0)
            worker = None
        if worker is None:
            worker = self._spawn(slot)
        with self._lock:
            self._children[slot] = worker.proc
        if self._abandoned.is_set():  # an abandon that came while this worker was being taken
            threading.Thread(target=terminate_group, args=(worker.proc, self.kill_grace_s), daemon=True).start()
        return worker

    def _spawn(self, slot: int) -> WorkerProcess:
        return spawn_worker(worker_env(self.slot_env[slot % len(self.slot_env)], self.slots, self.threads))

    def _retire(self, worker: WorkerProcess, wait_s: float) -> str:
        return retire_worker(worker, wait_s)

    def _read_events(self, job: Job, worker: WorkerProcess) -> dict[str, Any]:
        """Pass progress on until the job's outcome arrives or the worker is gone; return the outcome."""
        final: dict[str, Any] = {}
        exited_at: float | None = None
        while True:
            ready, _, _ = select.select([worker.events], [], [], 0.2)
            if ready:
                chunk = os.read(worker.events, 65536)
                if not chunk:
                    break
                *lines, worker.buffer = (worker.buffer + chunk).split(b"\n")
                for line in lines:
                    final = self._event(job, line, final)
                    if final:
                        return final
                continue
            # A grandchild that inherited the channel can keep it open after the worker exits.
            if exited(worker.proc):
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 0.5:
                    break
        if worker.buffer:
            final = self._event(job, worker.buffer, final)
            worker.buffer = b""
        return final

    def _event(self, job: Job, line: bytes, final: dict[str, Any]) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return final
        if not isinstance(event, dict):
            return final
        if event.get("type") in ("outcome", "error"):
            return event
        self.messages.put(Message("event", job, event=event))
        return final

    def abandon(self) -> None:
        """SIGTERM every running worker's group, SIGKILL what is left after the grace; end idle workers."""
        self._abandoned.set()
        with self._lock:
            children = list(self._children.values())
            idle = list(self._idle.values())
            self._idle.clear()
        threads = [threading.Thread(target=terminate_group, args=(c, self.kill_grace_s)) for c in children]
        # An idle worker holds nothing worth flushing, and no job will ever come to it now.
        threads += [threading.Thread(target=self._retire, args=(w, 0.0)) for w in idle]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _succeeded(job: Job, final: dict[str, Any]) -> bool:
    """Whether a job came back with a usable value: a cell that ran to the end, or a pretrain stage."""
    if final.get("type") != "outcome":
        return False
    value = final.get("value")
    return job.kind != "run" or (isinstance(value, dict) and value.get("status") == STATUS_DONE)
