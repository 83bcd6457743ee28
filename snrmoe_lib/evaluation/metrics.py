"""Regression metrics, per-bin tables, bootstrap intervals, ΔR² and the retention ratio ρ.

Intervals behind verdicts: percentile intervals (:func:`percentile_interval`) over resampled test
stars — ``runner.n_bootstrap`` draws, ≥ 1,000 in the default configuration — and, for scores
averaged over the run's seeds, over resampled seeds as well (:func:`seed_resample_mean`), so that
an interval carries the variability of training and not only of the test sample.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from snrmoe_lib._util.rng import rng as _rng

__all__ = ["r2", "mae", "rmse", "percentile_interval", "bootstrap_interval", "per_bin_table",
           "delta_r2", "rho", "bootstrap_indices", "seed_resample_mean", "resample_counts", "r2_counts",
           "r2_resampled", "seed_r2",
           "seed_delta_r2", "per_bin_seed_table"]


def _check(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size == 0:
        raise ValueError("no samples to score")
    if not (np.all(np.isfinite(y_true)) and np.all(np.isfinite(y_pred))):
        raise ValueError("NaN or infinite values in the labels or predictions")
    return y_true, y_pred


def r2(y_true, y_pred) -> float:
    """Coefficient of determination 1 − SS_res/SS_tot (NaN when the labels are constant)."""
    y_true, y_pred = _check(y_true, y_pred)
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / ss_tot)


def mae(y_true, y_pred) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(np.abs(y_true - y_pred)))


def rmse(y_true, y_pred) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def percentile_interval(draws, level: float = 0.95) -> tuple[float, float]:
    """The one interval helper: the central ``level`` percentile interval of bootstrap ``draws``.

    Non-finite draws (a resample whose labels are constant) are dropped; with none left the interval
    is (NaN, NaN). ``scipy.stats.bootstrap`` is not used: the project resamples *stars* once and
    reuses the same indices for every seed and model (paired differences, seed means), which needs the
    draws themselves, and its BCa default would change every published interval.
    """
    vals = np.asarray(draws, dtype=np.float64).ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))


def bootstrap_interval(y_true, y_pred, stat: Callable = r2, n_boot: int = 200, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(y_true, y_pred)`` over resampled test spectra."""
    y_true, y_pred = _check(y_true, y_pred)
    idx = bootstrap_indices(len(y_true), n_boot, seed)
    if stat is r2:  # vectorised: 1,000 draws cost one pass over (n_boot, n) arrays
        return percentile_interval(r2_resampled(y_true, y_pred, idx), level)
    return percentile_interval(np.array([stat(y_true[i], y_pred[i]) for i in idx]), level)


def delta_r2(y_true, pred_model, pred_baseline) -> float:
    """R²(model) − R²(baseline) on the same spectra."""
    return r2(y_true, pred_model) - r2(y_true, pred_baseline)


def rho(r2_deploy: float, r2_global: float, r2_oracle: float, min_gap: float = 0.0) -> float:
    """Retention ρ = (R²_deploy − R²_global) / (R²_oracle − R²_global).

    Returns NaN (undefined) when the oracle gap is not above ``min_gap`` (for example the noise of
    the R² estimates): a ratio of two numbers within noise of zero carries no information.
    """
    gap = r2_oracle - r2_global
    if not np.isfinite(gap) or gap <= max(min_gap, 0.0):
        return float("nan")
    return float((r2_deploy - r2_global) / gap)


def per_bin_table(y_true, predictions: dict[str, np.ndarray], bins: np.ndarray, labels: Sequence[str],
                  n_boot: int = 0, seed: int = 0) -> pd.DataFrame:
    """R² (with optional bootstrap interval), MAE, RMSE and count per bin for each model.

    Bins with fewer than 2 spectra get NaN scores and keep their count (never silently dropped).
    """
    bins = np.asarray(bins)
    rows = []
    for name, pred in predictions.items():
        for k, lab in enumerate(labels):
            sel = bins == k
            n = int(sel.sum())
            rec = {"model": name, "bin": lab, "n": n, "r2": np.nan, "r2_lo": np.nan, "r2_hi": np.nan,
                   "mae": np.nan, "rmse": np.nan}
            if n >= 2:
                yt, yp = np.asarray(y_true)[sel], np.asarray(pred)[sel]
                rec.update(r2=r2(yt, yp), mae=mae(yt, yp), rmse=rmse(yt, yp))
                if n_boot:
                    rec["r2_lo"], rec["r2_hi"] = bootstrap_interval(yt, yp, n_boot=n_boot, seed=seed)
            rows.append(rec)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ several noise seeds, one test set
#
# With a fixed split the test spectra are the same stars under every noise seed; only the noise
# differs. A seed-averaged score therefore gets its interval by resampling *stars* (the same
# resampled indices for every seed and for both models of a difference), which keeps the pairing.


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement, from a seeded generator."""
    if n <= 0 or n_boot <= 0:
        raise ValueError(f"need n > 0 and n_boot > 0, got n={n}, n_boot={n_boot}")
    return _rng("bootstrap.stars", seed).integers(0, n, size=(n_boot, n))


def resample_counts(idx: np.ndarray) -> np.ndarray:
    """How often each row appears in each resample: (n_boot, n) float64 counts from ``idx`` (n_boot, n)."""
    n_boot, n = idx.shape
    flat = (idx + (np.arange(n_boot) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def r2_counts(y_true, y_pred, W: np.ndarray) -> np.ndarray:
    """R² on each resample given by its row counts ``W`` (:func:`resample_counts`): three
    matrix–vector products instead of gathering (n_boot, n) copies (NaN where the labels are constant)."""
    y_true, y_pred = _check(y_true, y_pred)
    n = W.sum(axis=1)
    mean = W @ y_true / n
    ss_tot = W @ (y_true * y_true) - n * mean * mean
    ss_res = W @ ((y_true - y_pred) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12 * np.maximum(n * mean * mean, 1.0), 1.0 - ss_res / ss_tot, np.nan)


def r2_resampled(y_true, y_pred, idx: np.ndarray) -> np.ndarray:
    """R² on each resample ``idx[b]`` (vectorised; NaN where the resampled labels are constant)."""
    return r2_counts(y_true, y_pred, resample_counts(np.asarray(idx)))


def _as_seeds(preds, n: int, name: str) -> np.ndarray:
    P = np.atleast_2d(np.asarray(preds, dtype=np.float64))
    if P.shape[1] != n:
        raise ValueError(f"{name} must be (n_seeds, {n}), got {P.shape}")
    return P


def seed_resample_mean(per_seed_boot: np.ndarray, seed: int = 0, resample_seeds: bool = True) -> np.ndarray:
    """Bootstrap draws of a seed mean from ``per_seed_boot`` (n_seeds, n_boot): the statistic of each
    seed on the same resampled stars.

    With ``resample_seeds`` (the default) the seeds are resampled too, with replacement, once per
    draw (a two-level bootstrap: stars × training realisations), so that the interval carries the
    seed-to-seed variation of the trained models and not only the test stars'. Each seed trains on
    its own noise realisation of the training rows (and, where an analysis varies it, its own
    training subset); with a single seed this is the plain star bootstrap.
    """
    B = np.asarray(per_seed_boot, dtype=np.float64)
    n_seeds, n_boot = B.shape
    if not resample_seeds or n_seeds == 1:
        return B.mean(axis=0)
    pick = _rng("bootstrap.seeds", seed).integers(0, n_seeds, size=(n_boot, n_seeds))
    return B[pick, np.arange(n_boot)[:, None]].mean(axis=1)


def seed_r2(y_true, preds, n_boot: int = 200, level: float = 0.95, seed: int = 0,
            resample_seeds: bool = True, counts: np.ndarray | None = None) -> dict:
    """Seed-mean R² of ``preds`` (n_seeds, n) with a bootstrap interval (stars, and seeds: see
    :func:`seed_resample_mean`) and the per-seed values. ``counts``: the resamples' row counts
    (:func:`resample_counts` of ``bootstrap_indices(n, n_boot, seed)``) when the caller already has them."""
    y_true = np.asarray(y_true, dtype=np.float64)
    P = _as_seeds(preds, len(y_true), "preds")
    per_seed = np.array([r2(y_true, p) for p in P])
    out = {"value": float(np.mean(per_seed)), "per_seed": per_seed.tolist(), "interval": None}
    if n_boot:
        W = resample_counts(bootstrap_indices(len(y_true), n_boot, seed)) if counts is None else counts
        boot = seed_resample_mean(np.array([r2_counts(y_true, p, W) for p in P]), seed, resample_seeds)
        out["interval"] = list(percentile_interval(boot, level))
    return out


def seed_delta_r2(y_true, preds_model, preds_baseline, n_boot: int = 200, level: float = 0.95,
                  seed: int = 0, resample_seeds: bool = True, counts: np.ndarray | None = None) -> dict:
    """Seed-mean ΔR² = R²(model) − R²(baseline), paired bootstrap interval (the same stars and seeds
    for both models: see :func:`seed_resample_mean`), per-seed values."""
    y_true = np.asarray(y_true, dtype=np.float64)
    A = _as_seeds(preds_model, len(y_true), "preds_model")
    B = _as_seeds(preds_baseline, len(y_true), "preds_baseline")
    if A.shape != B.shape:
        raise ValueError(f"model {A.shape} and baseline {B.shape} predictions differ in shape")
    per_seed = np.array([delta_r2(y_true, a, b) for a, b in zip(A, B)])
    out = {"value": float(np.mean(per_seed)), "per_seed": per_seed.tolist(), "interval": None}
    if n_boot:
        W = resample_counts(bootstrap_indices(len(y_true), n_boot, seed)) if counts is None else counts
        D = np.array([r2_counts(y_true, a, W) - r2_counts(y_true, b, W) for a, b in zip(A, B)])
        out["interval"] = list(percentile_interval(seed_resample_mean(D, seed, resample_seeds), level))
    return out


def per_bin_seed_table(y_true, predictions: dict, bins, labels: Sequence[str], baseline: str | None = None,
                       n_boot: int = 200, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per-bin seed-mean R² (with interval and seed spread) of each model, and ΔR² against ``baseline``.

    ``predictions`` maps a model name to (n_seeds, n) predictions. Every bin keeps its row and
    count; bins with fewer than 2 spectra get NaN scores.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    bins = np.asarray(bins)
    if bins.shape != y_true.shape:
        raise ValueError(f"bins {bins.shape} and y_true {y_true.shape} differ in shape")
    rows = []
    W = {}  # each bin's resample counts, drawn once for every model (the same draws as drawing them each time)
    for name, P in predictions.items():
        P = _as_seeds(P, len(y_true), name)
        for k, lab in enumerate(labels):
            sel = bins == k
            n = int(sel.sum())
            if n >= 2 and n_boot and k not in W:
                W[k] = resample_counts(bootstrap_indices(n, n_boot, seed))
            rec = {"model": name, "bin": lab, "n": n, "r2": np.nan, "r2_lo": np.nan, "r2_hi": np.nan,
                   "r2_seed_std": np.nan, "rmse": np.nan, "delta_r2": np.nan, "delta_lo": np.nan,
                   "delta_hi": np.nan}
            if n >= 2:
                s = seed_r2(y_true[sel], P[:, sel], n_boot=n_boot, level=level, seed=seed, counts=W.get(k))
                rec.update(r2=s["value"], r2_seed_std=float(np.std(s["per_seed"], ddof=1)) if len(P) > 1 else 0.0,
                           rmse=float(np.mean([rmse(y_true[sel], p) for p in P[:, sel]])))
                if s["interval"]:
                    rec["r2_lo"], rec["r2_hi"] = s["interval"]
                if baseline is not None and name != baseline:
                    Bp = _as_seeds(predictions[baseline], len(y_true), baseline)
                    d = seed_delta_r2(y_true[sel], P[:, sel], Bp[:, sel], n_boot=n_boot, level=level, seed=seed,
                                      counts=W.get(k))
                    rec["delta_r2"] = d["value"]
                    if d["interval"]:
                        rec["delta_lo"], rec["delta_hi"] = d["interval"]
            rows.append(rec)
    return pd.DataFrame(rows)
