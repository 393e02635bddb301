"""Run health: did a run train long enough to be compared at all?

A verdict between two starved runs measures the optimizer, not the data or the weights. These
checks read a run's own curve, so they apply to every strategy and need no reference run. A
flagged run is kept and shown; the verdict refuses to call a winner from it. Pure Python: the
report reads these names without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.records import EpochRecord

UNDERTRAINED = "undertrained"
AT_CHANCE = "at_chance"
NOT_CONVERGED = "not_converged"

FLAG_MEANINGS = {
    UNDERTRAINED: "validation accuracy was still climbing when training ended",
    AT_CHANCE: "accuracy stayed near chance: the run did not learn",
    NOT_CONVERGED: "the linear probe's solver stopped before converging",
}

# The last tenth of a run is its tail: a curve still rising there had more to give. Not the
# last quarter: under a cosine schedule a converged run still gains a point or two while the
# learning rate anneals through its third quarter, and that gain is convergence, not hunger.
TAIL_FRACTION = 0.1
# Rising means gaining at least this much validation accuracy in the tail; below it the rise is
# indistinguishable from the wobble of a converged run.
MIN_TAIL_GAIN = 0.01
# ...and at least this many validation images' worth, since on a 30-image validation set one
# image is 3.3 points and a rise of one image is noise.
MIN_TAIL_GAIN_IMAGES = 2
# A run whose accuracy lies this close above chance learned nothing usable: a tenth of the way
# from chance to perfect, but never more than twice chance (at 100 classes, 10% is learning).
CHANCE_MARGIN = 0.1


def chance_threshold(num_classes: int) -> float:
    """Accuracy below which a run counts as at chance for ``num_classes`` balanced classes."""
    chance = 1.0 / max(1, num_classes)
    return min(chance + CHANCE_MARGIN * (1.0 - chance), 2.0 * chance)


def still_improving(val_accs: Sequence[float], n_val: int) -> bool:
    """Whether the best validation accuracy of the tail beats everything before it by a real margin."""
    if len(val_accs) < 4:
        return False
    head = min(len(val_accs) - 1, max(1, round(len(val_accs) * (1.0 - TAIL_FRACTION))))
    gain = max(val_accs[head:]) - max(val_accs[:head])
    threshold = max(MIN_TAIL_GAIN, MIN_TAIL_GAIN_IMAGES / n_val if n_val else 0.0)
    return gain >= threshold


def run_flags(epochs: Sequence[EpochRecord], num_classes: int, n_val: int, *, stopped_by_patience: bool) -> list[str]:
    """The health flags of a finished run, from its per-epoch curve."""
    flags: list[str] = []
    val_accs = [e.val_acc for e in epochs if e.val_acc is not None]
    # Early stopping ended the run because validation had stopped improving, so it cannot be climbing.
    if not stopped_by_patience and still_improving(val_accs, n_val):
        flags.append(UNDERTRAINED)
    threshold = chance_threshold(num_classes)
    last_train = next((e.train_acc for e in reversed(epochs) if e.train_acc is not None), None)
    best_val = max(val_accs) if val_accs else None
    if (last_train is not None and last_train < threshold) or (best_val is not None and best_val < threshold):
        flags.append(AT_CHANCE)
    return flags
