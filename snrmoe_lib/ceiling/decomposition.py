"""Where log g's information lives: the Fisher matrix split over spectral features.

With independent pixels, ``F = Σ_pixels J_pᵀ J_p / σ_p²`` is a sum over pixels, so it splits
exactly over any partition of the pixels into windows: ``F = Σ_w F_w``. Per window this module
reports, per star,

* ``share``: the window's part of the unmarginalised information, F_gg,w / F_gg;
* ``survives_3d`` / ``survives_5d``: the window's own Schur decay — how much of *its* log g
  information survives marginalising (T_eff, [M/H]) or all four nuisances using that window
  alone (0 when the window cannot tell log g from the nuisances by itself);
* ``needed_3d`` / ``needed_5d``: the share of the *total* marginal information lost when the
  window is left out, 1 − I_marg(F − F_w) / I_marg(F) — what the other windows cannot replace.

The windows are the gravity mechanisms of the 7100–8850 Å window (see :data:`MECHANISMS`): the
pressure wings of the Ca II triplet, of Na I 8183/8195 and Mg I 8807, the K I resonance lines,
the Paschen series, the ionised lines (Fe II, the ionisation balance), O I 7774, the neutral
metal lines, the TiO and CN bands, and the continuum between them (the H⁻ continuum shape). A
pixel belongs to the first mechanism in that order whose window holds it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.ceiling.crlb import fisher_matrix, marginal_crlb
from snrmoe_lib.data.mock.base import PARAM_NAMES
from snrmoe_lib.features.line_catalogue import line_catalogue

__all__ = ["MECHANISMS", "PASCHEN", "feature_groups", "group_fishers", "decompose", "spectral_type",
           "decomposition_summary"]

#: H I Paschen lines in the window (air Å; Pa11 at 8862.8 Å lies just outside)
PASCHEN = (8750.5, 8665.0, 8598.4, 8545.4, 8502.5, 8467.3, 8438.0, 8413.3, 8392.4)

#: mechanism → (catalogue name prefixes, half-width in Å around a line); bands use their ranges
MECHANISMS: dict[str, tuple[tuple[str, ...], float]] = {
    "Ca II triplet (core + pressure wings)": (("Ca II",), 15.0),
    "Na I 8183/8195 (pressure wings)": (("Na I",), 8.0),
    "Mg I 8807 (pressure wings)": (("Mg I 8807",), 6.0),
    "K I 7665/7699 (resonance wings)": (("K I",), 6.0),
    "Paschen (Stark wings)": (("Paschen",), 6.0),
    "ionised lines (Fe II, Ti II: ionisation balance)": (("Fe II", "Ti II", "Ba II"), 2.0),
    "O I 7774 triplet": (("O I",), 4.0),
    "neutral metal lines (Fe I, Ti I, Ca I, Si I, Ni I, Mg I)": (("Fe I", "Ti I", "Ca I", "Si I", "Ni I", "Mg I", "Cr I"), 2.0),
    "TiO bands": (("TiO",), 0.0),
    "CN bands": (("CN",), 0.0),
}
CONTINUUM = "continuum and weak-line forest (H⁻ continuum shape)"


def feature_groups(wave: np.ndarray, catalogue: pd.DataFrame | None = None) -> pd.Series:
    """The mechanism (a name of :data:`MECHANISMS`, or the continuum) of each pixel of ``wave``."""
    wave = np.asarray(wave, float)
    cat = line_catalogue() if catalogue is None else catalogue
    cat = pd.concat([cat, pd.DataFrame({"name": [f"Paschen {w:g}" for w in PASCHEN], "kind": "stellar line",
                                        "low": PASCHEN, "high": PASCHEN})], ignore_index=True)
    out = np.full(len(wave), CONTINUUM, dtype=object)
    free = np.ones(len(wave), bool)
    for mech, (prefixes, half) in MECHANISMS.items():
        rows = cat[cat["name"].astype(str).str.startswith(prefixes)]
        inside = np.zeros(len(wave), bool)
        for lo, hi in zip(rows["low"].astype(float), rows["high"].astype(float)):
            inside |= (wave >= lo - half) & (wave <= hi + half)
        take = inside & free
        out[take] = mech
        free &= ~take
    return pd.Series(out, name="mechanism")


def group_fishers(J: np.ndarray, sigma: np.ndarray, groups: pd.Series, mask: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Per-star Fisher matrix of each pixel group, ``{group: (B, K, K)}``; they sum to the total."""
    groups = np.asarray(groups)
    base = np.zeros(J.shape[1], bool) if mask is None else np.asarray(mask) != 0
    if base.ndim == 2:
        base = base.any(axis=0) & base.all(axis=0)  # a per-star mask is honoured only where shared
    return {g: fisher_matrix(J, sigma, mask=(groups != g) | base) for g in pd.unique(groups)}


def _marginal_info(F: np.ndarray, nuisance: Sequence[str], cond_max: float) -> tuple[np.ndarray, np.ndarray]:
    _, info = marginal_crlb(F, "log_g", nuisance, PARAM_NAMES, cond_max, return_info=True)
    full = np.asarray(info.info_full, float)
    marg = np.where(np.asarray(info.ok), np.asarray(info.info_marginal, float), 0.0)
    return full, marg


def decompose(fishers: Mapping[str, np.ndarray], nuisance_sets: Mapping[str, Sequence[str]],
              cond_max: float = 1e12) -> pd.DataFrame:
    """Long table, one row per (star, group): ``share``, ``survives_<tag>`` and ``needed_<tag>``.

    ``nuisance_sets`` maps a tag ('3d', '5d') to the nuisance parameters marginalised. A group
    whose own matrix is too ill-conditioned to separate log g (``cond_max``) survives with 0.
    """
    total = sum(fishers.values())
    f_gg = total[:, 1, 1]
    tot_marg = {t: _marginal_info(total, nu, cond_max)[1] for t, nu in nuisance_sets.items()}
    rows = []
    for g, Fw in fishers.items():
        rec = {"group": g, "star": np.arange(len(Fw)), "share": Fw[:, 1, 1] / f_gg}
        for t, nu in nuisance_sets.items():
            full_w, marg_w = _marginal_info(Fw, nu, cond_max)
            with np.errstate(divide="ignore", invalid="ignore"):
                rec[f"survives_{t}"] = np.where(full_w > 0, marg_w / full_w, 0.0)
                rec[f"needed_{t}"] = 1.0 - _marginal_info(total - Fw, nu, cond_max)[1] / tot_marg[t]
        rows.append(pd.DataFrame(rec))
    return pd.concat(rows, ignore_index=True)


def spectral_type(stars: pd.DataFrame) -> pd.Series:
    """A coarse spectral type per star: F/G (≥ 5500 K), early K (4500–5500 K), late K/M (< 4500 K),
    each dwarf (log g ≥ 3.5) or giant."""
    t = stars["T_eff"].to_numpy(float)
    kind = np.where(t >= 5500, "F/G", np.where(t >= 4500, "early K", "late K/M"))
    lum = np.where(stars["log_g"].to_numpy(float) >= 3.5, "dwarfs", "giants")
    return pd.Series([f"{k} {l}" for k, l in zip(kind, lum)], index=stars.index, name="type")


def decomposition_summary(table: pd.DataFrame, types: pd.Series) -> pd.DataFrame:
    """Median over the stars of each spectral type of every column of :func:`decompose`, per group."""
    t = table.copy()
    t["type"] = np.asarray(types)[t["star"].to_numpy()]
    cols = [c for c in t.columns if c not in ("group", "star", "type")]
    out = t.groupby(["type", "group"])[cols].median()
    out["n_stars"] = t.groupby(["type", "group"])["star"].nunique()
    return out.reset_index().sort_values(["type", "share"], ascending=[True, False], ignore_index=True)
