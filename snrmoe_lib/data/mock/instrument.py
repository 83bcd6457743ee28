"""The PFS-MR observation model: grid, LSF, throughput, fibre, sky, atmosphere, detector, noise.

All numbers are read from ``instrument.yaml`` beside this file. Per pixel and summed over the
``n_exp`` exposures (counts in photo-electrons):

    S = n_γ(mag, SED) · A_eff(λ, field) · T_atm(λ, X) · EE(seeing, λ, field) · f_trace · t · n_exp
    B = [sky continuum(λ)·X·T_atm + moon + OH lines(λ)·X/X_ref·10^{−0.4k(X−X_ref)}] · A_eff · πR² · f_trace · t · n_exp
    σ² = noise_factor·(S + B + stray·⟨B⟩ + n_exp·(RN² + dark·t)) + (sky_residual · max_{±1 pix} B)²

The last term is the sky-subtraction residual: 1 % of the sky that does not fully average down
with more exposures. It sits on the OH lines, which is why the L2 SNR (dominated by the worst
pixels) is far below the per-pixel median SNR.

The products share one sky and one instrument per configuration (every fibre of a pointing sees
one sky): B is evaluated at the configuration's reference zenith and field angle
(``sky.reference_zenith``, ``sky.reference_field_angle``) for every star, while a star's own
zenith and field angle set its own transmission T_atm^X, vignetting and aperture loss. Scale-free
error vectors therefore differ between stars only where the star's own light matters: its photon
noise at its lines and its own airmass through the telluric bands.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from snrmoe_lib._util.rng import rng as _rng

__all__ = ["FineGrid", "Instrument", "load_instrument_config", "airmass", "MASK_BITS"]

#: pixel-mask bits (non-zero = bad pixel, as in the real products)
MASK_BITS = {"bad_column": 1, "sky_line": 2, "telluric": 4}
_CONFIG = Path(__file__).with_name("instrument.yaml")


@lru_cache(maxsize=4)
def _read_yaml(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def load_instrument_config(path: str | Path | None = None) -> dict:
    """The mock's settings (``instrument.yaml``) as a fresh nested dict."""
    return copy.deepcopy(_read_yaml(str(path or _CONFIG)))


def airmass(zenith_deg):
    """Airmass X = 1/√(1 − 0.96 sin²z) (the ETC's formula)."""
    s = np.sin(np.radians(zenith_deg))
    return 1.0 / np.sqrt(1.0 - 0.96 * s * s)


class FineGrid:
    """The pixel grid, a fine sub-grid for intrinsic profiles, and the line-spread function.

    The LSF (fibre top hat ⊗ camera Gaussian ⊗ pixel box) is sampled on the fine grid; one
    strided convolution both smooths and bins fine samples onto the pixels.
    """

    def __init__(self, cfg: dict):
        w = cfg["wavelength"]
        self.wave = np.linspace(w["w_min"], w["w_max"], int(w["n_pix"]))
        self.os = int(w["oversample"])
        step = self.wave[1] - self.wave[0]
        self.h = step / self.os
        lsf = cfg["lsf"]
        # fine-grid kernel centred between sub-pixels: for even os the pixel centre falls halfway
        # between two sub-pixel centres, so taps sit at half-integer offsets
        half = int(np.ceil((lsf["tophat_pix"] / 2 + 0.5 + 4.5 * lsf["gauss_sigma_pix"]) * self.os))
        x_taps = (np.arange(2 * half) - half + 0.5) * self.h / step  # in pixels
        x_fine = np.linspace(-half / self.os, half / self.os, 4001)
        dx = x_fine[1] - x_fine[0]
        box = ((np.abs(x_fine) <= lsf["tophat_pix"] / 2)).astype(float)
        pix = (np.abs(x_fine) <= 0.5).astype(float)
        gauss = np.exp(-0.5 * (x_fine / lsf["gauss_sigma_pix"]) ** 2)
        prof = np.convolve(np.convolve(box, pix, "same"), gauss, "same") * dx * dx
        k = np.interp(x_taps, x_fine, prof)
        self.kernel = k / k.sum()
        self.pad = half
        n_fine = len(self.wave) * self.os + 2 * half
        self.wave_fine = self.wave[0] - step / 2 + self.h / 2 - half * self.h + self.h * np.arange(n_fine)
        # pixel j's centre lies at fine index j·os + half + (os−1)/2 and the kernel (2·half taps)
        # is centred at tap half − 1/2, so pixel j's window starts at fine index j·os + os/2
        if self.os % 2:
            raise ValueError(f"wavelength.oversample must be even, got {self.os}")
        self.start = self.os // 2

    def bin_torch(self, fine):
        """LSF-convolve and bin (B, n_fine) fine samples onto the (B, P) pixels (torch)."""
        import torch

        k = self.__dict__.setdefault("_k", {})
        if fine.dtype not in k:
            k[fine.dtype] = torch.as_tensor(self.kernel, dtype=fine.dtype).view(1, 1, -1)
        x = fine[:, None, self.start:]
        return torch.nn.functional.conv1d(x, k[fine.dtype], stride=self.os)[:, 0, : len(self.wave)]

    def bin(self, fine: np.ndarray) -> np.ndarray:
        """The numpy twin of :meth:`bin_torch` for static templates."""
        fine = np.atleast_2d(fine)
        out = np.zeros((fine.shape[0], len(self.wave)))
        n = len(self.wave)
        for t, kt in enumerate(self.kernel):
            out += kt * fine[:, self.start + t:: self.os][:, :n]
        return out


def _piecewise(x, xs, ys):
    return np.interp(x, np.asarray(xs, float), np.asarray(ys, float))


class Instrument:
    """Static instrument and sky templates plus the per-star counts and noise.

    Parameters
    ----------
    cfg : dict
        The content of ``instrument.yaml`` (see :func:`load_instrument_config`).
    grid : FineGrid, optional
        Shared with the stellar model; built from ``cfg`` when not given.
    """

    def __init__(self, cfg: dict, grid: FineGrid | None = None):
        self.cfg = cfg
        self.grid = grid or FineGrid(cfg)
        self.wave = self.grid.wave
        self.dlam = self.wave[1] - self.wave[0]
        lam_nm = self.wave / 10.0
        tp = cfg["throughput"]
        self.throughput = _piecewise(lam_nm, tp["wave_nm"], tp["value"])
        self.extinction = self._extinction(lam_nm)
        self.sky_cont = self._sky_continuum(lam_nm)          # photons s⁻¹ m⁻² nm⁻¹ arcsec⁻² at X = 1, T_atm = 1
        self.telluric = self._telluric()                      # molecular transmission at zenith
        self.oh = self._oh_lines()                            # photons s⁻¹ m⁻² arcsec⁻² per pixel at X_ref
        self.static_mask = self._static_mask()
        # per-star arithmetic runs in float32 (counts ≲ 1e6: ample precision, half the memory traffic)
        for k in ("throughput", "extinction", "sky_cont", "telluric", "oh"):
            setattr(self, k, getattr(self, k).astype(np.float32))
        self.wave32 = self.wave.astype(np.float32)

    # -- static templates ----------------------------------------------------------------------

    def _extinction(self, lam_nm):
        e = self.cfg["extinction"]
        return np.where(lam_nm <= 800.0, e["k_700"] + e["slope_700_800"] * (lam_nm - 700.0),
                        e["k_800"] + e["slope_800_900"] * (lam_nm - 800.0))

    def _sky_continuum(self, lam_nm):
        s = self.cfg["sky"]
        p = s["continuum_mag_poly"]
        amp, wid, cen = s["continuum_bump"]
        m = p[0] + p[1] * lam_nm + p[2] * lam_nm ** 2 - amp * np.exp(-wid * (lam_nm - cen) ** 2) \
            - s["continuum_invquart"] / lam_nm ** 4
        n = 0.01089 * 10 ** (0.4 * (22.5 - m)) * 1e6 / lam_nm ** 2 * 1e-11 * 5.034e8 * lam_nm
        bf = s["blue_factor"]
        return np.where(lam_nm <= 800.0, n * (bf[0] + bf[1] * lam_nm), n)

    def oh_line_list(self) -> np.ndarray:
        """(λ Å, flux in 1e-16 erg s⁻¹ cm⁻² arcsec⁻²): the atlas's strongest lines + a seeded forest."""
        s = self.cfg["sky"]
        strong = np.asarray(s["oh_strong"], float)
        edges = np.asarray(s["oh_bin_edges_nm"], float) * 10.0
        rng = _rng("mock.sky", int(s["oh_forest_seed"]))
        n_bins = len(edges) - 1
        per_bin = np.full(n_bins, s["oh_forest_n"] // n_bins)
        out = [strong]
        for b in range(n_bins):
            lo, hi = edges[b], edges[b + 1]
            target = s["oh_bin_sums"][b] - strong[(strong[:, 0] >= lo) & (strong[:, 0] < hi), 1].sum()
            # OH lines come in clumps (rotational branches): draw centres, then lines around them
            centres = rng.uniform(lo, hi, size=max(3, per_bin[b] // 12))
            lam = rng.choice(centres, size=per_bin[b]) + rng.normal(0, 12.0, size=per_bin[b])
            lam = np.clip(lam, lo, hi)
            f = rng.pareto(1.5, size=per_bin[b]) + 0.05
            f *= max(target, 0.0) / f.sum()
            out.append(np.column_stack([lam, f]))
        return np.vstack(out)

    def _oh_lines(self):
        g = self.grid
        lines = self.oh_line_list()
        fine = np.zeros(len(g.wave_fine))
        idx = np.round((lines[:, 0] - g.wave_fine[0]) / g.h).astype(int)
        ok = (idx >= 0) & (idx < len(fine))
        # photons s⁻¹ m⁻² arcsec⁻² of each line: F·1e-16 erg/s/cm² → ×1e4 cm²/m² / (hc/λ)
        lam_nm = lines[:, 0] / 10.0
        phot = lines[:, 1] * 1e-12 * lam_nm * 5.034e8
        np.add.at(fine, idx[ok], phot[ok])
        # a line is a delta on the fine grid: × oversample so that binning conserves its photons
        return g.bin(fine[None, :])[0] * g.os

    def _telluric(self):
        """Zenith molecular transmission (O₂ A band, two H₂O bands) smoothed to the MR resolution."""
        g = self.grid
        t = self.cfg["telluric"]
        tau = np.zeros(len(g.wave_fine))
        lam = g.wave_fine
        a = t["o2_a"]
        # the A band at R ≈ 5000 is a blend: a smooth envelope (head at 7594 Å, fading to the red)
        # modulated by the regular comb of P-branch line pairs; the depth of the envelope, not single
        # saturated lines, sets the band (ETC/Kitt Peak at R = 5000: mean T 0.65, min 0.22 in 759–770 nm)
        band = (lam >= a["head"]) & (lam <= a["end"])
        env = a["tau_head"] * np.exp(-np.clip(lam - a["head"], 0, None) / a["decay"]) * band
        sig = 0.35
        comb = np.zeros_like(lam)
        for p in np.arange(a["head"], a["end"], a["spacing"]):
            comb += np.exp(-0.5 * ((lam - p) / sig) ** 2)
        comb *= a["spacing"] / (sig * np.sqrt(2 * np.pi))   # unit mean over the band
        tau += env * ((1.0 - a["modulation"]) + a["modulation"] * comb)
        for key in ("h2o_1", "h2o_2"):
            b = t[key]
            rng = _rng("mock.sky", b["seed"])
            pos = rng.uniform(b["lo"], b["hi"], b["n_lines"])
            st = rng.exponential(1.0, b["n_lines"])
            st *= b["tau_mean"] * (b["hi"] - b["lo"]) / (st.sum() * 0.35 * np.sqrt(2 * np.pi))
            for p, s in zip(pos, st):
                tau += s * np.exp(-0.5 * ((lam - p) / 0.35) ** 2)
        return g.bin(np.exp(-tau)[None, :])[0]

    def _static_mask(self):
        m = np.zeros(len(self.wave), np.int32)
        cols = np.asarray(self.cfg["detector"]["bad_columns"], int)
        m[cols[(cols >= 0) & (cols < len(m))]] |= MASK_BITS["bad_column"]
        ratio = self.oh / (self.sky_cont * self.dlam / 10.0)
        m[ratio > self.cfg["sky"]["mask_line_ratio"]] |= MASK_BITS["sky_line"]
        m[self.telluric < self.cfg["telluric"]["mask_transmission"]] |= MASK_BITS["telluric"]
        return m

    # -- per-star pieces -----------------------------------------------------------------------

    def conditions(self, table: pd.DataFrame) -> dict:
        """Per-star conditions as (B, 1) arrays (airmass, exposure, fibre, moon)."""
        def col(name, default=None):
            if name in table:
                return table[name].to_numpy(float)[:, None]
            if default is None:
                raise KeyError(f"the params table lacks the observing-condition column {name!r}")
            return np.full((len(table), 1), float(default))

        field = col("field_angle")
        sky_cfg = self.cfg["sky"]
        ref_z, ref_f = sky_cfg.get("reference_zenith"), sky_cfg.get("reference_field_angle")
        # the products share one sky and one instrument per configuration (every fibre of a pointing
        # sees one sky): the sky's airmass and fibre are the configuration's reference ones, and a
        # star's own zenith and field angle set only its own transmission, vignetting and aperture loss
        sky_field = field if ref_f is None else np.full_like(field, float(ref_f))
        c = {
            "mag": col("mag"), "seeing": col("seeing"), "field": field,
            "X": airmass(col("zenith")), "t": col("t_exp"), "n_exp": col("n_exp"),
            "X_sky": airmass(col("zenith")) if ref_z is None else np.full_like(field, airmass(float(ref_z))),
            "moon": col("moon", 0.0),
            # night-to-night sky variation: continuum brightness offset (mag) and OH line scale
            "sky_offset": col("sky_offset", 0.0), "oh_scale": col("oh_scale", 1.0),
            "radius": self._radius(field), "radius_sky": self._radius(sky_field),
            "a_geo": self._a_geo(field), "a_geo_sky": self._a_geo(sky_field),
        }
        return {k: v.astype(np.float32) for k, v in c.items()}

    def _radius(self, field):
        fib = self.cfg["fibre"]
        return _piecewise(field, fib["radius_arcsec_angle"], fib["radius_arcsec"])

    def _a_geo(self, field):
        tel = self.cfg["telescope"]
        return (tel["area_m2"] * tel["etc_throughput_factor"] * tel["efficiency"]
                * _piecewise(field, tel["vignetting_angle"], tel["vignetting"])
                * _piecewise(field, tel["obscuration_angle"], tel["obscuration_factor"]))

    def a_eff(self, c: dict, sky: bool = False) -> np.ndarray:
        """Effective collecting area in m² per pixel (B, P), without atmosphere and aperture loss
        (``sky``: of the configuration's sky fibre)."""
        return c["a_geo_sky" if sky else "a_geo"] * self.throughput[None, :]

    def transmission(self, c: dict, key: str = "X") -> np.ndarray:
        """Atmospheric transmission (B, P) at airmass ``c[key]``: continuum extinction and molecular bands, T_mol^X."""
        if not hasattr(self, "_log_t1"):
            self._log_t1 = -0.4 * np.log(10.0) * self.extinction + np.log(np.clip(self.telluric, 1e-6, None))
        return np.exp(c[key].astype(np.float32) * self._log_t1[None, :].astype(np.float32))

    def encircled_energy(self, c: dict) -> np.ndarray:
        """Fraction of a point source inside the fibre: Moffat PSF with seeing ∝ λ^{−0.2} (B, P)."""
        fib = self.cfg["fibre"]
        beta = fib["moffat_beta"]
        # EE varies slowly with λ: evaluate on 9 nodes and interpolate linearly (a matrix product)
        if not hasattr(self, "_ee_interp"):
            nodes = np.linspace(self.wave[0], self.wave[-1], 9)
            self._ee_nodes = nodes
            self._ee_interp = np.stack([np.interp(self.wave, nodes, np.eye(len(nodes))[i])
                                        for i in range(len(nodes))]).astype(np.float32)
        fwhm = c["seeing"] * (self._ee_nodes[None, :] / (10.0 * fib["seeing_ref_nm"])) ** -0.2
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        ee = 1.0 - (1.0 + (c["radius"] / alpha) ** 2) ** (1.0 - beta)
        return ee @ self._ee_interp

    def moon_continuum(self, c: dict) -> np.ndarray:
        """Moonlight in photons s⁻¹ m⁻² nm⁻¹ arcsec⁻² (B, P); zero for a new moon (moon = 0)."""
        if not np.any(c["moon"] > 0):
            return np.zeros((len(c["moon"]), len(self.wave)))
        m = self.cfg["moon"]
        frac = np.clip(c["moon"], 0.0, 1.0)
        phase = np.degrees(np.arccos(2.0 * frac - 1.0))  # phase angle: 0° full, 180° new
        istar = lambda a: 10 ** (-0.4 * (3.84 + 0.026 * np.abs(a) + 4e-9 * a ** 4))  # noqa: E731
        rel = istar(phase) / istar(0.0) * (frac > 0)
        lam_nm = self.wave32 / 10.0
        # AB surface brightness at 800 nm → photons; solar-coloured (blackbody) spectrum
        x = 1.4388e7 / (lam_nm * m["colour_temperature"])
        x0 = 1.4388e7 / (800.0 * m["colour_temperature"])
        shape_nu = (lam_nm / 800.0) ** -3 * np.expm1(x0) / np.expm1(x)  # B_ν ∝ ν³/(e^x − 1)
        n800 = 5.48e10 * 10 ** (-0.4 * m["full_moon_mag"]) / 800.0  # photons s⁻¹ m⁻² nm⁻¹ arcsec⁻²
        return rel * n800 * shape_nu[None, :] * (800.0 / lam_nm[None, :])

    def sky_counts(self, c: dict, a_eff: np.ndarray, t_atm: np.ndarray) -> np.ndarray:
        """Sky photo-electrons per pixel summed over the exposures (B, P), at the sky's airmass
        ``c['X_sky']`` through the sky fibre (``t_atm``: the transmission at that airmass, ``a_eff``:
        :meth:`a_eff` with ``sky=True``)."""
        s = self.cfg["sky"]
        x_ref = s["oh_ref_airmass"]
        x = c["X_sky"]
        cont = self.sky_cont[None, :] * (x * 10.0 ** (-0.4 * c["sky_offset"]))
        if np.any(c["moon"] > 0):
            cont = cont + self.moon_continuum(c)
        cont = cont * t_atm * (self.dlam / 10.0)
        if not hasattr(self, "_log_ext"):
            self._log_ext = (-0.4 * np.log(10.0) * self.extinction).astype(np.float32)
        oh = self.oh[None, :] * np.exp((x - x_ref).astype(np.float32) * self._log_ext[None, :])
        area = np.pi * c["radius_sky"] ** 2 * self.cfg["fibre"]["frac_trace"]
        return (cont + oh * (x / x_ref * c["oh_scale"])) * a_eff * (area * c["t"] * c["n_exp"])

    def object_counts(self, f_nu_rel: np.ndarray, c: dict, a_eff: np.ndarray, t_atm: np.ndarray) -> np.ndarray:
        """Object photo-electrons per pixel summed over the exposures (B, P).

        ``f_nu_rel`` is the star's f_ν in units of the AB flux of magnitude ``mag`` (1 = flat
        spectrum at that AB magnitude), already normalised through the i band.
        """
        n_gamma = (5.48e10 * 10.0 ** (-0.4 * c["mag"])) * f_nu_rel * (np.float32(self.dlam) / self.wave32[None, :])
        ee = self.encircled_energy(c)
        return n_gamma * a_eff * t_atm * ee * self.cfg["fibre"]["frac_trace"] * c["t"] * c["n_exp"]

    def variance(self, obj: np.ndarray, sky: np.ndarray, c: dict, poisson: np.ndarray | None = None) -> np.ndarray:
        """σ² in e⁻² per pixel summed over the exposures (B, P).

        ``poisson`` replaces obj + sky in the photon term (the 'estimated' error mode passes a noisy
        realisation there, as a reduction pipeline would). ``sky`` may be one (1, P) row shared by
        every star (one sky per configuration).
        """
        d = self.cfg["detector"]
        photon = obj + sky if poisson is None else np.clip(poisson, 0.0, None)
        stray = d["stray_light"] * sky.mean(axis=1, keepdims=True)
        detector = c["n_exp"] * (d["read_var_per_exp"] + d["dark_e_per_s"] * c["t"])
        sky_max3 = np.maximum(np.maximum(sky, np.roll(sky, 1, axis=1)), np.roll(sky, -1, axis=1))
        # residual of the summed sky: n_exp^p × (one exposure's sky); p = 1 (ETC: it does not
        # average down) or 1/2 (independent residuals per exposure)
        resid = d["sky_residual"] * sky_max3 * c["n_exp"] ** (d["sky_residual_exp_power"] - 1.0)
        return d["noise_factor"] * (photon + stray + detector) + resid ** 2
