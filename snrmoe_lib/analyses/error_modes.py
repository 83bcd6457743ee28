"""Clean and estimated errors in Q1 and Q3 (``noise.error_mode``).

``clean``: every feature of σ a model sees is the expected error of the products (σ = error ·
noise_level), computed from the noise-free model flux. ``estimated``: it is σ̂, estimated from *the
same noisy realisation* that makes the noisy flux, as a reduction pipeline would
(:func:`snrmoe_lib.data.noise.add_noise_estimated`), with the per-pixel variance model
σ² = background + gain · flux (:class:`~snrmoe_lib.data.noise.VarianceModel`) fitted on training
spectra's clean errors. ``both``: clean first (the un-suffixed results), then estimated, reported
beside it with the suffix ``_estimated``. The noisy flux is the same draw in both modes, so models
of the flux alone (the experts, the global model, the non-routing controls) and the oracles (which
keep the true SNR) give the same numbers; what changes is everything computed from σ: the quality
features and the gate, whitening, the interacted control.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from snrmoe_lib.data.noise import VarianceModel, effective_sigma, fit_variance_model
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures

__all__ = ["error_modes", "suffix", "variance_model", "flux_check", "ASSUMPTION"]

#: The variance model's assumption, as the notebooks state it.
ASSUMPTION = ("σ̂ is estimated from the same noisy counts as the flux with the per-pixel model σ² = background + "
              "gain · flux: background and gain are smooth per-pixel templates (fitted on training spectra's clean "
              "errors) times one scale per spectrum, as for sky + detector noise and the object's photon noise of a "
              "spectrum observed at one exposure time and airmass. The mock draws its σ this way; for real pfsspec "
              "files it is an assumption about the pipeline's error model, not a measurement of it.")


def error_modes(params) -> tuple[str, ...]:
    """The error modes a configuration reports, the primary (un-suffixed) first."""
    m = params.noise.error_mode
    return ("clean", "estimated") if m == "both" else (m,)


def suffix(mode: str, params) -> str:
    """The results-name suffix of ``mode``: '' for the primary mode, ``_<mode>`` otherwise."""
    return "" if mode == error_modes(params)[0] else f"_{mode}"


def variance_model(ds, split, params) -> VarianceModel | None:
    """The estimated mode's :class:`VarianceModel`, fitted on ``noise.variance_fit_n`` training rows' clean
    errors (evenly spaced, no random draw); ``None`` when no reported mode needs it."""
    if "estimated" not in error_modes(params):
        return None
    return fit_variance_model(ds, split.train, n=params.noise.variance_fit_n)


def flux_check(ds, split, params, vm: VarianceModel | None, n: int = 256) -> pd.DataFrame:
    """Why flux-only models (Q1) give the same numbers in both modes, checked on ``n`` test rows.

    Both modes' passes (first noise seed) over the same rows: the largest difference of the noisy flux
    and of the features the models see (0 when the noise is one draw), and how far σ̂ is from σ
    (relative rms) — what the gate of Q3 sees differently.
    """
    rows = np.asarray(split.test[:n])
    feats = FluxFeatures(params.ridge.bin_pixels)
    kw = dict(noise_level=params.noise.noise_level, seed=params.seeds[0], features=feats, target=None, workers=0)
    out = []
    clean = {nc.rows[0]: nc for _, nc in split_pass(ds, {"test": rows}, **kw)}
    for mode in error_modes(params):
        if mode == "clean":
            out.append({"error_mode": mode, "noisy_flux_max_abs_diff": 0.0, "features_max_abs_diff": 0.0,
                        "sigma_rel_rms_vs_clean": 0.0})
            continue
        dn = dx = 0.0
        rel = []
        for _, nc in split_pass(ds, {"test": rows}, error_mode=mode, variance_model=vm, **kw):
            c = clean[nc.rows[0]]
            dn = max(dn, float(np.max(np.abs(nc.noisy - c.noisy))))
            dx = max(dx, float(np.max(np.abs(nc.X - c.X))))
            sig = effective_sigma(c.error, params.noise.noise_level)
            rel.append(((nc.sigma_hat - sig) / sig).ravel())
        out.append({"error_mode": mode, "noisy_flux_max_abs_diff": dn, "features_max_abs_diff": dx,
                    "sigma_rel_rms_vs_clean": float(np.sqrt(np.mean(np.concatenate(rel) ** 2)))})
    return pd.DataFrame(out)
