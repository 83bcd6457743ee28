"""Single-model controls (Gate-4): features that let one linear model see the observing quality.

:class:`WhitenedFlux` — the noisy flux divided by σ (whitening); :class:`ConditionalFeatures` — the
flux plus the quality features and their products with a few leading flux components (one Ridge
that can change its weights with the observing quality); :class:`InteractedFeatures` — every flux
feature also multiplied by a standardised noise level (log ‖σ‖), so one Ridge's weights vary
linearly with the noise: a rank-one form of the full flux × quality interaction that keeps the
Gram at 2·D + a few columns (streaming-sized). Both are transformers of a pair (noisy
flux, σ = error · noise_level): a ``(flux, sigma)`` tuple or any object with ``flux`` and ``sigma``
arrays (such as :class:`snrmoe_lib.models.mixtures.SpectraInput`). A Ridge on them is the control.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import eigh
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.features.flux import bin_pixels
from snrmoe_lib.features.quality import QualityInput, make_compressor

__all__ = ["WhitenedFlux", "ConditionalFeatures", "InteractedFeatures", "log_sigma_level"]


def _flux_sigma(X) -> tuple[np.ndarray, np.ndarray]:
    """The (noisy flux, σ) pair of an input, both 2-D and of one shape."""
    if hasattr(X, "flux") and hasattr(X, "sigma"):
        flux, sigma = X.flux, X.sigma
    elif isinstance(X, tuple) and len(X) == 2:
        flux, sigma = X
    else:
        raise TypeError(f"expected spectra with flux and sigma (a SpectraInput or a (flux, sigma) tuple), "
                        f"got {type(X).__name__}")
    flux, sigma = np.asarray(flux), np.asarray(sigma)
    if flux.ndim != 2 or flux.shape != sigma.shape:
        raise ValueError(f"flux {flux.shape} and sigma {sigma.shape} must be equal 2-D shapes")
    return flux, sigma


def _bin_pixels(X: np.ndarray, b: int) -> np.ndarray:
    return np.asarray(bin_pixels(X, b), dtype=np.float64)


def _mean_std(F: np.ndarray) -> float:
    s = float(np.mean(F.std(axis=0)))
    return s if s > 0 else 1.0


class WhitenedFlux(TransformerMixin, BaseEstimator):
    """Gate-4 control (a): the noisy flux divided by σ, averaged over ``bin_pixels`` pixels.

    One global factor (fitted) brings the features to the typical spread of the plain flux features,
    so the same α grid spans the same range of effective regularisation. Note that σ here is the
    per-pixel error vector itself, as the Hub's control prescribes; it is not a compressed quality.

    Attributes
    ----------
    scale_ : float
    """

    def __init__(self, bin_pixels: int = 1):
        self.bin_pixels = bin_pixels

    def _raw(self, X) -> np.ndarray:
        flux, sigma = _flux_sigma(X)
        return _bin_pixels(flux / sigma, int(self.bin_pixels))  # binned (and summed) in float64

    def fit(self, X, y=None) -> "WhitenedFlux":
        flux, sigma = _flux_sigma(X)
        self.scale_ = _mean_std(_bin_pixels(flux, int(self.bin_pixels))) / _mean_std(self._raw((flux, sigma)))
        self.n_features_in_ = flux.shape[1]
        self.n_features_out_ = flux.shape[1] // int(self.bin_pixels)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "scale_")
        return self._raw(X) * self.scale_


class ConditionalFeatures(TransformerMixin, BaseEstimator):
    """Gate-4 control (b): flux features plus quality features and their products with flux components.

    Output columns: the flux averaged over ``bin_pixels`` (exactly the global model's input), the
    standardised quality features q, and the products q_j · z_i with the first ``n_components``
    standardised principal components z of the flux features. A linear model on these can tilt its
    weights in the leading flux directions with the observing quality: one model conditioned on SNR.
    The extra columns are scaled to the flux features' typical spread (one α grid for all).

    Parameters
    ----------
    representation : str or transformer
        The quality compressor (a name for :func:`snrmoe_lib.quality.make_compressor`, or an unfitted
        compressor). It sees σ only.
    n_components : int
    bin_pixels : int

    Attributes
    ----------
    compressor_, q_mean_, q_scale_, components_, z_mean_, z_scale_, scale_
    """

    def __init__(self, representation: Any = "S2", n_components: int = 5, bin_pixels: int = 1):
        self.representation = representation
        self.n_components = n_components
        self.bin_pixels = bin_pixels

    def fit(self, X, y=None) -> "ConditionalFeatures":
        flux, sigma = _flux_sigma(X)
        comp = self.representation
        self.compressor_ = make_compressor(comp) if isinstance(comp, str) else clone(comp)
        self.compressor_.fit(QualityInput(sigma))
        q = self.compressor_.transform(QualityInput(sigma))
        self.q_mean_, self.q_scale_ = q.mean(axis=0), np.where(q.std(axis=0) > 0, q.std(axis=0), 1.0)
        F = _bin_pixels(flux, int(self.bin_pixels))
        m = int(self.n_components)
        if m < 0 or m > min(F.shape):
            raise ValueError(f"n_components must be in [0, {min(F.shape)}], got {m}")
        self.z_mean_ = F.mean(axis=0)
        if m:
            # only the m leading eigenpairs of the covariance (far cheaper than a full SVD); one BLAS
            # thread, as in ridge.solve_path: multi-threaded LAPACK collapses on shared cores
            Fc = F - self.z_mean_
            with one_blas_thread():
                lam, vec = eigh(Fc.T @ Fc / max(len(F) - 1, 1), subset_by_index=[F.shape[1] - m, F.shape[1] - 1])
            lam, vec = lam[::-1], vec[:, ::-1]
            self.components_ = (vec * np.where(vec.sum(axis=0) < 0, -1.0, 1.0)).T  # deterministic signs
            self.z_scale_ = np.sqrt(np.where(lam > 0, lam, 1.0))
        else:
            self.components_, self.z_scale_ = np.zeros((0, F.shape[1])), np.zeros(0)
        self.scale_ = _mean_std(F)
        self.n_quality_ = q.shape[1]
        self.n_features_in_ = flux.shape[1]
        return self

    def quality(self, X) -> np.ndarray:
        """Standardised quality features of ``X`` (from σ only)."""
        check_is_fitted(self, "compressor_")
        return self.standardise(self.compressor_.transform(QualityInput(_flux_sigma(X)[1])))

    def standardise(self, q_raw: np.ndarray) -> np.ndarray:
        """Standardised quality features from the compressor's output."""
        return (np.asarray(q_raw) - self.q_mean_) / self.q_scale_

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "compressor_")
        flux, sigma = _flux_sigma(X)
        return self.assemble(_bin_pixels(flux, int(self.bin_pixels)), self.quality((flux, sigma)))

    def assemble(self, F: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The output columns from the binned flux ``F`` and the standardised quality ``q`` (what
        :meth:`transform` computes; the streamed pass already holds both)."""
        check_is_fitted(self, "compressor_")
        z = (F - self.z_mean_) @ self.components_.T / self.z_scale_
        prods = (q[:, :, None] * z[:, None, :]).reshape(len(F), -1)
        return np.hstack([F, self.scale_ * q, self.scale_ * prods])


def log_sigma_level(sigma) -> np.ndarray:
    """``½ log mean σ²`` per spectrum: the noise level a quality summary orders spectra by (from σ only)."""
    s = np.asarray(sigma)
    return 0.5 * np.log(np.square(s).mean(axis=1, dtype=np.float64))  # squares in the input's precision


class InteractedFeatures(TransformerMixin, BaseEstimator):
    """Gate-4 control: flux features, quality features, and every flux feature times the noise level.

    Output columns: the binned flux F (the global model's input), the standardised quality features
    q and noise level z = standardised ``log_sigma_level(σ)``, and ``(F − F̄) · z``. A Ridge on these
    has weights ``β + γ z``: one model whose weights change with the noise of each spectrum, using
    the flux × quality interaction through the single quality direction that orders SNR. Extra
    columns are brought to the flux features' typical spread (one α grid for all).

    Parameters
    ----------
    representation : str or transformer
        The quality compressor (sees σ only).
    bin_pixels : int

    Attributes
    ----------
    compressor_, q_mean_, q_scale_, z_mean_, z_scale_, f_mean_, scale_, n_quality_, n_features_out_
    """

    def __init__(self, representation: Any = "S2", bin_pixels: int = 1):
        self.representation = representation
        self.bin_pixels = bin_pixels

    def fit(self, X, y=None) -> "InteractedFeatures":
        flux, sigma = _flux_sigma(X)
        comp = self.representation
        self.compressor_ = make_compressor(comp) if isinstance(comp, str) else clone(comp)
        q = self.compressor_.fit(QualityInput(sigma)).transform(QualityInput(sigma))
        self.q_mean_, self.q_scale_ = q.mean(axis=0), np.where(q.std(axis=0) > 0, q.std(axis=0), 1.0)
        z = log_sigma_level(sigma)
        self.z_mean_, self.z_scale_ = float(z.mean()), float(z.std()) if z.std() > 0 else 1.0
        F = _bin_pixels(flux, int(self.bin_pixels))
        self.f_mean_ = F.mean(axis=0)
        self.scale_ = _mean_std(F)
        self.n_quality_ = q.shape[1]
        self.n_features_in_ = flux.shape[1]
        self.n_features_out_ = 2 * F.shape[1] + self.n_quality_ + 1
        return self

    def assemble(self, F: np.ndarray, q_raw: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """The output columns from the binned flux ``F``, the compressor's output and σ (the streamed
        pass already holds all three)."""
        check_is_fitted(self, "compressor_")
        q = (np.asarray(q_raw) - self.q_mean_) / self.q_scale_
        z = ((log_sigma_level(sigma) - self.z_mean_) / self.z_scale_)[:, None]
        return np.hstack([F, self.scale_ * q, self.scale_ * z, (F - self.f_mean_) * z])

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "compressor_")
        flux, sigma = _flux_sigma(X)
        q = self.compressor_.transform(QualityInput(sigma))
        return self.assemble(_bin_pixels(flux, int(self.bin_pixels)), q, sigma)
