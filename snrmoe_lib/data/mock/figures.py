"""Figures of the mock calibration (used by the data notebook): each returns a Figure."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.reporting.plots.common import GRAVITY_FEATURES, PALETTE, label_features
from snrmoe_lib.data.mock.base import PARAM_NAMES

__all__ = ["plot_logg_sequence", "plot_error_differences", "plot_snr_calibration"]

_SKY_FEATURES = {"OH 8344": 8344.6, "OH 8399/8430": 8415.0, "OH 8827": 8827.1, "H2O": 8230.0}


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

    from snrmoe_lib.data.mock.calibration import _SNR_MAG

    real = _SNR_MAG if real is None else real
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
