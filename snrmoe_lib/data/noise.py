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
    "VarianceModel",
    "estimated_sigma",
    "add_noise_estimated",
    "fit_variance_model",
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


# ------------------------------------------------------------------ estimated errors (error_mode: estimated)
#
# A reduction pipeline does not know the expected error: it estimates σ̂ from the counts it observed,
# the same noisy counts that make the noisy flux. With the per-pixel variance model
#
#     σ² = background + gain · flux            (photon noise of the object is the gain term)
#
# the estimate from a noisy realisation is σ̂² = background + gain · noisy = σ² + gain · (noisy − flux),
# i.e. σ̂² = σ² + gain · z · σ with the SAME standard normal z that made the noisy flux. The gain is
# the one unknown: :class:`VarianceModel` fits it on the training set's clean errors (the assumption:
# background and gain are smooth per-pixel templates times one scale per spectrum, as for sky +
# detector noise and the object's photon noise of a spectrum observed at one exposure and airmass).


def _two_term_scales(e2: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row least squares of ``e2 ≈ s0·a + s1·b`` in relative units (weights 1/e2): (n, 2)."""
    w = 1.0 / np.maximum(e2, 1e-30)
    aw, bw, ew = a * w, b * w, e2 * w
    # the 2 × 2 normal equations as five row-wise dot products (a 3-index einsum was 7× slower)
    dot = lambda u, v: np.einsum("np,np->n", u, v)  # noqa: E731
    g01 = dot(aw, bw)
    G = np.stack([np.stack([dot(aw, aw), g01], -1), np.stack([g01, dot(bw, bw)], -1)], -2)
    r = np.stack([dot(aw, ew), dot(bw, ew)], -1)
    return np.linalg.solve(G + 1e-12 * np.eye(2), r[..., None])[..., 0]


class VarianceModel:
    """σ² = background + gain · flux per pixel, as ``s_b · β_j + s_g · γ_j · flux_j`` for one spectrum.

    ``β`` (background) and ``γ`` (gain) are per-pixel templates fitted on training spectra's clean
    errors by alternating least squares; ``s_b, s_g`` are one spectrum's scales, fitted on its own
    clean error (what the observation's exposure, sky and brightness set). :meth:`gain` gives the
    per-pixel gain ``s_g · γ`` of each spectrum, clipped so that the photon term stays within [0, σ²].

    Parameters
    ----------
    n_iter : int
        Alternating least-squares rounds.
    """

    def __init__(self, n_iter: int = 8):
        self.n_iter = n_iter

    def fit(self, flux: np.ndarray, error: np.ndarray) -> "VarianceModel":
        flux = np.asarray(flux, np.float64)
        e2 = np.asarray(error, np.float64) ** 2
        if flux.shape != e2.shape or flux.ndim != 2 or len(flux) < 3:
            raise ValueError(f"need (n ≥ 3, n_pix) flux and error of one shape, got {flux.shape} and {e2.shape}")
        f = np.clip(flux, 0.0, None)
        beta = np.median(e2 / np.median(e2, axis=1, keepdims=True), axis=0)
        gamma = np.ones(flux.shape[1])
        for _ in range(self.n_iter):
            s = np.clip(_two_term_scales(e2, np.broadcast_to(beta, e2.shape), gamma * f), 0.0, None)
            t = _two_term_scales(e2.T, np.broadcast_to(s[:, 0], e2.T.shape), s[:, 1] * f.T)  # per pixel
            beta, gamma = np.clip(t[:, 0], 1e-30, None), np.clip(t[:, 1], 0.0, None)
        self.background_, self.gain_ = beta, gamma
        resid = (np.clip(s[:, :1] * beta + s[:, 1:] * gamma * f, 1e-30, None) - e2) / e2
        self.rel_rms_ = float(np.sqrt(np.mean(resid ** 2)))  # how well the model reproduces σ² (relative)
        return self

    def gain(self, flux: np.ndarray, error: np.ndarray) -> np.ndarray:
        """Per-pixel gain of each spectrum (n, n_pix): its photon term is ``gain · flux`` (≤ σ²)."""
        if not hasattr(self, "gain_"):
            raise RuntimeError("VarianceModel is not fitted; call fit(flux, error) on training spectra first")
        flux = np.asarray(flux, np.float64)
        e2 = np.asarray(error, np.float64) ** 2
        s = np.clip(_two_term_scales(e2, np.broadcast_to(self.background_, e2.shape),
                                     self.gain_ * np.clip(flux, 0.0, None)), 0.0, None)
        g = s[:, 1:] * self.gain_
        # the photon term cannot exceed the whole variance
        return np.minimum(g, np.where(flux > 0, e2 / np.maximum(flux, 1e-30), 0.0))


def estimated_sigma(error: np.ndarray, gain: np.ndarray, z: np.ndarray, noise_level: float,
                    floor: float = 0.05) -> np.ndarray:
    """σ̂ = noise_level · sqrt(max(error² + gain · z · error, floor² · error²)).

    ``z`` is the standard normal of the noisy flux (:func:`row_normals`), so σ̂ comes from the same
    realisation; ``floor`` keeps σ̂ positive where a strong downward fluctuation of a photon-noise
    dominated pixel would make the estimate negative (a pipeline clips there too).
    """
    e = np.asarray(error, np.float64)
    var = e * e + gain * z * e
    return (effective_sigma(np.sqrt(np.maximum(var, (floor * e) ** 2)), noise_level)).astype(np.float32)


def add_noise_estimated(flux: np.ndarray, error: np.ndarray, noise_level: float, rows: np.ndarray, seed: int,
                        gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, σ̂)`` from ONE draw: the noisy flux of :func:`add_noise` (identical numbers) and the
    error a pipeline would estimate from it (:func:`estimated_sigma`)."""
    if flux.shape != error.shape or gain.shape != flux.shape:
        raise ValueError(f"flux {flux.shape}, error {error.shape} and gain {gain.shape} differ in shape")
    z = row_normals(rows, flux.shape[1], seed, dtype=flux.dtype)
    noisy = flux + z * (effective_sigma(error, noise_level) if noise_level != 1 else error)
    # the estimate at level 1 from the same z, scaled by the level (σ = error · noise_level)
    return noisy.astype(flux.dtype, copy=False), estimated_sigma(error, gain, z, noise_level)


def fit_variance_model(ds, train_rows: np.ndarray, n: int = 2000, n_iter: int = 8) -> VarianceModel:
    """A :class:`VarianceModel` fitted on the clean errors of ``n`` training rows of ``ds``, taken
    evenly spaced through ``train_rows`` (deterministic: no random draw; never a test row)."""
    rows = np.unique(np.asarray(train_rows, dtype=np.int64))
    if len(rows) < 3:
        raise ValueError(f"need at least 3 training rows to fit the variance model, got {len(rows)}")
    pick = rows[np.unique(np.linspace(0, len(rows) - 1, min(int(n), len(rows))).astype(np.int64))]
    ch = ds.read(pick)
    return VarianceModel(n_iter=n_iter).fit(ch.flux, ch.error)
