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

from snrmoe_lib.analyses.q2_audit import SHORT, Audit, conjunction, leak_limits, run_audit
from snrmoe_lib.analyses.q2_controls import chosen_guard
from snrmoe_lib.analyses.q2_fit import representation_features
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
    "guard_chosen",
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
    """The representation ``quality_features`` will use, and why — read from the VALIDATION block only.

    ``chosen='auto'``: among the rows that pass Gate-1 on the validation block (``verdict_val``:
    every audited label's whole bootstrap interval below its limit, Ridge and non-linear probe, and
    the SNR's above its minimum; ``by='point'``: ``verdict_val_point``, the point values), the best
    validation SNR R² (ties: fewer features). With no passing row, the one with the lowest
    validation log g R² is named (and Gate-1 then fails or stays inconclusive with its test
    numbers). An explicit name is used as given (it must be in the table). No test score is read.
    """
    if chosen != "auto":
        if chosen not in set(table["representation"]):
            raise ValueError(f"quality.chosen={chosen!r} is not among the audited representations "
                             f"{table['representation'].tolist()}")
        return chosen, "set in the parameters (quality.chosen)"
    if by not in ("interval", "point"):
        raise ValueError(f"by must be 'interval' or 'point', got {by!r}")
    col = "verdict_val" if by == "interval" else "verdict_val_point"
    ok = table[table[col] == "PASS"]
    if len(ok):
        best = ok.sort_values(["r2_snr_val", "n_features"], ascending=[False, True]).iloc[0]
        how = "whose whole 95 % interval passes" if by == "interval" else "passing on point values"
        return str(best["representation"]), f"best validation SNR R² among the representations {how} on validation"
    best = table.sort_values(["r2_logg_val", "n_features"]).iloc[0]
    return str(best["representation"]), "no representation passes on validation; the one leaking least there is named"


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
    """The Gate-1 verdict records for ``chosen`` on the test block: each audited label's R² below
    its limit (Ridge, then the non-linear probe where it ran), and the SNR R² above its minimum."""
    th = params.thresholds
    r = table.set_index("representation").loc[chosen]
    suffix = "" if label == "clean" else f" ({label} errors)"
    out = []
    for target, limit in leak_limits(th).items():
        for pre, probe in (("", ""), ("nl_", "_nonlinear")):
            col = f"{pre}r2_{SHORT[target]}"
            if col not in r.index or (pre and not np.isfinite(r[col])):
                continue
            out.append(verdict("Gate-1" + suffix, "Q2", f"r2_{SHORT[target]}{probe}[{chosen}]", r[col], "<", limit,
                               (r[f"{col}_lo"], r[f"{col}_hi"])))
    out.append(verdict("Gate-1" + suffix, "Q2", f"r2_snr[{chosen}]", r["r2_snr"], ">", th.gate1_snr_r2_min,
                       (r["r2_snr_lo"], r["r2_snr_hi"])))
    return out


def guard_r2(audit: Audit) -> float:
    """The label-shuffle guard on the raw σ: the largest |R²| over the shuffle seeds."""
    c = audit.controls
    return float(c.loc[c["control"].str.startswith("label shuffle"), "r2_logg"].abs().max())


def guard_chosen(samples: dict[str, AuditSample], chosen: str, params: Params) -> dict[str, pd.DataFrame]:
    """The label-shuffle guard on the chosen representation, per error mode (Ridge and non-linear probe)."""
    return {k: chosen_guard(s, params, representation_features(chosen, s, params)) for k, s in samples.items()}


def q2_verdicts(audits: dict[str, Audit], chosen: str, params: Params,
                guards: dict[str, pd.DataFrame] | None = None) -> list[dict]:
    """Every verdict of the notebook: Gate-1 per error mode, then the label-shuffle guards per mode
    (raw σ: the largest |R²|; and, with ``guards``, the chosen representation under the Ridge and the
    non-linear probe: the largest R² over the seeds, decided on its interval)."""
    lim = params.quality.guard_max_abs_r2
    out = [v for k, a in audits.items() for v in gate1_verdicts(a.table, chosen, params, label=k)]
    out += [verdict("guard", "Q2", f"{k}/label_shuffle_max_abs_r2", guard_r2(a), "<", lim) for k, a in audits.items()]
    for k, g in (guards or {}).items():
        for probe, rows in g.groupby("probe", sort=False):
            # a leak shows as a positive R² on fake labels; a negative one is noise fitted and lost
            worst = rows.loc[rows["r2_logg"].idxmax()]
            out.append(verdict("guard", "Q2", f"{k}/label_shuffle_max_r2[{chosen}, {probe}]", worst["r2_logg"], "<",
                               lim, (worst["r2_logg_lo"], worst["r2_logg_hi"])))
    return out


def check_invariants(audits: dict[str, Audit], chosen: str, verdicts: list[dict], params: Params,
                     permutation_tol: float = 0.01) -> None:
    """Raise ``RuntimeError`` when the audit contradicts itself.

    The audit cannot leak by itself (label-shuffle guard below ``quality.guard_max_abs_r2``); pixel
    order is irrelevant to a linear model (the fixed permutation changes log g R² by less than
    ``permutation_tol``); no label-shuffle guard verdict fails (also on the chosen representation);
    the chosen representation's test-interval verdict in the table agrees with its Gate-1 verdicts.
    """
    failed = [v["metric"] for v in verdicts if v["gate"] == "guard" and v["verdict"] == "FAIL"]
    if failed:
        raise RuntimeError(f"label-shuffle guard(s) {failed} reach |R²| >= {params.quality.guard_max_abs_r2}: "
                           "the audit leaks by itself")
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
    gate1 = [v["verdict"] for v in verdicts if v["gate"] == "Gate-1"]
    if row["verdict_interval"] != conjunction(gate1):
        raise RuntimeError(f"the table says {chosen} is {row['verdict_interval']} on test but the Gate-1 "
                           f"verdicts say {gate1}")


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


def _cell(row: pd.Series, col: str) -> str:
    if col not in row.index or not np.isfinite(row[col]):
        return "—"
    return _iv(row[col], row[f"{col}_lo"], row[f"{col}_hi"])


def audit_table(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as shown in the report: per representation, the test R² of log g, T_eff and
    [M/H] from the Ridge and from the non-linear probe ("—" where it did not run), of the SNR, each
    with its 95 % bootstrap interval; the validation verdict (what the choice reads) and the test
    verdicts (interval, and point values)."""
    out = {"representation": table["representation"], "n_features": table["n_features"]}
    for target, name in (("logg", "log g"), ("teff", "T_eff"), ("mh", "[M/H]")):
        if f"r2_{target}" in table:
            out[f"R² {name} Ridge"] = [_cell(r, f"r2_{target}") for _, r in table.iterrows()]
            out[f"R² {name} non-linear"] = [_cell(r, f"nl_r2_{target}") for _, r in table.iterrows()]
    out["R² SNR [95 %]"] = [_cell(r, "r2_snr") for _, r in table.iterrows()]
    out["α log g"] = table["alpha_logg"]
    out["validation verdict"] = table["verdict_val"]
    out["test verdict"] = table["verdict_interval"]
    out["test verdict (point)"] = table["verdict"]
    return pd.DataFrame(out)


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
        for short in SHORT.values():
            for pre, probe in (("", ""), ("nl_", "_nonlinear")):
                col = f"{pre}r2_{short}"
                if col in r.index and np.isfinite(r[col]):
                    extra = {"alpha": r["alpha_logg"], "r2_ols": r["r2_logg_ols"]} if col == "r2_logg" else {}
                    metrics[f"{mode}/r2_{short}{probe}[{rep}]"] = metric(
                        r[col], (r[f"{col}_lo"], r[f"{col}_hi"]), validation=r[f"{col}_val"],
                        validation_interval=[r[f"{col}_val_lo"], r[f"{col}_val_hi"]], **extra)
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
                    params: Params | None = None, guards: dict[str, pd.DataFrame] | None = None) -> tuple[dict, dict]:
    """``(metrics, extra)`` for :func:`snrmoe_lib.evaluation.records.write_results`.

    Metric names: ``<mode>/r2_<label>[<rep>]`` (label: logg, snr, teff, mh; Ridge, with the
    validation score beside the test one), ``<mode>/r2_<label>_nonlinear[<rep>]`` (the non-linear
    probe), ``<mode>/guard_max_abs_r2``,
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
    for mode, g in (guards or {}).items():
        extra[f"{mode}_chosen_guard"] = g.to_dict(orient="records")
    if params is not None:
        extra["estimated_dataset"] = str(estimated_path(params)) if "estimated" in audits else None
    return metrics, extra
