"""K1 · the Fisher / Cramér–Rao ceiling of a configuration: what the fisher_ceiling notebook needs.

* R²_max per magnitude, computed once (:mod:`snrmoe_lib.analyses.k1_ceiling`, shared with the data
  notebook's calibration row), with the finite-difference step-halving check, Schur against the
  full inverse and the error-scaling check; on real data (``fisher.grid_path``) from the user's grid
  products by finite differences along their lattice (:func:`grid_ceiling`);
* per-SNR-bin bounds on the frozen test (:mod:`snrmoe_lib.analyses.k1_bins`) and the models'
  efficiency against them (:mod:`snrmoe_lib.analyses.k1_efficiency`);
* the MAP template fit (:mod:`snrmoe_lib.analyses.k1_map`);
* the notebook's verdicts, metrics and results payload (:func:`k1_results`).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.k1_bins import FrozenTest, bin_bounds, bin_fishers, frozen_test, prior_snr_correlation
from snrmoe_lib.analyses.k1_ceiling import (LatticeCeiling, calibration_rows, fd_convergence, lattice_ceiling,
                                            magnitude_table, nuisance_sets)
from snrmoe_lib.analyses.k1_efficiency import (efficiency_table, load_predictions, model_bin_scores, model_errors,
                                              paired_efficiency, residual_frame)
from snrmoe_lib.ceiling.jacobians import detect_lattice, grid_jacobian_dataset
from snrmoe_lib.ceiling.per_star import StarFishers, star_frame
from snrmoe_lib.ceiling.crlb import fisher_matrix
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, open_dataset
from snrmoe_lib.data.mock.base import ForwardModel
from snrmoe_lib.data.mock.generate import grid_path
from snrmoe_lib.data.mock.registry import get_model
from snrmoe_lib.data.noise import snr_pixel
from snrmoe_lib.evaluation.records import metric, verdict

__all__ = ["grid_files", "grid_ceiling", "model_of", "ceiling_by_magnitude", "bins_and_bounds", "model_efficiency",
           "load_predictions", "paired_efficiency", "model_errors", "residual_frame",
           "interval_of_abs", "k1_verdicts", "k1_metrics", "k1_results", "describe_ceiling", "bounds_view",
           "EFFICIENCY_COLUMNS", "errors_by", "bins_payload", "results"]


def model_of(params: Params) -> ForwardModel | None:
    """The mock forward model of the configuration (``None`` on real data: no exact Jacobians)."""
    return get_model(params.data.mock.model) if params.data.mock is not None else None


def grid_files(params: Params) -> dict:
    """Magnitude → the user's grid product of ``fisher.grid_path`` (real data; must exist)."""
    gp = params.fisher.grid_path
    if not gp:
        raise ValueError("fisher.grid_path is empty: on real data point it at the pfsspec grid products "
                         "(one file per magnitude, '{mag}' in the path or a base '<stem>.h5')")
    files = {float(m): params.resolve(gp.format(mag=m)) if "{mag" in gp else grid_path(params.resolve(gp), m)
             for m in params.fisher.mags}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"grid file(s) not found: {missing} (fisher.grid_path)")
    return files


def grid_ceiling(params: Params) -> LatticeCeiling:
    """Real data: the per-magnitude ceiling from grid products, central differences along their lattice.

    ``fisher.n_stars`` usable stars per file (seeded), σ = the file's error (noise_level 1, as the
    lattice ceiling on the mock), Var(log g) = ``fisher.reference_var_logg``.
    """
    f = params.fisher
    t0 = time.perf_counter()
    parts = []
    for m, path in grid_files(params).items():
        with open_dataset(path, on_bad_rows=params.data.on_bad_rows) as ds:
            axes = detect_lattice(ds.params).axes
            gj = grid_jacobian_dataset(ds, n_stars=f.n_stars, seed=f.seed, edges=f.edges, axes=axes)
            flux = ds.read(gj.rows, dtype=np.float64).flux
        F = fisher_matrix(gj.J, gj.sigma, gj.mask)
        snr = snr_pixel(flux, gj.sigma, gj.mask)
        parts.append(star_frame(gj.table, {m: F}, {m: snr}, f.reference_var_logg, nuisance_sets(params), f.cond_max))
    frame = pd.concat(parts, ignore_index=True)
    return LatticeCeiling(frame, StarFishers(frame, {}, {}), f.reference_var_logg, time.perf_counter() - t0)


def ceiling_by_magnitude(params: Params, model: ForwardModel | None,
                         cache_dir: str | Path | None = None) -> tuple[LatticeCeiling, pd.DataFrame]:
    """The one R²_max computation (mock) or the grid products' (real data), and the table per magnitude.

    ``cache_dir``: the run's output folder, where the lattice Fisher matrices are shared with the data
    notebook (:func:`~snrmoe_lib.analyses.k1_ceiling.lattice_ceiling`)."""
    lc = lattice_ceiling(params, model, cache_dir=cache_dir) if model is not None else grid_ceiling(params)
    return lc, magnitude_table(lc.frame, lc.var_logg, params.runner.n_bootstrap, params.fisher.seed)


def bins_and_bounds(params: Params, ds: PfsDataset, model: ForwardModel | None,
                    draws: dict | None = None) -> tuple[FrozenTest, pd.DataFrame, pd.DataFrame, float]:
    """The frozen test, the prior–SNR correlation, the per-bin bounds (mock only: empty on real data), seconds.

    ``draws``: filled with the bounds' bootstrap draws per (bin, tag) (:func:`bin_bounds`) for
    :func:`~snrmoe_lib.analyses.k1_efficiency.paired_efficiency`."""
    ft = frozen_test(params, ds)
    corr = prior_snr_correlation(ft, f"snr_{params.snr_bins.definition}")
    if model is None:
        return ft, corr, pd.DataFrame(), 0.0
    t0 = time.perf_counter()
    bs = bin_fishers(params, ds, model, ft)
    bounds = bin_bounds(bs, ft, params, nuisance_sets(params), params.runner.n_bootstrap, draws)
    return ft, corr, bounds, time.perf_counter() - t0


def model_efficiency(params: Params, bounds: pd.DataFrame, results_dir: str | Path, tag: str = "5d") -> pd.DataFrame:
    """Efficiency of every Q1/Q3 model of this configuration (results in ``results_dir``) per bin."""
    models = model_bin_scores(results_dir, config=params.name, noise_level=params.noise.noise_level)
    return efficiency_table(models, bounds, tag) if len(bounds) else efficiency_table(models.iloc[:0], bounds, tag)


def describe_ceiling(lc: LatticeCeiling) -> str:
    """One line: stars per magnitude, whether the lattice Fishers were computed or read back, seconds."""
    how = "read from the run's output folder" if lc.fishers.seconds.get("loaded") else "computed"
    return f"{lc.frame.groupby('mag').size().iloc[0]} stars per magnitude, {how}, {lc.seconds:.1f} s"


def bounds_view(bounds: pd.DataFrame) -> pd.DataFrame | str:
    """The per-bin bounds' identifying columns and R² bounds with their intervals (or why there are none)."""
    if not len(bounds):
        return "per-bin bounds need the forward model (mock only)"
    cols = ["bin", "tag", "n_stars", "n_test", "var_bin"] + [c for c in bounds if c.endswith("_r2") or
                                                             c.endswith("_r2_lo") or c.endswith("_r2_hi")]
    return bounds[cols]


#: Columns of the efficiency table shown in the notebook.
EFFICIENCY_COLUMNS = ["model", "bin", "r2", "n_matches", "vantrees_eff", "vantrees_eff_lo", "vantrees_eff_hi",
                      "bayes_eff", "crlb_mean_eff"]


def errors_by(preds: dict, ft: FrozenTest, n_boot: int, seed: int) -> dict[str, pd.DataFrame]:
    """:func:`~snrmoe_lib.analyses.k1_efficiency.model_errors` per true-SNR bin, and per magnitude slice
    when the frozen test has magnitudes; empty tables without per-star predictions."""
    return {by: model_errors(preds, ft, n_boot, seed, by) if preds else pd.DataFrame()
            for by in (("bin", "mag") if "mag" in ft.table else ("bin",))}


def bins_payload(ft: FrozenTest, corr: pd.DataFrame, bounds: pd.DataFrame, eff: pd.DataFrame,
                 paired: pd.DataFrame, errors: dict) -> dict:
    """The ``bins`` argument of :func:`k1_results`: the frozen test's record and every per-bin table."""
    return {"frozen_test": ft.record, "correlation": corr, "bounds": bounds, "efficiency": eff,
            "paired_efficiency": paired, **{f"model_errors_{by}": e for by, e in errors.items()}}


def interval_of_abs(lo: float, hi: float) -> list[float]:
    """The interval of |x| for x in [lo, hi]."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [np.nan, np.nan]
    return [0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi))]


def _name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", s).strip("_")


def k1_verdicts(params: Params, conv: pd.DataFrame | None, schur: pd.DataFrame | None, calib: pd.DataFrame,
                eff: pd.DataFrame, paired: pd.DataFrame | None = None) -> list[dict]:
    """FD-vs-autograd at ``fisher.fd_check_mag`` and the grid's steps (3-D, 5-D), Schur against the inverse,
    |mock − real| median R²_max (3-D) per reference magnitude, and no model beating Van Trees."""
    f = params.fisher
    out = []
    if conv is not None and len(conv):
        at = conv[np.isclose(conv["mag"], f.fd_check_mag) & (conv["step_factor"] == 1.0)]
        for r in at.itertuples():
            out.append(verdict("K1-check", "K1", f"fd_vs_autograd_sigma_{r.tag}_mag{r.mag:g}", r.median_abs_dev, "<=",
                               f.fd_check_tol, interval=[r.lo, r.hi],
                               note="median |σ_FD/σ_autograd − 1| at the grid's steps over lattice stars"))
    if schur is not None and len(schur):
        out.append(verdict("K1-check", "K1", "schur_vs_inverse_max_rel_diff", float(schur["max_rel_diff"].max()), "<=",
                           1e-6, note="Schur complement against [F_sub⁻¹]_gg, every star and magnitude"))
    for r in calib.dropna(subset=["r2_3d"]).itertuples():
        out.append(verdict("K1-calibration", "K1", f"mock_vs_real_r2_3d_mag{r.mag:g}", abs(r.diff_3d), "<=",
                           f.calibration_tol, interval=interval_of_abs(r.diff_3d_lo, r.diff_3d_hi),
                           note="|mock − real| median R²_max (3-D)"))
    paired = paired if paired is not None and len(paired) and "vantrees_eff" in paired else None
    src = eff if paired is None else paired
    if len(src) and src["vantrees_eff"].notna().any():
        i = int(np.nanargmax(src["vantrees_eff"].to_numpy(float)))
        r = src.iloc[i]
        how = "paired, on the bound's stars" if paired is not None else "from per-bin R², unpaired"
        out.append(verdict("K1-bound", "K1", "max_vantrees_efficiency", r["vantrees_eff"], "<=", 1.0,
                           interval=[r["vantrees_eff_lo"], r["vantrees_eff_hi"]],
                           note=f"largest Van Trees MSE / model MSE ({r['model']}, bin {r['bin']}; {how}); "
                                "> 1 = bound violated"))
    return out


def k1_metrics(table: pd.DataFrame, bounds: pd.DataFrame, eff: pd.DataFrame, map_bins: pd.DataFrame | None,
               paired: pd.DataFrame | None = None) -> dict:
    """The results names of the issue: R²_max per magnitude, bounds and efficiencies per bin, the MAP fit.

    With per-star predictions (``paired``, :func:`paired_efficiency`), ``efficiency_{model}_bin{label}``
    is the paired one (the bound's stars, paired draws) and the per-bin-R² estimate is kept as
    ``efficiency_from_r2_{model}_bin{label}``; without them the latter is reported under the first name."""
    m = {}
    for r in table.sort_values("mag").to_dict(orient="records"):
        for tag in ("3d", "5d"):
            mg = f"{tag}_mag{r['mag']:g}"
            m[f"r2_max_{mg}"] = metric(r[f"r2_{tag}"], [r[f"r2_{tag}_lo"], r[f"r2_{tag}_hi"]],
                                       statistic="median over lattice stars of per-star R²_max")
            m[f"pop_r2_max_{mg}"] = metric(r[f"pop_r2_{tag}"], [r[f"pop_r2_{tag}_lo"], r[f"pop_r2_{tag}_hi"]],
                                           statistic="1 − mean CRLB / Var")
            if f"bayes_r2_{tag}" in r:
                m[f"bayes_r2_{mg}"] = metric(r[f"bayes_r2_{tag}"])
    for r in bounds.to_dict(orient="records") if len(bounds) else []:
        suffix = "" if r["tag"] == "5d" else "_3d"
        for name, key in (("vantrees", "van_trees_r2"), ("bayes", "bayes_r2"), ("crlb_mean", "crlb_r2")):
            if f"{name}_r2" in r:
                m[f"{key}{suffix}_bin{r['bin']}"] = metric(r[f"{name}_r2"], [r[f"{name}_r2_lo"], r[f"{name}_r2_hi"]],
                                                           n=r["n_stars"])
    has_paired = paired is not None and len(paired) > 0 and "vantrees_eff" in paired
    for r in eff.to_dict(orient="records"):
        key = "efficiency_from_r2_" if has_paired else "efficiency_"
        m[f"{key}{_name(r['model'])}_bin{r['bin']}"] = metric(r["vantrees_eff"], [r["vantrees_eff_lo"],
                                                                                r["vantrees_eff_hi"]],
                                                              bound="Van Trees (5-D)", paired=False)
    for r in paired.to_dict(orient="records") if has_paired else []:
        m[f"efficiency_{_name(r['model'])}_bin{r['bin']}"] = metric(r["vantrees_eff"], [r["vantrees_eff_lo"],
                                                                                      r["vantrees_eff_hi"]],
                                                                    bound="Van Trees (5-D)", paired=True,
                                                                    n=r["n_stars"])
    if map_bins is not None:
        for r in map_bins.to_dict(orient="records"):
            m[f"map_fit_rmse_bin{r['bin']}"] = metric(r["rmse"], [r["rmse_lo"], r["rmse_hi"]], n=r["n"])
            m[f"map_fit_bias_bin{r['bin']}"] = metric(r["bias"], [r["bias_lo"], r["bias_hi"]], n=r["n"])
            m[f"map_fit_sigma_ratio_bin{r['bin']}"] = metric(r["sigma_ratio"], [r["sigma_ratio_lo"],
                                                                               r["sigma_ratio_hi"]], n=r["n"])
    return m


def k1_results(params: Params, table: pd.DataFrame, calib: pd.DataFrame, checks: dict, bins: dict,
               map_fit: dict | None = None, seconds: dict | None = None) -> tuple[dict, list, dict]:
    """The notebook's metrics, verdicts and extra payload.

    ``checks``: ``convergence``, ``schur``, ``scaling`` (frames or ``None``); ``bins``: ``frozen_test``
    (record), ``correlation``, ``bounds``, ``efficiency`` and optionally ``paired_efficiency``; ``map_fit``: ``map_bins`` (per-bin table) and
    more; ``seconds``: wall time per step.
    """
    records = {k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
               for k, v in {**checks, **bins, **(map_fit or {})}.items()}
    extra = {"ceiling_table": table.to_dict(orient="records"), "calibration": calib.to_dict(orient="records"),
             **records, "seconds": seconds or {}}
    paired = bins.get("paired_efficiency")
    metrics = k1_metrics(table, bins["bounds"], bins["efficiency"], (map_fit or {}).get("map_bins"), paired)
    return metrics, k1_verdicts(params, checks.get("convergence"), checks.get("schur"), calib, bins["efficiency"],
                                paired), extra


def results(params: Params, table: pd.DataFrame, calib: pd.DataFrame, checks: dict, bins: dict,
            map_fit: dict | None = None, seconds: dict | None = None) -> dict:
    """:func:`k1_results` as the keyword arguments of ``NotebookRun.finish``: ``metrics``, ``verdicts``, ``extra``."""
    metrics, verdicts, extra = k1_results(params, table, calib, checks, bins, map_fit, seconds)
    return {"metrics": metrics, "verdicts": verdicts, "extra": extra}
