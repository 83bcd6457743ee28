"""Fixed-weight blends: one set of mixing weights for every spectrum (no per-spectrum routing).

The attribution waterfall's non-routing control: a convex combination of frozen models' predictions
(the SNR experts and the global model, or experts of random partitions), ``ŷ = Σ_k w_k ŷ_k`` with
``w ≥ 0`` and ``Σ w = 1``, the weights fitted on held-out spectra. It measures how much of a
mixture's gain comes from averaging several models rather than from sending each spectrum to the
right one.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

__all__ = ["blend_weights", "blend"]


def _block(P, name: str = "predictions") -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ValueError(f"{name} must be (n_spectra, n_models), got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{name} hold NaN or infinite values")
    return P


def blend_weights(P, y) -> np.ndarray:
    """Convex weights minimising ``‖P w − y‖²`` (``w ≥ 0``, ``Σ w = 1``).

    Non-negative least squares with the sum-to-one constraint as one heavily weighted extra row
    (exact to ~1e-9 on the sum; the weights are renormalised).

    Parameters
    ----------
    P : array (n, K)
        Frozen models' predictions on held-out spectra.
    y : array (n,)

    Returns
    -------
    ndarray (K,)
    """
    P = _block(P)
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) != len(P) or len(y) < 2:
        raise ValueError(f"need at least 2 targets matching {len(P)} prediction rows, got {len(y)}")
    lam = 1e4 * max(float(np.sqrt(np.mean(P ** 2))), 1.0) * np.sqrt(len(y))
    A = np.vstack([P, np.full((1, P.shape[1]), lam)])
    b = np.concatenate([y, [lam]])
    w, _ = nnls(A, b, maxiter=50 * P.shape[1])
    s = w.sum()
    if not s > 0:
        raise ValueError("no convex blend found (all weights zero)")
    return w / s


def blend(P, w) -> np.ndarray:
    """``P @ w`` for predictions ``P`` (n, K) and weights ``w`` (K,)."""
    P = _block(P)
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.shape != (P.shape[1],):
        raise ValueError(f"{P.shape[1]} models but {w.size} weights")
    return P @ w
