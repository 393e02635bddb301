"""How jobs get run: in this process, each in its own child process on a slot, or as Ray tasks.

An executor starts a job on a free slot and reports back through one queue: progress events
and, last, one ``Outcome``. It never touches the store; the driver reads the queue on its
main thread and is the single writer. A child process runs in its own session so a hard
timeout or an abandon can kill its whole process group, DataLoader workers included, and it
holds the read end of a pipe whose write end only the driver has: when the driver dies, even
by SIGKILL, the pipe closes and the child kills its own group, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import queue
import select
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
ABANDONED = "abandoned"
LIFELINE_FD_ENV = "TRANSFER_BENCH_LIFELINE_FD"
_CHILD_ENTRY = "from bench.executors import child_main; child_main()"


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
        self._abandoned = threading.Event()

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


class SubprocessExecutor(Executor):
    """Each job in a fresh worker child in its own session; ``slot_env`` pins slots to GPUs."""

    def __init__(
        self, slots: int = 1, slot_env: list[dict[str, str]] | None = None, kill_grace_s: float = KILL_GRACE_S,
    ):
        super().__init__(slots=slots)
        self.slot_env = slot_env or [{} for _ in range(slots)]
        self.kill_grace_s = kill_grace_s
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._thread_env = cpu_share_env(slots)

    def _execute(self, slot: int, job: Job) -> Outcome:
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        read_fd, write_fd = os.pipe()
        life_read, life_write = os.pipe()
        env = {
            **self._thread_env, **os.environ, **self.slot_env[slot % len(self.slot_env)],
            EVENT_FD_ENV: str(write_fd), LIFELINE_FD_ENV: str(life_read), "PYTHONUNBUFFERED": "1",
        }
        timed_out = threading.Event()
        watchdog: threading.Timer | None = None
        child: subprocess.Popen[bytes] | None = None
        try:
            with tempfile.TemporaryFile() as stderr:
                try:
                    child = subprocess.Popen(
                        [sys.executable, "-c", _CHILD_ENTRY], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=stderr, env=env, pass_fds=(write_fd, life_read), start_new_session=True,
                    )
                finally:
                    os.close(write_fd)
                    os.close(life_read)
                with self._lock:
                    self._children[slot] = child
                if self._abandoned.is_set():  # an abandon that came while this child was starting
                    threading.Thread(target=terminate_group, args=(child, self.kill_grace_s), daemon=True).start()
                _send_job(child, job)
                if job.timeout_s:
                    watchdog = threading.Timer(job.timeout_s, self._timeout, args=(child, timed_out))
                    watchdog.daemon = True
                    watchdog.start()
                channel, read_fd = read_fd, -1  # _read_events owns and closes it
                final = self._read_events(job, child, channel)
                wait_exit(child)
                stderr.seek(0)
                tail = stderr.read()[-4000:].decode(errors="replace")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if child is not None:
                if not exited(child):  # only on an error of our own: never leave a child behind
                    terminate_group(child, 0.0)
                # Whatever is left in the group (a DataLoader worker, a forked helper) is an orphan now.
                # Killed before the child is reaped: until then its pid, the group's id, cannot be reused.
                kill_group(child.pid)
                child.wait()
                with self._lock:
                    self._children.pop(slot, None)
            if read_fd >= 0:
                os.close(read_fd)
            os.close(life_write)
        code = child.returncode
        if final.get("type") == "outcome":
            return Outcome(job, value=final["value"])
        if final.get("type") == "error":
            return Outcome(job, error=final["error"], traceback=final.get("traceback"))
        if timed_out.is_set():
            error = f"timed out: killed after the hard limit of {job.timeout_s:g} s"
            return Outcome(job, error=error, traceback=tail or None)
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        return Outcome(job, error=describe_exit(code, tail), traceback=tail or None)

    def _read_events(self, job: Job, child: subprocess.Popen[bytes], read_fd: int) -> dict[str, Any]:
        """Pass progress on until the channel closes or the child is gone; return the last outcome."""
        final: dict[str, Any] = {}
        buffer = b""
        exited_at: float | None = None
        with os.fdopen(read_fd, "rb", buffering=0) as channel:
            while True:
                ready, _, _ = select.select([channel], [], [], 0.2)
                if ready:
                    chunk = channel.read(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        final = self._event(job, line, final)
                    continue
                # A grandchild that inherited the channel can keep it open after the child exits.
                if exited(child):
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 0.5:
                        break
        if buffer:
            final = self._event(job, buffer, final)
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

    def _timeout(self, child: subprocess.Popen[bytes], flag: threading.Event) -> None:
        flag.set()
        terminate_group(child, self.kill_grace_s)

    def abandon(self) -> None:
        """SIGTERM every running child's group, SIGKILL what is left after the grace period."""
        self._abandoned.set()
        with self._lock:
            children = list(self._children.values())
        threads = [threading.Thread(target=terminate_group, args=(c, self.kill_grace_s)) for c in children]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def cpu_share_env(slots: int) -> dict[str, str]:
    """Thread limits giving each of ``slots`` children its share of the cores (the user's own settings win)."""
    if slots <= 1:
        return {}
    # Every torch child otherwise starts one thread per core: N children on N cores run N x slower.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = str(max(1, cores // slots))
    return {name: share for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _send_job(child: subprocess.Popen[bytes], job: Job) -> None:
    try:
        assert child.stdin is not None
        child.stdin.write(json.dumps(job.to_dict()).encode())
        child.stdin.close()
    except BrokenPipeError:
        pass


def child_main() -> None:
    """Entry point of a worker child: guard against the driver's death, then run the job."""
    from bench.worker import main

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


def terminate_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace_s``."""
    pgid = child.pid  # the child leads its own session, so its pid is its group id
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if exited(child) and not group_has_live_member(pgid, child.pid):
                return
            time.sleep(0.05)


def exited(child: subprocess.Popen[bytes]) -> bool:
    """Whether the child has ended, without reaping it (the slot thread does that, after the group)."""
    if child.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return child.poll() is not None
    try:
        return os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def wait_exit(child: subprocess.Popen[bytes]) -> None:
    """Block until the child ends, leaving it unreaped."""
    if child.returncode is not None:
        return
    if not hasattr(os, "waitid"):
        child.wait()
        return
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass


def group_has_live_member(pgid: int, leader: int | None = None) -> bool:
    """Whether a group holds a live process other than ``leader`` (an exited, unreaped child)."""
    if not group_alive(pgid):
        return False
    try:
        members = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False  # no /proc to look in: the SIGKILL that follows every child's exit sweeps the group
    for pid in members:
        if pid == leader:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in a group; no error when it is already empty."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether any process of a group still exists (zombies included until reaped)."""
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
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {"SIGKILL": " (killed: out of memory?)", "SIGSEGV": " (segmentation fault)", "SIGABRT": " (aborted)"}
        return f"worker died from {name}{hint.get(name, '')}"
    last = next((line for line in reversed(stderr_tail.strip().splitlines()) if line.strip()), "")
    return f"worker exited with status {code} without a result" + (f": {last[:200]}" if last else "")


def visible_gpus() -> list[str]:
    """GPU ids this process may use, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def gpu_slot_env(gpus: list[str], per_gpu: int = 1) -> list[dict[str, str]]:
    """One environment per slot: each GPU repeated ``per_gpu`` times, slots spread across GPUs."""
    return [{"CUDA_VISIBLE_DEVICES": gpu} for _ in range(per_gpu) for gpu in gpus]


def make_executor(
    kind: str, *, jobs: int | None = None, per_gpu: int = 1, address: str | None = None,
    max_retries: int = 2, kill_grace_s: float = KILL_GRACE_S,
) -> Executor:
    """Build an executor by name: ``local`` (default), ``inprocess``, ``gpus`` or ``ray``."""
    from bench.errors import BenchError

    if per_gpu < 1:
        raise BenchError(f"--per-gpu {per_gpu}: need at least one run per GPU")
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "local":
        return SubprocessExecutor(slots=jobs or 1, kill_grace_s=kill_grace_s)
    if kind == "gpus":
        gpus = visible_gpus()
        if not gpus:
            raise BenchError("executor 'gpus' needs at least one visible GPU; use --executor local")
        envs = gpu_slot_env(gpus, per_gpu)
        return SubprocessExecutor(slots=len(envs), slot_env=envs, kill_grace_s=kill_grace_s)
    if kind == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(address=address, slots=jobs, per_gpu=per_gpu, max_retries=max_retries)
    raise BenchError(f"unknown executor {kind!r}: use local, inprocess, gpus or ray")
