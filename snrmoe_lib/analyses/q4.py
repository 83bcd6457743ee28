"""Q4: stronger experts — does an SNR mixture still pay once the experts are strong?

For each noise seed (the first ``q4.n_seeds`` of ``seeds``) :func:`run_seed` reads the split once
(:func:`snrmoe_lib.analyses.q4_data.collect`), fits Q3's deployed gate and soft oracle once, and for
every family of ``q4.families`` (the registry :data:`snrmoe_lib.analyses.q4_families.FAMILIES`) the
global model, the SNR experts (early stopping / α on the validation rows of each bin), the
conditional control and the matched oracles (the neural family: one trunk with K heads, a FiLM
control and its own residual mixture, :mod:`snrmoe_lib.analyses.q4_neural`); then the residual
mixture on the frozen global model of ``q4.residual_base``, and the learning curve. Only predictions
are kept, and the Gaussian σ of the models that predict one (``Q4Run.sigma``).

:func:`summarize` scores every model on the frozen test set with star-bootstrap intervals that are
paired (stream ``bootstrap.stars``: the same resampled stars for every model and seed); ρ of the
deployed mixture against the best matched oracle of its family, draw by draw. The intervals,
coverage, learning curve, verdicts and the results payload are in :mod:`snrmoe_lib.analyses.q4_report`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q4_data import collect
from snrmoe_lib.analyses.q4_families import FAMILIES, VARIANTS, family, fit_curve, fit_family, fit_gates, fit_residual
from snrmoe_lib.analyses.q4_variants import expert_plan
from snrmoe_lib.evaluation.metrics import bootstrap_indices, per_bin_seed_table, percentile_interval, r2, r2_resampled, rho

__all__ = ["Q4Run", "Summary", "run_seed", "run", "model_names", "summarize", "format_table", "per_bin", "FAMILIES", "VARIANTS",
           "RESIDUAL", "prediction_columns"]

#: The residual mixture's rows in the table (deployed weights, and the hard oracle's).
RESIDUAL = ("residual_mixture", "residual_oracle_hard")


@dataclass
class Q4Run:
    """One noise seed: every model's predictions of the validation and test rows, and what was chosen;
    ``sigma`` (role → model → array) holds the raw predicted σ of the models that have one."""

    seed: int
    y: dict
    bins: dict
    rows: np.ndarray
    pred: dict
    labels: list[str]
    info: dict = field(default_factory=dict)
    curve: dict = field(default_factory=dict)
    sigma: dict = field(default_factory=dict)


def _plan(params, bins: np.ndarray):
    return expert_plan(params, bins)


def run_seed(ds, split, params, seed: int, representation: str, curve: bool = True,
             progress: bool | str = False) -> Q4Run:
    """Fit and predict every Q4 model for one noise seed (see the module docstring)."""
    q, t0 = params.q4, time.time()
    fams = [family(n) for n in q.families]
    data = collect(ds, split, params, seed, representation, progress=progress)
    plan = _plan(params, data.bin["train"])
    gates = fit_gates(params, data, plan)
    pred = {r: {} for r in ("val", "test")}
    sigma = {r: {} for r in pred}
    info = {"data": data.info, "n_gate": gates["n_gate"], "expert_labels": plan.expert_labels, "families": {}}
    fits = {}
    for fam in fams:
        t1 = time.time()
        fit = fits[fam.name] = fit_family(fam, params, data, gates)
        fit["info"]["seconds"] = round(time.time() - t1, 1)
        if fit["plan"].expert_labels != plan.expert_labels:
            raise RuntimeError(f"{fam.name}: the experts merged the bins differently from the gate's plan")
        for r in pred:
            pred[r] |= {f"{fam.name}_{v}": a for v, a in fit["pred"][r].items()}
            sigma[r] |= {f"{fam.name}_{v}": a for v, a in fit.get("sigma", {}).get(r, {}).items()}
        info["families"][fam.name] = fit["info"]
    res = fit_residual(params, data, fits[q.residual_base], gates)
    for r in pred:
        pred[r] |= res["pred"][r]
    info["residual"] = res["info"] | {"base": q.residual_base, "corrector": q.corrector}
    fits = None  # the fitted models are not kept
    curves = {}
    for fam in fams if curve else []:
        t1 = time.time()
        curves[fam.name] = fit_curve(fam, params, data, q.curve_sizes)
        info["families"][fam.name]["curve_seconds"] = round(time.time() - t1, 1)
    info["seconds"] = round(time.time() - t0, 1)
    return Q4Run(int(seed), {r: data.y[r] for r in pred}, {r: data.bin[r] for r in pred}, data.row["test"], pred,
                 data.labels, info, curves, sigma)


def run(ds, split, params, representation: str, curve: bool = True, progress: bool | str = False,
        log=print) -> list[Q4Run]:
    """:func:`run_seed` for the first ``q4.n_seeds`` noise seeds (a line per seed through ``log``)."""
    runs = []
    for s in params.seeds[: params.q4.n_seeds]:
        runs.append(run_seed(ds, split, params, s, representation, curve=curve, progress=progress))
        if log is not None:
            log(f"seed {s}: {runs[-1].info['seconds']:.0f} s; {describe_run(runs[-1])}")
    return runs


def describe_run(r: Q4Run) -> str:
    """What validation chose in one seed's run: τ and the global model's α / boosting rounds / epochs per
    family, and the family's fit time."""
    parts = [f"{n}: τ = {f['tau']:g}, global {f['selection']['global']} ({f.get('seconds', float('nan')):.0f} s)"
             for n, f in r.info["families"].items()]
    return "; ".join(parts) + f"; training rows in memory {r.info['data']['n_train_kept']}"


def model_names(families: Sequence[str]) -> list[str]:
    """The table's models in order: every family's variants, its conditional control and its own residual
    mixture (the neural family's), then the residual mixture on ``q4.residual_base``."""
    return [f"{f}_{v}" for f in families for v in (*VARIANTS, "conditional", *RESIDUAL)] + list(RESIDUAL)


@dataclass
class Summary:
    """The Q4 table (one row per model) and the paired bootstrap draws behind its intervals."""

    table: pd.DataFrame
    draws: dict
    level: float = 0.95

    def difference(self, a: str, b: str) -> tuple[float, tuple[float, float]]:
        """R²(a) − R²(b) with a paired interval (the same resampled stars)."""
        return (float(self.table.loc[a, "r2"] - self.table.loc[b, "r2"]),
                percentile_interval(self.draws[a] - self.draws[b], self.level))


def _check_runs(runs: Sequence[Q4Run]) -> None:
    if not runs:
        raise ValueError("no runs to summarise")
    for r in runs[1:]:
        if not np.array_equal(r.rows, runs[0].rows):
            raise ValueError("runs of different seeds must share the test stars")


def _family_of(name: str, families: Sequence[str], base: str) -> str:
    return base if name in RESIDUAL else next(f for f in families if name.startswith(f + "_"))


def _rho(vals: dict, draws: dict, m: str, g: str, oracles: list[str], iv) -> tuple[float, tuple]:
    """ρ = (R²_m − R²_g) / (R²_best oracle − R²_g), the best oracle draw by draw; NaN when the gap reaches zero."""
    best_v = max(vals[o] for o in oracles)
    best_d = np.max([draws[o] for o in oracles], axis=0)
    gap_iv = iv(best_d - draws[g])
    value = rho(vals[m], vals[g], best_v, max(best_v - vals[g] - gap_iv[0], 0.0))
    if not (np.isfinite(value) and gap_iv[0] > 0):
        return float("nan"), (float("nan"), float("nan"))
    return value, iv((draws[m] - draws[g]) / (best_d - draws[g]))


def summarize(runs: Sequence[Q4Run], families: Sequence[str], residual_base: str, n_boot: int = 200,
              seed: int = 0, level: float = 0.95) -> Summary:
    """Seed-mean test R² of every model with paired star-bootstrap intervals, ΔR² against its family's
    global model, and ρ against the family's best matched oracle (hard or soft)."""
    _check_runs(runs)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 for intervals, got {n_boot}")
    y = runs[0].y["test"]
    names = [m for m in model_names(families) if m in runs[0].pred["test"]]
    idx = bootstrap_indices(len(y), n_boot, seed)
    iv = partial(percentile_interval, level=level)
    per_seed = {m: np.array([r2(y, r.pred["test"][m]) for r in runs]) for m in names}
    vals = {m: float(v.mean()) for m, v in per_seed.items()}
    draws = {m: np.mean([r2_resampled(y, r.pred["test"][m], idx) for r in runs], axis=0) for m in names}
    rows = []
    for m in names:
        f = _family_of(m, families, residual_base)
        g = f"{f}_global"
        d = draws[m] - draws[g]
        rv, riv = _rho(vals, draws, m, g, [f"{f}_oracle_hard", f"{f}_oracle_soft"], iv)
        rows.append({"model": m, "family": f, "r2": vals[m], "r2_lo": iv(draws[m])[0], "r2_hi": iv(draws[m])[1],
                     "r2_seed_std": float(np.std(per_seed[m], ddof=1)) if len(runs) > 1 else 0.0,
                     "delta_r2": vals[m] - vals[g], "delta_lo": iv(d)[0], "delta_hi": iv(d)[1],
                     "rho": rv, "rho_lo": riv[0], "rho_hi": riv[1]})
    return Summary(pd.DataFrame(rows).set_index("model"), draws, level)


def format_table(summary: Summary, digits: int = 3) -> pd.DataFrame:
    """The table as the notebook shows it: R² [interval], ΔR² vs the family's global model [paired], ρ [interval]."""
    t = summary.table

    def cell(v, lo, hi):
        return "—" if not np.isfinite(v) else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return pd.DataFrame({"family": t["family"],
                         "R²": [cell(*r) for r in t[["r2", "r2_lo", "r2_hi"]].to_numpy()],
                         "ΔR² vs family global": [cell(*r) for r in t[["delta_r2", "delta_lo", "delta_hi"]].to_numpy()],
                         "ρ vs best oracle": [cell(*r) for r in t[["rho", "rho_lo", "rho_hi"]].to_numpy()]},
                        index=t.index)


def per_bin(runs: Sequence[Q4Run], models: Sequence[str], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Seed-mean R² per true SNR bin for ``models``, with star-bootstrap intervals."""
    _check_runs(runs)
    preds = {m: np.stack([r.pred["test"][m] for r in runs]) for m in models}
    return per_bin_seed_table(runs[0].y["test"], preds, runs[0].bins["test"], runs[0].labels, n_boot=n_boot, seed=seed)


def prediction_columns(runs: list[Q4Run]) -> dict:
    """Model name → (n_seeds, n_test) frozen-test predictions, for the predictions file the Fisher
    notebook reads (paired efficiency against the per-bin bounds)."""
    return {m: np.stack([r.pred["test"][m] for r in runs]) for m in runs[0].pred["test"]}
