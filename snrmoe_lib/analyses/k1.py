"""K1 · the Fisher / Cramér–Rao ceiling of a configuration: what the fisher_ceiling notebook needs.

Grid files per magnitude (the mock grid beside the dataset, or the user's pfsspec grid products),
per-star ceilings of grid stars and of dataset stars (:func:`grid_star_frame`,
:func:`dataset_star_frame`), the ceiling table per magnitude and per SNR bin, the finite-difference
check against autograd, the calibration against the real products, and the notebook's verdicts,
metrics and results payload. The bounds themselves live in :mod:`snrmoe_lib.ceiling`.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.k1_efficiency import efficiency_table, model_bin_r2
from snrmoe_lib.ceiling.bayes import bayesian_crlb, van_trees_sampling_prior
from snrmoe_lib.ceiling.crlb import ceiling_summary, fisher_matrix, marginal_crlb, r2_max
from snrmoe_lib.ceiling.jacobians import (PARAM_NAMES, detect_lattice, grid_jacobian_dataset, jacobian_autograd,
                                          parameter_matrix, usable_rows)
from snrmoe_lib.ceiling.priors import prior_informations, prior_variances
from snrmoe_lib.config import MockSpec, Params
from snrmoe_lib.data.io import PfsDataset, open_dataset, split_rows
from snrmoe_lib.data.mock.base import ForwardModel
from snrmoe_lib.data.mock.registry import get_model
from snrmoe_lib.data.mock.generate import grid_path
from snrmoe_lib.data.mock.grids import ensure_mock_grid, mock_grid_base
from snrmoe_lib.data.noise import assign_bins, bin_labels, effective_sigma, snr_l2, snr_pixel
from snrmoe_lib.evaluation.records import metric, verdict

__all__ = ["label_variance", "grid_spec", "grid_files", "ensure_grid", "grid_star_frame", "dataset_star_frame",
           "ceiling_by_magnitude", "ceiling_per_bin", "calibration_rows", "fd_autograd_check", "bin_star_frame",
           "model_flux_mismatch", "CeilingSetup", "setup", "prior_table", "ceilings_by_magnitude", "ceiling_maps",
           "fd_check", "bin_ceilings", "bound_columns", "check_invariants", "k1_verdicts", "k1_metrics", "k1_results"]


# --------------------------------------------------------------------------------------------
# Var(log g) and the grid files of a configuration
# --------------------------------------------------------------------------------------------


def label_variance(params: Params, source: str = "dataset", dataset: PfsDataset | None = None,
                   target: str = "log_g") -> float:
    """Var(target) of the configuration's label distribution.

    ``source='dataset'``: the params table of the configured dataset (works on real data);
    ``'mock'``: the beta distribution of ``data.mock`` (the sampling prior of the random set).
    """
    if source == "dataset":
        if dataset is None:
            raise ValueError("label_variance(source='dataset') needs the opened dataset")
        return float(np.var(dataset.params[target].to_numpy(np.float64)))
    if source == "mock":
        if params.data.mock is None:
            raise ValueError("label_variance(source='mock') needs data.mock in the configuration")
        return float(prior_variances(params.data.mock, [target])[0])
    raise ValueError(f"unknown Var(log g) source {source!r}; use 'dataset' or 'mock'")


def grid_spec(params: Params, mags: Sequence[float] | None = None) -> MockSpec:
    """The :class:`~snrmoe_lib.config.MockSpec` of the configuration's mock grid.

    Model, exposure and error mode come from ``data.mock`` (defaults when absent); the lattice
    from the ``fisher.grid_*`` settings; conditions are the grid's fixed ones.
    """
    f = params.fisher
    base = params.data.mock if params.data.mock is not None else MockSpec()
    return dataclasses.replace(
        base, mode="grid", shard_size=0, teff=list(f.grid_teff), log_g=list(f.grid_log_g), m_h=list(f.grid_m_h),
        grid_teff_step=f.grid_teff_step, grid_log_g_step=f.grid_log_g_step, grid_m_h_step=f.grid_m_h_step,
        grid_a_m=list(f.grid_a_m), grid_c_m=list(f.grid_c_m),
        grid_mags=[float(m) for m in (f.mags if mags is None else mags)])


def grid_files(params: Params, mags: Sequence[float] | None = None) -> dict:
    """Magnitude → grid file path of the configuration (see ``fisher.grid_path``).

    With ``fisher.grid_path`` empty, the mock grid beside the configured dataset
    (:func:`~snrmoe_lib.data.mock.grids.mock_grid_base`).
    """
    mags = params.fisher.mags if mags is None else mags
    gp = params.fisher.grid_path
    if not gp:
        base = mock_grid_base(grid_spec(params, mags=[]), params.dataset_path.parent)
        return {float(m): grid_path(base, m) for m in mags}
    if "{mag" in gp:
        return {float(m): params.resolve(gp.format(mag=m)) for m in mags}
    return {float(m): grid_path(params.resolve(gp), m) for m in mags}


def ensure_grid(params: Params, mags: Sequence[float] | None = None, progress: bool = False) -> dict:
    """Magnitude → path of each grid file, generating missing mock grid files first.

    With ``fisher.grid_path`` empty the mock grid lives beside the configured dataset and missing
    magnitudes are simulated with the configuration's forward model; an existing mock grid made with
    other lattice settings is an error (never silently reused). With ``fisher.grid_path`` set (for
    example the user's pfsspec grid products) the files must exist.
    """
    files = grid_files(params, mags)
    if params.fisher.grid_path:
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"grid file(s) not found: {missing} "
                                    "(fisher.grid_path points at files that must exist)")
        return files
    spec = grid_spec(params, list(files))
    return ensure_mock_grid(spec, mock_grid_base(spec, params.dataset_path.parent), progress=progress)


# --------------------------------------------------------------------------------------------
# Per-star ceilings: grid stars and dataset stars
# --------------------------------------------------------------------------------------------


def _star_frame(table: pd.DataFrame, F: np.ndarray, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None,
                params: Params, var_logg: float, prior_var: np.ndarray | None) -> pd.DataFrame:
    """One row per star: parameters, SNRs, CRLB / R²_max / Schur decay / cond for 3-D and 5-D."""
    f = params.fisher
    out = table[[c for c in table.columns if c in (*PARAM_NAMES, "mag", "snr")]].reset_index(drop=True).copy()
    out["snr_l2"] = snr_l2(flux, sigma, mask)
    out["snr_pixel"] = snr_pixel(flux, sigma, mask)
    for tag, nuis in (("3d", f.nuisance_3d), ("5d", f.nuisance_5d)):
        crlb, info = marginal_crlb(F, "log_g", nuis, cond_max=f.cond_max, return_info=True)
        out[f"crlb_{tag}"] = crlb
        out[f"sigma_{tag}"] = np.sqrt(crlb)
        out[f"r2_{tag}"] = r2_max(crlb, var_logg)
        out[f"schur_{tag}"] = info.schur_decay
        out[f"cond_{tag}"] = info.cond
        if prior_var is not None:
            out[f"bcrlb_{tag}"] = bayesian_crlb(F, prior_var, "log_g", nuis)
    out["info_logg"] = F[:, 1, 1]
    return out


def grid_star_frame(path: str | Path, params: Params, var_logg: float, prior_var: np.ndarray | None = None,
                    model: ForwardModel | None = None, method: str | None = None,
                    n_stars: int | None = -1, edges: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-star ceilings of ``n_stars`` usable stars of one grid file.

    ``method='fd'`` differences the stored flux along the lattice; ``'autograd'`` differentiates
    ``model`` at the same stars (the grid still provides σ and the mask). ``n_stars=-1`` takes
    ``fisher.n_stars``, ``None`` every usable star; ``edges`` defaults to ``fisher.edges``.
    Returns the frame and the stars' Fisher matrices.
    """
    f = params.fisher
    method = f.method if method is None else method
    with open_dataset(path, on_bad_rows=params.data.on_bad_rows) as ds:
        lat = detect_lattice(ds.params)
        axes = tuple(a for a in lat.axes)
        need = {"log_g", *f.nuisance_3d, *f.nuisance_5d}
        lacking = sorted(need - set(axes))
        if lacking:
            raise ValueError(f"{path}: the grid does not vary {lacking}; the configured marginalisation needs "
                             f"those axes (grid axes: {list(axes)})")
        gj = grid_jacobian_dataset(ds, n_stars=f.n_stars if n_stars == -1 else n_stars, seed=f.seed,
                                   edges=f.edges if edges is None else edges, axes=axes,
                                   noise_level=params.noise.noise_level)
        flux = ds.read(gj.rows, dtype=np.float64).flux
    J = gj.J
    if method == "autograd":
        if model is None:
            raise ValueError("method='autograd' needs the forward model (mock data only)")
        J = jacobian_autograd(model, gj.table)
    elif method != "fd":
        raise ValueError(f"unknown Jacobian method {method!r}; use 'fd' or 'autograd'")
    F = fisher_matrix(J, gj.sigma, gj.mask)
    frame = _star_frame(gj.table, F, flux, gj.sigma, gj.mask, params, var_logg, prior_var)
    frame["row"] = gj.rows
    frame["central"] = gj.central.all(axis=1)
    return frame, F


def dataset_star_frame(ds: PfsDataset, rows: np.ndarray, params: Params, model: ForwardModel,
                       var_logg: float, prior_var: np.ndarray | None = None) -> pd.DataFrame:
    """Exact (autograd) per-star ceilings of dataset stars, with the dataset's own σ and mask.

    For mock datasets: their stars follow the configuration's label and SNR distributions, so a
    ceiling per SNR bin built from them is the one a model tested on that dataset faces.
    """
    chunk = ds.read(np.sort(np.asarray(rows)), dtype=np.float64)
    sigma = effective_sigma(chunk.error, params.noise.noise_level)
    J = jacobian_autograd(model, chunk.params)
    F = fisher_matrix(J, sigma, chunk.mask)
    frame = _star_frame(chunk.params, F, chunk.flux, sigma, chunk.mask, params, var_logg, prior_var)
    frame["row"] = chunk.rows
    return frame


def ceiling_by_magnitude(frame: pd.DataFrame, var_logg: float, F: dict | None = None,
                         params: Params | None = None) -> pd.DataFrame:
    """The ceiling table: one row per magnitude, 3-D and 5-D marginalisation.

    Columns: median per-pixel and L2 SNR; per nuisance set the median σ_CRLB, median and 90th
    percentile of R²_max, the population ceiling 1 − mean(CRLB)/Var, median Schur decay and
    condition number, flagged stars, the Bayesian ceiling 1 − mean(Bayes bound)/Var when the frame
    has it; with ``F`` (mag → the frame's Fisher matrices, in frame order) and ``params`` of a mock
    configuration, the Van Trees ceiling under the sampling prior
    (:func:`van_trees_sampling_prior`).
    """
    rows = []
    for mag, g in frame.groupby("mag", sort=True):
        rec = {"mag": float(mag), "n": len(g), "snr_pixel": float(g["snr_pixel"].median()),
               "snr_l2": float(g["snr_l2"].median())}
        for tag in ("3d", "5d"):
            s = ceiling_summary(g[f"crlb_{tag}"].to_numpy(), var_logg)
            rec.update({f"sigma_{tag}": s["median_sigma_crlb"], f"median_r2_{tag}": s["median_r2_max"],
                        f"p90_r2_{tag}": s["p90_r2_max"], f"pop_r2_{tag}": s["population_r2_max"],
                        f"schur_{tag}": float(g[f"schur_{tag}"].median()),
                        f"cond_{tag}": float(g[f"cond_{tag}"].median()), f"flagged_{tag}": s["n_flagged"]})
            if f"bcrlb_{tag}" in g:
                rec[f"bayes_r2_{tag}"] = float(1 - g[f"bcrlb_{tag}"].mean() / var_logg)
            if F is not None and params is not None and params.data.mock is not None:
                nuis = params.fisher.nuisance_3d if tag == "3d" else params.fisher.nuisance_5d
                vt = van_trees_sampling_prior(F[mag], g, params.data.mock, "log_g", nuis, drawn_from="grid")
                rec[f"vantrees_r2_{tag}"] = float(1 - vt["bound"] / var_logg)
                rec[f"vantrees_shape_{tag}"] = vt["shape"]
        rows.append(rec)
    return pd.DataFrame(rows)


def ceiling_per_bin(frame: pd.DataFrame, snr_column: str, edges: Sequence[float], labels: Sequence[str],
                    var_logg: float) -> pd.DataFrame:
    """Population ceiling per SNR bin: 1 − mean(CRLB)/Var for 3-D and 5-D, and the Bayesian ceiling.

    Bins are right-closed on ``snr_column`` (as :func:`snrmoe_lib.data.noise.assign_bins`); an empty
    bin is kept with NaN ceilings and n = 0.
    """
    idx = assign_bins(frame[snr_column].to_numpy(), edges)
    out = []
    for k, lab in enumerate(labels):
        g = frame[idx == k]
        rec = {"bin": lab, "n": len(g), "snr_median": float(g[snr_column].median()) if len(g) else np.nan}
        for tag in ("3d", "5d"):
            c = g[f"crlb_{tag}"].to_numpy()
            c = c[np.isfinite(c)]
            rec[f"ceiling_{tag}"] = float(1 - c.mean() / var_logg) if c.size else np.nan
            rec[f"median_r2_{tag}"] = float(np.median(1 - c / var_logg)) if c.size else np.nan
            if f"bcrlb_{tag}" in g:
                rec[f"bayes_{tag}"] = float(1 - g[f"bcrlb_{tag}"].mean() / var_logg) if len(g) else np.nan
        out.append(rec)
    return pd.DataFrame(out)


def calibration_rows(table: pd.DataFrame, params: Params) -> pd.DataFrame:
    """The mock's median R²_max against the user's real-product values at the reference magnitudes.

    The mock's median R²_max is recomputed with the user's convention, Var(log g) of their grid
    (``fisher.reference_var_logg``), from the median σ_CRLB, so the two are comparable.
    """
    f = params.fisher
    rows = []
    for m, r3, r5 in zip(f.reference_mags, f.reference_r2_3d, f.reference_r2_5d):
        hit = table[np.isclose(table["mag"], m)]
        rec = {"mag": m, "real_r2_3d": r3, "real_r2_5d": r5}
        if len(hit):
            h = hit.iloc[0]
            rec.update(mock_r2_3d=1 - h["sigma_3d"] ** 2 / f.reference_var_logg,
                       mock_r2_5d=1 - h["sigma_5d"] ** 2 / f.reference_var_logg,
                       mock_sigma_3d=h["sigma_3d"], real_sigma_3d=float(np.sqrt((1 - r3) * f.reference_var_logg)),
                       mock_snr_pixel=h["snr_pixel"])
        rows.append(rec)
    out = pd.DataFrame(rows)
    if "mock_r2_3d" in out:
        out["diff_3d"] = out["mock_r2_3d"] - out["real_r2_3d"]
        out["diff_5d"] = out["mock_r2_5d"] - out["real_r2_5d"]
    return out


def fd_autograd_check(path: str | Path, params: Params, model: ForwardModel, var_logg: float,
                      n_stars: int | None = None) -> pd.DataFrame:
    """σ_CRLB of log g from grid finite differences and from autograd at the same grid stars.

    Interior stars (central differences on every axis) are preferred; only when the grid has none
    are the configured edges used. Columns ``sigma_fd_<tag>``, ``sigma_ad_<tag>`` and
    ``ratio_<tag>`` = FD / autograd for the 3-D and 5-D marginalisations.
    """
    n = params.fisher.fd_check_stars if n_stars is None else n_stars
    with open_dataset(path) as ds:
        edges = "drop" if usable_rows(ds.params, edges="drop").size else params.fisher.edges
    fd, _ = grid_star_frame(path, params, var_logg, model=model, method="fd", n_stars=n, edges=edges)
    ad, _ = grid_star_frame(path, params, var_logg, model=model, method="autograd", n_stars=n, edges=edges)
    out = fd[[*PARAM_NAMES, "mag", "row", "central"]].copy()
    for tag in ("3d", "5d"):
        out[f"sigma_fd_{tag}"] = fd[f"sigma_{tag}"]
        out[f"sigma_ad_{tag}"] = ad[f"sigma_{tag}"]
        out[f"ratio_{tag}"] = fd[f"sigma_{tag}"] / ad[f"sigma_{tag}"]
    return out


def bin_star_frame(params: Params, ds: PfsDataset, grid_frame: pd.DataFrame, var_logg: float,
                   prior_var: np.ndarray | None = None, model: ForwardModel | None = None) -> tuple[pd.DataFrame, str]:
    """Stars for the per-SNR-bin ceiling, and a phrase naming where they come from.

    On a mock dataset (``data.mock`` set and ``model`` given): ``fisher.n_bin_stars`` stars drawn
    from the test split, with exact autograd Jacobians and the dataset's own σ, so each bin's
    ceiling refers to the label and SNR distribution the models are tested on. Otherwise (real
    data): the grid stars of every magnitude, pooled.
    """
    pooled = "grid stars of every magnitude, pooled"
    if params.data.mock is None or model is None:
        return grid_frame, pooled
    s = params.split
    test = split_rows(ds.n, s.n_train, s.n_val, s.n_test, s.seed).test
    diff = model_flux_mismatch(model, ds, test[:3])
    if diff > 1e-3:
        msg = (f"the dataset's flux differs from model {getattr(model, 'name', model)!r} by {diff:.2g} (relative): "
               "it was made by another forward model or version; regenerate it. Using the grid stars instead")
        warnings.warn(msg, stacklevel=2)
        return grid_frame, pooled + f" ({msg})"
    n = min(params.fisher.n_bin_stars, len(test))
    rows = np.sort(_rng("fisher.bin_stars", params.fisher.seed).choice(test, size=n, replace=False))
    return (dataset_star_frame(ds, rows, params, model, var_logg, prior_var),
            f"{n} test stars of the dataset (exact autograd Jacobians, the dataset's σ)")


def model_flux_mismatch(model: ForwardModel, ds: PfsDataset, rows: np.ndarray) -> float:
    """Largest relative difference between the stored flux of ``rows`` and ``model``'s flux there.

    About 1e-7 (float32 storage) when the dataset was made by this model; anything large means the
    exact Jacobians of ``model`` do not describe this dataset.
    """
    import torch

    chunk = ds.read(np.sort(np.asarray(rows)), dtype=np.float64)
    with torch.no_grad():
        f = model.normalized_flux(torch.as_tensor(parameter_matrix(chunk.params)), chunk.params).numpy()
    return float(np.max(np.abs(f - chunk.flux)) / np.max(np.abs(chunk.flux)))


# --------------------------------------------------------------------------------------------
# The notebook's steps, verdicts and results
# --------------------------------------------------------------------------------------------


@dataclass
class CeilingSetup:
    """What every step of the notebook shares: grid files, forward model, Var(log g) and priors.

    ``model`` is the mock forward model (``None`` on real data: no autograd Jacobians);
    ``prior_var`` the sampling prior's variances (the dataset's on real data) for the Bayesian
    bound; ``prior_info`` the beta prior's Fisher informations for Van Trees (mock only).
    """

    files: dict
    model: ForwardModel | None
    var_logg: float
    prior_var: np.ndarray
    prior_info: np.ndarray | None


def setup(params: Params, ds: PfsDataset) -> CeilingSetup:
    """Grid files (generated when missing), the forward model, Var(log g) and the prior moments."""
    mock = params.data.mock
    files = ensure_grid(params)
    model = get_model(mock.model) if mock is not None else None
    var_logg = label_variance(params, params.fisher.var_source, ds)
    prior_var = prior_variances(mock if mock is not None else ds.params)
    prior_info = prior_informations(mock) if mock is not None else None
    return CeilingSetup(files, model, var_logg, prior_var, prior_info)


def prior_table(s: CeilingSetup) -> pd.DataFrame:
    """Prior variance and prior Fisher information per parameter."""
    info = s.prior_info if s.prior_info is not None else np.nan
    return pd.DataFrame({"prior variance": s.prior_var, "prior Fisher information": info}, index=PARAM_NAMES)


def ceilings_by_magnitude(params: Params, s: CeilingSetup) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-star ceilings of ``fisher.n_stars`` grid stars per magnitude, and the table per magnitude."""
    per_mag = {m: grid_star_frame(path, params, s.var_logg, s.prior_var, model=s.model) for m, path in s.files.items()}
    frame = pd.concat([fr for fr, _ in per_mag.values()], ignore_index=True)
    table = ceiling_by_magnitude(frame, s.var_logg, {m: F for m, (_, F) in per_mag.items()}, params)
    return frame, table


def ceiling_maps(params: Params, s: CeilingSetup, mags: Sequence[float] = (21.5, 22.5)) -> dict:
    """Magnitude → per-star ceilings of every usable grid star, at ``mags`` (else the first two)."""
    map_mags = [m for m in mags if m in s.files] or list(s.files)[:2]
    return {m: grid_star_frame(s.files[m], params, s.var_logg, model=s.model, n_stars=None)[0] for m in map_mags}


def fd_check(params: Params, s: CeilingSetup, mag: float = 21.5) -> pd.DataFrame | None:
    """:func:`fd_autograd_check` at ``mag`` (else the first magnitude); ``None`` without a forward model."""
    if s.model is None:
        return None
    check_mag = mag if mag in s.files else list(s.files)[0]
    return fd_autograd_check(s.files[check_mag], params, s.model, s.var_logg)


def bin_ceilings(params: Params, ds: PfsDataset, s: CeilingSetup, frame: pd.DataFrame,
                 results_dir: str | Path, tag: str = "5d") -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """Ceilings per SNR bin, where their stars come from, and the models' efficiency against them.

    The models' per-bin R² are read from the Q1/Q3 results of this configuration in
    ``results_dir`` (:func:`~snrmoe_lib.analyses.k1_efficiency.model_bin_r2`).
    """
    bin_frame, source = bin_star_frame(params, ds, frame, s.var_logg, s.prior_var, model=s.model)
    b = params.snr_bins
    bins = ceiling_per_bin(bin_frame, f"snr_{b.definition}", b.edges, bin_labels(b.edges, b.labels), s.var_logg)
    models = model_bin_r2(results_dir, config=params.name, noise_level=params.noise.noise_level)
    return bins, source, efficiency_table(models, bins, tag)


def bound_columns(table: pd.DataFrame) -> list[str]:
    """Columns of the ceiling table that compare the unbiased, Bayesian and Van Trees ceilings."""
    cols = ["mag", "snr_pixel", "median_r2_3d", "pop_r2_3d", "bayes_r2_3d", "median_r2_5d", "pop_r2_5d", "bayes_r2_5d"]
    return cols + [c for c in ("vantrees_r2_3d", "vantrees_r2_5d", "vantrees_shape_5d") if c in table]


def _fd_error(check: pd.DataFrame) -> float:
    return float(np.nanmedian(np.abs(check["ratio_5d"] - 1)))


def check_invariants(table: pd.DataFrame, frame: pd.DataFrame, check: pd.DataFrame | None, fd_tol: float) -> None:
    """Raise unless the ceilings behave as bounds must.

    σ_CRLB grows monotonically with magnitude; more nuisances never lower the CRLB; the Schur decay
    lies in [0, 1]; the Bayesian bound never exceeds the CRLB; most stars are well conditioned;
    finite differences agree with autograd within ``fd_tol``.
    """
    t = table.sort_values("mag")
    if not (np.all(np.diff(t["sigma_3d"]) > 0) and np.all(np.diff(t["sigma_5d"]) > 0)):
        raise ValueError("ceiling not monotonic in magnitude")
    both = frame["crlb_5d"].notna()
    if not np.all(frame["crlb_5d"].dropna() >= frame.loc[both, "crlb_3d"] * (1 - 1e-9)):
        raise ValueError("a 5-D CRLB is below the 3-D one: more nuisances cannot add information")
    if not frame[["schur_3d", "schur_5d"]].dropna().apply(lambda c: c.between(0, 1 + 1e-9)).all().all():
        raise ValueError("a Schur decay lies outside [0, 1]")
    if not np.all(frame["bcrlb_5d"] <= frame["crlb_5d"].fillna(np.inf) * (1 + 1e-9)):
        raise ValueError("a Bayesian bound exceeds the CRLB")
    if not frame["crlb_5d"].notna().mean() > 0.5:
        raise ValueError("most stars flagged ill-conditioned")
    if check is not None and not _fd_error(check) <= fd_tol:
        raise ValueError(f"finite differences disagree with autograd: median |ratio − 1| = {_fd_error(check):.3f}")


def k1_verdicts(params: Params, check: pd.DataFrame | None, calib: pd.DataFrame) -> list[dict]:
    """FD-vs-autograd agreement (mock only) and |mock − real| median R²_max (3-D) per reference magnitude."""
    f = params.fisher
    verdicts = []
    if check is not None:
        verdicts.append(verdict("K1-check", "K1", "fd_vs_autograd_median_abs_rel_diff_5d", _fd_error(check), "<=",
                                f.fd_check_tol))
    for _, row in calib.dropna().iterrows():
        verdicts.append(verdict("K1-calibration", "K1", f"mock_vs_real_r2_3d_mag{row['mag']:g}",
                                abs(row["diff_3d"]), "<=", f.calibration_tol, note="|mock − real| median R²_max (3-D)"))
    return verdicts


def k1_metrics(table: pd.DataFrame) -> dict:
    """Median and population R²_max and the Bayesian ceiling, 3-D and 5-D, per magnitude."""
    metrics = {}
    for _, row in table.sort_values("mag").iterrows():
        for tag in ("3d", "5d"):
            metrics[f"median_r2_max_{tag}_mag{row['mag']:g}"] = metric(row[f"median_r2_{tag}"])
            metrics[f"pop_r2_max_{tag}_mag{row['mag']:g}"] = metric(row[f"pop_r2_{tag}"])
            metrics[f"bayes_r2_{tag}_mag{row['mag']:g}"] = metric(row[f"bayes_r2_{tag}"])
    return metrics


def k1_results(params: Params, s: CeilingSetup, table: pd.DataFrame, frame: pd.DataFrame,
               check: pd.DataFrame | None, calib: pd.DataFrame, bins: pd.DataFrame, bin_source: str,
               eff: pd.DataFrame) -> tuple[dict, list, dict]:
    """The notebook's metrics, verdicts and extra payload, after :func:`check_invariants`."""
    check_invariants(table, frame, check, params.fisher.fd_check_tol)
    extra = {"ceiling_table": table.to_dict(orient="records"), "bin_ceilings": bins.to_dict(orient="records"),
             "bin_source": bin_source, "efficiency": eff.to_dict(orient="records"),
             "calibration": calib.to_dict(orient="records"), "var_logg": s.var_logg,
             "grid_files": {str(m): str(path) for m, path in s.files.items()},
             "fd_check": None if check is None else check.to_dict(orient="records")}
    return k1_metrics(table), k1_verdicts(params, check, calib), extra
