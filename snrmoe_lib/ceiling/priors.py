"""The sampling prior of the random set: beta distributions stretched onto the configured ranges.

Variances (:func:`prior_variances`, for the Gaussian Bayesian bound), Fisher informations
(:func:`prior_informations`, for Van Trees) and the joint density (:func:`beta_density`, for
importance weights) of ``lo + (hi − lo) · Beta(a, b)`` per parameter, read from a
:class:`~snrmoe_lib.config.MockSpec`.
"""
from __future__ import annotations

from math import lgamma, log
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.data.mock.base import PARAM_NAMES, PARAM_SPEC_FIELD

__all__ = ["beta_variance", "beta_prior_information", "prior_variances", "prior_informations", "beta_density",
           "beta_sup_ratio"]


def beta_variance(lo: float, hi: float, a: float, b: float) -> float:
    """Variance of ``lo + (hi − lo) · Beta(a, b)``."""
    if a <= 0 or b <= 0:
        raise ValueError(f"beta shape must be positive, got ({a}, {b})")
    return float((hi - lo) ** 2 * a * b / ((a + b) ** 2 * (a + b + 1.0)))


def beta_prior_information(lo: float, hi: float, a: float, b: float) -> float:
    """Fisher information of the prior ``lo + (hi − lo) · Beta(a, b)`` about its location.

    ``J = (a+b−1)(a+b−2)(1/(a−2) + 1/(b−2)) / (hi−lo)²``, finite only for a, b > 2; returns
    ``inf`` otherwise (a density that does not vanish smoothly at the range edges carries infinite
    prior information, and the Van Trees bound with it is vacuous).
    """
    if hi <= lo:
        return float("inf")
    if a <= 2 or b <= 2:
        return float("inf")
    return float((a + b - 1) * (a + b - 2) * (1 / (a - 2) + 1 / (b - 2)) / (hi - lo) ** 2)


def prior_variances(source, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Variance of each parameter under the sampling prior.

    ``source`` is a :class:`~snrmoe_lib.config.MockSpec` (the random set's beta distributions) or
    a params table (the dataset's empirical variances, for real data).
    """
    if isinstance(source, pd.DataFrame):
        return np.array([float(np.var(source[n].to_numpy(np.float64))) for n in names])
    a, b = source.beta_shape
    return np.array([beta_variance(*getattr(source, PARAM_SPEC_FIELD[n]), a, b) for n in names])


def prior_informations(mock_spec, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Prior Fisher information of each parameter under the random set's beta prior (inf if vacuous)."""
    a, b = mock_spec.beta_shape
    return np.array([beta_prior_information(*getattr(mock_spec, PARAM_SPEC_FIELD[n]), a, b) for n in names])


def beta_density(mock_spec, table: pd.DataFrame, names: Sequence[str] = PARAM_NAMES) -> np.ndarray:
    """Joint density of the random set's independent beta prior at the table's parameters."""
    a, b = mock_spec.beta_shape
    logp = np.zeros(len(table))
    for n in names:
        lo, hi = getattr(mock_spec, PARAM_SPEC_FIELD[n])
        if hi <= lo:
            continue
        u = (table[n].to_numpy(np.float64) - lo) / (hi - lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = (a - 1) * np.log(u) + (b - 1) * np.log1p(-u) + lgamma(a + b) - lgamma(a) - lgamma(b) - np.log(hi - lo)
        logp += np.where((u > 0) & (u < 1), lp, -np.inf)
    return np.exp(logp)


def beta_sup_ratio(s: float, a: float, b: float) -> float:
    """sup_x Beta(s, s)(x) / Beta(a, b)(x) on (0, 1) (finite only for s ≥ max(a, b)).

    The ratio is ∝ x^(s−a) (1−x)^(s−b), largest at x* = (s−a) / (2s−a−b).
    """
    if s < max(a, b):
        return float("inf")
    p, q = s - a, s - b
    x = 0.5 if p + q == 0 else p / (p + q)
    lr = (p * log(x) if p > 0 else 0.0) + (q * log(1 - x) if q > 0 else 0.0)
    lnorm = (lgamma(a) + lgamma(b) - lgamma(a + b)) - (2 * lgamma(s) - lgamma(2 * s))
    return float(np.exp(lr + lnorm))
