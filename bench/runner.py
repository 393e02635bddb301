"""The driver: expand a suite, skip what is done, run the rest, write every result once.

The driver is the only process that writes the store. It claims a cell just before handing
it to the executor, writes its result in one transaction when it comes back, and gives the
claim back if the cell is abandoned, so an interrupted suite resumes with exactly the cells
that never finished. Progress goes to an ``Observer``; this module prints nothing.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.errors import SuiteError
from bench.executors import Executor, Job, Message, Outcome, make_executor
from bench.records import STATUS_DONE, STATUS_FAILED, RunResult, RunSpec
from bench.store import ResultStore, owner_id
from bench.suite import Suite

HEARTBEAT_S = 60.0


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
    interrupted: bool = False
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def store_path_for(suite: Suite, results_dir: str | Path = "results") -> Path:
    return Path(results_dir) / f"{suite.name}.db"


def check_sizes(suite: Suite) -> None:
    """Reject at plan time a size some class cannot supply, naming dataset, size and class."""
    from bench.data import class_counts, resolve_per_class
    from bench.errors import DataError

    for i, dataset in enumerate(suite.datasets):
        config = dataset.model_dump()
        try:
            counts = class_counts(config)
            for size in dataset.sizes:
                resolve_per_class(size, counts["train"], dataset.val_fraction, classes=counts.get("classes"))
        except DataError as exc:
            raise SuiteError(str(exc), file=suite.source, field=f"datasets.{i}") from None


def run_suite(
    suite: Suite,
    *,
    results_dir: str | Path = "results",
    executor: Executor | str | None = None,
    jobs: int | None = None,
    retry_failed: bool = False,
    force: bool = False,
    observer: Observer | None = None,
    cache_dir: str | Path | None = None,
) -> RunSummary:
    """Run every pending cell of ``suite`` into ``results/<name>.db`` and return a summary."""
    started = time.time()
    observer = observer or SilentObserver()
    check_sizes(suite)
    cells = suite.expand()
    path = store_path_for(suite, results_dir)
    cache = Path(cache_dir) if cache_dir else Path(results_dir) / "pretrained"
    if isinstance(executor, str) or executor is None:
        executor = make_executor(executor or suite.executor, jobs=jobs)
    with ResultStore(path) as store:
        store.set_meta("suite", suite.model_dump(mode="json"))
        store.set_meta("planned", len(cells))
        store.set_meta("planned_ids", [c.run_id for c in cells])
        todo = store.pending(cells, retry_failed=retry_failed, force=force)
        summary = RunSummary(store_path=path, planned=len(cells), already_done=len(cells) - len(todo))
        observer.suite_started(suite, len(cells), summary.already_done, len(todo))
        try:
            _Driver(store, executor, observer, summary, cache, retry_failed, force).run(todo)
        finally:
            executor.close()
    summary.wall_s = time.time() - started
    return summary


class _Driver:
    """The scheduling loop: pretrain stages first, then cells, as slots free up."""

    def __init__(self, store: ResultStore, executor: Executor, observer: Observer, summary: RunSummary,
                 cache: Path, retry_failed: bool, force: bool):
        self.store, self.executor, self.observer, self.summary = store, executor, observer, summary
        self.cache = cache
        self.allow = tuple(s for s, on in ((STATUS_FAILED, retry_failed or force), (STATUS_DONE, force)) if on)
        self.owner = owner_id()
        self.specs: dict[str, RunSpec] = {}
        self.stopping = False

    def run(self, todo: list[RunSpec]) -> None:
        stages = {spec.pretrain["key"]: spec.pretrain for spec in todo if spec.pretrain}
        failed_stages: dict[str, str] = {}
        if stages:
            jobs = [self._pretrain_job(stage) for stage in stages.values()]
            for outcome in self._schedule(jobs):
                if outcome.error:
                    failed_stages[outcome.job.key] = outcome.error
        if self.stopping:
            self.summary.interrupted = True
            return
        runnable = []
        for spec in todo:
            if spec.pretrain and spec.pretrain["key"] in failed_stages:
                reason = f"pretrain stage {spec.pretrain['name']!r} failed: {failed_stages[spec.pretrain['key']]}"
                self._record(spec, RunResult.failure(spec.run_id, reason), Outcome(self._cell_job(spec), error=reason))
            else:
                runnable.append(spec)
        for _ in self._schedule([self._cell_job(spec) for spec in runnable]):
            pass
        self.summary.interrupted = self.stopping

    def _pretrain_job(self, stage: dict[str, Any]) -> Job:
        payload = {"pretrain": stage, "cache_dir": str(self.cache), "device": self._device()}
        timeout = stage["config"]["training"].get("timeout")
        return Job("pretrain", stage["key"], f"pretrain {stage['backbone']} on {stage['name']}", payload, timeout)

    def _device(self) -> str:
        suite = self.store.get_meta("suite") or {}
        return suite.get("device", "auto")

    def _cell_job(self, spec: RunSpec) -> Job:
        self.specs[spec.run_id] = spec
        label = f"{spec.backbone} {spec.strategy_label} {spec.dataset_name}@{spec.size} seed {spec.seed}"
        payload = {"spec": spec.to_json(), "cache_dir": str(self.cache)}
        return Job("run", spec.run_id, label, payload, hard_timeout(spec.training))

    def _schedule(self, jobs: list[Job]):
        """Feed jobs to free slots; yield each outcome after recording it. Ctrl-C: see module doc."""
        pending = list(reversed(jobs))
        in_flight = 0
        last_beat = time.monotonic()
        while pending or in_flight:
            try:
                while pending and not self.stopping and self.executor.free_slots() > 0:
                    job = pending.pop()
                    if job.kind == "run" and not self.store.claim(self.specs[job.key], self.owner, allow=self.allow):
                        self.observer.note(f"skipped {job.label}: another driver holds or finished it")
                        continue
                    self.executor.submit(job)
                    in_flight += 1
                    self.observer.job_started(job)
                if not in_flight:
                    break
                try:
                    message: Message = self.executor.messages.get(timeout=1.0)
                except queue.Empty:
                    message = None
                if time.monotonic() - last_beat > HEARTBEAT_S:
                    self.store.heartbeat([j.key for j in self.executor.running() if j.kind == "run"], self.owner)
                    last_beat = time.monotonic()
                if message is None:
                    continue
                if message.kind == "event":
                    self.observer.job_event(message.job, message.event)
                    continue
                in_flight -= 1
                outcome = message.outcome
                assert outcome is not None
                self._finish(outcome)
                yield outcome
            except KeyboardInterrupt:
                if not self.stopping:
                    self.stopping = True
                    self.observer.note("stopping: running cells will finish; press Ctrl-C again to abandon them")
                    continue
                self.observer.note("abandoning running cells; they stay pending")
                self.executor.abandon()
                for job in self.executor.running():
                    if job.kind == "run":
                        self.store.release(job.key, self.owner)
                raise

    def _finish(self, outcome: Outcome) -> None:
        job = outcome.job
        if job.kind != "run":
            self.observer.job_finished(job, None, outcome)
            return
        spec = self.specs[job.key]
        if outcome.error == "abandoned":
            self.store.release(spec.run_id, self.owner)
            self.observer.job_finished(job, None, outcome)
            return
        if outcome.value is not None:
            result = RunResult.from_json(_json(outcome.value))
        else:
            result = RunResult.failure(spec.run_id, outcome.error or "unknown failure", outcome.traceback)
        self._record(spec, result, outcome)

    def _record(self, spec: RunSpec, result: RunResult, outcome: Outcome) -> None:
        self.store.write(spec, result)
        self.summary.ran += 1
        if result.status == STATUS_DONE:
            self.summary.done += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((spec.run_id, result.error or ""))
        self.observer.job_finished(outcome.job, result, outcome)


def hard_timeout(training: dict[str, Any]) -> float | None:
    """The kill deadline of a run: ``timeout`` if set, else generous slack over its time budget."""
    if training.get("timeout"):
        return float(training["timeout"])
    if training.get("time_budget"):
        return 2.0 * float(training["time_budget"]) + 300.0
    return None


def _json(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value)
