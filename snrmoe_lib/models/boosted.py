"""Gradient-boosted trees as global models, SNR experts and residual correctors.

:class:`BoostedRegressor` wraps scikit-learn's ``HistGradientBoostingRegressor`` (no new dependency)
with the project's rules:

* **Early stopping on a given validation split only.** ``fit(X, y, X_val=..., y_val=...)`` stops
  when the validation loss stops improving; without validation rows the trees run the full
  ``max_iter`` rounds. scikit-learn's own random internal split (``validation_fraction``) is never
  used, so which rows select the number of trees is fixed by the split, and reproducible.
* **Bounded memory.** The trees hold the training matrix as float64 (N × D × 8 bytes, converted from
  the caller's float32 if need be) plus its binned copy (N × D bytes, uint8) and a few per-row
  gradient arrays. On binned flux features (D = 512 at ``bin_pixels`` 8, 1024 at 4) that is about
  4.6 GB per million rows at D = 512 and 9.2 GB at D = 1024. Above ``max_train_rows`` (default
  200,000: ≈ 0.9 GB at D = 512) the fit uses a seeded subsample of that many rows (the named
  stream ``boosted.train_subsample``), warns with :class:`SubsampleWarning` and records it in
  ``n_train_used_`` / ``subsampled_``; ``max_train_rows=None`` lifts the cap.
* **Every draw seeded.** The trees' ``random_state`` comes from the named stream ``boosted.trees``.

As SNR experts, pass it to :class:`~snrmoe_lib.models.experts.BinnedExperts` (one interface for
every expert kind; :func:`boosted_experts` does so): ``BinnedExperts.fit(..., validation=(X_val,
y_val, bins_val))`` hands each expert its own bin's validation rows for early stopping. As residual
correctors, pass it as the ``corrector`` of :class:`~snrmoe_lib.models.residual.ResidualMixture`.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.models.experts import BinnedExperts

__all__ = ["BoostedRegressor", "SubsampleWarning", "boosted_experts"]


class SubsampleWarning(UserWarning):
    """A fit used a seeded subsample of its training rows (more rows than ``max_train_rows``)."""


class BoostedRegressor(RegressorMixin, BaseEstimator):
    """Histogram gradient-boosted regression trees, early-stopped on explicit validation rows.

    Parameters
    ----------
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization, max_bins
        As in ``sklearn.ensemble.HistGradientBoostingRegressor``.
    max_features : float
        Fraction of features considered at each split (< 1 adds seeded randomness).
    n_iter_no_change : int
        Rounds without improvement of the validation loss (by more than ``tol``) that stop the fit.
    tol : float
    max_train_rows : int or None
        Most training rows held by one fit; more rows are subsampled (seeded) with a
        :class:`SubsampleWarning`. None: no cap (mind the memory, see the module docstring).
    seed : int
        Seed of the named streams ``boosted.trees`` and ``boosted.train_subsample``.
    n_threads : int or None
        OpenMP threads of the trees (None: scikit-learn's default, every core).

    Attributes
    ----------
    model_ : HistGradientBoostingRegressor
    n_iter_ : int
        Boosting rounds kept (chosen on validation when validation rows were given).
    early_stopped_ : bool
        Whether validation rows chose ``n_iter_``.
    n_train_used_, subsampled_ : int, bool
    n_features_in_ : int
    """

    def __init__(self, learning_rate: float = 0.1, max_iter: int = 300, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 20, l2_regularization: float = 0.0, max_bins: int = 255,
                 max_features: float = 1.0, n_iter_no_change: int = 20, tol: float = 1e-7,
                 max_train_rows: int | None = 200_000, seed: int = 0, n_threads: int | None = None):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.max_features = max_features
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.max_train_rows = max_train_rows
        self.seed = seed
        self.n_threads = n_threads

    def _check_params(self) -> None:
        if self.max_train_rows is not None and int(self.max_train_rows) < 2:
            raise ValueError(f"max_train_rows must be >= 2 or None, got {self.max_train_rows}")
        if not 0 < self.max_features <= 1:
            raise ValueError(f"max_features must be a fraction in (0, 1], got {self.max_features}")

    def _subsample(self, n: int) -> np.ndarray | None:
        cap = self.max_train_rows
        if cap is None or n <= int(cap):
            return None
        warnings.warn(f"{n} training rows exceed max_train_rows={cap}: the trees fit a seeded subsample of "
                      f"{cap} rows (stream boosted.train_subsample; raise max_train_rows if memory allows: "
                      f"about N × D × 9 bytes)", SubsampleWarning, stacklevel=3)
        return np.sort(_rng("boosted.train_subsample", int(self.seed)).choice(n, int(cap), replace=False))

    def _limits(self):
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=self.n_threads, user_api="openmp")

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None, sample_weight_val=None) -> "BoostedRegressor":
        """Fit the trees; with ``X_val``/``y_val`` the number of rounds is chosen on them (early stopping)."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        self._check_params()
        X, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val (validation rows for early stopping) or neither")
        keep = self._subsample(len(y))
        if keep is not None:
            X, y, sw = X[keep], y[keep], None if sw is None else sw[keep]
        stop = X_val is not None
        kw = {}
        if stop:
            kw["X_val"] = validate_data(self, X_val, reset=False)
            kw["y_val"] = np.asarray(y_val, dtype=np.float64).ravel()
            if len(kw["y_val"]) != len(kw["X_val"]):
                raise ValueError(f"X_val has {len(kw['X_val'])} rows, y_val {len(kw['y_val'])}")
            if sample_weight_val is not None:
                kw["sample_weight_val"] = np.asarray(sample_weight_val, dtype=np.float64)
        state = int(_rng("boosted.trees", int(self.seed)).integers(0, 2 ** 31 - 1))
        self.model_ = HistGradientBoostingRegressor(
            learning_rate=self.learning_rate, max_iter=self.max_iter, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization, max_bins=self.max_bins,
            max_features=self.max_features, early_stopping=stop, n_iter_no_change=self.n_iter_no_change, tol=self.tol,
            scoring="loss", random_state=state)
        with self._limits():
            self.model_.fit(X, y, sample_weight=sw, **kw)
        self.n_iter_ = int(self.model_.n_iter_)
        self.early_stopped_ = bool(stop)
        self.n_train_used_ = int(len(y))
        self.subsampled_ = keep is not None
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False)
        with self._limits():
            return np.asarray(self.model_.predict(X), dtype=np.float64)


def boosted_experts(n_bins: int = 4, labels=None, min_count: int = 20, on_small_bin: str = "merge", router=None,
                    **boosted):
    """SNR (or any binned) experts of boosted trees: a :class:`~snrmoe_lib.models.experts.BinnedExperts`
    whose expert type is :class:`BoostedRegressor` (``**boosted``: its hyper-parameters)."""
    return BinnedExperts(estimator=BoostedRegressor(**boosted), router=router, n_bins=n_bins, labels=labels,
                         min_count=min_count, on_small_bin=on_small_bin)
