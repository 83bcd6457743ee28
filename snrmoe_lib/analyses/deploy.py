"""Fit the deployed pipeline of a configuration, score it on the frozen test, and describe it for saving.

:func:`fit_deployed` fits exactly the Q3 deployed mixture of one noise seed (the first of
``seeds``): the same held-out carve, the same streamed Ridge experts and global model
(:func:`~snrmoe_lib.models.experts.fit_oracle_stream`, one pass), the quality compressor on the same
seeded training subsample, the configured gate on the same rows, τ chosen on validation from the
same grid. Its frozen-test predictions are therefore the Q3 notebook's deployed mixture for that
seed. Added for deployment: the interval calibration (split-conformal per observed-SNR bin on the
validation rows), the ranges seen in training, the frozen-test metrics per SNR bin (R² and interval
coverage) and the leak-check verdict (Q2's results when present, plus a linear probe of log g
from the gate's own inputs).

``family='boosted'`` or ``'neural'`` fits the Q4 notebook's boosted trees or networks instead
(:mod:`snrmoe_lib.analyses.deploy_rows`: Q4's rows and hyper-parameters; in clean error mode the
frozen-test predictions are Q4's ``boosted_deployed`` / ``neural_deployed``). ``noise.error_mode='estimated'`` makes the gate's
quality features, the compressor and the observed SNR read σ̂ (the error estimated from the same
noise draw through a :class:`~snrmoe_lib.data.noise.VarianceModel` fitted on ``noise.variance_fit_n``
training rows and saved with the model); the experts read the flux only and are the clean mode's.
The σ̂ is made here, from the noise-free chunk of each row and the same (seed, row) draw, so no change
to Q3's pass is needed; the equality with Q3's deployed predictions is checked in clean mode.
"""
from __future__ import annotations

import hashlib
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.config import params_to_dict
from snrmoe_lib.data.io import dataset_fingerprint, frozen_test_record, split_rows
from snrmoe_lib.data.noise import fit_variance_model
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.evaluation.records import code_version, decide, find_results, to_jsonable
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models.deployed import FAMILIES, DeployedMixture, SplitConformalPerBin, observed_snr
from snrmoe_lib.models.experts import OracleSettings, fit_oracle_stream
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.mixtures import mix
from snrmoe_lib.models.ridge import AlphaPathRidge
from snrmoe_lib.models.routing import SNRRouter
from snrmoe_lib.analyses.q1_waterfall import carve_holdout
from snrmoe_lib.analyses.q3 import _fit_rows, resolve_representation
from snrmoe_lib.analyses.q3_models import choose_tau, gate_hyperparameters, subsample, tau_sweep
from snrmoe_lib.analyses.deploy_rows import fit_rows_family
from snrmoe_lib.analyses.q4_data import sigma_read, template_sigma

__all__ = ["DEFAULT_LEVEL", "fit_deployed", "grid_record", "leak_record", "ceiling_record"]

#: Which σ a model of each error mode reads (recorded in model.json and shown on the model card).
SIGMA_READ = {
    "clean": "error · noise_level: the products' expected (noise-free) error. Observed spectra carry only the "
             "pipeline's estimate σ̂; with --noisy the model reads the file's σ̂ as if it were that error",
    "estimated": "σ̂, estimated from the same noisy realisation as the flux (data.noise.VarianceModel, saved with the "
                 "model): noise-free products get σ̂ of the drawn noise; with --noisy the file's own σ̂ is read"}
#: Nominal coverage of the intervals when none is given.
DEFAULT_LEVEL = 0.9
ROLES = ("train", "val", "test")


class _Collector:
    """Per-chunk hook of the experts' pass: quality features and observed SNR of every row, per role
    (from σ̂ of the same noise draw when a variance model is given: error mode 'estimated')."""

    def __init__(self, compressor, noise_level: float, definition: str, seed: int, variance=None):
        self.compressor, self.nl, self.definition = compressor, noise_level, definition
        self.seed, self.variance = seed, variance
        self.parts: dict = {r: [] for r in ROLES}

    def __call__(self, role: str, nc) -> None:
        if role not in self.parts:
            return
        flux = None if self.variance is None else nc.chunk.flux
        sigma = sigma_read(flux, nc.error, nc.rows, self.seed, self.nl, self.variance)
        q = self.compressor.transform(QualityInput(sigma))
        self.parts[role].append((nc.rows, q, observed_snr(nc.noisy, sigma, self.definition)))

    def by_role(self, role: str, info: pd.DataFrame) -> dict:
        rows = np.concatenate([p[0] for p in self.parts[role]])
        at = np.searchsorted(rows, info["row"].to_numpy())
        if not np.array_equal(rows[at], info["row"].to_numpy()):
            raise RuntimeError(f"{role}: the pass handed out different rows to the experts and the gate")
        return {"row": rows[at], "q": np.concatenate([p[1] for p in self.parts[role]])[at],
                "snr_obs": np.concatenate([p[2] for p in self.parts[role]])[at],
                "bin": info["snr_bin"].to_numpy(), "snr": info["snr"].to_numpy(), "y": info["y"].to_numpy()}


def _pass(ds, split, params, representation: str, seed: int, progress, variance=None):
    """The compressor (seeded training subsample) and the experts' streamed fit with its per-row arrays."""
    p, nl = params, params.noise.noise_level
    fit, holdout, record = carve_holdout(split, p.controls.holdout_fraction, p.controls.holdout_seed)
    sigma, record["bad_pixel_fraction"] = template_sigma(ds, _fit_rows(fit, p.gate.fit_n, p.gate.seed), nl, seed,
                                                         variance)
    compressor = make_compressor(representation).fit(QualityInput(sigma))
    sb = p.snr_bins
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    settings = OracleSettings(noise_level=nl, seed=seed, alphas=p.ridge.alphas, min_count=sb.min_count,
                              on_small_bin=sb.on_small_bin, target=p.ridge.target, chunk_size=p.data.chunk_size,
                              solver=p.ridge.solver, predict_val=True, size_seed=p.split.seed)
    hook = _Collector(compressor, nl, sb.definition, seed, variance)
    run = fit_oracle_stream(ds, fit, {"snr": router}, settings, features=FluxFeatures(p.ridge.bin_pixels),
                            on_chunk=hook, progress=progress)
    infos = {"train": run.train_info, "val": run.val_info, "test": run.test_info}
    return compressor, run, {r: hook.by_role(r, i) for r, i in infos.items()}, record


def _gate_and_tau(run, data: dict, g, taus) -> tuple:
    """The configured gate on the training rows' quality features, τ chosen on validation."""
    fam = run.families["snr"]
    plan, K, gi = fam.plan, fam.plan.n_experts, run.models.index("global")
    tr = data["train"]
    rows = subsample(len(tr["y"]), g.train_n, g.seed)
    gate = make_gate(g.kind, n_classes=K, **gate_hyperparameters(g, g.kind))
    gate.fit(tr["q"][rows], check_labels(plan.route(tr["bin"])[rows], K)[0])
    pv = run.val_pred
    tau = choose_tau(tau_sweep(gate.predict_proba(data["val"]["q"]), pv[:, fam.columns], pv[:, gi],
                               data["val"]["y"], taus))
    return gate, tau


def _per_bin(y, pred, lo, hi, bins, labels, n_boot: int, seed: int) -> list[dict]:
    out = []
    for j, lab in enumerate(labels):
        s = bins == j
        n = int(s.sum())
        row = {"bin": lab, "n": n, "coverage": float(np.mean((y[s] >= lo[s]) & (y[s] <= hi[s]))) if n else None,
               "r2": r2(y[s], pred[s]) if n >= 2 else None, "interval": None,
               "rmse": float(np.sqrt(np.mean((y[s] - pred[s]) ** 2))) if n else None}
        if n >= 10:
            row["interval"] = list(bootstrap_interval(y[s], pred[s], n_boot=n_boot, seed=seed))
        out.append(row)
    return out


def _test_metrics(model: DeployedMixture, P, te: dict, labels, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Frozen-test metrics of the deployed predictions (per true SNR bin and overall) and the predictions;
    ``P`` is every model's prediction of the test rows."""
    W = model.gate.predict_proba(te["q"])
    y_hat, fell = mix(W, P[:, model.expert_columns], P[:, model.global_column], model.tau)
    _, s, h = model.calibration.predict(te["snr_obs"])
    y = te["y"]
    lo, hi = y_hat - h, y_hat + h
    m = {"n": int(len(y)), "r2": r2(y, y_hat),
         "r2_interval": list(bootstrap_interval(y, y_hat, n_boot=n_boot, seed=seed)),
         "r2_global": r2(y, P[:, model.global_column]), "rmse": float(np.sqrt(np.mean((y - y_hat) ** 2))),
         "coverage": float(np.mean((y >= lo) & (y <= hi))), "level": float(model.calibration.level),
         "fallback_rate": float(fell.mean()), "per_bin": _per_bin(y, y_hat, lo, hi, te["bin"], labels, n_boot, seed)}
    return m, {"row": te["row"], "y": y, "pred": y_hat, "fell_back": fell, "sigma": s, "lo": lo, "hi": hi}


def grid_record(wave: np.ndarray) -> dict:
    """The wavelength grid as the record keeps it: sha256, length and ends (the grid itself is saved as arrays)."""
    w = np.ascontiguousarray(wave, dtype=np.float64)
    return {"sha256": hashlib.sha256(w.tobytes()).hexdigest(), "n_pix": int(len(w)),
            "first": float(w[0]), "last": float(w[-1])}


def leak_record(params, results_root, representation: str, data: dict, n_boot: int, seed: int) -> dict:
    """The leak check: Q2's Gate-1 verdicts from its results (else 'not run'), and a linear probe of log g
    from the deployed gate's own inputs (Ridge on the training rows, R² on the frozen test)."""
    q2 = "not run"
    if results_root is not None and Path(results_root).exists():
        recs = find_results(results_root, notebook="q2_error_leakage", config=params.name)
        if recs:
            rec = recs[-1]
            q2 = {"source": str(rec.get("_path", "")), "code_version": rec.get("code_version"),
                  "verdicts": [v for v in rec.get("verdicts", []) if str(v.get("gate", "")).startswith("Gate-1")]}
    tr, va, te = data["train"], data["val"], data["test"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = AlphaPathRidge(alphas=list(params.quality.audit_alphas)).fit(tr["q"], tr["y"]).select(va["q"], va["y"])
    pred = probe.predict(te["q"])
    pred = pred[:, 0] if pred.ndim == 2 else pred
    value, iv = r2(te["y"], pred), bootstrap_interval(te["y"], pred, n_boot=n_boot, seed=seed)
    limit = params.thresholds.gate1_logg_r2_max
    return {"q2": q2, "gate_inputs": {"representation": representation, "metric": "r2_logg_from_gate_inputs",
                                       "value": value, "interval": list(iv), "op": "<", "threshold": limit,
                                       "verdict": decide(value, "<", limit, iv)}}


def ceiling_record(params, results_root) -> dict | str:
    """The K1 notebook's ceiling numbers for this configuration (R²_max per magnitude, the per-SNR-bin
    bounds ``van_trees_r2_bin<b>``, ``bayes_r2_bin<b>``, ``crlb_r2_bin<b>``), or 'not available'."""
    if results_root is None or not Path(results_root).exists():
        return "not available"
    recs = find_results(results_root, notebook="fisher_ceiling", config=params.name)
    if not recs:
        return "not available"
    m = recs[-1].get("metrics", {})
    keep = {k: v for k, v in m.items() if k.startswith("r2_max_") or "_r2_bin" in k or "_r2_3d_bin" in k}
    return {"source": str(recs[-1].get("_path", "")), "frozen_test": recs[-1].get("frozen_test"), "metrics": keep}


def _ranges(data: dict, params, bad_fraction: list) -> dict:
    tr = data["train"]
    return {"bad_pixel_fraction": bad_fraction,
            "snr_obs": [float(tr["snr_obs"].min()), float(tr["snr_obs"].max())],
            "snr_true": [float(tr["snr"].min()), float(tr["snr"].max())],
            "label": [float(tr["y"].min()), float(tr["y"].max())], "target": params.ridge.target}


def _fit_ridge(ds, split, p, representation: str, seed: int, progress, variance) -> dict:
    """The Ridge family: Q3's streamed deployed pipeline (held-out carve, one pass), as the rows path's dict."""
    compressor, run, data, holdout = _pass(ds, split, p, representation, seed, progress, variance)
    fam = run.families["snr"]
    gate, tau = _gate_and_tau(run, data, p.gate, sorted(set(p.controls.tau_grid) | {p.gate.tau}))
    m = run.models
    return {"compressor": compressor, "gate": gate, "tau": float(tau), "models": m,
            "expert_labels": fam.plan.expert_labels, "expert_columns": list(fam.columns),
            "global_column": m.index("global"), "data": data, "val_pred": run.val_pred, "test_pred": run.test_pred,
            "bad_fraction": holdout.pop("bad_pixel_fraction"), "holdout": holdout,
            "experts_record": {"labels": fam.plan.expert_labels, "alpha": dict(zip(m.names, m.alpha.tolist())),
                               "n_train": dict(zip(m.names, m.n_train.tolist()))}}


def _fit_in_memory(ds, split, p, family: str, representation: str, seed: int, progress, variance) -> dict:
    f = fit_rows_family(ds, split, p, family, seed, representation, variance, progress)
    f["holdout"] = {"fraction": 0.0, "n_holdout": 0,
                    "note": "none: the in-memory families fit on Q4's split (no held-out carve)"}
    neural = family == "neural"
    f["experts_record"] = {"labels": f["expert_labels"], ("epochs" if neural else "n_iter"): f.pop("selection"),
                           "n_train_rows_in_memory": f.pop("n_train_kept"),
                           "n_train_split": f.pop("n_train_split"),
                           "hyperparameters": f"params.q4 ({family}_*)"}
    if neural:
        f["experts_record"] |= {"n_train_rows_net": f.pop("n_train_net"),
                                "networks": "the K SNR heads of Q4's 'heads' trunk; the global head of Q4's "
                                            "residual network"}
    return f


def _record(ds, p, split, f: dict, model: DeployedMixture, metrics: dict, leak: dict, seed: int,
            rep: tuple[str, str]) -> dict:
    """What ``model.json`` records about the fit (plain JSON)."""
    fp, cal, data = dataset_fingerprint(ds), model.calibration, f["data"]
    on = ("observed SNR (noisy flux, σ) for flags and intervals; true SNR for the experts' training bins and the "
          "per-bin test metrics")
    vm = model.variance
    return to_jsonable({
        "name": p.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "params": params_to_dict(p), "seed": seed, "family": model.family,
        "representation": rep[0], "representation_source": rep[1],
        "errors": {"error_mode": model.error_mode, "sigma_read": SIGMA_READ[model.error_mode],
                   "variance_model": None if vm is None else {
                       "kind": "per-pixel background + gain · flux (data.noise.VarianceModel)",
                       "fit_rows": int(p.noise.variance_fit_n), "n_iter": int(vm.n_iter),
                       "rel_rms": float(vm.rel_rms_)}},
        "dataset": {"path": str(ds.path), "fingerprint": fp, "n": int(ds.n), "n_pix": int(ds.n_pix),
                    "n_dropped_rows": int(ds.n_dropped), "mock": bool(p.data.mock is not None),
                    "split": split.to_dict(), "holdout": f["holdout"]},
        "frozen_test": frozen_test_record(ds, split, fp), "grid": grid_record(ds.wave),
        "ranges": _ranges(data, p, f["bad_fraction"]),
        "snr_bins": {"edges": list(p.snr_bins.edges), "labels": list(p.snr_bins.labels),
                     "definition": p.snr_bins.definition, "on": on},
        "experts": f["experts_record"],
        "gate": {"kind": p.gate.kind, "tau": model.tau, "n_quality_features": int(data["train"]["q"].shape[1])},
        "calibration": {"method": "split-conformal per observed-SNR bin (validation rows)", "level": cal.level,
                        "half_width": cal.half_width_, "sigma": cal.sigma_, "n_val": cal.counts_,
                        "pooled": cal.pooled_},
        "metrics": metrics, "leak_check": leak})


def fit_deployed(ds, params, *, family: str = "ridge", results_root=None, level: float = DEFAULT_LEVEL,
                 seed: int | None = None, progress: bool | str = False) -> tuple[DeployedMixture, dict]:
    """Fit the deployed mixture of a configuration on its dataset and describe it.

    Parameters
    ----------
    ds : PfsDataset
    params : Params
        ``noise.error_mode`` chooses the σ the model reads ('estimated' or 'both': σ̂ through a variance
        model fitted on ``noise.variance_fit_n`` training rows, saved with the model; 'clean': the true σ).
    family : {'ridge', 'boosted', 'neural'}
        'ridge': Q3's streamed pipeline; 'boosted': Q4's boosted trees; 'neural': Q4's networks (a trunk
        with K SNR heads, the residual net's global head as the fallback); hyper-parameters from ``q4``.
    results_root : folder of the notebooks' results (Q2's choice of representation, its leak check and the
        K1 ceiling are read there when present)
    level : nominal coverage of the intervals
    seed : noise seed (default: the first of ``params.seeds``)

    Returns
    -------
    model : DeployedMixture
    test : dict
        The frozen-test rows' targets and deployed predictions (``row``, ``y``, ``pred``, ``lo``, ``hi``, …).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown expert family {family!r} for a deployed model; known: {list(FAMILIES)}")
    p = params
    seed = int(p.seeds[0] if seed is None else seed)
    split = split_rows(ds.n, p.split.n_train, p.split.n_val, p.split.n_test, p.split.seed, n_dropped=ds.n_dropped)
    representation, why = resolve_representation(p, results_root)
    # 'both' reports the two modes side by side; a deployed model reads what a real observation has: σ̂
    mode = "clean" if p.noise.error_mode == "clean" else "estimated"
    variance = fit_variance_model(ds, split.train, n=p.noise.variance_fit_n) if mode == "estimated" else None
    if family == "ridge":
        f = _fit_ridge(ds, split, p, representation, seed, progress, variance)
    else:
        f = _fit_in_memory(ds, split, p, family, representation, seed, progress, variance)
    va, cal = f["data"]["val"], SplitConformalPerBin(p.snr_bins.edges, level)
    model = DeployedMixture(f["compressor"], f["gate"], f["models"], f["expert_labels"], f["expert_columns"],
                            f["global_column"], f["tau"], p.ridge.bin_pixels, p.noise.noise_level,
                            p.snr_bins.definition, cal, ds.wave.copy(), {}, family, mode, variance)
    vp = f["val_pred"]
    val_pred = mix(f["gate"].predict_proba(va["q"]), vp[:, model.expert_columns], vp[:, model.global_column],
                   model.tau)[0]
    cal.fit(va["y"] - val_pred, va["snr_obs"])
    n_boot = p.runner.n_bootstrap
    metrics, test = _test_metrics(model, f["test_pred"], f["data"]["test"], list(p.snr_bins.labels), n_boot, seed)
    leak = leak_record(p, results_root, representation, f["data"], n_boot, seed)
    model.record = _record(ds, p, split, f, model, metrics, leak, seed, (representation, why))
    model.record["ceiling"] = to_jsonable(ceiling_record(p, results_root))
    return model, test
