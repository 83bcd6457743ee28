"""Q4's expert families and what each run fits: experts, matched oracles, the deployed gate, the residual mixture.

A **family** is a kind of regressor that serves as global model, as SNR experts (through
:class:`~snrmoe_lib.models.experts.BinnedExperts`, the one expert interface) and as the conditional
control (the same regressor with the quality features appended). :data:`FAMILIES` is the one place
a family is registered: ``name → Family(build)`` where ``build(params, seed)`` returns a fresh
unfitted regressor whose ``fit`` accepts ``X_val``/``y_val`` (selection on validation only); its
regressor sees the rows of :class:`~snrmoe_lib.analyses.q4_data.Q4Data` (binned flux).

A family whose experts are not separate regressors gives its own ``fit`` instead: the neural
family (:mod:`snrmoe_lib.analyses.q4_neural`) trains one trunk with K heads, a FiLM control and its
own residual mixture, on at most ``q4.neural_train_rows`` rows (``train_cap``), and returns the same
variants plus each prediction's Gaussian σ.

The deployed gate is Q3's (:mod:`snrmoe_lib.analyses.q3_models`, :mod:`snrmoe_lib.models.gates`):
fitted once per seed on the training rows' quality features (it depends on the bins, not on the
experts), its τ chosen on validation per family (:mod:`snrmoe_lib.analyses.q4_variants`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from snrmoe_lib.analyses.q3_models import DEPLOYED
from snrmoe_lib.analyses.q4_data import Q4Data
from snrmoe_lib.analyses.q4_neural import build as _neural
from snrmoe_lib.analyses.q4_neural import fit_neural
from snrmoe_lib.analyses.q4_variants import VARIANTS, fit_gates, matched
from snrmoe_lib.models.boosted import BoostedRegressor
from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.oracle_stream import nested_increments
from snrmoe_lib.models.residual import ResidualMixture
from snrmoe_lib.models.ridge import StreamingRidge

__all__ = ["Family", "FAMILIES", "family", "VARIANTS", "fit_gates", "fit_family", "fit_residual", "fit_curve"]


@dataclass(frozen=True)
class Family:
    """An expert family: a label for tables and ``build(params, seed)`` → an unfitted regressor.

    ``fit(params, data, gates, control)``, when given, replaces :func:`fit_family`'s experts (and
    returns its dict, with ``sigma`` when the family predicts one); ``train_cap(params)`` is the most
    training rows the family's fit uses (its learning curve stops below it).
    """

    name: str
    label: str
    build: Callable
    fit: Callable | None = None
    train_cap: Callable | None = None


def _ridge(params, seed: int):
    return StreamingRidge(alpha=list(params.ridge.alphas), solver=params.ridge.solver)


def _boosted(params, seed: int, corrector: bool = False):
    q = params.q4
    return BoostedRegressor(learning_rate=q.boosted_learning_rate,
                            max_iter=q.corrector_max_iter if corrector else q.boosted_max_iter,
                            max_leaf_nodes=q.corrector_max_leaf_nodes if corrector else q.boosted_max_leaf_nodes,
                            min_samples_leaf=q.boosted_min_samples_leaf, l2_regularization=q.boosted_l2,
                            n_iter_no_change=q.boosted_n_iter_no_change, max_train_rows=q.max_train_rows,
                            seed=int(seed), n_threads=q.n_threads)


#: The registry: every family Q4 can compare.
FAMILIES: dict[str, Family] = {
    "ridge": Family("ridge", "Ridge", _ridge),
    "boosted": Family("boosted", "boosted trees", _boosted),
    "neural": Family("neural", "neural trunk + heads", _neural, fit=fit_neural,
                     train_cap=lambda params: params.q4.neural_train_rows),
}


def family(name: str) -> Family:
    """The registered family ``name`` (a clear error for one the configuration names but no code provides)."""
    if name not in FAMILIES:
        raise ValueError(f"q4 family {name!r} is not registered in analyses.q4_families.FAMILIES "
                         f"(registered: {sorted(FAMILIES)}); remove it from q4.families")
    return FAMILIES[name]


def _experts(params) -> dict:
    sb = params.snr_bins
    return {"n_bins": len(sb.labels), "labels": list(sb.labels), "min_count": sb.min_count,
            "on_small_bin": sb.on_small_bin}


def _variants(experts: BinnedExperts, data: Q4Data, gates: dict, params) -> dict:
    """Global, hard and soft oracles and the deployed mixture of fitted experts on 'val' and 'test'."""
    P = {r: experts.predict_all(data.X[r]) for r in ("val", "test")}
    G = {r: experts.predict_global(data.X[r]) for r in ("val", "test")}
    pred, tau = matched(P, G, {r: experts.plan_.route(data.bin[r]) for r in P}, data.y["val"], gates, params)
    return {"pred": pred, "tau": tau, "expert_pred": P}


def fit_family(fam: Family, params, data: Q4Data, gates: dict | None = None, control: bool = True) -> dict:
    """Fit one family for one seed: the global model and SNR experts (validation rows per bin), the
    conditional control (quality features appended) and, given the gates, every variant's predictions.

    Returns a dict with ``experts`` (fitted BinnedExperts), ``pred`` (role → name → array), ``tau``,
    and ``info`` (per-model selection: α or boosting rounds chosen on validation); a family with its
    own ``fit`` returns that fit's dict (no ``experts``; ``sigma`` when it predicts one).
    """
    if fam.fit is not None:
        return fam.fit(params, data, gates, control)
    tr, va = "train", "val"
    experts = BinnedExperts(estimator=fam.build(params, data.seed), **_experts(params))
    experts.fit(data.X[tr], data.y[tr], bins=data.bin[tr], validation=(data.X[va], data.y[va], data.bin[va]))
    out = {"experts": experts, "plan": experts.plan_}
    if gates is None:
        gates = fit_gates(params, data, experts.plan_)
    out |= _variants(experts, data, gates, params)
    if control:
        cond = fam.build(params, data.seed)
        cond.fit(np.hstack([data.X[tr], data.q[tr]]), data.y[tr], X_val=np.hstack([data.X[va], data.q[va]]),
                 y_val=data.y[va])
        for r in ("val", "test"):
            out["pred"][r]["conditional"] = cond.predict(np.hstack([data.X[r], data.q[r]]))
    out["info"] = {"selection": _selection(experts), "tau": out["tau"]}
    return out


def _one(m) -> dict:
    if hasattr(m, "alpha_"):
        return {"alpha": float(np.ravel(m.alpha_)[0])}
    return {"n_iter": int(getattr(m, "n_iter_", -1))}


def _selection(experts: BinnedExperts) -> dict:
    """What validation chose per model: α (Ridge) or the boosting rounds kept (trees)."""
    out = {} if experts.global_ is None else {"global": _one(experts.global_)}
    return out | {lab: _one(m) for lab, m in zip(experts.plan_.expert_labels, experts.experts_)}


def fit_residual(params, data: Q4Data, base_fit: dict, gates: dict) -> dict:
    """The residual mixture on the frozen global model of ``base_fit``: per-bin correctors of its residuals
    (``q4.corrector``), weighted by the deployed gate (deployed) or by the true bin (hard oracle)."""
    q = params.q4
    if "experts" not in base_fit:
        raise ValueError("the residual mixture needs a family of separate regressors as q4.residual_base "
                         "(ridge or boosted); the neural family fits its own (neural_residual_mixture)")
    corr = _ridge(params, data.seed) if q.corrector == "ridge" else _boosted(params, data.seed, corrector=True)
    m = ResidualMixture(base=base_fit["experts"].global_, corrector=corr, prefit=True, **_experts(params))
    m.fit(data.X["train"], data.y["train"], bins=data.bin["train"], X_val=data.X["val"], y_val=data.y["val"],
          bins_val=data.bin["val"])
    if m.correctors_.plan_.n_experts != base_fit["plan"].n_experts:
        raise RuntimeError("the residual correctors and the experts merged the bins differently")
    pred = {r: {"residual_mixture": m.predict(data.X[r], proba=gates["gate"][r]),
                "residual_oracle_hard": m.predict(data.X[r], bins=data.bin[r])} for r in ("val", "test")}
    return {"model": m, "pred": pred, "info": {"selection": _selection(m.correctors_)}}


def fit_curve(fam: Family, params, data: Q4Data, sizes) -> list[dict]:
    """The learning curve of one family: at each nested training size (seeded, stream
    ``learning_curve.order``), the experts, the global model and the gate refitted on that many rows;
    the global, hard-oracle and deployed predictions of the test rows. Only sizes below the rows the
    family's full fit uses (the rows in memory, or its ``train_cap``) are refitted."""
    most = len(data.y["train"]) if fam.train_cap is None else min(len(data.y["train"]), fam.train_cap(params))
    sizes = [int(n) for n in sizes if n < most]
    if not sizes:
        return []
    inc = nested_increments(np.arange(len(data.y["train"])), sizes, params.split.seed)
    out = []
    for k, n in enumerate(sizes):
        keep = inc <= k
        sub = Q4Data(**{a: {**getattr(data, a), "train": getattr(data, a)["train"][keep]}
                        for a in ("X", "q", "snr", "bin", "y", "row")},
                     labels=data.labels, seed=data.seed, n_train_split=data.n_train_split, info=data.info,
                     aux={**data.aux, "train": data.aux["train"][keep]} if data.aux else {})
        try:
            fit = fit_family(fam, params, sub, None, control=False)
        except ValueError as exc:  # too few rows for an expert or a gate at this size: said, not hidden
            out.append({"n_train": n, "error": str(exc)})
            continue
        out.append({"n_train": n, "pred": {v: fit["pred"]["test"][v] for v in ("global", "oracle_hard", DEPLOYED)}})
    return out
