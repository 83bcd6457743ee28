"""Statistics of the mock against the real pfsspec products, and the mock-vs-real table.

Every number on the "mock" side is computed here from generated data (a random-mode dataset and
small in-memory grids at the real grid's fixed conditions); the "real" side is the user's
reference numbers (``BRIEF.md`` §3), kept in :data:`REAL` with their tolerances. Verdicts come
from :func:`snrmoe_lib.evaluation.records.decide`.

Definitions (stated once, used everywhere):

* per-pixel median SNR: median over unmasked pixels of flux/σ (the pfsspec ``snr`` column);
* L2 SNR: ‖flux‖ / ‖σ‖ over all pixels, σ = error · noise_level;
* "error vectors alike": per star, the error vector is fitted by scale × a global template
  (least squares, the template is the median of unit-norm error vectors); "alike" is the median
  over stars of the fraction of the error vector's variance that scale × template explains;
  "pixels differing" is the median over stars of the number of pixels where the error vector
  differs from its scale × template by more than 5 % of scale × template;
* SNR bins: the real set's own edges on the L2 SNR at noise_level 1 (X ≤ 2 < L ≤ 4 < M ≤ 7 < H),
  whatever bins a configuration uses, computed over every spectrum of the dataset (so is the max);
* information: the one computation of R²_max per magnitude,
  :func:`snrmoe_lib.analyses.k1_ceiling.lattice_ceiling` (the Fisher notebook reports the same
  numbers): ``fisher.n_stars`` nodes of the real grid's lattice, autograd Jacobians of the stored
  flux, the clean σ at each magnitude, marginal over (T_eff, [M/H]) (3-D) or also ([α/M], [C/M])
  (5-D); R²_max = 1 − CRLB / Var(log g) with ``fisher.reference_var_logg`` = 1.667 of the real grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.k1_ceiling import lattice_ceiling, lattice_stars, magnitude_table, nuisance_sets
from snrmoe_lib.ceiling import decomposition as D
from snrmoe_lib.ceiling.jacobians import jacobian_autograd
from snrmoe_lib.data.noise import snr
from snrmoe_lib.evaluation.metrics import percentile_interval
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.evaluation.records import decide, metric, verdict

__all__ = ["REAL", "REAL_BIN_EDGES", "dataset_l2_snr", "random_set_stats", "error_similarity", "calibration_table", "tier1_passed",
           "mock_calibration", "calibration_results", "SNR_BY_MAG_REAL",
           "information_by_feature"]


@dataclass(frozen=True)
class Reference:
    """One real-product number and how close the mock must come."""

    tier: int
    quantity: str
    real: float
    tolerance: float
    relative: bool  # tolerance is a fraction of ``real`` (else absolute)
    source: str
    report_only: bool = False  # shown beside the real number, no verdict


#: The real random set's SNR bins (L2 SNR at noise_level 1) and its share of spectra per bin (BRIEF §2)
REAL_BIN_EDGES = (2.0, 4.0, 7.0)
_REAL_BIN_FRACTIONS = {"X (L2 ≤ 2)": 0.29, "L (2 < L2 ≤ 4)": 0.38, "M (4 < L2 ≤ 7)": 0.30, "H (L2 > 7)": 0.03}


#: Per-pixel median SNR of the real grid products at each HSC-i magnitude (BRIEF §3)
SNR_BY_MAG_REAL = {18.0: 87.4, 20.0: 24.0, 21.5: 7.1, 22.0: 4.6, 22.5: 3.0, 23.0: 1.9}
REAL: list[Reference] = (
    [Reference(1, f"per-pixel median SNR, grid, i = {m:g}", v, 0.25, True, "BRIEF §3 grid products")
     for m, v in SNR_BY_MAG_REAL.items()]
    + [Reference(1, "L2 SNR median, random set, noise_level 1", 2.9, 0.25, True, "BRIEF §3 random set"),
       Reference(1, "snr column median, random set", 8.0, 0.25, True, "BRIEF §3 random set (≈ 8.2)"),
       Reference(2, "L2 SNR max, random set, noise_level 1", 9.0, 0.25, True,
                 "BRIEF §3 random set (≈ 9 over 1M spectra; mock: over the whole dataset)"),
       *[Reference(2, f"fraction of spectra in bin {b}", v, 0.05, False, "BRIEF §2 (29 / 38 / 30 / 3 %)")
         for b, v in _REAL_BIN_FRACTIONS.items()],
       Reference(1, "scale-free error vectors alike (fraction)", 0.96, 0.02, False, "BRIEF §3 error-vector facts"),
       Reference(2, "pixels differing from scale × template by > 5 % (median over stars)", 40.0, 0.0, False,
                 "BRIEF §3 (≈ 40 of 4096, at strong stellar and sky features)", report_only=True),
       Reference(1, "median σ_CRLB(log g) 3-D, grid, i = 21.5 (dex)", 0.43, 0.25, True, "BRIEF §3 Fisher runs"),
       Reference(1, "median R²_max 3-D, i = 21.5", 0.89, 0.10, False, "BRIEF §2"),
       Reference(1, "median R²_max 3-D, i = 22", 0.74, 0.10, False, "BRIEF §2"),
       Reference(1, "median R²_max 3-D, i = 22.5", 0.37, 0.10, False, "BRIEF §2"),
       Reference(2, "Schur decay 3-D (marginal / unmarginalised)", 0.675, 0.10, False, "BRIEF §3 (0.66–0.69)"),
       Reference(2, "Schur decay 5-D", 0.565, 0.10, False, "BRIEF §3 (0.55–0.58)"),
       Reference(2, "median R²_max 5-D, i = 21.5", 0.87, 0.10, False, "BRIEF §3"),
       Reference(2, "median R²_max 5-D, i = 22", 0.70, 0.10, False, "BRIEF §3"),
       Reference(2, "median R²_max 5-D, i = 22.5", 0.26, 0.10, False, "BRIEF §3"),
       Reference(2, "R²_max hot high-g minus cool low-g, i = 22", 0.0, 0.0, False,
                 "BRIEF §3: highest for hot high-g, lowest for cool low-g (sign only)")]
)

def dataset_l2_snr(ds: PfsDataset, noise_level: float = 1.0, chunk_size: int = 4096) -> np.ndarray:
    """L2 SNR of every spectrum of ``ds`` at ``noise_level`` (read chunk by chunk)."""
    return np.concatenate([snr(ch.flux, ch.error, noise_level, "l2")
                           for ch in ds.iter_chunks(chunk_size=chunk_size, with_mask=False)])


def random_set_stats(flux: np.ndarray, error: np.ndarray, snr_column: np.ndarray | None = None,
                     noise_level: float = 1.0, l2_all: np.ndarray | None = None) -> dict:
    """L2 and per-pixel SNR medians of a random-mode sample at ``noise_level``, the L2 max and the
    share of spectra per real SNR bin (:data:`REAL_BIN_EDGES`).

    ``l2_all`` (the L2 SNR of every spectrum of the dataset at ``noise_level``, see
    :func:`dataset_l2_snr`) gives the median, max and bin shares; without it the sample does.
    """
    l2 = snr(flux, error, noise_level, "l2") if l2_all is None else np.asarray(l2_all, float)
    counts = np.bincount(np.digitize(l2, REAL_BIN_EDGES, right=True), minlength=len(REAL_BIN_EDGES) + 1)
    out = {"l2_median": float(np.median(l2)), "l2_max": float(np.max(l2)), "n_l2": int(l2.size),
           "bin_fractions": dict(zip(_REAL_BIN_FRACTIONS, (counts / counts.sum()).tolist())),
           "pixel_median": float(np.median(snr(flux, error, noise_level, "pixel")))}
    if snr_column is not None:
        s = np.asarray(snr_column, float)
        p05, p95 = percentile_interval(s, 0.90)
        out.update(snr_col_median=float(np.median(s)), snr_col_p05=p05, snr_col_p95=p95)
    return out


def error_similarity(error: np.ndarray, n_top: int = 40, rel_tol: float = 0.05) -> dict:
    """How alike error vectors are once their scale is removed (see the module docstring).

    Returns
    -------
    dict
        ``alike`` (median fraction of variance explained by scale × template), ``top_share``
        (median share of the residual energy in each star's ``n_top`` worst pixels),
        ``template`` (P,), ``residual_rms`` (P,) relative residual per pixel across stars,
        ``residual_share`` (P,) mean share of each star's unexplained variance per pixel,
        ``n_differ`` (median over stars of the number of pixels where the error vector differs
        from its scale × template by more than ``rel_tol``), ``differ_fraction`` (P,) the share
        of stars in which each pixel differs so.
    """
    e = np.asarray(error, np.float64)
    if e.ndim != 2 or len(e) < 2:
        raise ValueError(f"need a (stars, pixels) error array with at least 2 stars, got {e.shape}")
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    template = np.median(unit, axis=0)
    template /= np.linalg.norm(template)
    s = unit @ template
    resid = unit - s[:, None] * template[None, :]
    centred = unit - unit.mean(axis=1, keepdims=True)
    alike = 1.0 - (resid ** 2).sum(axis=1) / (centred ** 2).sum(axis=1)
    r2 = resid ** 2
    top = np.sort(r2, axis=1)[:, -n_top:].sum(axis=1) / np.maximum(r2.sum(axis=1), 1e-300)
    rel = resid / np.where(template > 0, template, np.nan)[None, :]
    share = (r2 / np.maximum(r2.sum(axis=1, keepdims=True), 1e-300)).mean(axis=0)
    differ = np.abs(resid) > rel_tol * np.abs(s[:, None] * template[None, :])
    return {"alike": float(np.median(alike)), "top_share": float(np.median(top)), "template": template,
            "residual_rms": np.sqrt(np.nanmean(rel ** 2, axis=0)), "residual_share": share,
            "alike_per_star": alike, "n_differ": float(np.median(differ.sum(axis=1))),
            "differ_fraction": differ.mean(axis=0)}


def _row(ref: Reference, mock: float) -> dict:
    if ref.report_only:
        return {"tier": ref.tier, "quantity": ref.quantity, "mock": float(mock), "real": ref.real,
                "tolerance": "report only", "deviation": float(mock - ref.real), "op": "", "limit": np.nan,
                "verdict": "REPORT", "source": ref.source}
    if ref.quantity.startswith("R²_max hot"):
        dev, tol, op = -mock, 0.0, "<"   # sign check: hot high-g must exceed cool low-g
    elif ref.relative:
        dev, tol, op = abs(mock / ref.real - 1.0), ref.tolerance, "<="
    else:
        dev, tol, op = abs(mock - ref.real), ref.tolerance, "<="
    tol_txt = ("> 0" if op == "<" else f"±{ref.tolerance:.0%}" if ref.relative else f"±{ref.tolerance:g}")
    return {"tier": ref.tier, "quantity": ref.quantity, "mock": float(mock), "real": ref.real, "tolerance": tol_txt,
            "deviation": float(dev), "op": op, "limit": float(tol), "verdict": decide(dev, op, tol),
            "source": ref.source}


def calibration_table(ceiling_frame: pd.DataFrame, mag_table: pd.DataFrame, flux: np.ndarray, error: np.ndarray,
                      snr_column: np.ndarray | None, noise_level: float = 1.0,
                      l2_all: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """The mock-vs-real table (one row per reference number) and the statistics behind it.

    Each row's verdict is ``decide(deviation, op, limit)``: the deviation is |mock/real − 1|
    (relative tolerance), |mock − real| (absolute), or −mock for the sign check.

    Parameters
    ----------
    ceiling_frame, mag_table
        The per-(star, magnitude) frame and the per-magnitude table of the one R²_max computation
        (:func:`~snrmoe_lib.analyses.k1_ceiling.lattice_ceiling`, :func:`~snrmoe_lib.analyses.k1_ceiling.magnitude_table`);
        they give the grid's per-pixel SNR and the information rows.
    flux, error, snr_column
        A sample of the random-mode dataset (stored flux, error and the ``snr`` column).
    l2_all
        The L2 SNR of every spectrum of the dataset (median, max and bin shares; default: the sample's).
    """
    rnd = random_set_stats(flux, error, snr_column, noise_level, l2_all)
    sim = error_similarity(error)
    info = ceiling_frame
    med = mag_table.set_index("mag")
    missing = [m for m in (*SNR_BY_MAG_REAL, 21.5, 22.0, 22.5) if m not in med.index]
    if missing:
        raise ValueError(f"the calibration needs R²_max at magnitudes {sorted(set(missing))}: add them to fisher.mags")
    schur = info.groupby("mag")[["schur_3d", "schur_5d"]].median()
    hot = (info["T_eff"] >= 5500) & (info["log_g"] >= 4.0)
    cool = (info["T_eff"] <= 4250) & (info["log_g"] <= 2.0)
    at22 = np.isclose(info["mag"], 22.0)
    hot_minus_cool = float(np.nanmedian(info.loc[hot & at22, "r2_3d"]) - np.nanmedian(info.loc[cool & at22, "r2_3d"]))
    mock = {f"per-pixel median SNR, grid, i = {m:g}": med.loc[m, "snr_pixel"] for m in SNR_BY_MAG_REAL}
    mock.update({
        "L2 SNR median, random set, noise_level 1": rnd["l2_median"],
        "L2 SNR max, random set, noise_level 1": rnd["l2_max"],
        **{f"fraction of spectra in bin {b}": v for b, v in rnd["bin_fractions"].items()},
        "pixels differing from scale × template by > 5 % (median over stars)": sim["n_differ"],
        "snr column median, random set": rnd.get("snr_col_median", np.nan),
        "scale-free error vectors alike (fraction)": sim["alike"],
        "median σ_CRLB(log g) 3-D, grid, i = 21.5 (dex)": med.loc[21.5, "sigma_3d"],
        **{f"median R²_max {t}-D, i = {m:g}": med.loc[m, f"r2_{t}d"] for t in (3, 5) for m in (21.5, 22.0, 22.5)},
        "Schur decay 3-D (marginal / unmarginalised)": schur.loc[21.5, "schur_3d"],
        "Schur decay 5-D": schur.loc[21.5, "schur_5d"],
        "R²_max hot high-g minus cool low-g, i = 22": hot_minus_cool,
    })
    table = pd.DataFrame([_row(ref, mock[ref.quantity]) for ref in REAL])
    snr_by_mag = mag_table[["mag", "snr_pixel"]].reset_index(drop=True)
    stats = {"snr_by_mag": snr_by_mag, "random": rnd, "similarity": sim, "information": info,
             "magnitude_table": mag_table}
    return table, stats


def tier1_passed(table: pd.DataFrame) -> bool:
    """True when every tier-1 row of a calibration table is PASS."""
    t1 = table[table["tier"] == 1]
    return bool(len(t1)) and bool((t1["verdict"] == "PASS").all())


def mock_calibration(params: Params, ds: PfsDataset, model,
                     cache_dir: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The calibration table of a configuration's mock dataset (:func:`calibration_table`).

    The random-set side uses the dataset's first ``20 · fisher.n_stars`` spectra at noise_level 1 (the L2
    median, max and bin shares use every spectrum);
    the grid side is the one R²_max computation of the configuration
    (:func:`~snrmoe_lib.analyses.k1_ceiling.lattice_ceiling`, intervals from ``runner.n_bootstrap``
    resamples of its stars). ``stats['n_random']``, ``stats['n_grid']`` and ``stats['seconds']`` say
    how many and how long. ``cache_dir`` (the run's output folder) keeps the lattice Fisher matrices
    there, so the Fisher notebook of the same run reads them instead of computing them again.
    """
    sample = ds.read(np.arange(min(ds.n, 20 * params.fisher.n_stars)))
    lc = lattice_ceiling(params, model, cache_dir=cache_dir)
    mag_table = magnitude_table(lc.frame, lc.var_logg, params.runner.n_bootstrap, params.fisher.seed)
    table, stats = calibration_table(lc.frame, mag_table, sample.flux, sample.error, sample.params["snr"].to_numpy(),
                                     noise_level=1.0, l2_all=dataset_l2_snr(ds, 1.0, params.data.chunk_size))
    if not (np.isfinite(table["mock"]).all() and len(table) == len(REAL)):
        raise ValueError("the calibration table lacks a mock number: a statistic could not be computed")
    stats.update(n_random=len(sample.flux), n_grid=len(lc.fishers.stars), seconds=lc.seconds)
    return table, stats


def calibration_results(table: pd.DataFrame) -> dict:
    """Verdicts (one per reference number), metrics and extra payload of a calibration table."""
    verdicts = [verdict(f"Mock-T{r.tier}", "calibration", r.quantity, r.deviation, r.op, r.limit,
                        note=f"mock {r.mock:.3g} vs real {r.real:.3g} ({r.tolerance})")
                for r in table.itertuples() if r.verdict != "REPORT"]
    return {"verdicts": verdicts, "metrics": {"mock_tier1_passed": metric(float(tier1_passed(table)))},
            "extra": {"mock_calibration": table.to_dict(orient="records")}}


def information_by_feature(params: Params, model, mag: float = 21.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where log g's Fisher information lives, per gravity mechanism and spectral type.

    The lattice stars of the R²_max computation (:func:`~snrmoe_lib.analyses.k1_ceiling.lattice_stars`)
    at magnitude ``mag``: autograd Jacobians of the stored flux, the clean σ, the Fisher matrix split
    over the mechanisms' pixel windows (:mod:`snrmoe_lib.ceiling.decomposition`). Returns the long
    per-(star, window) table and its median per spectral type.
    """
    stars = lattice_stars(params).copy()
    stars["mag"] = float(mag)
    stars = stars.reset_index(drop=True)
    J = jacobian_autograd(model, stars)
    sigma = model.observe(stars, np.arange(len(stars)), params.fisher.seed).error
    groups = D.feature_groups(model.wave)
    table = D.decompose(D.group_fishers(J, sigma, groups), nuisance_sets(params), params.fisher.cond_max)
    return table, D.decomposition_summary(table, D.spectral_type(stars))
