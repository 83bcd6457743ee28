"""K1 · per-SNR-bin bounds on the frozen test set that hold for any estimator, with intervals.

The frozen test set is the configuration's test split (``split.n_test`` stars, ``split.seed``), the
one Q1–Q3 score on (:func:`frozen_test`). Per SNR bin (the configuration's ``snr_bins`` on the true
SNR at ``noise.noise_level``), up to ``fisher.n_bin_stars`` of its stars (seeded) get exact Jacobians
of the mock with the dataset's own σ (:func:`bin_fishers`); :func:`bin_bounds` then gives, per bin
and nuisance set, the minimum MSE and the matching R² (with the bin's own Var(log g) over all its
test stars, as the models' per-bin R²) of

* ``vantrees`` — Van Trees under the sampling prior (valid for *any* estimator),
* ``bayes`` — the Gaussian-prior bound (floor of linear shrinkage estimators),
* ``crlb_mean`` / ``crlb_median`` — the unbiased CRLB averaged over stars / its median star,

each with a bootstrap interval over stars; :func:`prior_snr_correlation` checks that the labels are
(nearly) independent of the SNR, which the per-bin Van Trees bound under the sampling prior assumes.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.overview import snr_table
from snrmoe_lib.ceiling.bayes import bayesian_crlb, van_trees_resampled, van_trees_sampling_prior
from snrmoe_lib.ceiling.crlb import fisher_matrix, marginal_crlb
from snrmoe_lib.ceiling.jacobians import jacobian_autograd
from snrmoe_lib.ceiling.priors import prior_variances
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, frozen_test_record, split_rows
from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel
from snrmoe_lib.data.noise import assign_bins, effective_sigma
from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval, resample_counts

__all__ = ["FrozenTest", "frozen_test", "BinStars", "bin_fishers", "prior_snr_correlation", "bin_bounds"]


@dataclass
class FrozenTest:
    """The frozen test set: rows, their params and true SNR (``table``), bin index per star, the record."""

    rows: np.ndarray
    table: pd.DataFrame
    bins: np.ndarray
    labels: list
    record: dict


def frozen_test(params: Params, ds: PfsDataset) -> FrozenTest:
    """The configuration's test split with its true SNR and SNR bins, and its ``{seed, n, fingerprint}`` record.

    The record is :func:`~snrmoe_lib.data.io.frozen_test_record` (sha256 of the dataset fingerprint and
    the test rows), the one every results file carries: two results with the same fingerprint were
    scored on the same stars of the same data.
    """
    s = params.split
    split = split_rows(ds.n, s.n_train, s.n_val, s.n_test, s.seed, n_dropped=ds.n_dropped)
    rows = split.test
    table = snr_table(ds, rows, params.noise.noise_level, chunk_size=params.data.chunk_size)
    b = params.snr_bins
    bins = assign_bins(table[f"snr_{b.definition}"].to_numpy(), b.edges)
    # the record every results file carries (and the per-star predictions are keyed by)
    return FrozenTest(rows, table, bins, list(b.labels), frozen_test_record(ds, split))


@dataclass
class BinStars:
    """Stars of the per-bin bounds: their frozen-test ``table`` rows, bin index, Fisher matrices, seconds."""

    table: pd.DataFrame
    bins: np.ndarray
    F: np.ndarray
    seconds: float


def _stratified(ft: FrozenTest, n_per_bin: int, seed: int) -> np.ndarray:
    """Positions in the frozen test of up to ``n_per_bin`` stars of every bin (seeded, sorted)."""
    g = _rng("fisher.bin_stars", seed)
    pick = []
    for k in range(len(ft.labels)):
        pos = np.flatnonzero(ft.bins == k)
        pick.append(g.choice(pos, size=min(n_per_bin, pos.size), replace=False) if pos.size else pos)
    return np.sort(np.concatenate(pick)).astype(np.int64)


def bin_fishers(params: Params, ds: PfsDataset, model: ForwardModel, ft: FrozenTest,
                batch_size: int = 128) -> BinStars:
    """Exact (autograd) Fisher matrices of up to ``fisher.n_bin_stars`` frozen-test stars per bin,
    with the dataset's σ = error · noise_level and mask, streamed in batches."""
    pos = _stratified(ft, params.fisher.n_bin_stars, params.fisher.seed)
    t0 = time.perf_counter()
    F = np.empty((len(pos), 5, 5))
    for s in range(0, len(pos), batch_size):
        p = pos[s:s + batch_size]
        ch = ds.read(ft.rows[p], dtype=np.float64)
        J = jacobian_autograd(model, ch.params)
        F[s:s + len(p)] = fisher_matrix(J, effective_sigma(ch.error, params.noise.noise_level), ch.mask)
    return BinStars(ft.table.iloc[pos].reset_index(drop=True), ft.bins[pos], F, time.perf_counter() - t0)


def prior_snr_correlation(ft: FrozenTest, snr_column: str) -> pd.DataFrame:
    """Spearman correlation of each label with the true SNR, and each bin's label mean in units of the
    label's standard deviation away from the whole test set's (0 = the bin sees the prior unchanged)."""
    t = ft.table
    rows = []
    for name in PARAM_NAMES:
        x = t[name].to_numpy(float)
        rec = {"label": name, "spearman_with_snr": float(pd.Series(x).corr(t[snr_column], method="spearman"))}
        sd = x.std() or 1.0
        for k, lab in enumerate(ft.labels):
            sel = ft.bins == k
            rec[f"shift_{lab}"] = float((x[sel].mean() - x.mean()) / sd) if sel.any() else np.nan
        rows.append(rec)
    return pd.DataFrame(rows)


def _bounds(F: np.ndarray, table: pd.DataFrame, params: Params, nuis: list, shape: float | None) -> dict:
    """MSE bounds of one set of stars (see the module docstring)."""
    crlb = marginal_crlb(F, "log_g", nuis, cond_max=params.fisher.cond_max)
    out = {"crlb_mean": float(np.nanmean(crlb)), "crlb_median": float(np.nanmedian(crlb))}
    mock = params.data.mock
    pv = prior_variances(mock if mock is not None else table)
    out["bayes"] = float(np.mean(bayesian_crlb(F, pv, "log_g", nuis)))
    if mock is not None:
        vt = van_trees_sampling_prior(F, table, mock, "log_g", nuis, drawn_from="prior",
                                      shapes=None if shape is None or not np.isfinite(shape) else [shape])
        out["vantrees"], out["vantrees_shape"] = vt["bound"], vt["shape"]
    return out


def _bound_draws(F: np.ndarray, table: pd.DataFrame, params: Params, nuis: list, shape: float | None,
                 idx: np.ndarray) -> list[dict]:
    """:func:`_bounds` on every resample ``idx`` (n_boot, n) of the stars. On the mock with a surrogate shape
    (the usual case) from per-star bounds computed once (the CRLB and Gaussian-prior bounds are per-star
    means, Van Trees a weighted mean of F: :func:`~snrmoe_lib.ceiling.bayes.van_trees_resampled`); else
    star set by star set."""
    mock = params.data.mock
    if mock is None or shape is None or not np.isfinite(shape):
        return [_bounds(F[i], table.iloc[i].reset_index(drop=True), params, nuis, shape) for i in idx]
    crlb = marginal_crlb(F, "log_g", nuis, cond_max=params.fisher.cond_max)[idx]
    bay = bayesian_crlb(F, prior_variances(mock), "log_g", nuis)[idx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of flagged stars only: NaN, as _bounds
        cm, cmed = np.nanmean(crlb, axis=1), np.nanmedian(crlb, axis=1)
    vt = van_trees_resampled(F, table, mock, resample_counts(idx), shape, "log_g", nuis)
    return [{"crlb_mean": float(a), "crlb_median": float(b), "bayes": float(c), "vantrees": float(d)}
            for a, b, c, d in zip(cm, cmed, bay.mean(axis=1), vt)]


def bin_bounds(bs: BinStars, ft: FrozenTest, params: Params, nuisance: dict, n_boot: int = 200,
               draws: dict | None = None) -> pd.DataFrame:
    """Per bin and nuisance set: the MSE bounds and R² = 1 − MSE / Var_bin with bootstrap intervals.

    ``Var_bin`` is Var(log g) over *all* frozen-test stars of the bin (the variance the models'
    per-bin R² use). The Van Trees surrogate prior's shape is chosen on the stars themselves and kept
    fixed in the bootstrap resamples. ``draws``, a dict, receives per (bin label, tag) the point bounds
    (``point``), their bootstrap draws (``draws``: name → (n_boot,)) and the bin's stars' rows
    (``rows``); the resamples are ``bootstrap_indices(len(rows), n_boot, fisher.seed)`` (the shared
    ``bootstrap.stars`` stream), so a model's errors on the same draws pair with them.
    """
    rows = []
    for k, lab in enumerate(ft.labels):
        sel = bs.bins == k
        var_bin = float(np.var(ft.table.loc[ft.bins == k, "log_g"])) if (ft.bins == k).sum() > 1 else np.nan
        for tag, nuis in nuisance.items():
            rec = {"bin": lab, "tag": tag, "n_stars": int(sel.sum()), "n_test": int((ft.bins == k).sum()),
                   "var_bin": var_bin}
            if sel.sum() < 2:
                rows.append(rec)
                continue
            F, tb = bs.F[sel], bs.table[sel].reset_index(drop=True)
            point = _bounds(F, tb, params, nuis, None)
            shape = point.pop("vantrees_shape", None)
            boots = _bound_draws(F, tb, params, nuis, shape,
                                 bootstrap_indices(len(F), n_boot, params.fisher.seed)) if n_boot else []
            if draws is not None:
                draws[(lab, tag)] = {"point": dict(point), "rows": tb["row"].to_numpy(), "n_boot": int(n_boot),
                                     "seed": int(params.fisher.seed),
                                     "draws": {n: np.array([b[n] for b in boots]) for n in point} if boots else {}}
            for name, v in point.items():
                iv = percentile_interval([b[name] for b in boots]) if boots else (np.nan, np.nan)
                rec.update({f"{name}_mse": v, f"{name}_mse_lo": iv[0], f"{name}_mse_hi": iv[1],
                            f"{name}_r2": 1 - v / var_bin, f"{name}_r2_lo": 1 - iv[1] / var_bin,
                            f"{name}_r2_hi": 1 - iv[0] / var_bin})
            rec["vantrees_shape"] = shape
            rows.append(rec)
    return pd.DataFrame(rows)
