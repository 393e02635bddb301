"""What the driver tells the outside: progress as it happens (an ``Observer``) and a ``RunSummary`` at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bench.execution.base import Job, Outcome
    from bench.records import RunResult
    from bench.suite.model import Suite


class Observer(Protocol):
    """Receives progress; the CLI draws bars from it, tests record it."""

    def suite_started(self, suite: Suite, total: int, done: int, todo: int) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_event(self, job: Job, event: dict[str, Any]) -> None: ...
    def job_finished(self, job: Job, result: RunResult | None, outcome: Outcome) -> None: ...
    def note(self, text: str) -> None: ...


class SilentObserver:
    """An observer that ignores everything."""

    def suite_started(self, suite: Suite, total: int, done: int, todo: int) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_event(self, job: Job, event: dict[str, Any]) -> None: ...
    def job_finished(self, job: Job, result: RunResult | None, outcome: Outcome) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class RunSummary:
    """What a call to ``run_suite`` did."""

    store_path: Path
    planned: int
    already_done: int
    ran: int = 0
    done: int = 0
    failed: int = 0
    # Cells that failed in an earlier run and were not run again (no --retry-failed).
    already_failed: int = 0
    interrupted: bool = False
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
