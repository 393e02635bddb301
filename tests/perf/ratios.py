"""Every speed ratio the harness claims, measured in one run: ``python -m tests.perf.ratios`` (``make bench``).

Each line sets a harness measurement against its reference, both taken in this run with the
repetitions interleaved (reference, harness, reference, harness, ...) so that whatever else
the machine is doing weighs on both; it prints the min and the median over the repetitions.

- fit vs a hand-written loop, in one process: training images/s of ``bench.training.cell.fit`` on the
  in-memory loader against a bare forward/backward/AdamW loop on one batch (the timm
  ``benchmark.py`` pattern), same model, same batch, same device;
- a cell end to end vs the hand-written loop in its own process: ``transfer-bench run`` of a
  one-cell suite against ``python -c`` running the same number of training steps, both
  counting process start and imports;
- warm workers vs a process per cell: one suite of tiny cells through each;
- frozen on cached features vs through the whole model each epoch: one linear-probe run each;
- plan: wall seconds of ``transfer-bench plan --no-estimate`` per 100 cells, against a bare
  ``python -c pass`` start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _interleaved(reference: Callable[[], float], harness: Callable[[], float], repeats: int) -> tuple[list, list]:
    refs, ours = [], []
    for _ in range(repeats):
        refs.append(reference())
        ours.append(harness())
    return refs, ours


def _line(name: str, unit: str, refs: list[float], ours: list[float], higher_is_better: bool) -> str:
    ratios = [o / r if higher_is_better else r / o for r, o in zip(refs, ours)]
    return (f"{name:46s} {unit:8s} reference {min(refs):9.3f} / {statistics.median(refs):9.3f}   "
            f"harness {min(ours):9.3f} / {statistics.median(ours):9.3f}   "
            f"ratio {min(ratios):5.2f} / {statistics.median(ratios):5.2f}")


def _wall(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return time.perf_counter() - started


# -- fit vs a hand loop, one process --------------------------------------------------------


def fit_against_hand_loop(model: str, image_size: int, batch: int, steps: int, repeats: int) -> str:
    import torch

    from tests.perf.test_gpu_throughput import harness_images_per_s, harness_setup, reference_images_per_s

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def harness() -> float:
        model_, plan, loader = harness_setup(model, device, batch_size=batch, steps_per_epoch=steps,
                                             image_size=image_size, num_classes=10)
        return harness_images_per_s(model_, plan, loader, device, epochs=3)

    def reference() -> float:
        return reference_images_per_s(model, device, batch_size=batch, image_size=image_size, steps=steps,
                                      warmup=steps, num_classes=10)

    refs, ours = _interleaved(reference, harness, repeats)
    return _line(f"fit vs hand loop, one process ({model} {image_size}px)", "img/s", refs, ours, True)


# -- a cell end to end vs the hand loop in its own process ----------------------------------

# scikit-learn digits as the harness splits them: 10% of the pool for validation, a quarter held out for test.
DIGITS_VAL, DIGITS_TEST = 136, 451
HAND_LOOP = """
import time, torch, timm
from torch import nn
torch.manual_seed(0)
model = timm.create_model({model!r}, pretrained=False, num_classes=10)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn({batch}, 3, {size}, {size}); y = torch.randint(0, 10, ({batch},))
val = torch.randn({validated}, 3, {size}, {size})
for _ in range({steps}):
    model.train(); optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward(); optimizer.step()
    with torch.no_grad():
        model.eval(); model(val)
with torch.no_grad():
    model(torch.randn({tested}, 3, {size}, {size}))
"""


def cell_against_fresh_hand_loop(work: Path, model: str, image_size: int, batch: int, steps: int,
                                 repeats: int) -> str:
    suite = {
        "name": "e2e", "backbones": [{"name": model, "weights": ["none"]}],
        "datasets": [{"name": "digits", "sizes": [batch // 10]}], "strategies": ["scratch"], "seeds": [0],
        "training": {"epochs": steps, "min_steps": steps, "batch_size": batch, "image_size": image_size,
                     "augment": "none", "warmup_epochs": 0, "patience": None},
        "tuning": False, "device": "cpu",
    }
    path = work / "e2e.yaml"
    path.write_text(yaml.safe_dump(suite))
    # One step per epoch and a validation pass after each, as the cell does, then the test split.
    script = HAND_LOOP.format(model=model, batch=batch, size=image_size, steps=steps, validated=DIGITS_VAL,
                              tested=DIGITS_TEST)
    counter = iter(range(repeats))

    def harness() -> float:
        return _wall([sys.executable, "-m", "bench", "run", str(path), "--force", "--no-report",
                      "--results-dir", str(work / f"e2e-{next(counter)}")], REPO)

    def reference() -> float:
        return _wall([sys.executable, "-c", script], REPO)

    refs, ours = _interleaved(reference, harness, repeats)
    return _line(f"one cell end to end vs hand loop in a process ({steps} steps)", "s", refs, ours, False)


# -- warm workers vs a process per cell -----------------------------------------------------


def warm_against_process_per_cell(work: Path, repeats: int) -> str:
    from bench.execution.local import SubprocessExecutor
    from bench.execution.driver import SilentObserver, run_suite
    from bench.suite.model import suite_from_dict
    from tests.faults_helpers import scratch_suite

    suite = suite_from_dict(scratch_suite("warm-ratio", sizes=[3, 5], seeds=[0, 1, 2], epochs=2, min_steps=1))
    counter = iter(range(2 * repeats))

    def one(warm: bool) -> float:
        started = time.perf_counter()
        summary = run_suite(suite, results_dir=work / f"warm-{next(counter)}",
                            executor=SubprocessExecutor(slots=1, warm=warm), observer=SilentObserver())
        assert summary.done == summary.planned, summary.failures
        return time.perf_counter() - started

    refs, ours = _interleaved(lambda: one(False), lambda: one(True), repeats)
    return _line(f"warm workers vs a process per cell ({suite.plan().final_count()} cells)", "s", refs, ours, False)


# -- frozen on cached features vs the whole model each epoch -------------------------------


def frozen_feature_cache(work: Path, repeats: int) -> str:
    from bench.training.pretrain import checkpoint_path, ensure_pretrained
    from bench.training.cell import run
    from tests.perf.test_frozen_fast_path import _cell

    spec = _cell(True)
    ensure_pretrained(spec.pretrain, work / "pretrained")
    weights = checkpoint_path(work / "pretrained", spec.pretrain)

    def one(feature_cache: bool) -> float:
        started = time.perf_counter()
        result = run(_cell(feature_cache), weights_file=weights)
        assert result.status == "done", result.error
        return time.perf_counter() - started

    refs, ours = _interleaved(lambda: one(False), lambda: one(True), repeats)
    return _line("frozen[head=sgd]: cached features vs whole model", "s", refs, ours, False)


# -- plan ------------------------------------------------------------------------------------


def plan_time(work: Path, cells: int, repeats: int) -> str:
    from bench.suite.model import suite_from_dict

    # scratch on both backbones, full only on the one with weights: 5 sizes x 3 arms = 15 cells a seed.
    seeds = round(cells / 15)
    suite = {
        "name": "plan-ratio",
        "backbones": [{"name": "test_resnet", "weights": ["none", "pretrain:shapes"]},
                      {"name": "resnet18", "weights": ["none"]}],
        "pretrain": {"shapes": {"dataset": {"name": "shapes"}}},
        "datasets": [{"name": "digits", "sizes": [5, 10, 20, 50, "all"]}],
        "strategies": ["scratch", "full"], "seeds": list(range(seeds)), "tuning": False, "device": "cpu",
    }
    cells = suite_from_dict(suite).plan().final_count()
    path = work / "plan.yaml"
    path.write_text(yaml.safe_dump(suite))
    command = [sys.executable, "-m", "bench", "plan", str(path), "--no-estimate", "--limit", "5",
               "--results-dir", str(work / "plan-results")]
    _wall(command, REPO)  # the first plan saves the name lists and class counts every later one reads
    refs, ours = _interleaved(lambda: _wall([sys.executable, "-c", "pass"], REPO) * 100 / cells,
                              lambda: _wall(command, REPO) * 100 / cells, repeats)
    return _line(f"plan, per 100 cells ({cells} cells) vs bare python", "s", refs, ours, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per ratio (default 3)")
    parser.add_argument("--only", help="comma list of: fit, e2e, warm, frozen, plan")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else ["fit", "e2e", "warm", "frozen", "plan"]
    with tempfile.TemporaryDirectory(prefix="transfer-bench-ratios-") as folder:
        work = Path(folder)
        measures: dict[str, Callable[[], str]] = {
            "fit": lambda: fit_against_hand_loop("resnet18", 64, 32, 8, args.repeats),
            "e2e": lambda: cell_against_fresh_hand_loop(work, "resnet18", 64, 30, 30, args.repeats),
            "warm": lambda: warm_against_process_per_cell(work, args.repeats),
            "frozen": lambda: frozen_feature_cache(work, args.repeats),
            "plan": lambda: plan_time(work, 500, args.repeats),
        }
        unknown = sorted(set(chosen) - set(measures))
        if unknown:
            parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(measures)}")
        print(f"{'':46s} {'unit':8s} {'min / median over':>31s} {args.repeats} interleaved repetitions", flush=True)
        for name in chosen:
            # Each line as soon as it is measured: a long run that fails late keeps what it had.
            print(measures[name](), flush=True)


if __name__ == "__main__":
    main()
