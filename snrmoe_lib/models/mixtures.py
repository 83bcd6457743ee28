"""Mixtures of experts: soft and hard routing with a fallback, and the in-memory mixture estimator.

Mixing
    :func:`mix` — the soft mixture ``ŷ = Σ_k p_k ŷ_k`` with a fallback to the global model where the
    gate is unsure (``max_k p_k < τ``); :func:`hard_route` — each spectrum to its most probable
    expert. Both validate the probabilities (:func:`snrmoe_lib.models.gates.check_proba`).

One estimator
    :class:`SoftMoE` composes the compressor (σ → quality features), the gate, the binned experts
    and the global model, and fits / predicts like one scikit-learn regressor on a
    :class:`SpectraInput` (noisy flux and σ). Its ``router`` supplies the training bins, so it
    works in ``Pipeline`` and ``cross_val_score``. It is the in-memory form, for small data and
    tests; the streamed Q3 runs are :func:`snrmoe_lib.analyses.q3.run_deployable`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from snrmoe_lib.data.noise import add_noise, effective_sigma
from snrmoe_lib.features.flux import bin_pixels
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.gates import GateError, RegressionGate, check_labels, check_proba, make_gate
from snrmoe_lib.models.ridge import DEFAULT_ALPHAS, StreamingRidge

__all__ = ["mix", "hard_route", "SpectraInput", "SoftMoE"]


# ============================================================================ mixing


def mix(proba, expert_pred, global_pred=None, tau: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Soft mixture Σ_k p_k ŷ_k, falling back to the global model where max_k p_k < τ.

    Parameters
    ----------
    proba : array (n, K)
        Gate probabilities, rows summing to one (checked).
    expert_pred : array (n, K)
        Each expert's prediction for each spectrum.
    global_pred : array (n,), optional
        The global model's predictions (needed when ``tau`` is given).
    tau : float, optional
        Fallback threshold; ``None`` (or 0) mixes every spectrum.

    Returns
    -------
    y : ndarray (n,)
    fell_back : ndarray (n,) of bool
        Where the global model was used.
    """
    P = _expert_block(expert_pred)
    W = check_proba(proba, P.shape[1])
    if len(W) != len(P):
        raise GateError(f"{len(W)} probability rows for {len(P)} spectra")
    y = (W * P).sum(axis=1)
    fell = np.zeros(len(y), dtype=bool)
    if tau is not None and tau > 0:
        if global_pred is None:
            raise GateError("a fallback threshold needs the global model's predictions (global_pred)")
        g = np.asarray(global_pred, dtype=np.float64).ravel()
        if g.shape != y.shape:
            raise GateError(f"global_pred has {len(g)} values for {len(y)} spectra")
        fell = W.max(axis=1) < tau
        y = np.where(fell, g, y)
    return y, fell


def hard_route(proba, expert_pred) -> np.ndarray:
    """Each spectrum predicted by its most probable expert (ties: the lower index)."""
    P = _expert_block(expert_pred)
    W = check_proba(proba, P.shape[1])
    return P[np.arange(len(P)), np.argmax(W, axis=1)]


def _expert_block(expert_pred) -> np.ndarray:
    P = np.asarray(expert_pred, dtype=np.float64)
    if P.ndim != 2:
        raise GateError(f"expert predictions must be (n_spectra, n_experts), got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise GateError("expert predictions hold NaN or infinite values")
    return P


# ============================================================================ inputs


@dataclass
class SpectraInput:
    """Noisy flux and σ = error · noise_level of a block of spectra (the MoE's input).

    ``snr``, optional, is each spectrum's true SNR (known for simulated training data): an
    :class:`~snrmoe_lib.models.routing.SNRRouter` routes the training labels by it; the gate never
    sees it. Supports ``len``, ``shape`` and row indexing, so it passes through scikit-learn
    utilities (``cross_val_score`` splits it like an array).
    """

    flux: np.ndarray
    sigma: np.ndarray
    snr: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.flux = np.asarray(self.flux)
        self.sigma = np.asarray(self.sigma)
        if self.flux.ndim != 2 or self.flux.shape != self.sigma.shape:
            raise ValueError(f"flux {self.flux.shape} and sigma {self.sigma.shape} must be equal 2-D shapes")
        if self.snr is not None:
            self.snr = np.asarray(self.snr, dtype=np.float64)
            if self.snr.shape != (len(self.flux),):
                raise ValueError(f"snr must hold one value per spectrum ({len(self.flux)}), got shape {self.snr.shape}")

    @classmethod
    def from_chunk(cls, chunk, noise_level: float, seed: int) -> "SpectraInput":
        """Noisy flux (noise keyed by (seed, row)) and σ of a dataset chunk."""
        noisy = add_noise(chunk.flux, chunk.error, noise_level, chunk.rows, seed)
        return cls(noisy, effective_sigma(chunk.error, noise_level))

    def __len__(self) -> int:
        return len(self.flux)

    @property
    def shape(self) -> tuple[int, int]:
        return self.flux.shape

    def __getitem__(self, rows) -> "SpectraInput":
        if isinstance(rows, tuple) and len(rows) == 2 and rows[1] is Ellipsis:  # scikit-learn's X[idx, ...]
            rows = rows[0]
        return SpectraInput(self.flux[rows], self.sigma[rows], None if self.snr is None else self.snr[rows])

    @property
    def quality(self) -> QualityInput:
        """What a compressor may see: σ only (never the flux)."""
        return QualityInput(self.sigma)


def _spectra(X) -> SpectraInput:
    if isinstance(X, SpectraInput):
        return X
    if isinstance(X, tuple) and len(X) == 2:
        return SpectraInput(*X)
    raise TypeError(f"expected a SpectraInput (noisy flux, sigma) or a (flux, sigma) tuple, got {type(X).__name__}")


# ============================================================================ the in-memory estimator


class SoftMoE(RegressorMixin, BaseEstimator):
    """Compressor + gate + binned experts + global model, fitted and used as one regressor.

    Parameters
    ----------
    compressor : str or transformer
        Quality representation (σ → features); it never sees the flux.
    gate : {'logistic', 'mlp', 'regression'} or estimator
        A classification gate (``fit(F, expert_index)``, ``predict_proba``), or ``'regression'`` (or a
        :class:`~snrmoe_lib.models.gates.RegressionGate`) trained on held-out spectra (``X_val``).
    experts : BinnedExperts, optional
        Unfitted binned experts (default: :class:`~snrmoe_lib.models.experts.BinnedExperts` of
        :class:`~snrmoe_lib.models.ridge.StreamingRidge` on ``bin_pixels``-averaged flux).
    router : router, optional
        Supplies each training spectrum's true bin (``router.route(X)``; for example an
        :class:`~snrmoe_lib.models.routing.SNRRouter` reading ``X.snr``). Without one, ``fit`` needs
        ``bins=``.
    routing : {'soft', 'hard'}
    tau : float or None
        Fallback threshold on max p_k (soft routing only; None: no fallback).
    n_bins : int
        Original bins when there is no router (routing labels in ``[0, n_bins)``); small bins are
        merged by the experts.
    min_count, on_small_bin
        The small-bin policy of the default experts.
    bin_pixels : int
    alphas : sequence of float
        Ridge α candidates of the default experts (GCV).
    gate_params : dict, optional
        Keyword hyper-parameters of a named gate (see :func:`~snrmoe_lib.models.gates.make_gate`).

    Attributes
    ----------
    compressor_, gate_, experts_, plan_, n_experts_
    """

    def __init__(self, compressor: Any = "S2", gate: Any = "logistic", experts=None, router=None,
                 routing: str = "soft", tau: float | None = 0.4, n_bins: int = 4, min_count: int = 20,
                 on_small_bin: str = "merge", bin_pixels: int = 1,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, gate_params: dict | None = None):
        self.compressor = compressor
        self.gate = gate
        self.experts = experts
        self.router = router
        self.routing = routing
        self.tau = tau
        self.n_bins = n_bins
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.bin_pixels = bin_pixels
        self.alphas = alphas
        self.gate_params = gate_params

    def _flux(self, X: SpectraInput) -> np.ndarray:
        return np.asarray(bin_pixels(X.flux, int(self.bin_pixels)), dtype=np.float64)

    def _default_experts(self) -> BinnedExperts:
        n_bins = self.n_bins if self.router is None else self.router.n_bins
        return BinnedExperts(StreamingRidge(alpha=list(self.alphas)), n_bins=n_bins, min_count=self.min_count,
                             on_small_bin=self.on_small_bin)

    def _is_regression_gate(self) -> bool:
        return (isinstance(self.gate, str) and self.gate == "regression") or isinstance(self.gate, RegressionGate)

    def fit(self, X, y, bins=None, X_val=None, y_val=None) -> "SoftMoE":
        """Fit on spectra ``X`` with targets ``y``; each spectrum's true bin from the router (or ``bins``).

        The experts and the classification gate learn from the training spectra; the regression gate
        learns its weights from the frozen experts' predictions on ``X_val`` (required for it).
        """
        if self.routing not in ("soft", "hard"):
            raise ValueError(f"routing must be 'soft' or 'hard', got {self.routing!r}")
        X = _spectra(X)
        if bins is None:
            if self.router is None:
                raise ValueError("SoftMoE.fit needs each training spectrum's true bin: a router, or fit(X, y, bins=...)")
            bins = self.router.route(X)
        bins = np.asarray(bins)
        y = np.asarray(y, dtype=np.float64)
        comp = self.compressor
        self.compressor_ = (make_compressor(comp) if isinstance(comp, str) else clone(comp)).fit(X.quality)
        base = self.experts if self.experts is not None else self._default_experts()
        self.experts_ = clone(base).fit(self._flux(X), y, bins=bins)
        self.plan_ = self.experts_.plan_
        self.n_experts_ = self.plan_.n_experts
        self.gate_ = self._fit_gate(X, bins, X_val, y_val)
        self.n_features_in_ = X.flux.shape[1]
        return self

    def _fit_gate(self, X: SpectraInput, bins: np.ndarray, X_val, y_val):
        K = self.n_experts_
        kw = dict(self.gate_params or {})
        if self._is_regression_gate():
            if X_val is None or y_val is None:
                raise GateError("the regression gate learns from spectra the experts did not fit: pass X_val, y_val")
            Xv = _spectra(X_val)
            gate = make_gate("regression", **kw) if isinstance(self.gate, str) else clone(self.gate)
            return gate.fit(self.compressor_.transform(Xv.quality), y_val,
                            expert_pred=self.experts_.predict_all(self._flux(Xv)))
        gate = make_gate(self.gate, n_classes=K, **kw) if isinstance(self.gate, str) else clone(self.gate)
        return gate.fit(self.compressor_.transform(X.quality), check_labels(self.plan_.route(bins), K)[0])

    def predict_proba(self, X) -> np.ndarray:
        """The gate's probabilities (or mixing weights) over the experts: (n, K)."""
        check_is_fitted(self, "gate_")
        return check_proba(self.gate_.predict_proba(self.compressor_.transform(_spectra(X).quality)), self.n_experts_)

    def predict_details(self, X) -> dict:
        """Prediction plus what produced it: ``y``, ``proba``, ``experts`` (n, K), ``global``, ``fell_back``."""
        check_is_fitted(self, "gate_")
        X = _spectra(X)
        W = self.predict_proba(X)
        Fx = self._flux(X)
        P = self.experts_.predict_all(Fx)
        g = self.experts_.predict_global(Fx)
        if self.routing == "hard":
            y, fell = hard_route(W, P), np.zeros(len(P), bool)
        else:
            tau = None if isinstance(self.gate_, RegressionGate) else self.tau
            y, fell = mix(W, P, g, tau)
        return {"y": y, "proba": W, "experts": P, "global": g, "fell_back": fell}

    def predict(self, X) -> np.ndarray:
        return self.predict_details(X)["y"]
