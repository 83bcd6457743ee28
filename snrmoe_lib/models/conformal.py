"""The split-conformal quantile: one implementation for the deployed model's intervals and the notebooks'.

For n calibration scores (absolute, possibly σ-normalised, validation residuals) the interval
ŷ ± q with q the ⌈(n + 1)·level⌉-th smallest score covers at least ``level`` of exchangeable new
rows (and at most level + 1/(n + 1)). When ⌈(n + 1)·level⌉ > n no finite quantile has that
guarantee: :func:`conformal_quantile` returns ``inf`` and each caller states its own policy —
:class:`~snrmoe_lib.models.deployed.SplitConformalPerBin` (the deployed model, which must give every
star a finite interval) pools all validation residuals for such a bin, and
:func:`snrmoe_lib.evaluation.intervals.calibrate` (the notebooks' Mondrian calibration, which
reports what the data support) falls back to the global quantile, itself ``inf`` when even all
rows are too few.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_vector", "check_level", "conformal_rank", "conformal_quantile", "per_bin_quantile"]


def as_vector(a, name: str, n: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 vector (one value per star), else a ValueError naming ``name``."""
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per star (1-D), got shape {v.shape}")
    if n is not None and len(v) != n:
        raise ValueError(f"{name} has {len(v)} values for {n} stars")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return v


def check_level(level: float) -> float:
    """A nominal coverage level as a float in (0, 1), else a ValueError."""
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"a coverage level is a fraction in (0, 1), got {level}")
    return float(level)


def conformal_rank(n: int, level: float) -> int:
    """⌈(n + 1)·level⌉: the rank (1-based) of the conformal quantile among n scores."""
    return int(np.ceil((int(n) + 1) * float(level)))


def conformal_quantile(scores, level: float) -> float:
    """The ⌈(n + 1)·level⌉-th smallest of ``|scores|`` (inf when n is too small for the level)."""
    s = np.sort(np.abs(as_vector(scores, "scores")))
    k = conformal_rank(len(s), check_level(level))
    return float(s[k - 1]) if 1 <= k <= len(s) else float("inf")


def per_bin_quantile(scores, bins: np.ndarray, n_bins: int, level: float) -> np.ndarray:
    """:func:`conformal_quantile` of the scores of each bin 0 … n_bins − 1 (inf for a bin too small)."""
    s, b = as_vector(scores, "scores"), np.asarray(bins)
    return np.array([conformal_quantile(s[b == k], level) for k in range(int(n_bins))], dtype=np.float64)
