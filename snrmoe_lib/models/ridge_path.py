"""Ridge α paths: every α from one eigendecomposition.

One solve serves both Ridge fitters of the package: :func:`eigen_ridge_path` turns an
eigendecomposition (eigenvalues λ, basis, targets projected on the eigenvectors) into the
coefficients ``w(α) = basis · diag(1/(λ+α)) · proj`` for a whole α grid, α = 0 giving the
minimum-norm least-squares solution.

* :func:`solve_path` solves a group of :class:`~snrmoe_lib.models.ridge_stats.GramStats` (the
  streamed, out-of-core fit): ``C = V Λ Vᵀ`` of the centred Gram. α is chosen on a validation split
  from that split's own sufficient statistics (:meth:`RidgePath.mse`), so validation is streamed too.
* :class:`AlphaPathRidge` fits in-memory, standardised features and several targets at once,
  decomposing the Gram ``XᵀX`` or, with fewer samples than features, the kernel ``XXᵀ``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.models.ridge_stats import GramStats

__all__ = [
    "DEFAULT_ALPHAS",
    "AUTO_CHOLESKY_MAX",
    "MethodChangeWarning",
    "eigen_tolerance",
    "ridge_filter",
    "eigen_ridge_path",
    "RidgePath",
    "solve_path",
    "AlphaPathRidge",
]

#: The default α grid of the α-path fitters (log-spaced, 1e-2 … 1e5).
DEFAULT_ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


class MethodChangeWarning(UserWarning):
    """A fit changed its method because of the data (e.g. fewer samples than features)."""


# ============================================================================ the shared solve


def eigen_tolerance(lam: np.ndarray, size: int, floor: float = 0.0) -> float:
    """Eigenvalues at or below ``max(λ_max, floor) · size · ε`` are treated as zero (rank deficiency)."""
    return max(lam.max(), floor) * size * np.finfo(np.float64).eps


def ridge_filter(lam: np.ndarray, alphas: np.ndarray, tol: float) -> np.ndarray:
    """The spectral filter 1/(λ+α) per eigenvalue and α, (k, A); 0 where λ + α ≤ ``tol``."""
    denom = lam[:, None] + alphas[None, :]
    return np.where(denom > tol, 1.0 / np.where(denom > tol, denom, 1.0), 0.0)


def eigen_ridge_path(lam: np.ndarray, basis: np.ndarray, proj: np.ndarray, alphas: np.ndarray, tol: float,
                     per_alpha: bool = False) -> np.ndarray:
    """Ridge coefficients for every α from one eigendecomposition.

    Parameters
    ----------
    lam : ndarray (k,)
        Eigenvalues (≥ 0) of the Gram (or kernel) matrix.
    basis : ndarray (p, k)
        Maps eigen-coordinates to features: the eigenvectors, or ``Xᵀ U`` in the kernel form.
    proj : ndarray (k, t)
        The (centred) targets projected on the eigenvectors.
    alphas : ndarray (A,)
        Penalties; α = 0 gives the minimum-norm least-squares solution.
    tol : float
        Components with λ + α ≤ ``tol`` are dropped (see :func:`eigen_tolerance`).
    per_alpha : bool
        Evaluation order only: ``False`` multiplies by :func:`ridge_filter` and maps every α back in
        one matrix product; ``True`` divides by λ + α and maps back one α at a time. The two agree
        to rounding; each caller keeps the order its published numbers were made with.

    Returns
    -------
    ndarray (A, p, t)
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if per_alpha:
        out = []
        for a in alphas:
            denom = lam + a
            keep = (denom > tol)[:, None]
            out.append(basis @ np.where(keep, proj / np.where(keep, denom[:, None], 1.0), 0.0))
        return np.stack(out)
    k, t = proj.shape
    inv = ridge_filter(lam, alphas, tol)
    shrunk = (proj[:, None, :] * inv[:, :, None]).reshape(k, len(alphas) * t)
    return (basis @ shrunk).reshape(basis.shape[0], len(alphas), t).transpose(1, 0, 2)


# ============================================================================ from sufficient statistics


@dataclass
class RidgePath:
    """Ridge solutions for several α of one group.

    Attributes
    ----------
    alphas : ndarray (A,)
    coef : ndarray (A, D)
        Weights in the original feature units.
    intercept : ndarray (A,)
    dof : ndarray (A,)
        Effective degrees of freedom Σ λ/(λ+α) (the intercept adds one more); NaN on the
        Cholesky path, which does not compute the spectrum.
    sum_w : float
        Σw of the training rows.
    train_mse : ndarray (A,)
        Weighted mean squared training residual.
    """

    alphas: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    dof: np.ndarray
    sum_w: float
    train_mse: np.ndarray

    def mse(self, stats: GramStats, g: int = 0) -> np.ndarray:
        """Weighted mean squared error of every α on the rows summarised by ``stats`` group g.

        Exact algebra on the other split's sums, so a validation split is scored without keeping
        its spectra: ``Σw r² = Σw y² − 2 Σw y p + Σw p²`` with ``p = b + x·w``.
        """
        sw = stats.sum_w_[g]
        if stats.count_[g] == 0 or sw <= 0:
            raise ValueError(f"group {g} of the scoring statistics holds no rows")
        if stats.sxx_[g] is None:
            raise ValueError(f"group {g} has no Gram")
        shift = stats.shift_ if stats.shift_ is not None else np.zeros(stats.n_features)
        W = self.coef.T  # (D, A)
        b = self.intercept + shift @ W  # intercept in the shifted coordinates of `stats`
        sx, sy, sxy, syy, sxx = stats.sx_[g], stats.sy_[g], stats.sxy_[g], stats.syy_[g], stats.gram(g)
        xw = sx @ W  # Σw x'·w
        quad = np.einsum("da,da->a", W, sxx @ W)
        ss = syy - 2 * (b * sy + sxy @ W) + (b * b * sw + 2 * b * xw + quad)
        return np.maximum(ss, 0.0) / sw

    def gcv(self) -> np.ndarray:
        """Generalised cross-validation score per α (for when no validation split exists)."""
        if np.any(np.isnan(self.dof)):
            raise ValueError("GCV needs the degrees of freedom: solve the path with solver='eigh'")
        n = self.sum_w
        denom = (1.0 - (self.dof + 1.0) / n) ** 2
        return np.where(denom > 0, self.train_mse / np.where(denom > 0, denom, 1.0), np.inf)

    def best(self, scores: np.ndarray) -> int:
        """Index of the best (lowest) score; ties go to the larger α (the simpler model)."""
        scores = np.asarray(scores, dtype=float)
        if not np.any(np.isfinite(scores)):
            raise ValueError("no finite score to choose α from")
        s = np.where(np.isfinite(scores), scores, np.inf)
        best = np.flatnonzero(s <= s.min() * (1 + 1e-12) + 1e-300)
        return int(best[np.argmax(self.alphas[best])])


#: Up to this many α, 'auto' factorises per α (Cholesky) instead of one eigendecomposition:
#: ``benchmarks/bench_ridge.py`` measures one eigh ≈ 12–14 Cholesky factorisations at D = 1024 on a
#: 2-core machine, so below ~10 α the Cholesky path is the cheaper one.
AUTO_CHOLESKY_MAX = 10


def _check_alphas(alphas) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64)).ravel()
    if a.size == 0:
        raise ValueError("give at least one alpha")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"alphas must be finite and >= 0, got {a.tolist()}")
    return a


def _solve(C: np.ndarray, c: np.ndarray, alphas: np.ndarray, solver: str, g: int):
    """Weights (D, A) and effective degrees of freedom (A,) for the centred system (C + αI) w = c."""
    D = C.shape[0]
    if solver == "eigh":
        lam, V = np.linalg.eigh(C)
        lam = np.clip(lam, 0.0, None)  # a Gram is PSD; tiny negatives are rounding
        q = V.T @ c
        tol = eigen_tolerance(lam, D, floor=1.0)
        W = np.ascontiguousarray(eigen_ridge_path(lam, V, q[:, None], alphas, tol)[:, :, 0].T)
        return W, (lam[:, None] * ridge_filter(lam, alphas, tol)).sum(axis=0)
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    W = np.empty((D, len(alphas)))
    dof = np.empty(len(alphas))
    eye = np.eye(D)
    for i, a in enumerate(alphas):
        try:
            fac = cho_factor(C + a * eye, lower=True, check_finite=False)
        except LinAlgError as exc:
            raise ValueError(f"the Gram of group {g} + α={a:g}·I is singular; use solver='eigh'") from exc
        W[:, i] = cho_solve(fac, c, check_finite=False)
    dof[:] = np.nan  # the trace needs the spectrum: GCV uses the eigh path
    return W, dof


def solve_path(stats: GramStats, alphas: Iterable[float], g: int = 0, solver: str = "eigh") -> RidgePath:
    """Ridge weights of group g for every α.

    Parameters
    ----------
    stats : GramStats
    alphas : sequence of float
        Penalties (>= 0). α = 0 gives the minimum-norm least-squares solution on the eigh path.
    g : int
        The group to solve.
    solver : {'eigh', 'cholesky', 'auto'}
        ``'eigh'``: one eigendecomposition serves every α. ``'cholesky'``: one factorisation per α
        (needs α > 0 or a full-rank Gram). A symmetric eigendecomposition costs about as much as
        ``AUTO_CHOLESKY_MAX`` Cholesky factorisations, so ``'auto'`` uses Cholesky up to that many
        α (all > 0) and eigh beyond.
    """
    alphas = _check_alphas(alphas)
    if solver not in ("eigh", "cholesky", "auto"):
        raise ValueError(f"solver must be 'eigh', 'cholesky' or 'auto', got {solver!r}")
    if solver == "auto":
        solver = "cholesky" if (len(alphas) <= AUTO_CHOLESKY_MAX and alphas.min() > 0) else "eigh"
    m = stats.centered(g)
    C, c = m["C"], m["c"]
    with one_blas_thread():
        W, dof = _solve(C, c, alphas, solver, g)
    xm, ym, shift = m["x_mean"], m["y_mean"], m["shift"]
    b_shifted = ym - xm @ W  # intercept in shifted coordinates
    intercept = b_shifted - shift @ W if stats.center else np.zeros(len(alphas))
    # training residual from the centred sums: Σw r² = Syy − 2 wᵀc + wᵀCw
    ss = m["syy"] - 2 * (c @ W) + np.einsum("da,da->a", W, C @ W)
    return RidgePath(alphas=alphas, coef=W.T.copy(), intercept=np.asarray(intercept, float), dof=dof,
                     sum_w=float(m["sum_w"]), train_mse=np.maximum(ss, 0.0) / m["sum_w"])

# ============================================================================ in memory, several targets


def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition with BLAS on one thread.

    The tridiagonal reduction is a long chain of small, memory-bound BLAS-2 calls: threads add
    synchronisation and no speed, and on a shared, oversubscribed machine OpenBLAS threads made
    it up to 40× slower (0.4 s on one thread against 19 s on two, for an 800 × 800 kernel).
    """
    from scipy.linalg import eigh

    with one_blas_thread():
        return eigh(a, check_finite=False)


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """1 − SS_res/SS_tot (NaN for constant labels), as :func:`snrmoe_lib.evaluation.metrics.r2`."""
    if not (np.all(np.isfinite(y_true)) and np.all(np.isfinite(y_pred))):
        raise ValueError("NaN or infinite values in the labels or predictions")
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / ss_tot)


class AlphaPathRidge(RegressorMixin, BaseEstimator):
    """Ridge regression for a whole α grid from one eigendecomposition, plus min-norm OLS.

    With n samples and p features the training design X (standardised) is decomposed once: the
    Gram ``XᵀX`` (p × p) when n > p, else the kernel ``XXᵀ`` (n × n, the "dual" form). Every α
    then costs one small matrix product (:func:`eigen_ridge_path`). Several targets (columns of
    ``y``) share the decomposition, so for example log g, the SNR and shuffled labels cost one fit.

    Parameters
    ----------
    alphas : sequence of float
        The α grid (all > 0).
    standardize : bool
        Centre and scale features with the training mean and standard deviation.

    Attributes
    ----------
    coef_path_ : ndarray (n_alphas, p, n_targets)
        Coefficients in standardised units for each α.
    coef_ols_ : ndarray (p, n_targets)
        Minimum-norm least-squares coefficients.
    alpha_index_ : ndarray (n_targets,)
        Index of the α chosen per target by :meth:`select` (until then: the largest α).
    dual_ : bool
        Whether the kernel (n ≤ p) form was used.
    rank_ : int
        Numerical rank of the training design.
    n_features_in_ : int
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, standardize: bool = True):
        self.alphas = alphas
        self.standardize = standardize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _check_alphas(self) -> np.ndarray:
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {self.alphas!r}")
        return alphas

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        p = X.shape[1]
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) if self.standardize else np.ones(p)
        const = np.flatnonzero(self.scale_ == 0)
        if self.standardize and const.size:
            raise ValueError(f"feature column(s) {const[:8].tolist()} are constant in the training data")
        return (X - self.mean_) / self.scale_

    def fit(self, X, y) -> "AlphaPathRidge":
        """Decompose the training design and solve every α (and OLS) for every target."""
        alphas = self._check_alphas()
        X, Y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True,
                             ensure_min_samples=2)
        Y = np.asarray(Y, dtype=np.float64)
        self.single_target_ = Y.ndim == 1
        Y = Y[:, None] if Y.ndim == 1 else Y
        n, p = X.shape
        Xs = self._standardized(X)
        self.y_mean_ = Y.mean(axis=0)
        Yc = Y - self.y_mean_
        self.dual_ = n <= p
        if self.dual_:
            warnings.warn(
                f"{n} training samples for {p} features: ordinary least squares is under-determined, "
                "so the OLS reference is the minimum-norm solution (it interpolates the training set) "
                "and Ridge is solved in its dual (kernel) form", MethodChangeWarning, stacklevel=2)
            w, U = _eigh(Xs @ Xs.T)
            basis = Xs.T @ U            # p × n: V·S
            b = U.T @ Yc                # n × t
        else:
            w, basis = _eigh(Xs.T @ Xs)  # p × p
            b = basis.T @ (Xs.T @ Yc)    # p × t
        w = np.clip(w, 0.0, None)
        tol = eigen_tolerance(w, max(n, p))
        self.coef_path_ = eigen_ridge_path(w, basis, b, alphas, tol, per_alpha=True)
        self.coef_ols_ = eigen_ridge_path(w, basis, b, np.zeros(1), tol)[0]
        self.rank_ = int(np.sum(w > tol))
        self.alpha_index_ = np.full(Y.shape[1], len(alphas) - 1)
        return self

    def _scaled(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_path_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.mean_) / self.scale_

    def _out(self, P: np.ndarray) -> np.ndarray:
        return P[..., 0] if self.single_target_ else P

    def predict_path(self, X) -> np.ndarray:
        """Predictions for every α: (n_alphas, n, n_targets) (targets squeezed for 1-D ``y``)."""
        Xs = self._scaled(X)
        return self._out(np.einsum("np,apt->ant", Xs, self.coef_path_, optimize=True) + self.y_mean_)

    def select(self, X_val, y_val) -> "AlphaPathRidge":
        """Choose α per target by the validation R²."""
        Yv = np.asarray(y_val, dtype=np.float64)
        Yv = Yv[:, None] if Yv.ndim == 1 else Yv
        P = self.predict_path(X_val)
        P = P[..., None] if self.single_target_ else P
        scores = np.array([[_r2(Yv[:, t], P[a, :, t]) for t in range(Yv.shape[1])] for a in range(len(P))])
        self.val_r2_ = scores
        self.alpha_index_ = np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)
        return self

    @property
    def alpha_(self) -> np.ndarray:
        """The chosen α per target."""
        check_is_fitted(self, "coef_path_")
        return np.asarray(self.alphas, dtype=float)[self.alpha_index_]

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients (standardised units) at the chosen α: (p, n_targets) or (p,)."""
        check_is_fitted(self, "coef_path_")
        c = np.stack([self.coef_path_[a, :, t] for t, a in enumerate(self.alpha_index_)], axis=1)
        return self._out(c)

    def predict(self, X) -> np.ndarray:
        """Predictions at the chosen α (per target)."""
        Xs = self._scaled(X)
        c = self.coef_
        c = c[:, None] if self.single_target_ else c
        return self._out(Xs @ c + self.y_mean_)

    def predict_ols(self, X) -> np.ndarray:
        """Predictions of the minimum-norm least-squares fit."""
        return self._out(self._scaled(X) @ self.coef_ols_ + self.y_mean_)
