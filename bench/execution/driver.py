"""The driver: expand a suite, skip what is done, run the rest, write every result once.

The driver is the only process that writes the store. It claims a cell just before handing
it to the executor, writes its result in one transaction when it comes back, and gives the
claim back if the cell is abandoned, so an interrupted suite resumes with exactly the cells
that never finished. Progress goes to an ``Observer``; this module prints nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.config import DEFAULT_MAX_RETRIES, DEFAULT_PER_GPU, TrainingConfig
from bench.errors import StoreError, SuiteError
from bench.execution.executors import ABANDONED, Executor, Job, Message, Outcome, make_executor
from bench.execution.progress import Observer, RunSummary, SilentObserver  # noqa: F401  (re-exported)
from bench.execution.sweep import finish_sweeps, sweep_state
from bench.failures import OUT_OF_MEMORY, classify
from bench.failures import normalise_error as normalise_error  # re-exported
from bench.records import STATUS_DONE, STATUS_FAILED, TEST_METRICS, RunResult, RunSpec, pretrain_config
from bench.execution.seed_rounds import add_seeds
from bench.store import ResultStore, check_store_path, owner_id, retire_owner, suite_store_path
from bench.suite.model import Suite, check_weights

HEARTBEAT_S = 60.0
_POLL_S = 0.2


def store_path_for(suite: Suite, results_dir: str | Path = "results") -> Path:
    return suite_store_path(results_dir, suite.name)


def preflight(suite: Suite, results_dir: str | Path = "results") -> None:
    """What a run would refuse before its first cell, found without writing anything: the results
    path and store, and every weights source. ``plan`` calls it to refuse what ``run`` would."""
    check_store_path(store_path_for(suite, results_dir))
    check_weights(suite)


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
    per_gpu: int = DEFAULT_PER_GPU,
    address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    oom_retry: int = 0,
) -> RunSummary:
    """Run every pending cell of ``suite`` into ``results/<name>.db`` and return a summary.

    Ctrl-C once stops scheduling and lets running cells finish; twice (or SIGTERM) abandons
    them, gives their claims back and raises ``KeyboardInterrupt``. ``oom_retry`` is how many
    times a cell that ran out of CUDA memory is tried again at half the batch size.
    """
    started = time.time()
    observer = observer or SilentObserver()
    check_sizes(suite)
    check_weights(suite)
    plan = suite.plan()
    cells = plan.runnable
    path = store_path_for(suite, results_dir)
    cache = Path(cache_dir) if cache_dir else Path(results_dir) / "pretrained"
    built: Executor | None = executor if isinstance(executor, Executor) else None
    try:
        with ResultStore(path) as store:
            store.set_meta("suite", suite.model_dump(mode="json"))
            store.set_meta("planned", plan.final_count())
            store.set_meta("planned_ids", [c.run_id for c in cells])
            if built is None:
                built = make_executor(
                    executor if isinstance(executor, str) else suite.executor, jobs=jobs, per_gpu=per_gpu,
                    address=address, max_retries=max_retries,
                )
            todo = store.pending(cells, retry_failed=retry_failed, force=force)
            sweeps = sweep_state(suite, plan, store)
            queued = {c.run_id for c in todo}
            later = store.pending([*sweeps.sweeping, *sweeps.finals], retry_failed=retry_failed, force=force)
            todo += [c for c in later if c.run_id not in queued]
            finals, waiting = sweeps.finals, sweeps.waiting
            planned = plan.final_count()
            summary = RunSummary(store_path=path, planned=planned, already_done=max(0, planned - len(todo) - waiting))
            statuses = store.statuses()
            queued = {c.run_id for c in todo}
            summary.already_failed = sum(
                statuses.get(c.run_id) == STATUS_FAILED for c in {c.run_id: c for c in [*cells, *finals]}.values()
                if c.run_id not in queued
            )
            observer.suite_started(suite, planned, summary.already_done, len(todo) + waiting)
            driver = _Driver(store, built, observer, summary, cache, retry_failed, force, oom_retry, started)
            driver.features_dir = Path(results_dir) / "features"
            driver.device = suite.device
            try:
                with _Interrupts() as interrupts:
                    driver.interrupts = interrupts
                    driver.run(todo)
                    ran = {c.run_id for c in todo}
                    finish_sweeps(suite, plan, store, driver, ran=ran)
                    add_seeds(suite, store, driver, ran=ran)
            finally:
                built.close()  # children are gone before claims are given back
                driver.close()
    finally:
        if built is not None:
            built.close()
    summary.wall_s = time.time() - started
    return summary


class _Interrupts:
    """SIGINT and SIGTERM as counts the scheduling loop reads, so no signal lands mid-write."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        # SIGTERM (a scheduler or `kill`) means leave now: the same as a second Ctrl-C.
        self.count = max(self.count + 1, 2 if signum == signal.SIGTERM else 1)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Driver:
    """The scheduling loop: pretrain stages first, then cells, as slots free up."""

    def __init__(self, store: ResultStore, executor: Executor, observer: Observer, summary: RunSummary,
                 cache: Path, retry_failed: bool, force: bool, oom_retry: int = 0, started: float | None = None):
        self.store, self.executor, self.observer, self.summary = store, executor, observer, summary
        self.cache = cache
        self.features_dir: Path | None = None
        self.device = Suite.model_fields["device"].default
        self.retry_failed, self.force = retry_failed, force
        self.allow = tuple(s for s, on in ((STATUS_FAILED, retry_failed or force), (STATUS_DONE, force)) if on)
        self.owner = owner_id()
        self.started = started if started is not None else time.time()
        self.specs: dict[str, RunSpec] = {}
        self.stopping = False
        self.interrupts = _Interrupts()
        self.oom_retry = oom_retry
        self.oom_tries: dict[str, int] = {}
        # Pretrain stages already settled by an earlier round of this driver (sweeps, then finals).
        self.stages_ready: set[str] = set()
        self.failed_stages: dict[str, str] = {}

    def close(self) -> None:
        """Give back whatever claims are still held (abandoned, or left by an error)."""
        try:
            self.store.release_all(self.owner)
        except StoreError:
            pass  # an unwritable store: the claims die with this process and read as pending
        finally:
            retire_owner(self.owner)

    def run(self, todo: list[RunSpec]) -> None:
        stages = {spec.pretrain["key"]: spec.pretrain for spec in todo
                  if spec.pretrain and spec.pretrain["key"] not in self.stages_ready}
        failed_stages = self.failed_stages
        if stages:
            jobs = [self._pretrain_job(stage) for stage in stages.values()]
            for outcome in self._schedule(jobs):
                if outcome.error:
                    failed_stages[outcome.job.key] = outcome.error
                else:
                    self.stages_ready.add(outcome.job.key)
        if self.stopping:
            self.summary.interrupted = True
            return
        runnable = []
        for spec in todo:
            if spec.pretrain and spec.pretrain["key"] in failed_stages:
                reason = f"pretrain stage {spec.pretrain['name']!r} failed: {failed_stages[spec.pretrain['key']]}"
                job = self._cell_job(spec)
                if self._claim(job):
                    self._record(spec, RunResult.failure(spec.run_id, reason), Outcome(job, error=reason))
            else:
                runnable.append(spec)
        for _ in self._schedule([self._cell_job(spec) for spec in runnable]):
            pass
        self.summary.interrupted = self.stopping

    def fail_arm(self, arm: Any, reason: str) -> None:
        """Record the final cells of an arm that cannot run as failed, with ``reason``."""
        for spec in arm.final_cells(0):
            if spec.seed in arm.tuning_seeds:
                continue  # the sweep's own runs already carry their failures
            job = self._cell_job(spec)
            if self._claim(job):
                self._record(spec, RunResult.failure(spec.run_id, reason), Outcome(job, error=reason))

    def _pretrain_job(self, stage: dict[str, Any]) -> Job:
        payload = {"pretrain": stage, "cache_dir": str(self.cache), "device": self.device}
        timeout = pretrain_config(stage).training.timeout
        return Job("pretrain", stage["key"], f"pretrain {stage['backbone']} on {stage['name']}", payload, timeout)

    def _cell_job(self, spec: RunSpec) -> Job:
        self.specs[spec.run_id] = spec
        label = f"{spec.backbone} {spec.strategy_label} {spec.dataset_name}@{spec.size} seed {spec.seed}"
        payload = {"spec": spec.to_json(), "cache_dir": str(self.cache)}
        if self.features_dir is not None:
            payload["features_dir"] = str(self.features_dir)
        return Job("run", spec.run_id, label, payload, hard_timeout(spec.training_config))

    def _claim(self, job: Job) -> bool:
        """Claim a cell for this driver; results another driver wrote after this one planned stay theirs."""
        return self.store.claim(self.specs[job.key], self.owner, allow=self.allow, written_before=self.started)

    def _schedule(self, jobs: list[Job]) -> Iterator[Outcome]:
        """Feed jobs to free slots; yield each outcome after recording it. Ctrl-C: see ``run_suite``."""
        pending = collections.deque(jobs)
        in_flight = 0
        last_beat = time.monotonic()
        while pending or in_flight:
            self._check_interrupts()
            try:
                while pending and not self.stopping and self.executor.free_slots() > 0:
                    job = pending.popleft()
                    if job.kind == "run" and not self._claim(job):
                        self.observer.note(f"skipped {job.label}: another driver holds or finished it")
                        continue
                    self.executor.submit(job)
                    in_flight += 1
                    self.observer.job_started(job)
                if not in_flight:
                    break
                try:
                    message: Message | None = self.executor.messages.get(timeout=_POLL_S)
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
                retry = self._finish(outcome)
                if retry is not None:
                    pending.appendleft(retry)
                    continue
                yield outcome
            except KeyboardInterrupt:
                # Without a handler of ours (not the main thread), Ctrl-C still arrives as an exception.
                self.interrupts.count += 1

    def _check_interrupts(self) -> None:
        count = self.interrupts.count
        if count >= 1 and not self.stopping:
            self.stopping = True
            if count < 2:
                self.observer.note("stopping: running cells will finish; press Ctrl-C again to abandon them")
        if count >= 2:
            self._abandon()
            raise KeyboardInterrupt

    def _abandon(self) -> None:
        """Kill running cells, keep any result that already came back, give the rest back as pending."""
        self.observer.note("abandoning running cells; they stay pending")
        self.executor.abandon()
        self.executor.wait_idle(30.0)
        while True:
            try:
                message = self.executor.messages.get_nowait()
            except queue.Empty:
                break
            if message.kind == "done" and message.outcome is not None:
                self._finish(message.outcome, retry=False)
        self.store.release_all(self.owner)

    def _finish(self, outcome: Outcome, *, retry: bool = True) -> Job | None:
        """Record one outcome; return a job to run instead when the cell is retried at half batch."""
        job = outcome.job
        if job.kind != "run":
            self.observer.job_finished(job, None, outcome)
            return None
        spec = self.specs[job.key]
        if outcome.error == ABANDONED:
            self.store.release(spec.run_id, self.owner)
            self.observer.job_finished(job, None, outcome)
            return None
        if outcome.value is not None:
            result = RunResult.from_dict(outcome.value)
        else:
            result = RunResult.failure(spec.run_id, outcome.error or "unknown failure", outcome.traceback)
        result.error = normalise_error(result.error)
        result = _complete_or_failed(result)
        if retry and (again := self._oom_retry(spec, result)) is not None:
            return again
        self._record(spec, result, outcome)
        return None

    def _oom_retry(self, spec: RunSpec, result: RunResult) -> Job | None:
        """The same cell at half the batch size, when out of CUDA memory and retries are left."""
        if result.status == STATUS_DONE or classify(result.error) != OUT_OF_MEMORY:
            return None
        batch = spec.training_config.batch_size
        tries = self.oom_tries.get(spec.run_id, 0)
        if tries >= self.oom_retry or batch <= 1:
            return None
        self.oom_tries[spec.run_id] = tries + 1
        training = {**spec.training, "batch_size": batch // 2}
        if spec.training_config.eval_batch_size:
            training["eval_batch_size"] = max(1, spec.training_config.eval_batch_size // 2)
        self.observer.note(f"{spec.run_id}: CUDA out of memory at batch size {batch}; retrying at {batch // 2}")
        return self._cell_job(dataclasses.replace(spec, training=training))

    def _record(self, spec: RunSpec, result: RunResult, outcome: Outcome) -> None:
        if result.status != STATUS_DONE and spec.run_id in self.oom_tries and result.error:
            result.error += f" (also at batch size {spec.training_config.batch_size})"
        self.store.write(spec, result)
        self.summary.ran += 1
        if result.status == STATUS_DONE:
            self.summary.done += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((spec.run_id, result.error or ""))
        self.observer.job_finished(outcome.job, result, outcome)


def _complete_or_failed(result: RunResult) -> RunResult:
    """A result marked done must carry every metric and its curve; otherwise it is a failure."""
    if result.status != STATUS_DONE:
        return result
    missing = [m for m in TEST_METRICS if getattr(result, m) is None]
    if not result.epochs:
        missing.append("epochs")
    if missing:
        result.status, result.error = STATUS_FAILED, f"incomplete result: missing {', '.join(missing)}"
    return result


def hard_timeout(training: TrainingConfig) -> float | None:
    """The kill deadline of a run: ``timeout`` if set, else generous slack over its time budget."""
    if training.timeout:
        return training.timeout
    if training.time_budget:
        return 2.0 * training.time_budget + 300.0
    return None
