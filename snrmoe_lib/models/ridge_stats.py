"""Grouped sufficient statistics of weighted least squares (the input of every streamed Ridge fit).

A Ridge model ``y ≈ b + x·w`` minimising ``Σ wᵢ (yᵢ − b − xᵢ·w)² + α‖w‖²`` depends on the data only
through a few sums: ``Σw``, ``Σw x``, ``Σw y``, ``Σw xxᵀ``, ``Σw x y`` and ``Σw y²``. They are
accumulated chunk by chunk (float64, after subtracting a fixed per-feature shift taken from the first
chunk, so the centred Gram ``C = Σw (x − x̄)(x − x̄)ᵀ`` does not lose digits to cancellation). Memory
is O(D²) whatever the number of spectra N.

:class:`GramStats` holds one set of sums per group. One pass over the data fills every group (for
example every cell of SNR bin × physical bin); experts and the global model are then sums of groups
(:meth:`GramStats.collapse`), never a second pass. Soft assignments (an ``(n, G)`` weight matrix)
fill every group with its own sample weights.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from snrmoe_lib.features.flux import as_2d_float as _as_2d_float

__all__ = ["GramStats"]


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

