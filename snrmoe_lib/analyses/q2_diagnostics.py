"""Q2 diagnostics: where the raw error leaks (importance peaks named by the line catalogue) and the
decomposition e ≈ s·e0 + δ (how much of σ one scaled template explains, and where δ concentrates).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q2_sample import AuditSample
from snrmoe_lib.features.line_catalogue import line_catalogue
from snrmoe_lib.features.quality import make_compressor

__all__ = ["nearest_feature", "importance_table", "Decomposition", "decompose_errors"]


def nearest_feature(wavelength: float, max_distance: float = 15.0, catalogue: pd.DataFrame | None = None,
                    line_tolerance: float = 3.0) -> tuple[str, str, float]:
    """The catalogued feature that best explains ``wavelength`` (Å): ``(name, kind, distance_Å)``.

    In order: a line within ``line_tolerance`` (a few pixels at R ≈ 5000); else a band the
    wavelength lies in (distance 0); else the nearest line within ``max_distance``. Returns
    ``("—", "none", d)`` (d: distance to the nearest line) when nothing qualifies. The default
    ``catalogue`` is :func:`~snrmoe_lib.features.line_catalogue.line_catalogue`.
    """
    cat = line_catalogue() if catalogue is None else catalogue
    lines = cat[cat["low"] == cat["high"]]
    d = np.abs(lines["low"].to_numpy() - wavelength)
    i = int(np.argmin(d)) if d.size else -1
    if d.size and d[i] <= line_tolerance:
        return str(lines["name"].iloc[i]), str(lines["kind"].iloc[i]), float(d[i])
    bands = cat[cat["low"] < cat["high"]]
    inside = bands[(bands["low"] <= wavelength) & (wavelength <= bands["high"])]
    if len(inside):
        return str(inside["name"].iloc[0]), str(inside["kind"].iloc[0]), 0.0
    if d.size and d[i] <= max_distance:
        return str(lines["name"].iloc[i]), str(lines["kind"].iloc[i]), float(d[i])
    return "—", "none", float(d[i]) if d.size else float("inf")


def importance_table(wave: np.ndarray, importance: np.ndarray, n_top: int = 10, merge_A: float = 5.0,
                     max_distance: float = 15.0) -> pd.DataFrame:
    """The strongest importance peaks with the nearest named feature.

    Pixels are ranked by importance; a pixel within ``merge_A`` Å of an already listed peak is
    counted into that peak (so one line is not listed five times).

    Returns
    -------
    DataFrame with wavelength (Å), importance (peak value), share (fraction of the total
    importance within ±merge_A of the peak), feature, kind, distance_A.
    """
    wave = np.asarray(wave, float)
    imp = np.asarray(importance, float)
    if wave.shape != imp.shape:
        raise ValueError(f"wave {wave.shape} and importance {imp.shape} differ in shape")
    total = imp.sum()
    peaks: list[float] = []
    for i in np.argsort(imp)[::-1]:
        if len(peaks) >= n_top:
            break
        if not peaks or np.min(np.abs(np.asarray(peaks) - wave[i])) > merge_A:
            peaks.append(float(wave[i]))
    rows = []
    for w in peaks:
        near = np.abs(wave - w) <= merge_A
        name, kind, d = nearest_feature(w, max_distance)
        rows.append({"wavelength": w, "importance": float(imp[np.argmin(np.abs(wave - w))]),
                     "share": float(imp[near].sum() / total) if total > 0 else np.nan,
                     "feature": name, "kind": kind, "distance_A": d})
    return pd.DataFrame(rows)


@dataclass
class Decomposition:
    """e ≈ s·e0 + δ on a block of spectra (see :func:`decompose_errors`)."""

    e0: np.ndarray                 # template (n_pix,)
    scale: np.ndarray              # s per spectrum
    delta_share: np.ndarray        # per-pixel share of Σδ² (sums to 1): where δ concentrates
    explained_total: float         # 1 − Σ‖δ‖² / Σ‖e‖²
    explained_variance: float      # 1 − Σ‖δ‖² / Σ‖e − ē‖² (variation across spectra explained by s·e0)
    cosine_median: float           # median cosine similarity between e and e0
    top_fraction: float            # share of Σδ² in the top ``n_top`` pixels
    n_top: int
    peaks: pd.DataFrame            # where δ concentrates, features named


def decompose_errors(sample: AuditSample, n_top: int = 40, n_peaks: int = 10) -> Decomposition:
    """Fit e0 on the training σ (S2's template) and decompose the test σ as s·e0 + δ."""
    comp = make_compressor("S2").fit(sample.train)
    sig = sample.test.sigma.astype(np.float64)
    s, delta = comp.decompose(sample.test)
    e0 = comp.e0_
    tot = np.sum(sig ** 2)
    var = np.sum((sig - sig.mean(axis=0)) ** 2)
    d2 = np.sum(delta ** 2)
    share = np.sum(delta ** 2, axis=0) / d2 if d2 > 0 else np.zeros(len(e0))
    top = float(np.sort(share)[::-1][:n_top].sum())
    cos = sig @ e0 / (np.linalg.norm(sig, axis=1) * np.linalg.norm(e0))
    return Decomposition(e0, s, share, float(1 - d2 / tot), float(1 - d2 / var) if var > 0 else np.nan,
                         float(np.median(cos)), top, n_top,
                         importance_table(sample.wave, share, n_top=n_peaks, merge_A=5.0))

