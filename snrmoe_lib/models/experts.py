"""Binned experts: one model per bin of a routing variable, with oracle routing.

Routing (which bin a spectrum belongs to, which expert serves a bin after small-bin merges) lives in
:mod:`snrmoe_lib.models.routing`.

Two ways to fit
    * :class:`BinnedExperts` — in memory, any scikit-learn-style regressor (``fit(X, y,
      sample_weight)`` / ``predict``) as the expert type, hard bins (from its ``router``, or given)
      or soft responsibilities.
    * :func:`fit_oracle_stream` — the out-of-core path for Ridge experts (it lives in
      :mod:`snrmoe_lib.models.oracle_stream` and is re-exported here): one sequential pass over
      train, validation and test rows fills a Gram per cell of (every router's bins crossed); each
      family's experts and the global model are sums of cells (:meth:`GramStats.collapse`).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from snrmoe_lib.models.oracle_stream import (CurvePoint, ExpertFamily, LinearModels, OracleRun, OracleSettings,
                                             fit_oracle_stream)
from snrmoe_lib.models.ridge import StreamingRidge
from snrmoe_lib.models.routing import BinPlan, SmallBinError, plan_bins

__all__ = [
    "BinnedExperts",
    "LinearModels",
    "ExpertFamily",
    "OracleRun",
    "OracleSettings",
    "CurvePoint",
    "fit_oracle_stream",
]


# ============================================================================ in-memory, pluggable


class BinnedExperts(RegressorMixin, BaseEstimator):
    """One regressor per bin plus a global one; predictions by oracle routing or by mixing.

    Parameters
    ----------
    estimator : regressor, optional
        The expert type: anything with ``fit(X, y, sample_weight=...)`` and ``predict(X)``
        (cloned per expert). Default :class:`~snrmoe_lib.models.ridge.StreamingRidge` (α = 1).
    router : router, optional
        Maps the input to bin numbers (``router.route(X)``, ``router.n_bins``, ``router.labels``,
        ``router.neighbours()``; see :mod:`snrmoe_lib.models.routing`). With a router, ``fit(X, y)``
        and ``predict(X)`` need nothing else, so the experts work in a ``Pipeline`` and in
        ``cross_val_score``. Without one, bins are passed explicitly (``bins=``).
    n_bins : int
        Number of original bins when there is no router (routing values in ``[0, n_bins)``).
    labels : list of str, optional
        Default: the router's labels.
    min_count : int
    on_small_bin : {'raise', 'merge'}
    neighbours : list of sets, optional
        Bin adjacency for merging (default: the router's, else a chain).
    fit_global : bool
        Also fit one model on all rows (the baseline and the fallback).

    Attributes
    ----------
    experts_ : list of fitted regressors
    global_ : fitted regressor or None
    plan_ : BinPlan (hard bins) or None (soft responsibilities)
    n_features_in_ : int
    """

    def __init__(self, estimator=None, router=None, n_bins: int = 4, labels=None, min_count: int = 20,
                 on_small_bin: str = "merge", neighbours=None, fit_global: bool = True):
        self.estimator = estimator
        self.router = router
        self.n_bins = n_bins
        self.labels = labels
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.neighbours = neighbours
        self.fit_global = fit_global

    def _base(self):
        return StreamingRidge(alpha=1.0) if self.estimator is None else self.estimator

    def _n_bins(self) -> int:
        return int(self.router.n_bins) if self.router is not None else int(self.n_bins)

    def _plan(self, bins: np.ndarray) -> BinPlan:
        r = self.router
        labels = self.labels if self.labels is not None or r is None else r.labels
        neighbours = self.neighbours if self.neighbours is not None or r is None else r.neighbours()
        return plan_bins(np.bincount(bins, minlength=self._n_bins()), self.min_count, self.on_small_bin,
                         neighbours, labels)

    def _route(self, X, bins) -> np.ndarray | None:
        if bins is not None:
            return np.asarray(bins)
        return None if self.router is None else np.asarray(self.router.route(X))

    @staticmethod
    def _fit_one(est, X, y, w, val=None):
        kw = {} if w is None else {"sample_weight": w}
        if val is not None and len(val[1]) >= 2:  # an expert with (almost) no validation rows fits without
            kw |= {"X_val": val[0], "y_val": val[1]}
            if val[2] is not None:
                kw["sample_weight_val"] = val[2]
        return est.fit(X, y, **kw)

    def _validation(self, validation, hard: bool):
        """``validation`` = (X_val, y_val, bins_val or responsibilities_val) checked; None passes through."""
        if validation is None:
            return None
        if len(validation) != 3:
            raise ValueError("validation must be (X_val, y_val, bins_val) — responsibilities_val for soft fits")
        Xv, yv, rv = validation
        Xv = validate_data(self, Xv, reset=False)
        yv = np.asarray(yv, dtype=np.float64)
        rv = np.asarray(rv) if hard else np.asarray(rv, dtype=np.float64)
        if len(yv) != len(Xv) or len(rv) != len(Xv):
            raise ValueError(f"validation rows disagree: X_val {len(Xv)}, y_val {len(yv)}, bins/responsibilities {len(rv)}")
        return Xv, yv, rv

    def fit(self, X, y, bins=None, sample_weight=None, responsibilities=None, validation=None) -> "BinnedExperts":
        """Fit the experts on hard bins (the router's, or ``bins`` (n,)) or soft ``responsibilities``
        (n, n_bins).

        With responsibilities, expert k is fitted on every row with weight
        ``responsibilities[:, k] · sample_weight``; an expert whose summed weight is below
        ``min_count`` is an error (merging has no meaning for soft assignments).

        ``validation``, optional: ``(X_val, y_val, bins_val)`` (hard fits; ``responsibilities_val``
        for soft ones). Each expert then gets the validation rows of its own bin(s) (soft: every row,
        weighted by its responsibility) and the global model all of them, passed to the estimator's
        ``fit`` as ``X_val``, ``y_val`` (and ``sample_weight_val``) — for early stopping or a
        regularisation path chosen on validation only. The estimator must accept those keywords.
        """
        Xv, y = validate_data(self, X, y, y_numeric=True)
        bins = self._route(X, bins) if responsibilities is None else bins  # routers read the input as given
        X, y = Xv, np.asarray(y, dtype=np.float64)
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64)
        if (bins is None) == (responsibilities is None):
            raise ValueError("give exactly one of bins (oracle/hard, or a router) or responsibilities (soft)")
        val = self._validation(validation, bins is not None)
        if bins is not None:
            self.experts_ = self._fit_hard(X, y, np.asarray(bins), sw, val)
        else:
            self.experts_ = self._fit_soft(X, y, responsibilities, sw, val)
        gval = None if val is None else (val[0], val[1], None)
        self.global_ = self._fit_one(clone(self._base()), X, y, sw, gval) if self.fit_global else None
        return self

    def _fit_hard(self, X, y, bins, sw, val=None) -> list:
        k = self._n_bins()
        if bins.shape != y.shape or not np.issubdtype(bins.dtype, np.integer):
            raise ValueError(f"bins must be integer labels of shape {y.shape}")
        if bins.min() < 0 or bins.max() >= k:
            raise ValueError(f"bins must be in [0, {k}), got [{bins.min()}, {bins.max()}]")
        self.plan_ = self._plan(bins)
        route = self.plan_.route(bins)
        vroute = None if val is None else self.plan_.route(val[2])
        experts = []
        for e in range(self.plan_.n_experts):
            sel = route == e
            v = None if val is None else (val[0][vroute == e], val[1][vroute == e], None)
            experts.append(self._fit_one(clone(self._base()), X[sel], y[sel], None if sw is None else sw[sel], v))
        return experts

    def _fit_soft(self, X, y, responsibilities, sw, val=None) -> list:
        k = self._n_bins()
        R = np.asarray(responsibilities, dtype=np.float64)
        if R.shape != (len(y), k):
            raise ValueError(f"responsibilities must have shape ({len(y)}, {k}), got {R.shape}")
        if np.any(R < 0) or not np.all(np.isfinite(R)):
            raise ValueError("responsibilities must be finite and non-negative")
        self.plan_ = None
        mass = R.sum(axis=0)
        small = [j for j in range(k) if mass[j] < max(self.min_count, 1)]
        if small:
            raise SmallBinError(f"expert(s) {small} have summed responsibility {mass[small].round(1).tolist()} "
                                f"< min_count={self.min_count}")
        if val is not None and val[2].shape != (len(val[1]), k):
            raise ValueError(f"responsibilities_val must have shape ({len(val[1])}, {k}), got {val[2].shape}")
        return [self._fit_one(clone(self._base()), X, y, R[:, j] if sw is None else R[:, j] * sw,
                              None if val is None else (val[0], val[1], val[2][:, j])) for j in range(k)]

    def predict_all(self, X) -> np.ndarray:
        """Every expert's prediction for every row: (n, n_experts)."""
        check_is_fitted(self, "experts_")
        X = validate_data(self, X, reset=False)
        return np.column_stack([np.asarray(e.predict(X), dtype=np.float64) for e in self.experts_])

    def predict_global(self, X) -> np.ndarray:
        check_is_fitted(self, "experts_")
        if self.global_ is None:
            raise ValueError("fitted with fit_global=False: there is no global model")
        return np.asarray(self.global_.predict(validate_data(self, X, reset=False)), dtype=np.float64)

    def predict(self, X, bins=None) -> np.ndarray:
        """Oracle routing: each row predicted by the expert of its (true) bin (the router's, or ``bins``)."""
        check_is_fitted(self, "experts_")
        validate_data(self, X, reset=False)
        bins = self._route(X, bins)
        if bins is None:
            raise ValueError("oracle routing needs each row's bin: a router, or predict(X, bins=...)")
        if self.plan_ is None:
            raise ValueError("fitted with soft responsibilities: use predict_mixture")
        P = self.predict_all(X)
        e = self.plan_.route(bins)
        return P[np.arange(len(P)), e]

    def predict_mixture(self, X, proba) -> np.ndarray:
        """Σ_k p_k ŷ_k with ``proba`` (n, n_experts) rows summing to 1."""
        P = self.predict_all(X)
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape != P.shape:
            raise ValueError(f"proba must have shape {P.shape}, got {proba.shape}")
        return (P * proba).sum(axis=1)
