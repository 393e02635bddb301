"""Worker child processes: starting one, its pipes, its lifeline to the driver, and ending its group.

A child process runs in its own session so a hard timeout or an abandon can kill its whole
process group, DataLoader workers included, and it holds the read end of a pipe whose write
end only the driver has: when the driver dies, even by SIGKILL, the pipe closes and the child
kills its own group, so nothing is left running.

A child is warm: it serves its slot's jobs one after another, so the libraries and datasets it
loaded serve every later cell, until a job fails in any way; then it is killed with its group
and the slot's next job starts a fresh one. Isolation is kept where it matters: a crash, hang
or leak is confined to one child, and no failed cell's process ever runs another cell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, BinaryIO

from bench.procs import (  # noqa: F401  (group_alive, group_has_live_member: re-exported)
    cpu_count,
    exited,
    group_alive,
    group_has_live_member,
    kill_group,
    terminate_group,
    wait_exit,
)
from bench.execution.worker import EVENT_FD_ENV, THREADS_ENV

if TYPE_CHECKING:
    from bench.execution.base import Job

LIFELINE_FD_ENV = "TRANSFER_BENCH_LIFELINE_FD"
_CHILD_ENTRY = "from bench.execution.pool import child_main; child_main()"


def worker_env(slot_env: dict[str, str], slots: int, threads: int | None) -> dict[str, str]:
    """The environment of a slot's worker: this process's, the slot's own, and its share of the cores."""
    env = {**os.environ, **slot_env}
    share = cpu_share_env(slots, threads)
    # The user's own thread settings win over the share, an explicit ``threads`` over both.
    env = {**env, **share} if threads is not None else {**share, **env}
    if env.get("OMP_NUM_THREADS", "").isdigit():
        env[THREADS_ENV] = env["OMP_NUM_THREADS"]
    return env


def spawn_worker(env: dict[str, str]) -> WorkerProcess:
    """Start a worker child that leads its own process group, waiting for jobs on its stdin."""
    read_fd, write_fd = os.pipe()
    life_read, life_write = os.pipe()
    env = {**env, EVENT_FD_ENV: str(write_fd), LIFELINE_FD_ENV: str(life_read), "PYTHONUNBUFFERED": "1"}
    stderr = tempfile.TemporaryFile(buffering=0)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD_ENTRY], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=stderr, env=env, pass_fds=(write_fd, life_read), start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        os.close(life_write)
        stderr.close()
        raise
    finally:
        os.close(write_fd)
        os.close(life_read)
    return WorkerProcess(child, read_fd, life_write, stderr)


def retire_worker(worker: WorkerProcess, wait_s: float) -> str:
    """End a worker and its whole group, reap it, close its pipes; return its stderr's tail."""
    child = worker.proc
    worker.close_input()  # end of input: a worker between jobs leaves on its own
    if not wait_exit(child, wait_s):
        terminate_group(child, 0.0)
    # Whatever is left in the group (a DataLoader worker, a forked helper) is an orphan now.
    # Killed before the child is reaped: until then its pid, the group's id, cannot be reused.
    kill_group(child.pid)
    child.wait()
    tail = worker.tail()
    worker.close()
    return tail


class WorkerProcess:
    """A worker child and the driver's ends of its pipes: jobs in, events out, the lifeline, stderr."""

    def __init__(self, proc: subprocess.Popen[bytes], events: int, lifeline: int, stderr: BinaryIO):
        self.proc = proc
        self.events = events
        self.lifeline = lifeline  # the write end: the child ends its group when every copy is closed
        self.stderr = stderr
        self.buffer = b""

    def begin(self) -> None:
        """Start a job with an empty stderr, so a failure's tail is this job's alone."""
        self.buffer = b""
        # The child writes through the same open file description, so this rewinds its writes too.
        os.ftruncate(self.stderr.fileno(), 0)
        os.lseek(self.stderr.fileno(), 0, os.SEEK_SET)

    def send(self, job: Job, last: bool) -> None:
        """Write one job line; ``last`` closes the input, so the child leaves after this job."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(job.to_dict()).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone: reading its events finds out how
        if last:
            self.close_input()

    def alone(self) -> bool:
        """Alive, and nothing else left running in its group: fit for another job."""
        return not exited(self.proc) and not group_has_live_member(self.proc.pid, self.proc.pid)

    def tail(self, limit: int = 4000) -> str:
        size = os.fstat(self.stderr.fileno()).st_size
        start = max(0, size - limit)
        return os.pread(self.stderr.fileno(), size - start, start).decode(errors="replace")

    def close_input(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                stdin.close()
            except OSError:
                pass  # a child already gone: nothing was waiting for the input

    def close(self) -> None:
        """Close the driver's ends; only once the child and its group are gone."""
        self.close_input()
        for fd in (self.events, self.lifeline):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()


class Watchdog:
    """Kills a job's worker group at the job's hard limit, unless the job ended first."""

    def __init__(self, child: subprocess.Popen[bytes], timeout_s: float, grace_s: float):
        self._lock = threading.Lock()
        self._over = False
        self.fired = False
        self._timer = threading.Timer(timeout_s, self._fire, args=(child, grace_s))
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, child: subprocess.Popen[bytes], grace_s: float) -> None:
        with self._lock:
            if self._over:  # the job ended as the timer went off: its worker may already run the next one
                return
            self.fired = True
        terminate_group(child, grace_s)

    def stop(self) -> bool:
        """End the watch; whether it fired (the worker is then being killed)."""
        with self._lock:
            self._over = True
        self._timer.cancel()
        return self.fired

    def join(self) -> None:
        self._timer.join()


def cpu_share_env(slots: int, threads: int | None = None) -> dict[str, str]:
    """Thread limits giving each of ``slots`` children its share of the cores, or ``threads`` each."""
    if threads is None:
        if slots <= 1:
            return {}  # one job alone: torch's own default (one thread per physical core)
        # Every torch child otherwise starts one thread per core: N children on N cores run N x slower.
        threads = max(1, cpu_count() // slots)
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def child_main() -> None:
    """Entry point of a worker child: guard against the driver's death, then serve jobs."""
    from bench.execution.worker import main

    lifeline = os.environ.pop(LIFELINE_FD_ENV, None)
    if lifeline is not None:
        threading.Thread(target=_watch_lifeline, args=(int(lifeline),), daemon=True, name="lifeline").start()
    sys.exit(main())


def _watch_lifeline(fd: int) -> None:
    """Block on the driver's pipe; end of file means the driver is gone, so end this group."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os.killpg(os.getpgid(0), signal.SIGKILL)


def describe_exit(code: int, stderr_tail: str) -> str:
    """Why a child ended without an outcome, in one line."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": " (killed: out of memory?)", "SIGSEGV": " (segmentation fault)", "SIGABRT": " (aborted)"}
        return f"worker died from {name}{hint.get(name, '')}"
    last = next((line for line in reversed(stderr_tail.strip().splitlines()) if line.strip()), "")
    return f"worker exited with status {code} without a result" + (f": {last[:200]}" if last else "")
