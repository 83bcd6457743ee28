"""A differentiable stellar spectrum μ(θ) on the PFS-MR grid (torch, batched, float32 or float64).

θ = (T_eff, log g, [M/H], [α/M], [C/M]). The spectrum is

    F_λ = B_λ(T_eff) · r_lines(λ) · exp(−Σ τ_band(θ) s_band(λ))

* a blackbody continuum: kept in the flux before the median normalisation, as in the real
  flux-calibrated products, because the continuum slope pins T_eff;
* atomic lines on a fine grid (``oversample`` sub-pixels per pixel): peak opacity ratio η₀ from
  :mod:`.lines` (Boltzmann, Saha, H⁻ continuum, abundances), a Voigt-like profile with damping
  wings, Milne–Eddington depth d = d_max·η/(1+η) (curve of growth: linear → flat → damping),
  then the instrument's line-spread function and pixel binning in one strided convolution;
* TiO and CN band templates whose optical depths follow the molecular equilibrium.

Each line profile is evaluated only on a local window (±0.64 Å for weak lines, ±21 Å for lines
with resolved wings), with a fixed Doppler core per line (thermal at 5000 K, ξ = 1.5 km/s and a
6 km/s macroturbulence floor, all far below the R ≈ 5000 LSF), which is what keeps the weak-line
forest cheap: one multiply per sample.
"""
from __future__ import annotations

import numpy as np

from snrmoe_lib.data.mock import lines as L

__all__ = ["StellarModel"]

_HC_K = 1.4387769e8  # hc/k in Å·K


class StellarModel:
    """Noise-free stellar spectra as a torch function of θ.

    Parameters
    ----------
    grid : FineGrid
        The pixel grid, its fine sub-grid and the line-spread function
        (:class:`snrmoe_lib.data.mock.instrument.FineGrid`).
    cfg : dict
        The ``stellar`` section of ``instrument.yaml``.
    """

    narrow_half = 3    # fine sub-pixels either side for weak lines (±0.64 Å at oversample 2)
    wide_half = 100    # fine sub-pixels either side for lines with resolved wings (±21 Å)
    t_ref = 5000.0     # K: the fixed Doppler widths are thermal at t_ref + ξ_ref + macroturbulence
    xi_ref = 1.5       # km/s
    tau_sat = 2.0      # saturation of the molecular band optical depth (max absorption ≈ 86 %)

    def __init__(self, grid, cfg: dict):
        self.grid = grid
        self.wave = grid.wave
        self.cfg = dict(cfg)
        self.h = grid.h
        self.wave_fine = grid.wave_fine
        self.n_fine = len(grid.wave_fine)
        self.lines = L.build_line_list(int(cfg.get("forest_n", 320)), int(cfg.get("forest_seed", 1234)))
        if "cat_gravity_exponent" in cfg:
            # the Ca II triplet's empirical wing exponent a ∝ g^p: the gentlest knob on σ_CRLB(log g)
            cat = (self.lines.element == "Ca") & (self.lines.stage == 2)
            self.lines.a_g[cat] = float(cfg["cat_gravity_exponent"])
        self._prepare_windows()
        self._prepare_bands()

    # -- static pieces -------------------------------------------------------------------------

    def _prepare_windows(self) -> None:
        """Fixed local windows and profile shapes per line.

        The Doppler width of each line is fixed (thermal at ``t_ref``, ξ_ref, macroturbulence):
        at R ≈ 5000 it is far below the LSF and dominated by the macroturbulence floor, so its θ
        dependence is negligible — and fixing it makes the core profile a constant table, which
        keeps the weak-line forest to one multiply per sample.
        """
        ll = self.lines
        mass = ll.abundance_columns()[3]
        self.dld = L.doppler_width(ll.wave, self.t_ref, mass, self.xi_ref, self.cfg["macro_kms"])
        self._abund = ll.abundance_columns()
        self._const = (ll.loggf + ll.adj + self._abund[0] - 12.0 + 2.0 * np.log10(ll.wave / 8000.0)
                       - np.log10(self.dld / 0.1))
        self.groups = []
        for wide, half in ((False, self.narrow_half), (True, self.wide_half)):
            sel = np.flatnonzero(ll.wide == wide)
            centre = np.round((ll.wave[sel] - self.wave_fine[0]) / self.h).astype(int)
            idx = centre[:, None] + np.arange(-half, half + 1)[None, :]
            valid = (idx >= 0) & (idx < self.n_fine)
            idx_c = np.clip(idx, 0, self.n_fine - 1)
            v = (self.wave_fine[idx_c] - ll.wave[sel][:, None]) / self.dld[sel][:, None]
            core = np.exp(-v * v) * valid
            lor = valid / (np.sqrt(np.pi) * (v * v + 1.0))  # Lorentz wing of L.voigt_like, per unit a
            keep = valid.any(axis=1)  # lines whose window falls off the grid contribute nothing
            self.groups.append({"sel": sel[keep], "idx": idx_c[keep], "core": core[keep], "lor": lor[keep]})

    def _prepare_bands(self) -> None:
        """Red-degraded band templates (unit peak optical depth), smoothed by the LSF."""
        self.band_shapes = {}
        for mol in ("TiO", "CN"):
            s = np.zeros(self.n_fine)
            for m, head, length, rel in L.MOLECULAR_BANDS:
                if m != mol:
                    continue
                d = self.wave_fine - head
                # a band head: sharp blue edge (a few Å), exponential decline toward the red
                s += rel * (0.5 * (1.0 + np.tanh(d / 3.0))) * np.exp(-np.clip(d, 0, None) / length)
            self.band_shapes[mol] = self._bin(s[None, :])[0]

    def _bin(self, fine: np.ndarray) -> np.ndarray:
        return self.grid.bin(fine)

    # -- the model -----------------------------------------------------------------------------

    def _torch(self, name: str, arr: np.ndarray, dtype):
        import torch

        key = (name, dtype)
        cache = self.__dict__.setdefault("_tcache", {})
        if key not in cache:
            cache[key] = torch.as_tensor(arr, dtype=dtype)
        return cache[key]

    def line_opacity(self, theta):
        """Per-line log10 peak opacity ratio η₀ and log10 damping parameter a, each (B, L)."""
        c = self.cfg
        ll = self.lines
        dt = theta.dtype
        teff, logg, mh, am, cm = (theta[:, i:i + 1] for i in range(5))
        A, ip, logu, mass, alpha, carbon = (self._torch(f"ab{i}", a, dt) for i, a in enumerate(self._abund))
        chi = self._torch("chi", ll.chi, dt)
        stage = self._torch("stage", ll.stage.astype(float), dt)
        lpe = L.log_pe(teff, logg, mh, c["log_pe_sun"], c["pe_t_exponent"])
        r = L.saha_log_ratio(c["t_ion_ratio"] * teff, ip, logu, lpe)   # Saha near T_eff
        lfrac = L.log_stage_fraction(r, stage)
        lkap = L.log_kappa_rel(teff, lpe, c["t_ion_ratio"], c["log_pe_sun"])
        theta_exc = 5040.0 / (c["t_exc_ratio"] * teff)                # Boltzmann in the cooler layer
        is_h = self._torch("is_h", (ll.element == "H").astype(float), dt)
        x_h = (mh + alpha * am + carbon * cm) * (1.0 - is_h)          # hydrogen does not scale with [M/H]
        # constant per line: log gf, A_el − 12, λ² (line opacity) and 1/Δλ_D (peak of the profile)
        const = self._torch("const", self._const, dt)
        log_eta = c["log_k_atom"] + const + x_h - theta_exc * chi + lfrac - lkap
        # damping: a ∝ P_g ∝ g^{2/3} Z^{−1/3} by default (per-line exponents in g and Z), the gas
        # pressure's T dependence, and T^{−0.6} for van der Waals broadening (ABO, α ≈ 0.25)
        a_g = self._torch("ag", ll.a_g, dt)
        a_z = self._torch("az", ll.a_z, dt)
        la0 = self._torch("la0", ll.log_a0 - np.log10(self.dld / 0.1), dt)
        log_a = la0 + a_g * (logg - L.LOGG_SUN) + a_z * mh + (c["pg_t_exponent"] - 0.6) * (teff / L.T_SUN).log10()
        return log_eta, log_a

    def line_ratio(self, theta, select: np.ndarray | None = None):
        """Continuum-normalised line spectrum r(λ) on the pixel grid, shape (B, P).

        ``select`` (boolean over the line list) keeps only some lines, e.g. for equivalent widths.
        """
        import torch

        dt = theta.dtype
        log_eta, log_a = self.line_opacity(theta)
        eta0 = 10.0 ** log_eta
        if select is not None:
            eta0 = eta0 * torch.as_tensor(np.asarray(select, float), dtype=dt)
        B = theta.shape[0]
        eta = torch.zeros(B, self.n_fine, dtype=dt)
        for gi, g in enumerate(self.groups):
            if len(g["sel"]) == 0:
                continue
            sel = self._torch(f"gsel{gi}", g["sel"], torch.long)
            idx = self._torch(f"gi{gi}", g["idx"].ravel(), torch.long)
            e0 = eta0[:, sel, None]
            contrib = e0 * self._torch(f"gc{gi}", g["core"], dt)
            if gi == 1:  # resolved damping wings
                contrib = contrib + (e0 * (10.0 ** log_a[:, sel, None])) * self._torch(f"gl{gi}", g["lor"], dt)
            eta.index_add_(1, idx, contrib.reshape(B, -1))
        # Milne–Eddington depth d_max·η/(1+η); the LSF is linear, so convolve the depth
        depth = eta / (1.0 + eta)
        return 1.0 - self.cfg["d_max"] * self.grid.bin_torch(depth)

    def band_depths(self, theta):
        """Peak optical depths of the TiO and CN band systems, each (B, 1).

        TiO ∝ n_Ti·n_O·K_eq(T): both α elements, so 10^{2([M/H]+[α/M])}; the equilibrium constant
        rises steeply toward cool stars (D₀ ≈ 6.9 eV, plus the neutral-Ti fraction): onset ≈ 4000 K.
        A higher C/O locks oxygen in CO and weakens TiO. CN ∝ n_C·n_N: 10^{2[M/H]+[C/M]}, strongest
        in K giants (a bump in T) and stronger at low gravity.
        """
        import torch

        teff, logg, mh, am, cm = (theta[:, i:i + 1] for i in range(5))
        th = 5040.0 / teff
        # free oxygen after CO formation (solar C/O = 0.55), smooth floor at 5 %
        co = 0.55 * 10.0 ** (cm - am)
        o_free = torch.nn.functional.softplus((1.0 - co) * 20.0) / 20.0 + 0.05
        log_tio = -19.3 + 14.5 * th + 2.0 * (mh + am) + torch.log10(o_free) + 0.1 * (logg - 4.5)
        log_cn = -0.55 + 2.0 * mh + cm - 0.15 * (logg - 2.5) - ((teff - 4600.0) / 700.0) ** 2
        # bands saturate (the pseudo-continuum itself is set by the molecule): τ → τ_sat·τ/(τ_sat + τ)
        tio, cn = 10.0 ** log_tio, 10.0 ** log_cn
        return self.tau_sat * tio / (self.tau_sat + tio), self.tau_sat * cn / (self.tau_sat + cn)

    def continuum(self, theta):
        """Blackbody B_λ(T_eff) on the pixel grid, normalised to 1 at 8000 Å; shape (B, P)."""
        import torch

        dt = theta.dtype
        teff = theta[:, :1]
        lam = self._torch("wave", self.wave, dt)[None, :]
        x = _HC_K / (lam * teff)
        x0 = _HC_K / (8000.0 * teff)
        cont = (8000.0 / lam) ** 5 * torch.expm1(x0) / torch.expm1(x)
        g = float(self.cfg.get("continuum_gravity", 0.0))
        if g:
            cont = cont * (lam / 8000.0) ** (g * (theta[:, 1:2] - L.LOGG_SUN))
        return cont

    def spectrum(self, theta):
        """F_λ(θ) on the pixel grid (B, P): continuum × lines × molecular bands."""
        import torch

        dt = theta.dtype
        tio, cn = self.band_depths(theta)
        s_tio = self._torch("stio", self.band_shapes["TiO"], dt)[None, :]
        s_cn = self._torch("scn", self.band_shapes["CN"], dt)[None, :]
        mol = torch.exp(-(tio * s_tio + cn * s_cn))
        return self.continuum(theta) * self.line_ratio(theta) * mol
