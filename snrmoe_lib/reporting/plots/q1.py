"""Figures of the Q1 notebook (oracle experts vs the global model). Each returns a Figure."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import PALETTE, interval_extent
from snrmoe_lib._util.rng import rng as _rng

if TYPE_CHECKING:
    from snrmoe_lib.analyses.q1 import Headroom

__all__ = ["MODEL_STYLE", "per_bin_bars", "pred_vs_true", "delta_heatmap", "headroom_vs_noise", "waterfall_bars",
           "learning_curve", "contribution_bars", "per_bin_figures", "headroom_pred_vs_true"]

#: Display name and colour of each compared model (Okabe–Ito).
MODEL_STYLE = {
    "global": ("global Ridge", PALETTE[7]),
    "snr_oracle": ("SNR experts (oracle)", PALETTE[0]),
    "phys_oracle": ("T_eff × [M/H] experts (oracle)", PALETTE[1]),
    "oracle_hard": ("SNR experts, hard oracle", PALETTE[0]),
    "oracle_soft": ("soft oracle (gate on true log SNR)", PALETTE[5]),
    "oracle_regression": ("regression oracle (true log SNR)", PALETTE[4]),
    "snr_alpha": ("one Ridge, α per SNR bin", PALETTE[2]),
    "blend_fixed": ("fixed blend of SNR experts + global", PALETTE[1]),
    "bagging_random": ("fixed blend of random-partition experts", PALETTE[6]),
}


def _name(model: str) -> str:
    return MODEL_STYLE.get(model, (model, None))[0]


def per_bin_bars(table: pd.DataFrame, title: str = ""):
    """Grouped bars of seed-mean R² per bin and model, 95 % bootstrap intervals, counts under the bins."""
    import matplotlib.pyplot as plt

    bins = list(dict.fromkeys(table["bin"]))
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / len(models)
    x = np.arange(len(bins))
    for i, m in enumerate(models):
        t = table[table["model"] == m].set_index("bin").loc[bins]
        r2 = t["r2"].to_numpy(float)
        err = interval_extent(r2, t["r2_lo"], t["r2_hi"])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, r2, width, yerr=err,
               capsize=3, color=MODEL_STYLE.get(m, (m, PALETTE[i % len(PALETTE)]))[1], label=_name(m))
    counts = table.drop_duplicates("bin").set_index("bin").loc[bins, "n"].to_numpy()
    ax.set_xticks(x, [f"{b}\nn = {c}" for b, c in zip(bins, counts)])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("true SNR bin (test spectra)")
    ax.set_ylabel("R² of log g (seed mean)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def pred_vs_true(y: np.ndarray, predictions: dict[str, np.ndarray], snr: np.ndarray, snr_label: str = "true SNR",
                 max_points: int = 4000, seed: int = 0):
    """Predicted vs true log g, one panel per model, points coloured by the true SNR."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    rng = _rng("plots.jitter", seed)
    idx = rng.permutation(len(y))[:max_points]
    fig, axes = plt.subplots(1, len(predictions), figsize=(4.2 * len(predictions), 4), sharex=True, sharey=True,
                             squeeze=False)
    lo, hi = float(np.min(y)) - 0.5, float(np.max(y)) + 0.5
    s = np.clip(snr, 1e-3, None)
    norm = Normalize(vmin=float(np.percentile(s, 1)), vmax=float(np.percentile(s, 99)))
    for ax, (name, p) in zip(axes[0], predictions.items()):
        sc = ax.scatter(y[idx], p[idx], c=s[idx], s=4, cmap="cividis", norm=norm, alpha=0.7, linewidths=0)
        ax.plot([lo, hi], [lo, hi], color=PALETTE[3], lw=1, label="1 : 1")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(_name(name), fontsize=10)
        ax.set_xlabel("true log g [dex]")
    axes[0][0].set_ylabel("predicted log g [dex]")
    axes[0][0].legend(frameon=False, loc="upper left")
    fig.colorbar(sc, ax=axes[0].tolist(), label=snr_label)
    return fig


def delta_heatmap(tables: Sequence[pd.DataFrame], models: Sequence[str] = ("snr_oracle", "phys_oracle")):
    """ΔR² (oracle − global, seed mean) by SNR bin (columns) for each noise level and oracle (rows)."""
    import matplotlib.pyplot as plt

    rows, labels = [], []
    bins = list(dict.fromkeys(tables[0]["bin"]))
    for t in tables:
        nl = float(t["noise_level"].iloc[0])
        for m in models:
            s = t[t["model"] == m].set_index("bin").reindex(bins)
            rows.append(s["delta_r2"].to_numpy(float))
            labels.append(f"{_name(m)}\nnoise_level {nl:g}")
    M = np.array(rows)
    lim = max(float(np.nanmax(np.abs(M))) if np.isfinite(M).any() else 0.05, 0.02)
    fig, ax = plt.subplots(figsize=(1.4 * len(bins) + 3.5, 0.7 * len(rows) + 1.5))
    im = ax.imshow(np.ma.masked_invalid(M), cmap="PuOr_r", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(M):
        ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:+.3f}", ha="center", va="center", fontsize=9,
                color="black" if not np.isfinite(v) or abs(v) < 0.6 * lim else "white")
    ax.set_xticks(range(len(bins)), bins)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("true SNR bin (test spectra)")
    fig.colorbar(im, ax=ax, label="ΔR² = R²(oracle) − R²(global)")
    fig.tight_layout()
    return fig


def headroom_vs_noise(summary: pd.DataFrame, threshold: float):
    """ΔR² of each oracle against the noise level, with intervals and the Gate-2 threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (m, g) in enumerate(summary.groupby("model", sort=False)):
        g = g.sort_values("noise_level")
        v = g["delta_r2"].to_numpy(float)
        err = interval_extent(v, g["lo"], g["hi"])
        ax.errorbar(g["noise_level"] * (1 + 0.02 * (i - 0.5)), v, yerr=err, marker="o", capsize=3,
                    color=MODEL_STYLE.get(m, (m, PALETTE[i]))[1], label=_name(m))
    ax.axhline(threshold, color=PALETTE[3], ls="--", lw=1, label=f"Gate-2 threshold {threshold:g}")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("noise_level (σ = error × noise_level)")
    ax.set_ylabel("ΔR² vs global Ridge (seed mean)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def waterfall_bars(table: pd.DataFrame, title: str = ""):
    """The attribution waterfall: each step's ΔR² over the previous step (95 % paired intervals), the
    running R² written at the end of each bar."""
    import matplotlib.pyplot as plt

    t = table.iloc[1:]
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(t) + 1.4))
    y = np.arange(len(t))[::-1]
    start = t["r2"].to_numpy(float) - t["step_delta"].to_numpy(float)
    err = interval_extent(t["step_delta"], t["step_lo"], t["step_hi"])
    colors = [MODEL_STYLE.get(m, (m, PALETTE[i % len(PALETTE)]))[1] for i, m in enumerate(t["model"])]
    ax.barh(y, t["step_delta"], left=start, color=colors, xerr=err, capsize=3,
            error_kw={"ecolor": "0.25"})
    for yi, r, m in zip(y, t["r2"], t["model"]):
        ax.text(r, yi, f"  R² {r:.3f}", va="center", fontsize=8)
    ax.axvline(table["r2"].iloc[0], color="0.4", ls="--", lw=1, label=f"global Ridge R² {table['r2'].iloc[0]:.3f}")
    ax.set_yticks(y, [_name(m) for m in t["model"]])
    ax.set_xlabel("R² of log g (seed mean); bar = ΔR² over the step above")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def learning_curve(points: pd.DataFrame, threshold: float | dict | None = None, ylabel: str | dict = "ΔR²",
                   title: str = "", panels: bool = False):
    """Numbers against the training size (log axis) with their intervals.

    ``points`` has columns n_train, series, value, lo, hi. ``threshold``: one line for every series, or a
    mapping series → its threshold (a gate's); ``ylabel``: one label, or a mapping series → label.
    ``panels``: one panel per series, each with its own y axis and threshold (series of different units,
    such as Gate-3's ρ and Gate-4's ΔR²), instead of one axis.
    """
    import matplotlib.pyplot as plt

    groups = list(points.groupby("series", sort=False))
    n_ax = len(groups) if panels else 1
    fig, axes = plt.subplots(n_ax, 1, figsize=(6.5, 4 if n_ax == 1 else 2.7 * n_ax), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for i, (name, t) in enumerate(groups):
        ax, color = axes[i if panels else 0], PALETTE[i % len(PALETTE)]
        t = t.sort_values("n_train")
        err = interval_extent(t["value"], t["lo"], t["hi"])
        ax.errorbar(t["n_train"], t["value"], yerr=err, marker="o", capsize=3, label=name, color=color)
        per_series = isinstance(threshold, dict)
        th = threshold.get(name) if per_series else threshold
        if th is not None and (panels or per_series or i == 0):  # one shared line, or one per series
            ax.axhline(th, color=color if per_series and not panels else "0.3", ls="--", lw=1,
                       label=f"threshold {th:g}")
        if panels or i == 0:
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set_ylabel(ylabel.get(name, name) if isinstance(ylabel, dict) else ylabel)
    for ax in axes:
        ax.set_xscale("log")
        ax.legend(frameon=False, fontsize=8)
    axes[-1].set_xlabel("training spectra the experts fit (nested random subsets)")
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


def contribution_bars(table: pd.DataFrame, title: str = ""):
    """Each true-SNR bin's contribution to the whole-set ΔR² (bin fraction × within-bin gain / Var y)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(table))
    c = table["contribution"].to_numpy(float)
    err = interval_extent(c, table["contribution_lo"], table["contribution_hi"])
    ax.bar(x, c, color=PALETTE[0], yerr=err, capsize=3)
    ax.set_xticks(x, [f"{b}\n{100 * f:.0f} % of stars" for b, f in zip(table["bin"], table["fraction"])])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("true SNR bin")
    ax.set_ylabel("contribution to ΔR² (whole test set)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def per_bin_figures(tables: dict[float, pd.DataFrame], n_seeds: int, prefix: str = "q1_per_bin") -> dict:
    """One :func:`per_bin_bars` figure per noise level, keyed by its file name ``<prefix>_nl<level>``.

    Parameters
    ----------
    tables : dict
        Noise level → per-bin table (:meth:`~snrmoe_lib.analyses.q1.Headroom.per_bin`).
    n_seeds : int
        Number of noise seeds behind the tables (shown in the titles).
    prefix : str
        Start of every file name.
    """
    return {f"{prefix}_nl{nl:g}": per_bin_bars(t, f"log g R² per true-SNR bin, noise_level {nl:g} ({n_seeds} seeds)")
            for nl, t in tables.items()}


def headroom_pred_vs_true(h: Headroom, models: Sequence[str], snr_definition: str):
    """:func:`pred_vs_true` of the first seed of one noise level's runs, for ``models``.

    Parameters
    ----------
    h : Headroom
        The runs of one noise level.
    models : sequence of str
        Models to show (one panel each), e.g. ``HEADROOM_MODELS``.
    snr_definition : str
        The SNR definition (``snr_bins.definition``), named in the colour bar.
    """
    preds = {k: v[0] for k, v in h.predictions().items() if k in models}
    return pred_vs_true(h.y, preds, h.info["snr"].to_numpy(), f"true SNR ({snr_definition})")
