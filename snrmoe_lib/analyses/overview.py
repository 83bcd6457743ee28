"""Dataset overview: SNR tables and the figures of the data notebook."""
from __future__ import annotations

import numpy as np
import pandas as pd

from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.data.noise import assign_bins, bin_labels, snr
from snrmoe_lib.reporting.plots.common import PALETTE, bin_colors, label_features

__all__ = ["snr_table", "bin_fractions", "plot_parameter_distributions", "plot_example_spectra",
           "plot_error_vectors", "plot_snr_distributions"]

_UNITS = {"T_eff": "T_eff (K)", "log_g": "log g (dex)", "M_H": "[M/H] (dex)", "a_M": "[α/M] (dex)",
          "C_M": "[C/M] (dex)", "mag": "HSC i (mag)", "snr": "pfsspec snr column", "seeing": "seeing (arcsec)"}


def snr_table(ds: PfsDataset, rows: np.ndarray, noise_level: float, chunk_size: int = 4096) -> pd.DataFrame:
    """Per-spectrum L2 and per-pixel SNR (from σ = error · noise_level) with the params columns."""
    parts = []
    for ch in ds.iter_chunks(rows, chunk_size=chunk_size):
        df = ch.params.copy()
        df["row"] = ch.rows
        df["snr_l2"] = snr(ch.flux, ch.error, noise_level, "l2", ch.mask)
        df["snr_pixel"] = snr(ch.flux, ch.error, noise_level, "pixel", ch.mask)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def bin_fractions(values: np.ndarray, edges, labels) -> pd.DataFrame:
    """Count and fraction of spectra per SNR bin."""
    idx = assign_bins(values, edges)
    counts = np.bincount(idx, minlength=len(labels))
    return pd.DataFrame({"bin": bin_labels(edges, labels), "n": counts, "fraction": counts / counts.sum()})


def plot_parameter_distributions(params: pd.DataFrame, columns=("T_eff", "log_g", "M_H", "a_M", "C_M", "mag")):
    """Histograms of the stellar parameters and magnitude."""
    import matplotlib.pyplot as plt

    cols = [c for c in columns if c in params]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 2.6))
    for ax, c in zip(np.atleast_1d(axes), cols):
        ax.hist(params[c], bins=30, color=PALETTE[0], alpha=0.85)
        ax.set_xlabel(_UNITS.get(c, c))
        ax.set_ylabel("spectra")
    fig.suptitle("Parameter distributions")
    fig.tight_layout()
    return fig


def plot_example_spectra(ds: PfsDataset, rows: np.ndarray, noise_level: float, seed: int = 0):
    """A few spectra, noise-free and with one noise realisation, gravity features marked."""
    import matplotlib.pyplot as plt

    from snrmoe_lib.data.noise import add_noise

    ch = ds.read(np.asarray(rows))
    noisy = add_noise(ch.flux, ch.error, noise_level, ch.rows, seed)
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.0 * len(rows)), sharex=True)
    for ax, i in zip(np.atleast_1d(axes), range(len(rows))):
        p = ch.params.iloc[i]
        ax.plot(ds.wave, noisy[i], color="0.75", lw=0.4, label=f"noisy (noise_level {noise_level:g})")
        ax.plot(ds.wave, ch.flux[i], color=PALETTE[0], lw=0.7, label="noise-free flux")
        ax.set_ylabel("flux / median")
        ax.set_title(f"T_eff {p['T_eff']:.0f} K, log g {p['log_g']:.2f}, [M/H] {p['M_H']:.2f}, i {p['mag']:.2f}",
                     fontsize=9, loc="left")
        lo, hi = np.percentile(noisy[i], [1, 99])
        ax.set_ylim(min(lo, 0), hi * 1.1)
        label_features(ax)
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("wavelength (Å)")
    fig.tight_layout()
    return fig


def plot_error_vectors(ds: PfsDataset, params: pd.DataFrame, noise_level: float, n_mags: int = 4):
    """Error vectors (σ = error · noise_level) of spectra picked across the magnitude range."""
    import matplotlib.pyplot as plt

    order = params.sort_values("mag")
    picks = order["row"].to_numpy()[np.linspace(0, len(order) - 1, n_mags).astype(int)]
    ch = ds.read(picks)
    fig, ax = plt.subplots(figsize=(11, 3.2))
    for i, c in zip(range(len(picks)), bin_colors(len(picks))):
        ax.plot(ds.wave, ch.error[i] * noise_level, lw=0.5, color=c, label=f"i = {ch.params['mag'].iloc[i]:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("σ (flux / median units)")
    ax.set_title("Error vectors across magnitudes (sky lines and telluric bands stand out)")
    ax.legend(fontsize=8, ncol=len(picks))
    fig.tight_layout()
    return fig


def plot_snr_distributions(table: pd.DataFrame, edges, definition: str = "l2"):
    """Histograms of L2 and per-pixel SNR, with the bin edges drawn on the definition they refer to."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, col, name in zip(axes, ("snr_l2", "snr_pixel"), ("L2 SNR ‖flux‖/‖σ‖", "per-pixel SNR median(flux/σ)")):
        ax.hist(table[col], bins=50, color=PALETTE[1 if col == "snr_pixel" else 0], alpha=0.85)
        ax.set_xlabel(name)
        ax.set_ylabel("spectra")
        ax.axvline(np.median(table[col]), color="k", lw=1, label=f"median {np.median(table[col]):.2f}")
        if col == f"snr_{definition}":
            for e in edges:
                ax.axvline(e, color=PALETTE[3], ls="--", lw=1)
            ax.set_title("bin edges (dashed) refer to this definition", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
