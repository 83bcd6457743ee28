"""Q4 · the predicted σ of the calibrated intervals against each star's CRLB σ (mock only).

The per-star bound comes from K1's machinery (:mod:`snrmoe_lib.analyses.k1_bins`): exact (autograd)
Fisher matrices of up to ``q4.crlb_stars`` frozen-test stars per SNR bin (seeded, stream
``fisher.bin_stars``), σ = error · noise_level, the marginal CRLB of log g with the 5-D nuisance set
(``fisher.nuisance_5d``). A model's predicted σ is the half-width of its Mondrian-conformal 68 %
interval (for a model that predicts its own σ, the per-star σ rescaled by its bin's calibration). A
predicted σ below the CRLB is possible only for a biased (shrinking) estimator; a ratio
far above 1 is information the model leaves unused.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.k1 import model_of
from snrmoe_lib.analyses.k1_bins import bin_fishers, frozen_test
from snrmoe_lib.analyses.q4 import Q4Run
from snrmoe_lib.analyses.q4_report import calibration
from snrmoe_lib.ceiling.crlb import marginal_crlb
from snrmoe_lib.evaluation.intervals import predicted_sigma, sigma_vs_bound

__all__ = ["crlb_sigma", "sigma_table"]


def crlb_sigma(params, ds, run: Q4Run) -> tuple[np.ndarray, np.ndarray] | str:
    """(positions in the run's test rows, σ_CRLB of log g) of the bound's stars; a reason (str) on real data."""
    model = model_of(params)
    if model is None:
        return "no forward model on real data: the per-star CRLB needs the mock's exact Jacobians"
    p = dataclasses.replace(params, fisher=dataclasses.replace(params.fisher, n_bin_stars=params.q4.crlb_stars))
    ft = frozen_test(p, ds)
    bs = bin_fishers(p, ds, model, ft)
    rows = bs.table["row"].to_numpy()
    pos = np.searchsorted(run.rows, rows)
    if not (np.all(pos < len(run.rows)) and np.array_equal(run.rows[np.minimum(pos, len(run.rows) - 1)], rows)):
        raise RuntimeError("the CRLB stars are not among Q4's test rows (a different split?)")
    crlb = marginal_crlb(bs.F, "log_g", list(params.fisher.nuisance_5d), cond_max=params.fisher.cond_max)
    return pos, np.sqrt(np.asarray(crlb, dtype=np.float64))


def sigma_table(run: Q4Run, models: Sequence[str], pos: np.ndarray, sigma_crlb: np.ndarray) -> pd.DataFrame:
    """Per model and SNR bin: median predicted σ (conformal 68 % half-width), median σ_CRLB, their ratio,
    the fraction of stars below the bound, and the RMSE the model reaches on those stars."""
    ok = np.isfinite(sigma_crlb) & (sigma_crlb > 0)
    pos, sb = pos[ok], sigma_crlb[ok]
    bins, y = run.bins["test"][pos], run.y["test"][pos]
    frames = []
    for m in models:
        sp = predicted_sigma(calibration(run, m), len(run.y["test"]), run.bins["test"],
                             scale=run.sigma.get("test", {}).get(m))[pos]
        t = sigma_vs_bound(sp, sb, bins, run.labels)
        err = (run.pred["test"][m][pos] - y) ** 2
        t["rmse"] = [float(np.sqrt(err[bins == k].mean())) if (bins == k).any() else np.nan
                     for k in range(len(run.labels))]
        frames.append(t.assign(model=m))
    return pd.concat(frames, ignore_index=True)[["model", "bin", "n", "sigma_pred_median", "rmse",
                                                 "sigma_bound_median", "ratio_median", "below_bound"]]
