"""The linear probe of the literature: multinomial logistic regression fitted to convergence.

Kornblith et al. (2019) and the ELEVATER toolkit fit the probe with L-BFGS on fixed features
and choose its L2 strength on a validation split; a few epochs of SGD on a hand-set learning
rate land far below that optimum at small sizes. The objective is the mean cross-entropy plus
``l2 / 2 * ||W||^2`` (bias unpenalised), which is scikit-learn's ``LogisticRegression`` with
``C = 1 / (l2 * n)``, on features standardised with the training rows' mean and spread.

Standardising is what makes the fit affordable: raw deep features span orders of magnitude
across dimensions, and L-BFGS on them took ten times as many iterations to the same
tolerance. The learned weights are folded back, so the head applies to raw features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

# Strong to weak: each fit starts from the last one's solution, which keeps the weak end cheap.
# Half-decade steps over the range Kornblith et al. searched, trimmed at the strong end, where
# every weight is already near zero.
L2_GRID: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(1.0, -6.01, -0.5))
# Without a validation split there is nothing to choose on; this strength sits mid-grid, mild
# on standardised features.
FALLBACK_L2 = 1e-3
MAX_ITER = 1000
# The gradient of a mean loss is small in absolute terms; this is well past where validation
# accuracy stops moving.
GRAD_TOL = 1e-4


@dataclass
class ProbeFit:
    """The chosen probe and how it was chosen."""

    weight: torch.Tensor  # classes x features, as nn.Linear stores it
    bias: torch.Tensor
    l2: float
    val_acc: float | None
    train_acc: float
    train_loss: float
    converged: bool
    path: list[dict[str, float]] = field(default_factory=list)  # one entry per strength tried


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
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=GRAD_TOL, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=False)
        loss = _objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    closure()
    gradient = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    # The line search can stop on a flat stretch a hair above the tolerance; ten times it still
    # leaves the predictions settled.
    converged = gradient <= 10 * GRAD_TOL
    return weight.detach(), bias.detach(), converged


def _accuracy(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
    return float(((x @ weight + bias).argmax(dim=1) == y).float().mean()) if len(y) else float("nan")


def probe_dtype(device: torch.device) -> torch.dtype:
    # L-BFGS's curvature pairs lose precision in float32 on a CPU, where float64 costs little;
    # on a GPU float32 is the fast path and its tolerance is ample for accuracy.
    return torch.float64 if device.type == "cpu" else torch.float32


def sweep_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, num_classes: int,
    grid: tuple[float, ...] = L2_GRID,
) -> ProbeFit:
    """Fit the probe at every strength of ``grid`` and keep the one best on validation.

    Ties go to the stronger regularisation, the simpler model. The kept fit is the converged
    optimum at that strength on the training rows alone: refitting on train + validation would
    give the probe more images than the size it stands for, and every other arm.
    """
    dtype = probe_dtype(train_x.device)
    train_x, val_x = train_x.to(dtype), val_x.to(dtype)
    center = train_x.mean(dim=0)
    # A dimension constant over the training rows carries nothing; a unit scale keeps it finite.
    scale = train_x.std(dim=0, correction=0).clamp_min(1e-6) if len(train_x) > 1 else torch.ones_like(center)
    train_x, val_x = (train_x - center) / scale, (val_x - center) / scale
    if len(val_y) == 0:
        grid = (FALLBACK_L2,)
    path: list[dict[str, float]] = []
    best: tuple[float, float, torch.Tensor, torch.Tensor, bool] | None = None
    init = None
    for l2 in sorted(grid, reverse=True):
        weight, bias, converged = fit_logistic(train_x, train_y, num_classes, l2, init=init)
        init = (weight, bias)
        val_acc = _accuracy(val_x, val_y, weight, bias)
        path.append({"l2": l2, "val_acc": val_acc, "converged": float(converged)})
        if best is None or (len(val_y) and val_acc > best[1]):
            best = (l2, val_acc, weight, bias, converged)
    assert best is not None
    l2, val_acc, weight, bias, converged = best
    with torch.no_grad():
        train_loss = float(F.cross_entropy(train_x @ weight + bias, train_y))
    # x_std @ W + b == x @ (W / scale) + (b - (center / scale) @ W): the same head on raw features.
    raw_weight = weight / scale[:, None]
    raw_bias = bias - center @ raw_weight
    return ProbeFit(
        weight=raw_weight.T.float().contiguous(), bias=raw_bias.float(), l2=l2,
        val_acc=val_acc if len(val_y) else None, train_acc=_accuracy(train_x, train_y, weight, bias),
        train_loss=train_loss, converged=converged, path=path,
    )
