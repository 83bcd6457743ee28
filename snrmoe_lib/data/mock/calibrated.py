"""The calibrated mock PFS-MR forward model: stellar physics + observation model, registered as
``"calibrated"``.

This is a mock, not BOSZ: a physically motivated stand-in with the real products' layout, noise
protocol and (after calibration, see :mod:`.calibration`) similar SNR and information content.

The stored ``flux`` is the star's noise-free F_λ (line-spread-function convolved, continuum
kept) divided by its median; ``error`` is the expected 1σ of the observed counts translated into
the same units (σ_counts / S_counts × flux). Telluric absorption, throughput, fibre losses, sky and
detector therefore shape the error vector but not the flux, as in the flux-calibrated products.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import numpy as np
import pandas as pd

from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel, Observation
from snrmoe_lib.data.mock.instrument import FineGrid, Instrument, load_instrument_config
from snrmoe_lib.data.mock.stellar import StellarModel
from snrmoe_lib.data.noise import row_normals

__all__ = ["CalibratedMock"]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class CalibratedMock(ForwardModel):
    """Calibrated mock of the PFS-MR arm (4096 pixels, 7100.2–8849.8 Å, R ≈ 5000).

    Parameters
    ----------
    config : str or Path, optional
        An ``instrument.yaml``-shaped file; the packaged one by default.
    overrides : dict, optional
        Nested settings merged over the file (for experiments and tests).
    batch_size : int
        Stars per internal block in :meth:`observe` (bounds memory whatever the chunk size).
    """

    name = "calibrated"
    #: v1: the first calibration; v2: the A band and H₂O bands at their documented depths, one sky and
    #: one instrument per configuration, log-normal seeing, no per-star sky jitter, sky residual p = 0.85
    physics_version = 2

    def __init__(self, config=None, overrides: dict | None = None, batch_size: int = 250):
        cfg = load_instrument_config(config)
        if overrides:
            cfg = _merge(cfg, overrides)
        self.cfg = cfg
        self.batch_size = int(batch_size)
        self.grid = FineGrid(cfg)
        self.instrument = Instrument(cfg, self.grid)
        self.star = StellarModel(self.grid, cfg["stellar"])
        self.wave = self.grid.wave
        hi = cfg["hsc_i"]
        self._i_wave = np.linspace(min(hi["wave"]), max(hi["wave"]), 60)
        r = np.interp(self._i_wave, hi["wave"], hi["response"])
        self._i_weight = r / self._i_wave / np.sum(r / self._i_wave)  # photon-counting AB: dλ/λ

    def physics_fingerprint(self) -> str:
        """Model name, physics version and a digest of every instrument and stellar setting."""
        digest = hashlib.sha256(json.dumps(self.cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{super().physics_fingerprint()}:{digest}"

    # -- differentiable pieces -----------------------------------------------------------------

    @staticmethod
    def _theta(theta):
        import torch

        if not isinstance(theta, torch.Tensor):
            theta = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
        if theta.ndim != 2 or theta.shape[1] != len(PARAM_NAMES):
            raise ValueError(f"theta must have shape (B, {len(PARAM_NAMES)}) in {PARAM_NAMES} order, got {tuple(theta.shape)}")
        return theta

    def stellar(self, theta):
        """Noise-free F_λ(θ) (B, P) as a torch tensor (dtype of ``theta``; float64 for arrays)."""
        return self.star.spectrum(self._theta(theta))

    def normalized_flux(self, theta, table: pd.DataFrame | None = None):
        """The stored median-normalised flux as a differentiable torch function of θ.

        The flux does not depend on the observing conditions (it is flux-calibrated), so ``table``
        is accepted for the interface and otherwise unused.
        """
        import torch

        f = self.stellar(theta)
        return f / torch.quantile(f, 0.5, dim=1, keepdim=True)

    # -- observation ---------------------------------------------------------------------------

    def f_nu_rel(self, theta: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """f_ν(λ) in units of the star's mean f_ν through HSC-i (continuum), per pixel (B, P)."""
        teff = np.asarray(theta, float)[:, :1]
        lam = self._i_wave[None, :]
        x = 1.4387769e8 / (lam * teff)
        x0 = 1.4387769e8 / (8000.0 * teff)
        cont_i = (8000.0 / lam) ** 5 * np.expm1(x0) / np.expm1(x)  # same normalisation as StellarModel.continuum
        mean_fnu = (cont_i * lam ** 2 * self._i_weight[None, :]).sum(axis=1, keepdims=True)
        if not hasattr(self, "_wave2"):
            self._wave2 = (self.wave ** 2).astype(np.float32)
        return spectrum * self._wave2[None, :] / mean_fnu.astype(np.float32)

    def counts(self, table: pd.DataFrame, spectrum: np.ndarray) -> dict:
        """Object and sky photo-electrons per pixel and the conditions for a block (numpy, float32)."""
        inst = self.instrument
        c = inst.conditions(table)
        a_eff = inst.a_eff(c)
        t_atm = inst.transmission(c)
        theta = table[list(PARAM_NAMES)].to_numpy(float)
        obj = inst.object_counts(self.f_nu_rel(theta, spectrum), c, a_eff, t_atm)
        # one sky per configuration: when every star of the block sees the same sky, compute one row
        # ("sky_row", (1, P)) and broadcast it ("sky", a read-only (B, P) view)
        keys = ("X_sky", "radius_sky", "a_geo_sky", "sky_offset", "oh_scale", "moon", "t", "n_exp")
        if all(np.all(c[k] == c[k][:1]) for k in keys):
            one = {k: v[:1] for k, v in c.items()}
            row = inst.sky_counts(one, inst.a_eff(one, sky=True), inst.transmission(one, "X_sky"))
            return {"obj": obj, "sky": np.broadcast_to(row, obj.shape), "sky_row": row, "cond": c}
        sky = inst.sky_counts(c, inst.a_eff(c, sky=True), inst.transmission(c, "X_sky"))
        return {"obj": obj, "sky": sky, "sky_row": None, "cond": c}

    def observe(self, table: pd.DataFrame, rows: np.ndarray, seed: int, error_mode: str = "clean") -> Observation:
        """Observe a block of stars (see :class:`~snrmoe_lib.data.mock.base.ForwardModel`).

        ``error_mode='clean'``: σ from the noise-free counts (like the real products).
        ``'estimated'``: σ from one noisy realisation of the counts, like a reduction pipeline's
        error — the realisation of the noise protocol itself (keyed by (seed, row)), so that σ̂ and
        the noisy flux of noise seed ``seed`` come from the same draw.
        """
        if error_mode not in ("clean", "estimated"):
            raise ValueError(f"error_mode must be 'clean' or 'estimated', got {error_mode!r}")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(table):
            raise ValueError(f"{len(rows)} row numbers for a table of {len(table)} stars")
        missing = [k for k in PARAM_NAMES if k not in table]
        if missing:
            raise KeyError(f"the params table lacks the stellar parameter column(s) {missing}")
        parts = [self._observe_block(table.iloc[s:s + self.batch_size], rows[s:s + self.batch_size], seed, error_mode)
                 for s in range(0, len(table), self.batch_size)]
        return Observation(flux=np.concatenate([p[0] for p in parts]), error=np.concatenate([p[1] for p in parts]),
                           mask=np.concatenate([p[2] for p in parts]),
                           columns={"snr": np.concatenate([p[3] for p in parts])})

    def _observe_block(self, table, rows, seed, error_mode):
        import torch

        theta = torch.as_tensor(table[list(PARAM_NAMES)].to_numpy(np.float64), dtype=torch.float32)
        with torch.no_grad():
            spec = self.star.spectrum(theta).numpy()
        k = self.counts(table, spec)
        obj, sky, c = k["obj"], k["sky"], k["cond"]
        var = self.instrument.variance(obj, sky if k["sky_row"] is None else k["sky_row"], c)
        if error_mode == "estimated":
            # the counts' noise is the protocol's own draw (data.noise.row_normals at noise seed
            # ``seed``): σ̂ comes from the realisation that makes the noisy flux flux + z·σ of that seed
            z = row_normals(rows, obj.shape[1], int(seed)).astype(np.float64)
            var = self.instrument.variance(obj, sky if k["sky_row"] is None else k["sky_row"], c,
                                           poisson=obj + sky + z * np.sqrt(var))
        sigma = np.sqrt(var)
        flux = spec / np.median(spec, axis=1, keepdims=True)
        error = sigma / obj * flux
        static = self.instrument.static_mask
        mask = np.broadcast_to(static, flux.shape)
        # pfsspec-style per-pixel median SNR over the unmasked pixels (the mask is the same for all)
        snr = np.median((obj / sigma)[:, static == 0], axis=1).astype(np.float64) * np.sqrt(self.cfg["snr"]["binning"])
        return flux.astype(np.float32), error.astype(np.float32), mask.astype(np.int32), snr


@lru_cache(maxsize=1)
def shared_model() -> CalibratedMock:
    """One instance per process: the static templates are built once and reused."""
    return CalibratedMock()

