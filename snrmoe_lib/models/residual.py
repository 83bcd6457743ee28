"""The residual mixture: a strong global model plus light per-bin correctors of its residuals.

    ŷ = ŷ_global + Σ_k w_k r̂_k

The global model is fitted first (or given fitted and frozen, ``prefit=True``); the correctors
r̂_k — one per SNR bin, Ridge by default, or shallow boosted trees — learn the global model's
residuals y − ŷ_global through :class:`~snrmoe_lib.models.experts.BinnedExperts` (the one expert
interface: hard bins or soft responsibilities, merges of small bins, validation rows per bin). The
weights w come from the caller: a hard oracle (``bins``), a soft oracle or a gate's
``predict_proba`` (``proba``), or the estimator's ``router``.

The correctors are "light": a Ridge whose α is chosen on the validation residuals (out of sample for
the global model) shrinks a correction towards zero where it does not help.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from snrmoe_lib.models.boosted import BoostedRegressor
from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.ridge import StreamingRidge

__all__ = ["ResidualMixture", "DEFAULT_CORRECTOR_ALPHAS"]

#: The α grid of the default Ridge corrector (chosen on the validation residuals; GCV without them).
DEFAULT_CORRECTOR_ALPHAS = (1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)


class ResidualMixture(RegressorMixin, BaseEstimator):
    """A global model plus per-bin correctors of its residuals, mixed with given weights.

    Parameters
    ----------
    base : regressor, optional
        The global model (default :class:`~snrmoe_lib.models.boosted.BoostedRegressor`). Fitted on
        the training rows (with ``X_val``/``y_val`` when its ``fit`` takes them), unless ``prefit``.
    corrector : regressor, optional
        The corrector type (cloned per bin; default a Ridge with α chosen from
        :data:`DEFAULT_CORRECTOR_ALPHAS` on the validation residuals).
    router : router, optional
        Routes the input to bins when ``bins`` are not given (see :mod:`snrmoe_lib.models.routing`).
    n_bins, labels, min_count, on_small_bin
        As in :class:`~snrmoe_lib.models.experts.BinnedExperts`.
    prefit : bool
        ``base`` is already fitted: it is used as is (frozen), never refitted.

    Attributes
    ----------
    base_ : fitted global model
    correctors_ : fitted BinnedExperts on the residuals (no global corrector)
    n_features_in_ : int
    """

    def __init__(self, base=None, corrector=None, router=None, n_bins: int = 4, labels=None, min_count: int = 20,
                 on_small_bin: str = "merge", prefit: bool = False):
        self.base = base
        self.corrector = corrector
        self.router = router
        self.n_bins = n_bins
        self.labels = labels
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.prefit = prefit

    def _corrector(self):
        return StreamingRidge(alpha=list(DEFAULT_CORRECTOR_ALPHAS)) if self.corrector is None else self.corrector

    def _fit_base(self, X, y, sw, X_val, y_val):
        if self.prefit:
            if self.base is None:
                raise ValueError("prefit=True needs a fitted base model")
            check_is_fitted(self.base)
            return self.base
        base = clone(BoostedRegressor() if self.base is None else self.base)
        kw = {} if sw is None else {"sample_weight": sw}
        if X_val is not None:
            kw |= {"X_val": X_val, "y_val": y_val}
        return base.fit(X, y, **kw)

    def fit(self, X, y, bins=None, responsibilities=None, sample_weight=None, X_val=None, y_val=None,
            bins_val=None) -> "ResidualMixture":
        """Fit (or take) the global model, then the correctors on its residuals.

        ``bins`` (hard, or the ``router``'s) or ``responsibilities`` (soft) assign training rows to
        correctors; ``X_val``, ``y_val`` with ``bins_val`` (hard; responsibilities for soft fits)
        are the validation rows: early stopping of the global model and of boosted correctors, the
        α of Ridge correctors. The training residuals of a global model fitted on the same rows are
        in-sample (smaller than out of sample); validation-chosen correctors stay light for that reason.
        """
        Xc, y = validate_data(self, X, y, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        if len(y) < 2:
            raise ValueError(f"a residual mixture needs at least 2 training rows, got n_samples={len(y)}")
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, Xc, dtype=np.float64)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val or neither")
        if X_val is not None and bins_val is None and (self.router is None or responsibilities is not None):
            raise ValueError("validation rows need their bins (bins_val; responsibilities for a soft fit) "
                             "to reach the correctors")
        Xv = None if X_val is None else validate_data(self, X_val, reset=False)
        self.base_ = self._fit_base(Xc, y, sw, Xv, y_val)
        resid = y - np.asarray(self.base_.predict(Xc), dtype=np.float64)
        val = None
        if Xv is not None:
            bv = bins_val if bins_val is not None else self.router.route(X_val)
            val = (Xv, np.asarray(y_val, dtype=np.float64) - np.asarray(self.base_.predict(Xv), dtype=np.float64), bv)
        self.correctors_ = BinnedExperts(estimator=self._corrector(), router=self.router, n_bins=self.n_bins,
                                         labels=self.labels, min_count=self.min_count, on_small_bin=self.on_small_bin,
                                         fit_global=False)
        if responsibilities is None and bins is None and self.router is not None:
            bins = self.router.route(X)
        self.correctors_.fit(Xc, resid, bins=bins, sample_weight=sw, responsibilities=responsibilities,
                             validation=val)
        return self

    def predict_base(self, X) -> np.ndarray:
        """The frozen global model's predictions."""
        check_is_fitted(self, "correctors_")
        return np.asarray(self.base_.predict(validate_data(self, X, reset=False)), dtype=np.float64)

    def predict_corrections(self, X) -> np.ndarray:
        """Every corrector's r̂_k for every row: (n, n_experts)."""
        check_is_fitted(self, "correctors_")
        return self.correctors_.predict_all(validate_data(self, X, reset=False))

    def predict(self, X, proba=None, bins=None) -> np.ndarray:
        """ŷ_global + Σ_k w_k r̂_k with w = ``proba`` (n, n_experts; a gate's or a soft oracle's), or
        the corrector of each row's bin (``bins``, else the router's): the hard oracle."""
        check_is_fitted(self, "correctors_")
        Xc = validate_data(self, X, reset=False)
        base = np.asarray(self.base_.predict(Xc), dtype=np.float64)
        if proba is not None:
            if bins is not None:
                raise ValueError("give proba (soft weights) or bins (hard routing), not both")
            return base + self.correctors_.predict_mixture(Xc, proba)
        if bins is None and self.router is None:
            raise ValueError("the weights are missing: proba=(n, n_experts), bins=(n,), or a router")
        if bins is None:
            bins = self.router.route(X)
        return base + self.correctors_.predict(Xc, bins=bins)
