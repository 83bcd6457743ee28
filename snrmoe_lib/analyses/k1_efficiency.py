"""K1 · how close each model comes to the bound of its SNR bin: efficiency = bound MSE / model MSE.

Reads the per-bin scores of the models in the Q1/Q3 results of a configuration
(:func:`model_bin_scores`) and sets them against the per-bin bounds of
:func:`snrmoe_lib.analyses.k1_bins.bin_bounds` on the same frozen test set and with the same
variance (:func:`efficiency_table`). The Q1/Q3 results hold per-bin R² (with a star-bootstrap
interval), RMSE and n: the model's MSE is (1 − R²) · Var_bin with the bin's Var(log g) over its
frozen-test stars, and the efficiency interval combines the bound's interval with the model's (not
paired). With the per-star predictions Q1 and Q3 save beside their results
(:mod:`snrmoe_lib.evaluation.predictions`), :func:`paired_efficiency` compares each model with the
bound on exactly the bound's stars, on the same bootstrap draws of those stars: paired intervals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.evaluation.metrics import (bootstrap_indices, percentile_interval, r2, r2_counts, resample_counts,
                                           seed_resample_mean)
from snrmoe_lib.evaluation.predictions import PredictionsError, predictions_path, read_predictions
from snrmoe_lib.evaluation.records import find_results

__all__ = ["model_bin_scores", "model_bin_r2", "efficiency_table", "BOUNDS", "PAIRED_MODELS", "load_predictions",
           "paired_efficiency", "model_errors", "residual_frame"]

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


#: The models of each notebook's predictions file that :func:`paired_efficiency` compares with the bounds.
PAIRED_MODELS = {"q1_snr_headroom": ("global", "oracle_hard", "phys_oracle", "blend_fixed"),
                 "q3_deployable_gate": ("deployed", "oracle_soft", "oracle_regression", "regression_gate", "whitening",
                                        "interacted", "deployed_estimated", "regression_gate_estimated",
                                        "whitening_estimated", "interacted_estimated"),
                 "q4_stronger_experts": ("ridge_deployed", "boosted_global", "boosted_deployed", "residual_mixture",
                                         "neural_global", "neural_deployed", "neural_conditional")}


def load_predictions(results_dir: str | Path, fingerprint: str, notebooks: Sequence[str] = tuple(PAIRED_MODELS)
                     ) -> tuple[dict, list[str]]:
    """The per-star predictions files of ``notebooks`` under ``results_dir`` scored on the frozen test
    ``fingerprint``: (notebook → Predictions, one line per file that is absent or unusable, saying why)."""
    found, notes = {}, []
    for nb in notebooks:
        try:
            found[nb] = read_predictions(predictions_path(results_dir, nb), fingerprint)
        except PredictionsError as exc:
            notes.append(f"{nb}: {exc} — paired efficiency skipped for it")
    return found, notes


def paired_efficiency(preds: dict, draws: dict, tag: str = "5d", level: float = 0.95) -> pd.DataFrame:
    """Per model and bin: bound MSE / model MSE on the bound's own stars, with paired bootstrap intervals.

    ``preds``: notebook → :class:`~snrmoe_lib.evaluation.predictions.Predictions`; ``draws``: what
    :func:`~snrmoe_lib.analyses.k1_bins.bin_bounds` fills (per (bin, tag): the bound stars' rows, the
    point bounds and their draws over ``bootstrap_indices(n, n_boot, fisher.seed)``). The model MSE is
    the seed-mean squared error of the same stars, resampled with the same indices, so the ratio of
    each draw is paired. Van Trees holds for any estimator: an efficiency interval above 1 is a violation.
    """
    rows = []
    for (lab, t), d in draws.items():
        if t != tag or not d["draws"]:
            continue
        n = len(d["rows"])
        idx = bootstrap_indices(n, d["n_boot"], d["seed"])
        for nb, pr in preds.items():
            for m in [m for m in PAIRED_MODELS.get(nb, ()) if m in pr.models]:
                e2 = pr.squared_errors(m, d["rows"])
                mse, mse_d = float(e2.mean()), e2[idx].mean(axis=1)
                rec = {"model": f"{nb.split('_')[0]}:{m}", "bin": lab, "n_stars": n, "model_mse": mse,
                       "model_rmse": float(np.sqrt(mse))}
                for name in BOUNDS:
                    if name not in d["point"]:
                        continue
                    iv = percentile_interval(d["draws"][name] / mse_d, level)
                    rec |= {f"{name}_eff": d["point"][name] / mse, f"{name}_eff_lo": iv[0], f"{name}_eff_hi": iv[1]}
                rows.append(rec)
    return pd.DataFrame(rows)


def _groups(ft, by: str, mag_step: float) -> tuple[np.ndarray, list, np.ndarray]:
    """Rows of the frozen test, each row's group index, and the group labels (true SNR bin or magnitude)."""
    rows = ft.table["row"].to_numpy()
    if by == "bin":
        return rows, list(ft.labels), np.asarray(ft.bins)
    if by == "mag":
        if "mag" not in ft.table:
            raise ValueError("the frozen test's params have no 'mag' column: no per-magnitude table")
        m = np.floor(ft.table["mag"].to_numpy(float) / mag_step) * mag_step
        edges = np.unique(m)
        return rows, [f"{e:g}–{e + mag_step:g}" for e in edges], np.searchsorted(edges, m)
    raise ValueError(f"by must be 'bin' or 'mag', got {by!r}")


def model_errors(preds: dict, ft, n_boot: int, seed: int, by: str = "bin", mag_step: float = 0.5) -> pd.DataFrame:
    """Per model and true-SNR bin (``by='bin'``) or magnitude slice (``'mag'``): n, R², RMSE and bias of log g
    on the frozen test (seed means), with bootstrap intervals over the group's stars and the seeds (the
    shared two-level bootstrap: ``bootstrap.stars`` and :func:`~snrmoe_lib.evaluation.metrics.seed_resample_mean`).

    R² hides shrinkage toward the mean at low SNR; the bias and :func:`residual_frame` show it.
    """
    rows, labels, grp = _groups(ft, by, mag_step)
    out = []
    for nb, pr in preds.items():
        pos = pr.positions(rows)
        y = pr.y[pos]
        models = [m for m in PAIRED_MODELS.get(nb, ()) if m in pr.models]
        for k, lab in enumerate(labels):
            sel = np.flatnonzero(grp == k)
            if sel.size < 2:
                continue
            yk = y[sel]
            W = resample_counts(bootstrap_indices(sel.size, n_boot, seed))  # (n_boot, n): the same draws for all
            for m in models:
                E = pr.models[m][:, pos[sel]].astype(np.float64) - yk     # (n_seeds, n) residuals
                r2_s = np.array([r2_counts(yk, yk + e, W) for e in E])
                stats = {"r2": (np.mean([r2(yk, yk + e) for e in E]), r2_s),
                         "rmse": (np.mean(np.sqrt((E ** 2).mean(axis=1))), np.sqrt((E ** 2) @ W.T / sel.size)),
                         "bias": (E.mean(), E @ W.T / sel.size)}
                rec = {"model": f"{nb.split('_')[0]}:{m}", by: lab, "n": int(sel.size)}
                for name, (v, per_seed) in stats.items():
                    lo, hi = percentile_interval(seed_resample_mean(per_seed, seed))
                    rec |= {name: float(v), f"{name}_lo": float(lo), f"{name}_hi": float(hi)}
                out.append(rec)
    return pd.DataFrame(out)


def residual_frame(pr, ft, model: str) -> pd.DataFrame:
    """One model's first-seed predictions on the frozen test with true log g and SNR bin (for a residual plot)."""
    rows = ft.table["row"].to_numpy()
    pos = pr.positions(rows)
    return pd.DataFrame({"bin": np.asarray(ft.bins), "log_g": pr.y[pos], "pred": pr.models[model][0, pos]})
