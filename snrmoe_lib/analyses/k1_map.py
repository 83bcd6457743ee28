"""K1 · the MAP template fit on frozen-test stars: per-bin RMSE, bias, R² and empirical / Laplace σ.

``fisher.map_stars`` stars of the frozen test (seeded, an equal share per SNR bin where the bin has
them) get the noise of the first noise seed (the realisation the models are scored on), then a MAP
fit of all five labels with the mock's forward model (:func:`snrmoe_lib.ceiling.template_fit.map_fit`)
from the ``fisher.map_starts`` best of ``fisher.map_candidates`` starting points (the prior mean and
draws from the sampling prior). Mock only: on real data there is no forward model.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.k1_bins import FrozenTest
from snrmoe_lib.ceiling.priors import prior_variances
from snrmoe_lib.ceiling.template_fit import LabelPrior, map_fit, neg_log_posterior
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.data.mock.base import PARAM_NAMES, PARAM_SPEC_FIELD, ForwardModel
from snrmoe_lib.data.noise import add_noise, effective_sigma
from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval

__all__ = ["label_prior", "map_positions", "starting_points", "run_map", "map_bin_table", "map_summary"]


def label_prior(params: Params) -> LabelPrior:
    """The fit's prior from ``data.mock``: Gaussian with the sampling prior's moments, or the beta itself."""
    spec = params.data.mock
    lo = np.array([getattr(spec, PARAM_SPEC_FIELD[n])[0] for n in PARAM_NAMES], float)
    hi = np.array([getattr(spec, PARAM_SPEC_FIELD[n])[1] for n in PARAM_NAMES], float)
    a, b = spec.beta_shape
    sd = np.sqrt(np.maximum(prior_variances(spec), 1e-12))
    return LabelPrior(params.fisher.map_prior, lo + (hi - lo) * a / (a + b), sd, lo, hi, float(a), float(b))


def map_positions(params: Params, ft: FrozenTest) -> np.ndarray:
    """Positions in the frozen test of the fit's stars: ``fisher.map_stars`` split evenly over the bins."""
    g = _rng("fisher.map_stars", params.fisher.seed)
    per = max(1, params.fisher.map_stars // len(ft.labels))
    pick = [g.choice(np.flatnonzero(ft.bins == k), size=min(per, int((ft.bins == k).sum())), replace=False)
            for k in range(len(ft.labels))]
    return np.sort(np.concatenate(pick)).astype(np.int64)


def starting_points(params: Params, model: ForwardModel, prior: LabelPrior, table: pd.DataFrame, y, w) -> np.ndarray:
    """(S, B, 5): per star the ``map_starts`` lowest-cost of ``map_candidates`` candidates (prior mean + draws)."""
    f = params.fisher
    B = len(table)
    g = _rng("fisher.map_starts", f.seed)
    a, b = prior.a, prior.b
    draws = prior.lo + (prior.hi - prior.lo) * g.beta(a, b, size=(f.map_candidates - 1, B, 5))
    cand = np.concatenate([np.broadcast_to(prior.mean, (1, B, 5)), draws])
    lo, hi = prior.box()
    cand = np.clip(cand, lo, hi)
    cost = np.stack([neg_log_posterior(model, c, table, y, w, prior) for c in cand])
    order = np.argsort(cost, axis=0)[:f.map_starts]
    return np.take_along_axis(cand, order[:, :, None], axis=0)


def run_map(params: Params, ds: PfsDataset, model: ForwardModel, ft: FrozenTest) -> tuple[pd.DataFrame, float]:
    """The fit on the chosen frozen-test stars; one row per star (truth, MAP, Laplace σ, bin, cost), seconds."""
    t0 = time.perf_counter()
    pos = map_positions(params, ft)
    rows = ft.rows[pos]
    ch = ds.read(rows, dtype=np.float64)
    sigma = effective_sigma(ch.error, params.noise.noise_level)
    y = add_noise(ch.flux, ch.error, params.noise.noise_level, ch.rows, params.seeds[0])
    w = np.where(ch.mask == 0, 1.0 / sigma ** 2, 0.0) if ch.mask is not None else 1.0 / sigma ** 2
    prior = label_prior(params)
    starts = starting_points(params, model, prior, ch.params, y, w)
    fit = map_fit(model, ch.params, y, sigma, ch.mask, prior, starts, n_iter=params.fisher.map_iterations)
    out = ch.params[list(PARAM_NAMES)].reset_index(drop=True).copy()
    out["row"] = ch.rows
    out["bin"] = ft.bins[pos]
    out["snr"] = ft.table[f"snr_{params.snr_bins.definition}"].to_numpy()[pos]
    for k, n in enumerate(PARAM_NAMES):
        out[f"{n}_map"] = fit.theta[:, k]
    out["logg_map"], out["sigma_laplace"] = fit.theta[:, 1], fit.sigma[:, 1]
    out["cost"], out["converged"] = fit.cost, fit.converged
    return out, time.perf_counter() - t0


def _stats(t: np.ndarray, p: np.ndarray, s: np.ndarray) -> dict:
    """RMSE, bias, R², empirical/Laplace σ ratio and the pulls' standard deviation (arrays over resamples)."""
    r = p - t
    var = t.var(axis=-1)
    mse = (r ** 2).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"rmse": np.sqrt(mse), "bias": r.mean(axis=-1), "r2": 1 - mse / var,
                "sigma_ratio": np.sqrt(mse / (s ** 2).mean(axis=-1)), "pull_std": (r / s).std(axis=-1)}


def map_bin_table(stars: pd.DataFrame, labels, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per bin: n, RMSE, bias, R² (the bin's stars' variance), empirical / Laplace σ ratio, pull std, intervals."""
    rows = []
    for k, lab in enumerate(labels):
        g = stars[stars["bin"] == k]
        rec = {"bin": lab, "n": len(g), "converged": float(g["converged"].mean()) if len(g) else np.nan}
        if len(g) < 3:
            rows.append(rec)
            continue
        t, p, s = (g[c].to_numpy(float) for c in ("log_g", "logg_map", "sigma_laplace"))
        point = _stats(t, p, s)
        idx = bootstrap_indices(len(g), n_boot, seed) if n_boot else None
        boot = _stats(t[idx], p[idx], s[idx]) if n_boot else None
        for name, v in point.items():
            lo, hi = percentile_interval(boot[name]) if boot is not None else (np.nan, np.nan)
            rec.update({name: float(v), f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(rec)
    return pd.DataFrame(rows)


def map_summary(params: Params, ds: PfsDataset, model: ForwardModel | None,
                ft: FrozenTest) -> tuple[dict | None, pd.DataFrame | None, float]:
    """The MAP template fit (:func:`run_map`) with its per-bin table, as recorded in the results.

    Prints how many stars were fitted and the wall time.

    Parameters
    ----------
    params, ds, model, ft
        As for :func:`run_map`; without a forward model (``None``, real data) nothing is fitted.

    Returns
    -------
    map_fit : dict or None
        ``map_bins`` (:func:`map_bin_table`) and ``map_stars`` (row, bin, true and MAP log g, Laplace σ).
    stars : pandas.DataFrame or None
        Every column of :func:`run_map`'s table.
    seconds : float
        Wall time of the fit (0 without a forward model).
    """
    if model is None:
        return None, None, 0.0
    stars, seconds = run_map(params, ds, model, ft)
    bins = map_bin_table(stars, ft.labels, params.runner.n_bootstrap, params.fisher.seed)
    print(f"{len(stars)} stars, {seconds:.1f} s")
    return {"map_bins": bins, "map_stars": stars[["row", "bin", "log_g", "logg_map", "sigma_laplace"]]}, stars, seconds
