"""The model card of a saved model (``models/NAME/card.html``), built from its ``model.json`` record only.

One self-contained page in the Hub's style (its stylesheet and table renderer): what the model is,
the data it learned from, its frozen-test numbers per SNR bin (R² with interval, interval coverage),
its efficiency against the Fisher ceiling when the K1 results were there at fit time, the leak
check, its intended use and the mock caveat.
"""
from __future__ import annotations

import html
from typing import Any

from snrmoe_lib.evaluation.records import format_interval, format_number
from snrmoe_lib.reporting.hub import _CSS, _table_html

__all__ = ["render_card"]

INTENDED_USE = (
    "Point estimates of log g with a calibrated interval for PFS medium-resolution red-arm spectra observed "
    "like the training data (same wavelength grid, σ built the same way — see 'σ the model reads' — SNR inside "
    "the training range). "
    "Flagged stars (SNR outside the training range, too many masked or non-finite pixels, bad rows) are "
    "outside what the model was checked on. Not for other instruments, arms or resolutions without refitting.")
MOCK_CAVEAT = (
    "Trained and scored on the project's mock PFS-MR simulator, not on BOSZ / the PFS simulator: every number "
    "here is provisional and says how the pipeline behaves, not how well log g can be measured on real spectra.")


def _val(x: Any) -> str:
    return "—" if x is None else format_number(x)


def _bins_table(rec: dict) -> str:
    m = rec.get("metrics", {})
    rows = [[b["bin"], b["n"], f"{_val(b['r2'])} {format_interval(b['interval']) if b['interval'] else ''}",
             _val(b["rmse"]), _val(b["coverage"])] for b in m.get("per_bin", [])]
    rows.append(["all", m.get("n"), f"{_val(m.get('r2'))} {format_interval(m.get('r2_interval'))}", _val(m.get("rmse")),
                 _val(m.get("coverage"))])
    level = rec.get("calibration", {}).get("level")
    head = ["true SNR bin", "test stars", "R² [95 % bootstrap interval]", "RMSE (dex)",
            f"coverage of the {_val(level)} interval"]
    return _table_html("per-bin", head, rows)


def _efficiency(rec: dict) -> str:
    ceil = rec.get("ceiling")
    if not isinstance(ceil, dict) or not ceil.get("metrics"):
        return "<p>Not available: no K1 (fisher_ceiling) results for this configuration were found at fit time.</p>"
    cm = ceil["metrics"]
    value = (lambda k: (cm[k].get("value") if isinstance(cm[k], dict) else cm[k]) if k in cm else None)
    rows = []
    for b in rec.get("metrics", {}).get("per_bin", []):
        for key in (f"van_trees_r2_bin{b['bin']}", f"bayes_r2_bin{b['bin']}", f"crlb_r2_bin{b['bin']}"):
            bound = value(key)
            if bound is not None:
                eff = b["r2"] / bound if b["r2"] is not None and bound else None
                rows.append([b["bin"], _val(b["r2"]), key, _val(bound), _val(eff)])
                break
    same = ceil.get("frozen_test") == rec.get("frozen_test")
    intro = (f"<p>Per SNR bin: the deployed model's R² on the frozen test over the K1 bound of that bin "
             f"(<code>{html.escape(str(ceil.get('source', '')))}</code>; "
             f"{'the same' if same else 'NOT the same'} frozen test stars).</p>")
    if not rows:
        rows = [["all", _val(rec.get("metrics", {}).get("r2")), k, _val(value(k)), "—"] for k in sorted(cm)]
        intro = "<p>No per-bin bounds in the K1 results; its R²_max figures for reference.</p>"
    return intro + _table_html("efficiency", ["SNR bin", "R² (model)", "bound", "bound R²", "R² / bound"], rows)


def _leak(rec: dict) -> str:
    lk = rec.get("leak_check", {})
    g = lk.get("gate_inputs", {})
    esc = (lambda k: html.escape(str(g.get(k))))
    parts = [f"<p>Linear probe of log g from the gate's inputs ({esc('representation')}), frozen test: R² = "
             f"{_val(g.get('value'))} {format_interval(g.get('interval'))}, rule {esc('op')} "
             f"{_val(g.get('threshold'))}: <b>{esc('verdict')}</b>.</p>"]
    q2 = lk.get("q2", "not run")
    if isinstance(q2, dict):
        rows = [[v.get("gate"), v.get("metric"), _val(v.get("value")), format_interval(v.get("interval")),
                 f"{v.get('op')} {v.get('threshold')}", v.get("verdict")] for v in q2.get("verdicts", [])]
        parts.append("<p>Q2 audit (Gate-1), from its results file:</p>"
                     + _table_html("leak-q2", ["gate", "metric", "value", "interval", "rule", "verdict"], rows))
    else:
        parts.append("<p>Q2 audit (Gate-1): not run for this configuration when the model was fitted.</p>")
    return "".join(parts)


def _data(rec: dict) -> str:
    d, r, g = rec.get("dataset", {}), rec.get("ranges", {}), rec.get("grid", {})
    sp = d.get("split", {})
    rows = [["dataset", d.get("path")], ["fingerprint", d.get("fingerprint")],
            ["mock", "yes" if d.get("mock") else "no"],
            ["spectra (train / val / test)", f"{sp.get('n_train')} / {sp.get('n_val')} / {sp.get('n_test')} "
             f"(held out from the experts: {d.get('holdout', {}).get('n_holdout')})"],
            ["wavelength grid", f"{g.get('n_pix')} pixels, {g.get('first')}–{g.get('last')} Å "
                                f"(sha256 {g.get('sha256', '')[:16]}…)"],
            ["observed SNR range (training)", r.get("snr_obs")], ["log g range (training)", r.get("label")],
            ["noise seed", rec.get("seed")], ["code version", rec.get("code_version")], ["created", rec.get("created")]]
    return _table_html("data", ["what", "value"], rows)


FAMILY_LABELS = {"ridge": "Ridge (streamed, Q3's deployed pipeline)",
                 "boosted": "boosted trees (Q4's family: HistGradientBoosting, rounds chosen on each bin's "
                            "validation rows)",
                 "neural": "neural network (Q4's family: one 1-D trunk with a Gaussian head per SNR bin, "
                           "epochs chosen on validation)"}


def _sigma_row(rec: dict) -> list:
    e = rec.get("errors", {"error_mode": "clean"})
    vm = e.get("variance_model")
    extra = "" if not vm else f" (variance model: {vm.get('kind')}, relative RMS of σ² {_val(vm.get('rel_rms'))})"
    return [f"σ the model reads (error mode '{e.get('error_mode')}')", f"{e.get('sigma_read', '')}{extra}"]


def _model(rec: dict) -> str:
    mx, gate, cal = rec.get("mixture", {}), rec.get("gate", {}), rec.get("calibration", {})
    fam = mx.get("family", "ridge")
    glob = "global Ridge" if fam == "ridge" else f"global model ({fam})"
    rows = [[f"experts (per SNR bin): {FAMILY_LABELS.get(fam, fam)}", ", ".join(mx.get("expert_labels", []))],
            ["gate", f"{gate.get('kind')} on {rec.get('representation')} quality features "
                     f"({rec.get('representation_source')})"],
            ["fallback", f"{glob} where the gate's largest probability < τ = {mx.get('tau')} "
                         "(chosen on validation)"],
            _sigma_row(rec),
            ["intervals", f"{cal.get('method')}, level {cal.get('level')}"]]
    return _table_html("model", ["part", "what"], rows)


def render_card(record: dict, name: str | None = None) -> str:
    """The model card as one self-contained HTML page."""
    name = name or record.get("name", "model")
    mock = record.get("dataset", {}).get("mock", True)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Model card — {html.escape(name)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>Model card: {html.escape(name)}</h1>"]
    if mock:
        parts.append(f'<p class="banner" id="mock-banner">⚠️ {html.escape(MOCK_CAVEAT)}</p>')
    parts += ["<h2>Model</h2>", _model(record), "<h2>Data</h2>", _data(record),
              "<h2>Frozen test: R² and interval coverage per SNR bin</h2>", _bins_table(record),
              "<h2>Efficiency against the ceiling</h2>", _efficiency(record),
              "<h2>Leak check</h2>", _leak(record),
              "<h2>Intended use</h2>", f"<p>{html.escape(INTENDED_USE)}</p>", "</body></html>"]
    return "\n".join(parts) + "\n"
