"""Fisher matrices of many stars at many magnitudes, streamed, and their per-star ceilings.

The one computation of R²_max per magnitude: for each batch of stars the Jacobian(s) of the
forward model are formed once (the stored flux does not depend on the observing conditions), σ and
the mask come from the model's observation at each magnitude, ``F = Jᵀ diag(1/σ²) J`` is kept and
the Jacobian dropped (:func:`stream_fishers`). :func:`star_frame` turns the matrices into per-star
CRLB, σ_CRLB, R²_max, Schur decay and condition number for any nuisance sets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.ceiling.bayes import bayesian_crlb
from snrmoe_lib.ceiling.crlb import fisher_matrix, marginal_crlb, r2_max
from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel

__all__ = ["StarFishers", "stream_fishers", "star_frame"]


@dataclass
class StarFishers:
    """Fisher matrices of B stars: ``F[method][mag]`` (B, 5, 5), per-pixel median SNR ``snr[mag]`` (B,).

    ``seconds`` holds the wall time spent on each Jacobian method and on the observations.
    """

    stars: pd.DataFrame
    F: dict
    snr: dict
    seconds: dict = field(default_factory=dict)


def stream_fishers(model: ForwardModel, stars: pd.DataFrame, mags: Sequence[float],
                   jacobians: Mapping[str, Callable[[pd.DataFrame], np.ndarray]], noise_level: float = 1.0,
                   batch_size: int = 64, error_scale: float = 1.0) -> StarFishers:
    """Fisher matrices of ``stars`` at each of ``mags`` for each Jacobian method in ``jacobians``.

    Parameters
    ----------
    model
        The mock forward model: its :meth:`observe` gives σ (``error · noise_level``) and the mask.
    stars
        Params table (the :data:`PARAM_NAMES` columns and the observing conditions; ``mag`` is set
        per magnitude).
    jacobians
        Method name → function of a params table returning (b, P, 5) Jacobians, e.g.
        ``{"autograd": partial(jacobian_autograd, model)}``.
    batch_size
        Stars per block: memory is O(batch_size · P · 5) whatever the number of stars.
    error_scale
        σ multiplied by this factor (the user's ×0.5 / ×2 sensitivity check; F scales as 1/s²).
    """
    if len(stars) == 0:
        raise ValueError("no stars to compute Fisher matrices for")
    stars = stars.reset_index(drop=True)
    mags = [float(m) for m in mags]
    B = len(stars)
    F = {name: {m: np.empty((B, 5, 5)) for m in mags} for name in jacobians}
    snr = {m: np.empty(B) for m in mags}
    seconds = {name: 0.0 for name in jacobians} | {"observe": 0.0}
    for s in range(0, B, batch_size):
        tb = stars.iloc[s:s + batch_size].reset_index(drop=True)
        sl = slice(s, s + len(tb))
        J = {}
        for name, fn in jacobians.items():
            t0 = time.perf_counter()
            J[name] = fn(tb)
            seconds[name] += time.perf_counter() - t0
        for m in mags:
            t0 = time.perf_counter()
            obs = model.observe(tb.assign(mag=m), np.arange(len(tb)), 0, "clean")
            seconds["observe"] += time.perf_counter() - t0
            sigma = obs.error.astype(np.float64) * (noise_level * error_scale)
            snr[m][sl] = obs.columns["snr"] / (noise_level * error_scale)
            for name in jacobians:
                F[name][m][sl] = fisher_matrix(J[name], sigma, obs.mask)
    return StarFishers(stars, F, snr, seconds)


def star_frame(stars: pd.DataFrame, F: Mapping[float, np.ndarray], snr: Mapping[float, np.ndarray],
               var_logg: float, nuisance: Mapping[str, Sequence[str]], cond_max: float = 1e12,
               prior_var: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (star, magnitude): parameters, ``snr_pixel``, and per nuisance set ``tag``
    ``crlb_<tag>``, ``sigma_<tag>``, ``r2_<tag>`` (R²_max with ``var_logg``), ``schur_<tag>``,
    ``cond_<tag>`` and, with ``prior_var``, ``bcrlb_<tag>`` (the Gaussian-prior Bayesian bound).
    """
    parts = []
    base = stars.reset_index(drop=True)[list(PARAM_NAMES)]
    for m, Fm in F.items():
        out = base.assign(mag=float(m), star=np.arange(len(base)), snr_pixel=np.asarray(snr[m], float))
        for tag, nuis in nuisance.items():
            crlb, info = marginal_crlb(Fm, "log_g", list(nuis), cond_max=cond_max, return_info=True)
            out[f"crlb_{tag}"] = crlb
            out[f"sigma_{tag}"] = np.sqrt(crlb)
            out[f"r2_{tag}"] = r2_max(crlb, var_logg)
            out[f"schur_{tag}"] = info.schur_decay
            out[f"cond_{tag}"] = info.cond
            if prior_var is not None:
                out[f"bcrlb_{tag}"] = bayesian_crlb(Fm, prior_var, "log_g", list(nuis))
        parts.append(out)
    return pd.concat(parts, ignore_index=True)
