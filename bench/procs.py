"""Processes on POSIX: end a child's whole group, tell whether anything in it still lives, and
tell whether a pid is still the process it was.

A worker child leads its own session, so its pid is its group id. Everything here leaves the
child itself unreaped: until it is reaped its pid cannot be reused, so a group signal sent by
id can only reach what the child started. A pid recorded elsewhere (a claim in the store) has no
such guarantee, so its start time is what tells the same process from a later one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def terminate_group(child: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace_s``."""
    pgid = child.pid
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


def wait_exit(child: subprocess.Popen[bytes], timeout_s: float | None = None) -> bool:
    """Block until the child ends (at most ``timeout_s``), leaving it unreaped; whether it ended."""
    if timeout_s is None and child.returncode is None and hasattr(os, "waitid"):
        try:
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        return True
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not exited(child):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
        fields = _stat(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists; one we may not signal exists too.

    A number too large to be a pid raises OverflowError, as ``os.kill`` does.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        fields = _stat(pid)
        return None if fields is None else fields[19].decode()
    except (ValueError, IndexError):
        return None


def same_process(pid: int, started: str | None) -> bool:
    """Whether ``pid`` is alive and, when its start time ``started`` was recorded, still that process.

    Where the start time cannot be read now (no /proc), a live pid is taken for the same process.
    """
    if not pid_alive(pid):
        return False
    if started is not None:
        now = process_start(pid)
        if now is not None and now != started:
            return False  # the pid now belongs to another process
    return True


def _stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name may hold spaces or parentheses, so fields are counted after the last ')'.
    return data[data.rindex(b")") + 2:].split()
