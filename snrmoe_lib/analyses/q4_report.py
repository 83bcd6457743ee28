"""Q4's report: conformal coverage per SNR bin, PIT, the learning curve, routing shares, verdicts, results.

Every model of the table gets split-conformal intervals calibrated on its validation predictions
(:mod:`snrmoe_lib.evaluation.intervals`; per SNR bin — Mondrian — and global) and its coverage of
68 % and 95 % intervals on the frozen test set, with star-bootstrap intervals. A model that predicts
its own σ (the neural family's Gaussian heads) is calibrated post hoc on that σ: the scores are
|y − ŷ| / σ, so each bin's quantile rescales the predicted σ (per-bin scaling) and the interval keeps
its per-star width; its raw Gaussian intervals ŷ ± z·σ are reported too (method 'gaussian'). The verdict per
family: **does an SNR mixture still pay?** The routing share of Q1 (R²(hard oracle) − R²(the best
non-routing model of the family, chosen on validation: its global model or its conditional control))
and the deployed gain (the same with the deployed mixture) against ``thresholds.gate2_delta_r2_min``,
decided on the paired interval by :func:`snrmoe_lib.evaluation.records.decide`.
"""
from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q3_models import DEPLOYED
from snrmoe_lib.analyses.q4 import Q4Run, Summary, _check_runs
from snrmoe_lib.evaluation.intervals import LEVELS, calibrate, coverage_table, pit_histogram, pit_values
from snrmoe_lib.evaluation.intervals import coverage as inside
from snrmoe_lib.evaluation.metrics import bootstrap_indices, percentile_interval, r2, r2_resampled
from snrmoe_lib.evaluation.records import metric, verdict

__all__ = ["calibration", "coverage", "coverage_summary", "pit", "curve_table", "shares", "verdicts", "results"]



def _sigma(r: Q4Run, m: str, role: str):
    return r.sigma.get(role, {}).get(m) if r.sigma else None


def calibration(r: Q4Run, m: str):
    """The conformal calibration of model ``m`` on its validation rows, per SNR bin; σ-scaled (normalised
    scores) when the model predicts a σ."""
    return calibrate(r.y["val"], r.pred["val"][m], r.bins["val"], r.labels, LEVELS, scale_val=_sigma(r, m, "val"))


def _gaussian(r: Q4Run, m: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Coverage of the raw Gaussian intervals ŷ ± z·σ (no calibration) per level and bin, bootstrap intervals."""
    y, mu, sd, b = r.y["test"], r.pred["test"][m], _sigma(r, m, "test"), r.bins["test"]
    rows = []
    for lv in LEVELS:
        z = NormalDist().inv_cdf(0.5 + lv / 2)  # the central Gaussian interval's half-width, in σ
        ok, w = inside(y, mu - z * sd, mu + z * sd), 2 * z * sd
        for k, lab in enumerate([*r.labels, "all"]):
            sel = (b == k) if k < len(r.labels) else np.ones(len(y), bool)
            c = ok[sel].astype(float)
            lo, hi = (percentile_interval(c[bootstrap_indices(len(c), n_boot, seed)].mean(axis=1))
                      if len(c) and n_boot else (np.nan, np.nan))
            rows.append({"level": lv, "bin": lab, "n": int(sel.sum()), "coverage": float(c.mean()) if len(c) else np.nan,
                         "lo": lo, "hi": hi, "width": float(w[sel].mean()) if len(c) else np.nan})
    return pd.DataFrame(rows)


def coverage(runs: Sequence[Q4Run], models: Sequence[str], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Coverage of conformal 68 % / 95 % intervals on the test stars, per model, SNR bin (and 'all') and
    method ('mondrian': calibrated per bin; 'global': one half-width; both σ-scaled where the model
    predicts a σ, column ``scaled``; 'gaussian': the raw ŷ ± z·σ of such a model), calibrated on the
    validation rows of the first seed's run, with star-bootstrap intervals."""
    _check_runs(runs)
    r = runs[0]
    frames = []
    for m in models:
        cal, scale = calibration(r, m), _sigma(r, m, "test")
        for method, mondrian in (("mondrian", True), ("global", False)):
            t = coverage_table(cal, r.y["test"], r.pred["test"][m], r.bins["test"], scale=scale, mondrian=mondrian,
                               n_boot=n_boot, seed=seed)
            frames.append(t.assign(model=m, method=method, scaled=scale is not None,
                                   fallback=[", ".join(cal.fallback[lv]) for lv in t["level"]]))
        if scale is not None:
            frames.append(_gaussian(r, m, n_boot, seed).assign(model=m, method="gaussian", scaled=True, fallback=""))
    cols = ["model", "method", "scaled", "level", "bin", "n", "coverage", "lo", "hi", "width", "fallback"]
    return pd.concat(frames, ignore_index=True)[cols]


def coverage_summary(cov: pd.DataFrame, method: str = "mondrian") -> pd.DataFrame:
    """Coverage per model (rows) and level × bin (columns), in percent, for one method."""
    t = cov[cov["method"] == method]
    out = t.pivot_table(index="model", columns=["level", "bin"], values="coverage", sort=False) * 100
    return out.round(1)


def pit(runs: Sequence[Q4Run], models: Sequence[str], n_bins: int = 10) -> dict:
    """PIT values (Mondrian, first seed) of the test residuals of ``models`` and their histogram data."""
    r = runs[0]
    out = {}
    for m in models:
        values = pit_values(calibration(r, m), r.y["test"], r.pred["test"][m], r.bins["test"],
                            scale=_sigma(r, m, "test"))
        out[m] = {"values": values, "histogram": pit_histogram(values, n_bins)}
    return out


def curve_table(runs: Sequence[Q4Run], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Test R² (seed mean, star-bootstrap interval) against training size per family and model
    (global, hard oracle, deployed); sizes whose fit failed keep a row with the reason."""
    _check_runs(runs)
    y = runs[0].y["test"]
    idx = bootstrap_indices(len(y), n_boot, seed)
    rows = []
    for fam, points in runs[0].curve.items():
        for k, pt in enumerate(points):
            per = [r.curve[fam][k] for r in runs]
            if any("error" in p for p in per):
                rows.append({"family": fam, "model": None, "n_train": pt["n_train"], "r2": np.nan, "lo": np.nan,
                             "hi": np.nan, "error": next(p["error"] for p in per if "error" in p)})
                continue
            for m in pt["pred"]:
                draws = np.mean([r2_resampled(y, p["pred"][m], idx) for p in per], axis=0)
                lo, hi = percentile_interval(draws)
                rows.append({"family": fam, "model": m, "n_train": pt["n_train"],
                             "r2": float(np.mean([r2(y, p["pred"][m]) for p in per])), "lo": lo, "hi": hi, "error": ""})
    return pd.DataFrame(rows, columns=["family", "model", "n_train", "r2", "lo", "hi", "error"])


def with_full_size(curve: pd.DataFrame, summary: Summary, runs: Sequence[Q4Run]) -> pd.DataFrame:
    """The learning curve with the full in-memory training set (a family's own cap, if lower) as its last
    point (from the table)."""
    n = runs[0].info["data"]["n_train_kept"]
    fams = runs[0].info.get("families", {})
    t = summary.table
    rows = [{"family": f, "model": m, "n_train": fams.get(f, {}).get("n_train", n), "r2": t.loc[f"{f}_{m}", "r2"], "lo": t.loc[f"{f}_{m}", "r2_lo"],
             "hi": t.loc[f"{f}_{m}", "r2_hi"], "error": ""}
            for f in dict.fromkeys(t["family"]) for m in ("global", "oracle_hard", DEPLOYED) if f"{f}_{m}" in t.index]
    full = pd.DataFrame(rows, columns=curve.columns)
    out = pd.concat([curve, full], ignore_index=True) if len(curve) else full
    return out.sort_values(["family", "model", "n_train"])


def shares(summary: Summary, runs: Sequence[Q4Run], families: Sequence[str]) -> dict:
    """Per family: the routing share (hard oracle) and the deployed gain, each against the family's best
    non-routing model (global or conditional control, chosen by validation R², seed mean), paired intervals."""
    out = {}
    for f in families:
        controls = [c for c in (f"{f}_global", f"{f}_conditional") if c in summary.table.index]
        val = {c: float(np.mean([r2(r.y["val"], r.pred["val"][c]) for r in runs])) for c in controls}
        best = max(controls, key=val.get)
        rec = {"control": best, "val_r2": val}
        for key, m in (("routing_share", f"{f}_oracle_hard"), ("deployed_gain", f"{f}_{DEPLOYED}")):
            v, iv = summary.difference(m, best)
            rec[key] = {"value": v, "interval": list(iv)}
        out[f] = rec
    return out


def verdicts(params, sh: dict) -> list[dict]:
    """Per family: does the SNR mixture pay (routing share and deployed gain ≥ thresholds.gate2_delta_r2_min)?"""
    th = params.thresholds.gate2_delta_r2_min
    out = []
    for f, rec in sh.items():
        for key, what in (("routing_share", "oracle routing"), ("deployed_gain", "the deployed mixture")):
            out.append(verdict(f"Q4-{f}", "Q4", f"{key}_{f}", rec[key]["value"], ">=", th, rec[key]["interval"],
                               note=f"{what} against {rec['control']} (chosen on validation)"))
    return out


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rec.items()}
            for rec in df.to_dict(orient="records")]


def results(params, runs: Sequence[Q4Run], summary: Summary, pb: pd.DataFrame, cov: pd.DataFrame,
            curve: pd.DataFrame, sh: dict, pits: dict, representation: str, rep_source: str,
            sigma: pd.DataFrame | None = None) -> dict:
    """The notebook's metrics (names of the issue), verdicts and ``extra`` payload (``sigma``: the
    predicted σ against the CRLB, :func:`snrmoe_lib.analyses.q4_bound.sigma_table`, when computed)."""
    t = summary.table
    m = {f"{name}_r2": metric(row.r2, [row.r2_lo, row.r2_hi], delta_vs_global=row.delta_r2)
         for name, row in t.iterrows()}
    for name, row in t.iterrows():
        if name.endswith(f"_{DEPLOYED}") or name.endswith("residual_mixture"):
            m[f"rho_{name}"] = metric(None if not np.isfinite(row.rho) else row.rho,
                                      None if not np.isfinite(row.rho_lo) else [row.rho_lo, row.rho_hi])
    if "neural_conditional" in t.index:  # the issue's name of the nets' single-model control
        row = t.loc["neural_conditional"]
        m["film_conditional_r2"] = metric(row.r2, [row.r2_lo, row.r2_hi], delta_vs_global=row.delta_r2,
                                          model="neural_conditional")
    for f, rec in sh.items():
        for key in ("routing_share", "deployed_gain"):
            m[f"{key}_{f}"] = metric(rec[key]["value"], rec[key]["interval"], control=rec["control"])
    mond = cov[cov["method"] == "mondrian"]
    for rec in mond.itertuples():
        tag = f"coverage{int(round(rec.level * 100))}_{rec.model}" + ("" if rec.bin == "all" else f"_bin{rec.bin}")
        m[tag] = metric(rec.coverage, None if not np.isfinite(rec.lo) else [rec.lo, rec.hi], n=int(rec.n))
    nl = runs[0].info["data"]["noise_level"]
    extra = {"learning_curve": _records(curve), "per_bin": _records(pb.assign(noise_level=nl)),
             "coverage": _records(cov), "table": _records(t.reset_index()),
             "pit": {k: v["histogram"] for k, v in pits.items()}, "shares": sh,
             "representation": representation, "representation_source": rep_source,
             "runs": [{"seed": r.seed, **r.info} for r in runs], "n_test": int(len(runs[0].y["test"])),
             "sigma_vs_crlb": None if sigma is None else _records(sigma)}
    return {"metrics": m, "verdicts": verdicts(params, sh), "extra": extra}
