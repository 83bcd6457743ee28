"""Q2: one audit fit — an α-path Ridge on one representation's features, scored on the test block.

For each target (log g, the SNR and any extra, such as shuffled labels) the α is chosen on the
validation block by R², and R² is reported on the test block with a bootstrap interval, together
with the minimum-norm least-squares (OLS) reference from the same decomposition.
"""
from __future__ import annotations

import warnings

import numpy as np

from snrmoe_lib.analyses.q2_sample import AuditSample, AuditWarning
from snrmoe_lib.config import Params
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.features.quality import check_features, make_compressor
from snrmoe_lib.models.ridge import AlphaPathRidge

__all__ = ["SPLITS", "audit_alphas", "fit_targets", "representation_features"]

SPLITS = ("train", "val", "test")


def audit_alphas(params: Params) -> list[float]:
    """The audit's α grid: ``quality.audit_alphas``, else the positive ``ridge.alphas``."""
    # α = 0 in ridge.alphas means plain least squares, which the audit reports separately (OLS)
    return list(params.quality.audit_alphas) or [a for a in params.ridge.alphas if a > 0]


def _score(model: AlphaPathRidge, F_val, F_te, Y_val: np.ndarray, Y_te: np.ndarray, names: list[str],
           n_boot: int, seed: int) -> dict:
    """Select α on validation, score each target on test (with a bootstrap interval)."""
    model.select(F_val, Y_val)
    P = model.predict(F_te)
    P_ols = model.predict_ols(F_te)
    P = P[:, None] if P.ndim == 1 else P
    P_ols = P_ols[:, None] if P_ols.ndim == 1 else P_ols
    out = {}
    n_alpha = len(model.alphas)
    for t, name in enumerate(names):
        yt = Y_te[:, t]
        lo, hi = bootstrap_interval(yt, P[:, t], n_boot=n_boot, seed=seed) if n_boot else (np.nan, np.nan)
        ai = int(model.alpha_index_[t])
        out[name] = {"r2": r2(yt, P[:, t]), "lo": lo, "hi": hi, "alpha": float(model.alphas[ai]),
                     "alpha_at_edge": ai in (0, n_alpha - 1), "r2_ols": r2(yt, P_ols[:, t])}
    return out


def fit_targets(F_tr, F_va, F_te, sample: AuditSample, extra: dict[str, tuple] | None,
                params: Params) -> tuple[dict, AlphaPathRidge]:
    """One α-path fit for log g, SNR and any ``extra`` targets ``{name: (train, val, test)}``.

    Returns ``(scores, model)``: ``scores[target]`` holds ``r2, lo, hi, alpha, alpha_at_edge, r2_ols``.
    """
    names = ["log_g", "snr"]
    cols = {s: [sample.targets[s]["log_g"], sample.targets[s]["snr"]] for s in SPLITS}
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


def representation_features(name: str, sample: AuditSample, params: Params) -> list[np.ndarray]:
    """Features of representation ``name`` for the train, val and test blocks (fitted on train)."""
    comp = make_compressor(name, n_pca=params.quality.n_pca).fit(sample.train)
    F = [comp.transform(getattr(sample, s)) for s in SPLITS]
    check_features(F[0], name, require_variation=True)
    return F
