"""The sequential rule's operating figures, by simulation with the verdict's own functions (no training).

    PYTHONPATH=. python -m tests.perf.sequential_figures [--cells 100000]

Paired differences are drawn normal with a spread of 3 points; each cell runs through
``run_sequentially`` (planned seeds, then batches up to the maximum, each look called by the
verdict's ``classify`` of its repeated interval). It prints, per design and true difference, the
share of cells called each way, the mean seeds spent, and the seeds a fixed design needs for the
same power (the first n at which the paired t test's power reaches it).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from bench.report.power import t_power
from bench.report.rules import CALL_EQUIVALENT, CALL_SCRATCH, CALL_TRANSFER, DEFAULT_MIN_EFFECT
from bench.report.sequential import DEFAULT_SEED_BATCH, SPENDING, SeedDesign, run_sequentially

SD = 0.03


def fixed_seeds_for(power: float, effect_sd: float) -> int:
    """The fewest paired seeds at which a fixed design's t test reaches ``power``."""
    n = 2
    while t_power(effect_sd, n) < power and n < 1000:
        n += 1
    return n


def figures(design: SeedDesign, mean: float, cells: int, seed: int) -> dict:
    diffs = np.random.default_rng(seed).normal(mean, SD, size=(cells, design.max_seeds))
    calls, used = run_sequentially(diffs, design, DEFAULT_MIN_EFFECT)
    calls = np.asarray(calls)
    share = {call: float((calls == call).mean()) for call in (CALL_TRANSFER, CALL_SCRATCH, CALL_EQUIVALENT)}
    error = {call: math.sqrt(p * (1 - p) / cells) for call, p in share.items()}
    return {"share": share, "error": error, "mean_seeds": float(used.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--planned", type=int, default=3)
    parser.add_argument("--max-seeds", type=int, default=20)
    args = parser.parse_args()
    for spending in SPENDING:
        design = SeedDesign(args.planned, args.max_seeds, DEFAULT_SEED_BATCH, spending)
        print(f"{spending}: looks at {design.looks} seeds, spread {SD * 100:.0f} pts, {args.cells:,} cells each")
        for k, mean in enumerate((0.0, 0.03)):
            out = figures(design, mean, args.cells, seed=1000 + k)
            text = ", ".join(f"{call} {p:.2%} ± {out['error'][call]:.2%}" for call, p in out["share"].items())
            line = f"  true difference {mean * 100:+.0f} pts: {text}; mean seeds {out['mean_seeds']:.2f}"
            if mean:
                power = out["share"][CALL_TRANSFER]
                line += f"; a fixed design of equal power ({power:.1%}) needs {fixed_seeds_for(power, mean / SD)} seeds"
            print(line)


if __name__ == "__main__":
    main()
