"""Out-of-core Ridge regression from sufficient statistics.

A Ridge model ``y ≈ b + x·w`` minimising ``Σ wᵢ (yᵢ − b − xᵢ·w)² + α‖w‖²`` depends on the data only
through a few sums: ``Σw``, ``Σw x``, ``Σw y``, ``Σw xxᵀ``, ``Σw x y`` and ``Σw y²``. They are
accumulated chunk by chunk (float64, after subtracting a fixed per-feature shift taken from the first
chunk, so the centred Gram ``C = Σw (x − x̄)(x − x̄)ᵀ`` does not lose digits to cancellation). Memory
is O(D²) whatever the number of spectra N.

Grouped accumulation (:mod:`snrmoe_lib.models.ridge_stats`)
    :class:`GramStats` holds one set of sums per group. One pass over the data fills every group
    (for example every cell of SNR bin × physical bin); experts and the global model are then sums of
    groups (:meth:`GramStats.collapse`), never a second pass. Soft assignments (an ``(n, G)`` weight
    matrix) fill every group with its own sample weights.

α path
    :func:`solve_path` solves for many α from one eigendecomposition ``C = V Λ Vᵀ``:
    ``w(α) = V diag(1/(λ+α)) Vᵀ c``. The α is chosen on a validation split from that split's own
    sufficient statistics (:meth:`RidgePath.mse`), so validation is streamed too. The same solve
    (:func:`~snrmoe_lib.models.ridge_path.eigen_ridge_path`) serves :class:`AlphaPathRidge`, the
    in-memory, multi-target α path (:mod:`snrmoe_lib.models.ridge_path`).

Features
    :class:`~snrmoe_lib.features.flux.FluxFeatures` turns noisy flux into model inputs: the flux itself, optionally averaged
    over ``bin_pixels`` adjacent pixels (a fixed linear map; with 4096 pixels and ``bin_pixels=4``,
    D = 1024, about one resolution element per feature). Centring is the intercept's job.

Streaming over a dataset
    :func:`stream_stats` and :func:`stream_predict` read through :func:`snrmoe_lib.passes.split_pass`,
    which draws the noise on the fly (keyed by (seed, row), so results do not depend on the chunk
    size) and holds a few chunks of spectra at most.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.models.ridge_path import (AUTO_CHOLESKY_MAX, DEFAULT_ALPHAS, AlphaPathRidge, MethodChangeWarning,
                                          RidgePath, eigen_ridge_path, solve_path)
from snrmoe_lib.models.ridge_stats import GramStats

__all__ = [
    "GramStats",
    "RidgePath",
    "solve_path",
    "eigen_ridge_path",
    "AUTO_CHOLESKY_MAX",
    "DEFAULT_ALPHAS",
    "AlphaPathRidge",
    "MethodChangeWarning",
    "StreamingRidge",
    "stream_stats",
    "stream_predict",
]


# ============================================================================ the estimator


class StreamingRidge(RegressorMixin, BaseEstimator):
    """Ridge regression fitted from sufficient statistics (memory O(D²), any N).

    Equivalent to ``sklearn.linear_model.Ridge(alpha, fit_intercept)`` (same objective, same
    sample-weight convention), but the data may arrive in chunks (:meth:`partial_fit`), and with
    several ``alphas`` one eigendecomposition gives the whole path; α is then chosen on
    ``X_val, y_val`` if given, else by generalised cross-validation.

    Parameters
    ----------
    alpha : float or sequence of float
        One penalty, or candidates to choose from.
    fit_intercept : bool
    chunk_size : int
        Rows per Gram update in :meth:`fit` (bounds the float64 copy of X).
    solver : {'auto', 'eigh', 'cholesky'}
        See :func:`solve_path`.

    Attributes
    ----------
    coef_ : ndarray (D,)
    intercept_ : float
    alpha_ : float
        The α used (the chosen one when several were given).
    path_ : RidgePath
    stats_ : GramStats
    group_ : int
        The group of ``stats_`` that was solved: 0 after :meth:`fit`, ``g`` after :meth:`from_stats`.
        Fitted state like ``stats_``, so ``clone`` drops it with the statistics it indexes.
    n_features_in_ : int
    """

    def __init__(self, alpha=1.0, fit_intercept: bool = True, chunk_size: int = 4096, solver: str = "auto"):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.chunk_size = chunk_size
        self.solver = solver

    def _new_stats(self, n_features: int) -> GramStats:
        return GramStats(n_features, 1, center=self.fit_intercept)

    def _accumulate(self, X, y, sample_weight) -> None:
        if int(self.chunk_size) <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        for s in range(0, len(X), int(self.chunk_size)):
            sl = slice(s, s + int(self.chunk_size))
            self.stats_.update(X[sl], y[sl], sample_weight=None if sample_weight is None else sample_weight[sl])

    def _validate(self, X, y, sample_weight, reset: bool | None = None):
        """Check X (2-D, numeric, finite; dtype kept, accumulation is float64) and y (1-D, float64).

        ``reset=True`` (fit) records ``n_features_in_``; ``False`` checks against it; ``None``
        (validation data) checks nothing about the fitted state.
        """
        if reset is None:
            X = check_array(X, dtype="numeric", input_name="X")
        else:
            X = validate_data(self, X, dtype="numeric", reset=reset)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(column_or_1d(y, warn=True), dtype=np.float64)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != y.shape:
                raise ValueError(f"sample_weight must have shape {y.shape}, got {sample_weight.shape}")
        return X, y, sample_weight

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None) -> "StreamingRidge":
        """Fit on in-memory arrays (accumulated in chunks of ``chunk_size`` rows)."""
        X, y, sample_weight = self._validate(X, y, sample_weight, reset=True)
        self.stats_ = self._new_stats(X.shape[1])
        self.group_ = 0
        self._accumulate(X, y, sample_weight)
        return self._solve(X_val, y_val)

    def partial_fit(self, X, y, sample_weight=None) -> "StreamingRidge":
        """Add a chunk to the statistics and re-solve (the model is usable after every call)."""
        X, y, sample_weight = self._validate(X, y, sample_weight, reset=not hasattr(self, "stats_"))
        if not hasattr(self, "stats_"):
            self.stats_ = self._new_stats(X.shape[1])
            self.group_ = 0
        elif X.shape[1] != self.stats_.n_features:
            raise ValueError(f"X has {X.shape[1]} features, the model was started with {self.stats_.n_features}")
        self._accumulate(X, y, sample_weight)
        return self._solve()

    @classmethod
    def from_stats(cls, stats: GramStats, alpha=1.0, g: int = 0, val_stats: GramStats | None = None,
                   val_group: int | None = None, solver: str = "auto") -> "StreamingRidge":
        """A fitted estimator from already accumulated statistics (group ``g``)."""
        est = cls(alpha=alpha, fit_intercept=stats.center, solver=solver)
        est.stats_ = stats
        est.group_ = g
        return est._solve(val_stats=val_stats, val_group=g if val_group is None else val_group)

    def _solve(self, X_val=None, y_val=None, val_stats: GramStats | None = None, val_group: int = 0):
        g = self.group_
        path = solve_path(self.stats_, self.alpha, g=g, solver=self.solver)
        if len(path.alphas) == 1:
            i = 0
        elif X_val is not None:
            Xv, yv, _ = self._validate(X_val, y_val, None)
            vs = self._new_stats(Xv.shape[1])
            vs.update(Xv, yv)
            i = path.best(path.mse(vs))
        elif val_stats is not None and val_stats.count_[val_group] > 0:
            i = path.best(path.mse(val_stats, val_group))
        else:
            if np.any(np.isnan(path.dof)):
                path = solve_path(self.stats_, self.alpha, g=g, solver="eigh")
            i = path.best(path.gcv())
        self.path_ = path
        self.alpha_ = float(path.alphas[i])
        self.coef_ = path.coef[i].copy()
        self.intercept_ = float(path.intercept[i])
        self.n_features_in_ = self.stats_.n_features
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions ``b + X·w``."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype="numeric", reset=False)
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_


# ============================================================================ features and streaming


def stream_stats(ds, rows, *, noise_level: float, seed: int, features: FluxFeatures | None = None,
                 target: str = "log_g", n_groups: int = 1, groups: Callable | None = None,
                 sample_weight: Callable | None = None, collect: Callable | None = None,
                 chunk_size: int = 4096, center: bool = True) -> tuple[GramStats, pd.DataFrame]:
    """One streaming pass: grouped sufficient statistics of noisy-flux features over ``rows``.

    Parameters
    ----------
    ds : PfsDataset
    rows : array of int
        The rows to use (for example ``split.train``).
    noise_level, seed : float, int
        Noise drawn on the fly: ``flux + N(0,1)·error·noise_level`` keyed by (seed, row).
    features : FluxFeatures
        The feature map (default: every pixel).
    target : str
        The params-table column to regress.
    n_groups, groups : int, callable
        ``groups(chunk) -> int array (n,)``: hard group of each row (routing is computed from the
        noise-free chunk, for example the true SNR).
    sample_weight : callable, optional
        ``sample_weight(chunk) -> (n,)`` or ``(n, n_groups)`` (soft assignments).
    collect : callable, optional
        ``collect(chunk) -> dict`` of per-row columns to keep (small: no spectra).

    Returns
    -------
    stats : GramStats
    info : DataFrame
        One row per spectrum: ``row``, the target ``y``, ``group`` (when grouped) and collected
        columns. O(N) scalars, never N × pixels.
    """
    features = FluxFeatures() if features is None else features
    stats = GramStats(features.n_features(ds.n_pix), n_groups, center=center)
    parts = []
    if not len(rows):
        raise ValueError("no rows to accumulate (empty row set)")
    for _, nc in split_pass(ds, {"rows": rows}, noise_level=noise_level, seed=seed, features=features,
                            target=target, chunk_size=chunk_size):
        chunk, X, y = nc.chunk, nc.X, nc.y
        g = None if groups is None else np.asarray(groups(chunk))
        w = None if sample_weight is None else np.asarray(sample_weight(chunk))
        stats.update(X, y, groups=g, sample_weight=w)
        part = {"row": chunk.rows, "y": y}
        if g is not None:
            part["group"] = g
        if collect is not None:
            part.update(collect(chunk))
        parts.append(pd.DataFrame(part))
        del chunk, X, nc  # release before the next chunk arrives
    if not parts:
        raise ValueError("no rows to accumulate (empty row set, or every row dropped as bad)")
    return stats, pd.concat(parts, ignore_index=True)


def stream_predict(ds, rows, coef: np.ndarray, intercept: np.ndarray, *, noise_level: float, seed: int,
                   features: FluxFeatures | None = None, target: str | None = "log_g",
                   collect: Callable | None = None, chunk_size: int = 4096) -> tuple[np.ndarray, pd.DataFrame]:
    """Predictions of M linear models for every row, streamed: returns ``(pred (n, M), info)``.

    ``coef`` is (M, D) and ``intercept`` (M,). ``info`` holds ``row``, ``y`` (when ``target`` is
    given) and collected columns, in the order of the predictions (sorted rows).
    """
    features = FluxFeatures() if features is None else features
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    D = features.n_features(ds.n_pix)
    if coef.shape[1] != D or len(intercept) != len(coef):
        raise ValueError(f"coef {coef.shape} / intercept {intercept.shape} do not match {D} features")
    preds, parts = [], []
    if not len(rows):
        raise ValueError("no rows to predict")
    for _, nc in split_pass(ds, {"rows": rows}, noise_level=noise_level, seed=seed, features=features,
                            target=target, chunk_size=chunk_size):
        chunk = nc.chunk
        preds.append(np.asarray(nc.X, dtype=np.float64) @ coef.T + intercept)
        part = {"row": chunk.rows}
        if target is not None:
            part["y"] = nc.y
        if collect is not None:
            part.update(collect(chunk))
        parts.append(pd.DataFrame(part))
        del chunk, nc
    if not preds:
        raise ValueError("no rows to predict")
    return np.concatenate(preds), pd.concat(parts, ignore_index=True)
