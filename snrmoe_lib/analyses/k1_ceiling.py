"""K1 · R²_max per magnitude, computed once: the stars, the Jacobians, the table with intervals, the checks.

Every place that reports R²_max per magnitude calls :func:`lattice_ceiling` (the data notebook's
calibration row, the Fisher notebook, and through their results the Hub): ``fisher.n_stars`` nodes
of the ``fisher.lattice_*`` lattice (the real grid's axes and steps), drawn with ``fisher.seed``, at
the grid's fixed conditions; Jacobians by ``fisher.method`` (exact autograd of the mock by default);
σ = the mock's clean error at each of ``fisher.mags`` (noise_level 1, the real products' level);
Var(log g) = ``fisher.reference_var_logg`` (the user's convention). The finite-difference check
(:func:`fd_convergence`), the Schur-against-inverse check and the error-scaling check use the same
stars.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.ceiling.crlb import marginal_crlb, parameter_indices
from snrmoe_lib.ceiling.jacobians import jacobian_autograd, jacobian_fd
from snrmoe_lib.ceiling.per_star import StarFishers, star_frame, stream_fishers
from snrmoe_lib.ceiling.priors import prior_variances
from snrmoe_lib.ceiling.stars import lattice_axes, sample_lattice
from snrmoe_lib.ceiling import jacobians as jacobians_module
from snrmoe_lib.config import Params, params_to_dict
from snrmoe_lib.data.mock import base as mock_base
from snrmoe_lib.data.mock.base import ForwardModel
from snrmoe_lib.data.writers import AtomicWriter
from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval

__all__ = ["LATTICE_CACHE", "LatticeCeiling", "lattice_stars", "nuisance_sets", "lattice_ceiling", "magnitude_table",
           "calibration_rows", "fd_convergence", "convergence_summary", "schur_vs_inverse", "error_scaling",
           "derivative_checks", "check_tables"]


@dataclass
class LatticeCeiling:
    """The per-magnitude ceiling: per-(star, magnitude) ``frame``, the Fisher matrices, the seconds spent."""

    frame: pd.DataFrame
    fishers: StarFishers
    var_logg: float
    seconds: float


def lattice_stars(params: Params, n: int | None = None) -> pd.DataFrame:
    """``n`` (default ``fisher.n_stars``) nodes of the configured lattice, drawn with ``fisher.seed``."""
    f = params.fisher
    axes = lattice_axes(f.lattice_teff, f.lattice_teff_step, f.lattice_log_g, f.lattice_log_g_step,
                        f.lattice_m_h, f.lattice_m_h_step, f.lattice_a_m, f.lattice_c_m)
    return sample_lattice(axes, f.n_stars if n is None else n, f.seed)


def nuisance_sets(params: Params) -> dict:
    """``{'3d': fisher.nuisance_3d, '5d': fisher.nuisance_5d}``."""
    return {"3d": list(params.fisher.nuisance_3d), "5d": list(params.fisher.nuisance_5d)}


def _jacobians(params: Params, model: ForwardModel, method: str | None = None, scale: float = 1.0) -> dict:
    method = params.fisher.method if method is None else method
    if method == "autograd":
        return {"autograd": partial(jacobian_autograd, model)}
    if method == "fd":
        return {"fd": partial(jacobian_fd, model, steps=np.asarray(params.fisher.fd_steps) * scale)}
    raise ValueError(f"unknown Jacobian method {method!r}; use 'fd' or 'autograd'")


#: File name of the lattice Fisher matrices kept in a run's output folder (:func:`lattice_ceiling`).
LATTICE_CACHE = "lattice_fishers.npz"


def _cache_key(params: Params, model: ForwardModel) -> str:
    """What the lattice Fisher matrices depend on: the ``fisher`` and ``data.mock`` parameters, the forward
    model's class and the source of the mock and the ceiling code (an edit of either invalidates them)."""
    h = hashlib.sha256(json.dumps([dataclasses.asdict(params.fisher), params_to_dict(params).get("data", {}).get("mock"),
                                   type(model).__name__], sort_keys=True, default=str).encode())
    for folder in (Path(mock_base.__file__).parent, Path(jacobians_module.__file__).parent):
        for f in sorted(folder.glob("*.py")) + sorted(folder.glob("*.yaml")):
            h.update(f.read_bytes())
    return h.hexdigest()


def _load_fishers(path: Path, key: str) -> StarFishers | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            mags = [float(m) for m in z["mags"]]
            stars = pd.DataFrame({str(c): z[f"star_{i}"] for i, c in enumerate(z["star_columns"])})
            return StarFishers(stars, {str(z["method"]): {m: z[f"F_{i}"] for i, m in enumerate(mags)}},
                               {m: z[f"snr_{i}"] for i, m in enumerate(mags)}, {"loaded": True})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent, unreadable or of another layout: computed again


def _save_fishers(path: Path, key: str, sf: StarFishers) -> None:
    (method, F), = sf.F.items()
    mags = list(F)
    arrays = {"key": np.array(key), "method": np.array(method), "mags": np.array(mags, float),
              "star_columns": np.array(list(sf.stars.columns), dtype=str)}
    arrays |= {f"star_{i}": sf.stars[c].to_numpy() for i, c in enumerate(sf.stars.columns)}
    arrays |= {f"F_{i}": F[m] for i, m in enumerate(mags)} | {f"snr_{i}": sf.snr[m] for i, m in enumerate(mags)}
    with AtomicWriter(path, overwrite=True) as w:
        with open(w.tmp, "wb") as fh:
            np.savez(fh, **arrays)


def lattice_ceiling(params: Params, model: ForwardModel, stars: pd.DataFrame | None = None,
                    cache_dir: str | Path | None = None) -> LatticeCeiling:
    """Per-star σ_CRLB, R²_max (3-D and 5-D), Schur decay and the Gaussian-prior bound at every magnitude.

    The one computation of R²_max per magnitude (see the module docstring); ``stars`` defaults to
    :func:`lattice_stars`. With ``cache_dir`` (a run's output folder) the lattice stars' Fisher matrices
    are kept there (``lattice_fishers.npz``, keyed by the parameters and the mock's and the ceiling's
    code) and read back by the next notebook of the run that asks: the data notebook's calibration row
    and the Fisher notebook then share one computation instead of repeating it.
    """
    default_stars = stars is None
    stars = lattice_stars(params) if stars is None else stars
    t0 = time.perf_counter()
    path = None if cache_dir is None or not default_stars else Path(cache_dir) / LATTICE_CACHE
    key = _cache_key(params, model) if path is not None else ""
    sf = _load_fishers(path, key) if path is not None else None
    if sf is None:
        sf = stream_fishers(model, stars, params.fisher.mags, _jacobians(params, model))
        if path is not None:
            _save_fishers(path, key, sf)
    (F,) = sf.F.values()
    var = float(params.fisher.reference_var_logg)
    pv = prior_variances(params.data.mock) if params.data.mock is not None else None
    frame = star_frame(stars, F, sf.snr, var, nuisance_sets(params), params.fisher.cond_max, prior_var=pv)
    return LatticeCeiling(frame, sf, var, time.perf_counter() - t0)


def _boot(values: np.ndarray, stat, n_boot: int, seed: int) -> tuple[float, list[float] | None]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), None
    if not n_boot or v.size < 2:
        return float(stat(v)), None
    idx = bootstrap_indices(v.size, n_boot, seed)
    return float(stat(v)), list(percentile_interval(stat(v[idx], axis=1)))


def magnitude_table(frame: pd.DataFrame, var_logg: float, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per magnitude: median SNR; per nuisance set the median σ_CRLB, the median per-star R²_max
    (the user's headline number) and the population ceiling 1 − mean(CRLB)/Var, each with a bootstrap
    interval over stars (``*_lo``, ``*_hi``), the 90th percentile, median Schur decay and condition
    number, flagged stars, and the Gaussian-prior ceiling 1 − mean(Bayes bound)/Var.
    """
    rows = []
    tags = sorted({c.split("_", 1)[1] for c in frame.columns if c.startswith("crlb_")})
    for mag, g in frame.groupby("mag", sort=True):
        rec = {"mag": float(mag), "n": len(g), "snr_pixel": float(g["snr_pixel"].median())}
        for tag in tags:
            c = g[f"crlb_{tag}"].to_numpy()
            med, med_iv = _boot(1 - c / var_logg, _median, n_boot, seed)
            pop, pop_iv = _boot(c, _mean, n_boot, seed)
            rec.update({f"sigma_{tag}": float(np.nanmedian(np.sqrt(c))), f"r2_{tag}": med,
                        f"pop_r2_{tag}": 1 - pop / var_logg,
                        f"p90_r2_{tag}": float(np.nanquantile(1 - c / var_logg, 0.9)),
                        f"schur_{tag}": float(g[f"schur_{tag}"].median()), f"cond_{tag}": float(g[f"cond_{tag}"].median()),
                        f"flagged_{tag}": int(np.isnan(c).sum())})
            rec[f"r2_{tag}_lo"], rec[f"r2_{tag}_hi"] = med_iv or (np.nan, np.nan)
            lo_hi = (1 - pop_iv[1] / var_logg, 1 - pop_iv[0] / var_logg) if pop_iv else (np.nan, np.nan)
            rec[f"pop_r2_{tag}_lo"], rec[f"pop_r2_{tag}_hi"] = lo_hi
            if f"bcrlb_{tag}" in g:
                rec[f"bayes_r2_{tag}"] = float(1 - g[f"bcrlb_{tag}"].mean() / var_logg)
        rows.append(rec)
    return pd.DataFrame(rows)


def _median(a, axis=-1):
    return np.median(a, axis=axis)


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def calibration_rows(table: pd.DataFrame, params: Params) -> pd.DataFrame:
    """The median R²_max (3-D, 5-D, with intervals) against the user's real-product values."""
    f = params.fisher
    rows = []
    for m, r3, r5 in zip(f.reference_mags, f.reference_r2_3d, f.reference_r2_5d):
        hit = table[np.isclose(table["mag"], m)]
        rec = {"mag": m, "real_r2_3d": r3, "real_r2_5d": r5}
        if len(hit):
            h = hit.iloc[0]
            rec.update({k: h[k] for k in ("r2_3d", "r2_3d_lo", "r2_3d_hi", "r2_5d", "snr_pixel")})
            rec.update(diff_3d=h["r2_3d"] - r3, diff_5d=h["r2_5d"] - r5,
                       diff_3d_lo=h["r2_3d_lo"] - r3, diff_3d_hi=h["r2_3d_hi"] - r3)
        rows.append(rec)
    return pd.DataFrame(rows)


def fd_convergence(params: Params, model: ForwardModel, n_boot: int = 200) -> tuple[pd.DataFrame, float]:
    """σ_CRLB from finite differences at the grid's steps and at 1/2, 1/4, … of them against autograd.

    ``fisher.fd_check_stars`` lattice stars (a draw of that size with ``fisher.seed``), every
    magnitude, ``fisher.fd_halvings`` halvings. Returns one row per (magnitude, step factor, nuisance
    set): median |σ_FD/σ_AD − 1| with a bootstrap interval over stars, the 90th percentile and the
    largest, and the seconds spent.
    """
    f = params.fisher
    stars = lattice_stars(params, f.fd_check_stars)
    jac = _jacobians(params, model, "autograd")
    factors = [0.5 ** k for k in range(f.fd_halvings + 1)]
    for k, s in enumerate(factors):
        jac[f"fd{k}"] = _jacobians(params, model, "fd", s)["fd"]
    t0 = time.perf_counter()
    sf = stream_fishers(model, stars, f.mags, jac)
    nuis = nuisance_sets(params)
    ad = star_frame(stars, sf.F["autograd"], sf.snr, f.reference_var_logg, nuis, f.cond_max)
    rows = []
    for k, s in enumerate(factors):
        fd = star_frame(stars, sf.F[f"fd{k}"], sf.snr, f.reference_var_logg, nuis, f.cond_max)
        for tag in nuis:
            dev = np.abs(fd[f"sigma_{tag}"] / ad[f"sigma_{tag}"] - 1)
            for mag, d in dev.groupby(ad["mag"]):
                med, iv = _boot(d.to_numpy(), _median, n_boot, f.seed)
                rows.append({"mag": float(mag), "step_factor": s, "tag": tag, "median_abs_dev": med,
                             "lo": iv[0] if iv else np.nan, "hi": iv[1] if iv else np.nan,
                             "p90_abs_dev": float(np.nanquantile(d, 0.9)), "max_abs_dev": float(np.nanmax(d)),
                             "n": int(np.isfinite(d).sum())})
    return pd.DataFrame(rows), time.perf_counter() - t0


def convergence_summary(conv: pd.DataFrame, tag: str = "3d") -> pd.DataFrame:
    """Median |σ_FD/σ_AD − 1| per magnitude (rows) and step factor (columns) for one nuisance set."""
    return conv[conv["tag"] == tag].pivot(index="mag", columns="step_factor", values="median_abs_dev")


def schur_vs_inverse(lc: LatticeCeiling, params: Params) -> pd.DataFrame:
    """Largest relative difference between the Schur-complement CRLB and [F_sub⁻¹]_gg (explicit inverse)."""
    rows = []
    for mag, F in lc.fishers.F[next(iter(lc.fishers.F))].items():
        for tag, nuis in nuisance_sets(params).items():
            crlb = marginal_crlb(F, "log_g", nuis, cond_max=params.fisher.cond_max)
            idx = parameter_indices("log_g", nuis, ("T_eff", "log_g", "M_H", "a_M", "C_M"))
            ok = np.isfinite(crlb)
            inv = np.array([np.linalg.inv(f[np.ix_(idx, idx)])[0, 0] for f in F[ok]])
            rows.append({"mag": float(mag), "tag": tag, "n": int(ok.sum()),
                         "max_rel_diff": float(np.max(np.abs(inv / crlb[ok] - 1))) if ok.any() else np.nan})
    return pd.DataFrame(rows)


def error_scaling(lc: LatticeCeiling, params: Params) -> pd.DataFrame:
    """Median R²_max per magnitude with σ scaled by each of ``fisher.error_scales`` (and 1): F → F / s²."""
    (F,) = lc.fishers.F.values()
    rows = []
    for s in sorted({1.0, *params.fisher.error_scales}):
        fr = star_frame(lc.fishers.stars, {m: Fm / s ** 2 for m, Fm in F.items()}, lc.fishers.snr, lc.var_logg,
                        nuisance_sets(params), params.fisher.cond_max)
        med = fr.groupby("mag")[["sigma_3d", "r2_3d", "r2_5d"]].median()
        rows += [{"error_scale": s, "mag": float(m), **r} for m, r in med.to_dict(orient="index").items()]
    return pd.DataFrame(rows)


def derivative_checks(params: Params, model: ForwardModel | None, lc: LatticeCeiling) -> dict:
    """The checks of the forward model's derivatives: step halving, Schur against the inverse, σ scaled.

    Prints the wall time of the step halving.

    Parameters
    ----------
    params : Params
        The validated parameters (``fisher.*``, ``runner.n_bootstrap``).
    model : ForwardModel or None
        The mock's forward model; ``None`` on real data, where there is nothing to check.
    lc : LatticeCeiling
        The per-magnitude ceiling (:func:`lattice_ceiling`).

    Returns
    -------
    dict
        ``convergence`` (:func:`fd_convergence`), ``schur`` (:func:`schur_vs_inverse`), ``scaling``
        (:func:`error_scaling`); every entry ``None`` without a forward model.
    """
    if model is None:
        return {"convergence": None, "schur": None, "scaling": None}
    conv, conv_s = fd_convergence(params, model, params.runner.n_bootstrap)
    checks = {"convergence": conv, "schur": schur_vs_inverse(lc, params), "scaling": error_scaling(lc, params)}
    print(f"step halving: {conv_s:.1f} s")
    return checks


def check_tables(checks: dict) -> list[pd.DataFrame]:
    """The tables of :func:`derivative_checks` as shown: the step-halving summaries (3-D, then 5-D nuisances),
    the Schur table, and the median 3-D R²_max per magnitude (rows) and error scale (columns); none without
    the checks (real data)."""
    conv = checks["convergence"]
    if conv is None:
        return []
    scaled = checks["scaling"].pivot(index="mag", columns="error_scale", values="r2_3d")
    return [convergence_summary(conv, "3d"), convergence_summary(conv, "5d"), checks["schur"], scaled]
