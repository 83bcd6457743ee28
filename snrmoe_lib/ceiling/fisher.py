"""The Fisher / Cramér–Rao ceiling on log g.

Two ways to get the Jacobian ∂flux/∂θ of the stored (noise-free, median-normalised) flux:

* :func:`jacobian_autograd` — exact, by forward-mode automatic differentiation of a mock forward
  model (:meth:`~snrmoe_lib.mock.base.ForwardModel.normalized_flux`), batched;
* :func:`grid_jacobian` / :func:`grid_jacobian_dataset` — central finite differences along the axes
  of a regular grid (the user's method on pfsspec grid products): the lattice is detected from the
  params table, edges are dropped or differenced one-sided.

Then ``F = Jᵀ diag(1/σ²) J`` per star (:func:`fisher_matrix`, masked pixels excluded), the marginal
CRLB of one parameter through the Schur complement over any nuisance set (:func:`marginal_crlb`,
on unit-diagonal scaled matrices, with solves, ill-conditioned stars flagged), R²_max
(:func:`r2_max`) and its summaries, and a Bayesian bound that also holds for biased (shrinkage)
estimators (:func:`bayesian_crlb`, :func:`van_trees_bound`).

Parameters are ordered as :data:`snrmoe_lib.mock.PARAM_NAMES` = (T_eff, log_g, M_H, a_M, C_M).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.data.mock.base import PARAM_NAMES
from snrmoe_lib._util.rng import rng as _rng

if TYPE_CHECKING:  # pragma: no cover
    from snrmoe_lib.config import Params
    from snrmoe_lib.data.io import PfsDataset
    from snrmoe_lib.data.mock.base import ForwardModel

__all__ = [
    "PARAM_NAMES",
    "jacobian_autograd",
    "fisher_matrix",
    "marginal_crlb",
    "CRLBInfo",
    "r2_max",
    "ceiling_summary",
    "Lattice",
    "detect_lattice",
    "grid_jacobian",
    "GridJacobian",
    "grid_jacobian_dataset",
    "grid_files",
    "ensure_grid",
    "beta_variance",
    "beta_prior_information",
    "label_variance",
    "prior_variances",
    "bayesian_crlb",
    "van_trees_bound",
    "van_trees_sampling_prior",
    "ceiling_per_bin",
    "usable_rows",
    "prior_informations",
    "beta_density",
    "grid_spec",
    "grid_star_frame",
    "dataset_star_frame",
    "ceiling_by_magnitude",
    "fd_autograd_check",
    "bin_star_frame",
    "model_flux_mismatch",
    "calibration_rows",
    "model_bin_r2",
    "efficiency_table",
]


# --------------------------------------------------------------------------------------------
# Jacobians by autograd
# --------------------------------------------------------------------------------------------


def _theta(table: pd.DataFrame) -> np.ndarray:
    missing = [c for c in PARAM_NAMES if c not in table]
    if missing:
        raise KeyError(f"params table lacks the stellar parameter column(s) {missing}")
    theta = table[list(PARAM_NAMES)].to_numpy(np.float64)
    if not np.all(np.isfinite(theta)):
        raise ValueError("non-finite stellar parameters in the params table")
    return theta


def jacobian_autograd(model: "ForwardModel", table: pd.DataFrame, batch_size: int = 128,
                      dtype=None, num_threads: int | None = 1) -> np.ndarray:
    """Exact Jacobian of ``model.normalized_flux(θ, table)`` with respect to θ, per star.

    Parameters
    ----------
    model
        A mock forward model (``get_model(name)``).
    table
        Params table of the B stars: the :data:`PARAM_NAMES` columns and the observing conditions
        the model reads.
    batch_size
        Stars per forward pass (bounds memory).
    dtype
        torch dtype of the computation (default ``torch.float64``).
    num_threads
        torch intra-op threads during the computation (restored afterwards); ``None`` leaves the
        setting alone. The products are many small element-wise operations, for which one thread
        was about ten times faster than two on a loaded 2-core machine.

    Returns
    -------
    ndarray (B, P, 5), float64
        ``J[b, p, k] = ∂ flux[b, p] / ∂ θ_k`` in :data:`PARAM_NAMES` order.

    Notes
    -----
    Stars are independent, so the Jacobian-vector product with the tangent ``e_k`` for every star
    gives column ``k`` of all B Jacobians at once. It is formed by reverse-over-reverse
    differentiation, ``J t = ∂/∂u [uᵀ J] t``: one forward pass and one differentiable backward
    pass per batch, then 5 cheap backward passes (measured faster than 5 forward-mode passes).
    """
    import torch

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dtype = torch.float64 if dtype is None else dtype
    theta = _theta(table)
    table = table.reset_index(drop=True)
    if len(table) == 0:
        raise ValueError("empty params table: no stars to differentiate")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        out = None
        for s in range(0, len(table), batch_size):
            sl = slice(s, min(s + batch_size, len(table)))
            x = torch.as_tensor(theta[sl], dtype=dtype).requires_grad_(True)
            with torch.enable_grad():
                y = model.normalized_flux(x, table.iloc[sl].reset_index(drop=True))
                u = torch.zeros_like(y, requires_grad=True)
                (g,) = torch.autograd.grad(y, x, u, create_graph=True)
                cols = []
                for k in range(len(PARAM_NAMES)):
                    tangent = torch.zeros_like(x)
                    tangent[:, k] = 1.0
                    (d,) = torch.autograd.grad(g, u, tangent, retain_graph=k < len(PARAM_NAMES) - 1)
                    cols.append(d.detach().to(torch.float64).numpy())
            jb = np.stack(cols, axis=-1)
            if out is None:
                out = np.empty((len(table), jb.shape[1], len(PARAM_NAMES)), dtype=np.float64)
            out[sl] = jb
    finally:
        torch.set_num_threads(old_threads)
    return out


# --------------------------------------------------------------------------------------------
# Fisher matrices and the marginal CRLB
# --------------------------------------------------------------------------------------------


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

    @property
    def n_flagged(self) -> int:
        return int((~self.ok).sum())


def _indices(target: str, nuisance: Sequence[str], names: Sequence[str]) -> list[int]:
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
    idx = _indices(target, list(nuisance), names)
    sub = F[:, idx][:, :, idx]
    B, k = sub.shape[0], len(idx)
    d = np.sqrt(np.clip(np.diagonal(sub, axis1=1, axis2=2), 0.0, None))
    finite = np.all(np.isfinite(sub.reshape(B, -1)), axis=1)
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


# --------------------------------------------------------------------------------------------
# Priors and the Bayesian (biased-estimator) bound
# --------------------------------------------------------------------------------------------


def beta_variance(lo: float, hi: float, a: float, b: float) -> float:
    """Variance of ``lo + (hi − lo) · Beta(a, b)``."""
    if a <= 0 or b <= 0:
        raise ValueError(f"beta shape must be positive, got ({a}, {b})")
    return float((hi - lo) ** 2 * a * b / ((a + b) ** 2 * (a + b + 1.0)))


def beta_prior_information(lo: float, hi: float, a: float, b: float) -> float:
    """Fisher information of the prior ``lo + (hi − lo) · Beta(a, b)`` about its location.

    ``J = (a+b−1)(a+b−2)(1/(a−2) + 1/(b−2)) / (hi−lo)²``, finite only for a, b > 2; returns
    ``inf`` otherwise (a density that does not vanish smoothly at the range edges carries infinite
    prior information, and the Van Trees bound with it is vacuous).
    """
    if hi <= lo:
        return float("inf")
    if a <= 2 or b <= 2:
        return float("inf")
    return float((a + b - 1) * (a + b - 2) * (1 / (a - 2) + 1 / (b - 2)) / (hi - lo) ** 2)


_SPEC_KEY = {"T_eff": "teff", "log_g": "log_g", "M_H": "m_h", "a_M": "a_m", "C_M": "c_m"}


def prior_variances(source, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Variance of each parameter under the sampling prior.

    ``source`` is a :class:`~snrmoe_lib.config.MockSpec` (the random set's beta distributions) or
    a params table (the dataset's empirical variances, for real data).
    """
    if isinstance(source, pd.DataFrame):
        return np.array([float(np.var(source[n].to_numpy(np.float64))) for n in names])
    a, b = source.beta_shape
    return np.array([beta_variance(*getattr(source, _SPEC_KEY[n]), a, b) for n in names])


def prior_informations(mock_spec, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Prior Fisher information of each parameter under the random set's beta prior (inf if vacuous)."""
    a, b = mock_spec.beta_shape
    return np.array([beta_prior_information(*getattr(mock_spec, _SPEC_KEY[n]), a, b) for n in names])


def beta_density(mock_spec, table: pd.DataFrame, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Joint density of the random set's independent beta prior at the table's parameters."""
    from math import lgamma

    a, b = mock_spec.beta_shape
    logp = np.zeros(len(table))
    for n in names:
        lo, hi = getattr(mock_spec, _SPEC_KEY[n])
        if hi <= lo:
            continue
        u = (table[n].to_numpy(np.float64) - lo) / (hi - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = (a - 1) * np.log(u) + (b - 1) * np.log1p(-u) + lgamma(a + b) - lgamma(a) - lgamma(b) - np.log(hi - lo)
        logp += np.where((u > 0) & (u < 1), lp, -np.inf)
    return np.exp(logp)


def label_variance(params: "Params", source: str = "dataset", dataset: "PfsDataset | None" = None,
                   target: str = "log_g") -> float:
    """Var(target) of the configuration's label distribution.

    ``source='dataset'``: the params table of the configured dataset (works on real data);
    ``'mock'``: the beta distribution of ``data.mock`` (the sampling prior of the random set).
    """
    if source == "dataset":
        if dataset is None:
            raise ValueError("label_variance(source='dataset') needs the opened dataset")
        return float(np.var(dataset.params[target].to_numpy(np.float64)))
    if source == "mock":
        if params.data.mock is None:
            raise ValueError("label_variance(source='mock') needs data.mock in the configuration")
        return float(prior_variances(params.data.mock, [target])[0])
    raise ValueError(f"unknown Var(log g) source {source!r}; use 'dataset' or 'mock'")


def _beta_sup_ratio(s: float, a: float, b: float) -> float:
    """sup_x Beta(s, s)(x) / Beta(a, b)(x) on (0, 1) (finite only for s ≥ max(a, b)).

    The ratio is ∝ x^(s−a) (1−x)^(s−b), largest at x* = (s−a) / (2s−a−b).
    """
    from math import lgamma, log

    if s < max(a, b):
        return float("inf")
    p, q = s - a, s - b
    x = 0.5 if p + q == 0 else p / (p + q)
    lr = (p * log(x) if p > 0 else 0.0) + (q * log(1 - x) if q > 0 else 0.0)
    lnorm = (lgamma(a) + lgamma(b) - lgamma(a + b)) - (2 * lgamma(s) - lgamma(2 * s))
    return float(np.exp(lr + lnorm))


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
    import dataclasses

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
        c = 1.0
        for n in est:
            lo, hi = getattr(mock_spec, _SPEC_KEY[n])
            if hi > lo:
                c *= _beta_sup_ratio(sh, a, b)
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


def _sub(F, target, nuisance, names):
    idx = _indices(target, list(nuisance), names)
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


# --------------------------------------------------------------------------------------------
# Regular grids: lattice detection and central finite differences
# --------------------------------------------------------------------------------------------


@dataclass
class Lattice:
    """The lattice of a grid dataset, detected from its params table.

    Attributes
    ----------
    names
        All parameter names considered (:data:`PARAM_NAMES`).
    values
        Sorted node values of each parameter (a single value for a fixed parameter).
    axes
        The parameters that vary (more than one node value).
    regular
        Per axis: True when the node spacing is constant.
    index
        (N, K) node index of every row along every parameter.
    node_row
        Flat node number → row (−1 where the lattice has a hole).
    """

    names: tuple
    values: dict
    axes: tuple
    regular: dict
    index: np.ndarray
    node_row: np.ndarray

    @property
    def shape(self) -> tuple:
        return tuple(len(self.values[n]) for n in self.names)

    @property
    def n_holes(self) -> int:
        return int((self.node_row < 0).sum())

    def steps(self) -> dict:
        """Median node spacing of each axis."""
        return {n: float(np.median(np.diff(self.values[n]))) for n in self.axes}

    def neighbour(self, rows: np.ndarray, axis: str, offset: int) -> np.ndarray:
        """Row of the node ``offset`` steps along ``axis`` from each of ``rows`` (−1 if none)."""
        k = self.names.index(axis)
        idx = self.index[rows].copy()
        idx[:, k] += offset
        inside = (idx[:, k] >= 0) & (idx[:, k] < self.shape[k])
        flat = np.ravel_multi_index(tuple(np.clip(idx, 0, np.array(self.shape) - 1).T), self.shape)
        return np.where(inside, self.node_row[flat], -1)


def detect_lattice(table: pd.DataFrame, names: Sequence[str] = PARAM_NAMES, decimals: int = 6) -> Lattice:
    """Detect the regular lattice of a grid from its params table.

    Node values are the distinct values of each parameter column (rounded to ``decimals`` to
    absorb float noise). Holes (missing nodes) are allowed; two rows on the same node are an
    error (for example a file that mixes magnitudes).
    """
    theta = table[list(names)].to_numpy(np.float64) if all(n in table for n in names) else None
    if theta is None:
        raise KeyError(f"params table lacks the parameter column(s) {[n for n in names if n not in table]}")
    theta = np.round(theta, decimals)
    values, index, regular = {}, np.empty(theta.shape, np.int64), {}
    for k, n in enumerate(names):
        v, inv = np.unique(theta[:, k], return_inverse=True)
        values[n] = v
        index[:, k] = inv.ravel()
        if len(v) > 1:
            d = np.diff(v)
            regular[n] = bool(np.allclose(d, d[0], rtol=1e-3, atol=0))
    shape = tuple(len(values[n]) for n in names)
    flat = np.ravel_multi_index(tuple(index.T), shape)
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    if counts.max() > 1:
        dup = int(np.argmax(counts > 1))
        rows = np.flatnonzero(flat == dup)[:3].tolist()
        raise ValueError(f"rows {rows} share one lattice node of {list(names)}: not a single regular grid "
                         "(one file per magnitude and fixed conditions is expected)")
    node_row = np.full(int(np.prod(shape)), -1, np.int64)
    node_row[flat] = np.arange(len(table))
    axes = tuple(n for n in names if len(values[n]) > 1)
    return Lattice(tuple(names), values, axes, regular, index, node_row)


def _stencils(lat: Lattice, rows: np.ndarray, axes: Sequence[str], edges: str):
    """Per star and axis: the two rows differenced (plus, minus) and the usable flag."""
    if edges not in ("drop", "one_sided"):
        raise ValueError(f"edges must be 'drop' or 'one_sided', got {edges!r}")
    plus = np.empty((len(rows), len(axes)), np.int64)
    minus = np.empty_like(plus)
    for j, a in enumerate(axes):
        p, m = lat.neighbour(rows, a, +1), lat.neighbour(rows, a, -1)
        if edges == "one_sided":
            # fall back to the star itself on the side without a neighbour
            p, m = np.where((p < 0) & (m >= 0), rows, p), np.where((m < 0) & (p >= 0), rows, m)
        plus[:, j], minus[:, j] = p, m
    usable = np.all((plus >= 0) & (minus >= 0), axis=1)
    return plus, minus, usable


def usable_rows(table: pd.DataFrame, axes: Sequence[str] | None = None, edges: str = "drop",
                lattice: Lattice | None = None) -> np.ndarray:
    """Rows whose derivative along every one of ``axes`` can be formed (interior points for 'drop')."""
    lat = detect_lattice(table) if lattice is None else lattice
    axes = lat.axes if axes is None else tuple(axes)
    rows = np.arange(len(table))
    return rows[_stencils(lat, rows, axes, edges)[2]]


@dataclass
class GridJacobian:
    """Finite-difference Jacobians of grid stars.

    ``J`` is (B, P, 5) in :data:`PARAM_NAMES` order, with zero columns for parameters that are not
    lattice axes (listed in ``axes``); ``mask`` (B, P) marks a pixel bad in the star or in any node
    its differences used; ``sigma`` (B, P) is the star's error · noise_level; ``table`` the
    stars' params rows; ``rows`` their row numbers in the grid file; ``central`` (B, n_axes)
    whether each derivative was central (else one-sided).
    """

    rows: np.ndarray
    table: pd.DataFrame
    J: np.ndarray
    sigma: np.ndarray | None
    mask: np.ndarray
    axes: tuple
    central: np.ndarray
    steps: dict


def grid_jacobian(table: pd.DataFrame, flux: np.ndarray, rows: np.ndarray | None = None,
                  mask: np.ndarray | None = None, edges: str = "drop", axes: Sequence[str] | None = None,
                  lattice: Lattice | None = None) -> GridJacobian:
    """Central finite differences of ``flux`` along the lattice axes, for in-memory grids.

    Parameters
    ----------
    table : DataFrame (N rows)
        Params table of the whole grid (the lattice is detected from it).
    flux : ndarray (N, P)
        Noise-free flux of every grid row (or any array indexable by row).
    rows
        Stars to differentiate (default: every usable row). Rows whose stencil is incomplete
        (an edge with ``edges='drop'``, or a hole) raise an error naming them.
    mask : ndarray (N, P), optional
        Non-zero = bad pixel.
    edges
        ``'drop'``: only stars with both neighbours on every axis; ``'one_sided'``: at an edge use
        the forward or backward difference with the star itself.
    axes
        Parameters to differentiate (default: every lattice axis).

    Notes
    -----
    ``(f(x₊) − f(x₋)) / (x₊ − x₋)`` uses the actual node values, so an irregular axis is handled.
    """
    lat = detect_lattice(table) if lattice is None else lattice
    axes = lat.axes if axes is None else tuple(axes)
    not_axes = [a for a in axes if a not in lat.axes]
    if not_axes:
        raise ValueError(f"{not_axes} do not vary in this grid (lattice axes: {list(lat.axes)}); "
                         "a derivative along them needs a grid with those axes")
    rows = usable_rows(table, axes, edges, lat) if rows is None else np.asarray(rows, np.int64)
    plus, minus, usable = _stencils(lat, rows, axes, edges)
    if not usable.all():
        raise ValueError(f"rows {rows[~usable][:5].tolist()} lack grid neighbours on {list(axes)} "
                         f"(edges={edges!r}); select rows with usable_rows()")
    theta = np.round(table[list(PARAM_NAMES)].to_numpy(np.float64), 6)
    P = np.asarray(flux[rows[:1]]).shape[1] if len(rows) else 0
    J = np.zeros((len(rows), P, len(PARAM_NAMES)), np.float64)
    bad = np.zeros((len(rows), P), bool) if mask is None else (np.asarray(mask[rows]) != 0)
    for j, a in enumerate(axes):
        k = PARAM_NAMES.index(a)
        dx = theta[plus[:, j], k] - theta[minus[:, j], k]
        fp = np.asarray(flux[plus[:, j]], np.float64)
        fm = np.asarray(flux[minus[:, j]], np.float64)
        J[:, :, k] = (fp - fm) / dx[:, None]
        if mask is not None:
            bad |= (np.asarray(mask[plus[:, j]]) != 0) | (np.asarray(mask[minus[:, j]]) != 0)
    central = (plus != rows[:, None]) & (minus != rows[:, None])
    return GridJacobian(rows=rows, table=table.iloc[rows].reset_index(drop=True), J=J, sigma=None,
                        mask=bad.astype(np.int32), axes=tuple(axes), central=central, steps=lat.steps())


def grid_jacobian_dataset(ds: "PfsDataset", n_stars: int | None = None, seed: int = 0, edges: str = "drop",
                          axes: Sequence[str] | None = None, noise_level: float = 1.0,
                          rows: np.ndarray | None = None) -> GridJacobian:
    """Finite-difference Jacobians of stars of a pfsspec grid file, reading only the rows needed.

    Parameters
    ----------
    ds
        An opened grid dataset (one magnitude, fixed conditions).
    n_stars
        Draw this many usable stars at random (seeded); default all usable stars.
    seed
        Seed of that draw.
    edges, axes
        See :func:`grid_jacobian`.
    noise_level
        σ = error · noise_level of each star.
    rows
        Explicit stars instead of a draw.
    """
    table = ds.params
    lat = detect_lattice(table)
    axes = lat.axes if axes is None else tuple(axes)
    if rows is None:
        cand = usable_rows(table, axes, edges, lat)
        if cand.size == 0:
            raise ValueError(f"{ds.path}: no grid star has neighbours on every axis {list(axes)} with "
                             f"edges={edges!r}; use a larger grid or edges='one_sided'")
        if n_stars is not None and n_stars < cand.size:
            cand = np.sort(_rng("fisher.stars", seed).choice(cand, size=n_stars, replace=False))
        rows = cand
    rows = np.asarray(rows, np.int64)
    plus, minus, _ = _stencils(lat, rows, axes, edges)
    need = np.unique(np.concatenate([rows, plus.ravel(), minus.ravel()]))
    need = need[need >= 0]
    chunk = ds.read(need, dtype=np.float64)
    if len(chunk) != len(need):
        raise ValueError(f"{ds.path}: bad rows among the grid nodes needed; cannot difference across them")
    pos = np.full(len(table), -1, np.int64)
    pos[need] = np.arange(len(need))

    class _ByRow:  # index the read block by global row number
        def __init__(self, a):
            self.a = a

        def __getitem__(self, r):
            return self.a[pos[r]]

    gj = grid_jacobian(table, _ByRow(chunk.flux), rows=rows,
                       mask=None if chunk.mask is None else _ByRow(chunk.mask), edges=edges, axes=axes,
                       lattice=lat)
    from snrmoe_lib.data.noise import effective_sigma

    gj.sigma = effective_sigma(chunk.error[pos[rows]], noise_level)
    return gj


# --------------------------------------------------------------------------------------------
# Grid files of a configuration
# --------------------------------------------------------------------------------------------


def grid_spec(params: "Params", mags: Sequence[float] | None = None):
    """The :class:`~snrmoe_lib.config.MockSpec` of the configuration's mock grid.

    Model, exposure and error mode come from ``data.mock`` (defaults when absent); the lattice
    from the ``fisher.grid_*`` settings; conditions are the grid's fixed ones.
    """
    import dataclasses

    from snrmoe_lib.config import MockSpec

    f = params.fisher
    base = params.data.mock if params.data.mock is not None else MockSpec()
    return dataclasses.replace(
        base, mode="grid", shard_size=0, teff=list(f.grid_teff), log_g=list(f.grid_log_g), m_h=list(f.grid_m_h),
        grid_teff_step=f.grid_teff_step, grid_log_g_step=f.grid_log_g_step, grid_m_h_step=f.grid_m_h_step,
        grid_a_m=list(f.grid_a_m), grid_c_m=list(f.grid_c_m),
        grid_mags=[float(m) for m in (f.mags if mags is None else mags)])


def grid_files(params: "Params", mags: Sequence[float] | None = None) -> dict:
    """Magnitude → grid file path of the configuration (see ``fisher.grid_path``)."""
    from snrmoe_lib.data.mock.generate import grid_path

    mags = params.fisher.mags if mags is None else mags
    gp = params.fisher.grid_path
    if not gp:
        return {float(m): grid_path(_mock_grid_base(params), m) for m in mags}
    if "{mag" in gp:
        return {float(m): params.resolve(gp.format(mag=m)) for m in mags}
    return {float(m): grid_path(params.resolve(gp), m) for m in mags}


def _mock_grid_base(params: "Params") -> Path:
    # named by the model and a hash of everything that shapes the grid (lattice, model, exposure,
    # conditions, seed), not by the configuration: configurations that differ only in noise level
    # or training set share one grid, and a grid made with other settings is never reused
    import dataclasses
    import hashlib
    import json

    spec = dataclasses.asdict(grid_spec(params, mags=[]))
    # settings that only shape the random set (or how the work is split) do not change a grid
    for k in ("grid_mags", "n", "chunk_size", "shard_size", "workers", "mag", "seeing", "zenith",
              "field_angle", "beta_shape", "sky_jitter", "oh_jitter"):
        spec.pop(k, None)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return params.dataset_path.parent / f"mock_grid_{spec['model']}_{digest}.h5"


def _check_grid_matches(path: Path, expected: pd.DataFrame) -> None:
    from snrmoe_lib.data.io import open_dataset

    with open_dataset(path) as ds:
        got = ds.params
        same = len(got) == len(expected) and all(
            np.array_equal(np.unique(np.round(got[c].to_numpy(float), 6)), np.unique(np.round(expected[c].to_numpy(float), 6)))
            for c in PARAM_NAMES)
    if not same:
        raise ValueError(f"{path}: this mock grid was made with other fisher.grid_* settings than the "
                         "configuration's; delete it to regenerate")


def ensure_grid(params: "Params", mags: Sequence[float] | None = None, progress: bool = False) -> dict:
    """Magnitude → path of each grid file, generating missing mock grid files first.

    With ``fisher.grid_path`` empty the mock grid lives beside the configured dataset and missing
    magnitudes are simulated with the configuration's forward model; an existing mock grid made with
    other lattice settings is an error (never silently reused). With ``fisher.grid_path`` set (for
    example the user's pfsspec grid products) the files must exist.
    """
    from snrmoe_lib.data.mock import grid_table, simulate

    files = grid_files(params, mags)
    missing = {m: p for m, p in files.items() if not p.exists()}
    if params.fisher.grid_path:
        if missing:
            raise FileNotFoundError(f"grid file(s) not found: {[str(p) for p in missing.values()]} "
                                    "(fisher.grid_path points at files that must exist)")
        return files
    spec = grid_spec(params, sorted(missing))
    if missing:
        base = _mock_grid_base(params)
        base.parent.mkdir(parents=True, exist_ok=True)
        for m in sorted(missing):
            try:
                simulate(grid_spec(params, [m]), base, progress=progress)
            except FileExistsError:
                pass  # another process wrote it first (the writer renames atomically)
    for m, p in files.items():
        if m not in missing:
            _check_grid_matches(p, grid_table(spec, m))
    return files


# --------------------------------------------------------------------------------------------
# Per-star ceilings: grid stars and dataset stars
# --------------------------------------------------------------------------------------------


def _star_frame(table: pd.DataFrame, F: np.ndarray, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None,
                params: "Params", var_logg: float, prior_var: np.ndarray | None) -> pd.DataFrame:
    """One row per star: parameters, SNRs, CRLB / R²_max / Schur decay / cond for 3-D and 5-D."""
    from snrmoe_lib.data.noise import snr_l2, snr_pixel

    f = params.fisher
    out = table[[c for c in table.columns if c in (*PARAM_NAMES, "mag", "snr")]].reset_index(drop=True).copy()
    out["snr_l2"] = snr_l2(flux, sigma, mask)
    out["snr_pixel"] = snr_pixel(flux, sigma, mask)
    for tag, nuis in (("3d", f.nuisance_3d), ("5d", f.nuisance_5d)):
        crlb, info = marginal_crlb(F, "log_g", nuis, cond_max=f.cond_max, return_info=True)
        out[f"crlb_{tag}"] = crlb
        out[f"sigma_{tag}"] = np.sqrt(crlb)
        out[f"r2_{tag}"] = r2_max(crlb, var_logg)
        out[f"schur_{tag}"] = info.schur_decay
        out[f"cond_{tag}"] = info.cond
        if prior_var is not None:
            out[f"bcrlb_{tag}"] = bayesian_crlb(F, prior_var, "log_g", nuis)
    out["info_logg"] = F[:, 1, 1]
    return out


def grid_star_frame(path: str | Path, params: "Params", var_logg: float, prior_var: np.ndarray | None = None,
                    model: "ForwardModel | None" = None, method: str | None = None,
                    n_stars: int | None = -1, edges: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-star ceilings of ``n_stars`` usable stars of one grid file.

    ``method='fd'`` differences the stored flux along the lattice; ``'autograd'`` differentiates
    ``model`` at the same stars (the grid still provides σ and the mask). ``n_stars=-1`` takes
    ``fisher.n_stars``, ``None`` every usable star; ``edges`` defaults to ``fisher.edges``.
    Returns the frame and the stars' Fisher matrices.
    """
    from snrmoe_lib.data.io import open_dataset

    f = params.fisher
    method = f.method if method is None else method
    with open_dataset(path, on_bad_rows=params.data.on_bad_rows) as ds:
        lat = detect_lattice(ds.params)
        axes = tuple(a for a in lat.axes)
        need = {"log_g", *f.nuisance_3d, *f.nuisance_5d}
        lacking = sorted(need - set(axes))
        if lacking:
            raise ValueError(f"{path}: the grid does not vary {lacking}; the configured marginalisation needs "
                             f"those axes (grid axes: {list(axes)})")
        gj = grid_jacobian_dataset(ds, n_stars=f.n_stars if n_stars == -1 else n_stars, seed=f.seed,
                                   edges=f.edges if edges is None else edges, axes=axes,
                                   noise_level=params.noise.noise_level)
        flux = ds.read(gj.rows, dtype=np.float64).flux
    J = gj.J
    if method == "autograd":
        if model is None:
            raise ValueError("method='autograd' needs the forward model (mock data only)")
        J = jacobian_autograd(model, gj.table)
    elif method != "fd":
        raise ValueError(f"unknown Jacobian method {method!r}; use 'fd' or 'autograd'")
    F = fisher_matrix(J, gj.sigma, gj.mask)
    frame = _star_frame(gj.table, F, flux, gj.sigma, gj.mask, params, var_logg, prior_var)
    frame["row"] = gj.rows
    frame["central"] = gj.central.all(axis=1)
    return frame, F


def dataset_star_frame(ds: "PfsDataset", rows: np.ndarray, params: "Params", model: "ForwardModel",
                       var_logg: float, prior_var: np.ndarray | None = None) -> pd.DataFrame:
    """Exact (autograd) per-star ceilings of dataset stars, with the dataset's own σ and mask.

    For mock datasets: their stars follow the configuration's label and SNR distributions, so a
    ceiling per SNR bin built from them is the one a model tested on that dataset faces.
    """
    chunk = ds.read(np.sort(np.asarray(rows)), dtype=np.float64)
    from snrmoe_lib.data.noise import effective_sigma

    sigma = effective_sigma(chunk.error, params.noise.noise_level)
    J = jacobian_autograd(model, chunk.params)
    F = fisher_matrix(J, sigma, chunk.mask)
    frame = _star_frame(chunk.params, F, chunk.flux, sigma, chunk.mask, params, var_logg, prior_var)
    frame["row"] = chunk.rows
    return frame


def ceiling_by_magnitude(frame: pd.DataFrame, var_logg: float, F: dict | None = None,
                         params: "Params | None" = None) -> pd.DataFrame:
    """The ceiling table: one row per magnitude, 3-D and 5-D marginalisation.

    Columns: median per-pixel and L2 SNR; per nuisance set the median σ_CRLB, median and 90th
    percentile of R²_max, the population ceiling 1 − mean(CRLB)/Var, median Schur decay and
    condition number, flagged stars, the Bayesian ceiling 1 − mean(Bayes bound)/Var when the frame
    has it; with ``F`` (mag → the frame's Fisher matrices, in frame order) and ``params`` of a mock
    configuration, the Van Trees ceiling under the sampling prior
    (:func:`van_trees_sampling_prior`).
    """
    rows = []
    for mag, g in frame.groupby("mag", sort=True):
        rec = {"mag": float(mag), "n": len(g), "snr_pixel": float(g["snr_pixel"].median()),
               "snr_l2": float(g["snr_l2"].median())}
        for tag in ("3d", "5d"):
            s = ceiling_summary(g[f"crlb_{tag}"].to_numpy(), var_logg)
            rec.update({f"sigma_{tag}": s["median_sigma_crlb"], f"median_r2_{tag}": s["median_r2_max"],
                        f"p90_r2_{tag}": s["p90_r2_max"], f"pop_r2_{tag}": s["population_r2_max"],
                        f"schur_{tag}": float(g[f"schur_{tag}"].median()),
                        f"cond_{tag}": float(g[f"cond_{tag}"].median()), f"flagged_{tag}": s["n_flagged"]})
            if f"bcrlb_{tag}" in g:
                rec[f"bayes_r2_{tag}"] = float(1 - g[f"bcrlb_{tag}"].mean() / var_logg)
            if F is not None and params is not None and params.data.mock is not None:
                nuis = params.fisher.nuisance_3d if tag == "3d" else params.fisher.nuisance_5d
                vt = van_trees_sampling_prior(F[mag], g, params.data.mock, "log_g", nuis, drawn_from="grid")
                rec[f"vantrees_r2_{tag}"] = float(1 - vt["bound"] / var_logg)
                rec[f"vantrees_shape_{tag}"] = vt["shape"]
        rows.append(rec)
    return pd.DataFrame(rows)


def ceiling_per_bin(frame: pd.DataFrame, snr_column: str, edges: Sequence[float], labels: Sequence[str],
                    var_logg: float) -> pd.DataFrame:
    """Population ceiling per SNR bin: 1 − mean(CRLB)/Var for 3-D and 5-D, and the Bayesian ceiling.

    Bins are right-closed on ``snr_column`` (as :func:`snrmoe_lib.noise.assign_bins`); an empty
    bin is kept with NaN ceilings and n = 0.
    """
    from snrmoe_lib.data.noise import assign_bins

    idx = assign_bins(frame[snr_column].to_numpy(), edges)
    out = []
    for k, lab in enumerate(labels):
        g = frame[idx == k]
        rec = {"bin": lab, "n": len(g), "snr_median": float(g[snr_column].median()) if len(g) else np.nan}
        for tag in ("3d", "5d"):
            c = g[f"crlb_{tag}"].to_numpy()
            c = c[np.isfinite(c)]
            rec[f"ceiling_{tag}"] = float(1 - c.mean() / var_logg) if c.size else np.nan
            rec[f"median_r2_{tag}"] = float(np.median(1 - c / var_logg)) if c.size else np.nan
            if f"bcrlb_{tag}" in g:
                rec[f"bayes_{tag}"] = float(1 - g[f"bcrlb_{tag}"].mean() / var_logg) if len(g) else np.nan
        out.append(rec)
    return pd.DataFrame(out)


def calibration_rows(table: pd.DataFrame, params: "Params") -> pd.DataFrame:
    """The mock's median R²_max against the user's real-product values at the reference magnitudes.

    The mock's median R²_max is recomputed with the user's convention, Var(log g) of their grid
    (``fisher.reference_var_logg``), from the median σ_CRLB, so the two are comparable.
    """
    f = params.fisher
    rows = []
    for m, r3, r5 in zip(f.reference_mags, f.reference_r2_3d, f.reference_r2_5d):
        hit = table[np.isclose(table["mag"], m)]
        rec = {"mag": m, "real_r2_3d": r3, "real_r2_5d": r5}
        if len(hit):
            h = hit.iloc[0]
            rec.update(mock_r2_3d=1 - h["sigma_3d"] ** 2 / f.reference_var_logg,
                       mock_r2_5d=1 - h["sigma_5d"] ** 2 / f.reference_var_logg,
                       mock_sigma_3d=h["sigma_3d"], real_sigma_3d=float(np.sqrt((1 - r3) * f.reference_var_logg)),
                       mock_snr_pixel=h["snr_pixel"])
        rows.append(rec)
    out = pd.DataFrame(rows)
    if "mock_r2_3d" in out:
        out["diff_3d"] = out["mock_r2_3d"] - out["real_r2_3d"]
        out["diff_5d"] = out["mock_r2_5d"] - out["real_r2_5d"]
    return out


def model_bin_r2(results_root: str | Path, config: str | None = None,
                 notebooks: Sequence[str] = ("q1", "q3"), noise_level: float | None = None) -> pd.DataFrame:
    """Per-SNR-bin R² of every model in the Q1/Q3 results JSON under ``results_root``.

    Reads each result's ``extra`` for tables of records with ``bin`` and ``r2`` fields (the shape
    of :func:`snrmoe_lib.metrics.per_bin_table`); ``model`` names the model within the notebook.
    Records with a ``noise_level`` other than ``noise_level`` (when given) are left out, and a
    model whose per-bin R² repeats one already read (Q3 re-reporting Q1's models) is kept once.
    Returns columns notebook, model ('q1:global', …), bin (the label's first word, e.g. 'X'), r2,
    n; empty when no such results exist yet.
    """
    from snrmoe_lib.evaluation.records import find_results

    rows = []
    root = Path(results_root)
    recs = find_results(root, config=config) if root.exists() else []
    for rec in recs:
        nb = rec["notebook"]
        if not any(nb.startswith(p) for p in notebooks):
            continue
        for key, val in (rec.get("extra") or {}).items():
            if not (isinstance(val, list) and val and all(isinstance(v, dict) and "bin" in v and "r2" in v for v in val)):
                continue
            for v in val:
                if v["r2"] is None:
                    continue
                if noise_level is not None and v.get("noise_level") is not None \
                        and not np.isclose(float(v["noise_level"]), noise_level):
                    continue
                rows.append({"notebook": nb, "table": key, "model": f"{nb.split('_')[0]}:{v.get('model', key)}",
                             "bin": str(v["bin"]).split()[0], "r2": float(v["r2"]), "n": v.get("n")})
    out = pd.DataFrame(rows, columns=["notebook", "table", "model", "bin", "r2", "n"])
    if out.empty:
        return out
    seen, keep = set(), []
    for model, g in out.groupby("model", sort=False):
        sig = tuple(zip(g["bin"], np.round(g["r2"], 12)))
        if sig not in seen:
            seen.add(sig)
            keep.append(model)
    return out[out["model"].isin(keep)].reset_index(drop=True)


def efficiency_table(models: pd.DataFrame, bins: pd.DataFrame, tag: str = "5d") -> pd.DataFrame:
    """Efficiency of each model per SNR bin against the bin's ceilings.

    ``efficiency`` = R²_model / Bayesian ceiling (a population bound that also binds shrinkage
    estimators); ``efficiency_median`` = R²_model / median per-star R²_max (the user's headline
    ceiling); ``efficiency_unbiased`` = R²_model / (1 − mean CRLB / Var). A ceiling ≤ 0 leaves the
    efficiency undefined (NaN).
    """
    cols = {f"bayes_{tag}": "bayes", f"median_r2_{tag}": "median_r2_max", f"ceiling_{tag}": "unbiased"}
    if models.empty:
        return models.assign(**{c: [] for c in (*cols.values(), "efficiency", "efficiency_median",
                                                "efficiency_unbiased")})
    b = bins.assign(bin=bins["bin"].astype(str).str.split().str[0])
    out = models.merge(b[["bin", *[c for c in cols if c in b]]].rename(columns=cols), on="bin", how="left")

    def ratio(den):
        return np.where(out[den] > 0, out["r2"] / out[den].where(out[den] > 0, 1.0), np.nan)

    out["efficiency"] = ratio("bayes")
    out["efficiency_median"] = ratio("median_r2_max")
    out["efficiency_unbiased"] = ratio("unbiased")
    return out


def fd_autograd_check(path: str | Path, params: "Params", model: "ForwardModel", var_logg: float,
                      n_stars: int | None = None) -> pd.DataFrame:
    """σ_CRLB of log g from grid finite differences and from autograd at the same grid stars.

    Interior stars (central differences on every axis) are preferred; only when the grid has none
    are the configured edges used. Columns ``sigma_fd_<tag>``, ``sigma_ad_<tag>`` and
    ``ratio_<tag>`` = FD / autograd for the 3-D and 5-D marginalisations.
    """
    from snrmoe_lib.data.io import open_dataset

    n = params.fisher.fd_check_stars if n_stars is None else n_stars
    with open_dataset(path) as ds:
        edges = "drop" if usable_rows(ds.params, edges="drop").size else params.fisher.edges
    fd, _ = grid_star_frame(path, params, var_logg, model=model, method="fd", n_stars=n, edges=edges)
    ad, _ = grid_star_frame(path, params, var_logg, model=model, method="autograd", n_stars=n, edges=edges)
    out = fd[[*PARAM_NAMES, "mag", "row", "central"]].copy()
    for tag in ("3d", "5d"):
        out[f"sigma_fd_{tag}"] = fd[f"sigma_{tag}"]
        out[f"sigma_ad_{tag}"] = ad[f"sigma_{tag}"]
        out[f"ratio_{tag}"] = fd[f"sigma_{tag}"] / ad[f"sigma_{tag}"]
    return out


def bin_star_frame(params: "Params", ds: "PfsDataset", grid_frame: pd.DataFrame, var_logg: float,
                   prior_var: np.ndarray | None = None, model: "ForwardModel | None" = None) -> tuple[pd.DataFrame, str]:
    """Stars for the per-SNR-bin ceiling, and a phrase naming where they come from.

    On a mock dataset (``data.mock`` set and ``model`` given): ``fisher.n_bin_stars`` stars drawn
    from the test split, with exact autograd Jacobians and the dataset's own σ, so each bin's
    ceiling refers to the label and SNR distribution the models are tested on. Otherwise (real
    data): the grid stars of every magnitude, pooled.
    """
    from snrmoe_lib.data.io import split_rows

    pooled = "grid stars of every magnitude, pooled"
    if params.data.mock is None or model is None:
        return grid_frame, pooled
    s = params.split
    test = split_rows(ds.n, s.n_train, s.n_val, s.n_test, s.seed).test
    diff = model_flux_mismatch(model, ds, test[:3])
    if diff > 1e-3:
        import warnings

        msg = (f"the dataset's flux differs from model {getattr(model, 'name', model)!r} by {diff:.2g} (relative): "
               "it was made by another forward model or version; regenerate it. Using the grid stars instead")
        warnings.warn(msg, stacklevel=2)
        return grid_frame, pooled + f" ({msg})"
    n = min(params.fisher.n_bin_stars, len(test))
    rows = np.sort(_rng("fisher.bin_stars", params.fisher.seed).choice(test, size=n, replace=False))
    return (dataset_star_frame(ds, rows, params, model, var_logg, prior_var),
            f"{n} test stars of the dataset (exact autograd Jacobians, the dataset's σ)")


def model_flux_mismatch(model: "ForwardModel", ds: "PfsDataset", rows: np.ndarray) -> float:
    """Largest relative difference between the stored flux of ``rows`` and ``model``'s flux there.

    About 1e-7 (float32 storage) when the dataset was made by this model; anything large means the
    exact Jacobians of ``model`` do not describe this dataset.
    """
    import torch

    chunk = ds.read(np.sort(np.asarray(rows)), dtype=np.float64)
    with torch.no_grad():
        f = model.normalized_flux(torch.as_tensor(_theta(chunk.params)), chunk.params).numpy()
    return float(np.max(np.abs(f - chunk.flux)) / np.max(np.abs(chunk.flux)))
