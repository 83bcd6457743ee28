"""The attribution waterfall (Q1 and Q3): how much of a mixture's gain is routing, how much is blending.

Steps, on the same test stars with paired bootstrap intervals: the global Ridge → one Ridge whose α
varies with the SNR bin (``snr_alpha``) → a fixed-weight blend of the SNR experts and the global
model (``blend_fixed``, no per-spectrum routing) → the same blend of experts trained on *random*
partitions of the same sizes (``bagging_random``) → hard routing by the true bin (``oracle_hard``)
→ (Q3) the soft and regression oracles. Gate-2 is decided on the *routing share*: the hard oracle
minus the best non-routing control, that control chosen on the validation rows.

The fixed blends learn their weights on held-out training rows (:func:`carve_holdout`) that no
expert saw; the same rows train Q3's regression gate.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval, r2, r2_resampled, seed_resample_mean
from snrmoe_lib.models.blends import blend, blend_weights

__all__ = ["CONTROLS", "WATERFALL_Q1", "carve_holdout", "routed", "control_predictions", "seed_draws",
           "waterfall", "routing_share", "bin_contributions", "low_bins"]

#: The non-routing controls, in waterfall order.
CONTROLS = ("snr_alpha", "blend_fixed", "bagging_random")
#: Q1's waterfall steps (Q3 adds its soft and regression oracles after the hard one).
WATERFALL_Q1 = ("global", *CONTROLS, "oracle_hard")


def carve_holdout(split, fraction: float, seed: int):
    """Training rows set aside for the blends and the regression gate (a seeded draw).

    Returns
    -------
    fit_split : Split
        The split with those rows removed from ``train`` (what the experts fit).
    holdout : ndarray
        The held-out rows (sorted).
    record : dict
        What the results file records with the split: sizes, fraction, seed, a digest of the rows.
    """
    train = np.asarray(split.train)
    n = int(round(float(fraction) * len(train)))
    if not 2 <= n < len(train):
        raise ValueError(f"holdout_fraction {fraction} of {len(train)} training rows leaves {n} held-out rows")
    rows = np.sort(_rng("gate.holdout", int(seed)).choice(train, n, replace=False))
    fit = dataclasses.replace(split, train=np.setdiff1d(train, rows))
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
    return fit, rows, {"fraction": float(fraction), "seed": int(seed), "n_holdout": n, "n_fit": len(fit.train),
                       "rows_sha256": digest}


def routed(pred: np.ndarray, fam, info: pd.DataFrame) -> np.ndarray:
    """Each row's prediction by the expert of its true bin (``fam.bin_key`` in ``info``)."""
    e = fam.plan.route(info[fam.bin_key].to_numpy())
    return pred[:, fam.columns][np.arange(len(e)), e]


def control_predictions(point, infos: dict, family: str = "snr") -> tuple[dict, dict]:
    """The hard oracle, the global model and the non-routing controls of one fit, for test and validation.

    Parameters
    ----------
    point : CurvePoint
        Models and their predictions per role ('test', 'val', 'holdout' needed).
    infos : dict role → DataFrame
        The rows' true bins and targets (``OracleRun.test_info`` …).

    Returns
    -------
    preds : dict role → dict name → ndarray
    weights : dict blend → list of float (the fixed blends' weights, last = global model)
    """
    fams, gi = point.families, point.models.index("global")
    if "holdout" not in point.pred:
        raise ValueError("the fixed blends need held-out rows: fit with holdout=...")
    y_h = infos["holdout"]["y"].to_numpy()
    blends = {"blend_fixed": fams[family].columns + [gi]}
    if "rand" in fams:  # the learning curve's smaller sizes skip the random partitions
        blends["bagging_random"] = fams["rand"].columns + [gi]
    weights = {b: blend_weights(point.pred["holdout"][:, c], y_h) for b, c in blends.items()}
    out = {}
    for role in ("test", "val"):
        P, info = point.pred[role], infos[role]
        out[role] = {"global": P[:, gi], "oracle_hard": routed(P, fams[family], info),
                     "snr_alpha": routed(P, fams[f"{family}_alpha"], info)}
        out[role] |= {b: blend(P[:, c], weights[b]) for b, c in blends.items()}
    return out, {b: w.round(6).tolist() for b, w in weights.items()}


def seed_draws(y, preds: dict, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Seed-mean R² of every model (``preds``: name → (n_seeds, n)) and its bootstrap draws.

    The same resampled test stars for every model and seed, and the same resampled seeds
    (:func:`~snrmoe_lib.evaluation.metrics.seed_resample_mean`: stars × training realisations), so
    differences of draws are paired and the intervals carry the seed-to-seed variation of training.
    """
    y = np.asarray(y, dtype=np.float64)
    idx = bootstrap_indices(len(y), n_boot, seed)
    vals = {m: float(np.mean([r2(y, p) for p in P])) for m, P in preds.items()}
    draws = {m: seed_resample_mean(np.array([r2_resampled(y, p, idx) for p in P]), seed) for m, P in preds.items()}
    return vals, draws


def _iv(d: np.ndarray, level: float) -> tuple[float, float]:
    return tuple(float(x) for x in percentile_interval(d, level))


def waterfall(vals: dict, draws: dict, steps: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """One row per step: R², the step's ΔR² over the previous step and the ΔR² over the first, with
    paired intervals."""
    rows = []
    for i, m in enumerate(steps):
        prev, first = steps[max(i - 1, 0)], steps[0]
        lo, hi = _iv(draws[m], level)
        s_lo, s_hi = _iv(draws[m] - draws[prev], level) if i else (np.nan, np.nan)
        t_lo, t_hi = _iv(draws[m] - draws[first], level) if i else (np.nan, np.nan)
        rows.append({"step": i, "model": m, "r2": vals[m], "r2_lo": lo, "r2_hi": hi,
                     "step_delta": vals[m] - vals[prev] if i else np.nan, "step_lo": s_lo, "step_hi": s_hi,
                     "delta_vs_global": vals[m] - vals[first] if i else np.nan, "delta_lo": t_lo, "delta_hi": t_hi})
    return pd.DataFrame(rows)


def routing_share(vals: dict, draws: dict, val_r2: dict, oracle: str = "oracle_hard",
                  controls: Sequence[str] = CONTROLS, level: float = 0.95) -> dict:
    """R²(oracle) − R²(best non-routing control), the control chosen by its validation R².

    ``val_r2``: name → seed-mean R² on the validation rows (never the test rows).
    """
    controls = [c for c in controls if c in val_r2]
    best = max(controls, key=lambda c: val_r2[c])
    return {"value": vals[oracle] - vals[best], "interval": list(_iv(draws[oracle] - draws[best], level)),
            "control": best, "val_r2": {c: float(val_r2[c]) for c in controls}}


def low_bins(edges: Sequence[float], labels: Sequence[str]) -> list[str]:
    """The bins below the middle edge (with the default edges 2, 4, 7: X and L, SNR ≤ 4)."""
    return list(labels[: len(edges) // 2 + 1])


def bin_contributions(y, model, base, bins, labels: Sequence[str], low: Sequence[str], n_boot: int, seed: int,
                      level: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """Where ΔR² comes from: each bin's share of the whole-set gain, with paired intervals.

    ``contribution_b = (Σ_{i∈b} e²_base − Σ_{i∈b} e²_model) / Σ_i (y_i − ȳ)²`` sums over bins to the
    whole-set ΔR² exactly; it equals the bin fraction times the within-bin ΔMSE over Var(y). The
    within-bin ΔR² weighted by the bin fraction is shown beside it. ``model``, ``base``: (n_seeds, n).
    Returns the table and the low bins' share of the gain (with interval; NaN where the whole-set
    gain is not positive, since a share of no gain means nothing).
    """
    y, bins = np.asarray(y, dtype=np.float64), np.asarray(bins)
    M, B = np.atleast_2d(model), np.atleast_2d(base)
    idx = np.vstack([np.arange(len(y))[None], bootstrap_indices(len(y), n_boot, seed)])  # row 0: the sample
    yt, bt = y[idx], bins[idx]
    ss = ((yt - yt.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    gain = np.zeros((len(labels), len(idx)))
    for m, b in zip(M, B):
        d = ((y - b) ** 2 - (y - m) ** 2)[idx]
        for k in range(len(labels)):
            gain[k] += np.where(bt == k, d, 0.0).sum(axis=1) / ss
    gain /= len(M)
    rows, total = [], gain.sum(axis=0)
    for k, lab in enumerate(labels):
        sel = bins == k
        frac = float(sel.mean())
        within = (float(np.mean([r2(y[sel], m[sel]) - r2(y[sel], b[sel]) for m, b in zip(M, B)]))
                  if sel.sum() >= 2 else np.nan)
        rows.append({"bin": lab, "fraction": frac, "contribution": gain[k, 0],
                     "contribution_lo": _iv(gain[k, 1:], level)[0], "contribution_hi": _iv(gain[k, 1:], level)[1],
                     "within_bin_delta_r2": within, "fraction_x_within": frac * within})
    lo_mask = np.isin(np.asarray(labels), list(low))
    with np.errstate(divide="ignore", invalid="ignore"):  # no gain to share out: undefined (NaN)
        share = np.where(total > 0, gain[lo_mask].sum(axis=0) / total, np.nan)
    return pd.DataFrame(rows), {"value": float(share[0]), "interval": list(_iv(share[1:], level)), "bins": list(low),
                                "total": float(total[0])}
