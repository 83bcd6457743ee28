"""Error compressors S0–S4: "observation quality" features made from the effective σ only.

The simulator's error vector is computed from the noise-free model flux, so the raw vector carries
the spectrum itself (BRIEF §2, Q2). These transformers compress it into a few numbers that should
describe *how well* a star was observed, not *what* it is. :mod:`snrmoe_lib.analyses.q2` audits them.

Input convention
----------------
Every compressor works on σ = error · noise_level (:func:`snrmoe_lib.data.noise.effective_sigma`).
``fit``/``transform`` accept either

* a plain 2-D array, read as σ of shape (n_spectra, n_pixels), or
* a :class:`QualityInput` (σ plus the optional noise-free flux and mask), built with
  :func:`quality_input` from a dataset's ``error`` and the run's ``noise_level``.

S1a/S1b normalise σ like the flux and so need the flux: they take a :class:`QualityInput` and
raise a clear error on a bare array. Every compressor returns a plain float64 array, so it can be
the first step of a scikit-learn ``Pipeline`` (``Pipeline([("q", make_compressor("S2")),
("clf", LogisticRegression())])``). :class:`QualityInput` supports ``len`` and row indexing
(``X[rows]``), which is all a ``Pipeline`` needs.

Representations (names used by the parameters, ``quality.representations``):

====== =========================================================== ============
name   features                                                    n_features
====== =========================================================== ============
S0     raw σ                                                       n_pixels
S1a    σ / median(flux)                                            n_pixels
S1b    σ / ‖flux‖                                                  n_pixels
S2     template × scale: s = σᵀe0/‖e0‖² and ‖σ − s·e0‖ (log)       2
S2b    k uncentred PCA templates of σ: the k projections           k
S3_11  11 quantiles of the sorted σ (0, 0.1, …, 1)                 11
S3_21  21 quantiles of the sorted σ                                21
S3b    mean, std, min, max, median, sum, q25, q75, skew, kurtosis  10
S4     ‖σ‖ (log)                                                   1
====== =========================================================== ============
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from scipy.sparse import issparse
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from snrmoe_lib.data.noise import effective_sigma
from snrmoe_lib._util.threads import one_blas_thread

__all__ = [
    "QualityInput",
    "QualityError",
    "quality_input",
    "RawError",
    "FluxNormalizedError",
    "TemplateScale",
    "PCATemplates",
    "SortedQuantiles",
    "AggregateStats",
    "ErrorNorm",
    "REPRESENTATIONS",
    "make_compressor",
    "quality_features",
    "check_features",
    "AGGREGATE_NAMES",
]

AGGREGATE_NAMES = ("mean", "std", "min", "max", "median", "sum", "q25", "q75", "skew", "kurtosis")


class QualityError(ValueError):
    """A compressor was given unusable input or produced unusable features (NaN, inf, constant)."""


@dataclass
class QualityInput:
    """σ (and optionally the noise-free flux and the mask) of a block of spectra.

    Attributes
    ----------
    sigma : ndarray (n, n_pix)
        Effective σ = error · noise_level.
    flux : ndarray (n, n_pix) or None
        Noise-free flux, needed by S1a/S1b only.
    mask : ndarray (n, n_pix) or None
        Pixel mask (non-zero = bad); carried along for the audit's mask-only control.
    """

    sigma: np.ndarray
    flux: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.sigma = np.asarray(self.sigma)
        if self.sigma.ndim != 2:
            raise QualityError(f"sigma must be 2-D (n_spectra, n_pixels), got shape {self.sigma.shape}")
        for name in ("flux", "mask"):
            a = getattr(self, name)
            if a is not None and np.shape(a) != self.sigma.shape:
                raise QualityError(f"{name} shape {np.shape(a)} differs from sigma shape {self.sigma.shape}")

    def __len__(self) -> int:
        return len(self.sigma)

    def __getitem__(self, rows) -> "QualityInput":
        pick = (lambda a: None if a is None else a[rows])
        return QualityInput(self.sigma[rows], pick(self.flux), pick(self.mask))

    @property
    def shape(self) -> tuple[int, int]:
        return self.sigma.shape


def quality_input(error: np.ndarray, noise_level: float, flux: np.ndarray | None = None,
                  mask: np.ndarray | None = None) -> QualityInput:
    """Build a :class:`QualityInput` from a dataset's ``error`` at the run's ``noise_level``.

    σ = error · noise_level is the only error a feature may be built from (BRIEF §3).
    """
    return QualityInput(effective_sigma(np.asarray(error), noise_level), flux, mask)


def _sigma_array(X: Any, who: str) -> np.ndarray:
    """σ of ``X`` (a :class:`QualityInput` or an array) checked like scikit-learn checks ``X``:
    2-D, numeric, finite, not sparse, at least one spectrum and one pixel. The dtype is kept."""
    s = X.sigma if isinstance(X, QualityInput) else X
    if not issparse(s):
        s = np.asarray(s)
        if s.ndim != 2:
            raise QualityError(f"{who}: expected σ of shape (n_spectra, n_pixels), got shape {s.shape}. "
                               "Reshape your data: one row per spectrum")
        if s.shape[0] == 0:
            raise QualityError(f"{who}: no spectra given")
    try:
        return check_array(s, dtype="numeric", input_name="X")
    except ValueError as exc:
        raise QualityError(f"{who}: {exc}") from None


def _sigma(X: Any, who: str) -> np.ndarray:
    return _sigma_array(X, who).astype(np.float64, copy=False)


def _flux(X: Any, who: str) -> np.ndarray:
    if not isinstance(X, QualityInput) or X.flux is None:
        raise QualityError(
            f"{who} normalises σ like the flux and needs it: pass QualityInput(sigma, flux) "
            "(see quality_input), not a bare σ array")
    return X.flux.astype(np.float64, copy=False)


def check_features(F: np.ndarray, name: str, require_variation: bool = False) -> np.ndarray:
    """Fail loudly on NaN/inf features (and, optionally, on constant columns).

    Parameters
    ----------
    F : ndarray (n, k)
        Features of one representation.
    name : str
        The representation, named in the error.
    require_variation : bool
        Also reject columns that are constant over the spectra (standardising them gives NaN);
        the audit checks this on its training block.
    """
    bad = ~np.isfinite(F)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        rows = np.flatnonzero(bad.any(axis=1))
        raise QualityError(
            f"representation {name}: {int(bad.sum())} NaN/inf feature value(s) in column(s) "
            f"{cols[:8].tolist()}{' ...' if len(cols) > 8 else ''}, spectra {rows[:5].tolist()}"
            f"{' ...' if len(rows) > 5 else ''} (zero or non-finite error? zero flux?)")
    if require_variation and len(F) > 1:
        const = np.flatnonzero(np.ptp(F, axis=0) == 0)
        if const.size:
            raise QualityError(
                f"representation {name}: column(s) {const[:8].tolist()}{' ...' if const.size > 8 else ''} "
                f"are constant over the {len(F)} training spectra (for example an error of zero at a "
                "pixel); a constant feature cannot be standardised")
    return F


def _top_right_singular(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k leading squared singular values and right singular vectors (k, n_pixels) of ``s``.

    Lanczos iterations (ARPACK) on the smaller Gram matrix, started from a fixed vector so the
    result is deterministic; far cheaper than a full SVD of a (thousands × 4096) block. A dense
    eigensolver is used when k is close to the matrix size (ARPACK needs k < size − 1).
    """
    from scipy.linalg import eigh
    from scipy.sparse.linalg import eigsh

    n, p = s.shape
    g = s @ s.T if n < p else s.T @ s
    m = len(g)
    # the eigensolvers run small BLAS-2 steps: one thread avoids oversubscription stalls
    with one_blas_thread():
        if k < m - 1:
            w, vec = eigsh(g, k=k, which="LA", v0=np.ones(m), tol=1e-12)
        else:
            w, vec = eigh(g, subset_by_index=[m - k, m - 1])
    order = np.argsort(w)[::-1]
    w, vec = w[order], vec[:, order]
    if n < p:
        v = (s.T @ vec / np.sqrt(np.clip(w, 1e-300, None))).T
    else:
        v = vec.T
    v = v * np.where(v.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)  # deterministic sign: positive sum
    return w, v


class _Compressor(TransformerMixin, BaseEstimator):
    """Shared plumbing: remember the pixel count at fit, check it and the output at transform."""

    #: representation name used in messages (set per subclass / instance)
    rep_name = "?"

    def _fit_common(self, X) -> np.ndarray:
        s = _sigma(X, type(self).__name__)
        self.n_pixels_in_ = self.n_features_in_ = s.shape[1]
        return s

    def _transform_common(self, X) -> np.ndarray:
        check_is_fitted(self, "n_pixels_in_")
        s = _sigma(X, type(self).__name__)
        if s.shape[1] != self.n_pixels_in_:
            name = type(self).__name__
            raise QualityError(f"{name}: fitted on {self.n_pixels_in_} pixels, got {s.shape[1]} (X has "
                               f"{s.shape[1]} features, but {name} is expecting {self.n_pixels_in_} features as input)")
        return s

    def fit(self, X, y=None):
        """Fit on training σ (``y`` is ignored; present for ``Pipeline`` compatibility)."""
        self._fit_common(X)
        return self

    def _done(self, F: np.ndarray) -> np.ndarray:
        return check_features(np.asarray(F, dtype=np.float64), self._name())

    def _name(self) -> str:
        return self.rep_name

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_pixels_in_")
        return np.asarray(self._feature_names(), dtype=object)


class RawError(_Compressor):
    """S0: the raw σ vector (the leaky baseline)."""

    rep_name = "S0"

    def transform(self, X) -> np.ndarray:
        return self._done(self._transform_common(X))

    def _feature_names(self):
        return [f"sigma_{i}" for i in range(self.n_pixels_in_)]


class FluxNormalizedError(_Compressor):
    """S1a/S1b: σ normalised like the flux, by its median (``norm='median'``) or its L2 norm (``'l2'``).

    Parameters
    ----------
    norm : {'median', 'l2'}
    """

    def __init__(self, norm: str = "median"):
        self.norm = norm

    def _name(self) -> str:
        return {"median": "S1a", "l2": "S1b"}.get(self.norm, "S1")

    def fit(self, X, y=None):
        if self.norm not in ("median", "l2"):
            raise QualityError(f"FluxNormalizedError: norm must be 'median' or 'l2', got {self.norm!r}")
        self._fit_common(X)
        _flux(X, self._name())
        return self

    def transform(self, X) -> np.ndarray:
        s = self._transform_common(X)
        f = _flux(X, self._name())
        scale = np.median(f, axis=1) if self.norm == "median" else np.linalg.norm(f, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._done(s / scale[:, None])

    def _feature_names(self):
        return [f"sigma_norm_{i}" for i in range(self.n_pixels_in_)]


class TemplateScale(_Compressor):
    """S2: e ≈ s·e0 + δ. Features: the scale s = σᵀe0/‖e0‖² and the residual norm ‖σ − s·e0‖.

    Parameters
    ----------
    template : {'mean', 'svd'}
        e0 is the mean training σ, or the leading right singular vector of the training σ
        (scaled to the mean's norm so that s stays near 1).
    log : bool
        Return log s and log ‖δ‖: SNR scales as 1/s, so logs make the relation additive.

    Attributes
    ----------
    e0_ : ndarray (n_pixels,)
        The template.
    """

    rep_name = "S2"

    def __init__(self, template: str = "mean", log: bool = True):
        self.template = template
        self.log = log

    def fit(self, X, y=None):
        s = self._fit_common(X)
        mean = s.mean(axis=0)
        if self.template == "mean":
            e0 = mean
        elif self.template == "svd":
            v = _top_right_singular(s, 1)[1][0]
            e0 = np.sign(v @ mean) * v * np.linalg.norm(mean)
        else:
            raise QualityError(f"TemplateScale: template must be 'mean' or 'svd', got {self.template!r}")
        if not np.any(e0):
            raise QualityError("S2: the training σ is all zero; no template can be fitted")
        self.e0_ = e0
        return self

    def decompose(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Scale s (n,) and residual δ = σ − s·e0 (n, n_pixels)."""
        check_is_fitted(self, "e0_")
        sig = self._transform_common(X)
        scale = sig @ self.e0_ / (self.e0_ @ self.e0_)
        return scale, sig - scale[:, None] * self.e0_[None, :]

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "e0_")
        sig = _sigma_array(X, type(self).__name__)
        self._transform_common(sig[:1])  # the pixel-count check, without a float64 copy of every row
        # the residual norms a block of rows at a time: the same numbers as decompose, without an
        # (n, n_pixels) float64 residual (this runs on every chunk of the streamed passes)
        F = np.empty((len(sig), 2))
        for i in range(0, len(sig), 256):
            scale, delta = self.decompose(sig[i:i + 256])
            F[i:i + 256, 0], F[i:i + 256, 1] = scale, np.sqrt(np.einsum("ij,ij->i", delta, delta))
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                F = np.log(F)
        return self._done(F)

    def _feature_names(self):
        return ["log_scale", "log_resid_norm"] if self.log else ["scale", "resid_norm"]


class PCATemplates(_Compressor):
    """S2b: projections of σ on the k leading (uncentred) principal templates of the training σ.

    Uncentred so that the first template is the mean shape and its coefficient the overall scale.

    Parameters
    ----------
    n_components : int
        k, the number of templates.

    Attributes
    ----------
    components_ : ndarray (k, n_pixels)
    explained_ : ndarray (k,)
        Fraction of the training Σσ² captured by each template.
    """

    rep_name = "S2b"

    def __init__(self, n_components: int = 5):
        self.n_components = n_components

    def fit(self, X, y=None):
        s = self._fit_common(X)
        k = self.n_components
        if not isinstance(k, (int, np.integer)) or k < 1 or k > min(s.shape):
            raise QualityError(f"S2b: n_components must be an integer in [1, {min(s.shape)}], got {k!r}")
        ev, comps = _top_right_singular(s, k)
        self.components_ = comps
        self.explained_ = ev / np.sum(s * s)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "components_")
        return self._done(self._transform_common(X) @ self.components_.T)

    def _feature_names(self):
        return [f"pc{i}" for i in range(self.n_components)]


class SortedQuantiles(_Compressor):
    """S3: ``n_quantiles`` evenly spaced quantiles (0 … 1) of each spectrum's σ values.

    Sorting throws away which pixel a value came from, i.e. the alignment with spectral features.
    """

    def __init__(self, n_quantiles: int = 11):
        self.n_quantiles = n_quantiles

    def _name(self) -> str:
        return f"S3_{self.n_quantiles}"

    def fit(self, X, y=None):
        if not isinstance(self.n_quantiles, (int, np.integer)) or self.n_quantiles < 2:
            raise QualityError(f"S3: n_quantiles must be an integer >= 2, got {self.n_quantiles!r}")
        self._fit_common(X)
        return self

    def transform(self, X) -> np.ndarray:
        s = self._transform_common(X)
        return self._done(np.quantile(s, np.linspace(0, 1, self.n_quantiles), axis=1).T)

    def _feature_names(self):
        return [f"q{q:.2f}" for q in np.linspace(0, 1, self.n_quantiles)]


class AggregateStats(_Compressor):
    """S3b: the ten aggregate statistics of each spectrum's σ (:data:`AGGREGATE_NAMES`)."""

    rep_name = "S3b"

    def transform(self, X) -> np.ndarray:
        s = self._transform_common(X)
        mean = s.mean(axis=1)
        std = s.std(axis=1)
        z = (s - mean[:, None]) / np.where(std > 0, std, np.nan)[:, None]
        q25, med, q75 = np.quantile(s, [0.25, 0.5, 0.75], axis=1)
        F = np.column_stack([mean, std, s.min(axis=1), s.max(axis=1), med, s.sum(axis=1), q25, q75,
                             (z ** 3).mean(axis=1), (z ** 4).mean(axis=1) - 3.0])
        return self._done(F)

    def _feature_names(self):
        return list(AGGREGATE_NAMES)


class ErrorNorm(_Compressor):
    """S4: the error norm ‖σ‖ alone (log by default: SNR_l2 = ‖flux‖ / ‖σ‖)."""

    rep_name = "S4"

    def __init__(self, log: bool = True):
        self.log = log

    def transform(self, X) -> np.ndarray:
        n = np.linalg.norm(self._transform_common(X), axis=1)
        with np.errstate(divide="ignore"):
            return self._done((np.log(n) if self.log else n)[:, None])

    def _feature_names(self):
        return ["log_sigma_norm" if self.log else "sigma_norm"]


#: name → (class, default keyword arguments)
REPRESENTATIONS: dict[str, tuple[type, dict]] = {
    "S0": (RawError, {}),
    "S1a": (FluxNormalizedError, {"norm": "median"}),
    "S1b": (FluxNormalizedError, {"norm": "l2"}),
    "S2": (TemplateScale, {}),
    "S2b": (PCATemplates, {}),
    "S3_11": (SortedQuantiles, {"n_quantiles": 11}),
    "S3_21": (SortedQuantiles, {"n_quantiles": 21}),
    "S3b": (AggregateStats, {}),
    "S4": (ErrorNorm, {}),
}


def make_compressor(name: str, **kw: Any) -> _Compressor:
    """An unfitted compressor for representation ``name`` (see the module table).

    Keyword arguments override the defaults, e.g. ``make_compressor("S2b", n_components=3)``.
    ``n_pca`` is accepted as an alias of ``n_components`` (the parameter ``quality.n_pca``) and
    ignored by representations that have no such setting.
    """
    if name not in REPRESENTATIONS:
        raise QualityError(f"unknown representation {name!r}; known: {', '.join(REPRESENTATIONS)}")
    cls, defaults = REPRESENTATIONS[name]
    kw = dict(kw)
    if "n_pca" in kw:
        n_pca = kw.pop("n_pca")
        if cls is PCATemplates:
            kw.setdefault("n_components", n_pca)
    return cls(**{**defaults, **kw})


def quality_features(X: QualityInput | np.ndarray, representation: str = "S4", *,
                     fit_on: QualityInput | np.ndarray | None = None, compressor: _Compressor | None = None,
                     **kw: Any) -> np.ndarray:
    """The observation-quality features of representation ``representation`` for ``X``.

    Parameters
    ----------
    X
        σ (or a :class:`QualityInput`) of the spectra to describe.
    representation
        A name from :data:`REPRESENTATIONS`; later notebooks pass the one Q2 chose
        (:func:`snrmoe_lib.analyses.q2.chosen_representation`).
    fit_on
        Training σ to fit templates on (S2, S2b); default ``X`` itself. Fit on the training split
        and transform the others, never the reverse.
    compressor
        An already fitted compressor: ``X`` is only transformed (``representation`` is ignored).
    **kw
        Passed to :func:`make_compressor` (e.g. ``n_pca``).

    Returns
    -------
    ndarray (n, n_features), float64
    """
    if compressor is None:
        compressor = make_compressor(representation, **kw).fit(X if fit_on is None else fit_on)
    return compressor.transform(X)
