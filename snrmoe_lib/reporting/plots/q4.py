"""Figures of the Q4 notebook (stronger experts): the table, per-bin R², coverage, PIT, learning curves.

Each function returns a matplotlib Figure; the notebook saves it with ``run.save``. Colours: the
Okabe–Ito palette (colour-blind safe), one colour per family; the variant is the marker (points) or
the hatch (bars), so the figures stay readable with three families.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import PALETTE, interval_extent

__all__ = ["plot_table", "plot_per_bin", "plot_coverage", "plot_pit", "plot_learning_curve"]

_MARKERS = {"global": "s", "oracle_hard": "^", "oracle_soft": "v", "deployed": "o", "conditional": "D",
            "residual_mixture": "P", "residual_oracle_hard": "X"}
_HATCHES = {"global": "", "oracle_hard": "//", "oracle_soft": "\\\\", "deployed": "..", "conditional": "xx",
            "residual_mixture": "oo", "residual_oracle_hard": "++"}


def _split(model: str) -> tuple[str, str]:
    """(family, variant) of a table model; the residual mixture on the base family is its own 'family'."""
    if model.startswith("residual_"):
        return "residual", model
    fam, _, variant = model.partition("_")
    return fam, variant


def _styles(models: Sequence[str]) -> dict:
    """Per model: colour (its family's), marker and hatch (its variant's)."""
    col = _family_colors([_split(m)[0] for m in models])
    return {m: (col[_split(m)[0]], _MARKERS.get(_split(m)[1], "o"), _HATCHES.get(_split(m)[1], ""))
            for m in models}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _family_colors(families: Sequence[str]) -> dict:
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(dict.fromkeys(families))}


def plot_table(table: pd.DataFrame):
    """R² of every model on the test stars with its 95 % interval, coloured by family."""
    plt = _plt()
    col = _family_colors(table["family"])
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(table) + 1.2))
    yy = np.arange(len(table))[::-1]
    for y, (m, r) in zip(yy, table.iterrows()):
        ax.errorbar(r["r2"], y, xerr=interval_extent(r["r2"], r["r2_lo"], r["r2_hi"]), fmt="o",
                    color=col[r["family"]], capsize=3)
    ax.set_yticks(yy)
    ax.set_yticklabels(list(table.index), fontsize=8)
    ax.set_xlabel("R² of log g on the frozen test stars (95 % interval)")
    for f, c in col.items():
        ax.plot([], [], "o", color=c, label=f)
    ax.legend(fontsize=8, loc="best", title="family", title_fontsize=8)
    ax.set_title("Global, oracle and deployed models per family; residual mixture", fontsize=10)
    fig.tight_layout()
    return fig


def _side_by_side(frame: pd.DataFrame, models: Sequence[str], bins: list):
    """Per model: its rows indexed by ``bins``, the x positions of its markers beside the other models'
    at each bin, and the width each model gets."""
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        yield (m, frame[frame["model"] == m].set_index("bin").reindex(bins),
               np.arange(len(bins)) + (i - (len(models) - 1) / 2) * width, width)


def plot_per_bin(pb: pd.DataFrame, models: Sequence[str]):
    """Per-SNR-bin R² (95 % interval) of ``models``."""
    plt = _plt()
    bins = list(dict.fromkeys(pb["bin"]))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    sty = _styles(models)
    for m, t, x, width in _side_by_side(pb, models, bins):
        err = interval_extent(t["r2"], t["r2_lo"], t["r2_hi"])
        ax.bar(x, t["r2"], width, color=sty[m][0], hatch=sty[m][2], edgecolor="white", label=m,
               yerr=err, capsize=2)
    ax.set_xticks(np.arange(len(bins)))
    ax.set_xticklabels([f"{b}\n(n = {int(n)})" for b, n in
                        zip(bins, pb.drop_duplicates("bin").set_index("bin").reindex(bins)["n"])])
    ax.set_xlabel("true SNR bin (L2 SNR)")
    ax.set_ylabel("R² of log g within the bin")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_coverage(cov: pd.DataFrame, models: Sequence[str], method: str = "mondrian"):
    """Empirical coverage of the 68 % and 95 % intervals per SNR bin (95 % bootstrap interval) for one
    method ('mondrian', σ-scaled for models that predict a σ; 'global'; 'gaussian': raw σ)."""
    plt = _plt()
    t = cov[(cov["method"] == method) & (cov["model"].isin(models))]
    levels = sorted(t["level"].unique())
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.6), squeeze=False)
    for ax, lv in zip(axes[0], levels):
        sub = t[t["level"] == lv]
        bins = list(dict.fromkeys(sub["bin"]))
        sty = _styles(models)
        for m, s, x, _ in _side_by_side(sub, models, bins):
            err = interval_extent(s["coverage"], s["lo"], s["hi"])
            ax.errorbar(x, s["coverage"] * 100, yerr=err * 100, fmt=sty[m][1], color=sty[m][0],
                        label=m, capsize=2, ms=4)
        ax.axhline(lv * 100, color="0.3", ls="--", lw=1, label=f"nominal {lv:.0%}")
        ax.set_xticks(np.arange(len(bins)))
        ax.set_xticklabels(bins)
        ax.set_xlabel("true SNR bin")
        ax.set_ylabel("coverage of the test stars (%)")
        what = "raw Gaussian ŷ ± z·σ" if method == "gaussian" else f"{method.capitalize()} conformal"
        ax.set_title(f"{lv:.0%} intervals ({what})", fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pit(pits: dict):
    """PIT histograms (uniform when the intervals are calibrated); the dashed line is the uniform count."""
    plt = _plt()
    n = len(pits)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False, sharey=True)
    for i, (ax, (m, p)) in enumerate(zip(axes[0], pits.items())):
        h = p["histogram"]
        edges = np.asarray(h["edges"])
        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=PALETTE[i % len(PALETTE)],
               edgecolor="white")
        ax.axhline(h["expected"], color="0.3", ls="--", lw=1)
        ax.set_xlabel("PIT of the test residual")
        ax.set_title(m, fontsize=9)
    axes[0][0].set_ylabel("test stars per PIT bin")
    fig.tight_layout()
    return fig


def plot_learning_curve(curve: pd.DataFrame):
    """Test R² against training spectra per family (colour) and model (marker), 95 % intervals."""
    plt = _plt()
    t = curve[curve["model"].notna()]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if len(t) and t.groupby("family")["n_train"].nunique().max() == 1:
        return _one_size(fig, ax, t)
    col = _family_colors(t["family"])
    for (f, m), s in t.groupby(["family", "model"], sort=False):
        s = s.sort_values("n_train")
        ax.errorbar(s["n_train"], s["r2"], yerr=interval_extent(s["r2"], s["lo"], s["hi"]),
                    color=col[f], marker=_MARKERS.get(m, "o"), ls="-" if m == "deployed" else ":", capsize=2,
                    label=f"{f} · {m}")
    ax.set_xscale("log")
    ax.set_xlabel("training spectra")
    ax.set_ylabel("R² of log g on the test stars")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Learning curve per family", fontsize=10)
    fig.tight_layout()
    return fig


def _one_size(fig, ax, t: pd.DataFrame):
    """One training size per family (``q4.curve_sizes`` empty): the models side by side per family."""
    fams, models = list(dict.fromkeys(t["family"])), list(dict.fromkeys(t["model"]))
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        s = t[t["model"] == m].set_index("family").reindex(fams)
        x = np.arange(len(fams)) - 0.4 + width * (j + 0.5)
        ax.errorbar(x, s["r2"], yerr=interval_extent(s["r2"], s["lo"], s["hi"]), ls="none", capsize=2,
                    marker=_MARKERS.get(m, "o"), color=PALETTE[j % len(PALETTE)], label=m)
    n = t.groupby("family")["n_train"].first()
    ax.set_xticks(np.arange(len(fams)), [f"{f}\n({int(n[f]):,} training spectra)" for f in fams])
    ax.set_ylabel("R² of log g on the test stars")
    ax.legend(fontsize=7, title="model", title_fontsize=7)
    ax.set_title("R² per family at one training size (no learning curve: q4.curve_sizes is empty)", fontsize=10)
    fig.tight_layout()
    return fig
