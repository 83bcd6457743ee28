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
import time
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.data.noise import add_noise_estimated, effective_sigma, fit_variance_model
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.evaluation.records import metric, verdict
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.whitening import InteractedFeatures, WhitenedFlux
from snrmoe_lib.models.experts import OracleRun, fit_oracle_stream
from snrmoe_lib.models.mixtures import SpectraInput
from snrmoe_lib.models.oracle_stream import nested_increments
from snrmoe_lib.models.ridge import GramStats, StreamingRidge
from snrmoe_lib.models.routing import SNRRouter
from snrmoe_lib.analyses.q1 import curve_sizes, oracle_settings
from snrmoe_lib.analyses.q1_waterfall import carve_holdout
from snrmoe_lib.analyses.error_modes import ASSUMPTION, error_modes, variance_model
from snrmoe_lib.analyses.q3_models import fit_gates, gate_hyperparameters
from snrmoe_lib.analyses.q3_report import (Q3CheckError, check_consistency, curve_points, curve_style, curve_table,
                                           gate4_control, mode_metrics, other_mode, results, verdicts, waterfall_table)
from snrmoe_lib.analyses.q3_summary import (DEPLOYED, DeployRun, Summary, confusion, fallback_rate, format_table,
                                            gate_accuracy, model_names, oracle_rhos, per_bin, seed_bootstrap,
                                            summarize, tau_table)
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
    "run_deployable_modes",
    "seed_bootstrap",
    "Summary",
    "summarize",
    "per_bin",
    "confusion",
    "gate_accuracy",
    "fallback_rate",
    "describe_run",
    "run_seeds",
    "BIN_MODELS",
    "learning_curve",
    "mode_reports",
    "results_of_modes",
    "describe_mode_leaks",
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
    "curve_table",
    "curve_points",
    "curve_style",
    "gate4_control",
    "waterfall_table",
    "oracle_rhos",
    "tau_table",
    "error_modes",
    "variance_model",
    "ASSUMPTION",
    "mode_metrics",
    "other_mode",
    "mode_summary",
    "modes_table",
    "prediction_columns",
]


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


def _fit_rows(split, n: int, seed: int) -> np.ndarray:
    rng = _rng("gate.template_subsample", int(seed))
    n = min(int(n), len(split.train))
    return np.sort(rng.choice(split.train, n, replace=False))


class _PassCollector:
    """The per-chunk hook of the experts' pass: gate features and the two controls, from the same chunks.

    Every spectrum is read, made noisy and binned once for every model of Q3: the whitened flux and
    the interacted features (which reuse the pass's binned flux ``nc.X``) fill the controls' Grams
    (training rows: one group per learning-curve size increment; validation rows choose α) and are
    kept (float32) for the validation and test rows; the quality features of every row are kept for
    the gates (held-out rows: only those). ``mode`` 'estimated': every feature of σ is made from the
    pass's σ̂ (``nc.sigma_hat``) instead of the expected error.
    """

    def __init__(self, inter: InteractedFeatures, white: WhitenedFlux, noise_level: float, D: int,
                 train_rows: np.ndarray, increments: np.ndarray | None, n_inc: int, mode: str = "clean"):
        self.inter, self.white, self.noise_level, self.mode = inter, white, noise_level, mode
        self.train_rows, self.increments, self.n_inc = np.asarray(train_rows), increments, n_inc
        n_i = 2 * D + inter.n_quality_ + 1
        self.stats = {"train": [GramStats(D, n_inc), GramStats(n_i, n_inc)], "val": [GramStats(D), GramStats(n_i)]}
        self.rows: dict = {r: [] for r in ("train", "val", "test", "holdout")}
        self.quality: dict = {r: [] for r in self.rows}
        self.kept: dict = {"val": [[], []], "test": [[], []]}

    def __call__(self, role: str, nc) -> None:
        nl = self.noise_level
        if self.mode == "estimated":
            sigma = nc.sigma_hat
            if sigma is None:
                raise ValueError("the estimated-error collector needs a pass with error_mode='estimated'")
        else:
            sigma = nc.error if nl == 1 else effective_sigma(nc.error, nl)  # no copy at the usual level
        X = SpectraInput(nc.noisy, sigma)
        q = self.inter.compressor_.transform(X.quality)
        self.rows[role].append(nc.rows)
        self.quality[role].append(q)
        if role == "holdout":
            return
        Z = (self.white.transform(X), self.inter.assemble(np.asarray(nc.X, dtype=np.float64), q, sigma))
        if role in self.kept:
            for kept, z in zip(self.kept[role], Z):
                kept.append(z.astype(np.float32))
        if role in self.stats:
            groups = None
            if role == "train" and self.increments is not None:
                groups = self.increments[np.searchsorted(self.train_rows, nc.rows)]
            for st, z in zip(self.stats[role], Z):
                st.update(z, nc.y, groups=groups)

    def solve_controls(self, alphas: Sequence[float], solver: str) -> list[list[StreamingRidge]]:
        """The two controls' Ridge models at every training size (α on validation); frees the Grams.

        The full training set chooses α from the whole grid; a smaller size from the full fit's α and its
        two grid neighbours (the interacted Ridge is 2·D wide: each α of its path costs a factorisation).
        """
        grid = sorted(alphas)
        out = []
        for k in reversed(range(self.n_inc)):
            keep = np.where(np.arange(self.n_inc) <= k, 0, -1)
            near = [grid[max(i - 1, 0):i + 2] for i in (grid.index(m.alpha_) for m in out[0])] if out else [grid] * 2
            out.insert(0, [StreamingRidge.from_stats(s.collapse(keep, 1) if self.n_inc > 1 else s, alpha=list(a),
                                                     val_stats=v, solver=solver)
                           for s, v, a in zip(self.stats["train"], self.stats["val"], near)])
        self.stats = None
        return out

    def by_role(self, role: str, info: pd.DataFrame) -> dict:
        """Row, quality features, true SNR and bin, and target of a role, in the experts' row order."""
        rows = np.concatenate(self.rows[role])
        at = np.searchsorted(rows, info["row"].to_numpy())  # both in file order; this only checks it
        if not np.array_equal(rows[at], info["row"].to_numpy()):
            raise RuntimeError(f"{role}: the pass handed out different rows to the experts and the gate")
        return {"row": rows[at], "q": np.concatenate(self.quality[role])[at], "bin": info["snr_bin"].to_numpy(),
                "snr": info["snr"].to_numpy(), "y": info["y"].to_numpy()}

    def control_predictions(self, controls: list[StreamingRidge], role: str, rows: np.ndarray) -> dict:
        """The controls' predictions for a kept role's ``rows``: {'whitening': …, 'interacted': …}."""
        at = np.searchsorted(np.concatenate(self.rows[role]), rows)
        return {name: np.concatenate([m.predict(z) for z in Z])[at]
                for name, m, Z in zip(("whitening", "interacted"), controls, self.kept[role])}


def _templates(ds, split, params, representation: str, noise_level: float, seed: int, vm=None):
    """The compressor's templates, the interacted control's standardisation and the whitening scale,
    fitted on a seeded training subsample (with ``vm``, a VarianceModel: on its σ̂, the estimated mode)."""
    g, bp = params.gate, params.ridge.bin_pixels
    ch = ds.read(_fit_rows(split, g.fit_n, g.seed), with_mask=False)
    if vm is None:
        sub = SpectraInput.from_chunk(ch, noise_level, seed)
    else:
        sub = SpectraInput(*add_noise_estimated(ch.flux, ch.error, noise_level, ch.rows, seed,
                                                vm.gain(ch.flux, ch.error)))
    return InteractedFeatures(representation, bp).fit(sub), WhitenedFlux(bp).fit(sub)


class _Fanout:
    """One pass, several collectors (one per error mode)."""

    def __init__(self, hooks):
        self.hooks = list(hooks)

    def __call__(self, role: str, nc) -> None:
        for h in self.hooks:
            h(role, nc)


def run_deployable(ds, split, params, seed: int, representation: str, noise_level: float | None = None,
                   chunk_size: int | None = None, progress: bool | str = False, curve: bool = False,
                   variance_model=None) -> DeployRun:
    """Fit and evaluate the deployable mixtures, the matched oracles, the controls for one seed, in the
    configuration's primary error mode (:func:`run_deployable_modes` with that mode only)."""
    mode = error_modes(params)[0]
    return run_deployable_modes(ds, split, params, seed, representation, noise_level, chunk_size, progress, curve,
                                modes=(mode,), variance_model=variance_model)[mode]


def run_deployable_modes(ds, split, params, seed: int, representation: str, noise_level: float | None = None,
                         chunk_size: int | None = None, progress: bool | str = False, curve: bool = False,
                         modes: Sequence[str] | None = None, variance_model=None) -> dict[str, DeployRun]:
    """Fit and evaluate the deployable mixtures, the matched oracles, the controls for one seed, per error mode.

    Streaming: no array of N × pixels is formed. One sequential pass over the data
    (:func:`~snrmoe_lib.models.experts.fit_oracle_stream`) fills the experts' Grams (per learning-curve
    size increment with ``curve``) and, through its per-chunk hook, the quality features and the
    controls' Grams of every error mode; the validation and test spectra's features are kept as float32
    until the models are solved. ``controls.holdout_fraction`` of the training rows (seed
    ``controls.holdout_seed + seed``: every noise seed its own, recorded) are held out: the regression
    gates and the fixed blends learn on them. τ and the Gate-4 control are
    chosen on the validation rows.

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
    curve : bool
        Also fit everything at the nested training sizes ``controls.curve_sizes`` (the learning curve),
        in the first mode only.
    modes : sequence of {'clean', 'estimated'}
        Default: :func:`~snrmoe_lib.analyses.error_modes.error_modes` of the configuration. The noisy
        flux is one draw for all modes (one pass): the experts are shared; the quality features, the
        gates, whitening and the interacted control are made from σ (clean) or σ̂ (estimated).
    variance_model : VarianceModel, optional
        The estimated mode's σ² model (default: fitted on the training rows, ``noise.variance_fit_n``).
    """
    p, g, c = params, params.gate, params.controls
    if not len(split.val):
        raise ValueError("Q3 chooses τ and the Gate-4 control on validation rows: the split has none")
    modes = tuple(dict.fromkeys(modes or error_modes(p)))
    if not modes or not set(modes) <= {"clean", "estimated"}:
        raise ValueError(f"error modes must be 'clean' and/or 'estimated', got {modes}")
    nl = p.noise.noise_level if noise_level is None else float(noise_level)
    cs = p.data.chunk_size if chunk_size is None else int(chunk_size)
    sb = p.snr_bins
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    feats = FluxFeatures(p.ridge.bin_pixels)
    fit, holdout, record = carve_holdout(split, c.holdout_fraction, c.holdout_seed + int(seed))  # per seed: its own rows
    vm = variance_model
    if "estimated" in modes and vm is None:
        vm = fit_variance_model(ds, fit.train, n=p.noise.variance_fit_n)
    sizes = curve_sizes(p, len(fit.train)) if curve else []
    inc = nested_increments(fit.train, sizes, p.split.seed) if sizes else None
    hooks = {}
    for i, m in enumerate(modes):
        inter, white = _templates(ds, fit, p, representation, nl, seed, vm if m == "estimated" else None)
        hooks[m] = _PassCollector(inter, white, nl, feats.n_features(ds.n_pix), fit.train, inc if i == 0 else None,
                                  len(sizes) + 1 if i == 0 else 1, mode=m)
    settings = dataclasses.replace(oracle_settings(p, nl, seed, True, sizes), chunk_size=cs,
                                   error_mode="estimated" if "estimated" in modes else "clean", variance_model=vm)
    run = fit_oracle_stream(ds, fit, {"snr": router}, settings, features=feats, holdout=holdout,
                            on_chunk=_Fanout(hooks.values()), progress=progress)
    infos = {"train": run.train_info, "val": run.val_info, "test": run.test_info, "holdout": run.holdout_info}
    out = {}
    for i, (m, hook) in enumerate(hooks.items()):
        out[m] = _mode_run(run, hook, infos, fit, inc if i == 0 else None, dict(record), representation, router, p,
                           seed)
        out[m].info["error_mode"] = m
        if m == "estimated":
            out[m].info["variance_model_rel_rms"] = float(vm.rel_rms_)
    return out


def _mode_run(run: OracleRun, hook: _PassCollector, infos: dict, fit, inc, record: dict, representation: str,
              router: SNRRouter, p, seed: int) -> DeployRun:
    """One error mode's gates and controls on the shared experts (the learning curve when ``inc`` is given)."""
    g = p.gate
    data = {r: hook.by_role(r, i) for r, i in infos.items()}
    models = hook.solve_controls(p.ridge.alphas, p.ridge.solver)
    ctrl = [{r: hook.control_predictions(m, r, data[r]["row"]) for r in ("test", "val")} for m in models]
    record["alpha_controls"] = {n: float(m.alpha_) for n, m in zip(("whitening", "interacted"), models[-1])}
    hook.kept = None  # the controls' kept features are no longer needed
    taus = sorted(set(p.controls.tau_grid) | {g.tau})
    curve = run.curve if inc is not None else run.curve[-1:]
    step = None if inc is None else inc[np.searchsorted(fit.train, data["train"]["row"])]
    last = len(curve) - 1
    points = [fit_gates(pt, data, infos, np.ones(len(data["train"]["y"]), bool) if step is None else step <= k, g,
                        taus, ctrl[k], ("logistic", "mlp") if k == last else (g.kind,), k == last)
              for k, pt in enumerate(curve)]
    return _assemble(run, curve, data, points, representation, hook.inter, router, record, p, seed)


def _assemble(run: OracleRun, curve_pts: list, data: dict, points: list[dict], representation: str,
              inter: InteractedFeatures, router: SNRRouter, record: dict, p, seed: int) -> DeployRun:
    """The seed's :class:`DeployRun` from the full fit (the last point) and the learning curve."""
    full, te = points[-1], data["test"]
    plan = run.families["snr"].plan
    info = {"representation": representation, "n_quality_features": int(inter.n_quality_),
            "alpha_whitening": record["alpha_controls"]["whitening"],
            "alpha_interacted": record["alpha_controls"]["interacted"],
            "expert_labels": plan.expert_labels, "bin_labels": list(router.labels),
            "alpha_experts": dict(zip(run.models.names, run.models.alpha.tolist())),
            "tau": full["tau"], "tau_sweep": {k: v.to_dict(orient="records") for k, v in full["tau_sweep"].items()},
            "gate4": full["gate4"], "blend_weights": full["blend_weights"], "holdout": record,
            "regression_gate_trained_on": f"held-out training rows ({record['n_holdout']}, no expert saw them)",
            "regression_gate_components": full["regression_components"],
            "gate_train_spectra": full["n_gate"], "regression_gate_train_spectra": full["n_regression"]}
    curve = [{"n_train": int(pt.n_train), "pred": r["pred"]["test"], "val_r2": r["gate4"]["val_r2"],
              "tau": r["tau"]} for pt, r in zip(curve_pts, points)]
    feats_out = {r: data[r]["q"] for r in ("train", "val", "test")}
    targets = {r: data[r]["y"] for r in ("train", "val", "test")}
    return DeployRun(int(seed), te["y"], te["row"], te["bin"], plan.route(te["bin"]), full["pred"]["test"],
                     full["proba"], full["fell"], feats_out, targets, plan, info, curve)


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




def check_leak(leak: dict, threshold: float, representation: str, strict: bool = True) -> str:
    """The leak check as a line of text; :class:`Q3CheckError` when a linear model on the gate's
    inputs predicts log g at or above the Gate-1 threshold (with ``strict``; else a LEAK line)."""
    line = (f"log g from the gate inputs ({representation}, {leak['n_features']} features): linear R² = "
            f"{leak['r2_linear']:.4f} {np.round(leak['interval_linear'], 4).tolist()}, non-linear R² = "
            f"{leak['r2_nonlinear']:.4f} {np.round(leak['interval_nonlinear'], 4).tolist()}; "
            f"Gate-1 threshold {threshold}")
    if not leak["r2_linear"] < threshold:
        if not strict:
            return "LEAK: " + line
        raise Q3CheckError(f"LEAK: the gate's inputs ({representation}) predict log g with R² = "
                           f"{leak['r2_linear']:.3f} >= {threshold}")
    if leak["r2_nonlinear"] >= threshold:
        line += "\nWARNING: a non-linear model extracts log g information from the gate inputs above the threshold"
    return line


def describe_run(run: DeployRun) -> str:
    """One line about a seed's run: its experts, the controls' α, the chosen τ and Gate-4 control."""
    return (f"experts {run.info['expert_labels']}; control α (whitening, interacted) = "
            f"{run.info['alpha_whitening']:g}, {run.info['alpha_interacted']:g}; τ = {run.info['tau']:g} and "
            f"Gate-4 control {run.info['gate4']['control']} (chosen on validation)")


def run_seeds(ds, split, params, results_root=None, curve: bool = True) -> tuple[dict, str, str]:
    """The gate's input representation, then :func:`run_deployable_modes` for every noise seed.

    Prints the representation's source, a line per seed and one on the error modes (with how well the
    estimated mode's variance model σ² = background + gain · flux, fitted on training clean errors,
    reproduces the clean σ²).

    Parameters
    ----------
    ds, split, params
        The dataset, its split and the validated parameters.
    results_root : str or Path, optional
        Where to look for Q2's choice of representation (:func:`resolve_representation`).
    curve : bool
        Fit the learning-curve sizes too.

    Returns
    -------
    by_mode : dict
        Error mode → list of :class:`DeployRun`, one per seed (the primary mode first).
    representation, representation_source : str
        As :func:`resolve_representation`.
    """
    representation, source = resolve_representation(params, results_root)
    print(f"gate input representation: {source}")
    modes = error_modes(params)
    vm = variance_model(ds, split, params)
    by_mode, t0 = {m: [] for m in modes}, time.time()
    for s in params.seeds:
        for m, r in run_deployable_modes(ds, split, params, s, representation, curve=curve, variance_model=vm).items():
            by_mode[m].append(r)
        print(f"seed {s}: done after {time.time() - t0:.0f} s; {describe_run(by_mode[modes[0]][-1])}")
    print(f"error modes {modes}" + (f"; σ² model reproduces the clean σ² to {vm.rel_rms_:.1%} rms" if vm else ""))
    return by_mode, representation, source


#: Models of the per-bin table and figure.
BIN_MODELS = ("global", "oracle", "oracle_soft", DEPLOYED, "regression_gate", "whitening", "interacted")


def learning_curve(runs: Sequence[DeployRun], n_boot: int, seed: int) -> tuple[list[dict], pd.DataFrame]:
    """Gate-3 and Gate-4 at the nested training sizes: :func:`curve_table` and its :func:`curve_points`."""
    curve = curve_table(runs, n_boot, seed)
    return curve, curve_points(curve)


def mode_reports(by_mode: dict, params, n_boot: int, seed: int, **primary) -> dict:
    """Error mode → report (``summary``, ``diagnostics``, ``falls``, ``leak``): ``primary`` for the first mode
    (what the notebook's cells computed), :func:`mode_summary` for the others."""
    modes = list(by_mode)
    return {modes[0]: primary} | {m: mode_summary(by_mode[m], params, n_boot, seed) for m in modes[1:]}


def results_of_modes(params, by_mode: dict, reports: dict, per_bin_table, representation: str,
                     representation_source: str, test_rows, curve: list | None = None) -> dict:
    """:func:`results` of the primary error mode with :func:`other_mode` of every other one beside it.

    ``reports``: :func:`mode_reports`; the other arguments as for :func:`results`.
    """
    modes = list(by_mode)
    first = reports[modes[0]]
    others = {m: other_mode(params, m, by_mode[m], **reports[m]) for m in modes[1:]}
    return results(params, by_mode[modes[0]], first["summary"], first["diagnostics"], first["leak"], per_bin_table,
                   representation, representation_source, test_rows, first["falls"], curve, others)


def describe_mode_leaks(reports: dict, threshold: float, representation: str) -> str:
    """The leak check of every error mode after the first, one line each (a leak is said, not raised)."""
    return "\n".join(f"{m} errors: {check_leak(r['leak'], threshold, representation, strict=False)}"
                     for m, r in list(reports.items())[1:])


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


def mode_summary(runs: Sequence[DeployRun], params, n_boot: int, seed: int) -> dict:
    """One error mode's table, gate diagnostics, waterfall and leak check (what the primary mode's cells compute)."""
    return {"summary": summarize(runs, n_boot, seed), "diagnostics": gate_diagnostics(runs, params.gate.kind, n_boot, seed),
            "falls": waterfall_table(runs, n_boot, seed), "leak": leak_check(runs[0], params.quality.audit_alphas, n_boot,
                                                                              seed)}


#: Rows of :func:`modes_table`: the oracles, the non-routing controls, the deployable models.
MODES_ROWS = ("global", "oracle", "oracle_soft", "oracle_regression", "snr_alpha", "blend_fixed", "bagging_random",
              DEPLOYED, "regression_gate", "whitening", "interacted", "snr_alpha_gated")


def modes_table(reports: dict, kind: str, digits: int = 3) -> pd.DataFrame:
    """R² [95 %] of every model, ρ against the best oracle and the gate's accuracy, one column per error mode.

    ``reports``: mode → dict with ``summary`` and ``diagnostics`` (:func:`mode_summary`).
    """
    f = lambda v, iv: f"{v:.{digits}f} [{iv[0]:.{digits}f}, {iv[1]:.{digits}f}]" if np.isfinite(v) else "undefined"  # noqa: E731
    cols = {}
    for mode, rep in reports.items():
        m = mode_metrics(rep["summary"], rep["diagnostics"], kind)
        col = {name: f(m[f"{name}_r2"]["value"], m[f"{name}_r2"]["interval"]) for name in MODES_ROWS
               if f"{name}_r2" in m}
        for key, label in (("oracle_best_r2", "oracle_best"), ("rho_vs_best_oracle", "ρ vs best oracle"),
                           ("gate_accuracy", f"{kind} gate accuracy")):
            col[label] = f(m[key]["value"], m[key]["interval"])
        cols[f"{mode} errors"] = col
    return pd.DataFrame(cols)


def prediction_columns(by_mode: dict, primary: str) -> dict:
    """Model name → (n_seeds, n_test) test predictions of every mode (``<model>_<mode>`` beside the primary's);
    the hard oracle is named ``oracle_hard``."""
    out = {}
    for mode, runs in by_mode.items():
        sfx = "" if mode == primary else f"_{mode}"
        for name in runs[0].pred:
            out[("oracle_hard" if name == "oracle" else name) + sfx] = np.array([r.pred[name] for r in runs])
    return out
