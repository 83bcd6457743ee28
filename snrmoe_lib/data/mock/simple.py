"""A first, deliberately simple forward model: continuum + a handful of lines + sky + photon noise.

It exists so the whole pipeline runs end to end; the calibrated model
(:mod:`snrmoe_lib.data.mock.calibrated`) replaces it as the default. Numbers here are rough
(see ``MOCK_PHYSICS.md`` §4 for the anchor: i = 21.5, 12 × 900 s → per-pixel SNR ≈ 7).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel, Observation
from snrmoe_lib.data.noise import row_normals

# (wavelength Å, strength, gravity exponent, alpha-sensitive) — CaT, Na I, K I, Mg I and a few Fe I
_LINES = np.array([
    (8498.0, 1.5, -0.15, 1), (8542.1, 3.0, -0.15, 1), (8662.1, 2.4, -0.15, 1),
    (8183.3, 0.6, 0.35, 0), (8194.8, 0.8, 0.35, 0), (7664.9, 0.7, 0.30, 0), (7699.0, 0.5, 0.30, 0),
    (8806.8, 0.9, 0.25, 1), (8688.6, 0.5, 0.0, 0), (8824.2, 0.4, 0.0, 0), (7748.3, 0.3, 0.0, 0),
    (7832.2, 0.3, 0.0, 0), (8327.1, 0.3, 0.0, 0), (8387.8, 0.3, 0.0, 0),
])
_OH = np.array([7316.3, 7340.9, 7750.7, 7794.1, 7821.5, 7913.7, 7964.7, 7993.3, 8298.9, 8344.6,
                8399.2, 8430.1, 8465.3, 8767.9, 8778.3, 8827.1, 8836.4])
_OH_FLUX = np.array([2.7, 3.2, 4.0, 3.5, 4.4, 5.1, 4.1, 4.4, 3.5, 9.0, 7.5, 14.3, 6.1, 5.3, 5.6, 14.0, 5.6])
_LSF_SIGMA = 0.68  # Å, R ≈ 5000 at 8000 Å


class SimpleMock(ForwardModel):
    """Continuum from T_eff, Gaussian+Lorentzian lines scaled by the parameters, flat sky + OH lines."""

    name = "simple"

    def __init__(self, n_pix: int = 4096, w_min: float = 7100.2, w_max: float = 8849.8,
                 counts_21p5: float = 420.0, sky_counts: float = 1600.0, read_var: float = 960.0):
        self.wave = np.linspace(w_min, w_max, n_pix)
        self.counts_21p5 = counts_21p5  # object e⁻/pixel at i = 21.5, 12 × 900 s, seeing 1″
        self.sky_counts = sky_counts
        self.read_var = read_var
        d = self.wave[:, None] - _OH[None, :]
        self.sky_shape = 1.0 + (np.exp(-0.5 * (d / _LSF_SIGMA) ** 2) * _OH_FLUX * 4.0).sum(axis=1)

    def stellar(self, theta):
        import torch

        theta = torch.as_tensor(theta, dtype=torch.float64)
        lam = torch.as_tensor(self.wave, dtype=torch.float64)
        teff, logg, mh, am, cm = theta.unbind(-1)
        # Planck photon flux, normalised at 8000 Å
        x = 1.4388e8 / (lam[None, :] * teff[:, None])
        x0 = 1.4388e8 / (8000.0 * teff[:, None])
        cont = (8000.0 / lam[None, :]) ** 4 * torch.expm1(x0) / torch.expm1(x)
        L = torch.as_tensor(_LINES, dtype=torch.float64)
        lam0, strength, g_exp, alpha = L.unbind(-1)
        cool = (5040.0 / teff[:, None]) ** 2  # lines strengthen toward cool stars
        abundance = 10.0 ** (mh[:, None] + alpha[None, :] * am[:, None])
        eta0 = strength[None, :] * cool * abundance * 10.0 ** (g_exp[None, :] * (logg[:, None] - 3.0))
        d = lam[None, :, None] - lam0[None, None, :]
        width = _LSF_SIGMA * (1.0 + 0.3 * 10.0 ** (0.2 * (logg[:, None, None] - 3.0)))
        profile = torch.exp(-0.5 * (d / width) ** 2) + 0.02 / (1.0 + (d / (2.0 * width)) ** 2)
        eta = (eta0[:, None, :] * profile).sum(-1)
        # a CN-like depression carried by C_M
        cn = 0.02 * 10.0 ** cm[:, None] * torch.sigmoid((lam[None, :] - 7900.0) / 30.0)
        return cont * (1.0 - 0.8 * eta / (1.0 + eta)) * (1.0 - cn)

    def _conditions(self, table: pd.DataFrame) -> dict:
        seeing = table["seeing"].to_numpy(float)[:, None]
        airmass = 1.0 / np.sqrt(1.0 - 0.96 * np.sin(np.radians(table["zenith"].to_numpy(float)))[:, None] ** 2)
        t_rel = (table["n_exp"].to_numpy(float) * table["t_exp"].to_numpy(float))[:, None] / (12 * 900.0)
        ee = (1.0 - np.exp(-0.56 ** 2 / (2 * (seeing / 2.355) ** 2))) / (1.0 - np.exp(-0.56 ** 2 / (2 * (1.0 / 2.355) ** 2)))
        vignet = 1.0 - 0.35 * (table["field_angle"].to_numpy(float)[:, None] / 0.65) ** 2
        ext = 10.0 ** (-0.4 * 0.08 * (airmass - 1.0))
        scale = self.counts_21p5 * 10.0 ** (-0.4 * (table["mag"].to_numpy(float)[:, None] - 21.5)) * ee * vignet * ext * t_rel
        return {"scale": scale, "airmass": airmass, "t_rel": t_rel}

    def object_counts(self, theta, table: pd.DataFrame):
        """Expected object photo-electrons per pixel (torch, differentiable in θ)."""
        import torch

        shape = self.stellar(theta)
        scale = torch.as_tensor(self._conditions(table)["scale"], dtype=shape.dtype)
        return scale * shape / torch.quantile(shape, 0.5, dim=1, keepdim=True)

    def normalized_flux(self, theta, table: pd.DataFrame):
        """The stored ``flux`` as a differentiable function of θ at the table's conditions."""
        import torch

        obj = self.object_counts(theta, table)
        return obj / torch.quantile(obj, 0.5, dim=1, keepdim=True)

    def observe(self, table: pd.DataFrame, rows: np.ndarray, seed: int, error_mode: str = "clean") -> Observation:
        theta = table[list(PARAM_NAMES)].to_numpy(np.float64)
        obj = self.object_counts(theta, table).numpy()
        c = self._conditions(table)
        sky = self.sky_counts * c["airmass"] * c["t_rel"] * self.sky_shape[None, :]
        floor = self.read_var * c["t_rel"] + (0.01 * sky) ** 2
        sigma = np.sqrt(obj + sky + floor)
        if error_mode == "estimated":
            # the protocol's own draw (data.noise.row_normals): σ̂ and the noisy flux share it
            draws = row_normals(rows, obj.shape[1], int(seed)).astype(np.float64)
            sigma = np.sqrt(np.clip(obj + draws * sigma, 0, None) + sky + floor)
        norm = np.median(obj, axis=1, keepdims=True)
        mask = np.repeat((self.sky_shape > 20.0)[None, :], len(table), 0).astype(np.int32)
        snr_pix = np.median(obj / sigma, axis=1)
        return Observation(flux=(obj / norm).astype(np.float32), error=(sigma / norm).astype(np.float32),
                           mask=mask, columns={"snr": snr_pix})

