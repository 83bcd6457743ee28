"""Q2: the audit — every error representation scored on log g and the SNR, then the controls."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q2_controls import audit_controls, shuffled_labels
from snrmoe_lib.analyses.q2_fit import fit_targets, probe_targets, representation_features
from snrmoe_lib.analyses.q2_sample import AuditSample, AuditWarning
from snrmoe_lib.config import Params
from snrmoe_lib.evaluation.records import decide
from snrmoe_lib.features.quality import QualityError

__all__ = ["Audit", "SHORT", "conjunction", "leak_limits", "row_verdict", "run_audit"]


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


#: Target → its short name in the table's columns (``r2_<short>``, ``nl_r2_<short>``).
SHORT = {"log_g": "logg", "snr": "snr", "T_eff": "teff", "M_H": "mh"}


def leak_limits(th) -> dict[str, float]:
    """The largest R² each stellar label may reach from an error representation (Gate-1)."""
    return {"log_g": th.gate1_logg_r2_max, "T_eff": th.gate1_labels_r2_max, "M_H": th.gate1_labels_r2_max}


def conjunction(states: list[str]) -> str:
    """All PASS → PASS; any FAIL → FAIL; otherwise INCONCLUSIVE (the rule of :func:`decide`, for a conjunction)."""
    if "FAIL" in states:
        return "FAIL"
    return "PASS" if states and all(x == "PASS" for x in states) else "INCONCLUSIVE"


def row_verdict(row: dict, th, block: str = "test", use_interval: bool = True) -> str:
    """Gate-1 for one table row: every audited label below its limit (Ridge and, where it ran, the
    non-linear probe) and the SNR above its minimum. ``block='val'`` reads the validation scores
    (what the choice of representation may use); ``use_interval`` decides on the whole interval."""
    sfx = "" if block == "test" else "_val"
    checks = [(f"{pre}r2_{SHORT[t]}", "<", lim) for t, lim in leak_limits(th).items() for pre in ("", "nl_")]
    checks.append(("r2_snr", ">", th.gate1_snr_r2_min))
    states = []
    for col, op, lim in checks:
        value = row.get(col + sfx)
        if value is None or (col.startswith("nl_") and not np.isfinite(value)):
            continue  # a label the dataset lacks, or a representation the probe skipped
        iv = (row.get(f"{col}{sfx}_lo"), row.get(f"{col}{sfx}_hi")) if use_interval else None
        states.append(decide(value, op, lim, iv))
    return conjunction(states)


def _score_columns(prefix: str, scores: dict) -> dict:
    out = {}
    for target, sc in scores.items():
        if target not in SHORT:
            continue
        k = f"{prefix}r2_{SHORT[target]}"
        out.update({k: sc["r2"], f"{k}_lo": sc["lo"], f"{k}_hi": sc["hi"], f"{k}_val": sc["r2_val"],
                    f"{k}_val_lo": sc["val_lo"], f"{k}_val_hi": sc["val_hi"]})
    return out


def _table_row(name: str, n_feat: int, sc: dict, th, nl: dict | None = None) -> dict:
    g, s = sc["log_g"], sc["snr"]
    row = {"representation": name, "n_features": n_feat}
    row |= _score_columns("", sc)
    row |= {"alpha_logg": g["alpha"], "r2_logg_ols": g["r2_ols"], "alpha_snr": s["alpha"],
            "alpha_at_edge": bool(g["alpha_at_edge"] or s["alpha_at_edge"])}
    row |= _score_columns("nl_", nl) if nl else {f"nl_r2_{SHORT[t]}{x}": np.nan for t in leak_limits(th)
                                                 for x in ("", "_lo", "_hi", "_val", "_val_lo", "_val_hi")}
    row["nl_n_iter"] = int(nl["log_g"]["n_iter"]) if nl else 0
    row |= {"verdict": row_verdict(row, th, "test", use_interval=False),
            "verdict_interval": row_verdict(row, th, "test"),
            "verdict_val": row_verdict(row, th, "val"),
            "verdict_val_point": row_verdict(row, th, "val", use_interval=False)}
    return row


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

    rows: list[tuple[str, int, dict, dict | None]] = field(default_factory=list)  # (name, n_features, Ridge, probe)
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
        small = F[0].shape[1] <= params.quality.probe_max_features
        nl = probe_targets(*F, sample, None, params, model) if small else None
        fits.rows.append((name, F[0].shape[1], sc, nl))
    if fits.s0_scores is None:  # the controls need the raw-σ fit even when S0 is not audited
        sc, model = fit_targets(*representation_features("S0", sample, params), sample, shuffles, params)
        fits.s0_scores, fits.importance = sc, np.abs(model.coef_[:, 0])
    return fits


def run_audit(sample: AuditSample, params: Params, representations: Sequence[str] | None = None) -> Audit:
    """Audit every representation and run the controls on one sample.

    Returns an :class:`Audit`; its ``table`` has one row per representation with R² (test and
    validation, each with a bootstrap interval) for log g, the SNR, T_eff and [M/H] from the Ridge
    and (representations of at most ``quality.probe_max_features`` features) from the non-linear
    probe (``nl_`` columns), the chosen α, the OLS reference and the Gate-1 verdicts (test point
    values, test intervals, validation intervals — the last is what the choice reads); its
    ``controls`` one row per control
    (:func:`~snrmoe_lib.analyses.q2_controls.audit_controls`).
    """
    reps = list(representations or params.quality.representations)
    notes = _dual_form_notes(sample)
    shuffles = {f"shuffle_{s}": shuffled_labels(sample, s) for s in params.seeds}
    fits = _fit_representations(reps, sample, params, shuffles)
    table = pd.DataFrame([_table_row(name, n_feat, sc, params.thresholds, nl) for name, n_feat, sc, nl in fits.rows])
    controls = audit_controls(sample, params, table, fits.s0_scores)
    return Audit(sample.label, table, controls, fits.importance, sample.wave, sample.sizes(), notes + fits.notes)
