"""The stars of the per-magnitude ceiling: a seeded sample of the nodes of a regular lattice.

One definition serves every place R²_max per magnitude is computed (the data notebook's calibration
row, the Fisher notebook, the Hub): :func:`lattice_axes` builds the axes from ranges and steps,
:func:`sample_lattice` draws ``n`` nodes without replacement and attaches the grid's fixed
observing conditions.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.mock.base import PARAM_NAMES

__all__ = ["lattice_axis", "lattice_axes", "sample_lattice", "GRID_CONDITIONS"]

#: The real grid products' fixed observing conditions (BRIEF §3): seeing 1.0″, zenith 22.5°, field
#: angle 0.325°, new moon, 12 × 900 s.
GRID_CONDITIONS = {"seeing": 1.0, "zenith": 22.5, "field_angle": 0.325, "n_exp": 12, "t_exp": 900.0, "moon": 0.0,
                   "redshift": 0.0}


def lattice_axis(lo: float, hi: float, step: float) -> np.ndarray:
    """Nodes ``lo, lo + step, …`` up to ``hi`` (inclusive within 1e-9 · step)."""
    if not step > 0 or hi < lo:
        raise ValueError(f"a lattice axis needs lo <= hi and step > 0, got ({lo}, {hi}, {step})")
    n = int(np.floor((hi - lo) / step + 1e-9)) + 1
    return np.round(lo + step * np.arange(n), 10)


def lattice_axes(teff: Sequence[float], teff_step: float, log_g: Sequence[float], log_g_step: float,
                 m_h: Sequence[float], m_h_step: float, a_m: Sequence[float], c_m: Sequence[float]) -> dict:
    """Parameter → node values, in :data:`PARAM_NAMES` order (a_M and C_M given as node lists)."""
    return {"T_eff": lattice_axis(*teff, teff_step), "log_g": lattice_axis(*log_g, log_g_step),
            "M_H": lattice_axis(*m_h, m_h_step), "a_M": np.asarray(a_m, float), "C_M": np.asarray(c_m, float)}


def sample_lattice(axes: Mapping[str, np.ndarray], n: int, seed: int, mag: float = 21.5,
                   conditions: Mapping[str, float] | None = None) -> pd.DataFrame:
    """``n`` nodes of the lattice ``axes`` drawn without replacement (all nodes when ``n`` ≥ their number).

    The draw depends only on (axes, n, seed): the rows come out in lattice order, so the first
    ``k`` rows of a larger draw are *not* a draw of ``k``; take a fresh draw for a smaller sample.

    Returns
    -------
    DataFrame
        The :data:`PARAM_NAMES` columns, the conditions (``GRID_CONDITIONS`` by default) and ``mag``.
    """
    missing = [k for k in PARAM_NAMES if k not in axes]
    if missing:
        raise KeyError(f"lattice axes lack {missing}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    shape = [len(axes[k]) for k in PARAM_NAMES]
    total = int(np.prod(shape))
    pick = np.sort(_rng("fisher.lattice_stars", seed).choice(total, size=min(n, total), replace=False))
    idx = np.unravel_index(pick, shape)
    df = pd.DataFrame({k: np.asarray(axes[k], float)[i] for k, i in zip(PARAM_NAMES, idx)})
    for k, v in (GRID_CONDITIONS if conditions is None else conditions).items():
        df[k] = v
    df["mag"] = float(mag)
    return df
