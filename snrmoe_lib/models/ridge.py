"""Out-of-core Ridge regression from sufficient statistics.

A Ridge model ``y ≈ b + x·w`` minimising ``Σ wᵢ (yᵢ − b − xᵢ·w)² + α‖w‖²`` depends on the data only
through a few sums: ``Σw``, ``Σw x``, ``Σw y``, ``Σw xxᵀ``, ``Σw x y`` and ``Σw y²``. They are
accumulated chunk by chunk (float64, after subtracting a fixed per-feature shift taken from the first
chunk, so the centred Gram ``C = Σw (x − x̄)(x − x̄)ᵀ`` does not lose digits to cancellation). Memory
is O(D²) whatever the number of spectra N.

Grouped accumulation
    :class:`GramStats` holds one set of sums per group. One pass over the data fills every group
    (for example every cell of SNR bin × physical bin); experts and the global model are then sums of
    groups (:meth:`GramStats.collapse`), never a second pass. Soft assignments (an ``(n, G)`` weight
    matrix) fill every group with its own sample weights.

α path
    :func:`solve_path` solves for many α from one eigendecomposition ``C = V Λ Vᵀ``:
    ``w(α) = V diag(1/(λ+α)) Vᵀ c``. The α is chosen on a validation split from that split's own
    sufficient statistics (:meth:`RidgePath.mse`), so validation is streamed too.

Features
    :class:`FluxFeatures` turns noisy flux into model inputs: the flux itself, optionally averaged
    over ``bin_pixels`` adjacent pixels (a fixed linear map; with 4096 pixels and ``bin_pixels=4``,
    D = 1024, about one resolution element per feature). Centring is the intercept's job.

Streaming over a dataset
    :func:`stream_stats` and :func:`stream_predict` read through :func:`snrmoe_lib.passes.split_pass`,
    which draws the noise on the fly (keyed by (seed, row), so results do not depend on the chunk
    size) and holds a few chunks of spectra at most.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin

from snrmoe_lib.data.passes import split_pass
from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.features.flux import FluxFeatures, as_2d_float as _as_2d_float

__all__ = [
    "GramStats",
    "RidgePath",
    "solve_path",
    "StreamingRidge",
    "stream_stats",
    "stream_predict",
]


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")


# ============================================================================ sufficient statistics


def _syrk_lower(X: np.ndarray, S: np.ndarray) -> None:
    """``S += XᵀX`` in place, lower triangle only (BLAS dsyrk: half the flops of a matmul, no temporary).

    ``S`` is C-ordered, so its transpose is a Fortran array BLAS can update without a copy; the
    upper triangle of ``S.T`` is the lower triangle of ``S``.
    """
    from scipy.linalg import blas

    Xf = np.ascontiguousarray(X, dtype=np.float64)
    out = blas.dsyrk(1.0, Xf.T, beta=1.0, c=S.T, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, S):  # pragma: no cover - only if BLAS had to copy
        S[...] = out.T


def _symmetric(S: np.ndarray) -> np.ndarray:
    """The full symmetric matrix from a Gram whose lower triangle holds the sums."""
    L = np.tril(S)
    return L + np.tril(S, -1).T


class GramStats:
    """Grouped sufficient statistics of weighted least squares, accumulated in float64.

    Parameters
    ----------
    n_features : int
        D, the number of features.
    n_groups : int
        G, the number of groups (one Gram each). Groups receiving no rows cost no memory.
    center : bool
        Subtract a per-feature shift (the mean of the first chunk seen) before accumulating, and
        solve with an intercept. ``False``: no shift, no intercept.
    block_rows : int
        A group's rows are buffered until this many have arrived, then added to its Gram in one
        rank-k update: many groups per chunk otherwise give tiny, memory-bound updates. The buffer
        holds at most ``n_groups × block_rows × D`` floats, whatever N is. 0 disables it.

    Attributes
    ----------
    count_ : ndarray (G,) int
        Rows with non-zero weight per group.
    sum_w_ : ndarray (G,)
        Σw per group.
    sxx_ : list of ndarray (D, D) or None
        Σw (x−shift)(x−shift)ᵀ per group, lower triangle only (read it with :meth:`gram`).
    shift_ : ndarray (D,) or None
        The fixed shift subtracted from every x (``None`` until the first update).
    """

    def __init__(self, n_features: int, n_groups: int = 1, center: bool = True, block_rows: int = 512):
        if int(n_features) <= 0 or int(n_groups) <= 0:
            raise ValueError(f"n_features and n_groups must be positive, got {n_features}, {n_groups}")
        self.n_features = int(n_features)
        self.n_groups = int(n_groups)
        self.center = bool(center)
        D, G = self.n_features, self.n_groups
        self.shift_: np.ndarray | None = None if center else np.zeros(D)
        self.count_ = np.zeros(G, dtype=np.int64)
        self.sum_w_ = np.zeros(G)
        self.sx_ = np.zeros((G, D))
        self.sy_ = np.zeros(G)
        self.sxy_ = np.zeros((G, D))
        self.syy_ = np.zeros(G)
        self.sxx_: list[np.ndarray | None] = [None] * G  # allocated on first use
        self.block_rows = int(block_rows)
        self._buf: list[list[np.ndarray]] = [[] for _ in range(G)]
        self._buf_n = np.zeros(G, dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def update(self, X, y, groups=None, sample_weight=None) -> "GramStats":
        """Add a chunk of rows.

        Parameters
        ----------
        X : array (n, D)
        y : array (n,)
        groups : int array (n,), optional
            Hard assignment of each row to one group in ``[0, G)``. Default: all rows in group 0.
        sample_weight : array (n,) or (n, G), optional
            Non-negative weights. A 2-D array gives soft assignments: row i enters every group g
            with weight ``sample_weight[i, g]`` (then ``groups`` must be omitted).
        """
        X = _as_2d_float(X)
        n, D = X.shape
        if D != self.n_features:
            raise ValueError(f"X has {D} features, these statistics hold {self.n_features}")
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != n:
            raise ValueError(f"y has {len(y)} values for {n} rows of X")
        if n == 0:
            return self
        _check_finite(X, "X")
        _check_finite(y, "y")
        if self.shift_ is None:
            # a fixed reference near the data's mean: keeps Σ(x−s)(x−s)ᵀ small, so centring later
            # subtracts numbers of similar size to the result instead of ~1/var larger ones
            self.shift_ = X.mean(axis=0, dtype=np.float64)
        # one pass: float32 → float64 and the shift together (accumulation is always float64)
        Xs = np.subtract(X, self.shift_, dtype=np.float64) if self.center else np.asarray(X, dtype=np.float64)
        soft = sample_weight is not None and np.ndim(sample_weight) == 2
        if soft:
            W = np.asarray(sample_weight, dtype=np.float64)
            if groups is not None:
                raise ValueError("give either groups (hard) or a 2-D sample_weight (soft), not both")
            if W.shape != (n, self.n_groups):
                raise ValueError(f"soft sample_weight must have shape ({n}, {self.n_groups}), got {W.shape}")
            _check_finite(W, "sample_weight")
            if np.any(W < 0):
                raise ValueError("sample_weight must be non-negative")
            for g in range(self.n_groups):
                self._add(g, Xs, y, W[:, g])
            return self
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64).ravel()
            if len(w) != n:
                raise ValueError(f"sample_weight has {len(w)} values for {n} rows")
            _check_finite(w, "sample_weight")
            if np.any(w < 0):
                raise ValueError("sample_weight must be non-negative")
        if groups is None:
            self._add(0, Xs, y, w)
            return self
        groups = np.asarray(groups).ravel()
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} labels for {n} rows")
        if not np.issubdtype(groups.dtype, np.integer):
            raise ValueError(f"groups must be integer labels, got dtype {groups.dtype}")
        if groups.min() < 0 or groups.max() >= self.n_groups:
            raise ValueError(f"group labels must be in [0, {self.n_groups}), got [{groups.min()}, {groups.max()}]")
        if np.all(groups == groups[0]):
            self._add(int(groups[0]), Xs, y, w)
            return self
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(self.n_groups + 1))
        for g in range(self.n_groups):
            idx = order[bounds[g]:bounds[g + 1]]
            if len(idx):
                self._add(g, Xs[idx], y[idx], None if w is None else w[idx])
        return self

    def _add(self, g: int, X: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> None:
        if w is not None:
            keep = w > 0
            if not keep.all():
                X, y, w = X[keep], y[keep], w[keep]
            if len(y) == 0:
                return
        if self.sxx_[g] is None:
            self.sxx_[g] = np.zeros((self.n_features, self.n_features))
        if w is None:
            Xr = np.ascontiguousarray(X)
            # Σx and Σyx in one pass over the rows (a (2, n) @ (n, D) product)
            sums = np.vstack([np.ones(len(y)), y]) @ Xr
            self.sum_w_[g] += len(y)
            self.sx_[g] += sums[0]
            self.sy_[g] += y.sum()
            self.sxy_[g] += sums[1]
            self.syy_[g] += y @ y
        else:
            # √w scaling keeps the Gram a single AᵀA product, which BLAS computes as a symmetric
            # rank-k update (half the flops of a general matrix product)
            Xr = X * np.sqrt(w)[:, None]
            self.sum_w_[g] += w.sum()
            self.sx_[g] += w @ X
            self.sy_[g] += w @ y
            self.sxy_[g] += (w * y) @ X
            self.syy_[g] += w @ (y * y)
        self.count_[g] += len(y)
        if len(Xr) >= self.block_rows and not self._buf_n[g]:
            _syrk_lower(Xr, self.sxx_[g])
            return
        self._buf[g].append(np.array(Xr, dtype=np.float64, copy=True))  # a copy: X may be the caller's
        self._buf_n[g] += len(Xr)
        if self._buf_n[g] >= self.block_rows:
            self._flush(g)

    def _flush(self, g: int) -> None:
        if self._buf_n[g]:
            block = self._buf[g][0] if len(self._buf[g]) == 1 else np.concatenate(self._buf[g])
            _syrk_lower(block, self.sxx_[g])
            self._buf[g], self._buf_n[g] = [], 0

    def flush(self) -> "GramStats":
        """Add every buffered row to its Gram (done automatically before any read)."""
        for g in np.flatnonzero(self._buf_n):
            self._flush(int(g))
        return self

    # ------------------------------------------------------------------ combining
    def _compatible(self, other: "GramStats") -> None:
        if other.n_features != self.n_features or other.center != self.center:
            raise ValueError("statistics differ in n_features or centring and cannot be combined")

    def _rebase(self, g: int, new_shift: np.ndarray) -> tuple:
        """Sums of group g re-expressed around ``new_shift`` (exact algebra, float64)."""
        sw, sx, sy, sxy = self.sum_w_[g], self.sx_[g], self.sy_[g], self.sxy_[g]
        sxx = self.sxx_[g]
        if self.shift_ is None or np.array_equal(self.shift_, new_shift):
            return sw, sx, sy, sxy, sxx
        d = self.shift_ - new_shift  # x − new = (x − old) + d
        sx2 = sx + sw * d
        sxy2 = sxy + sy * d
        sxx2 = None
        if sxx is not None:
            sxx2 = sxx + np.outer(sx, d) + np.outer(d, sx) + sw * np.outer(d, d)
        return sw, sx2, sy, sxy2, sxx2

    def merge(self, other: "GramStats") -> "GramStats":
        """Add another accumulator's sums (same groups) into this one, in place."""
        self._compatible(other)
        self.flush()
        other.flush()
        if other.n_groups != self.n_groups:
            raise ValueError(f"cannot merge {other.n_groups} groups into {self.n_groups}")
        if other.shift_ is None:
            return self
        if self.shift_ is None:
            self.shift_ = other.shift_.copy()
        for g in range(self.n_groups):
            if other.count_[g] == 0:
                continue
            sw, sx, sy, sxy, sxx = other._rebase(g, self.shift_)
            self._accumulate(g, other.count_[g], sw, sx, sy, sxy, other.syy_[g], sxx)
        return self

    def _accumulate(self, g, count, sw, sx, sy, sxy, syy, sxx) -> None:
        self.count_[g] += count
        self.sum_w_[g] += sw
        self.sx_[g] += sx
        self.sy_[g] += sy
        self.sxy_[g] += sxy
        self.syy_[g] += syy
        if sxx is not None:
            if self.sxx_[g] is None:
                self.sxx_[g] = np.zeros((self.n_features, self.n_features))
            self.sxx_[g] += sxx

    def collapse(self, mapping: Sequence[int] | np.ndarray, n_groups: int | None = None) -> "GramStats":
        """New statistics whose group ``mapping[g]`` is the sum of this object's groups g.

        ``mapping[g] < 0`` leaves group g out. For example, with SNR-bin × physical-bin cells
        ``mapping = cell // n_phys`` gives the SNR experts and ``np.zeros(G)`` the global model.
        """
        mapping = np.asarray(mapping, dtype=np.int64).ravel()
        if len(mapping) != self.n_groups:
            raise ValueError(f"mapping has {len(mapping)} entries for {self.n_groups} groups")
        self.flush()
        n_out = int(mapping.max()) + 1 if n_groups is None else int(n_groups)
        if n_out <= 0 or mapping.max() >= n_out:
            raise ValueError(f"mapping targets must be in [0, {n_out})")
        out = GramStats(self.n_features, n_out, center=self.center, block_rows=self.block_rows)
        out.shift_ = None if self.shift_ is None else self.shift_.copy()
        for g, t in enumerate(mapping):
            if t >= 0 and self.count_[g] > 0:
                out._accumulate(int(t), self.count_[g], self.sum_w_[g], self.sx_[g], self.sy_[g],
                                self.sxy_[g], self.syy_[g], self.sxx_[g])
        return out

    def total(self) -> "GramStats":
        """All groups summed into one (the global model's statistics)."""
        return self.collapse(np.zeros(self.n_groups, dtype=np.int64), 1)

    # ------------------------------------------------------------------ solving
    def gram(self, g: int = 0) -> np.ndarray:
        """Σw (x−shift)(x−shift)ᵀ of group g as a full symmetric matrix (accumulated: lower triangle)."""
        if self.sxx_[g] is None:
            return np.zeros((self.n_features, self.n_features))
        self._flush(g)
        return _symmetric(self.sxx_[g])

    def centered(self, g: int = 0) -> dict:
        """Centred Gram ``C``, cross term ``c`` and means of group g (what the solver needs)."""
        if not 0 <= g < self.n_groups:
            raise IndexError(f"group {g} out of range [0, {self.n_groups})")
        sw = self.sum_w_[g]
        if self.count_[g] == 0 or sw <= 0:
            raise ValueError(f"group {g} holds no rows (or only zero weights): nothing to fit")
        sxx = self.gram(g)
        if self.center:
            xm = self.sx_[g] / sw  # shifted mean
            ym = self.sy_[g] / sw
            C = sxx - sw * np.outer(xm, xm)
            c = self.sxy_[g] - sw * xm * ym
            syy = self.syy_[g] - sw * ym * ym
        else:
            xm, ym = np.zeros(self.n_features), 0.0
            C, c, syy = sxx.copy(), self.sxy_[g].copy(), self.syy_[g]
        return {"C": C, "c": c, "x_mean": xm, "y_mean": ym, "syy": syy, "sum_w": sw,
                "count": int(self.count_[g]), "shift": self.shift_}

    def nbytes(self) -> int:
        """Memory held by the sums (bytes), after flushing the row buffers."""
        self.flush()
        return int(sum(a.nbytes for a in self.sxx_ if a is not None) + self.sx_.nbytes + self.sxy_.nbytes)


# ============================================================================ α path


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
        denom = lam[:, None] + alphas[None, :]
        tol = max(lam.max(), 1.0) * D * np.finfo(float).eps
        inv = np.where(denom > tol, 1.0 / np.where(denom > tol, denom, 1.0), 0.0)
        return V @ (q[:, None] * inv), (lam[:, None] * inv).sum(axis=0)
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

    def _validate(self, X, y, sample_weight):
        X = _as_2d_float(X)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != y.shape:
                raise ValueError(f"sample_weight must have shape {y.shape}, got {sample_weight.shape}")
        return X, y, sample_weight

    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None) -> "StreamingRidge":
        """Fit on in-memory arrays (accumulated in chunks of ``chunk_size`` rows)."""
        X, y, sample_weight = self._validate(X, y, sample_weight)
        if len(X) == 0:
            raise ValueError("cannot fit on 0 samples")
        self.stats_ = self._new_stats(X.shape[1])
        self._accumulate(X, y, sample_weight)
        return self._solve(X_val, y_val)

    def partial_fit(self, X, y, sample_weight=None) -> "StreamingRidge":
        """Add a chunk to the statistics and re-solve (the model is usable after every call)."""
        X, y, sample_weight = self._validate(X, y, sample_weight)
        if not hasattr(self, "stats_"):
            self.stats_ = self._new_stats(X.shape[1])
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
        est._group = g
        return est._solve(val_stats=val_stats, val_group=g if val_group is None else val_group)

    def _solve(self, X_val=None, y_val=None, val_stats: GramStats | None = None, val_group: int = 0):
        g = getattr(self, "_group", 0)
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
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this StreamingRidge is not fitted yet; call fit or partial_fit first")
        X = _as_2d_float(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted with {self.n_features_in_}")
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
