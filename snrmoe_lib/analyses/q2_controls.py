"""Q2 controls, on the raw σ (S0).

* a fixed pixel permutation applied to train and test alike: a linear model does not need pixel
  order, so the leakage must survive it;
* a per-spectrum shuffle, which destroys the alignment with spectral features;
* the mask alone, and the aggregate statistics alone (S3b);
* a label shuffle per seed, which must give R² ≈ 0 (a guard that the audit cannot leak by itself):
  one fixed row → fake-label mapping across the blocks, on the raw σ here and on the chosen
  representation (:func:`chosen_guard`, Ridge and the non-linear probe).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.q2_fit import SPLITS, fit_targets, probe_targets, representation_features
from snrmoe_lib.analyses.q2_sample import AuditSample
from snrmoe_lib.config import Params
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2

__all__ = ["shuffled_labels", "chosen_guard", "audit_controls"]


def shuffled_labels(sample: AuditSample, seed: int) -> tuple:
    """Fake log g for the train, val and test blocks from ONE fixed row → fake-label mapping.

    The audit's rows of all three blocks are pooled in row order and their labels permuted once
    (keyed by ``seed``): every row keeps the same fake label whichever block it sits in, so the
    guard cannot pass merely because each block was shuffled on its own.
    """
    rows = np.concatenate([sample.rows[s] for s in SPLITS])
    y = np.concatenate([sample.targets[s]["log_g"] for s in SPLITS])
    order = np.argsort(rows, kind="stable")          # the mapping depends on row numbers, not on blocks
    fake = np.empty_like(y)
    fake[order] = y[order][_rng("audit.label_shuffle", int(seed), 0).permutation(len(y))]
    cuts = np.cumsum([len(sample.rows[s]) for s in SPLITS])[:-1]
    return tuple(np.split(fake, cuts))


def chosen_guard(sample: AuditSample, params: Params, features: list) -> pd.DataFrame:
    """The label-shuffle guard on the chosen representation's ``features`` (train, val, test): the
    Ridge and the non-linear probe against the fake labels of every seed; |R²| must stay ≈ 0."""
    shuffles = {f"shuffle_{s}": shuffled_labels(sample, s) for s in params.seeds}
    ridge, model = fit_targets(*features, sample, shuffles, params)
    probe = probe_targets(*features, sample, shuffles, params, model)
    return pd.DataFrame([{"probe": name, "seed": s, "r2_logg": sc[f"shuffle_{s}"]["r2"],
                          "r2_logg_lo": sc[f"shuffle_{s}"]["lo"], "r2_logg_hi": sc[f"shuffle_{s}"]["hi"]}
                         for name, sc in (("Ridge", ridge), ("non-linear probe", probe)) for s in params.seeds])


def _per_spectrum_shuffle(sigma: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    # one permutation per spectrum, keyed by (seed, row): alignment with the wavelength is destroyed
    out = np.empty_like(sigma)
    for i, r in enumerate(rows):
        out[i] = sigma[i, _rng("audit.pixel_shuffle", int(seed), int(r)).permutation(sigma.shape[1])]
    return out


def _control_row(control: str, what: str, expect: str, n_feat: int, sc: dict, r2_snr: bool = True) -> dict:
    g, s = sc["log_g"], sc.get("snr")
    return {"control": control, "description": what, "expect": expect, "n_features": n_feat,
            "r2_logg": g["r2"], "r2_logg_lo": g["lo"], "r2_logg_hi": g["hi"],
            "r2_snr": s["r2"] if (s and r2_snr) else np.nan}


def _mask_control(sample: AuditSample, params: Params) -> dict:
    what, expect = "the pixel mask alone (varying pixels)", "low"
    if sample.train.mask is None:
        nan = {"r2": np.nan, "lo": np.nan, "hi": np.nan}
        return _control_row("mask only", "the dataset has no mask", expect, 0, {"log_g": nan, "snr": nan})
    M = [getattr(sample, s).mask.astype(np.float64) for s in SPLITS]
    keep = np.ptp(M[0], axis=0) > 0
    if not keep.any():
        # the mask is the same for every spectrum: the only honest prediction is the training mean
        sc = {}
        for t in ("log_g", "snr"):
            yte = sample.targets["test"][t]
            pred = np.full_like(yte, sample.targets["train"][t].mean())
            lo, hi = bootstrap_interval(yte, pred, n_boot=params.runner.n_bootstrap, seed=params.seeds[0])
            sc[t] = {"r2": r2(yte, pred), "lo": lo, "hi": hi}
        return _control_row("mask only", "the mask is identical for every spectrum: prediction = training mean",
                            expect, 0, sc)
    M = [m[:, keep] for m in M]
    return _control_row("mask only", what, expect, int(keep.sum()), fit_targets(*M, sample, None, params)[0])


def _aggregate_control(sample: AuditSample, params: Params, table: pd.DataFrame) -> dict:
    if "S3b" in set(table["representation"]):
        r = table.set_index("representation").loc["S3b"]
        sc = {"log_g": {"r2": r["r2_logg"], "lo": r["r2_logg_lo"], "hi": r["r2_logg_hi"]}, "snr": {"r2": r["r2_snr"]}}
    else:
        sc = fit_targets(*representation_features("S3b", sample, params), sample, None, params)[0]
    return _control_row("aggregate statistics only (S3b)", "the ten summary statistics of σ", "low log g, high SNR",
                        10, sc)


def audit_controls(sample: AuditSample, params: Params, table: pd.DataFrame, s0_scores: dict) -> pd.DataFrame:
    """The controls table, one row per control.

    Parameters
    ----------
    sample : AuditSample
    params : Params
    table : DataFrame
        The representations table of :func:`~snrmoe_lib.analyses.q2_audit.run_audit` (its S3b row
        is reused when present).
    s0_scores : dict
        Scores of the raw-σ fit, including the ``shuffle_<seed>`` targets of the label-shuffle guard.
    """
    p = sample.train.shape[1]
    seed0 = params.seeds[0]
    rows = [_control_row("raw σ (S0)", "reference: Ridge on the raw σ", "high (leaks)", p, s0_scores)]

    perm = _rng("audit.pixel_order", int(seed0)).permutation(p)
    F = [getattr(sample, s).sigma[:, perm] for s in SPLITS]
    rows.append(_control_row("fixed pixel permutation", "one permutation of the pixels, the same for train and test",
                             "≈ S0 (a linear model needs no pixel order)", p,
                             fit_targets(*F, sample, None, params)[0]))

    F = [_per_spectrum_shuffle(getattr(sample, s).sigma, sample.rows[s], seed0) for s in SPLITS]
    rows.append(_control_row("per-spectrum shuffle", "each spectrum's σ in its own random pixel order",
                             "low (alignment destroyed)", p, fit_targets(*F, sample, None, params)[0]))
    del F

    rows.append(_mask_control(sample, params))
    rows.append(_aggregate_control(sample, params, table))
    for s in params.seeds:
        rows.append(_control_row(f"label shuffle (seed {s})", "raw σ against randomly permuted log g", "≈ 0 (guard)",
                                 p, {"log_g": s0_scores[f"shuffle_{s}"]}, r2_snr=False))
    return pd.DataFrame(rows)
