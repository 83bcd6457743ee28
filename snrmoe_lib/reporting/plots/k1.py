"""Figures of the Fisher-ceiling notebook: the SNR cliff, R²_max over (T_eff, log g), the
finite-difference step-halving check, the per-bin bounds with the models' R², and the MAP fit's
residuals against the truth. Each returns a Figure."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.k1_efficiency import residual_frame
from snrmoe_lib.reporting.plots.common import PALETTE, interval_extent

__all__ = ["plot_cliff", "plot_ceiling_map", "plot_fd_convergence", "plot_bin_bounds", "plot_residuals",
           "ceiling_figures", "bin_bounds_figures", "residual_figures",
           "check_figures", "map_figures"]

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
        ax.errorbar(table["snr_pixel"], table[f"r2_{tag}"],
                    yerr=interval_extent(table[f"r2_{tag}"], table[f"r2_{tag}_lo"], table[f"r2_{tag}_hi"]),
                    color=color, marker=marker, lw=2, capsize=3, label=f"median R²_max (95 % interval), {tag.upper()}")
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


def plot_fd_convergence(conv: pd.DataFrame):
    """Median |σ_FD/σ_autograd − 1| (with its interval) against the finite-difference step, per magnitude."""
    import matplotlib.pyplot as plt

    tags = list(dict.fromkeys(conv["tag"]))
    fig, axes = plt.subplots(1, len(tags), figsize=(4.3 * len(tags), 3.8), squeeze=False, sharey=True)
    mags = sorted(conv["mag"].unique())
    for ax, tag in zip(axes[0], tags):
        for j, m in enumerate(mags):
            g = conv[(conv["tag"] == tag) & (conv["mag"] == m)].sort_values("step_factor")
            ax.errorbar(g["step_factor"], g["median_abs_dev"], yerr=interval_extent(g["median_abs_dev"], g["lo"], g["hi"]),
                        color=PALETTE[j % len(PALETTE)], marker="o", ms=4, capsize=2, lw=1.2, label=f"i = {m:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("step / grid step")
        ax.set_title(_TAGS.get(tag, tag), fontsize=9)
    axes[0, 0].set_ylabel("median |σ_FD / σ_autograd − 1|")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Finite differences against exact derivatives, step halving", fontsize=10)
    fig.tight_layout()
    return fig


_BOUND_STYLE = {"vantrees": ("Van Trees, sampling prior (any estimator)", PALETTE[2]),
                "bayes": ("Gaussian prior (linear shrinkage)", PALETTE[1]),
                "crlb_median": ("unbiased CRLB, median star", PALETTE[5])}


def plot_bin_bounds(bounds: pd.DataFrame, efficiency: pd.DataFrame | None, tag: str = "5d"):
    """Per SNR bin: the R² each bound allows (bars with intervals) and each model's R² (markers)."""
    import matplotlib.pyplot as plt

    b = bounds[bounds["tag"] == tag].reset_index(drop=True)
    x = np.arange(len(b))
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    w = 0.8 / len(_BOUND_STYLE)
    for j, (name, (label, color)) in enumerate(_BOUND_STYLE.items()):
        if f"{name}_r2" not in b:
            continue
        v = b[f"{name}_r2"].to_numpy(float)
        err = interval_extent(v, b[f"{name}_r2_lo"], b[f"{name}_r2_hi"])
        ax.bar(x - 0.4 + w * (j + 0.5), np.clip(v, -1, None), width=w, color=color, alpha=0.5, label=label,
               yerr=err, capsize=2)
    if efficiency is not None and len(efficiency):
        models = list(dict.fromkeys(efficiency["model"]))
        for j, m in enumerate(models):
            e = efficiency[efficiency["model"] == m]
            xi = np.array([list(b["bin"]).index(v) for v in e["bin"]]) - 0.35 + 0.7 * (j + 0.5) / len(models)
            ax.scatter(xi, e["r2"], color=PALETTE[(j + 3) % len(PALETTE)], marker="oDv^<>ph*"[j % 9], s=18,
                       zorder=3, edgecolor="white", lw=0.4, label=f"{m} (R²)")
    else:
        ax.text(0.02, 0.97, "no Q1/Q3 results found for this configuration: bounds only",
                transform=ax.transAxes, fontsize=8, va="top", color="0.3")
    ax.set_xticks(x, [f"{lab}\n({n} of {nt} stars)" for lab, n, nt in zip(b["bin"], b["n_stars"], b["n_test"])])
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylim(-1.05, 1.1)
    ax.set_xlabel("SNR bin of the frozen test (true SNR, the configuration's definition)")
    ax.set_ylabel("R² of log g (bin variance)")
    ax.set_title(f"Bounds per SNR bin ({tag.upper()}) and the models' R²", fontsize=10)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_residuals(stars: pd.DataFrame, labels: Sequence[str], pred: str = "logg_map", title: str = "MAP fit"):
    """Residual (prediction − truth) of log g against the true log g, one panel per SNR bin."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(labels), figsize=(3.0 * len(labels), 3.2), sharey=True, squeeze=False)
    for k, (ax, lab) in enumerate(zip(axes[0], labels)):
        g = stars[stars["bin"] == k]
        ax.scatter(g["log_g"], g[pred] - g["log_g"], s=8, alpha=0.5, color=PALETTE[0], lw=0)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_title(f"{lab} (n = {len(g)})", fontsize=9)
        ax.set_xlabel("true log g (dex)")
    axes[0, 0].set_ylabel("predicted − true log g (dex)")
    fig.suptitle(f"{title}: residual against truth per SNR bin (shrinkage shows as a negative slope)", fontsize=10)
    fig.tight_layout()
    return fig


#: Magnitudes of the R²_max map over (T_eff, log g).
MAP_MAGS = (21.5, 22.5)

#: Notebook, model and title of each residual figure of the models' per-star predictions.
RESIDUAL_MODELS = (("q1_snr_headroom", "global", "Q1 global Ridge"), ("q3_deployable_gate", "deployed", "Q3 deployed mixture"))


def ceiling_figures(frame: pd.DataFrame, table: pd.DataFrame) -> dict:
    """The SNR cliff (:func:`plot_cliff`) and the R²_max map at :data:`MAP_MAGS` (:func:`plot_ceiling_map`),
    keyed by file name.

    Parameters
    ----------
    frame : pandas.DataFrame
        Per-(star, magnitude) ceiling (``LatticeCeiling.frame``).
    table : pandas.DataFrame
        The per-magnitude table (``ceiling_by_magnitude``).
    """
    return {"fisher_cliff": plot_cliff(frame, table),
            "fisher_map_teff_logg": plot_ceiling_map({m: g for m, g in frame.groupby("mag") if m in MAP_MAGS})}


def bin_bounds_figures(bounds: pd.DataFrame, efficiency: pd.DataFrame, tag: str = "5d") -> dict:
    """:func:`plot_bin_bounds` keyed by file name, or nothing when there are no per-bin bounds (real data)."""
    return {"fisher_bin_bounds": plot_bin_bounds(bounds, efficiency, tag)} if len(bounds) else {}


def residual_figures(preds: dict, ft) -> dict:
    """:func:`plot_residuals` of each model of :data:`RESIDUAL_MODELS` whose per-star predictions were loaded.

    Parameters
    ----------
    preds : dict
        Notebook → its predictions (``load_predictions``).
    ft : FrozenTest
        The frozen test (its bins and labels).
    """
    return {f"fisher_residuals_{m}": plot_residuals(residual_frame(preds[nb], ft, m), ft.labels, "pred", title)
            for nb, m, title in RESIDUAL_MODELS if nb in preds and m in preds[nb].models}


def check_figures(checks: dict) -> dict:
    """:func:`plot_fd_convergence` of the derivative checks keyed by file name; nothing without them (real data)."""
    conv = checks.get("convergence")
    return {"fisher_fd_convergence": plot_fd_convergence(conv)} if conv is not None else {}


def map_figures(stars: pd.DataFrame | None, labels: Sequence[str]) -> dict:
    """The MAP fit's residuals (:func:`plot_residuals`) keyed by file name; nothing without a fit (real data)."""
    return {"fisher_map_residuals": plot_residuals(stars, labels)} if stars is not None else {}
