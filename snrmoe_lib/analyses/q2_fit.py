"""Q2: one audit fit — an α-path Ridge on one representation's features, scored on the test block.

For each target (log g, the SNR, T_eff, [M/H] and any extra, such as shuffled labels) the α is chosen
on the validation block by R², and R² is reported on the test block with a bootstrap interval,
together with the minimum-norm least-squares (OLS) reference from the same decomposition, and on the
validation block (which is all a choice between representations may read). A non-linear probe
(early-stopped gradient boosting, :func:`probe_targets`) scores the low-dimensional representations
the same way.
"""
from __future__ import annotations

import warnings

import numpy as np

from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib.analyses.q2_sample import LEAK_LABELS, AuditSample, AuditWarning
from snrmoe_lib.config import Params
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.features.quality import check_features, make_compressor
from snrmoe_lib.models.ridge import AlphaPathRidge

__all__ = ["SPLITS", "audit_alphas", "fit_targets", "fit_targets_names", "probe_targets", "representation_features"]

SPLITS = ("train", "val", "test")


def audit_alphas(params: Params) -> list[float]:
    """The audit's α grid: ``quality.audit_alphas``, else the positive ``ridge.alphas``."""
    # α = 0 in ridge.alphas means plain least squares, which the audit reports separately (OLS)
    return list(params.quality.audit_alphas) or [a for a in params.ridge.alphas if a > 0]


def fit_targets_names(sample: AuditSample) -> list[str]:
    """log g, the SNR, then the other stellar labels the sample carries (T_eff, [M/H])."""
    return ["log_g", "snr"] + [t for t in LEAK_LABELS if t in sample.targets["train"]]


def _scored(yt: np.ndarray, pred: np.ndarray, yv: np.ndarray, pred_val: np.ndarray, n_boot: int, seed: int) -> dict:
    """Test R² with its bootstrap interval, and the same on the validation block (what choices read)."""
    lo, hi = bootstrap_interval(yt, pred, n_boot=n_boot, seed=seed) if n_boot else (np.nan, np.nan)
    vlo, vhi = bootstrap_interval(yv, pred_val, n_boot=n_boot, seed=seed) if n_boot else (np.nan, np.nan)
    return {"r2": r2(yt, pred), "lo": lo, "hi": hi, "r2_val": r2(yv, pred_val), "val_lo": vlo, "val_hi": vhi}


def _score(model: AlphaPathRidge, F_val, F_te, Y_val: np.ndarray, Y_te: np.ndarray, names: list[str],
           n_boot: int, seed: int) -> dict:
    """Select α on validation, score each target on test (with a bootstrap interval) and on validation."""
    model.select(F_val, Y_val)
    P, P_val, P_ols = (np.atleast_2d(model.predict(F_te).T).T, np.atleast_2d(model.predict(F_val).T).T,
                       np.atleast_2d(model.predict_ols(F_te).T).T)
    out = {}
    n_alpha = len(model.alphas)
    for t, name in enumerate(names):
        ai = int(model.alpha_index_[t])
        out[name] = _scored(Y_te[:, t], P[:, t], Y_val[:, t], P_val[:, t], n_boot, seed) | {
            "alpha": float(model.alphas[ai]), "alpha_at_edge": ai in (0, n_alpha - 1),
            "r2_ols": r2(Y_te[:, t], P_ols[:, t])}
    return out


def fit_targets(F_tr, F_va, F_te, sample: AuditSample, extra: dict[str, tuple] | None,
                params: Params) -> tuple[dict, AlphaPathRidge]:
    """One α-path fit for log g, SNR, T_eff, [M/H] and any ``extra`` targets ``{name: (train, val, test)}``.

    Returns ``(scores, model)``: ``scores[target]`` holds ``r2, lo, hi`` (test), ``r2_val, val_lo,
    val_hi`` (validation), ``alpha, alpha_at_edge, r2_ols``.
    """
    names = fit_targets_names(sample)
    cols = {s: [sample.targets[s][t] for t in names] for s in SPLITS}
    for name, (ytr, yva, yte) in (extra or {}).items():
        names.append(name)
        for s, y in zip(SPLITS, (ytr, yva, yte)):
            cols[s].append(y)
    Y = {s: np.column_stack(v) for s, v in cols.items()}
    with warnings.catch_warnings():
        # the dual-form notice is raised once per audit by run_audit, not once per representation
        warnings.simplefilter("ignore", AuditWarning)
        model = AlphaPathRidge(alphas=audit_alphas(params)).fit(F_tr, Y["train"])
    scores = _score(model, F_va, F_te, Y["val"], Y["test"], names, params.runner.n_bootstrap, params.seeds[0])
    return scores, model


def probe_targets(F_tr, F_va, F_te, sample: AuditSample, extra: dict[str, tuple] | None,
                  params: Params, linear: AlphaPathRidge | None = None) -> dict:
    """The non-linear probe: gradient-boosted trees per target, early-stopped on the validation block.

    ``HistGradientBoostingRegressor`` grows up to ``quality.probe_max_iter`` trees and stops when
    the validation loss has not improved for 10 rounds (the validation block is its held-out set,
    so no training row stops it). With ``linear`` (the α-selected Ridge of :func:`fit_targets` on
    the same features and targets) the trees boost from the Ridge's prediction, fitting its
    residual: axis-aligned trees cannot find a linear contrast of correlated features (sorted-σ
    quantiles), so the probe starts where the linear audit ends and can only add what is
    non-linear. R² on test with a bootstrap interval, and on validation; plus ``n_iter``.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    q = params.quality
    targets = {t: tuple(sample.targets[s][t] for s in SPLITS) for t in fit_targets_names(sample)} | dict(extra or {})
    base = [np.zeros((len(F), len(targets))) for F in (F_tr, F_va, F_te)]
    if linear is not None:
        # the Ridge's columns: these targets first (any further ones, e.g. the guard's, are not probed here)
        base = [np.atleast_2d(linear.predict(F).T).T[:, :len(targets)] for F in (F_tr, F_va, F_te)]
    out = {}
    for t, (name, (ytr, yva, yte)) in enumerate(targets.items()):
        b_tr, b_va, b_te = (b[:, t] for b in base)
        m = HistGradientBoostingRegressor(max_iter=q.probe_max_iter, learning_rate=0.1, max_leaf_nodes=15,
                                          min_samples_leaf=20, early_stopping=True, n_iter_no_change=10,
                                          random_state=int(params.seeds[0]))
        with one_blas_thread("openmp"):  # small problems: OpenMP threads only contend (10-20× slower on 2 busy cores)
            m.fit(F_tr, ytr - b_tr, X_val=F_va, y_val=yva - b_va)
        with one_blas_thread("openmp"):
            p_te, p_va = m.predict(F_te), m.predict(F_va)
        out[name] = _scored(yte, b_te + p_te, yva, b_va + p_va, params.runner.n_bootstrap,
                            params.seeds[0]) | {"n_iter": int(m.n_iter_)}
    return out


def representation_features(name: str, sample: AuditSample, params: Params) -> list[np.ndarray]:
    """Features of representation ``name`` for the train, val and test blocks (fitted on train)."""
    comp = make_compressor(name, n_pca=params.quality.n_pca).fit(sample.train)
    F = [comp.transform(getattr(sample, s)) for s in SPLITS]
    check_features(F[0], name, require_variation=True)
    return F
