"""K1 · how close each model comes to the bound of its SNR bin: efficiency = bound MSE / model MSE.

Reads the per-bin scores of the models in the Q1/Q3 results of a configuration
(:func:`model_bin_scores`) and sets them against the per-bin bounds of
:func:`snrmoe_lib.analyses.k1_bins.bin_bounds` on the same frozen test set and with the same
variance (:func:`efficiency_table`). The Q1/Q3 results hold per-bin R² (with a star-bootstrap
interval), RMSE and n, not per-star predictions: the model's MSE is (1 − R²) · Var_bin with the
bin's Var(log g) over its frozen-test stars, and the efficiency interval combines the bound's
interval with the model's (not paired: that needs per-star predictions).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.evaluation.records import find_results

__all__ = ["model_bin_scores", "model_bin_r2", "efficiency_table", "BOUNDS"]

#: bound columns of :func:`~snrmoe_lib.analyses.k1_bins.bin_bounds` → short name in the efficiency table
BOUNDS = {"vantrees": "Van Trees (any estimator)", "bayes": "Gaussian prior (linear shrinkage)",
          "crlb_mean": "unbiased CRLB, mean over stars"}


def model_bin_scores(results_root: str | Path, config: str | None = None,
                     notebooks: Sequence[str] = ("q1", "q3", "q4"), noise_level: float | None = None) -> pd.DataFrame:
    """Per-SNR-bin R² (with interval), RMSE and n of every model in the Q1/Q3/Q4 results under ``results_root``.

    Reads each result's ``extra`` for tables of records with ``bin`` and ``r2`` fields (the shape
    of :func:`snrmoe_lib.evaluation.metrics.per_bin_seed_table`); ``model`` names the model within the
    notebook. Records with a ``noise_level`` other than ``noise_level`` (when given) are left out, and
    a model whose per-bin R² repeats one already read (Q3 re-reporting Q1's models) is kept once.
    Returns columns notebook, table, model ('q1:global', …), bin (the label's first word), r2,
    r2_lo, r2_hi, rmse, n; empty when no such results exist yet.
    """
    rows = []
    root = Path(results_root)
    for rec in (find_results(root, config=config) if root.exists() else []):
        nb = rec["notebook"]
        if not any(nb.startswith(p) for p in notebooks):
            continue
        for key, val in (rec.get("extra") or {}).items():
            if not (isinstance(val, list) and val and all(isinstance(v, dict) and "bin" in v and "r2" in v for v in val)):
                continue
            for v in val:
                if v["r2"] is None:
                    continue
                if noise_level is not None and v.get("noise_level") is not None \
                        and not np.isclose(float(v["noise_level"]), noise_level):
                    continue
                rows.append({"notebook": nb, "table": key, "model": f"{nb.split('_')[0]}:{v.get('model', key)}",
                             "bin": str(v["bin"]).split()[0], "r2": float(v["r2"]),
                             **{k: (np.nan if v.get(k) is None else float(v[k])) for k in ("r2_lo", "r2_hi", "rmse")},
                             "n": v.get("n")})
    out = pd.DataFrame(rows, columns=["notebook", "table", "model", "bin", "r2", "r2_lo", "r2_hi", "rmse", "n"])
    if out.empty:
        return out
    seen, keep = set(), []
    for model, g in out.groupby("model", sort=False):
        sig = tuple(zip(g["bin"], np.round(g["r2"], 12)))
        if sig not in seen:
            seen.add(sig)
            keep.append(model)
    return out[out["model"].isin(keep)].reset_index(drop=True)


#: the former name (per-bin R² only)
model_bin_r2 = model_bin_scores


def efficiency_table(models: pd.DataFrame, bounds: pd.DataFrame, tag: str = "5d") -> pd.DataFrame:
    """Per model and bin: model MSE, each bound's MSE and efficiency = bound MSE / model MSE, with intervals.

    ``model_mse`` = (1 − R²) · Var_bin (exact for the seed-mean R² on the bin's frozen-test stars);
    its interval from the R² interval. The efficiency interval is [bound_lo / mse_hi, bound_hi / mse_lo]
    (conservative, unpaired). An efficiency above 1 for Van Trees means the bound is violated (a bug
    or a leak); ``n_matches`` says whether the model's bin count equals the frozen test's.
    """
    cols = ["model", "bin", "r2", "n", "n_test", "n_matches", "var_bin", "model_mse", "model_mse_lo", "model_mse_hi"]
    cols += [f"{b}_{s}" for b in BOUNDS for s in ("mse", "eff", "eff_lo", "eff_hi")]
    if models.empty:
        return pd.DataFrame(columns=cols)
    b = bounds[bounds["tag"] == tag]
    out = models.merge(b, on="bin", how="left")
    out["model_mse"] = (1 - out["r2"]) * out["var_bin"]
    out["model_mse_lo"] = (1 - out["r2_hi"]) * out["var_bin"]
    out["model_mse_hi"] = (1 - out["r2_lo"]) * out["var_bin"]
    out["n_matches"] = out["n"].astype(float) == out["n_test"].astype(float)
    for name in BOUNDS:
        if f"{name}_mse" not in out:
            out[[f"{name}_mse", f"{name}_eff", f"{name}_eff_lo", f"{name}_eff_hi"]] = np.nan
            continue
        out[f"{name}_eff"] = out[f"{name}_mse"] / out["model_mse"]
        out[f"{name}_eff_lo"] = out[f"{name}_mse_lo"] / out["model_mse_hi"]
        out[f"{name}_eff_hi"] = out[f"{name}_mse_hi"] / out["model_mse_lo"]
    return out[[c for c in cols if c in out]]
