"""Q2 / Gate-1: does the error vector leak the spectrum? What the Q2 notebook needs.

The mock (and the real PFS simulator) computes the expected error from the *noise-free* model flux,
so σ carries the stellar lines. The audit asks, for each error representation of
:mod:`snrmoe_lib.features.quality`: how well does a linear model on that representation *alone* predict

* log g — it should not (R² < ``thresholds.gate1_logg_r2_max``): anything it learns is leakage;
* the SNR — it should (R² > ``thresholds.gate1_snr_r2_min``): that is what a gate needs.

Method: a Ridge α path solved from one eigendecomposition of the training design
(:class:`~snrmoe_lib.models.ridge.AlphaPathRidge`: the Gram ``XᵀX``, or the kernel ``XXᵀ`` when there
are fewer spectra than features), α chosen on the validation block by R², R² reported on the test
block with a bootstrap interval; the minimum-norm least-squares (OLS) fit from the same
decomposition is kept for reference. Features are standardised with training statistics.

The parts, one idea each:

* :mod:`~snrmoe_lib.analyses.q2_sample` — the in-memory audit sample (:func:`load_audit_sample`);
* :mod:`~snrmoe_lib.analyses.q2_fit` — one α-path fit scored on the test block;
* :mod:`~snrmoe_lib.analyses.q2_audit` — every representation (:func:`run_audit`);
* :mod:`~snrmoe_lib.analyses.q2_controls` — pixel permutation, per-spectrum shuffle, mask only,
  aggregate statistics only, label shuffle (the guard);
* :mod:`~snrmoe_lib.analyses.q2_diagnostics` — importance peaks named from the line catalogue, and
  the decomposition e ≈ s·e0 + δ;
* this module — the choice of representation, the verdicts, the tables and the results payload, and
  the same audit on the simulator's ``estimated`` error mode.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.q2_audit import Audit, run_audit
from snrmoe_lib.analyses.q2_diagnostics import Decomposition, decompose_errors, importance_table, nearest_feature
from snrmoe_lib.analyses.q2_sample import AuditSample, AuditWarning, audit_sizes, load_audit_sample
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, dataset_fingerprint
from snrmoe_lib.data.mock.estimated import ensure_estimated_dataset, estimated_path, mock_provenance
from snrmoe_lib.evaluation.records import find_results, metric, verdict

__all__ = [
    "AuditWarning",
    "AuditSample",
    "Audit",
    "Decomposition",
    "audit_sizes",
    "load_audit_sample",
    "run_audit",
    "choose_representation",
    "chosen_representation",
    "gate1_verdicts",
    "q2_verdicts",
    "check_invariants",
    "nearest_feature",
    "importance_table",
    "decompose_errors",
    "audit_estimated",
    "audit_table",
    "decomposition_summary",
    "guard_r2",
    "dataset_record",
    "results_payload",
]


# ------------------------------------------------------------------------------------------
# Choice of representation
# ------------------------------------------------------------------------------------------


def choose_representation(table: pd.DataFrame, chosen: str = "auto", by: str = "interval") -> tuple[str, str]:
    """The representation ``quality_features`` will use, and why.

    ``chosen='auto'``: among the passing rows, the best SNR R² (ties: fewer features). With
    ``by='interval'`` a row passes only when its whole bootstrap interval does (log g upper bound
    below the limit, SNR lower bound above the minimum), so that a borderline representation is
    not chosen on a lucky draw; ``by='point'`` uses the point values. With no passing row, the one
    with the lowest log g R² is named (and Gate-1 then fails with its numbers). An explicit name
    is used as given (it must be in the table).
    """
    if chosen != "auto":
        if chosen not in set(table["representation"]):
            raise ValueError(f"quality.chosen={chosen!r} is not among the audited representations "
                             f"{table['representation'].tolist()}")
        return chosen, "set in the parameters (quality.chosen)"
    if by not in ("interval", "point"):
        raise ValueError(f"by must be 'interval' or 'point', got {by!r}")
    col = "verdict_interval" if by == "interval" else "verdict"
    ok = table[table[col] == "PASS"]
    if len(ok):
        best = ok.sort_values(["r2_snr", "n_features"], ascending=[False, True]).iloc[0]
        how = "whose whole 95 % interval passes" if by == "interval" else "passing on point values"
        return str(best["representation"]), f"best SNR R² among the representations {how}"
    best = table.sort_values(["r2_logg", "n_features"]).iloc[0]
    return str(best["representation"]), "no representation passes; the one leaking least is named"


def chosen_representation(results_root: str | Path, config: str | None = None,
                          notebook: str = "q2_error_leakage") -> str:
    """The representation the Q2 notebook chose, read from its results JSON under ``results_root``.

    The runner's status (``run.json`` beside the results) is read too: when the last run of the Q2
    notebook there did not end ok (failed, interrupted, still running), its choice is not used,
    whatever results file is lying around.

    Raises
    ------
    FileNotFoundError
        When no Q2 results exist for ``config`` (run the Q2 notebook first).
    RuntimeError
        When the runner says the last Q2 run in that folder did not finish ok.
    """
    import json  # local: only this reader needs it

    root = Path(results_root)
    folders = {root} | {Path(r["_path"]).parent for r in find_results(root, notebook=notebook, config=config)}
    for folder in sorted(folders):
        try:
            entries = json.loads((folder / "run.json").read_text()).get("notebooks", [])
        except (OSError, ValueError, AttributeError):
            continue  # no runner status (an interactive run): the results speak for themselves
        for nb in entries if isinstance(entries, list) else []:
            if isinstance(nb, dict) and nb.get("notebook") == notebook and nb.get("status") not in ("ok", "pending"):
                why = str(nb.get("error") or "").strip().splitlines()
                raise RuntimeError(
                    f"the last {notebook} run in {folder} did not finish ok (status {nb.get('status')}"
                    f"{': ' + why[0][:200] if why else ''}); its choice of representation is not used. "
                    f"Fix and rerun notebooks/{notebook} first")
    recs = find_results(root, notebook=notebook, config=config)
    recs = [r for r in recs if "chosen_representation" in r.get("extra", {})]
    if not recs:
        raise FileNotFoundError(
            f"no {notebook} results with a chosen representation under {results_root}"
            f"{f' for config {config!r}' if config else ''}; run notebooks/{notebook} first")
    latest = max(recs, key=lambda r: r["created"])
    return str(latest["extra"]["chosen_representation"])


# ------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------


def gate1_verdicts(table: pd.DataFrame, chosen: str, params: Params, label: str = "clean") -> list[dict]:
    """The two Gate-1 verdict records (log g R² < max, SNR R² > min) for ``chosen``."""
    th = params.thresholds
    r = table.set_index("representation").loc[chosen]
    suffix = "" if label == "clean" else f" ({label} errors)"
    return [
        verdict("Gate-1" + suffix, "Q2", f"r2_logg[{chosen}]", r["r2_logg"], "<", th.gate1_logg_r2_max,
                (r["r2_logg_lo"], r["r2_logg_hi"])),
        verdict("Gate-1" + suffix, "Q2", f"r2_snr[{chosen}]", r["r2_snr"], ">", th.gate1_snr_r2_min,
                (r["r2_snr_lo"], r["r2_snr_hi"])),
    ]


def guard_r2(audit: Audit) -> float:
    """The label-shuffle guard: the largest |R²| over the shuffle seeds."""
    c = audit.controls
    return float(c.loc[c["control"].str.startswith("label shuffle"), "r2_logg"].abs().max())


def q2_verdicts(audits: dict[str, Audit], chosen: str, params: Params) -> list[dict]:
    """Every verdict of the notebook: Gate-1 per error mode, then the label-shuffle guard per mode."""
    out = [v for k, a in audits.items() for v in gate1_verdicts(a.table, chosen, params, label=k)]
    out += [verdict("guard", "Q2", f"{k}/label_shuffle_max_abs_r2", guard_r2(a), "<",
                    params.quality.guard_max_abs_r2) for k, a in audits.items()]
    return out


def check_invariants(audits: dict[str, Audit], chosen: str, verdicts: list[dict], params: Params,
                     permutation_tol: float = 0.01) -> None:
    """Raise ``RuntimeError`` when the audit contradicts itself.

    The audit cannot leak by itself (label-shuffle guard below ``quality.guard_max_abs_r2``); pixel
    order is irrelevant to a linear model (the fixed permutation changes log g R² by less than
    ``permutation_tol``); the chosen representation passes, or a Gate-1 verdict says FAIL.
    """
    for k, a in audits.items():
        g = guard_r2(a)
        if not g < params.quality.guard_max_abs_r2:
            raise RuntimeError(f"{k}: the label-shuffle guard gives |R²| = {g:.3f} "
                               f"(>= {params.quality.guard_max_abs_r2}): the audit leaks by itself")
        c = a.controls.set_index("control")["r2_logg"]
        d = abs(c["fixed pixel permutation"] - c["raw σ (S0)"])
        if not d < permutation_tol:
            raise RuntimeError(f"{k}: a fixed pixel permutation changed the raw-σ log g R² by {d:.3g}")
    row = audits["clean"].table.set_index("representation").loc[chosen]
    gate1 = [v for v in verdicts if v["gate"] == "Gate-1"]
    if not (row["verdict"] == "PASS" or any(v["verdict"] == "FAIL" for v in gate1)):
        raise RuntimeError(f"the table says {chosen} is {row['verdict']} but no Gate-1 verdict fails")


# ------------------------------------------------------------------------------------------
# The simulator's 'estimated' error mode
# ------------------------------------------------------------------------------------------


def audit_estimated(params: Params, clean: PfsDataset | None = None,
                    progress: bool = False) -> tuple[Audit | None, AuditSample | None]:
    """Run the same audit on the ``estimated``-error mock; ``(None, None)`` when it is switched off
    (``quality.estimated_mode: false``) or the configuration has no ``data.mock`` (real data).

    With ``clean`` (the configured dataset) given,
    :func:`~snrmoe_lib.data.mock.estimated.mock_provenance` checks first that it was made by the
    same mock; a mismatch warns and is kept in the audit's notes.
    """
    if not params.quality.estimated_mode or params.data.mock is None:
        return None, None
    ds = ensure_estimated_dataset(params, sum(audit_sizes(params)), progress=progress)
    mismatch = mock_provenance(clean, params) if clean is not None else None
    if mismatch:
        warnings.warn(mismatch, AuditWarning, stacklevel=2)
    with ds:
        sample = load_audit_sample(ds, params, label="estimated", use_configured_split=False)
    audit = run_audit(sample, params)
    if mismatch:
        audit.notes.append(mismatch)
    return audit, sample


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def _iv(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}"


def audit_table(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as shown in the report: representation, n_features, R² log g, R² SNR
    (each with its 95 % bootstrap interval), the chosen α and the verdicts (point values, and
    interval ends: log g upper bound and SNR lower bound)."""
    return pd.DataFrame({
        "representation": table["representation"],
        "n_features": table["n_features"],
        "R² log g [95 %]": [_iv(*r) for r in table[["r2_logg", "r2_logg_lo", "r2_logg_hi"]].to_numpy()],
        "R² SNR [95 %]": [_iv(*r) for r in table[["r2_snr", "r2_snr_lo", "r2_snr_hi"]].to_numpy()],
        "R² log g (OLS)": table["r2_logg_ols"].round(3),
        "α log g": table["alpha_logg"],
        "α SNR": table["alpha_snr"],
        "verdict": table["verdict"],
        "interval verdict": table["verdict_interval"],
    })


def decomposition_summary(decompositions: dict[str, Decomposition]) -> str:
    """One line per error mode: how much of σ the scaled template explains, and where δ sits."""
    return "\n".join(
        f"{k:9s}: s·e0 explains {100 * d.explained_total:.3f} % of Σσ² and {100 * d.explained_variance:.2f} % "
        f"of the variation between spectra; median cos(σ, e0) = {d.cosine_median:.4f}; "
        f"the top {d.n_top} pixels hold {100 * d.top_fraction:.1f} % of Σδ²" for k, d in decompositions.items())


def dataset_record(ds: PfsDataset, audit: Audit, params: Params) -> dict:
    """The results JSON's ``dataset`` entry: path, fingerprint, the audit sizes and the split."""
    return {"path": str(ds.path), "fingerprint": dataset_fingerprint(ds), "n_train": audit.sizes["train"],
            "n_val": audit.sizes["val"], "n_test": audit.sizes["test"], "split": params.split.__dict__}


def _mode_metrics(mode: str, a: Audit, d: Decomposition | None) -> dict:
    metrics: dict = {}
    for _, r in a.table.iterrows():
        rep = r["representation"]
        metrics[f"{mode}/r2_logg[{rep}]"] = metric(r["r2_logg"], (r["r2_logg_lo"], r["r2_logg_hi"]),
                                                  alpha=r["alpha_logg"], r2_ols=r["r2_logg_ols"])
        metrics[f"{mode}/r2_snr[{rep}]"] = metric(r["r2_snr"], (r["r2_snr_lo"], r["r2_snr_hi"]),
                                                 alpha=r["alpha_snr"])
    for _, r in a.controls.iterrows():
        iv = (r["r2_logg_lo"], r["r2_logg_hi"]) if np.isfinite(r["r2_logg_lo"]) else None
        metrics[f"{mode}/control/{r['control']}"] = metric(r["r2_logg"], iv)
    metrics[f"{mode}/guard_max_abs_r2"] = metric(guard_r2(a))
    if d is not None:
        metrics[f"{mode}/decomposition/explained_total"] = metric(d.explained_total)
        metrics[f"{mode}/decomposition/explained_variance"] = metric(d.explained_variance)
        metrics[f"{mode}/decomposition/cosine_median"] = metric(d.cosine_median)
        metrics[f"{mode}/decomposition/top{d.n_top}_share"] = metric(d.top_fraction)
    return metrics


def _mode_extra(mode: str, a: Audit, d: Decomposition | None) -> dict:
    extra = {f"{mode}_table": a.table.to_dict(orient="records"),
             f"{mode}_controls": a.controls.to_dict(orient="records"),
             f"{mode}_sizes": a.sizes, f"{mode}_notes": a.notes}
    if d is not None:
        extra[f"{mode}_delta_peaks"] = d.peaks.to_dict(orient="records")
    return extra


def results_payload(audits: dict[str, Audit], chosen: str, reason: str,
                    decompositions: dict[str, Decomposition], importance_peaks: pd.DataFrame,
                    params: Params | None = None) -> tuple[dict, dict]:
    """``(metrics, extra)`` for :func:`snrmoe_lib.evaluation.records.write_results`.

    Metric names: ``<mode>/r2_logg[<rep>]``, ``<mode>/r2_snr[<rep>]``, ``<mode>/guard_max_abs_r2``,
    ``<mode>/control/<control>``, ``<mode>/decomposition/...``; the chosen representation, the
    tables and the importance peaks go to ``extra`` (with ``params``, also the path of the
    ``estimated``-mode mock, or ``None`` when that audit did not run).
    """
    metrics: dict = {}
    extra: dict = {"chosen_representation": chosen, "chosen_reason": reason, "error_modes": list(audits)}
    for mode, a in audits.items():
        metrics.update(_mode_metrics(mode, a, decompositions.get(mode)))
        extra.update(_mode_extra(mode, a, decompositions.get(mode)))
    extra["importance_peaks"] = importance_peaks.to_dict(orient="records")
    if params is not None:
        extra["estimated_dataset"] = str(estimated_path(params)) if "estimated" in audits else None
    return metrics, extra
