"""Figures of the data-overview notebook: the dataset, and the mock against the real products.

Each function returns a Figure.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.analyses.calibration import SNR_BY_MAG_REAL
from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.data.mock.base import PARAM_NAMES
from snrmoe_lib.data.noise import add_noise
from snrmoe_lib.reporting.plots.common import GRAVITY_FEATURES, PALETTE, bin_colors, label_features

__all__ = ["plot_parameter_distributions", "plot_example_spectra", "plot_error_vectors", "plot_snr_distributions",
           "plot_logg_sequence", "plot_error_differences", "plot_snr_calibration"]

_UNITS = {"T_eff": "T_eff (K)", "log_g": "log g (dex)", "M_H": "[M/H] (dex)", "a_M": "[α/M] (dex)",
          "C_M": "[C/M] (dex)", "mag": "HSC i (mag)", "snr": "pfsspec snr column", "seeing": "seeing (arcsec)"}


_SKY_FEATURES = {"OH 8344": 8344.6, "OH 8399/8430": 8415.0, "OH 8827": 8827.1, "H2O": 8230.0}



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


def plot_logg_sequence(model, teff: float = 4500.0, m_h: float = -1.0, a_m: float = 0.2,
                       log_gs: Sequence[float] = (1.0, 2.0, 3.0, 4.0, 5.0)):
    """Noise-free stored flux across log g at fixed T_eff and [M/H], gravity features labelled.

    Left: the whole MR window (offset for clarity); right: zooms on Na I 8183/8195, the Ca II
    triplet and Mg I 8807, where the gravity signal sits.
    """
    import matplotlib.pyplot as plt
    import torch

    theta = np.array([[teff, g, m_h, a_m, 0.0] for g in log_gs], float)
    table = pd.DataFrame(theta, columns=list(PARAM_NAMES))
    with torch.no_grad():
        flux = model.normalized_flux(torch.as_tensor(theta, dtype=torch.float64), table).numpy()
    w = model.wave
    fig = plt.figure(figsize=(12, 6.5), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    ax = fig.add_subplot(gs[0, :])
    for i, (g, f) in enumerate(zip(log_gs, flux)):
        ax.plot(w, f + 0.25 * i, lw=0.6, color=PALETTE[i % len(PALETTE)], label=f"log g = {g:g}")
    ax.set_xlim(w[0], w[-1])
    ax.set_xlabel("wavelength (Å)")
    ax.set_ylabel("median-normalised flux + offset")
    ax.set_title(f"mock spectra at T_eff = {teff:g} K, [M/H] = {m_h:g}, [α/M] = {a_m:g} (noise-free)")
    ax.legend(fontsize=8, ncol=len(log_gs), loc="lower left")
    label_features(ax, {k: v for k, v in GRAVITY_FEATURES.items() if "O2" not in k})
    for j, (lo, hi, name) in enumerate([(8170, 8210, "Na I 8183/8195"), (8480, 8680, "Ca II triplet"),
                                        (8780, 8835, "Mg I 8807")]):
        a = fig.add_subplot(gs[1, j])
        s = (w >= lo) & (w <= hi)
        for i, (g, f) in enumerate(zip(log_gs, flux)):
            a.plot(w[s], f[s], lw=0.9, color=PALETTE[i % len(PALETTE)])
        a.set_xlabel("wavelength (Å)")
        a.set_ylabel("flux (median-normalised)")
        a.set_title(name, fontsize=10)
        label_features(a)
    return fig


def plot_error_differences(wave: np.ndarray, similarity: dict, n_top: int = 40):
    """Where the scale-free error vectors differ most across stars, by wavelength.

    Top: the global template (unit-norm error vector, median over stars). Bottom: where the
    residual after scale × template sits — each pixel's mean share of a star's unexplained
    variance; the ``n_top`` worst pixels are marked.
    """
    import matplotlib.pyplot as plt

    tmpl, share = similarity["template"], similarity["residual_share"]
    top = np.argsort(share)[-n_top:]
    fig, axes = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True, layout="constrained")
    axes[0].plot(wave, tmpl / np.median(tmpl), lw=0.5, color=PALETTE[0])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("template error\n(relative to its median)")
    axes[0].set_title(f"scale-free error vectors: {similarity['alike']:.1%} of their variance is scale × template; "
                      f"the {n_top} worst pixels hold {similarity['top_share']:.0%} of the rest (median star)")
    axes[1].plot(wave, share, lw=0.5, color=PALETTE[3])
    axes[1].plot(wave[top], share[top], "o", ms=3, color=PALETTE[1], label=f"{n_top} largest differences")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("wavelength (Å)")
    axes[1].set_ylabel("share of the unexplained\nvariance per pixel")
    axes[1].legend(fontsize=8, loc="lower left")
    for a in axes:
        a.set_xlim(wave[0], wave[-1])
    label_features(axes[1], {**GRAVITY_FEATURES, **_SKY_FEATURES})
    return fig


def plot_snr_calibration(snr_by_mag: pd.DataFrame, real: dict[float, float] | None = None):
    """Per-pixel median SNR against magnitude: the mock and the real grid products (±25 % band)."""
    import matplotlib.pyplot as plt

    real = SNR_BY_MAG_REAL if real is None else real
    m = np.array(sorted(real))
    r = np.array([real[k] for k in m])
    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    ax.fill_between(m, 0.75 * r, 1.25 * r, color=PALETTE[5], alpha=0.3, label="real ±25 %")
    ax.plot(m, r, "s-", color=PALETTE[0], label="real grid products")
    ax.plot(snr_by_mag["mag"], snr_by_mag["snr_pixel"], "o--", color=PALETTE[3], label="mock")
    ax.set_yscale("log")
    ax.set_xlabel("HSC i magnitude (AB)")
    ax.set_ylabel("per-pixel median SNR (12 × 900 s)")
    ax.legend(fontsize=8)
    return fig
