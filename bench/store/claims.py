"""Who holds a claim on a cell, and whether that driver still lives.

An owner id names a driver: host, pid, the process's start time and a unique token. A claim is
live while its heartbeat is fresh and, on this host, while that very driver still runs.
"""

from __future__ import annotations

import os
import socket
import uuid

from bench.procs import process_start, same_process

# A claim not refreshed for this long is presumed dead even when its owner is on another host.
STALE_CLAIM_S = 15 * 60

# Owners started by this process and not yet finished: a claim by this pid with a token not in
# here belongs to a driver that ended without giving it back, so it is dead even though the pid lives.
_LOCAL_OWNERS: set[str] = set()


def owner_id() -> str:
    """A new driver identity for claims: host, pid, the process's start time and a unique token."""
    pid = os.getpid()
    owner = f"{socket.gethostname()}:{pid}:{process_start(pid) or 0}:{uuid.uuid4().hex[:12]}"
    _LOCAL_OWNERS.add(owner)
    return owner


def retire_owner(owner: str) -> None:
    """Mark a driver identity of this process as finished: its leftover claims are dead."""
    _LOCAL_OWNERS.discard(owner)


def claim_live(owner: str | None, claimed_at: float | None, now: float) -> bool:
    """Whether a claim still holds: refreshed within ``STALE_CLAIM_S`` by an owner that lives."""
    fresh = claimed_at is not None and now - claimed_at < STALE_CLAIM_S
    return fresh and _owner_alive(owner)


def _owner_alive(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return False
    host, pid_text, *rest = owner.split(":")
    if host != socket.gethostname():
        return True  # cannot see other hosts' processes; the heartbeat age decides instead
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if not 0 < pid < 2**31:
        return False  # no process has it: a damaged or hand-edited claim, free again
    # A start time of 0 was recorded where none could be read: the pid alone must do.
    if not same_process(pid, rest[0] if rest and rest[0] != "0" else None):
        return False
    if pid == os.getpid() and len(rest) >= 2:
        return owner in _LOCAL_OWNERS
    return True
