"""Fisher matrices and the marginal Cramér–Rao lower bound (CRLB) on log g.

``F = Jᵀ diag(1/σ²) J`` per star (:func:`fisher_matrix`, masked pixels excluded), the marginal
CRLB of one parameter through the Schur complement over any nuisance set (:func:`marginal_crlb`,
on unit-diagonal scaled matrices, with solves, ill-conditioned stars flagged), the per-star ceiling
R²_max (:func:`r2_max`) and its summaries (:func:`ceiling_summary`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from snrmoe_lib.data.mock.base import PARAM_NAMES

__all__ = ["fisher_matrix", "CRLBInfo", "parameter_indices", "marginal_crlb", "r2_max", "ceiling_summary"]


def fisher_matrix(J: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None = None,
                  chunk_size: int = 16) -> np.ndarray:
    """Per-star Fisher matrix ``F = Jᵀ diag(1/σ²) J`` for Gaussian pixel noise of known σ.

    Parameters
    ----------
    J : ndarray (B, P, K)
        Jacobians (any float dtype; accumulated in float64).
    sigma : ndarray (B, P) or (P,)
        Effective 1σ error per pixel (``error · noise_level``).
    mask : ndarray (B, P) or (P,), optional
        Non-zero marks a bad pixel; it contributes nothing (whatever J and σ hold there).
    chunk_size
        Stars per batched product. Small chunks keep each star's (K, P) block in cache, which is
        faster than one large batched product (see ``benchmarks/bench_fisher.py``).

    Returns
    -------
    ndarray (B, K, K), float64
    """
    J = np.asarray(J)
    if J.ndim != 3:
        raise ValueError(f"J must have shape (stars, pixels, parameters), got {J.shape}")
    B, P, K = J.shape
    sigma = np.asarray(sigma)
    if sigma.ndim == 1:
        sigma = np.broadcast_to(sigma, (B, P))
    if sigma.shape != (B, P):
        raise ValueError(f"sigma has shape {sigma.shape}, expected {(B, P)} to match J")
    good = None if mask is None else (np.broadcast_to(np.asarray(mask), (B, P)) == 0)
    F = np.empty((B, K, K), dtype=np.float64)
    for s in range(0, B, chunk_size):
        sl = slice(s, min(s + chunk_size, B))
        sg = sigma[sl].astype(np.float64)
        g = np.ones(sg.shape, bool) if good is None else good[sl]
        bad = g & ~(np.isfinite(sg) & (sg > 0))
        if bad.any():
            b = int(np.argwhere(bad)[0, 0]) + s
            raise ValueError(f"sigma is zero, negative or not finite at an unmasked pixel of star {b}; "
                             "mask that pixel or fix the error vector")
        w = np.where(g, 1.0 / np.where(g, sg, 1.0) ** 2, 0.0)
        # (stars, K, P) contiguous: each star's product is one small BLAS call
        A = np.ascontiguousarray(np.swapaxes(J[sl], 1, 2), dtype=np.float64)
        if not np.isfinite(A).all():
            A = np.where(g[:, None, :], A, 0.0)  # masked pixels may hold NaN (e.g. a missing neighbour)
            if not np.isfinite(A).all():
                b = int(np.argwhere(~np.isfinite(A))[0, 0]) + s
                raise ValueError(f"Jacobian is not finite at an unmasked pixel of star {b}; mask it or drop the star")
        F[sl] = np.matmul(A * w[:, None, :], np.swapaxes(A, 1, 2))
    return F


@dataclass
class CRLBInfo:
    """Per-star details of a marginal CRLB (arrays of length B).

    Attributes
    ----------
    crlb
        Marginal variance bound of the target (NaN where ``ok`` is False).
    info_full
        Unmarginalised information ``F_tt`` (the target alone, nuisances known).
    info_marginal
        Marginal information ``F_tt − F_tη F_ηη⁻¹ F_ηt`` (the Schur complement).
    schur_decay
        ``info_marginal / info_full`` in [0, 1]: how much of the information on the target
        survives not knowing the nuisances (1: no degeneracy).
    cond
        Condition number of the scaled (unit-diagonal) Fisher sub-matrix.
    ok
        False for stars whose bound cannot be trusted: no information on the target, a singular or
        ill-conditioned matrix (``cond > cond_max``), or a non-positive Schur complement.
    """

    crlb: np.ndarray
    info_full: np.ndarray
    info_marginal: np.ndarray
    schur_decay: np.ndarray
    cond: np.ndarray
    ok: np.ndarray


def parameter_indices(target: str, nuisance: Sequence[str], names: Sequence[str]) -> list[int]:
    """Axes of ``target`` then of each nuisance parameter in ``names`` (checked: known, distinct)."""
    names = list(names)
    for n in [target, *nuisance]:
        if n not in names:
            raise KeyError(f"parameter {n!r} is not one of {names}")
    if target in nuisance:
        raise ValueError(f"the target {target!r} cannot also be a nuisance parameter")
    if len(set(nuisance)) != len(nuisance):
        raise ValueError(f"repeated nuisance parameter in {list(nuisance)}")
    return [names.index(target)] + [names.index(n) for n in nuisance]


def marginal_crlb(F: np.ndarray, target: str = "log_g", nuisance: Sequence[str] = ("T_eff", "M_H"),
                  names: Sequence[str] = PARAM_NAMES, cond_max: float = 1e12,
                  return_info: bool = False):
    """Marginal CRLB of ``target`` with the ``nuisance`` parameters unknown (Schur complement).

    ``CRLB = 1 / (F_tt − F_tη F_ηη⁻¹ F_ηt)``; parameters not in ``target`` or ``nuisance`` are
    treated as known (their rows and columns are dropped).

    Parameters
    ----------
    F : ndarray (B, K, K) or (K, K)
        Fisher matrices in the order of ``names``.
    target, nuisance
        Parameter names.
    names
        Names of the K axes of ``F``.
    cond_max
        Stars whose scaled sub-matrix has a larger condition number are flagged (CRLB NaN).
    return_info
        Also return a :class:`CRLBInfo` with the Schur decay, condition numbers and flags.

    Returns
    -------
    crlb : ndarray (B,)
        Marginal variance bound of ``target`` (NaN for flagged stars).
    info : CRLBInfo
        Only with ``return_info=True``.

    Notes
    -----
    Numerics: the sub-matrix is scaled to unit diagonal, ``S = D⁻¹ F D⁻¹`` with ``D = √diag F``,
    which removes the parameters' units (K vs dex) from the conditioning; the Schur complement is
    formed with a linear solve, never an explicit inverse. In scaled units ``S_tt = 1`` so the
    scaled Schur complement *is* the Schur decay.
    """
    F = np.asarray(F, dtype=np.float64)
    single = F.ndim == 2
    if single:
        F = F[None]
    if F.ndim != 3 or F.shape[1] != F.shape[2] or F.shape[1] != len(names):
        raise ValueError(f"F must have shape (stars, {len(names)}, {len(names)}), got {F.shape}")
    idx = parameter_indices(target, list(nuisance), names)
    sub = F[:, idx][:, :, idx]
    finite = np.all(np.isfinite(sub.reshape(sub.shape[0], -1)), axis=1)
    decay, cond, has_info, ok = _scaled_schur(sub, finite, cond_max)
    info_full = np.where(finite, sub[:, 0, 0], np.nan)
    info_marg = np.where(ok, decay * info_full, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        crlb = np.where(ok, 1.0 / info_marg, np.nan)
    cond = np.where(has_info, cond, np.inf)
    info = CRLBInfo(crlb=crlb, info_full=info_full, info_marginal=info_marg,
                    schur_decay=np.where(ok, decay, np.nan), cond=cond, ok=ok)
    if single:
        info = CRLBInfo(*(np.asarray(getattr(info, f))[0] for f in
                          ("crlb", "info_full", "info_marginal", "schur_decay", "cond", "ok")))
        crlb = crlb[0]
    return (crlb, info) if return_info else crlb


def _scaled_schur(sub: np.ndarray, finite: np.ndarray, cond_max: float):
    """Schur decay of the target (axis 0) on unit-diagonal scaled matrices ``sub`` (B, k, k).

    Returns the decay, the condition number, whether each star has information on every axis, and
    whether its bound can be trusted (well conditioned, positive decay).
    """
    B, k = sub.shape[0], sub.shape[1]
    d = np.sqrt(np.clip(np.diagonal(sub, axis1=1, axis2=2), 0.0, None))
    has_info = finite & np.all(d > 0, axis=1)
    dd = np.where(has_info[:, None], d, 1.0)
    S = np.where(has_info[:, None, None], sub / (dd[:, :, None] * dd[:, None, :]), np.eye(k))
    S = 0.5 * (S + np.swapaxes(S, 1, 2))
    ev = np.linalg.eigvalsh(S)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(ev[:, 0] > 0, ev[:, -1] / ev[:, 0], np.inf)
    if k > 1:
        well = has_info & (cond <= cond_max)
        Snn = S[:, 1:, 1:]
        Snt = S[:, 1:, :1]
        Snn_safe = np.where(well[:, None, None], Snn, np.eye(k - 1))
        x = np.linalg.solve(Snn_safe, Snt)
        decay = 1.0 - np.einsum("bij,bij->b", Snt, x)
    else:
        well = has_info
        decay = np.ones(B)
    ok = well & np.isfinite(decay) & (decay > 0)
    return decay, cond, has_info, ok


def r2_max(crlb: np.ndarray | float, var_logg: float) -> np.ndarray:
    """Per-star ceiling ``R²_max = 1 − CRLB / Var(log g)`` (unclipped: negative means no information).

    Parameters
    ----------
    crlb
        Marginal CRLB of log g per star (NaN stays NaN).
    var_logg
        Variance of log g over the population the R² is measured on.
    """
    if not np.isfinite(var_logg) or var_logg <= 0:
        raise ValueError(f"Var(log g) must be a positive number, got {var_logg}")
    return 1.0 - np.asarray(crlb, dtype=np.float64) / var_logg


def ceiling_summary(crlb: np.ndarray, var_logg: float, info: CRLBInfo | None = None) -> dict:
    """Median and 90th percentile of per-star R²_max, the population ceiling 1 − mean(CRLB)/Var.

    Stars flagged ill-conditioned (NaN CRLB) are left out of the statistics and counted in
    ``n_flagged``. Also reports the median σ_CRLB and, with ``info``, the median Schur decay and
    condition number.
    """
    crlb = np.asarray(crlb, dtype=np.float64)
    good = np.isfinite(crlb)
    r = r2_max(crlb[good], var_logg)
    out = {"n": int(crlb.size), "n_flagged": int((~good).sum()),
           "median_r2_max": float(np.median(r)) if r.size else float("nan"),
           "p90_r2_max": float(np.quantile(r, 0.9)) if r.size else float("nan"),
           "population_r2_max": float(1.0 - crlb[good].mean() / var_logg) if r.size else float("nan"),
           "median_sigma_crlb": float(np.median(np.sqrt(crlb[good]))) if r.size else float("nan"),
           "var_logg": float(var_logg)}
    if info is not None:
        out["median_schur_decay"] = float(np.nanmedian(info.schur_decay)) if good.any() else float("nan")
        out["median_cond"] = float(np.median(info.cond[np.isfinite(info.cond)])) if np.isfinite(info.cond).any() else float("inf")
    return out

