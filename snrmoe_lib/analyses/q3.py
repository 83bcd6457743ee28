"""Q3 / Gate-3 and Gate-4: the deployable mixture of experts, the regression gate, the single-model controls.

:func:`run_deployable` fits everything for one noise seed without materialising N × pixels: the
experts and the global model come from :func:`snrmoe_lib.models.experts.fit_oracle_stream`
(streamed sufficient statistics), and the same sequential pass computes, through its per-chunk hook
(:class:`_PassCollector`), the compact quality features and the controls' Gram matrices. Gates train
on the compact arrays (n × quality features, n × K expert predictions) only. The seed tables come
from :mod:`snrmoe_lib.analyses.q3_summary` (re-exported here); :func:`results` checks the runs and
builds the notebook's verdicts, metrics and payload.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.data.noise import effective_sigma
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.evaluation.records import metric, verdict
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.whitening import ConditionalFeatures, WhitenedFlux
from snrmoe_lib.models.experts import OracleRun, fit_oracle_stream
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.mixtures import SpectraInput, hard_route, mix
from snrmoe_lib.models.ridge import GramStats, StreamingRidge
from snrmoe_lib.models.routing import SNRRouter
from snrmoe_lib.analyses.q1 import oracle_settings
from snrmoe_lib.analyses.q3_summary import (DEPLOYED, DeployRun, Summary, confusion, fallback_rate, format_table,
                                            gate_accuracy, model_names, per_bin, seed_bootstrap, summarize)
# Q2's choice of representation and its audit model
from snrmoe_lib.analyses.q2 import AuditWarning, chosen_representation
from snrmoe_lib.models.ridge import AlphaPathRidge

__all__ = [
    "DEPLOYED",
    "model_names",
    "gate_hyperparameters",
    "DeployRun",
    "resolve_representation",
    "run_deployable",
    "seed_bootstrap",
    "Summary",
    "summarize",
    "per_bin",
    "confusion",
    "gate_accuracy",
    "fallback_rate",
    "describe_run",
    "gate_diagnostics",
    "describe_gates",
    "describe_regression_gate",
    "leak_check",
    "check_leak",
    "format_table",
    "Q3CheckError",
    "check_consistency",
    "verdicts",
    "results",
]


class Q3CheckError(RuntimeError):
    """A Q3 result broke an invariant the verdicts rely on (or the gate's inputs leak log g)."""


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


def resolve_representation(params, results_root=None) -> tuple[str, str]:
    """The gate's input representation and where it came from.

    Q2's choice (its results JSON under ``results_root`` for this configuration; the notebook
    passes its own output folder, where the runner writes every notebook of a configuration) when
    ``gate.use_q2_choice`` and it exists; otherwise ``gate.representation``, with the reason.
    A Q2 notebook whose last run in that folder failed raises RuntimeError (its choice is not used).
    """
    fallback = params.gate.representation
    if not params.gate.use_q2_choice:
        return fallback, f"gate.representation = {fallback} (gate.use_q2_choice is false)"
    if results_root is None:
        return fallback, f"gate.representation = {fallback} (no results folder given to look for Q2's choice)"
    try:
        rep = chosen_representation(results_root, params.name)
    except FileNotFoundError:
        return fallback, (f"FALLBACK gate.representation = {fallback}: no Q2 results for config "
                          f"{params.name!r} under {results_root} (run notebooks/q2_error_leakage first)")
    except RuntimeError as exc:  # Q2 failed upstream: said, never papered over with an older choice
        raise RuntimeError(f"Q3 needs Q2's choice (gate.use_q2_choice is true) but {exc} "
                           f"(or set gate.use_q2_choice: false to use gate.representation = {fallback})") from None
    return rep, f"{rep}, chosen by the Q2 notebook (results under {results_root})"


def _subsample(n: int, most: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= most``, else a seeded sorted subsample of ``most`` of them."""
    if n <= most:
        return np.arange(n)
    return np.sort(_rng("gate.fit_subsample", int(seed)).choice(n, int(most), replace=False))


def _fit_rows(split, n: int, seed: int) -> np.ndarray:
    rng = _rng("gate.template_subsample", int(seed))
    n = min(int(n), len(split.train))
    return np.sort(rng.choice(split.train, n, replace=False))


class _PassCollector:
    """The per-chunk hook of the experts' pass: gate features and the two controls, from the same chunks.

    Every spectrum is read, made noisy and binned once for every model of Q3: the whitened flux and
    the conditional features (which reuse the pass's binned flux ``nc.X``) fill the controls' Grams
    for train and validation rows and are kept (float32) for test rows; the quality features of
    every row are kept for the gates.
    """

    def __init__(self, cond: ConditionalFeatures, white: WhitenedFlux, noise_level: float, D: int,
                 n_flux_components: int):
        self.cond, self.white, self.noise_level = cond, white, noise_level
        n_c = D + cond.n_quality_ * (1 + int(n_flux_components))
        self.stats = {"train": [GramStats(D), GramStats(n_c)], "val": [GramStats(D), GramStats(n_c)]}
        self.rows: dict = {r: [] for r in ("train", "val", "test")}
        self.quality: dict = {r: [] for r in ("train", "val", "test")}
        self.test_controls: list = [[], []]

    def __call__(self, role: str, nc) -> None:
        nl = self.noise_level
        sigma = nc.error if nl == 1 else effective_sigma(nc.error, nl)  # no copy at the usual level
        X = SpectraInput(nc.noisy, sigma)
        q = self.cond.compressor_.transform(X.quality)
        self.rows[role].append(nc.rows)
        self.quality[role].append(q)
        Z = (self.white.transform(X),
             self.cond.assemble(np.asarray(nc.X, dtype=np.float64), self.cond.standardise(q)))
        if role == "test":
            for kept, z in zip(self.test_controls, Z):
                kept.append(z.astype(np.float32))
        else:
            for st, z in zip(self.stats[role], Z):
                st.update(z, nc.y)

    @property
    def has_val(self) -> bool:
        return self.stats["val"][0].count_[0] >= 2

    def solve_controls(self, alphas: Sequence[float], solver: str) -> list[StreamingRidge]:
        """The two controls' Ridge models (α on validation when there is one); frees the Grams."""
        val = self.has_val
        controls = [StreamingRidge.from_stats(s, alpha=list(alphas), val_stats=v if val else None, solver=solver)
                    for s, v in zip(self.stats["train"], self.stats["val"])]
        self.stats = None
        return controls

    def by_role(self, role: str, info: pd.DataFrame) -> dict:
        """Row, quality features, true bin and target of a role, in the experts' row order."""
        rows = np.concatenate(self.rows[role])
        at = np.searchsorted(rows, info["row"].to_numpy())  # both in file order; this only checks it
        if not np.array_equal(rows[at], info["row"].to_numpy()):
            raise RuntimeError(f"{role}: the pass handed out different rows to the experts and the gate")
        return {"row": rows[at], "q": np.concatenate(self.quality[role])[at], "bin": info["snr_bin"].to_numpy(),
                "y": info["y"].to_numpy()}

    def control_predictions(self, controls: list[StreamingRidge], rows: np.ndarray) -> np.ndarray:
        """(n_test, 2) predictions of the controls for ``rows``; frees the kept test features."""
        ctrl = np.column_stack([np.concatenate([m.predict(z) for z in Z])
                                for m, Z in zip(controls, self.test_controls)])
        self.test_controls = None
        return ctrl[np.searchsorted(np.concatenate(self.rows["test"]), rows)]


def _templates(ds, split, params, representation: str, noise_level: float, seed: int):
    """The compressor's templates, the conditional control's flux PCA and the whitening scale, fitted
    on a seeded training subsample."""
    g, bp = params.gate, params.ridge.bin_pixels
    sub = SpectraInput.from_chunk(ds.read(_fit_rows(split, g.fit_n, g.seed), with_mask=False), noise_level, seed)
    cond = ConditionalFeatures(representation, g.n_flux_components, bp).fit(sub)
    white = WhitenedFlux(bp).fit(sub)
    return cond, white


def _classification_gates(tr: dict, te: dict, plan, cols: list[int], gi: int, g) -> tuple[dict, dict, dict, int]:
    """Logistic and MLP gates on the training spectra; soft (with and without fallback) and hard mixtures."""
    K = plan.n_experts
    e_tr = plan.route(tr["bin"])
    P_te, glob_te = te["pred"][:, cols], te["pred"][:, gi]
    pred, proba, fell = {}, {}, {}
    gate_rows = _subsample(len(tr["q"]), g.train_n, g.seed)
    for kind in ("logistic", "mlp"):
        gate = make_gate(kind, n_classes=K, **gate_hyperparameters(g, kind))
        gate.fit(tr["q"][gate_rows], check_labels(e_tr[gate_rows], K)[0])
        W = gate.predict_proba(te["q"])
        proba[kind] = W
        pred[f"{kind}_soft_fallback"], fell[f"{kind}_soft_fallback"] = mix(W, P_te, glob_te, g.tau)
        pred[f"{kind}_soft"], _ = mix(W, P_te)
        pred[f"{kind}_hard"] = hard_route(W, P_te)
    pred[DEPLOYED] = pred[f"{g.kind}_soft_fallback"]
    fell[DEPLOYED] = fell[f"{g.kind}_soft_fallback"]
    return pred, proba, fell, len(gate_rows)


def _regression_gate(reg_src: dict, te: dict, rg_cols: list[int], g) -> tuple[np.ndarray, np.ndarray, int]:
    """The regression gate, trained on ``reg_src`` (validation spectra, which the experts did not fit)."""
    rgate = make_gate("regression", **gate_hyperparameters(g, "regression"))
    reg_rows = _subsample(len(reg_src["q"]), g.train_n, g.seed + 1)
    rgate.fit(reg_src["q"][reg_rows], reg_src["y"][reg_rows], expert_pred=reg_src["pred"][reg_rows][:, rg_cols])
    return (rgate.predict(te["q"], expert_pred=te["pred"][:, rg_cols]), rgate.predict_proba(te["q"]),
            len(reg_rows))


def run_deployable(ds, split, params, seed: int, representation: str, noise_level: float | None = None,
                   chunk_size: int | None = None, progress: bool | str = False) -> DeployRun:
    """Fit and evaluate the deployable mixtures, the regression gate and the controls for one seed.

    Streaming: no array of N × pixels is formed. One sequential pass over the data
    (:func:`~snrmoe_lib.models.experts.fit_oracle_stream`) fills the experts' Grams and, through its
    per-chunk hook, the quality features and the two controls' Grams; the test spectra's features
    (flux, whitened flux, conditional) are kept as float32 until the models are solved, about
    ``n_test × 3 × D × 4`` bytes.

    Parameters
    ----------
    ds : PfsDataset
    split : Split
    params : Params
    seed : int
        Noise seed (noise keyed by (seed, row): every model sees the same noisy spectra).
    representation : str
        The quality representation of the gate (see :func:`resolve_representation`).
    progress : bool or str
        A progress bar over the pass.
    """
    p, g = params, params.gate
    nl = p.noise.noise_level if noise_level is None else float(noise_level)
    cs = p.data.chunk_size if chunk_size is None else int(chunk_size)
    sb = p.snr_bins
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    feats = FluxFeatures(p.ridge.bin_pixels)
    cond, white = _templates(ds, split, p, representation, nl, seed)
    hook = _PassCollector(cond, white, nl, feats.n_features(ds.n_pix), g.n_flux_components)
    settings = dataclasses.replace(oracle_settings(p, nl, seed), chunk_size=cs, predict_val=True)
    run = fit_oracle_stream(ds, split, {"snr": router}, settings, features=feats, on_chunk=hook, progress=progress)
    has_val = hook.has_val
    controls = hook.solve_controls(p.ridge.alphas, p.ridge.solver)
    tr = hook.by_role("train", run.train_info)
    te = hook.by_role("test", run.test_info) | {"pred": run.test_pred}
    te["ctrl"] = hook.control_predictions(controls, te["row"])
    va = hook.by_role("val", run.val_info) | {"pred": run.val_pred} if run.val_pred is not None else None
    return _assemble(ds, split, p, run, tr, te, va, controls, has_val, cond, router, representation, nl, seed, cs)


def _assemble(ds, split, p, run: OracleRun, tr: dict, te: dict, va: dict | None, controls: list, has_val: bool,
              cond: ConditionalFeatures, router: SNRRouter, representation: str, nl: float, seed: int,
              cs: int) -> DeployRun:
    """Every model's test predictions from the streamed run, the gates and the controls."""
    g = p.gate
    fam = run.families["snr"]
    plan, cols = fam.plan, fam.columns
    gi = run.models.index("global")
    e_te = plan.route(te["bin"])
    P_te, glob_te = te["pred"][:, cols], te["pred"][:, gi]
    pred = {"global": glob_te, "oracle": P_te[np.arange(len(P_te)), e_te],
            "whitening": te["ctrl"][:, 0], "conditional": te["ctrl"][:, 1]}
    gate_pred, proba, fell, n_gate = _classification_gates(tr, te, plan, cols, gi, g)
    pred |= gate_pred
    rg_cols = cols + ([gi] if g.regression_include_global else [])
    reg_src = va if has_val else _train_sample(ds, split, run, tr, g, nl, seed, cs)
    pred["regression_gate"], proba["regression"], n_reg = _regression_gate(reg_src, te, rg_cols, g)
    alphas = p.ridge.alphas
    info = {"representation": representation, "n_quality_features": int(cond.n_quality_),
            "expert_labels": plan.expert_labels, "bin_labels": list(router.labels),
            "alpha_whitening": controls[0].alpha_, "alpha_conditional": controls[1].alpha_,
            "alpha_at_edge_controls": [bool(c.alpha_ in (min(alphas), max(alphas))) for c in controls],
            "alpha_experts": dict(zip(run.models.names, run.models.alpha.tolist())),
            "regression_gate_trained_on": "val" if has_val else "a train subsample (no validation split: optimistic)",
            "regression_gate_components": [run.models.names[c] for c in rg_cols],
            "gate_train_spectra": int(n_gate), "regression_gate_train_spectra": int(n_reg)}
    feats_out = {"train": tr["q"], "test": te["q"]} | ({"val": va["q"]} if va is not None else {})
    targets = {"train": tr["y"], "test": te["y"]} | ({"val": va["y"]} if va is not None else {})
    return DeployRun(int(seed), te["y"], te["row"], te["bin"], e_te, pred, proba, fell, feats_out, targets, plan, info)


def _train_sample(ds, split, run, tr: dict, g, noise_level: float, seed: int, chunk_size: int) -> dict:
    """Gate features, targets and expert predictions of a seeded training subsample (no validation split)."""
    rows = _fit_rows(split, max(g.fit_n, 2), g.seed + 1)
    pred = []
    for _, nc in split_pass(ds, {"train": rows}, noise_level=noise_level, seed=seed, features=run.features,
                            target=None, chunk_size=chunk_size, workers=0):
        pred.append(run.models.predict(np.asarray(nc.X, dtype=np.float32)))
    at = np.searchsorted(tr["row"], rows)
    return {"q": tr["q"][at], "y": tr["y"][at], "pred": np.concatenate(pred)}


def leak_check(run: DeployRun, alphas: Sequence[float], n_boot: int = 200, seed: int = 0) -> dict:
    """Do the gate's inputs alone predict log g? The Gate-1 audit model applied to them.

    A Ridge α path (:class:`~snrmoe_lib.models.ridge.AlphaPathRidge`, standardised features) fitted on the
    training features, α chosen on validation, R² on test with a bootstrap interval — the same
    method the Q2 audit uses. Also a non-linear probe (gradient-boosted trees), since an MLP gate
    could use non-linear structure a linear audit cannot see.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    F, Y = run.features, run.targets
    val = "val" if "val" in F else "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AuditWarning)
        m = AlphaPathRidge(alphas=list(alphas)).fit(F["train"], Y["train"]).select(F[val], Y[val])
    pl = m.predict(F["test"])
    # one OpenMP thread: on shared cores the trees' thread team otherwise spins for minutes
    with one_blas_thread(user_api=None):
        ph = HistGradientBoostingRegressor(max_iter=100, random_state=seed).fit(F["train"], Y["train"]).predict(F["test"])
    return {"r2_linear": r2(Y["test"], pl), "interval_linear": bootstrap_interval(Y["test"], pl, n_boot=n_boot, seed=seed),
            "r2_nonlinear": r2(Y["test"], ph), "interval_nonlinear": bootstrap_interval(Y["test"], ph, n_boot=n_boot, seed=seed),
            "n_features": int(F["train"].shape[1]), "alpha": float(m.alpha_[0])}




def check_leak(leak: dict, threshold: float, representation: str) -> str:
    """The leak check as a line of text; :class:`Q3CheckError` when a linear model on the gate's
    inputs predicts log g at or above the Gate-1 threshold."""
    line = (f"log g from the gate inputs ({representation}, {leak['n_features']} features): linear R² = "
            f"{leak['r2_linear']:.4f} {np.round(leak['interval_linear'], 4).tolist()}, non-linear R² = "
            f"{leak['r2_nonlinear']:.4f} {np.round(leak['interval_nonlinear'], 4).tolist()}; "
            f"Gate-1 threshold {threshold}")
    if not leak["r2_linear"] < threshold:
        raise Q3CheckError(f"LEAK: the gate's inputs ({representation}) predict log g with R² = "
                           f"{leak['r2_linear']:.3f} >= {threshold}")
    if leak["r2_nonlinear"] >= threshold:
        line += "\nWARNING: a non-linear model extracts log g information from the gate inputs above the threshold"
    return line


def describe_run(run: DeployRun) -> str:
    """One line about a seed's run: its experts and the controls' α."""
    return (f"experts {run.info['expert_labels']}; control α (whitening, conditional) = "
            f"{run.info['alpha_whitening']:g}, {run.info['alpha_conditional']:g}")


def gate_diagnostics(runs: Sequence[DeployRun], kind: str, n_boot: int, seed: int) -> dict:
    """Confusion matrix of the deployed gate, accuracy and largest probability of both classification
    gates (all seeds), fallback rate of the deployed mixture."""
    return {"confusion": confusion(runs, kind),
            "accuracy": {k: gate_accuracy(runs, k, n_boot, seed) for k in ("logistic", "mlp")},
            "fallback_rate": fallback_rate(runs),
            "max_proba": {k: np.concatenate([r.proba[k].max(axis=1) for r in runs]) for k in ("logistic", "mlp")}}


def describe_gates(diagnostics: dict, tau: float) -> str:
    """Accuracy of each classification gate and the deployed mixture's fallback rate, as text."""
    lines = [f"{k} gate accuracy: {v:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]" for k, (v, iv) in diagnostics["accuracy"].items()]
    lines.append(f"fallback rate of the deployed mixture (τ = {tau}): {100 * diagnostics['fallback_rate']:.1f} %")
    return "\n".join(lines)


def describe_regression_gate(summary: Summary, run: DeployRun, kind: str) -> str:
    """R²(regression gate) − R²(deployed mixture) with its paired interval, and what the gate learned from."""
    d, iv = summary.difference("regression_gate", DEPLOYED)
    return (f"R²(regression gate) − R²(deployed {kind} gate) = {d:+.4f} [{iv[0]:+.4f}, {iv[1]:+.4f}]; "
            f"trained on: {run.info['regression_gate_trained_on']}; mixes {run.info['regression_gate_components']}")


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


def verdicts(summary: Summary, leak: dict, thresholds) -> list[dict]:
    """Gate-3 (ρ of the deployed mixture), Gate-4 (deployed against the best single-model control)
    and the leak check as a recorded verdict."""
    t = summary.table
    best_single = max(("whitening", "conditional"), key=lambda m: t.loc[m, "r2"])
    d4, d4_iv = summary.difference(DEPLOYED, best_single)
    return [
        verdict("Gate-3", "Q3", "rho_deployed", t.loc[DEPLOYED, "rho"], ">=", thresholds.gate3_rho_min,
                (t.loc[DEPLOYED, "rho_lo"], t.loc[DEPLOYED, "rho_hi"]),
                note="undefined when the oracle gap's interval reaches zero"),
        verdict("Gate-4", "Q3", f"deployed_minus_{best_single}_r2", d4, "<=", thresholds.gate4_margin, d4_iv,
                note="PASS = a single model is within the margin: the simpler route wins"),
        verdict("leak-free", "Q3", "gate_inputs_logg_r2", leak["r2_linear"], "<", thresholds.gate1_logg_r2_max,
                leak["interval_linear"]),
    ]


def results(params, runs: Sequence[DeployRun], summary: Summary, diagnostics: dict, leak: dict, per_bin_table,
            representation: str, representation_source: str, test_rows) -> dict:
    """Checked verdicts, metrics and payload of the notebook: ``run.finish(**results(...))``.

    Raises
    ------
    Q3CheckError
        When an invariant fails (:func:`check_consistency`) or the leak verdict does not pass.
    """
    check_consistency(runs, summary, diagnostics, test_rows, len(params.seeds))
    vs = verdicts(summary, leak, params.thresholds)
    if vs[2]["verdict"] != "PASS":
        raise Q3CheckError("the gate inputs leak log g")
    t = summary.table
    d_reg, d_reg_iv = summary.difference("regression_gate", DEPLOYED)
    metrics = {f"{m}_r2": metric(r.r2, (r.r2_lo, r.r2_hi), seed_std=r.r2_seed_std) for m, r in t.iterrows()}
    metrics |= {"rho_deployed": metric(t.loc[DEPLOYED, "rho"], (t.loc[DEPLOYED, "rho_lo"], t.loc[DEPLOYED, "rho_hi"])),
                "oracle_gap": metric(summary.oracle_gap, summary.oracle_gap_interval),
                "fallback_rate": metric(diagnostics["fallback_rate"]),
                "gate_accuracy": metric(*diagnostics["accuracy"][params.gate.kind]),
                "regression_minus_deployed_r2": metric(d_reg, d_reg_iv),
                "leak_check_r2": metric(leak["r2_linear"], leak["interval_linear"])}
    extra = {"representation": representation, "representation_source": representation_source,
             "table": t.reset_index().to_dict(orient="records"), "per_bin": per_bin_table.to_dict(orient="records"),
             "confusion": diagnostics["confusion"].to_dict(orient="split"), "leak_check": leak,
             "runs": [r.info for r in runs]}
    return {"metrics": metrics, "verdicts": vs, "extra": extra}
