"""Q4's neural family: a shared trunk with SNR heads, its FiLM control and its residual mixture.

The family's networks are :class:`snrmoe_lib.models.neural.NeuralExperts` (hyper-parameters from
the ``q4.neural_*`` keys), trained in memory on the binned flux of at most ``q4.neural_train_rows``
of Q4's training rows (a seeded subsample, stream ``q4.neural_rows``), with T_eff and [M/H] as
auxiliary targets where :class:`~snrmoe_lib.analyses.q4_data.Q4Data` holds them, and early stopping
on the validation rows. One seed fits three networks:

* **residual**: a trunk with a global head, frozen, then K light correctors of its residual, one per
  expert bin. Its global head is the family's ``global`` row; ``residual_oracle_hard`` takes the
  corrector of the true bin, ``residual_mixture`` weights them by the deployed gate (as the residual
  mixture of the other families does).
* **heads**: a trunk with a global head and K bin heads trained together on the true (hard oracle)
  bins. ``oracle_hard`` is the head of the true bin; ``oracle_soft`` and ``deployed`` mix the heads
  with the soft oracle's and the deployed gate's probabilities, falling back to the family's global
  model below τ (chosen on validation), exactly as for every family
  (:func:`snrmoe_lib.analyses.q4_variants.matched`).
* **film** (the control): one head on a trunk FiLM-conditioned on the gate's leak-free quality
  features — the single-model answer to the mixture (``conditional``; the results also name it
  ``film_conditional_r2``).

Every prediction comes with the network's Gaussian σ (a mixture's σ is that of the Gaussian mixture;
a row that fell back takes the global σ). The σ is raw: :mod:`snrmoe_lib.analyses.q4_report`
calibrates it on the validation rows (σ-scaled split-conformal per SNR bin) and also reports how the
raw Gaussian intervals cover.
"""
from __future__ import annotations

import numpy as np

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.analyses.q3_models import DEPLOYED
from snrmoe_lib.analyses.q4_data import Q4Data
from snrmoe_lib.analyses.q4_variants import expert_plan, fit_gates, matched
from snrmoe_lib.models.mixtures import mix
from snrmoe_lib.models.neural import NeuralExperts

__all__ = ["neural_rows", "build", "net_history", "fit_nets", "fit_neural", "RESIDUAL_VARIANTS"]

#: The family's own residual-mixture rows (results names ``neural_{variant}_r2``).
RESIDUAL_VARIANTS = ("residual_mixture", "residual_oracle_hard")


def neural_rows(n: int, most: int, seed: int) -> np.ndarray:
    """Positions of the training rows the nets see: all ``n`` when at most ``most``, else a seeded sorted subsample."""
    if n <= int(most):
        return np.arange(n)
    return np.sort(_rng("q4.neural_rows", int(seed)).choice(n, int(most), replace=False))


def build(params, seed: int, variant: str = "global", n_bins: int = 1, n_quality: int = 0) -> NeuralExperts:
    """An unfitted network of the family (``q4.neural_*``; the CNN's channels are width/4 and width/2)."""
    q = params.q4
    w = int(q.neural_width)
    return NeuralExperts(variant=variant, n_bins=int(n_bins), arch=q.neural_arch, width=w,
                         channels=(max(w // 4, 1), max(w // 2, 1)), n_quality=int(n_quality),
                         aux_weight=float(q.neural_aux_weight), batch_size=int(q.neural_batch_size),
                         max_epochs=int(q.neural_epochs), patience=int(q.neural_patience), random_state=int(seed),
                         device="auto", n_threads=int(q.n_threads))


def _mix_sigma(W: np.ndarray, mu: np.ndarray, sd: np.ndarray, fell: np.ndarray | None, sd_global: np.ndarray):
    """σ of the Gaussian mixture Σ_k w_k N(μ_k, σ_k²); the global σ where the mixture fell back."""
    m = (W * mu).sum(axis=1)
    s = np.sqrt(np.maximum((W * (sd ** 2 + mu ** 2)).sum(axis=1) - m ** 2, 0.0))
    return s if fell is None else np.where(fell, sd_global, s)


def net_history(model: NeuralExperts) -> dict:
    """Per training stage: the epochs run and the best (validation) epoch."""
    out = {}
    for stage, h in model.history_.items():
        val = [e["val_loss"] for e in h if e.get("val_loss") is not None]
        out[stage] = {"epochs": len(h), "best_epoch": int(np.argmin(val)) if val else len(h) - 1}
    return out


def _inputs(data: Q4Data, keep: np.ndarray, plan, with_q: bool = False) -> dict:
    """Training rows ``keep``, the validation rows, their expert bins and auxiliary targets, as fit arguments."""
    def x(role, rows=slice(None)):
        return np.hstack([data.X[role][rows], data.q[role][rows]]) if with_q else data.X[role][rows]
    aux = data.aux or {}
    return {"X": x("train", keep), "y": data.y["train"][keep], "X_val": x("val"), "y_val": data.y["val"],
            "aux": aux["train"][keep] if aux else None, "aux_val": aux.get("val"),
            "bins": plan.route(data.bin["train"][keep]), "val_bins": plan.route(data.bin["val"])}


def fit_nets(params, data: Q4Data, plan) -> tuple[NeuralExperts, NeuralExperts, np.ndarray]:
    """The family's two networks for one seed: the residual net (its global head is the family's global
    model) and the trunk with K heads (the experts), on the same training rows (returned too)."""
    keep = neural_rows(len(data.y["train"]), params.q4.neural_train_rows, data.seed)
    a = _inputs(data, keep, plan)
    K = plan.n_experts
    return build(params, data.seed, "residual", K).fit(**a), build(params, data.seed, "heads", K).fit(**a), keep


def fit_neural(params, data: Q4Data, gates: dict | None = None, control: bool = True) -> dict:
    """Fit the neural family for one seed (see the module docstring).

    Returns the dict of :func:`snrmoe_lib.analyses.q4_families.fit_family` (``plan``, ``pred``, ``tau``,
    ``info``) plus ``sigma`` (role → variant → the network's raw Gaussian σ of each prediction).
    """
    plan = expert_plan(params, data.bin["train"])
    if gates is None:
        gates = fit_gates(params, data, plan)
    seed = data.seed
    res, heads, keep = fit_nets(params, data, plan)
    out = {r: {} for r in ("val", "test")}
    for r in out:
        G, sG = res.predict_global(data.X[r], return_std=True)
        out[r] = {"G": G, "sG": sG, "heads": heads.predict_all(data.X[r], return_std=True),
                  "res": res.predict_all(data.X[r], return_std=True), "e": plan.route(data.bin[r])}
    pred, tau = matched({r: o["heads"][0] for r, o in out.items()}, {r: o["G"] for r, o in out.items()},
                        {r: o["e"] for r, o in out.items()}, data.y["val"], gates, params)
    sigma = {}
    for r, o in out.items():
        rows, (Ph, sPh), (Pr, sPr) = np.arange(len(o["e"])), o["heads"], o["res"]
        pred[r]["residual_mixture"] = mix(gates["gate"][r], Pr, None, None)[0]
        pred[r]["residual_oracle_hard"] = Pr[rows, o["e"]]
        sigma[r] = {"global": o["sG"], "oracle_hard": sPh[rows, o["e"]], "residual_oracle_hard": sPr[rows, o["e"]],
                    "residual_mixture": _mix_sigma(gates["gate"][r], Pr, sPr, None, o["sG"])}
        for v, W in (("oracle_soft", gates["soft_oracle"][r]), (DEPLOYED, gates["gate"][r])):
            sigma[r][v] = _mix_sigma(W, Ph, sPh, mix(W, Ph, o["G"], tau)[1], o["sG"])
    info = {"selection": {"global": net_history(res)["trunk"], "residual": net_history(res), "heads": net_history(heads)},
            "tau": tau, "n_train": int(len(keep)), "aux": bool(data.aux)}
    if control:
        a = _inputs(data, keep, plan, with_q=True)
        del a["bins"], a["val_bins"]
        film = build(params, seed, "film", 1, n_quality=data.q["train"].shape[1]).fit(**a)
        for r in out:
            pred[r]["conditional"], sigma[r]["conditional"] = film.predict(
                np.hstack([data.X[r], data.q[r]]), return_std=True)
        info["selection"]["film"] = net_history(film)
    return {"plan": plan, "pred": pred, "sigma": sigma, "tau": tau, "info": info}
