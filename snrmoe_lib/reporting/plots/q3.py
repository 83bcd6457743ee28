"""Figures of the Q3 notebook (deployable gate, regression gate, Gate-4 controls).

Each function returns a matplotlib Figure; the notebook saves it with :func:`snrmoe_lib.plots.save_figure`.
Colours come from the Okabe–Ito palette (colour-blind safe).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import PALETTE, interval_extent

__all__ = ["plot_r2_table", "plot_rho", "plot_confusion", "plot_per_bin", "plot_gate_confidence", "plot_tau_sweep", "gate_figures", "rho_figure", "bin_figures"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _names(table: pd.DataFrame, labels: dict | None) -> list[str]:
    return [labels.get(m, m) if labels else m for m in table.index]


def plot_r2_table(table: pd.DataFrame, labels: dict | None = None, title: str = ""):
    """R² of every model (seed mean) with its 95 % interval; dotted lines at the global and oracle R²."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(table) + 1.2))
    yy = np.arange(len(table))[::-1]
    controls = ("whitening", "conditional", "interacted", "snr_alpha", "snr_alpha_gated", "blend_fixed",
                "bagging_random")
    kind = ["control" if m in controls else "ref" if m in ("global", "oracle") or m.startswith("oracle_") else "moe"
            for m in table.index]
    col = {"ref": PALETTE[7], "moe": PALETTE[0], "control": PALETTE[3]}
    for y, (m, r), k in zip(yy, table.iterrows(), kind):
        ax.errorbar(r["r2"], y, xerr=interval_extent(r["r2"], r["r2_lo"], r["r2_hi"]), fmt="o", color=col[k],
                    capsize=3)
    for m, ls in (("global", ":"), ("oracle", "--")):
        if m in table.index:
            ax.axvline(table.loc[m, "r2"], color="0.4", ls=ls, lw=1, label=f"{m} R²")
    ax.set_yticks(yy)
    ax.set_yticklabels(_names(table, labels), fontsize=8)
    ax.set_xlabel("R² of log g on the test spectra (mean over noise seeds, 95 % interval)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "Global, oracle, deployed mixtures and single-model controls", fontsize=10)
    fig.tight_layout()
    return fig


def plot_rho(table: pd.DataFrame, models: Sequence[str], threshold: float, labels: dict | None = None,
             gap_interval: Sequence[float] | None = None):
    """The ρ diagram: ΔR² against the global model for each model (left) and ρ with the Gate-3 line (right).

    ρ is drawn only where it is defined; otherwise the panel says why (oracle gap within noise).
    """
    plt = _plt()
    t = table.loc[list(models)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.4 * len(t) + 1.6), sharey=True)
    yy = np.arange(len(t))[::-1]
    for y, (m, r) in zip(yy, t.iterrows()):
        a1.errorbar(r["delta_r2"], y, xerr=interval_extent(r["delta_r2"], r["delta_lo"], r["delta_hi"]),
                    fmt="o", color=PALETTE[0], capsize=3)
    a1.axvline(0, color="0.4", lw=1, ls=":")
    if "oracle" in table.index:
        a1.axvline(table.loc["oracle", "delta_r2"], color=PALETTE[1], lw=1.2, ls="--", label="oracle gap")
        if gap_interval is not None and np.all(np.isfinite(gap_interval)):
            a1.axvspan(*gap_interval, color=PALETTE[1], alpha=0.15, lw=0)
        a1.legend(fontsize=8, loc="lower right")
    a1.set_yticks(yy)
    a1.set_yticklabels(_names(t, labels), fontsize=8)
    a1.set_xlabel("ΔR² = R² − R²(global)")
    a1.set_title("Gain over the global model", fontsize=10)
    defined = np.isfinite(t["rho"].to_numpy())
    for y, (m, r), ok in zip(yy, t.iterrows(), defined):
        if ok:
            a2.errorbar(r["rho"], y, xerr=interval_extent(r["rho"], r["rho_lo"], r["rho_hi"]), fmt="s",
                        color=PALETTE[2], capsize=3)
    a2.axvline(threshold, color=PALETTE[3], ls="--", lw=1.2, label=f"Gate-3 threshold ρ = {threshold:g}")
    a2.axvline(0, color="0.4", lw=1, ls=":")
    a2.axvline(1, color="0.4", lw=1, ls=":")
    if not defined.any():
        a2.text(0.5, 0.5, "ρ undefined:\nthe oracle gap R²(oracle) − R²(global)\nis within noise of zero",
                transform=a2.transAxes, ha="center", va="center", fontsize=9, color="0.3")
        a2.set_xlim(-0.5, 1.5)
    a2.set_xlabel("ρ = (R² − R²_global) / (R²_oracle − R²_global)")
    a2.set_title("Retained share of the oracle's gain", fontsize=10)
    a2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_confusion(cm: pd.DataFrame, title: str = ""):
    """Row-normalised confusion matrix (true expert bin × gate's most probable bin) with counts."""
    plt = _plt()
    M = cm.to_numpy().astype(float)
    R = M / np.where(M.sum(axis=1, keepdims=True) > 0, M.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(cm) + 2.2, 1.0 * len(cm) + 1.4))
    im = ax.imshow(R, cmap="cividis", vmin=0, vmax=1)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, f"{R[i, j]:.2f}\n({int(M[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if R[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(cm.columns)))
    ax.set_xticklabels(cm.columns)
    ax.set_yticks(range(len(cm.index)))
    ax.set_yticklabels(cm.index)
    ax.set_xlabel("gate's most probable SNR bin")
    ax.set_ylabel("true SNR bin (expert)")
    fig.colorbar(im, ax=ax, label="fraction of the true bin's spectra")
    ax.set_title(title or "Gate confusion matrix (test spectra, all seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_per_bin(per_bin: pd.DataFrame, models: Sequence[str], labels: dict | None = None):
    """R² per true SNR bin for each model, with 95 % intervals and the bin counts on the axis."""
    plt = _plt()
    bins = list(dict.fromkeys(per_bin["bin"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        d = per_bin[per_bin["model"] == m].set_index("bin").reindex(bins)
        x = np.arange(len(bins)) - 0.4 + w * (i + 0.5)
        err = interval_extent(d["r2"], d["r2_lo"], d["r2_hi"])
        ax.errorbar(x, d["r2"], yerr=err, fmt="o", color=PALETTE[i % len(PALETTE)], capsize=2,
                    label=labels.get(m, m) if labels else m)
    n = per_bin.drop_duplicates("bin").set_index("bin").reindex(bins)["n"]
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels([f"{b}\n(n = {int(k)})" for b, k in zip(bins, n)])
    ax.axhline(0, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("true SNR bin (L2 SNR)")
    ax.set_ylabel("R² of log g within the bin")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Per-bin R² (mean over noise seeds, 95 % interval)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_gate_confidence(max_proba: dict, tau: float):
    """Distribution of the gate's max_k p_k per gate kind, with the fallback threshold τ."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    bins = np.linspace(0, 1, 41)
    for i, (name, v) in enumerate(max_proba.items()):
        ax.hist(v, bins=bins, histtype="step", lw=1.5, color=PALETTE[i % len(PALETTE)], label=name, density=True)
    ax.axvline(tau, color=PALETTE[3], ls="--", label=f"fallback threshold τ = {tau:g}")
    ax.set_xlabel("gate confidence max_k p_k")
    ax.set_ylabel("density of test spectra")
    ax.legend(fontsize=8)
    ax.set_title("Below τ the global model answers (fallback)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_tau_sweep(sweep: pd.DataFrame, tau_chosen: float):
    """R² against coverage (fraction of spectra mixed rather than sent to the global model) over the τ
    grid, validation and test; the τ chosen on validation marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, split in enumerate(("val", "test")):
        ax.plot(sweep[("coverage", split)], sweep[("r2", split)], "o-", color=PALETTE[i], label=split)
        for tau, cx, ry in zip(sweep.index, sweep[("coverage", split)], sweep[("r2", split)]):
            if split == "test":
                ax.annotate(f"τ={tau:g}", (cx, ry), fontsize=7, xytext=(3, 3), textcoords="offset points")
    sel = sweep.index[np.argmin(np.abs(sweep.index.to_numpy() - tau_chosen))]
    ax.plot(sweep.loc[sel, ("coverage", "test")], sweep.loc[sel, ("r2", "test")], "s", ms=10, mfc="none",
            color=PALETTE[3], label=f"τ chosen on validation ({tau_chosen:g})")
    ax.set_xlabel("coverage: fraction of test spectra mixed (not fallen back)")
    ax.set_ylabel("R² of log g (seed mean)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def gate_figures(diagnostics: dict, kind: str, tau: float, n_seeds: int) -> dict:
    """The gate's confusion matrix and the distribution of its largest probability, keyed by file name.

    Parameters
    ----------
    diagnostics : dict
        :func:`~snrmoe_lib.analyses.q3.gate_diagnostics` (``confusion``, ``max_proba``).
    kind : str
        The deployed gate (``gate.kind``), named in the title.
    tau : float
        The fallback threshold chosen on validation (first seed).
    n_seeds : int
        Number of seeds behind the confusion matrix (named in the title).
    """
    title = f"{kind} gate: confusion matrix (test spectra, {n_seeds} seeds)"
    return {"q3_confusion": plot_confusion(diagnostics["confusion"], title),
            "q3_gate_confidence": plot_gate_confidence(diagnostics["max_proba"], tau)}


def rho_figure(summary, threshold: float, labels: dict | None = None):
    """:func:`plot_rho` of every model but the global one and the hard oracle, with the oracle gap's interval.

    Parameters
    ----------
    summary : Summary
        :func:`~snrmoe_lib.analyses.q3.summarize` (its ``table`` and ``oracle_gap_interval``).
    threshold : float
        ``thresholds.gate3_rho_min``.
    labels : dict, optional
        Display names (:func:`~snrmoe_lib.analyses.q3.model_names`).
    """
    models = [m for m in summary.table.index if m not in ("global", "oracle")]
    return plot_rho(summary.table, models, threshold, labels, summary.oracle_gap_interval)


def bin_figures(per_bin: pd.DataFrame, models: Sequence[str], summary, threshold: float, labels: dict | None = None) -> dict:
    """The per-bin R² figure (:func:`plot_per_bin`) and the ρ diagram (:func:`rho_figure`), keyed by file name.

    Parameters
    ----------
    per_bin : pandas.DataFrame
        :func:`~snrmoe_lib.analyses.q3.per_bin` of ``models``.
    models : sequence of str
        Models of the per-bin figure.
    summary : Summary
        :func:`~snrmoe_lib.analyses.q3.summarize`.
    threshold : float
        ``thresholds.gate3_rho_min``.
    labels : dict, optional
        Display names (:func:`~snrmoe_lib.analyses.q3.model_names`).
    """
    return {"q3_per_bin": plot_per_bin(per_bin, models, labels), "q3_rho": rho_figure(summary, threshold, labels)}
