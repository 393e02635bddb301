"""LogME (You et al. 2021): how well fixed features explain the labels, without training a head.

A cheap predictor of transfer: computed on the features a linear probe already extracted, it
lets the report ask whether the score would have ranked the backbones the way the suite's paid
runs did. numpy only, so both the run and the report can use it.
"""

from __future__ import annotations

import math

import numpy as np

# The published fixed-point iteration: start from alpha = beta = 1, stop when alpha/beta moves by
# under 1%, and give up after 11 steps (it typically converges in two or three).
LOGME_MAX_ITER = 11
LOGME_TOL = 0.01
# Added to the two squared norms, as in the reference code, so a perfect fit cannot divide by 0.
LOGME_EPS = 1e-5


def _logme_one(y: np.ndarray, u: np.ndarray, sigma: np.ndarray, n: int, d: int) -> float:
    # In the SVD basis F = U S V^T the posterior mean, its norm and the residual all reduce to
    # sums over the k = min(n, d) singular values, so d >> n costs no d x d matrix.
    z = u.T @ y
    resid_perp = max(float(y @ y - z @ z), 0.0)  # the part of y no feature direction reaches
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    for _ in range(LOGME_MAX_ITER):
        gamma = float((sigma / (sigma + lam)).sum())
        denom = alpha + beta * sigma
        m_norm2 = float((beta**2 * sigma * z * z / denom**2).sum())
        resid = resid_perp + float(((alpha * z / denom) ** 2).sum())
        alpha = gamma / (m_norm2 + LOGME_EPS)
        beta = (n - gamma) / (resid + LOGME_EPS)
        new_lam = alpha / beta
        converged = abs(new_lam - lam) / lam < LOGME_TOL
        lam = new_lam
        if converged:
            break
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - sigma.size) * math.log(alpha)
    evidence = (
        d / 2.0 * math.log(alpha) + n / 2.0 * math.log(beta) - 0.5 * log_det
        - beta / 2.0 * (resid + LOGME_EPS) - alpha / 2.0 * (m_norm2 + LOGME_EPS) - n / 2.0 * math.log(2 * math.pi)
    )
    return evidence / n


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al. 2021): the mean over classes of the per-sample log marginal evidence.

    Each class's one-hot target gets a Bayesian linear regression on the features whose prior and
    noise precisions are set by the paper's fixed-point iteration; higher means the features
    explain the labels better without any training.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {f.shape}")
    y_all = np.asarray(labels).reshape(-1)
    if y_all.size != f.shape[0]:
        raise ValueError(f"{f.shape[0]} feature rows but {y_all.size} labels")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    classes = np.unique(y_all)
    return float(np.mean([_logme_one((y_all == c).astype(np.float64), u, sigma, n, d) for c in classes]))
