"""The deployed model of an in-memory expert family (boosted trees, networks): Q4's rows, experts, gate and τ.

Families that do not fit from sufficient statistics hold their training rows. This path fits the
deployed mixture exactly as the Q4 notebook evaluates it for one noise seed: Q4's split (no held-out
carve), at most ``q4.max_train_rows`` training rows (the seeded subsample of
:func:`~snrmoe_lib.analyses.q4_data.train_rows`), the quality compressor on Q4's template rows
(stream ``gate.template_subsample``), the experts and global model built by the family registry
(:data:`~snrmoe_lib.analyses.q4_families.FAMILIES`, hyper-parameters from the ``q4`` section) with
selection on each bin's validation rows, Q3's deployed gate on the training rows' quality features
and τ chosen on validation. In clean error mode its frozen-test predictions are the Q4 table's
``<family>_deployed`` column for that seed. The rows come from Q4's own pass
(:func:`~snrmoe_lib.analyses.q4_data.collect`), which also gives what deployment needs: the observed
SNR of every row (interval bins and flags), the template rows' bad-pixel fraction, and in 'estimated'
error mode the σ̂ of the same noise draw as the gate's and the observed SNR's input.

The neural family is one trunk with K SNR heads, not per-bin regressors: its experts are the heads of
Q4's 'heads' network and its global model the global head of Q4's residual network
(:func:`~snrmoe_lib.analyses.q4_neural.fit_nets`, hyper-parameters ``q4.neural_*``), kept as a
:class:`~snrmoe_lib.models.model_set.NeuralHeads`; the expert plan is Q4's
(:func:`~snrmoe_lib.analyses.q4_variants.expert_plan`), so its frozen-test predictions are Q4's
``neural_deployed`` in clean mode.
"""
from __future__ import annotations

import numpy as np

from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.model_set import ModelSet, NeuralHeads
from snrmoe_lib.analyses.q3_models import choose_tau, gate_hyperparameters, subsample, tau_sweep
from snrmoe_lib.analyses.q4_data import ROLES, Q4Data, collect
from snrmoe_lib.analyses.q4_families import family
from snrmoe_lib.analyses.q4_neural import fit_nets, net_history
from snrmoe_lib.analyses.q4_variants import expert_plan, taus

__all__ = ["role_arrays", "fit_rows_family"]

#: The per-row arrays the deployed fit reads from Q4's pass.
KEYS = ("X", "q", "snr_obs", "snr", "bin", "y", "row")


def role_arrays(data: Q4Data) -> dict:
    """Role → the per-row arrays the deployed fit reads (:data:`KEYS`) of Q4's pass."""
    return {r: {k: getattr(data, k)[r] for k in KEYS} for r in ROLES}


def _gate_and_tau(params, data: dict, plan, val_pred: np.ndarray) -> tuple:
    """Q3's deployed gate on the training rows' quality features (their expert bins), τ chosen on the
    validation rows (``val_pred``: the K experts' columns, then the global model's)."""
    tr, va, K, g = data["train"], data["val"], plan.n_experts, params.gate
    rows = subsample(len(tr["y"]), g.train_n, g.seed)
    gate = make_gate(g.kind, n_classes=K, **gate_hyperparameters(g, g.kind))
    gate.fit(tr["q"][rows], check_labels(plan.route(tr["bin"])[rows], K)[0])
    tau = choose_tau(tau_sweep(gate.predict_proba(va["q"]), val_pred[:, :K], val_pred[:, K], va["y"], taus(params)))
    return gate, float(tau)


def _result(d: Q4Data, data: dict, plan, models, gate, tau: float, split, val_pred: np.ndarray) -> dict:
    """The dict of :func:`fit_rows_family` (the in-memory features dropped once predicted)."""
    test_pred = models.predict(data["test"]["X"])
    for r in ROLES:
        data[r].pop("X")  # the in-memory features are not needed past the fit
    K = plan.n_experts
    return {"compressor": d.compressor, "gate": gate, "tau": tau, "models": models,
            "expert_labels": list(plan.expert_labels), "expert_columns": list(range(K)), "global_column": K,
            "data": data, "val_pred": val_pred, "test_pred": test_pred, "bad_fraction": d.bad_pixel_fraction,
            "n_train_kept": int(len(data["train"]["y"])), "n_train_split": int(len(split.train))}


def fit_rows_family(ds, split, params, name: str, seed: int, representation: str, variance=None,
                    progress: bool | str = False) -> dict:
    """Fit family ``name``'s deployed mixture on Q4's rows (module docstring).

    Returns a dict: ``compressor``, ``gate``, ``tau``, ``models`` (:class:`ModelSet`, or
    :class:`NeuralHeads` for 'neural': experts then 'global'), ``expert_labels``, ``expert_columns``,
    ``global_column``, ``data`` (role → arrays), ``val_pred`` / ``test_pred`` (every model's
    predictions), ``selection`` (what validation chose).
    """
    d = collect(ds, split, params, seed, representation, progress=progress, variance=variance)
    if name == "neural":
        return _fit_neural(d, split, params)
    fam, data = family(name), role_arrays(d)
    tr, va = data["train"], data["val"]
    sb = params.snr_bins
    experts = BinnedExperts(estimator=fam.build(params, seed), n_bins=len(sb.labels), labels=list(sb.labels),
                            min_count=sb.min_count, on_small_bin=sb.on_small_bin)
    experts.fit(tr["X"], tr["y"], bins=tr["bin"], validation=(va["X"], va["y"], va["bin"]))
    plan = experts.plan_
    models = ModelSet(list(plan.expert_labels) + ["global"], list(experts.experts_) + [experts.global_])
    val_pred = models.predict(va["X"])
    gate, tau = _gate_and_tau(params, data, plan, val_pred)
    out = _result(d, data, plan, models, gate, tau, split, val_pred)
    out["selection"] = {lab: int(getattr(m, "n_iter_", -1)) for lab, m in zip(models.names, models.models)}
    return out


def _fit_neural(d: Q4Data, split, params) -> dict:
    """The neural family: Q4's two networks (:func:`~snrmoe_lib.analyses.q4_neural.fit_nets`): the K SNR
    heads of the 'heads' trunk as the experts, the residual net's global head as the global model."""
    plan = expert_plan(params, d.bin["train"])
    res, heads, keep = fit_nets(params, d, plan)
    models = NeuralHeads(list(plan.expert_labels) + ["global"], heads, res)
    data = role_arrays(d)
    val_pred = models.predict(data["val"]["X"])
    gate, tau = _gate_and_tau(params, data, plan, val_pred)
    out = _result(d, data, plan, models, gate, tau, split, val_pred)
    out["selection"] = {"heads": net_history(heads), "global": net_history(res)}
    out["n_train_net"] = int(len(keep))
    return out
