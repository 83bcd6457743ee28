"""The deployed model of an in-memory expert family (boosted trees): Q4's rows, experts, gate and τ.

Families that do not fit from sufficient statistics hold their training rows. This path fits the
deployed mixture exactly as the Q4 notebook evaluates it for one noise seed: Q4's split (no held-out
carve), at most ``q4.max_train_rows`` training rows (the seeded subsample of
:func:`~snrmoe_lib.analyses.q4_data.train_rows`), the quality compressor on Q4's template rows
(stream ``gate.template_subsample``), the experts and global model built by the family registry
(:data:`~snrmoe_lib.analyses.q4_families.FAMILIES`, hyper-parameters from the ``q4`` section) with
selection on each bin's validation rows, Q3's deployed gate on the training rows' quality features
and τ chosen on validation. In clean error mode its frozen-test predictions are the Q4 table's
``<family>_deployed`` column for that seed. Added for deployment, from the same pass: the observed SNR
of every row (interval bins and flags), and in 'estimated' error mode the σ̂ of the same noise draw
as the gate's and the observed SNR's input.
"""
from __future__ import annotations

import numpy as np

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.noise import add_noise_estimated, effective_sigma
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models.deployed import observed_snr
from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.gates import check_labels, make_gate
from snrmoe_lib.models.model_set import ModelSet
from snrmoe_lib.models.routing import SNRRouter
from snrmoe_lib.analyses.q3_models import choose_tau, gate_hyperparameters, subsample, tau_sweep
from snrmoe_lib.analyses.q4_data import train_rows
from snrmoe_lib.analyses.q4_families import family

__all__ = ["sigma_read", "template_sigma", "collect_rows", "fit_rows_family"]

ROLES = ("train", "val", "test")


def sigma_read(noise_free, error, noisy_rows, seed: int, noise_level: float, variance=None) -> np.ndarray:
    """σ the deployed model reads for rows made noisy by the protocol: error · noise_level (clean) or,
    given the variance model, σ̂ estimated from the same draw (keyed by (seed, row))."""
    if variance is None:
        return error if noise_level == 1 else effective_sigma(error, noise_level)
    return add_noise_estimated(noise_free, error, noise_level, noisy_rows, seed, variance.gain(noise_free, error))[1]


def template_sigma(ds, rows: np.ndarray, noise_level: float, seed: int, variance=None) -> tuple[np.ndarray, list]:
    """σ (as :func:`sigma_read`) of the compressor's template rows, and their fraction of masked or
    non-finite pixels (median, largest)."""
    ch = ds.read(rows, with_mask=True)
    bad = ~np.isfinite(ch.flux) | ~np.isfinite(ch.error) | (ch.mask != 0 if ch.mask is not None else False)
    frac = bad.mean(axis=1)
    return sigma_read(ch.flux, ch.error, ch.rows, seed, noise_level, variance), [float(np.median(frac)),
                                                                                 float(frac.max())]


def collect_rows(ds, split, params, seed: int, representation: str, variance=None, progress: bool | str = False):
    """(compressor, role → arrays, bad-pixel fraction of the template rows) of one pass: ``X`` binned flux,
    ``q`` quality features, ``snr_obs``, ``snr`` (true), ``bin`` (true SNR bin), ``y``, ``row`` — Q4's rows
    (see the module docstring)."""
    p, nl = params, params.noise.noise_level
    g, sb = p.gate, p.snr_bins
    n = min(int(g.fit_n), len(split.train))
    tmpl = np.sort(_rng("gate.template_subsample", int(g.seed)).choice(split.train, n, replace=False))
    sigma, bad_fraction = template_sigma(ds, tmpl, nl, seed, variance)
    comp = make_compressor(representation).fit(QualityInput(sigma))
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    roles = {"train": train_rows(split.train, p.q4.max_train_rows, p.split.seed), "val": split.val, "test": split.test}
    keys = ("X", "q", "snr_obs", "snr", "bin", "y", "row")
    acc = {r: {k: [] for k in keys} for r in ROLES}
    mode = "clean" if variance is None else "estimated"
    for role, nc in split_pass(ds, roles, noise_level=nl, seed=seed, features=FluxFeatures(p.ridge.bin_pixels),
                               target=p.ridge.target, chunk_size=p.data.chunk_size, progress=progress,
                               annotate=lambda ch: {"snr": router.values(ch), "bin": router.assign(ch)},
                               error_mode=mode, variance_model=variance):
        sigma = nc.sigma_hat if nc.sigma_hat is not None else sigma_read(None, nc.error, None, seed, nl)
        a = acc[role]
        for k, v in (("X", np.asarray(nc.X, dtype=np.float32)), ("q", comp.transform(QualityInput(sigma))),
                     ("snr_obs", observed_snr(nc.noisy, sigma, sb.definition)), ("snr", nc.info["snr"]),
                     ("bin", nc.info["bin"].astype(np.int64)), ("y", nc.y), ("row", nc.rows)):
            a[k].append(v)
    data = {r: {k: np.concatenate(acc[r][k]) for k in keys} for r in ROLES}
    return comp, data, bad_fraction


def fit_rows_family(ds, split, params, name: str, seed: int, representation: str, variance=None,
                    progress: bool | str = False) -> dict:
    """Fit family ``name``'s deployed mixture on Q4's rows (module docstring).

    Returns a dict: ``compressor``, ``gate``, ``tau``, ``models`` (:class:`ModelSet`: experts then
    'global'), ``expert_labels``, ``expert_columns``, ``global_column``, ``data`` (role → arrays),
    ``val_pred`` / ``test_pred`` (every model's predictions), ``selection`` (what validation chose).
    """
    fam = family(name)
    comp, data, bad_fraction = collect_rows(ds, split, params, seed, representation, variance, progress)
    tr, va, te = data["train"], data["val"], data["test"]
    sb = params.snr_bins
    experts = BinnedExperts(estimator=fam.build(params, seed), n_bins=len(sb.labels), labels=list(sb.labels),
                            min_count=sb.min_count, on_small_bin=sb.on_small_bin)
    experts.fit(tr["X"], tr["y"], bins=tr["bin"], validation=(va["X"], va["y"], va["bin"]))
    plan, K = experts.plan_, experts.plan_.n_experts
    g = params.gate
    rows = subsample(len(tr["y"]), g.train_n, g.seed)
    gate = make_gate(g.kind, n_classes=K, **gate_hyperparameters(g, g.kind))
    gate.fit(tr["q"][rows], check_labels(plan.route(tr["bin"])[rows], K)[0])
    models = ModelSet(list(plan.expert_labels) + ["global"], list(experts.experts_) + [experts.global_])
    val_pred, test_pred = models.predict(va["X"]), models.predict(te["X"])
    taus = sorted(set(params.controls.tau_grid) | {params.gate.tau})
    tau = choose_tau(tau_sweep(gate.predict_proba(va["q"]), val_pred[:, :K], val_pred[:, K], va["y"], taus))
    selection = {lab: int(getattr(m, "n_iter_", -1)) for lab, m in zip(models.names, models.models)}
    for r in ROLES:
        data[r].pop("X")  # the in-memory features are not needed past the fit
    return {"compressor": comp, "gate": gate, "tau": float(tau), "models": models,
            "expert_labels": list(plan.expert_labels), "expert_columns": list(range(K)), "global_column": K,
            "data": data, "val_pred": val_pred, "test_pred": test_pred, "selection": selection,
            "bad_fraction": bad_fraction, "n_train_kept": int(len(tr["y"])), "n_train_split": int(len(split.train))}
