"""Q4's matched variants, shared by every family: the expert plan, the gates, and the routed predictions.

Whatever the family, its experts' predictions ``P`` (n × K) and its global model's ``G`` (n,) give the
table's variants the same way (:func:`matched`): the global model, the hard oracle (each star by the
expert of its true SNR bin), the soft oracle and the deployed mixture (probabilities of the soft
oracle and of Q3's deployed gate, falling back to the global model where the largest probability is
below τ, one τ per family chosen on the validation rows). The gates (:func:`fit_gates`) are fitted
once per seed on the training rows' expert bins of :func:`expert_plan` (the small-bin policy of
``snr_bins``), so they depend on the bins, never on the experts.
"""
from __future__ import annotations

import numpy as np

from snrmoe_lib.analyses.q3_models import DEPLOYED, choose_tau, gate_hyperparameters, subsample, tau_sweep
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.mixtures import mix
from snrmoe_lib.models.routing import plan_bins

__all__ = ["VARIANTS", "expert_plan", "fit_gates", "taus", "matched"]

#: The table's variants of every family (results names ``{family}_{variant}_r2``), then its control.
VARIANTS = ("global", "oracle_hard", "oracle_soft", DEPLOYED)


def expert_plan(params, bins: np.ndarray):
    """The experts of the training rows' true SNR bins (``snr_bins.min_count`` and ``on_small_bin``)."""
    sb = params.snr_bins
    return plan_bins(np.bincount(bins, minlength=len(sb.labels)), sb.min_count, sb.on_small_bin, None, list(sb.labels))


def fit_gates(params, data, plan) -> dict:
    """The deployed gate (quality features) and the soft oracle (the same gate kind fed the true log SNR),
    trained on the training rows' expert bins; their probabilities for 'val' and 'test'."""
    g, K = params.gate, plan.n_experts
    rows = subsample(len(data.y["train"]), g.train_n, g.seed)
    labels = check_labels(plan.route(data.bin["train"])[rows], K)[0]
    out = {}
    for name, F in (("gate", data.q), ("soft_oracle", data.log_snr)):
        gate = make_gate(g.kind, n_classes=K, **gate_hyperparameters(g, g.kind)).fit(F["train"][rows], labels)
        out[name] = {r: gate.predict_proba(F[r]) for r in ("val", "test")}
    out["n_gate"] = int(len(rows))
    return out


def taus(params) -> list[float]:
    """The fallback thresholds τ is chosen from (``controls.tau_grid`` and ``gate.tau``)."""
    return sorted(set(params.controls.tau_grid) | {params.gate.tau})


def matched(P: dict, G: dict, experts: dict, y_val: np.ndarray, gates: dict, params) -> tuple[dict, float]:
    """The variants of one family from its predictions on 'val' and 'test'.

    Parameters
    ----------
    P, G : dict role → array
        The experts' predictions (n, K) and the global model's (n,).
    experts : dict role → int array
        Each row's expert (its true SNR bin through the plan).
    y_val : array
        The validation labels (τ is chosen on them).
    gates : dict
        :func:`fit_gates`'s probabilities.

    Returns
    -------
    pred : dict role → variant → array
    tau : float
    """
    tau = choose_tau(tau_sweep(gates["gate"]["val"], P["val"], G["val"], y_val, taus(params)))
    pred = {}
    for r in ("val", "test"):
        e = experts[r]
        pred[r] = {"global": G[r], "oracle_hard": P[r][np.arange(len(e)), e],
                   "oracle_soft": mix(gates["soft_oracle"][r], P[r], G[r], tau)[0],
                   DEPLOYED: mix(gates["gate"][r], P[r], G[r], tau)[0]}
    return pred, tau
