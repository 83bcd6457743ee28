"""Figures of the Fisher-ceiling notebook: the SNR cliff, R²_max over (T_eff, log g), FD vs
autograd, and model efficiency against the ceiling per SNR bin. Each returns a Figure."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import PALETTE

__all__ = ["plot_cliff", "plot_ceiling_map", "plot_fd_vs_autograd", "plot_efficiency"]

_TAGS = {"3d": "3-D (T_eff, [M/H] unknown)", "5d": "5-D (+ [α/M], [C/M] unknown)"}


def plot_cliff(frame: pd.DataFrame, table: pd.DataFrame, snr_line: float = 4.0, floor: float = -1.0):
    """R²_max against per-pixel SNR: every star, the median per magnitude, and the Bayesian ceiling.

    Per-star values below ``floor`` are drawn at the floor (their count is in the legend), so the
    cliff stays readable; the line marks per-pixel SNR ≈ ``snr_line``.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.3))
    for tag, color, marker in (("3d", PALETTE[0], "o"), ("5d", PALETTE[3], "s")):
        r = frame[f"r2_{tag}"].to_numpy()
        n_low = int(np.sum(r < floor))
        ax.scatter(frame["snr_pixel"], np.clip(r, floor, None), s=7, alpha=0.25, color=color, marker=marker,
                   lw=0, label=f"stars, {_TAGS[tag]}" + (f" ({n_low} below {floor:g})" if n_low else ""))
        ax.plot(table["snr_pixel"], table[f"median_r2_{tag}"], color=color, marker=marker, lw=2,
                label=f"median R²_max, {tag.upper()}")
        if f"bayes_r2_{tag}" in table:
            ax.plot(table["snr_pixel"], table[f"bayes_r2_{tag}"], color=color, ls="--", lw=1.3,
                    label=f"Bayesian ceiling (population), {tag.upper()}")
    for _, row in table.iterrows():
        ax.annotate(f"i={row['mag']:g}", (row["snr_pixel"], 1.0), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=7, color="0.3")
    ax.axvline(snr_line, color="0.2", ls=":", lw=1.2)
    ax.text(snr_line, floor + 0.05, f" SNR ≈ {snr_line:g}", fontsize=8, color="0.2")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xscale("log")
    ax.set_ylim(floor - 0.03, 1.08)
    ax.set_xlabel("per-pixel SNR (median flux / σ)")
    ax.set_ylabel("R²_max of log g = 1 − CRLB / Var(log g)")
    ax.set_title("The Fisher cliff: best R² of an unbiased estimator vs SNR")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_ceiling_map(frames: dict, tags: Sequence[str] = ("3d", "5d"), vmin: float = -0.5):
    """Median R²_max over (T_eff, log g) (other parameters pooled): rows = nuisance sets, columns = magnitudes."""
    import matplotlib.pyplot as plt

    mags = sorted(frames)
    fig, axes = plt.subplots(len(tags), len(mags), figsize=(3.4 * len(mags) + 1.2, 3.0 * len(tags)),
                             squeeze=False, sharex=True, sharey=True)
    im = None
    for i, tag in enumerate(tags):
        for j, mag in enumerate(mags):
            ax, g = axes[i, j], frames[mag]
            piv = g.pivot_table(index="log_g", columns="T_eff", values=f"r2_{tag}", aggfunc="median")
            t, lg = piv.columns.to_numpy(float), piv.index.to_numpy(float)
            im = ax.pcolormesh(_edges(t), _edges(lg), piv.to_numpy(), cmap="cividis", vmin=vmin, vmax=1.0)
            ax.set_title(f"{tag.upper()}, i = {mag:g} (median SNR {g['snr_pixel'].median():.1f})", fontsize=9)
            if i == len(tags) - 1:
                ax.set_xlabel("T_eff (K)")
            if j == 0:
                ax.set_ylabel("log g (dex)")
    fig.colorbar(im, ax=axes.ravel().tolist(), label=f"median R²_max (clipped at {vmin:g})")
    fig.suptitle("Where the information is: R²_max over (T_eff, log g)", fontsize=10)
    return fig


def _edges(c: np.ndarray) -> np.ndarray:
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def plot_fd_vs_autograd(check: pd.DataFrame):
    """σ_CRLB of log g from grid finite differences against the exact autograd value, per star."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for tag, color, marker in (("3d", PALETTE[0], "o"), ("5d", PALETTE[3], "s")):
        ax.scatter(check[f"sigma_ad_{tag}"], check[f"sigma_fd_{tag}"], color=color, marker=marker, s=28,
                   label=tag.upper())
    v = check[[c for c in check if c.startswith("sigma_")]].to_numpy(float)
    lo, hi = np.nanmin(v) * 0.8, np.nanmax(v) * 1.25
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, ls="--", label="1 : 1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ_CRLB(log g), autograd (dex)")
    ax.set_ylabel("σ_CRLB(log g), grid finite differences (dex)")
    ax.set_title("Finite differences vs exact derivatives", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_efficiency(bins: pd.DataFrame, efficiency: pd.DataFrame, tag: str = "5d"):
    """Per SNR bin: median R²_max and the Bayesian ceiling, and each model's R² (efficiency annotated)."""
    import matplotlib.pyplot as plt

    labels = bins["bin"].astype(str).tolist()
    short = [b.split()[0] for b in labels]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    med = bins[f"median_r2_{tag}"].to_numpy(float)
    ax.bar(x - 0.2, np.clip(med, -1, None), width=0.38, color=PALETTE[5], alpha=0.45,
           label=f"median per-star R²_max, unbiased ({tag.upper()})")
    ax.bar(x + 0.2, bins[f"bayes_{tag}"], width=0.38, color=PALETTE[1], alpha=0.45,
           label=f"Bayesian ceiling, population ({tag.upper()})")
    for xi, c in zip(x, bins[f"ceiling_{tag}"]):
        if np.isfinite(c):
            ax.annotate(f"1−⟨CRLB⟩/Var\n= {c:.2g}", (xi - 0.2, -1.0), fontsize=6, ha="center",
                        va="bottom", color="0.25")
    if efficiency is not None and len(efficiency):
        models = list(dict.fromkeys(efficiency["model"]))
        colors = [PALETTE[i] for i in (0, 3, 2, 4, 7)]  # not the bars' colours, nor pale yellow
        markers = "oDv^<>ph"
        width = 0.8 / len(models)
        for j, m in enumerate(models):
            e = efficiency[efficiency["model"].eq(m) & efficiency["bin"].isin(short)]
            # spread the models across each bin so that markers and labels do not overlap
            xi = np.array([short.index(b) for b in e["bin"]]) - 0.4 + width * (j + 0.5)
            ax.scatter(xi, e["r2"], color=colors[j % len(colors)], marker=markers[j % len(markers)],
                       s=30, zorder=3, edgecolor="white", lw=0.5, label=f"{m} (R²)")
            for xx, (_, row) in zip(xi, e.iterrows()):
                if np.isfinite(row["efficiency"]):
                    ax.annotate(f"{row['efficiency']:.2f}", (xx, row["r2"]), textcoords="offset points",
                                xytext=(0, 5), fontsize=5.5, ha="center", rotation=90)
    else:
        ax.text(0.02, 0.97, "no Q1/Q3 results found for this configuration: ceilings only",
                transform=ax.transAxes, fontsize=8, va="top", color="0.3")
    ax.set_xticks(x, [f"{lab}\n(n={n})" for lab, n in zip(labels, bins["n"])])
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylim(-1.05, 1.1)
    ax.set_xlabel("SNR bin (per-spectrum SNR, the configuration's definition)")
    ax.set_ylabel("R² of log g")
    ax.set_title("How close are the models to the limit? (labels: R² / Bayesian ceiling)", fontsize=10)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
