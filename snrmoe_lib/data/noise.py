"""The noise protocol: effective sigma, seeded noisy flux, SNR definitions and SNR bins.

``noisy = flux + N(0, 1) * error * noise_level``. Every random draw is keyed by (seed, row), so the
noise a spectrum receives does not depend on how rows are chunked or ordered.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from snrmoe_lib._util.rng import rng as _rng

__all__ = [
    "effective_sigma",
    "row_normals",
    "add_noise",
    "snr_l2",
    "snr_pixel",
    "snr",
    "assign_bins",
    "bin_labels",
    "SNR_DEFINITIONS",
]

SNR_DEFINITIONS = ("l2", "pixel")


def effective_sigma(error: np.ndarray, noise_level: float) -> np.ndarray:
    """σ = error · noise_level: the only error any feature may be built from."""
    if not np.isfinite(noise_level) or noise_level <= 0:
        raise ValueError(f"noise_level must be a positive number, got {noise_level}")
    return error * np.asarray(noise_level, dtype=error.dtype)


def row_normals(rows: np.ndarray, n_pix: int, seed: int, dtype=np.float32) -> np.ndarray:
    """Standard normal draws, one row of ``n_pix`` per row number, keyed by (seed, row)."""
    out = np.empty((len(rows), n_pix), dtype=np.float32 if dtype == np.float32 else np.float64)
    for i, r in enumerate(np.asarray(rows, dtype=np.int64)):
        _rng("noise.flux", int(seed), int(r)).standard_normal(dtype=out.dtype, out=out[i])
    return out


def add_noise(flux: np.ndarray, error: np.ndarray, noise_level: float, rows: np.ndarray, seed: int) -> np.ndarray:
    """Noisy flux for the given rows: ``flux + N(0,1) · error · noise_level``.

    Parameters
    ----------
    flux, error : ndarray (n, n_pix)
        Noise-free flux and its expected 1σ error.
    noise_level : float
        1 is the realistic level.
    rows : ndarray (n,)
        Global row numbers: they key the random stream, so results do not depend on chunking.
    seed : int
        The noise seed (one of the run's ``seeds``).
    """
    if flux.shape != error.shape:
        raise ValueError(f"flux {flux.shape} and error {error.shape} differ in shape")
    if len(rows) != len(flux):
        raise ValueError(f"{len(rows)} row numbers for {len(flux)} spectra")
    noisy = row_normals(rows, flux.shape[1], seed, dtype=flux.dtype)
    noisy *= effective_sigma(error, noise_level) if noise_level != 1 else error  # in place: one chunk-sized array
    noisy += flux
    return noisy


def _valid(sigma: np.ndarray, mask: np.ndarray | None, exclude_masked: bool) -> np.ndarray:
    """Pixels that enter an SNR: σ finite and > 0 (a masked pixel may carry σ = 0), and, only with
    ``exclude_masked``, unmasked."""
    good = np.isfinite(sigma) & (sigma > 0)
    if exclude_masked and mask is not None:
        good &= mask == 0
    return good


def _row_sum_squares(a: np.ndarray, good: np.ndarray | None, block: int = 256) -> np.ndarray:
    """Σ a² over each row's ``good`` pixels (all when None), accumulated in float64, a block of rows at a time."""
    out = np.empty(len(a))
    for i in range(0, len(a), block):
        b = a[i:i + block].astype(np.float64)
        if good is not None:
            b = np.where(good[i:i + block], b, 0.0)
        out[i:i + block] = np.einsum("ij,ij->i", b, b)
    return out


def snr_l2(flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None = None,
           exclude_masked: bool = False) -> np.ndarray:
    """Per-spectrum L2 SNR: ‖flux‖ / ‖σ‖.

    As the user defines it (BRIEF §3), every pixel counts, masked sky and telluric pixels too
    (their large σ is part of the observation's quality); ``exclude_masked=True`` drops them.
    """
    flux, sigma = np.asarray(flux), np.asarray(sigma)
    all_good = sigma.size and sigma.min() > 0 and np.isfinite(sigma.max()) and not (
        exclude_masked and mask is not None and np.any(mask))
    good = None if all_good else _valid(sigma, mask, exclude_masked)
    return np.sqrt(_row_sum_squares(flux, good)) / np.sqrt(_row_sum_squares(sigma, good))


def snr_pixel(flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray | None = None,
              exclude_masked: bool = False) -> np.ndarray:
    """Per-pixel SNR: median of flux / σ over the pixels (pfsspec ``MedianSnr`` without binning)."""
    good = _valid(sigma, mask, exclude_masked)
    ratio = np.where(good, flux.astype(np.float64) / np.where(good, sigma, 1.0).astype(np.float64), np.nan)
    return np.nanmedian(ratio, axis=1)


def snr(flux: np.ndarray, error: np.ndarray, noise_level: float, definition: str = "l2",
        mask: np.ndarray | None = None, exclude_masked: bool = False) -> np.ndarray:
    """SNR of each spectrum under ``definition`` ('l2' or 'pixel'), from σ = error · noise_level.

    Every pixel counts unless ``exclude_masked`` (the mask is then needed).
    """
    sigma = error if noise_level == 1 else effective_sigma(error, noise_level)  # read only: no copy needed
    if definition == "l2":
        return snr_l2(flux, sigma, mask, exclude_masked)
    if definition == "pixel":
        return snr_pixel(flux, sigma, mask, exclude_masked)
    raise ValueError(f"unknown SNR definition {definition!r}; use one of {SNR_DEFINITIONS}")


def assign_bins(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index per value with right-closed bins: edges [2, 4, 7] give X ≤ 2 < L ≤ 4 < M ≤ 7 < H."""
    edges = np.asarray(edges, dtype=float)
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must be strictly increasing, got {edges.tolist()}")
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot bin NaN or infinite values")
    return np.digitize(values, edges, right=True)


def bin_labels(edges: Sequence[float], labels: Sequence[str] | None = None, unit: str = "") -> list[str]:
    """Readable bin names such as ``'X (≤2)'``, ``'L (2–4]'``."""
    edges = list(edges)
    labels = list(labels) if labels is not None else [f"bin{i}" for i in range(len(edges) + 1)]
    out = []
    for i, lab in enumerate(labels):
        if i == 0:
            rng = f"≤{edges[0]:g}"
        elif i == len(edges):
            rng = f">{edges[-1]:g}"
        else:
            rng = f"({edges[i - 1]:g}–{edges[i]:g}]"
        out.append(f"{lab} {rng}{unit}")
    return out
