"""K1 · how close each model comes to the ceiling of its SNR bin.

Reads the per-bin R² of the models in the Q1/Q3 results of a configuration
(:func:`model_bin_r2`) and sets them against the bin ceilings of :func:`snrmoe_lib.analyses.k1.ceiling_per_bin`
(:func:`efficiency_table`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.evaluation.records import find_results

__all__ = ["model_bin_r2", "efficiency_table"]


def model_bin_r2(results_root: str | Path, config: str | None = None,
                 notebooks: Sequence[str] = ("q1", "q3"), noise_level: float | None = None) -> pd.DataFrame:
    """Per-SNR-bin R² of every model in the Q1/Q3 results JSON under ``results_root``.

    Reads each result's ``extra`` for tables of records with ``bin`` and ``r2`` fields (the shape
    of :func:`snrmoe_lib.evaluation.metrics.per_bin_table`); ``model`` names the model within the notebook.
    Records with a ``noise_level`` other than ``noise_level`` (when given) are left out, and a
    model whose per-bin R² repeats one already read (Q3 re-reporting Q1's models) is kept once.
    Returns columns notebook, model ('q1:global', …), bin (the label's first word, e.g. 'X'), r2,
    n; empty when no such results exist yet.
    """
    rows = []
    root = Path(results_root)
    recs = find_results(root, config=config) if root.exists() else []
    for rec in recs:
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
                             "bin": str(v["bin"]).split()[0], "r2": float(v["r2"]), "n": v.get("n")})
    out = pd.DataFrame(rows, columns=["notebook", "table", "model", "bin", "r2", "n"])
    if out.empty:
        return out
    seen, keep = set(), []
    for model, g in out.groupby("model", sort=False):
        sig = tuple(zip(g["bin"], np.round(g["r2"], 12)))
        if sig not in seen:
            seen.add(sig)
            keep.append(model)
    return out[out["model"].isin(keep)].reset_index(drop=True)


def efficiency_table(models: pd.DataFrame, bins: pd.DataFrame, tag: str = "5d") -> pd.DataFrame:
    """Efficiency of each model per SNR bin against the bin's ceilings.

    ``efficiency`` = R²_model / Bayesian ceiling (a population bound that also binds shrinkage
    estimators); ``efficiency_median`` = R²_model / median per-star R²_max (the user's headline
    ceiling); ``efficiency_unbiased`` = R²_model / (1 − mean CRLB / Var). A ceiling ≤ 0 leaves the
    efficiency undefined (NaN).
    """
    cols = {f"bayes_{tag}": "bayes", f"median_r2_{tag}": "median_r2_max", f"ceiling_{tag}": "unbiased"}
    if models.empty:
        return models.assign(**{c: [] for c in (*cols.values(), "efficiency", "efficiency_median",
                                                "efficiency_unbiased")})
    b = bins.assign(bin=bins["bin"].astype(str).str.split().str[0])
    out = models.merge(b[["bin", *[c for c in cols if c in b]]].rename(columns=cols), on="bin", how="left")

    def ratio(den):
        return np.where(out[den] > 0, out["r2"] / out[den].where(out[den] > 0, 1.0), np.nan)

    out["efficiency"] = ratio("bayes")
    out["efficiency_median"] = ratio("median_r2_max")
    out["efficiency_unbiased"] = ratio("unbiased")
    return out
