"""Q3's models on top of one streamed fit: gates, matched oracles, τ, and the Gate-4 control.

Given the experts' predictions of one fit (a :class:`~snrmoe_lib.models.oracle_stream.CurvePoint`)
and the compact per-row arrays of the pass (quality features, true SNR and bin, targets), :func:`fit_gates`
builds every Q3 prediction for the test and validation rows:

* the classification gates (logistic, MLP) on the training rows' quality features, mixed softly
  (with and without fallback) and hard; the deployed mixture's τ is chosen on the validation rows
  from a grid (:func:`tau_sweep`);
* the **matched oracles**: ``oracle_hard`` (the expert of the true bin), ``oracle_soft`` (the
  deployed gate class fed the true log SNR instead of quality features, mixed the same way) and
  ``oracle_regression`` (the regression gate fed the true log SNR, trained on the same rows);
* the regression gate, trained on the held-out training rows no expert saw;
* the non-routing controls (SNR-dependent α, fixed blends, bagging) and the deployable
  SNR-dependent-α Ridge (α of the gate's most probable bin);
* the Gate-4 control: the best of whitening, the interacted Ridge and the gated SNR-dependent α,
  chosen on the validation rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.q1_waterfall import control_predictions
from snrmoe_lib.evaluation.metrics import r2
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.mixtures import hard_route, mix

__all__ = ["DEPLOYED", "ORACLES", "GATE4_CANDIDATES", "gate_hyperparameters", "subsample", "tau_sweep",
           "choose_tau", "fit_gates"]

DEPLOYED = "deployed"
#: The matched oracles (true SNR instead of the gate's inputs).
ORACLES = ("oracle_hard", "oracle_soft", "oracle_regression")
#: Single models that may stand in for the mixture (Gate-4); one is chosen on validation.
GATE4_CANDIDATES = ("whitening", "interacted", "snr_alpha_gated")


def gate_hyperparameters(spec, kind: str) -> dict:
    """Keyword hyper-parameters of a gate (:func:`snrmoe_lib.models.gates.make_gate`) from the ``gate`` section.

    ``kind``: 'logistic', 'mlp' or 'regression' (the regression gate shares the MLP's hidden width,
    learning rate, weight decay and seed, with its own number of epochs).
    """
    torch_common = {"learning_rate": spec.learning_rate, "weight_decay": spec.weight_decay, "seed": spec.seed}
    if kind == "logistic":
        return {"C": spec.logistic_c}
    if kind == "mlp":
        return {"hidden": spec.mlp_hidden, "epochs": spec.mlp_epochs} | torch_common
    if kind == "regression":
        return {"hidden": spec.mlp_hidden, "epochs": spec.regression_epochs} | torch_common
    raise ValueError(f"unknown gate kind {kind!r}; use 'logistic', 'mlp' or 'regression'")


def subsample(n: int, most: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= most``, else a seeded sorted subsample of ``most`` of them."""
    if n <= most:
        return np.arange(n)
    return np.sort(_rng("gate.fit_subsample", int(seed)).choice(n, int(most), replace=False))


def tau_sweep(W, P, glob, y, taus: Sequence[float]) -> pd.DataFrame:
    """R² and coverage (fraction mixed, not sent to the global model) of the soft mixture at each τ."""
    rows = []
    for t in taus:
        yh, fell = mix(W, P, glob, float(t))
        rows.append({"tau": float(t), "r2": r2(y, yh), "coverage": float(1.0 - fell.mean())})
    return pd.DataFrame(rows)


def choose_tau(sweep: pd.DataFrame) -> float:
    """The τ of the highest validation R² (ties: the smallest τ, the simpler rule)."""
    best = sweep["r2"].max()
    return float(sweep.loc[sweep["r2"] >= best - 1e-12, "tau"].min())


def _log_snr(d: dict) -> np.ndarray:
    return np.log(np.clip(d["snr"], 1e-6, None))[:, None]


def _classify(kind: str, F_train, labels, K: int, g) -> object:
    gate = make_gate(kind, n_classes=K, **gate_hyperparameters(g, kind))
    return gate.fit(F_train, check_labels(labels, K)[0])


def _regress(F_hold, y_hold, P_hold, g):
    rgate = make_gate("regression", **gate_hyperparameters(g, "regression"))
    rows = subsample(len(y_hold), g.train_n, g.seed + 1)
    return rgate.fit(F_hold[rows], y_hold[rows], expert_pred=P_hold[rows])


def _regression_models(point, data: dict, rg_cols: list[int], g, with_gate: bool, pred: dict) -> dict:
    """The regression oracle (true log SNR) and, with ``with_gate``, the regression gate (quality features),
    both trained on the held-out rows; their predictions go into ``pred``; returns the gate's test weights."""
    ho = data["holdout"]
    P_h = point.pred["holdout"][:, rg_cols]
    rorac = _regress(_log_snr(ho), ho["y"], P_h, g)
    rgate = _regress(ho["q"], ho["y"], P_h, g) if with_gate else None
    for r in pred:
        Pr = point.pred[r][:, rg_cols]
        pred[r]["oracle_regression"] = rorac.predict(_log_snr(data[r]), expert_pred=Pr)
        if rgate is not None:
            pred[r]["regression_gate"] = rgate.predict(data[r]["q"], expert_pred=Pr)
    return {} if rgate is None else {"regression": rgate.predict_proba(data["test"]["q"])}


def fit_gates(point, data: dict, infos: dict, train_mask: np.ndarray, g, taus: Sequence[float], controls: dict,
              kinds: Sequence[str] = ("logistic", "mlp"), regression_gate: bool = True) -> dict:
    """Every Q3 prediction of one fit for the 'test' and 'val' rows.

    Parameters
    ----------
    point : CurvePoint
        The experts' predictions per role ('test', 'val', 'holdout').
    data : dict role → dict
        Per-row ``q`` (quality features), ``snr`` (true), ``bin`` (true, original), ``y`` for
        'train', 'val', 'test', 'holdout' (the same row order as ``point.pred``).
    infos : dict role → DataFrame
        The pass's row info (true bins) for 'test', 'val', 'holdout'.
    train_mask : bool array over data['train']
        The training rows of this fit (a nested subset on the learning curve).
    g : GateSpec
    taus : the τ grid (the deployed mixture's τ is chosen on 'val')
    controls : dict role → dict name → array
        The single-model controls' predictions (whitening, interacted) for 'test' and 'val'.
    kinds : the classification gates to fit (the deployed kind always is).
    regression_gate : also the regression gate (the learning curve's smaller sizes need only its oracle).

    Returns
    -------
    dict with ``pred`` (role → name → array), ``proba`` (test: gate → (n, K)), ``fell`` (test:
    name → bool), ``tau``, ``tau_sweep`` (val and test), ``gate4`` (the chosen control and the
    validation R² of each candidate), ``n_gate`` and ``n_regression`` (training rows of the gates).
    """
    fam, gi = point.families["snr"], point.models.index("global")
    plan, cols, K = fam.plan, fam.columns, fam.plan.n_experts
    acols = point.families["snr_alpha"].columns
    base, weights = control_predictions(point, infos)
    roles = ("test", "val")
    P = {r: point.pred[r][:, cols] for r in roles}
    glob = {r: point.pred[r][:, gi] for r in roles}
    tr = {k: v[train_mask] for k, v in data["train"].items()}
    rows = subsample(len(tr["y"]), g.train_n, g.seed)
    e_tr = plan.route(tr["bin"])[rows]
    # 'oracle' is the hard oracle (the name the Q3 table's ρ and gap have always used)
    pred = {r: {("oracle" if k == "oracle_hard" else k): v for k, v in base[r].items()} | controls[r] for r in roles}
    proba, fell, sweeps = {}, {}, {}
    kinds = list(dict.fromkeys([g.kind, *kinds]))
    W = {}
    for kind in kinds:
        gate = _classify(kind, tr["q"][rows], e_tr, K, g)
        W[kind] = {r: gate.predict_proba(data[r]["q"]) for r in roles}
    sweeps["val"] = tau_sweep(W[g.kind]["val"], P["val"], glob["val"], data["val"]["y"], taus)
    sweeps["test"] = tau_sweep(W[g.kind]["test"], P["test"], glob["test"], data["test"]["y"], taus)
    tau = choose_tau(sweeps["val"])
    for kind in kinds:
        for r in roles:
            pred[r][f"{kind}_soft_fallback"], f = mix(W[kind][r], P[r], glob[r], tau)
            pred[r][f"{kind}_soft"], _ = mix(W[kind][r], P[r])
            pred[r][f"{kind}_hard"] = hard_route(W[kind][r], P[r])
            if r == "test":
                fell[f"{kind}_soft_fallback"] = f
        proba[kind] = W[kind]["test"]
    soft_oracle = _classify(g.kind, _log_snr(tr)[rows], e_tr, K, g)
    for r in roles:
        pred[r][DEPLOYED] = pred[r][f"{g.kind}_soft_fallback"]
        pred[r]["oracle_soft"], f = mix(soft_oracle.predict_proba(_log_snr(data[r])), P[r], glob[r], tau)
        pred[r]["snr_alpha_gated"] = hard_route(W[g.kind][r], point.pred[r][:, acols])
        if r == "test":
            fell[DEPLOYED], fell["oracle_soft"] = fell[f"{g.kind}_soft_fallback"], f
    rg_cols = cols + ([gi] if g.regression_include_global else [])
    proba |= _regression_models(point, data, rg_cols, g, regression_gate, pred)
    val_r2 = {c: r2(data["val"]["y"], pred["val"][c]) for c in GATE4_CANDIDATES}
    return {"pred": pred, "proba": proba, "fell": fell, "tau": tau, "tau_sweep": sweeps,
            "gate4": {"control": max(GATE4_CANDIDATES, key=val_r2.get), "val_r2": val_r2},
            "blend_weights": weights, "n_gate": int(len(rows)), "n_regression": int(min(len(data["holdout"]["y"]), g.train_n)),
            "regression_components": [point.models.names[c] for c in rg_cols]}
