"""How jobs get run: in this process, in worker child processes (one per slot), or as Ray tasks.

An executor starts a job on a free slot and reports back through one queue: progress events
and, last, one ``Outcome``. It never touches the store; the driver reads the queue on its
main thread and is the single writer. A child process runs in its own session so a hard
timeout or an abandon can kill its whole process group, DataLoader workers included, and it
holds the read end of a pipe whose write end only the driver has: when the driver dies, even
by SIGKILL, the pipe closes and the child kills its own group, so nothing is left running.

A child is warm: it serves its slot's jobs one after another, so the libraries and datasets it
loaded serve every later cell, until a job fails in any way; then it is killed with its group
and the slot's next job starts a fresh one. Isolation is kept where it matters: a crash, hang
or leak is confined to one child, and no failed cell's process ever runs another cell.
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
from typing import Any, BinaryIO

from bench.procs import (  # noqa: F401  (group_alive, group_has_live_member: re-exported)
    cpu_count,
    exited,
    group_alive,
    group_has_live_member,
    kill_group,
    terminate_group,
    wait_exit,
)
from bench.records import STATUS_DONE
from bench.worker import EVENT_FD_ENV, THREADS_ENV, describe_failure, execute

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
    worker_pid: int | None = None  # the child that ran it, where there was one


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
        self._idle: dict[int, _Worker] = {}  # warm workers waiting for their slot's next job

    def _execute(self, slot: int, job: Job) -> Outcome:
        if self._abandoned.is_set():
            return Outcome(job, error=ABANDONED)
        worker = self._checkout(slot)
        final: dict[str, Any] = {}
        keep = timed_out = False
        watchdog: _Watchdog | None = None
        tail = ""
        try:
            worker.begin()
            worker.send(job, last=not self.warm)
            if job.timeout_s:
                watchdog = _Watchdog(worker.proc, job.timeout_s, self.kill_grace_s)
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

    def _outcome(self, job: Job, final: dict[str, Any], worker: _Worker, timed_out: bool, tail: str) -> Outcome:
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

    def _checkout(self, slot: int) -> _Worker:
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

    def _spawn(self, slot: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        life_read, life_write = os.pipe()
        env = {**os.environ, **self.slot_env[slot % len(self.slot_env)]}
        share = cpu_share_env(self.slots, self.threads)
        # The user's own thread settings win over the share, an explicit ``threads`` over both.
        env = {**env, **share} if self.threads is not None else {**share, **env}
        if env.get("OMP_NUM_THREADS", "").isdigit():
            env[THREADS_ENV] = env["OMP_NUM_THREADS"]
        env.update({EVENT_FD_ENV: str(write_fd), LIFELINE_FD_ENV: str(life_read), "PYTHONUNBUFFERED": "1"})
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
        return _Worker(child, read_fd, life_write, stderr)

    def _retire(self, worker: _Worker, wait_s: float) -> str:
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

    def _read_events(self, job: Job, worker: _Worker) -> dict[str, Any]:
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


class _Worker:
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


class _Watchdog:
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
    max_retries: int = 2, kill_grace_s: float = KILL_GRACE_S, warm: bool = True, threads: int | None = None,
) -> Executor:
    """Build an executor by name: ``local`` (default), ``inprocess``, ``gpus`` or ``ray``.

    ``warm`` and ``threads`` are the ``SubprocessExecutor`` options of ``local`` and ``gpus``.
    """
    from bench.errors import BenchError

    if per_gpu < 1:
        raise BenchError(f"--per-gpu {per_gpu}: need at least one run per GPU")
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "local":
        return SubprocessExecutor(slots=jobs or 1, kill_grace_s=kill_grace_s, warm=warm, threads=threads)
    if kind == "gpus":
        gpus = visible_gpus()
        if not gpus:
            raise BenchError("executor 'gpus' needs at least one visible GPU; use --executor local")
        envs = gpu_slot_env(gpus, per_gpu)
        return SubprocessExecutor(slots=len(envs), slot_env=envs, kill_grace_s=kill_grace_s, warm=warm,
                                  threads=threads)
    if kind == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(address=address, slots=jobs, per_gpu=per_gpu, max_retries=max_retries)
    raise BenchError(f"unknown executor {kind!r}: use local, inprocess, gpus or ray")
