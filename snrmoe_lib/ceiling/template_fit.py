"""The achievable floor: a MAP template fit with the mock's own differentiable forward model.

The PFS GA pipeline's method on the mock: minimise
``½ Σ_p (y_p − f_p(θ))² / σ_p² − log π(θ)`` over the five labels, per star, batched, by damped
Gauss–Newton (Levenberg–Marquardt) steps with exact Jacobians, from the best few of several
starting points; the Laplace σ of each label from the inverse Gauss–Newton Hessian at the optimum.
The prior is Gaussian (the sampling prior's mean and variance) or the sampling prior itself (beta
on the ranges). On real data there is no forward model (no BOSZ here): the fit is unavailable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from snrmoe_lib.ceiling.jacobians import flux_and_jacobian
from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel

__all__ = ["LabelPrior", "MapFit", "map_fit", "neg_log_posterior"]


@dataclass
class LabelPrior:
    """Independent priors on the five labels: ``kind`` 'gaussian' (``mean``, ``sd``) or 'sampling'
    (beta(a, b) on [``lo``, ``hi``]). The fit stays inside [``lo`` − ``pad``·range, ``hi`` + ``pad``·range]
    ('gaussian') or inside [lo, hi] ('sampling'); a parameter with ``hi == lo`` is held fixed."""

    kind: str
    mean: np.ndarray
    sd: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    a: float = 1.5
    b: float = 1.5
    pad: float = 0.1

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        span = self.hi - self.lo
        if self.kind == "sampling":
            eps = 1e-4 * span
            return self.lo + eps, self.hi - eps
        return self.lo - self.pad * span, self.hi + self.pad * span

    def terms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """−log π up to a constant (B,), its gradient (B, 5) and its curvature (B, 5) in θ units."""
        if self.kind == "gaussian":
            z = (theta - self.mean) / self.sd
            return 0.5 * (z ** 2).sum(axis=1), z / self.sd, np.broadcast_to(1 / self.sd ** 2, theta.shape).copy()
        if self.kind != "sampling":
            raise ValueError(f"unknown prior kind {self.kind!r}; use 'gaussian' or 'sampling'")
        R = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        u = np.clip((theta - self.lo) / R, 1e-9, 1 - 1e-9)
        live = self.hi > self.lo
        cost = np.where(live, -(self.a - 1) * np.log(u) - (self.b - 1) * np.log1p(-u), 0.0).sum(axis=1)
        grad = np.where(live, (-(self.a - 1) / u + (self.b - 1) / (1 - u)) / R, 0.0)
        curv = np.where(live, ((self.a - 1) / u ** 2 + (self.b - 1) / (1 - u) ** 2) / R ** 2, 0.0)
        return cost, grad, curv


@dataclass
class MapFit:
    """Per star: the MAP labels ``theta`` (B, 5), the Laplace covariance ``cov`` (B, 5, 5), the final
    negative log posterior ``cost`` and whether the last steps still moved it (``converged``)."""

    theta: np.ndarray
    cov: np.ndarray
    cost: np.ndarray
    converged: np.ndarray

    @property
    def sigma(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diagonal(self.cov, axis1=1, axis2=2), 0, None))


def neg_log_posterior(model: ForwardModel, theta: np.ndarray, table: pd.DataFrame, y: np.ndarray, w: np.ndarray,
                      prior: LabelPrior, batch_size: int = 256) -> np.ndarray:
    """½ χ² + (−log π) at ``theta`` (B, 5) for data ``y`` (B, P) with weights ``w`` = 1/σ² (0 = masked)."""
    import torch

    out = np.empty(len(theta))
    for s in range(0, len(theta), batch_size):
        sl = slice(s, s + batch_size)
        with torch.no_grad():
            f = model.normalized_flux(torch.as_tensor(theta[sl], dtype=torch.float64), table.iloc[sl]).numpy()
        out[sl] = 0.5 * (w[sl] * (y[sl] - f) ** 2).sum(axis=1)
    return out + prior.terms(theta)[0]


def _gn_system(model, theta, table, y, w, prior):
    """Cost, gradient of −log posterior and Gauss–Newton Hessian (θ units) at ``theta``."""
    import torch

    f, J = flux_and_jacobian(model, torch.as_tensor(theta, dtype=torch.float64), table)
    r = y - f
    pc, pg, pk = prior.terms(theta)
    Jt = np.ascontiguousarray(np.swapaxes(J, 1, 2))  # (B, 5, P): one small BLAS product per star
    g = -np.matmul(Jt, (w * r)[:, :, None])[..., 0] + pg
    H = np.matmul(Jt * w[:, None, :], J) + pk[:, :, None] * np.eye(5)[None]
    return 0.5 * (w * r ** 2).sum(axis=1) + pc, g, H


def _solve(H, g, lam, free):
    """Damped step −(H + λ diag H)⁻¹ g on the free parameters, on unit-diagonal scaled systems."""
    d = np.sqrt(np.clip(np.diagonal(H, axis1=1, axis2=2), 1e-300, None))
    S = H / (d[:, :, None] * d[:, None, :]) + lam[:, None, None] * np.eye(5)[None]
    S = np.where(free[None, :, None] & free[None, None, :], S, np.eye(5)[None])
    step = np.linalg.solve(S, np.where(free[None, :], -g / d, 0.0)[..., None])[..., 0] / d
    return np.where(free[None, :], step, 0.0)


def map_fit(model: ForwardModel, table: pd.DataFrame, y: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None,
            prior: LabelPrior, starts: np.ndarray, n_iter: int = 12, batch_size: int = 64) -> MapFit:
    """MAP labels of each star from each of its starting points, keeping the best per star.

    Parameters
    ----------
    table
        Params table of the B stars (their observing conditions; the labels are not read).
    y, sigma, mask
        Noisy flux, its σ (error · noise_level) and the pixel mask (non-zero = bad), each (B, P).
    starts
        (S, B, 5) starting points; S fits per star, the lowest final cost wins.
    n_iter
        Levenberg–Marquardt iterations (each: one Jacobian and one forward pass per star and start).
    """
    import torch

    w = np.where((mask == 0) if mask is not None else True, 1.0 / np.asarray(sigma, float) ** 2, 0.0)
    lo, hi = prior.box()
    free = prior.hi > prior.lo
    best = None
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # many small element-wise operations: one thread is faster on a loaded machine
    try:
        return _best_of(model, table, y, w, prior, starts, n_iter, batch_size, lo, hi, free)
    finally:
        torch.set_num_threads(old)


def _best_of(model, table, y, w, prior, starts, n_iter, batch_size, lo, hi, free) -> MapFit:
    """Fit from every start (batched) and keep the lowest final cost per star."""
    best = None
    for st in np.asarray(starts, float):
        parts = [_lm(model, np.clip(st[s:s + batch_size], lo, hi), table.iloc[s:s + batch_size],
                     y[s:s + batch_size], w[s:s + batch_size], prior, n_iter, lo, hi, free)
                 for s in range(0, len(table), batch_size)]
        fit = MapFit(*(np.concatenate([p[i] for p in parts]) for i in range(4)))
        if best is None:
            best = fit
        else:
            better = fit.cost < best.cost
            best = MapFit(*(np.where(better.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
                            for a, b in zip((fit.theta, fit.cov, fit.cost, fit.converged),
                                            (best.theta, best.cov, best.cost, best.converged))))
    return best


def _lm(model, theta, table, y, w, prior, n_iter, lo, hi, free):
    """Levenberg–Marquardt on one batch; returns θ, the Laplace covariance, the cost, converged flags."""
    lam = np.full(len(theta), 1e-2)
    cost, g, H = _gn_system(model, theta, table, y, w, prior)
    moved = np.ones(len(theta), bool)
    for _ in range(n_iter):
        trial = np.clip(theta + _solve(H, g, lam, free), lo, hi)
        new = neg_log_posterior(model, trial, table, y, w, prior)
        ok = new < cost
        moved = ok & (cost - new > 1e-6 * np.maximum(1.0, np.abs(cost)))
        theta = np.where(ok[:, None], trial, theta)
        lam = np.where(ok, lam / 3, lam * 4)
        if ok.any():
            c2, g2, H2 = _gn_system(model, theta[ok], table.iloc[np.flatnonzero(ok)], y[ok], w[ok], prior)
            cost[ok], g[ok], H[ok] = c2, g2, H2
    Hf = np.where(free[None, :, None] & free[None, None, :], H, np.eye(5)[None])
    cov = np.linalg.inv(Hf) * (free[None, :, None] & free[None, None, :])
    return theta, cov, cost, ~moved
