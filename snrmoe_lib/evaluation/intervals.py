"""Calibrated prediction intervals from plain arrays: split-conformal, per SNR bin (Mondrian) and global.

Any point predictor gets intervals the same way (Ridge, boosted trees, a mixture, a network's mean):
the absolute residuals of the *validation* rows (never the test rows) set the interval half-widths,
per bin of a routing variable (Mondrian conformal: coverage holds within each bin, not only on
average) or over all rows. With a per-star ``scale`` (a predicted σ) the scores are normalised,
|y − ŷ| / σ, and the intervals scale with it.

Split-conformal guarantee: for exchangeable calibration and test rows, the interval ŷ ± q with q the
⌈(n + 1)·level⌉-th smallest of the n calibration scores covers at least ``level`` of the test rows
(and at most level + 1/(n + 1)). Where a bin has too few calibration rows for a finite quantile the
bin falls back to the global quantile (recorded in :attr:`Calibration.fallback`; ``inf`` when even
all rows are too few). The quantile itself is :func:`snrmoe_lib.models.conformal.conformal_quantile`,
the one the deployed model's :class:`~snrmoe_lib.models.deployed.SplitConformalPerBin` uses too
(there a too-small bin pools every validation residual instead, so every star gets a finite interval).

Also here: coverage per bin with star-bootstrap intervals (:func:`coverage_table`), PIT values of
the test residuals under the calibration residuals (:func:`pit_values`, uniform when calibrated),
the predicted σ (half-width of the 68 % interval) and its comparison with a per-star bound σ such as
the CRLB (:func:`sigma_vs_bound`). Intervals on coverage come from the project's one interval helper,
:func:`snrmoe_lib.evaluation.metrics.percentile_interval`, over :func:`bootstrap_indices` draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval
from snrmoe_lib.models.conformal import as_vector, check_level, conformal_quantile, per_bin_quantile

__all__ = ["Calibration", "conformal_quantile", "calibrate", "interval", "coverage", "coverage_table",
           "pit_values", "pit_histogram", "predicted_sigma", "sigma_vs_bound", "LEVELS"]

#: The nominal levels reported by default: ±1σ and ±2σ of a Gaussian.
LEVELS = (0.68, 0.95)


def _bins(bins, n: int, n_bins: int) -> np.ndarray:
    b = np.asarray(bins)
    if b.shape != (n,) or not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"bins must be integer bin numbers of shape ({n},), got {b.dtype} {b.shape}")
    if n and (b.min() < 0 or b.max() >= n_bins):
        raise ValueError(f"bins must lie in [0, {n_bins}), got [{b.min()}, {b.max()}]")
    return b


def _scores(y, pred, scale, n) -> np.ndarray:
    r = as_vector(y, "y", n) - as_vector(pred, "pred", n)
    if scale is None:
        return r
    s = as_vector(scale, "scale", n)
    if np.any(s <= 0):
        raise ValueError("scale (a predicted σ) must be positive")
    return r / s


@dataclass
class Calibration:
    """Split-conformal half-widths per level, global and per bin, from validation residuals.

    ``residuals`` keeps the signed (normalised) calibration residuals per bin, sorted, for PIT values;
    ``fallback`` lists the bins whose own quantile was not finite (they use the global one).
    """

    levels: tuple[float, ...]
    labels: list[str]
    q_global: dict[float, float]
    q_bin: dict[float, np.ndarray]
    n_bin: np.ndarray
    residuals_global: np.ndarray
    residuals: list[np.ndarray]
    normalised: bool
    fallback: dict[float, list[str]] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        return len(self.labels)

    def half_width(self, level: float, bins=None, mondrian: bool = True) -> np.ndarray | float:
        """The half-width at ``level`` (times the row's scale when normalised): per row of ``bins`` or global."""
        level = self._known(level)
        if not mondrian or bins is None:
            return self.q_global[level]
        return self.q_bin[level][_bins(bins, len(np.asarray(bins)), self.n_bins)]

    def _known(self, level: float) -> float:
        for lv in self.levels:
            if abs(lv - float(level)) < 1e-12:
                return lv
        raise ValueError(f"level {level} was not calibrated (calibrated: {list(self.levels)})")


def calibrate(y_val, pred_val, bins_val=None, labels: Sequence[str] | None = None,
              levels: Sequence[float] = LEVELS, scale_val=None) -> Calibration:
    """Calibrate split-conformal intervals on validation rows.

    Parameters
    ----------
    y_val, pred_val : arrays (n,)
        Validation labels and the model's predictions of them.
    bins_val : int array (n,), optional
        Each row's SNR bin (0 … len(labels) − 1); without it only the global quantile exists.
    labels : bin labels (required with ``bins_val``)
    levels : nominal coverage levels
    scale_val : array (n,), optional
        A per-star predicted σ: scores are |y − ŷ| / σ (normalised conformal).
    """
    n = len(np.asarray(y_val))
    if n < 2:
        raise ValueError(f"conformal calibration needs validation rows, got {n}")
    r = _scores(y_val, pred_val, scale_val, n)
    levels = tuple(check_level(lv) for lv in levels)
    if not levels:
        raise ValueError("give at least one coverage level")
    labels = list(labels) if labels is not None else ["all"]
    b = np.zeros(n, dtype=np.int64) if bins_val is None else _bins(bins_val, n, len(labels))
    parts = [np.sort(r[b == k]) for k in range(len(labels))]
    q_global = {lv: conformal_quantile(r, lv) for lv in levels}
    q_bin, fallback = {}, {}
    for lv in levels:
        q = per_bin_quantile(r, b, len(labels), lv)
        bad = ~np.isfinite(q)
        fallback[lv] = [labels[k] for k in np.flatnonzero(bad)]
        q_bin[lv] = np.where(bad, q_global[lv], q)
    return Calibration(levels, labels, q_global, q_bin, np.array([len(p) for p in parts]), np.sort(r), parts,
                       scale_val is not None, fallback)


def interval(cal: Calibration, pred, level: float, bins=None, scale=None, mondrian: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """The (lo, hi) interval of every prediction at ``level`` (per bin with ``mondrian`` and ``bins``)."""
    p = as_vector(pred, "pred")
    if cal.normalised and scale is None:
        raise ValueError("the calibration is normalised by a predicted σ: pass scale=")
    h = np.broadcast_to(np.asarray(cal.half_width(level, bins, mondrian), dtype=np.float64), p.shape)
    if scale is not None:
        h = h * as_vector(scale, "scale", len(p))
    return p - h, p + h


def coverage(y, lo, hi) -> np.ndarray:
    """Whether each label lies inside its interval (bool per star)."""
    y = as_vector(y, "y")
    return (y >= np.asarray(lo)) & (y <= np.asarray(hi))


def _cov_row(inside: np.ndarray, width: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    n = len(inside)
    rec = {"n": n, "coverage": np.nan, "lo": np.nan, "hi": np.nan, "width": np.nan}
    if n:
        rec.update(coverage=float(inside.mean()), width=float(np.mean(width)))
        if n_boot:
            draws = inside[bootstrap_indices(n, n_boot, seed)].mean(axis=1)
            rec["lo"], rec["hi"] = percentile_interval(draws, level)
    return rec


def coverage_table(cal: Calibration, y, pred, bins, scale=None, mondrian: bool = True, n_boot: int = 200,
                   seed: int = 0, ci_level: float = 0.95) -> pd.DataFrame:
    """Empirical coverage per nominal level and bin (and 'all') on test rows, with bootstrap intervals.

    Columns: level, bin, n, coverage, lo, hi (star-bootstrap ``ci_level`` interval), width (mean
    interval width, in the label's units).
    """
    y = as_vector(y, "y")
    b = _bins(bins, len(y), cal.n_bins)
    rows = []
    for lv in cal.levels:
        lo, hi = interval(cal, pred, lv, b, scale, mondrian)
        inside = coverage(y, lo, hi)
        for k, lab in enumerate([*cal.labels, "all"]):
            sel = b == k if k < cal.n_bins else np.ones(len(y), bool)
            rows.append({"level": lv, "bin": lab, **_cov_row(inside[sel], (hi - lo)[sel], n_boot, seed, ci_level)})
    return pd.DataFrame(rows)


def pit_values(cal: Calibration, y, pred, bins=None, scale=None, mondrian: bool = True) -> np.ndarray:
    """PIT of each test residual under the calibration residuals of its bin (or all of them).

    PIT = (#{calibration residuals ≤ r} + ½) / (n + 1): uniform on (0, 1) when test and calibration
    residuals are exchangeable; a U shape means intervals too narrow, a hump too wide, a slope a bias.
    """
    r = _scores(y, pred, scale, len(np.asarray(y)))
    if cal.normalised and scale is None:
        raise ValueError("the calibration is normalised by a predicted σ: pass scale=")
    out = np.empty(len(r))
    if not mondrian or bins is None:
        ref = cal.residuals_global
        return (np.searchsorted(ref, r, side="right") + 0.5) / (len(ref) + 1)
    b = _bins(bins, len(r), cal.n_bins)
    for k in range(cal.n_bins):
        sel = b == k
        ref = cal.residuals[k] if len(cal.residuals[k]) else cal.residuals_global
        out[sel] = (np.searchsorted(ref, r[sel], side="right") + 0.5) / (len(ref) + 1)
    return out


def pit_histogram(pit, n_bins: int = 10) -> dict:
    """Histogram data of PIT values: counts, edges, the uniform expectation and the largest
    relative deviation from it."""
    p = as_vector(pit, "pit")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    counts, edges = np.histogram(p, bins=n_bins, range=(0.0, 1.0))
    expect = len(p) / n_bins
    dev = float(np.max(np.abs(counts - expect)) / expect) if len(p) else float("nan")
    return {"counts": counts.tolist(), "edges": edges.tolist(), "expected": float(expect), "max_rel_deviation": dev}


def predicted_sigma(cal: Calibration, n: int, bins=None, scale=None, mondrian: bool = True) -> np.ndarray:
    """Each star's predicted σ: the half-width of its 68 % interval (level 0.68 must be calibrated)."""
    h = np.broadcast_to(np.asarray(cal.half_width(0.68, bins, mondrian), dtype=np.float64), (n,))
    return h * (1.0 if scale is None else as_vector(scale, "scale", n))


def sigma_vs_bound(sigma_pred, sigma_bound, bins, labels: Sequence[str]) -> pd.DataFrame:
    """Predicted σ against a per-star bound σ (CRLB or Van Trees) per bin: medians, their ratio, and the
    fraction of stars whose predicted σ is below the bound (possible only for a biased estimator)."""
    sp = as_vector(sigma_pred, "sigma_pred")
    sb = as_vector(sigma_bound, "sigma_bound", len(sp))
    if np.any(sb <= 0):
        raise ValueError("sigma_bound must be positive")
    b = _bins(bins, len(sp), len(labels))
    rows = []
    for k, lab in enumerate(labels):
        sel = b == k
        ratio = sp[sel] / sb[sel]
        rows.append({"bin": lab, "n": int(sel.sum()),
                     "sigma_pred_median": float(np.median(sp[sel])) if sel.any() else np.nan,
                     "sigma_bound_median": float(np.median(sb[sel])) if sel.any() else np.nan,
                     "ratio_median": float(np.median(ratio)) if sel.any() else np.nan,
                     "below_bound": float(np.mean(ratio < 1)) if sel.any() else np.nan})
    return pd.DataFrame(rows)
