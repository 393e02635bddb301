"""The linear probe of the literature: multinomial logistic regression fitted to convergence.

Kornblith et al. (2019) and the ELEVATER toolkit fit the probe with L-BFGS on fixed features
and choose its L2 strength on a validation split; a few epochs of SGD on a hand-set learning
rate land far below that optimum at small sizes. The objective is the mean cross-entropy plus
``l2 / 2 * ||W||^2`` (bias unpenalised), which is scikit-learn's ``LogisticRegression`` with
``C = 1 / (l2 * n)``.

Validation chooses the features' scaling together with the strength, from ``SCALINGS``: the
classic per-dimension standardisation estimates a mean and a spread per dimension from the
training rows, and at a few images per class that amplifies dimensions that carry no signal,
so it is one candidate, not the rule.

The raw candidate is scikit-learn's probe on the pooled features exactly: its ``l2`` is in the
features' own units, over the same grid, so it does at least as well as that reference by
construction. The other candidates' strengths are in units of rows at mean norm one (unit-norm
rows are; standardised ones are brought there by a single number), so ``l2`` means the same
for them whatever the backbone. Every fit runs on features centred and brought to mean row
norm one, with the strength converted to match: with the bias unpenalised that is an exact
change of variables (the optimum's predictions do not move) that L-BFGS needs, because the
common mean and the magnitude of raw post-ReLU features make the problem ill-conditioned. Both
are folded back into the head, which applies to the raw features after the scaling's per-row
part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

# The scalings validation chooses among, simplest first, the order ties fall back on.
SCALE_NONE = "none"  # the pooled features as the backbone gives them
SCALE_UNIT_NORM = "unit_norm"  # each row divided by its L2 norm: nothing estimated from the training rows
SCALE_STANDARD = "standard"  # each dimension centred and divided by its spread over the training rows
SCALINGS: tuple[str, ...] = (SCALE_NONE, SCALE_UNIT_NORM, SCALE_STANDARD)

# Strong to weak: each fit starts from the last one's solution, which keeps the weak end cheap.
# Half-decade steps from 10 to 1e-9: the weak end reaches where the predictions stop moving (the
# fit approaches the max-margin direction) on rows of norm one as on raw pooled features.
L2_GRID: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(1.0, -9.01, -0.5))
# Without a validation split there is nothing to choose on: the raw features, as the plain
# scikit-learn probe takes them, at a strength mid-grid.
FALLBACK_SCALING = SCALE_NONE
FALLBACK_L2 = 1e-4
# How far, in standard errors of the best validation accuracy, a later scaling must beat an
# earlier one to be chosen over it (the one-standard-error rule of Breiman et al. 1984).
SCALING_SE = 1.0
MAX_ITER = 1000
# The gradient of a mean loss on unit-norm features; this is well past where validation
# accuracy stops moving.
GRAD_TOL = 1e-4
RTOL = None
# Below this a row or a dimension is treated as zero rather than divided by.
_TINY = 1e-12
_MIN_SPREAD = 1e-6


@dataclass
class ProbeFit:
    """The chosen probe and how it was chosen; ``logits`` applies it to raw features."""

    weight: torch.Tensor  # classes x features, as nn.Linear stores it, on the scaling's rows
    bias: torch.Tensor
    scaling: str
    l2: float
    val_acc: float | None
    train_acc: float
    train_loss: float
    converged: bool
    path: list[dict[str, float | str]] = field(default_factory=list)  # one entry per (scaling, strength) tried

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head on raw features: a per-row scaling cannot be folded into a linear layer."""
        x = x.to(self.weight.device, self.weight.dtype)
        return scale_rows(x, self.scaling) @ self.weight.T + self.bias


def scale_rows(x: torch.Tensor, scaling: str) -> torch.Tensor:
    """The part of ``scaling`` that acts on each row alone; the rest is affine and folds into the head."""
    if scaling not in SCALINGS:
        raise ValueError(f"probe scaling {scaling!r}: use one of {', '.join(SCALINGS)}")
    if scaling == SCALE_UNIT_NORM:
        return x / x.norm(dim=1, keepdim=True).clamp_min(_TINY)
    return x


def _fit_scaling(x: torch.Tensor, scaling: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(center, spread, unit): ``(scale_rows(x) - center) / spread`` is what the probe is fitted on,
    at ``unit`` times the grid's strength, which keeps the raw candidate's strength in raw units."""
    rows = scale_rows(x, scaling)
    center = rows.mean(dim=0)
    spread = torch.ones_like(center)
    if scaling == SCALE_STANDARD and len(rows) > 1:
        # A dimension constant over the training rows carries nothing; a unit spread keeps it finite.
        spread = rows.std(dim=0, correction=0).clamp_min(_MIN_SPREAD)
    # The scaling's own features (standardised ones are centred, the others are not): one number
    # brings them to mean row norm one, the units of the grid.
    own = (rows - center) / spread if scaling == SCALE_STANDARD else rows
    norm = float(own.norm(dim=1).mean()) if len(rows) else 0.0
    norm = norm if norm > _TINY else 1.0
    # Fitting x / s at strength l2 / s^2 is fitting x at l2, with the weights scaled by s.
    return center, spread * norm, 1.0 / norm**2 if scaling == SCALE_NONE else 1.0


def _objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float) -> torch.Tensor:
    return F.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * (weight * weight).sum()


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, *,
    init: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = MAX_ITER,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(weight d x C, bias C, converged) minimising mean cross-entropy + l2/2 ||W||^2."""
    if init is None:
        weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device)
        bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        weight, bias = (t.detach().clone() for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)

    def closure() -> torch.Tensor:
        if weight.grad is not None:
            weight.grad.zero_()
            bias.grad.zero_()
        loss = _objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    def gradient() -> float:
        closure()
        return max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))

    tolerance = GRAD_TOL
    if RTOL is not None and init is not None:
        tolerance = max(100 * torch.finfo(x.dtype).eps, min(GRAD_TOL, RTOL * gradient()))
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    # The line search can stop on a flat stretch a hair above the tolerance; ten times it still
    # leaves the predictions settled.
    converged = gradient() <= 10 * tolerance
    return weight.detach(), bias.detach(), converged


def _accuracy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    return int(((x @ weight + bias).argmax(dim=1) == y).sum()) / len(y) if len(y) else float("nan")


def probe_dtype(device: torch.device) -> torch.dtype:
    # L-BFGS's curvature pairs lose precision in float32 on a CPU, where float64 costs little;
    # on a GPU float32 is the fast path and its tolerance is ample for accuracy.
    return torch.float64 if device.type == "cpu" else torch.float32


def _better(step: dict, kept: dict | None) -> bool:
    # Within one scaling: the best validation accuracy, ties to the stronger regularisation.
    return kept is None or (step["val_acc"], step["l2"]) > (kept["val_acc"], kept["l2"])


def choose(path: list[dict[str, float | str]], n_val: int) -> tuple[str, float]:
    """The (scaling, l2) a probe keeps, from the validation accuracies in its ``path`` alone.

    Per scaling, the strength best on validation, ties to the stronger. Across scalings, the
    first in the order tried (the simplest) whose accuracy is within ``SCALING_SE`` standard
    errors of the best: on a few hundred validation images the scalings' best accuracies differ
    by noise, and taking the largest of three noisy maxima picks a worse scaling more often than
    a better one.
    """
    if n_val == 0:
        return path[0]["scaling"], path[0]["l2"]  # nothing to choose on: the one fit made
    kept: dict[str, dict] = {}
    for step in path:
        if _better(step, kept.get(step["scaling"])):
            kept[step["scaling"]] = step
    top = max(step["val_acc"] for step in kept.values())
    margin = SCALING_SE * math.sqrt(top * (1.0 - top) / n_val)
    chosen = next(step for step in kept.values() if step["val_acc"] >= top - margin)
    return chosen["scaling"], chosen["l2"]


def sweep_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, num_classes: int,
    grid: tuple[float, ...] = L2_GRID, scalings: tuple[str, ...] = SCALINGS,
) -> ProbeFit:
    """Fit the probe at every scaling and strength and keep the pair ``choose`` picks on validation.

    The kept fit is the converged optimum on the training rows alone: refitting on train +
    validation would give the probe more images than the size it stands for, and every other arm.
    """
    dtype = probe_dtype(train_x.device)
    train_x, val_x = train_x.to(dtype), val_x.to(dtype)
    if len(val_y) == 0:
        grid, scalings = (FALLBACK_L2,), (FALLBACK_SCALING,)
    path: list[dict[str, float | str]] = []
    # Only each scaling's best fit is kept: a thousand-class head at every strength would not fit in memory.
    fits: dict[str, dict] = {}
    for scaling in scalings:
        center, spread, unit = _fit_scaling(train_x, scaling)
        fit_x = (scale_rows(train_x, scaling) - center) / spread
        fit_val = (scale_rows(val_x, scaling) - center) / spread
        init = None
        for l2 in sorted(grid, reverse=True):
            weight, bias, converged = fit_logistic(fit_x, train_y, num_classes, l2 * unit, init=init)
            init = (weight, bias)
            step = {"scaling": scaling, "l2": l2, "val_acc": _accuracy(fit_val, val_y, weight, bias),
                    "converged": float(converged)}
            path.append(step)
            if scaling not in fits or _better(step, fits[scaling]["step"]):
                fits[scaling] = {"step": step, "weight": weight, "bias": bias, "center": center, "spread": spread,
                                 "fit_x": fit_x}
    scaling, l2 = choose(path, len(val_y))
    best = fits[scaling]
    assert best["step"]["l2"] == l2
    weight, bias, fit_x = best["weight"], best["bias"], best["fit_x"]
    with torch.no_grad():
        train_loss = float(F.cross_entropy(fit_x @ weight + bias, train_y))
    # ((r - c) / s) @ W + b == r @ (W / s) + (b - (c / s) @ W): one linear head on the scaled rows r.
    row_weight = weight / best["spread"][:, None]
    row_bias = bias - best["center"] @ row_weight
    return ProbeFit(
        # Kept in the fit's precision: the folded centre makes the bias a difference of large terms.
        weight=row_weight.T.contiguous(), bias=row_bias, scaling=scaling, l2=l2,
        val_acc=best["step"]["val_acc"] if len(val_y) else None, train_acc=_accuracy(fit_x, train_y, weight, bias),
        train_loss=train_loss, converged=bool(best["step"]["converged"]), path=path,
    )
