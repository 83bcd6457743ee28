"""Bounds that also bind biased (shrinkage) estimators: the Bayesian CRLB and Van Trees.

The CRLB (:mod:`snrmoe_lib.ceiling.crlb`) binds only unbiased estimators; Ridge and other
shrinkage estimators can beat it at low SNR. :func:`bayesian_crlb` is the per-star bound under a
Gaussian prior of the sampling prior's variances (the floor of any linear shrinkage estimator);
:func:`van_trees_bound` is the population bound for *any* estimator, and
:func:`van_trees_sampling_prior` makes it non-vacuous under a beta prior of infinite information.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.ceiling.crlb import parameter_indices
from snrmoe_lib.ceiling.priors import beta_density, beta_sup_ratio, prior_informations
from snrmoe_lib.data.mock.base import PARAM_NAMES, PARAM_SPEC_FIELD

__all__ = ["bayesian_crlb", "van_trees_bound", "van_trees_sampling_prior", "van_trees_resampled"]


def _sub(F, target, nuisance, names):
    idx = parameter_indices(target, list(nuisance), names)
    return np.asarray(F, np.float64)[..., idx, :][..., idx], idx


def bayesian_crlb(F: np.ndarray, prior_var: np.ndarray, target: str = "log_g",
                  nuisance: Sequence[str] = ("T_eff", "M_H"), names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Per-star Bayesian bound ``[(F + Σ_π⁻¹)⁻¹]_tt`` with a Gaussian prior of variances ``prior_var``.

    This is the minimum mean-squared error of the locally linearised model under a Gaussian prior
    with the sampling prior's variances: the floor of any estimator for a Gaussian prior, and of any
    *linear* (shrinkage) estimator such as Ridge for any prior of those variances. Unlike the CRLB
    it never exceeds the prior variance, so 1 − bound/Var ≥ 0. Estimators that exploit a bounded,
    non-Gaussian prior (clipping to the range) can do slightly better.

    Parameters
    ----------
    F : ndarray (B, K, K)
    prior_var : ndarray (K,)
        Prior variance of each of ``names``.
    """
    sub, idx = _sub(F, target, nuisance, names)
    pv = np.asarray(prior_var, np.float64)[idx]
    if not pv[0] > 0 or np.any(~(pv >= 0)):
        raise ValueError(f"prior variances must be >= 0 (and > 0 for the target), got {pv}")
    # scale by prior standard deviations: the matrix becomes F·s² + I, well conditioned by design
    s = np.sqrt(pv)
    A = sub * (s[:, None] * s[None, :]) + np.eye(len(idx))
    e = np.zeros((len(idx), 1))
    e[0] = 1.0
    x = np.linalg.solve(A, np.broadcast_to(e, A.shape[:-1] + (1,)))
    return x[..., 0, 0] * pv[0]


def van_trees_bound(F: np.ndarray, prior_info: np.ndarray, target: str = "log_g",
                    nuisance: Sequence[str] = ("T_eff", "M_H"), names: Sequence[str] = PARAM_NAMES,
                    weights: np.ndarray | None = None) -> float:
    """Van Trees (Bayesian Cramér–Rao) bound on the population MSE of ``target``.

    ``E[(θ̂ − θ)²] ≥ [(E_π F + J_π)⁻¹]_tt`` for *any* estimator, biased or not, where the Fisher
    matrices ``F`` are samples of θ from the prior π and ``J_π`` is the prior's Fisher
    information (diagonal for independent parameters). An infinite ``J_π`` entry (a prior that
    does not vanish smoothly at its edges) makes the bound vacuous: the result is 0.

    Parameters
    ----------
    F : ndarray (B, K, K)
        Fisher matrices at stars drawn from the prior.
    prior_info : ndarray (K,)
        Prior Fisher information of each of ``names``.
    weights : ndarray (B,), optional
        Importance weights when the stars were not drawn from the prior (e.g. grid nodes weighted by
        the prior density), so that the weighted mean estimates ``E_π F``.
    """
    sub, idx = _sub(F, target, nuisance, names)
    Jp = np.asarray(prior_info, np.float64)[idx]
    if np.isinf(Jp[0]):
        return 0.0
    keep = [0] + [i for i in range(1, len(idx)) if np.isfinite(Jp[i])]
    # an infinitely informative nuisance prior means that nuisance is effectively known
    w = np.ones(len(sub)) if weights is None else np.asarray(weights, np.float64)
    ok = np.all(np.isfinite(sub.reshape(len(sub), -1)), axis=1) & (w > 0)
    if not ok.any():
        raise ValueError("no star with finite Fisher matrix and positive weight")
    EF = np.einsum("b,bij->ij", w[ok], sub[ok]) / w[ok].sum()
    M = EF[np.ix_(keep, keep)] + np.diag(Jp[keep])
    d = np.sqrt(np.diag(M))
    S = M / np.outer(d, d)
    e = np.zeros(len(keep))
    e[0] = 1.0
    return float(np.linalg.solve(S, e)[0] / d[0] ** 2)


def _sup_ratio(mock_spec, estimated: list[str], shape: float) -> float:
    """sup λ/π over the estimated parameters with a range: the constant that keeps a Van Trees bound
    under the λ-prior a bound for the π-prior (one beta ratio per estimated parameter)."""
    a, b = mock_spec.beta_shape
    c = 1.0
    for n in estimated:
        lo, hi = getattr(mock_spec, PARAM_SPEC_FIELD[n])
        if hi > lo:
            c *= beta_sup_ratio(shape, a, b)
    return c


def van_trees_sampling_prior(F: np.ndarray, table: pd.DataFrame, mock_spec, target: str = "log_g",
                             nuisance: Sequence[str] = ("T_eff", "M_H"), names: Sequence[str] = PARAM_NAMES,
                             drawn_from: str = "grid", shapes: Sequence[float] | None = None) -> dict:
    """A Van Trees bound on the MSE of *any* estimator under the random set's beta(a, b) prior π.

    When π has infinite Fisher information (a or b ≤ 2, as the default beta(1.5, 1.5)), the plain
    Van Trees bound is vacuous. A surrogate prior λ — beta(s, s) on the same ranges for the
    estimated parameters, s > 2 and s ≥ max(a, b) — has finite information and is dominated,
    λ ≤ c·π with c = Π sup λ_i/π_i, so ``E_π[(ĝ − g)²] ≥ E_λ[(ĝ − g)²] / c ≥ VT_λ / c``. The
    largest bound over ``shapes`` is returned. ``E_λ F`` is the weighted mean of the stars' F:
    weights λ(θ) for stars on a uniform lattice (``drawn_from='grid'``), λ/π for stars drawn from π
    (``'prior'``).

    Returns
    -------
    dict with ``bound`` (MSE), ``shape`` (the best s), ``c`` and ``plain`` (the Van Trees bound
    with π itself: 0 when π's information is infinite).
    """
    a, b = mock_spec.beta_shape
    est = [target, *nuisance]
    pi_info = prior_informations(mock_spec, names)
    plain = van_trees_bound(F, pi_info, target, nuisance, names,
                            weights=beta_density(mock_spec, table, names) if drawn_from == "grid" else None)
    shapes = np.arange(2.1, 6.01, 0.1) if shapes is None else np.asarray(shapes, float)
    best = {"bound": plain, "shape": float("nan"), "c": 1.0, "plain": plain}
    pi_dens = beta_density(mock_spec, table, names) if drawn_from == "prior" else None
    for sh in shapes:
        if sh <= 2 or sh < max(a, b):
            continue
        lam = dataclasses.replace(mock_spec, beta_shape=[float(sh), float(sh)])
        c = _sup_ratio(mock_spec, est, sh)
        # λ for the estimated parameters, π for the known ones (they are only conditioned on)
        w = beta_density(lam, table, est)
        if drawn_from == "grid":
            w = w * beta_density(mock_spec, table, [n for n in names if n not in est])
        else:
            w = w / np.maximum(beta_density(mock_spec, table, est), 1e-300)
        info = prior_informations(lam, names)
        bound = van_trees_bound(F, info, target, nuisance, names, weights=w) / c
        if bound > best["bound"]:
            best = {"bound": float(bound), "shape": float(sh), "c": float(c), "plain": plain}
    return best


def _vt_batch(F: np.ndarray, prior_info: np.ndarray, target, nuisance, names, W: np.ndarray) -> np.ndarray:
    """:func:`van_trees_bound` for each row of star weights ``W`` (R, B) at once (same arithmetic)."""
    sub, idx = _sub(F, target, nuisance, names)
    Jp = np.asarray(prior_info, np.float64)[idx]
    if np.isinf(Jp[0]):
        return np.zeros(len(W))
    keep = [0] + [i for i in range(1, len(idx)) if np.isfinite(Jp[i])]
    ok = np.all(np.isfinite(sub.reshape(len(sub), -1)), axis=1)
    Wk = np.where(ok[None, :], W, 0.0)
    if not (Wk > 0).any(axis=1).all():
        raise ValueError("no star with finite Fisher matrix and positive weight")
    sub = np.where(ok[:, None, None], sub, 0.0)[:, keep][:, :, keep]
    M = np.einsum("rb,bij->rij", Wk, sub) / Wk.sum(axis=1)[:, None, None] + np.diag(Jp[keep])
    d = np.sqrt(np.diagonal(M, axis1=1, axis2=2))
    S = M / (d[:, :, None] * d[:, None, :])
    e = np.zeros((len(W), len(keep), 1))
    e[:, 0] = 1.0
    return np.linalg.solve(S, e)[:, 0, 0] / d[:, 0] ** 2


def van_trees_resampled(F: np.ndarray, table: pd.DataFrame, mock_spec, counts: np.ndarray, shape: float,
                        target: str = "log_g", nuisance: Sequence[str] = ("T_eff", "M_H"),
                        names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """:func:`van_trees_sampling_prior` (stars drawn from the prior, surrogate shape fixed at ``shape``) on
    every bootstrap resample of the stars at once: ``counts`` (R, B) says how often each star is drawn.

    The same bound as calling it on ``F[idx]`` and ``table.iloc[idx]`` for each resample, with the
    per-star weights computed once (the bootstrap of the per-bin bounds costs one batched solve).
    """
    a, b = mock_spec.beta_shape
    est = [target, *nuisance]
    counts = np.asarray(counts, np.float64)
    best = _vt_batch(F, prior_informations(mock_spec, names), target, nuisance, names, counts)
    if not (shape > 2 and shape >= max(a, b)):
        return best
    lam = dataclasses.replace(mock_spec, beta_shape=[float(shape), float(shape)])
    c = _sup_ratio(mock_spec, est, shape)
    w = beta_density(lam, table, est) / np.maximum(beta_density(mock_spec, table, est), 1e-300)
    bound = _vt_batch(F, prior_informations(lam, names), target, nuisance, names, counts * w[None, :]) / c
    return np.where(bound > best, bound, best)
