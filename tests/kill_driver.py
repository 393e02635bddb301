"""SIGKILL the driver again and again, most often while its children train, and count what that cost.

    python -m tests.kill_driver --kills 60      (or: make faults)

Each cycle starts ``transfer-bench run`` on a suite too long to finish, kills the driver with
SIGKILL at a drawn moment seen in the store (before its first claim, as a cell starts, just
after a result landed, mid-cell on a warm worker), then checks the store and the process
table. Cells train for a time budget, and every moment comes before any slot finishes a second
cell, so the suite outlives its kills on a fast machine as on a slow one. It prints, over all kills:

- lost: a result finished before a kill that is gone or no longer finished after it;
- duplicated: a finished result written again (its write time changed), i.e. a cell run twice;
- half-written: a done row without every metric or with epoch rows that do not match;
- orphans: processes of the killed driver still alive ``PATIENCE_S`` after it died;
- integrity: stores failing SQLite's integrity check; stray: temporaries left beside the store.

A last run without kills must then finish every cell, keep every earlier result, and exit 0.
The exit status is 1 if any count is not zero.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults_helpers import (
    METRICS,
    MOMENTS,
    PATIENCE_S,
    REPO,
    await_moment,
    budget_suite,
    cell_ids,
    claims_of,
    driver_env,
    finished,
    integrity_ok,
    kill_tagged,
    new_tag,
    read_store,
    start_driver,
    tagged_processes,
    wait_for,
    write_yaml,
)

NAME = "killed"
# How often each moment is drawn: mostly mid-cell, the case that matters most.
WEIGHTS = {"start-up": 2, "cell starting": 3, "result landed": 2, "warm cell": 3}


@dataclass
class Counts:
    kills: int = 0
    kills_with_children: int = 0
    kills_mid_cell: int = 0
    lost: int = 0
    duplicated: int = 0
    half_written: int = 0
    orphans: int = 0
    integrity: int = 0
    stray: int = 0
    finished_before_last_run: int = 0
    notes: list[str] = field(default_factory=list)

    def bad(self) -> int:
        return self.lost + self.duplicated + self.half_written + self.orphans + self.integrity + self.stray

    def line(self) -> str:
        return (f"kills={self.kills} (with children running: {self.kills_with_children}, "
                f"mid-cell: {self.kills_mid_cell}) lost={self.lost} "
                f"duplicated={self.duplicated} half-written={self.half_written} orphans={self.orphans} "
                f"integrity-failures={self.integrity} stray-files={self.stray} "
                f"results-kept-across-kills={self.finished_before_last_run}")


def _half_written(rows: dict[str, dict[str, Any]]) -> list[str]:
    bad = []
    for run_id, row in rows.items():
        if row["status"] == "done":
            if any(row[m] is None for m in METRICS) or row.get("n_epochs", 0) != int(row["epochs_run"] or -1):
                bad.append(run_id)
        elif row["status"] == "failed" and not row["error"]:
            bad.append(run_id)
    return bad


def _children(tag: str, driver_pid: int) -> list[int]:
    return [pid for pid in tagged_processes(tag) if pid != driver_pid]


def _stray(results: Path) -> list[str]:
    return sorted(p.name for p in results.glob(f".{NAME}.db.*"))


def run(kills: int, seed: int, jobs: int, workdir: Path) -> Counts:
    counts = Counts()
    rng = random.Random(seed)
    # A driver killed at any of the moments has finished at most one cell per slot: every kill lands.
    suite = budget_suite(NAME, sizes=[3, 5], seeds=list(range(max(1, kills * jobs // 2))))
    path = write_yaml(workdir / f"{NAME}.yaml", suite)
    results, db = workdir / "results", workdir / "results" / f"{NAME}.db"
    ids = set(cell_ids(suite))
    tag = new_tag()
    kept: dict[str, dict[str, Any]] = {}
    log = workdir / "driver.log"
    ended_alone = 0
    try:
        while counts.kills < kills:
            driver = start_driver(path, results, "-j", str(jobs), tag=tag, log=log)
            moment = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
            held = await_moment(moment, driver, db, rng)
            if driver.poll() is not None:
                counts.notes.append(f"driver ended by itself with {driver.returncode}")
                if db.exists() and set(finished(read_store(db))) >= ids:
                    break
                ended_alone += 1
                if ended_alone >= 3:
                    raise SystemExit(f"the driver keeps ending by itself; see {log}")
                continue
            ended_alone = 0
            with_children = bool(_children(tag, driver.pid))
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            counts.kills += 1
            counts.kills_with_children += with_children
            # The children notice their parent is gone and end their whole process group.
            if not wait_for(lambda: not tagged_processes(tag), PATIENCE_S):
                counts.orphans += len(tagged_processes(tag))
                kill_tagged(tag)
            if not db.exists():
                print(f"kill {counts.kills:3d}: before the store existed", flush=True)
                continue
            if not integrity_ok(db):
                counts.integrity += 1
                continue
            rows = read_store(db)
            counts.half_written += len(_half_written(rows))
            in_flight = claims_of(db, driver.pid)
            counts.kills_mid_cell += bool(in_flight)
            if MOMENTS[moment] and held not in in_flight:
                counts.notes.append(f"the kill at '{moment}' came after {held} ended")
            now = finished(rows)
            for run_id, row in kept.items():
                if run_id not in now:
                    counts.lost += 1
                elif now[run_id]["written_at"] != row["written_at"]:
                    counts.duplicated += 1
            kept = now
            counts.finished_before_last_run = len(kept)
            print(f"kill {counts.kills:3d}: {moment:13} {'children running' if with_children else 'no child yet':16} "
                  f"{len(now):3d} finished  {counts.line()}", flush=True)
        counts.finished_before_last_run = len(kept)
        last = subprocess.run(
            [sys.executable, "-m", "bench", "run", str(path), "--results-dir", str(results), "--no-report",
             "-j", str(jobs)],
            capture_output=True, text=True, env=driver_env(tag), cwd=REPO, timeout=3600,
        )
        if last.returncode != 0:
            counts.notes.append(f"the last run exited {last.returncode}: {last.stderr.strip()[-500:]}")
            counts.lost += 1
        rows = read_store(db)
        counts.half_written += len(_half_written(rows))
        if set(finished(rows)) != ids:
            counts.notes.append(f"{len(ids) - len(finished(rows))} cells unfinished after the last run")
            counts.lost += 1
        for run_id, row in kept.items():
            if run_id not in rows:
                counts.lost += 1
            elif rows[run_id]["written_at"] != row["written_at"]:
                counts.duplicated += 1
        counts.integrity += not integrity_ok(db)
        counts.stray += len(_stray(results))
        if not wait_for(lambda: not tagged_processes(tag), PATIENCE_S):
            counts.orphans += len(tagged_processes(tag))
    finally:
        kill_tagged(tag)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs to send (default 60)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the kill moments")
    parser.add_argument("--jobs", type=int, default=2, help="cells the driver runs at once")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (printed)")
    args = parser.parse_args(argv)
    # A terminated script still ends the drivers and runs it started (the cleanup in ``run``).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="kill-driver-"))
    started = time.monotonic()
    try:
        counts = run(args.kills, args.seed, args.jobs, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for note in counts.notes:
        print(f"note: {note}")
    print(f"[faults] {counts.line()} in {time.monotonic() - started:.0f} s")
    return 1 if counts.bad() else 0


if __name__ == "__main__":
    sys.exit(main())
