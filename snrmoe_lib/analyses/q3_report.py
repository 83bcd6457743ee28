"""Q3's checks, verdicts, waterfall, learning curve and results payload.

Gate-3 is decided on ρ against the *best* matched oracle (hard, soft, regression: the deployed
mixture's denominator must be an upper bound for it); ρ against the hard oracle, as first posed, is
recorded beside it and flagged when above 1. Gate-4 compares the deployed mixture with the single
model chosen on the validation rows (whitening, the interacted Ridge, the gated SNR-dependent α).
Q3.2 asks whether the fallback (τ chosen on validation) improves the full test set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q1_waterfall import CONTROLS, seed_draws, waterfall
from snrmoe_lib.analyses.q3_models import GATE4_CANDIDATES
from snrmoe_lib.analyses.q3_summary import DEPLOYED, DeployRun, Summary, oracle_rhos
from snrmoe_lib.evaluation.metrics import percentile_interval
from snrmoe_lib.evaluation.records import metric, verdict

__all__ = ["Q3CheckError", "WATERFALL_Q3", "gate4_control", "waterfall_table", "curve_table", "curve_points",
           "CURVE_SERIES", "curve_style", "check_consistency", "mode_metrics", "other_mode", "verdicts", "results"]

#: Q3's waterfall: Q1's steps, then the soft and regression oracles and the deployed mixture.
WATERFALL_Q3 = ("global", *CONTROLS, "oracle", "oracle_soft", "oracle_regression", DEPLOYED)


class Q3CheckError(RuntimeError):
    """A Q3 result broke an invariant the verdicts rely on (or the gate's inputs leak log g)."""


def gate4_control(runs: Sequence[DeployRun], k: int = -1) -> tuple[str, dict]:
    """The Gate-4 control with the best validation R² (mean over seeds), at curve point ``k``."""
    val = {c: float(np.mean([r.curve[k]["val_r2"][c] for r in runs])) for c in GATE4_CANDIDATES}
    return max(val, key=val.get), val


def waterfall_table(runs: Sequence[DeployRun], n_boot: int, seed: int) -> pd.DataFrame:
    """The attribution waterfall on Q3's test stars (paired intervals)."""
    vals, draws = seed_draws(runs[0].y, {m: np.array([r.pred[m] for r in runs]) for m in WATERFALL_Q3}, n_boot, seed)
    return waterfall(vals, draws, WATERFALL_Q3)


def _point(vals: dict, draws: dict, a: str, b: str) -> dict:
    return {"value": vals[a] - vals[b], "interval": list(percentile_interval(draws[a] - draws[b]))}


def curve_table(runs: Sequence[DeployRun], n_boot: int, seed: int) -> list[dict]:
    """Gate-3 (ρ against the best oracle) and Gate-4 (deployed − control chosen on validation) at every
    training size, with paired intervals."""
    out = []
    for k in range(len(runs[0].curve)):
        names = ["global", "oracle", "oracle_soft", "oracle_regression", DEPLOYED, *GATE4_CANDIDATES]
        vals, draws = seed_draws(runs[0].y, {m: np.array([r.curve[k]["pred"][m] for r in runs]) for m in names},
                                 n_boot, seed)
        oracles = ("oracle", "oracle_soft", "oracle_regression")
        best_v, best_d = max(vals[o] for o in oracles), np.max([draws[o] for o in oracles], axis=0)
        gap_d = best_d - draws["global"]
        ok = best_v - vals["global"] > 0 and percentile_interval(gap_d)[0] > 0
        rho = (vals[DEPLOYED] - vals["global"]) / (best_v - vals["global"]) if ok else float("nan")
        rho_iv = list(percentile_interval((draws[DEPLOYED] - draws["global"]) / gap_d)) if ok else [np.nan, np.nan]
        control, val = gate4_control(runs, k)
        out.append({"n_train": runs[0].curve[k]["n_train"], "global_r2": vals["global"], "deployed_r2": vals[DEPLOYED],
                    "oracle_best_r2": best_v, "rho_vs_best_oracle": {"value": rho, "interval": rho_iv},
                    "gate4_control": control, "gate4_val_r2": val,
                    "deployed_minus_control_r2": _point(vals, draws, DEPLOYED, control),
                    "tau": [r.curve[k]["tau"] for r in runs]})
    return out


#: The learning curve's series: :func:`curve_table`'s key → the plotted name and its y-axis label.
CURVE_SERIES = {"rho_vs_best_oracle": ("Gate-3: ρ vs best oracle", "ρ (fraction of the oracle gain)"),
                "deployed_minus_control_r2": ("Gate-4: deployed − control (chosen on val)", "ΔR² of log g")}


def curve_points(curve: list[dict]) -> pd.DataFrame:
    """The learning curve as plot points: Gate-3's ρ and Gate-4's difference per training size."""
    rows = []
    for c in curve:
        for key, (name, _) in CURVE_SERIES.items():
            d = c[key]
            rows.append({"n_train": c["n_train"], "series": name, "value": d["value"], "lo": d["interval"][0],
                         "hi": d["interval"][1]})
    return pd.DataFrame(rows)


def curve_style(thresholds) -> dict:
    """The learning-curve plot's per-series threshold and y label (``learning_curve(..., panels=True, **style)``):
    Gate-3's ρ minimum and Gate-4's margin."""
    limit = {"rho_vs_best_oracle": thresholds.gate3_rho_min, "deployed_minus_control_r2": thresholds.gate4_margin}
    return {"threshold": {name: limit[k] for k, (name, _) in CURVE_SERIES.items()},
            "ylabel": {name: label for name, label in CURVE_SERIES.values()}}


def check_consistency(runs: Sequence[DeployRun], summary: Summary, diagnostics: dict, test_rows,
                      n_seeds: int) -> None:
    """The invariants behind the verdicts; :class:`Q3CheckError` names the one that fails."""
    test_rows = np.sort(np.asarray(test_rows))
    if len(runs) != n_seeds:
        raise Q3CheckError(f"{len(runs)} runs for {n_seeds} noise seeds")
    if not all(np.array_equal(r.rows, test_rows) for r in runs):
        raise Q3CheckError("a seed predicted other test stars than the split's")
    if not np.isclose(summary.table.loc["oracle", "delta_r2"], summary.oracle_gap):
        raise Q3CheckError("the oracle's ΔR² in the table is not the oracle gap")
    fb, cm = diagnostics["fallback_rate"], diagnostics["confusion"]
    if not 0.0 <= fb <= 1.0:
        raise Q3CheckError(f"fallback rate {fb} is not a fraction")
    if cm.to_numpy().sum() != len(runs) * len(test_rows):
        raise Q3CheckError(f"the confusion matrix counts {cm.to_numpy().sum()} spectra, "
                           f"not {len(runs)} seeds × {len(test_rows)} test spectra")


def _oracle_best(summary: Summary) -> tuple[float, tuple[float, float]]:
    t, D = summary.table, summary.draws
    oracles = ("oracle", "oracle_soft", "oracle_regression")
    return float(max(t.loc[o, "r2"] for o in oracles)), percentile_interval(np.max([D[o] for o in oracles], axis=0))


def verdicts(summary: Summary, leak: dict, thresholds, runs: Sequence[DeployRun], kind: str) -> list[dict]:
    """Gate-3 (ρ against the best matched oracle; as first posed beside it), Gate-4 (deployed − the control
    chosen on validation), Q3.2 (does the fallback help the full test set?) and the leak check."""
    t = summary.table
    rhos = oracle_rhos(summary, [DEPLOYED]).loc[DEPLOYED]
    control, val = gate4_control(runs)
    d4, d4_iv = summary.difference(DEPLOYED, control)
    fb, fb_iv = summary.difference(DEPLOYED, f"{kind}_soft")
    first = t.loc[DEPLOYED, "rho"]
    return [
        verdict("Gate-3", "Q3", "rho_vs_best_oracle", rhos["rho_best"], ">=", thresholds.gate3_rho_min,
                (rhos["rho_best_lo"], rhos["rho_best_hi"]),
                note=f"against the best of the hard, soft and regression oracles; ρ against its class oracle "
                     f"({rhos['class_oracle']}) = {rhos['rho_class']:.3f}"),
        verdict("Gate-3 as first posed", "Q3", "rho_deployed", first, ">=", thresholds.gate3_rho_min,
                (t.loc[DEPLOYED, "rho_lo"], t.loc[DEPLOYED, "rho_hi"]),
                note=("FLAGGED: ρ > 1, the hard oracle is not an upper bound for a soft mixture"
                      if np.isfinite(first) and first > 1 else "against the hard oracle")),
        verdict("Gate-4", "Q3", f"deployed_minus_{control}_r2", d4, "<=", thresholds.gate4_margin, d4_iv,
                note=f"PASS = a single model is within the margin: the simpler route wins; control chosen on "
                     f"validation R² {({k: round(v, 4) for k, v in val.items()})}"),
        verdict("Q3.2", "Q3.2", "fallback_gain_r2", fb, ">", 0.0, fb_iv,
                note=f"deployed (τ chosen on validation: {[r.info['tau'] for r in runs]}) − the same gate without "
                     "fallback, full test set"),
        verdict("leak-free", "Q3", "gate_inputs_logg_r2", leak["r2_linear"], "<", thresholds.gate1_logg_r2_max,
                leak["interval_linear"]),
    ]


def mode_metrics(summary: Summary, diagnostics: dict, kind: str) -> dict:
    """The metrics of one error mode's runs (R² of every model, the oracles, ρ, gap, gate accuracy, fallback)."""
    t = summary.table
    d_reg, d_reg_iv = summary.difference("regression_gate", DEPLOYED)
    rhos = oracle_rhos(summary)
    metrics = {f"{m}_r2": metric(r.r2, (r.r2_lo, r.r2_hi), seed_std=r.r2_seed_std) for m, r in t.iterrows()}
    metrics["oracle_hard_r2"] = metrics["oracle_r2"]
    metrics["oracle_best_r2"] = metric(*_oracle_best(summary))
    dep = rhos.loc[DEPLOYED]
    metrics |= {"rho_deployed": metric(t.loc[DEPLOYED, "rho"], (t.loc[DEPLOYED, "rho_lo"], t.loc[DEPLOYED, "rho_hi"])),
                "rho_vs_best_oracle": metric(dep["rho_best"], (dep["rho_best_lo"], dep["rho_best_hi"])),
                "rho_vs_class_oracle": metric(dep["rho_class"], (dep["rho_class_lo"], dep["rho_class_hi"]),
                                              oracle=dep["class_oracle"]),
                "oracle_gap": metric(summary.oracle_gap, summary.oracle_gap_interval),
                "fallback_rate": metric(diagnostics["fallback_rate"]),
                "gate_accuracy": metric(*diagnostics["accuracy"][kind]),
                "regression_minus_deployed_r2": metric(d_reg, d_reg_iv)}
    return metrics


def _mode_payload(runs: Sequence[DeployRun], summary: Summary, diagnostics: dict, leak: dict,
                  falls: pd.DataFrame | None) -> dict:
    return {"table": summary.table.reset_index().to_dict(orient="records"),
            "rho_by_oracle": oracle_rhos(summary).reset_index().to_dict(orient="records"),
            "waterfall": None if falls is None else falls.to_dict(orient="records"),
            "confusion": diagnostics["confusion"].to_dict(orient="split"), "leak_check": leak,
            "runs": [r.info for r in runs]}


def other_mode(params, mode: str, runs: Sequence[DeployRun], summary: Summary, diagnostics: dict, leak: dict,
               falls: pd.DataFrame | None = None) -> tuple[dict, list[dict], dict]:
    """Metrics (suffix ``_<mode>``), verdicts (gate names "… (<mode> errors)", robustness checks beside the
    primary mode's) and payload of the second error mode. Its leak check is recorded, never raised: the
    estimated σ̂ is made from the noisy flux, so whether it leaks is a finding, not an invariant."""
    sfx = f"_{mode}"
    metrics = {k + sfx: v for k, v in mode_metrics(summary, diagnostics, params.gate.kind).items()}
    metrics[f"leak_check_r2{sfx}"] = metric(leak["r2_linear"], leak["interval_linear"])
    metrics[f"tau_chosen{sfx}"] = metric(float(np.median([r.info["tau"] for r in runs])),
                                         per_seed=[r.info["tau"] for r in runs])
    # gate and question both name the mode: the Hub lists them in its gates table, never as a node's decision
    vs = [dict(v, gate=f"{v['gate']} ({mode} errors)", question=f"{v['question']} ({mode} errors)",
               metric=v["metric"] + sfx)
          for v in verdicts(summary, leak, params.thresholds, runs, params.gate.kind)]
    return metrics, vs, _mode_payload(runs, summary, diagnostics, leak, falls)


def results(params, runs: Sequence[DeployRun], summary: Summary, diagnostics: dict, leak: dict, per_bin_table,
            representation: str, representation_source: str, test_rows, falls: pd.DataFrame | None = None,
            curve: list | None = None, others: dict | None = None) -> dict:
    """Checked verdicts, metrics and payload of the notebook: ``run.finish(**results(...))``.

    ``others``: error mode → :func:`other_mode`'s (metrics, verdicts, payload) for the modes reported
    beside the primary one (``noise.error_mode: both``).

    Raises
    ------
    Q3CheckError
        When an invariant fails (:func:`check_consistency`) or the leak verdict does not pass.
    """
    check_consistency(runs, summary, diagnostics, test_rows, len(params.seeds))
    vs = verdicts(summary, leak, params.thresholds, runs, params.gate.kind)
    leak_verdict = next(v for v in vs if v["gate"] == "leak-free")
    if leak_verdict["verdict"] != "PASS":
        what = ("leak log g" if leak_verdict["verdict"] == "FAIL"
                else "cannot be shown leak-free (the interval reaches the threshold)")
        raise Q3CheckError(f"the gate inputs {what}: R² = {leak_verdict['value']:.4f} {leak_verdict['interval']} "
                           f"against {leak_verdict['op']} {leak_verdict['threshold']:g} ({leak_verdict['verdict']})")
    metrics = mode_metrics(summary, diagnostics, params.gate.kind)
    metrics |= {"leak_check_r2": metric(leak["r2_linear"], leak["interval_linear"]),
                "tau_chosen": metric(float(np.median([r.info["tau"] for r in runs])),
                                     per_seed=[r.info["tau"] for r in runs])}
    extra = {"representation": representation, "representation_source": representation_source,
             **_mode_payload(runs, summary, diagnostics, leak, falls),
             "per_bin": per_bin_table.to_dict(orient="records"), "learning_curve": curve or [],
             "error_mode": runs[0].info.get("error_mode", "clean"), "error_modes": {}}
    for mode, (m, v, payload) in (others or {}).items():
        metrics |= m
        vs += v
        extra["error_modes"][mode] = payload
    return {"metrics": metrics, "verdicts": vs, "extra": extra}
