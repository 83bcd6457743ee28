"""Figures of the Q2 leakage audit (notebook ``q2_error_leakage``). Each returns a Figure."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import PALETTE, interval_extent

__all__ = ["plot_tradeoff", "plot_importance", "plot_decomposition", "plot_controls"]

_MARKERS = ["o", "s", "^", "D"]


def plot_tradeoff(tables: Mapping[str, pd.DataFrame], logg_max: float, snr_min: float, chosen: str | None = None):
    """R² of log g (leakage, want low) against R² of the SNR (quality, want high) per representation.

    ``tables`` maps an error-mode label ('clean', 'estimated') to its audit table; error bars are
    the bootstrap intervals; the shaded box is the Gate-1 pass region.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    lo_x = min(-0.05, min(float(t["r2_logg_lo"].min()) for t in tables.values()) - 0.02)
    ax.axvline(logg_max, color=PALETTE[2], ls="--", lw=1)
    ax.axhline(snr_min, color=PALETTE[2], ls="--", lw=1)
    for k, (label, t) in enumerate(tables.items()):
        x, y = t["r2_logg"].to_numpy(float), t["r2_snr"].to_numpy(float)
        xerr = interval_extent(x, t["r2_logg_lo"], t["r2_logg_hi"])
        yerr = interval_extent(y, t["r2_snr_lo"], t["r2_snr_hi"])
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=_MARKERS[k % 4], color=PALETTE[k % len(PALETTE)],
                    ms=6, capsize=2, lw=1, label=f"{label} errors")
        # one label per cluster of (nearly) coincident points, e.g. "S0, S1a, S1b"
        groups: list[list[tuple]] = []
        for name, xi, yi in zip(t["representation"], x, y):
            for g in groups:
                if abs(g[0][1] - xi) < 0.015 and abs(g[0][2] - yi) < 0.015:
                    g.append((name, xi, yi))
                    break
            else:
                groups.append([(name, xi, yi)])
        for members in groups:
            names = [m[0] for m in members]
            xi, yi = members[0][1], members[0][2]
            weight = "bold" if chosen in names and k == 0 else "normal"
            ax.annotate(", ".join(names), (xi, yi), textcoords="offset points", xytext=(6, 4 - 11 * k),
                        fontsize=8, color=PALETTE[k % len(PALETTE)], fontweight=weight)
    top = max(1.0, ax.get_ylim()[1])
    ax.fill_between([lo_x, logg_max], snr_min, top, color=PALETTE[2], alpha=0.08, lw=0, label="Gate-1 pass region")
    ax.set_xlim(left=lo_x)
    ax.set_xlabel("R² of log g from the error representation (test)  — leakage, want low")
    ax.set_ylabel("R² of SNR from the error representation (test)  — want high")
    ax.set_ylim(top=top)
    ax.set_title(f"Gate-1 trade-off: pass = R² log g < {logg_max:g} and R² SNR > {snr_min:g} (shaded)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_importance(wave: np.ndarray, importance: np.ndarray, peaks: pd.DataFrame, e0: np.ndarray | None = None):
    """Per-pixel |coefficient| of the raw-σ Ridge for log g, peaks labelled with the nearest feature."""
    import matplotlib.pyplot as plt

    n = 2 if e0 is not None else 1
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.2 * n), sharex=True, squeeze=False)
    ax = axes[0, 0]
    ax.plot(wave, importance, color=PALETTE[0], lw=0.6)
    seen = set()
    for _, r in peaks.iterrows():
        name = r["feature"] if r["feature"] != "—" else f"{r['wavelength']:.0f} Å"
        if name in seen:  # one label per feature: neighbouring peaks of one line would overlap
            continue
        seen.add(name)
        ax.annotate(name,
                    (r["wavelength"], r["importance"]), textcoords="offset points", xytext=(0, 3),
                    rotation=90, fontsize=7, ha="center", va="bottom", color="0.25")
    ax.set_ylim(0, float(np.max(importance)) * 1.35)
    ax.set_ylabel("|Ridge coefficient|\n(standardised σ per pixel)")
    ax.set_title("Where the raw error leaks log g: importance of each pixel")
    if e0 is not None:
        ax2 = axes[1, 0]
        ax2.plot(wave, e0, color=PALETTE[1], lw=0.6)
        ax2.set_ylabel("template e0 (mean σ,\nflux-normalised units)")
    axes[-1, 0].set_xlabel("wavelength (Å)")
    fig.tight_layout()
    return fig


def plot_decomposition(wave: np.ndarray, dec, label: str = "clean"):
    """e ≈ s·e0 + δ: the template, and each pixel's share of the residual energy Σδ²."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.6), sharex=True)
    axes[0].plot(wave, dec.e0, color=PALETTE[1], lw=0.6)
    axes[0].set_ylabel("e0 (flux-normalised units)")
    axes[0].set_title(f"e ≈ s·e0 + δ ({label} errors): s·e0 explains {100 * dec.explained_total:.2f} % of Σσ², "
                      f"{100 * dec.explained_variance:.1f} % of the variation between spectra")
    axes[1].plot(wave, 100 * dec.delta_share, color=PALETTE[3], lw=0.6)
    for _, r in dec.peaks.iterrows():
        if r["feature"] != "—":
            axes[1].annotate(r["feature"], (r["wavelength"], 100 * r["importance"]), textcoords="offset points",
                             xytext=(0, 3), rotation=90, fontsize=7, ha="center", va="bottom", color="0.25")
    axes[1].set_ylim(0, 100 * float(np.max(dec.delta_share)) * 1.35)
    axes[1].set_ylabel(f"share of Σδ² per pixel (%)\ntop {dec.n_top} pixels: {100 * dec.top_fraction:.0f} %")
    axes[1].set_xlabel("wavelength (Å)")
    fig.tight_layout()
    return fig


def plot_controls(controls: Mapping[str, pd.DataFrame], logg_max: float):
    """R² of log g for each control (bootstrap interval), per error mode."""
    import matplotlib.pyplot as plt

    first = next(iter(controls.values()))
    names = first["control"].tolist()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.4))
    h = 0.8 / len(controls)
    for k, (label, c) in enumerate(controls.items()):
        c = c.set_index("control").reindex(names)
        y = np.arange(len(names)) + k * h
        x = c["r2_logg"].to_numpy(float)
        err = interval_extent(x, c["r2_logg_lo"], c["r2_logg_hi"])
        ax.barh(y, x, height=h, color=PALETTE[k % len(PALETTE)], label=f"{label} errors",
                xerr=np.nan_to_num(err), capsize=2)
    ax.axvline(logg_max, color="0.3", ls="--", lw=1, label=f"Gate-1 limit {logg_max:g}")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(np.arange(len(names)) + 0.4 - h / 2)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("R² of log g (test, 95 % bootstrap interval)")
    ax.set_title("Sanity checks and controls")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
