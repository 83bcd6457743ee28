"""The Q3 table over noise seeds: R², ΔR² and ρ with paired bootstrap intervals, per-bin scores, gate diagnostics.

Every function takes the :class:`DeployRun` of each noise seed (they share the test spectra) and
resamples test *stars* once for all seeds and models, so differences stay paired.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.evaluation.metrics import (bootstrap_indices, per_bin_seed_table, percentile_interval, r2,
                                           r2_resampled, rho, seed_resample_mean)

__all__ = ["DEPLOYED", "model_names", "DeployRun", "seed_bootstrap", "Summary", "summarize", "per_bin",
           "confusion", "gate_accuracy", "fallback_rate", "format_table", "ORACLE_OF", "oracle_rhos", "tau_table"]

#: name of the deployed model in the tables (soft mixture with fallback, gate kind from the parameters)
DEPLOYED = "deployed"


def model_names(kind: str) -> dict[str, str]:
    """Row names of the Q3 table → a readable description."""
    return {
        "global": "global Ridge (baseline)",
        "oracle": "oracle: expert of the true SNR bin",
        DEPLOYED: f"deployed: soft {kind} gate + fallback",
        "logistic_soft_fallback": "logistic gate, soft, fallback",
        "logistic_soft": "logistic gate, soft, no fallback",
        "logistic_hard": "logistic gate, hard",
        "mlp_soft_fallback": "MLP gate, soft, fallback",
        "mlp_soft": "MLP gate, soft, no fallback",
        "mlp_hard": "MLP gate, hard",
        "regression_gate": "regression gate (trained on log g MSE)",
        "oracle_soft": f"soft oracle: {kind} gate on the true log SNR + fallback",
        "oracle_regression": "regression oracle: regression gate on the true log SNR",
        "snr_alpha": "control: one Ridge, α of the true SNR bin",
        "blend_fixed": "control: fixed blend of SNR experts + global",
        "bagging_random": "control: fixed blend of random-partition experts + global",
        "whitening": "control: Ridge on flux / σ",
        "interacted": "control: Ridge on flux, q, flux × noise level",
        "snr_alpha_gated": "control: one Ridge, α of the gate's bin",
    }


@dataclass
class DeployRun:
    """One noise seed: every model's test predictions and the gate's inputs and outputs.

    Attributes
    ----------
    seed : int
    y : ndarray (n_test,)
        True log g of the test spectra (rows sorted).
    rows : ndarray (n_test,)
    snr_bin : ndarray (n_test,)
        True SNR bin (original bins).
    expert : ndarray (n_test,)
        The expert serving the true bin (after merges).
    pred : dict name → ndarray (n_test,)
    proba : dict gate → ndarray (n_test, K)
    fell_back : dict name → bool ndarray
    features : dict split → ndarray (n, k)
        Quality features (the gate's input) of train, val and test.
    targets : dict split → ndarray
        log g of train, val and test (for the leak check).
    plan : BinPlan
    info : dict
        α of the controls, representation, consistency checks.
    """

    seed: int
    y: np.ndarray
    rows: np.ndarray
    snr_bin: np.ndarray
    expert: np.ndarray
    pred: dict
    proba: dict
    fell_back: dict
    features: dict
    targets: dict
    plan: Any
    info: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)  # per training size: n_train, test pred, val R² of Gate-4 candidates



def seed_bootstrap(y, preds: Sequence[np.ndarray], n_boot: int = 200, seed: int = 0, level: float = 0.95,
                   stat=r2) -> tuple[float, tuple[float, float], np.ndarray]:
    """Seed-averaged statistic with a bootstrap interval over test spectra.

    The same resampled spectra are used for every seed (the noise seeds share the test set), and the
    seeds are resampled too (:func:`~snrmoe_lib.evaluation.metrics.seed_resample_mean`), so the
    interval carries the finite test set and the seed-to-seed variation of training.

    Returns
    -------
    value : float
        mean over seeds of ``stat(y, pred_s)``.
    interval : (lo, hi)
    draws : ndarray (n_boot,)
        The bootstrap draws (for paired comparisons use the same ``seed``).
    """
    y = np.asarray(y, dtype=np.float64)
    preds = [np.asarray(q, dtype=np.float64) for q in preds]
    value = float(np.mean([stat(y, q) for q in preds]))
    rng = _rng("bootstrap.stars", seed)
    n = len(y)
    per_seed = np.empty((len(preds), n_boot))
    for b in range(n_boot):
        i = rng.integers(0, n, n)
        per_seed[:, b] = [stat(y[i], q[i]) for q in preds]
    draws = seed_resample_mean(per_seed, seed)
    return value, percentile_interval(draws, level), draws


def _check_runs(runs: Sequence[DeployRun]) -> None:
    if not runs:
        raise ValueError("no runs to summarise")
    for r in runs[1:]:
        if not np.array_equal(r.rows, runs[0].rows):
            raise ValueError("runs of different seeds must share the test spectra")


@dataclass
class Summary:
    """The Q3 table over seeds plus the bootstrap draws behind its intervals.

    ``table`` has one row per model: R² (seed mean), its interval, the seed spread, ΔR² against the
    global model (paired interval), ρ and its interval, and the fallback rate where one applies.
    """

    table: pd.DataFrame
    draws: dict
    oracle_gap: float
    oracle_gap_interval: tuple
    level: float = 0.95

    def difference(self, a: str, b: str) -> tuple[float, tuple[float, float]]:
        """R²(a) − R²(b) with a paired interval from the shared bootstrap draws."""
        d = self.draws[a] - self.draws[b]
        return float(self.table.loc[a, "r2"] - self.table.loc[b, "r2"]), percentile_interval(d, self.level)


def summarize(runs: Sequence[DeployRun], n_boot: int = 200, seed: int = 0, level: float = 0.95) -> Summary:
    """The Q3 table: one row per model with R² (seed mean, bootstrap interval, seed std), ΔR² and ρ.

    Intervals resample test *stars* and seeds (the same resampled indices and seeds for every model,
    so differences stay paired; :func:`~snrmoe_lib.evaluation.metrics.seed_resample_mean`). ρ = (R² − R²_global) / (R²_oracle − R²_global) for every model, with an
    interval from the same draws; NaN (undefined) when the oracle gap's interval reaches zero
    (``min_gap`` = the gap's distance to its lower bound, :func:`snrmoe_lib.metrics.rho`).
    """
    _check_runs(runs)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 for intervals, got {n_boot}")
    y = runs[0].y
    canon = list(model_names("logistic"))
    names = sorted(runs[0].pred, key=lambda m: canon.index(m) if m in canon else len(canon))
    idx = bootstrap_indices(len(y), n_boot, seed)
    iv = partial(percentile_interval, level=level)
    per_seed = {nm: np.array([r2(y, r.pred[nm]) for r in runs]) for nm in names}
    vals = {nm: float(per_seed[nm].mean()) for nm in names}
    draws = {nm: seed_resample_mean(np.array([r2_resampled(y, r.pred[nm], idx) for r in runs]), seed) for nm in names}
    gap_draws = draws["oracle"] - draws["global"]
    gap = vals["oracle"] - vals["global"]
    gap_iv = iv(gap_draws)
    min_gap = gap - gap_iv[0]
    rows = []
    for nm in names:
        d = draws[nm] - draws["global"]
        rho_v = rho(vals[nm], vals["global"], vals["oracle"], min_gap)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho_iv = iv(d / gap_draws) if np.isfinite(rho_v) else (np.nan, np.nan)
        fb = [r.fell_back[nm].mean() for r in runs] if nm in runs[0].fell_back else [np.nan]
        rows.append({"model": nm, "r2": vals[nm], "r2_lo": iv(draws[nm])[0], "r2_hi": iv(draws[nm])[1],
                     "r2_seed_std": float(np.std(per_seed[nm], ddof=1)) if len(runs) > 1 else 0.0,
                     "delta_r2": vals[nm] - vals["global"], "delta_lo": iv(d)[0], "delta_hi": iv(d)[1],
                     "rho": rho_v, "rho_lo": rho_iv[0], "rho_hi": rho_iv[1], "fallback_rate": float(np.mean(fb))})
    return Summary(pd.DataFrame(rows).set_index("model"), draws, gap, gap_iv, level)


def per_bin(runs: Sequence[DeployRun], models: Sequence[str], labels: Sequence[str], n_boot: int = 200,
            seed: int = 0) -> pd.DataFrame:
    """Seed-mean R² per true SNR bin and model, with intervals and ΔR² against the global model."""
    _check_runs(runs)
    preds = {nm: np.stack([r.pred[nm] for r in runs]) for nm in models}
    base = "global" if "global" in preds else None
    return per_bin_seed_table(runs[0].y, preds, runs[0].snr_bin, labels, baseline=base, n_boot=n_boot, seed=seed)


def confusion(runs: Sequence[DeployRun], gate: str) -> pd.DataFrame:
    """Confusion matrix of the gate's argmax (columns) against the true expert (rows), summed over seeds."""
    _check_runs(runs)
    labels = runs[0].plan.expert_labels
    K = len(labels)
    cm = np.zeros((K, K), dtype=np.int64)
    for r in runs:
        np.add.at(cm, (r.expert, np.argmax(r.proba[gate], axis=1)), 1)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="gate"))


def gate_accuracy(runs: Sequence[DeployRun], gate: str, n_boot: int = 200, seed: int = 0) -> tuple[float, tuple]:
    """Fraction of test spectra whose most probable expert is the true one (seed mean, bootstrap interval)."""
    hits = [np.argmax(r.proba[gate], axis=1) == r.expert for r in runs]
    acc = lambda yy, hh: float(np.mean(hh))  # noqa: E731 - a statistic for seed_bootstrap
    v, iv, _ = seed_bootstrap(np.zeros(len(hits[0])), [h.astype(float) for h in hits], n_boot, seed, stat=acc)
    return v, iv


def fallback_rate(runs: Sequence[DeployRun], name: str = DEPLOYED) -> float:
    """Fraction of test spectra sent to the global model (mean over seeds)."""
    return float(np.mean([r.fell_back[name].mean() for r in runs]))


def format_table(summary: Summary, kind: str = "logistic", digits: int = 3) -> pd.DataFrame:
    """The Q3 table for display: R² [interval], seed spread, ΔR² [interval], ρ [interval], fallback rate."""
    t = summary.table
    f = lambda v, lo, hi: (f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"  # noqa: E731
                           if np.isfinite(v) else "undefined")
    names = model_names(kind)
    out = pd.DataFrame({
        "model": [names.get(m, m) for m in t.index],
        "R² [95 %]": [f(r.r2, r.r2_lo, r.r2_hi) for r in t.itertuples()],
        "seed std": t["r2_seed_std"].round(digits).to_numpy(),
        "ΔR² vs global [95 %]": [f(r.delta_r2, r.delta_lo, r.delta_hi) if r.Index != "global" else "—"
                                  for r in t.itertuples()],
        "ρ [95 %]": [f(r.rho, r.rho_lo, r.rho_hi) if r.Index not in ("global", "oracle") else "—"
                     for r in t.itertuples()],
        "fallback": [f"{100 * v:.1f} %" if np.isfinite(v) else "—" for v in t["fallback_rate"]],
    }, index=t.index)
    return out


#: The oracle of each deployed model's class (same mixing, true log SNR instead of the gate's inputs);
#: 'oracle' is the hard oracle (the expert of the true bin).
ORACLE_OF = {"deployed": "oracle_soft", "logistic_soft_fallback": "oracle_soft", "mlp_soft_fallback": "oracle_soft",
             "logistic_soft": "oracle_soft", "mlp_soft": "oracle_soft", "logistic_hard": "oracle",
             "mlp_hard": "oracle", "regression_gate": "oracle_regression"}


def _ratio(summary: Summary, model: str, num_draws: np.ndarray, num: float, den_draws: np.ndarray,
           den: float) -> tuple[float, tuple[float, float]]:
    """(R²_m − R²_g) / (R²_o − R²_g) with a draw-wise interval; NaN when the gap's interval reaches zero."""
    lo_gap = percentile_interval(den_draws, summary.level)[0]
    if not (den > 0 and lo_gap > 0):
        return float("nan"), (float("nan"), float("nan"))
    return num / den, percentile_interval(num_draws / den_draws, summary.level)


def oracle_rhos(summary: Summary, models: Sequence[str] | None = None) -> pd.DataFrame:
    """ρ of every deployed model against the oracle of its class and against ``oracle_best`` (the best of
    the three matched oracles, draw by draw); ``over_1`` flags ρ > 1 (the oracle is then no upper bound)."""
    t, D = summary.table, summary.draws
    g = t.loc["global", "r2"]
    oracles = [o for o in ("oracle", "oracle_soft", "oracle_regression") if o in t.index]  # 'oracle': the hard one
    best_v = max(t.loc[o, "r2"] for o in oracles)
    best_d = np.max([D[o] for o in oracles], axis=0)
    rows = []
    for m in models or [m for m in ORACLE_OF if m in t.index]:
        num, num_d = t.loc[m, "r2"] - g, D[m] - D["global"]
        o = ORACLE_OF[m]
        rc, rc_iv = _ratio(summary, m, num_d, num, D[o] - D["global"], t.loc[o, "r2"] - g)
        rb, rb_iv = _ratio(summary, m, num_d, num, best_d - D["global"], best_v - g)
        rows.append({"model": m, "class_oracle": o, "rho_class": rc, "rho_class_lo": rc_iv[0], "rho_class_hi": rc_iv[1],
                     "rho_best": rb, "rho_best_lo": rb_iv[0], "rho_best_hi": rb_iv[1],
                     "over_1": bool((np.isfinite(rc) and rc > 1) or (np.isfinite(rb) and rb > 1))})
    return pd.DataFrame(rows).set_index("model")


def tau_table(runs: Sequence[DeployRun]) -> pd.DataFrame:
    """The τ sweep (R², coverage on validation and test) averaged over seeds, with the chosen τ per seed."""
    frames = []
    for r in runs:
        for split, recs in r.info["tau_sweep"].items():
            frames.append(pd.DataFrame(recs).assign(split=split, seed=r.seed))
    t = pd.concat(frames).groupby(["split", "tau"], as_index=False)[["r2", "coverage"]].mean()
    return t.pivot(index="tau", columns="split", values=["r2", "coverage"])
