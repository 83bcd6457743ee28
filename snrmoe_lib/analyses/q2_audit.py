"""Q2: the audit — every error representation scored on log g and the SNR, then the controls."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q2_controls import audit_controls, shuffled_labels
from snrmoe_lib.analyses.q2_fit import fit_targets, representation_features
from snrmoe_lib.analyses.q2_sample import AuditSample, AuditWarning
from snrmoe_lib.config import Params
from snrmoe_lib.evaluation.records import decide
from snrmoe_lib.features.quality import QualityError

__all__ = ["Audit", "run_audit"]


@dataclass
class Audit:
    """Everything the audit found for one sample."""

    label: str
    table: pd.DataFrame          # one row per representation
    controls: pd.DataFrame       # one row per control
    importance: np.ndarray       # |coefficient| of the raw-σ log g Ridge per pixel (standardised units)
    wave: np.ndarray
    sizes: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _row_verdict(r2_logg: float, r2_snr: float, th) -> str:
    a = decide(r2_logg, "<", th.gate1_logg_r2_max)
    b = decide(r2_snr, ">", th.gate1_snr_r2_min)
    if "UNDEFINED" in (a, b):
        return "UNDEFINED"
    return "PASS" if a == b == "PASS" else "FAIL"


def _table_row(name: str, n_feat: int, sc: dict, th) -> dict:
    g, s = sc["log_g"], sc["snr"]
    return {"representation": name, "n_features": n_feat,
            "r2_logg": g["r2"], "r2_logg_lo": g["lo"], "r2_logg_hi": g["hi"], "alpha_logg": g["alpha"],
            "r2_logg_ols": g["r2_ols"],
            "r2_snr": s["r2"], "r2_snr_lo": s["lo"], "r2_snr_hi": s["hi"], "alpha_snr": s["alpha"],
            "alpha_at_edge": bool(g["alpha_at_edge"] or s["alpha_at_edge"]),
            "verdict": _row_verdict(g["r2"], s["r2"], th),
            "verdict_interval": _row_verdict(g["hi"], s["lo"], th)}


def _digest(F: Sequence[np.ndarray]) -> str:
    h = hashlib.sha1()
    for a in F:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _dual_form_notes(sample: AuditSample) -> list[str]:
    n_tr, p = sample.train.shape
    if n_tr > p:
        return []
    msg = (f"{n_tr} training spectra for {p} pixels: the pixel-level fits (S0, S1a, S1b, controls) use "
           "Ridge in its dual (kernel) form, and their OLS reference is the minimum-norm solution, "
           "which interpolates the training set")
    warnings.warn(msg, AuditWarning, stacklevel=3)
    return [msg]


@dataclass
class _Fits:
    """The representation fits of one audit: scores per representation, the S0 fit, notes."""

    rows: list[tuple[str, int, dict]] = field(default_factory=list)  # (name, n_features, scores)
    s0_scores: dict | None = None
    importance: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _fit_representations(reps: Sequence[str], sample: AuditSample, params: Params, shuffles: dict) -> _Fits:
    """Fit every representation; S0 carries the label-shuffle guard as extra targets (one decomposition)."""
    fits = _Fits()
    seen: dict[str, tuple] = {}  # feature digest → (scores, model, representation)
    for name in reps:
        try:
            F = representation_features(name, sample, params)
        except QualityError as exc:
            raise QualityError(f"{sample.label} audit: {exc}") from None
        key = _digest(F)
        if key in seen and (name != "S0" or f"shuffle_{params.seeds[0]}" in seen[key][0]):
            # bit-identical features (e.g. S1a = S0 when every flux median is exactly 1, as in
            # median-normalised products) give bit-identical fits: reuse, and say so
            sc, model, same = seen[key]
            fits.notes.append(f"{name}: features identical to {same}'s (bit for bit); its fit is reused")
        else:
            sc, model = fit_targets(*F, sample, shuffles if name == "S0" else None, params)
            seen[key] = (sc, model, name)
        if name == "S0":
            fits.s0_scores, fits.importance = sc, np.abs(model.coef_[:, 0])
        fits.rows.append((name, F[0].shape[1], sc))
    if fits.s0_scores is None:  # the controls need the raw-σ fit even when S0 is not audited
        sc, model = fit_targets(*representation_features("S0", sample, params), sample, shuffles, params)
        fits.s0_scores, fits.importance = sc, np.abs(model.coef_[:, 0])
    return fits


def run_audit(sample: AuditSample, params: Params, representations: Sequence[str] | None = None) -> Audit:
    """Audit every representation and run the controls on one sample.

    Returns an :class:`Audit`; its ``table`` has one row per representation with R² (test, with a
    bootstrap interval) for log g and the SNR, the chosen α, the OLS reference and a verdict
    against the Gate-1 thresholds; its ``controls`` one row per control
    (:func:`~snrmoe_lib.analyses.q2_controls.audit_controls`).
    """
    reps = list(representations or params.quality.representations)
    notes = _dual_form_notes(sample)
    shuffles = {f"shuffle_{s}": shuffled_labels(sample, s) for s in params.seeds}
    fits = _fit_representations(reps, sample, params, shuffles)
    table = pd.DataFrame([_table_row(name, n_feat, sc, params.thresholds) for name, n_feat, sc in fits.rows])
    controls = audit_controls(sample, params, table, fits.s0_scores)
    return Audit(sample.label, table, controls, fits.importance, sample.wave, sample.sizes(), notes + fits.notes)
