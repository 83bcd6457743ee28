"""The mock's line list and the scaling laws of line strength, in one readable place.

Everything here is data plus tiny functions (numpy or torch, whichever array comes in). The
physics is textbook LTE (Gray, *The Observation and Analysis of Stellar Photospheres*, ch. 1, 11,
13, 16); the atomic data are from VALD / GALAH DR3 / NIST where a public copy was checked and
"approx." otherwise (see the project's mock-physics notes). This is a mock, not BOSZ: the goal is
the right *responses* of each feature to (T_eff, log g, [M/H], [α/M], [C/M]), not line-by-line
accuracy.

How one line's strength is built (log10 of the peak opacity ratio η₀ = κ_line/κ_cont):

* abundance: A_el − 12 + [M/H] (+ [α/M] for O, Mg, Si, Ca, Ti; + [C/M] for carbon),
* Boltzmann: − θ_exc·χ with θ_exc = 5040 / (t_exc_ratio·T_eff) — the line-forming layer is cooler,
* Saha: the fraction of the element in the line's ionisation stage, evaluated near T_eff,
* H⁻ continuum: κ_c ∝ P_e·θ^2.5·10^{0.754 θ}; P_e ∝ g^{1/3} Z^{1/3} (metals give the electrons).

So minority neutrals (Fe I, Na I, Mg I, K I, Ti I) have N_I/κ_c nearly independent of g (their
weak lines are gravity-blind), dominant ions (Ca II, Fe II) and O I scale as 1/P_e ∝ g^{−1/3}
(stronger in giants), and strong lines get gravity from their pressure-broadened wings
(a ∝ P_g ∝ g^{2/3} Z^{−1/3}): W ∝ √(a η₀) ∝ g^{1/3} for Na I, Mg I, K I (dwarfs stronger).
The Ca II triplet's observed gravity trend has the opposite sign to this naive scaling, so its
wings get their own empirical exponents (calibrated to the red-giant-branch CaT relations).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from snrmoe_lib._util.rng import rng as _rng

__all__ = ["ELEMENTS", "LINES", "PASCHEN", "MOLECULAR_BANDS", "LineList", "build_line_list",
           "log_pe", "saha_log_ratio", "log_stage_fraction", "log_kappa_rel",
           "doppler_width", "voigt_like", "LN10"]

LN10 = float(np.log(10.0))
T_SUN = 5777.0
LOGG_SUN = 4.44
C_KMS = 299792.458

# element: (solar abundance A, first ionisation potential eV, log10(2 U_II / U_I), mass amu,
#           alpha element?, carbon?) — partition functions as constants near 5000 K (approx.)
ELEMENTS = {
    "H": (12.00, 13.598, -0.30, 1.008, 0, 0),
    "O": (8.69, 13.618, -0.05, 16.00, 1, 0),
    "Na": (6.24, 5.139, 0.00, 22.99, 0, 0),
    "Mg": (7.60, 7.646, 0.60, 24.31, 1, 0),
    "Si": (7.51, 8.152, 0.08, 28.09, 1, 0),
    "K": (5.03, 4.341, 0.00, 39.10, 0, 0),
    "Ca": (6.34, 6.113, 0.60, 40.08, 1, 0),
    "Ti": (4.95, 6.828, 0.56, 47.87, 1, 0),
    "Cr": (5.64, 6.767, 0.23, 52.00, 0, 0),
    "Fe": (7.50, 7.902, 0.50, 55.85, 0, 0),
    "Ni": (6.22, 7.640, -0.18, 58.69, 0, 0),
}

# One row per line: (element, ion stage 1=neutral 2=singly ionised, air λ Å, χ eV, log gf,
#   window 'wide' (resolved damping wings) or 'narrow', log a at solar conditions (damping),
#   gravity exponent of a, metallicity exponent of a, strength adjustment dex).
# The strength adjustments of the named strong lines were fitted once so that the Sun's equivalent
# widths come out near the solar-atlas values (CaT 1.46/3.67/2.60 Å, Na I 0.29/0.37, Mg I 8807
# 0.55, K I 0.23/0.18, O I triplet 0.18, Fe II 0.05 each): a single-layer model lacks the depth
# structure that sets real strong-line strengths, and these offsets absorb that.
# None for the exponents means the default pressure scaling a ∝ P_g: (2/3, −1/3).
LINES = [
    # --- Ca II infrared triplet [N]: the strongest features; pressure-broadened wings.
    # Wing exponents are empirical (the naive a ∝ g^{2/3} gives the wrong-sign gravity trend):
    # a ∝ g^{0.12} Z^{−0.15} makes ΣW rise toward low g along the RGB and by ≈3–4 Å per dex of
    # [M/H]; the g exponent (instrument.yaml: stellar.cat_gravity_exponent) also sets σ_CRLB(log g).
    ("Ca", 2, 8498.02, 1.692, -1.31, "wide", -1.05, 0.12, -0.15, 1.44),
    ("Ca", 2, 8542.09, 1.700, -0.36, "wide", -1.05, 0.12, -0.15, 1.36),
    ("Ca", 2, 8662.14, 1.692, -0.62, "wide", -1.05, 0.12, -0.15, 1.28),
    # --- gravity-sensitive neutral resonance-like lines: wings ∝ P_g (stronger in dwarfs)
    ("Na", 1, 8183.256, 2.10, 0.24, "wide", -0.4, None, None, 1.70),
    ("Na", 1, 8194.81, 2.10, 0.54, "wide", -0.4, None, None, 1.62),   # 8194.790 + 8194.824 blend
    ("K", 1, 7664.899, 0.00, 0.15, "wide", -1.4, None, None, 1.62),
    ("K", 1, 7698.964, 0.00, -0.18, "wide", -1.4, None, None, 1.73),
    ("Mg", 1, 8806.756, 4.35, -0.14, "wide", -0.3, None, None, 1.84),
    # --- Fe I, Ca I, Ni I, Mg I, Si I, Ti I: the bulk of the T_eff and [M/H] information
    ("Fe", 1, 7130.921, 4.22, -0.79, "narrow", -2.0, None, None, 0.0),
    ("Ca", 1, 7148.150, 2.71, 0.14, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7164.447, 4.19, -0.37, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7187.316, 4.10, -0.15, "narrow", -2.0, None, None, 0.0),
    ("Ca", 1, 7202.200, 2.71, -0.26, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7207.386, 4.15, -0.20, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7223.657, 3.02, -2.23, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7293.043, 4.26, -0.90, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7311.074, 4.28, -0.97, "narrow", -2.0, None, None, 0.0),
    ("Ca", 1, 7326.145, 2.93, -0.21, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7386.333, 4.91, -0.27, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7389.398, 4.30, -0.46, "narrow", -2.0, None, None, 0.0),
    ("Ni", 1, 7555.597, 3.85, 0.05, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7583.788, 3.02, -1.89, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7586.018, 4.31, -0.27, "narrow", -2.0, None, None, 0.0),
    ("Ni", 1, 7616.976, 3.65, 0.12, "narrow", -2.0, None, None, 0.0),
    ("Mg", 1, 7657.603, 5.11, -1.27, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7664.293, 2.99, -1.68, "narrow", -2.0, None, None, 0.0),
    ("Mg", 1, 7691.550, 5.75, -0.78, "narrow", -2.0, None, None, 0.0),
    ("Ni", 1, 7714.308, 1.93, -2.00, "narrow", -2.0, None, None, 0.0),
    ("Ni", 1, 7727.609, 3.68, -0.17, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7748.269, 2.95, -1.75, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7780.557, 4.47, -0.20, "narrow", -2.0, None, None, 0.0),
    ("Ni", 1, 7788.930, 1.95, -2.18, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 7832.196, 4.44, 0.11, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8327.056, 2.20, -1.50, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8387.773, 2.18, -1.50, "narrow", -2.0, None, None, 0.0),
    ("Ti", 1, 8426.50, 0.83, -1.20, "narrow", -2.0, None, None, 0.0),
    ("Ti", 1, 8434.96, 0.85, -0.80, "narrow", -2.0, None, None, 0.0),
    ("Ti", 1, 8435.65, 0.84, -1.00, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8468.41, 2.22, -2.10, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8514.07, 2.20, -2.20, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8582.26, 2.99, -2.10, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8611.80, 2.85, -1.90, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8621.60, 2.95, -2.30, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8674.75, 2.83, -1.80, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8688.62, 2.18, -1.20, "narrow", -1.8, None, None, 0.0),
    ("Si", 1, 8728.01, 6.18, -0.40, "narrow", -2.0, None, None, 0.0),
    ("Mg", 1, 8736.02, 5.95, -0.50, "narrow", -2.0, None, None, 0.0),
    ("Si", 1, 8742.45, 5.87, -0.50, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8757.19, 2.85, -2.10, "narrow", -2.0, None, None, 0.0),
    ("Fe", 1, 8824.22, 2.20, -1.50, "narrow", -1.8, None, None, 0.0),
    # --- dominant ions and O I: gravity through the ionisation balance (stronger at low g)
    ("Fe", 2, 7222.391, 3.89, -3.36, "narrow", -2.2, None, None, 1.09),
    ("Fe", 2, 7224.478, 3.89, -3.24, "narrow", -2.2, None, None, 1.09),
    ("Fe", 2, 7308.068, 3.89, -3.15, "narrow", -2.2, None, None, 1.09),
    ("Fe", 2, 7320.657, 3.89, -3.34, "narrow", -2.2, None, None, 1.09),
    ("Fe", 2, 7711.720, 3.90, -2.50, "narrow", -2.2, None, None, 1.09),
    ("O", 1, 7771.944, 9.15, 0.37, "narrow", -2.2, None, None, 2.21),
    ("O", 1, 7774.166, 9.15, 0.22, "narrow", -2.2, None, None, 2.21),
    ("O", 1, 7775.388, 9.15, 0.00, "narrow", -2.2, None, None, 2.21),
]

# H I Paschen lines Pa11–Pa20 (lower level n = 3, χ = 12.09 eV): hydrogenic oscillator strengths
# f(3→n) ≈ 0.00659·(10/n)³, g_lower = 18. Stark wings ∝ n_e ∝ P_e (a ∝ g^{1/3}).
R_H_AIR = 109677.58 / 1.000276  # cm⁻¹, Rydberg for H divided by the refractive index of air (approx.)
PASCHEN = [(n, 1e8 / (R_H_AIR * (1.0 / 9.0 - 1.0 / n ** 2)), float(np.log10(18 * 0.00659 * (10.0 / n) ** 3)))
           for n in range(11, 21)]
PASCHEN_ADJ = 3.0  # calibrated: Paschen lines weak in the Sun (≈0.1 Å), ≈0.5–1 Å in F stars

# Molecular bands: (molecule, head λ Å, e-folding length Å toward the red, relative strength).
# Head positions approx. (±5 Å); both systems are red-degraded.
MOLECULAR_BANDS = [
    ("TiO", 7054.0, 90.0, 1.0), ("TiO", 7087.0, 70.0, 0.8), ("TiO", 7126.0, 80.0, 0.9),
    ("TiO", 7589.0, 60.0, 0.6), ("TiO", 7672.0, 70.0, 0.5), ("TiO", 8432.0, 60.0, 0.35),
    ("TiO", 8859.0, 60.0, 0.3),
    ("CN", 7088.0, 60.0, 0.5), ("CN", 7259.0, 60.0, 0.6), ("CN", 7875.0, 80.0, 1.0),
    ("CN", 8067.0, 80.0, 0.9), ("CN", 8270.0, 80.0, 0.7),
]


@dataclass
class LineList:
    """Column arrays of the full line list (atomic lines, Paschen, weak forest)."""

    element: np.ndarray   # (L,) str
    stage: np.ndarray     # (L,) 1 or 2
    wave: np.ndarray      # (L,) Å
    chi: np.ndarray       # (L,) eV
    loggf: np.ndarray     # (L,)
    wide: np.ndarray      # (L,) bool: evaluate on a wide window (resolved wings)
    log_a0: np.ndarray    # (L,) log damping parameter at solar conditions
    a_g: np.ndarray       # (L,) exponent of g in a
    a_z: np.ndarray       # (L,) exponent of Z in a
    adj: np.ndarray       # (L,) strength adjustment, dex
    synthetic: np.ndarray  # (L,) bool: part of the seeded weak forest

    def __len__(self) -> int:
        return len(self.wave)

    def select(self, keep: np.ndarray) -> "LineList":
        """A sub-list (``keep`` a boolean mask or index array)."""
        return LineList(**{k: getattr(self, k)[keep] for k in self.__dataclass_fields__})

    def abundance_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-line (A_el, IP, log 2U_II/U_I, mass, alpha flag, carbon flag)."""
        cols = np.array([ELEMENTS[e] for e in self.element], dtype=float)
        return tuple(cols[:, i] for i in range(6))


def _forest(n: int, seed: int, w_lo: float, w_hi: float) -> list[tuple]:
    """A seeded forest of weak metal lines standing in for the thousands of real ones.

    Species mix and excitation potentials follow the red spectra of K giants roughly (mostly Fe I,
    then Ti I, Ni I, Cr I, Si I, Ca I); log gf is drawn so that most lines are weak (tens of mÅ).
    Positions avoid the Ca II triplet cores so that the triplet stays clean.
    """
    rng = _rng("mock.line_list", seed)
    species = np.array(["Fe", "Ti", "Ni", "Cr", "Si", "Ca"])
    prob = np.array([0.55, 0.15, 0.1, 0.08, 0.07, 0.05])
    out = []
    while len(out) < n:
        w = rng.uniform(w_lo, w_hi)
        if min(abs(w - c) for c in (8498.02, 8542.09, 8662.14)) < 3.0:
            continue
        el = species[rng.choice(len(species), p=prob)]
        chi = rng.uniform(0.8, 2.5) if el == "Ti" else rng.uniform(2.0, 5.0)
        loggf = rng.normal(-1.6, 0.6) + 0.25 * (chi - 3.0)
        out.append((str(el), 1, float(w), float(chi), float(loggf), "narrow", -2.0, None, None, 0.0))
    return out


def build_line_list(forest_n: int = 320, forest_seed: int = 1234, w_lo: float = 7090.0,
                    w_hi: float = 8860.0) -> LineList:
    """The mock's full line list: named lines, Paschen series, and a seeded weak forest."""
    rows = list(LINES)
    for n, lam, loggf in PASCHEN:
        # Stark wings: a ∝ n_e ∝ P_e ∝ g^{1/3} Z^{1/3}
        rows.append(("H", 1, lam, 12.09, loggf, "wide", -1.3, 1.0 / 3.0, 1.0 / 3.0, PASCHEN_ADJ))
    n_named = len(rows)
    rows += _forest(forest_n, forest_seed, w_lo, w_hi)
    el, st, w, chi, gf, win, la, ag, az, adj = zip(*rows)
    ag = [2.0 / 3.0 if x is None else x for x in ag]
    az = [-1.0 / 3.0 if x is None else x for x in az]
    synth = np.zeros(len(rows), bool)
    synth[n_named:] = True
    return LineList(np.array(el), np.array(st, int), np.array(w, float), np.array(chi, float),
                    np.array(gf, float), np.array([x == "wide" for x in win]), np.array(la, float),
                    np.array(ag, float), np.array(az, float), np.array(adj, float), synth)


# ------------------------------------------------------------------------------------------
# Scaling laws (work on numpy arrays or torch tensors alike: only +, *, log, exp are used)
# ------------------------------------------------------------------------------------------


def _log10(x):
    return np.log10(x) if isinstance(x, (np.ndarray, float, int)) else x.log10()


def log_pe(teff, logg, mh, log_pe_sun: float = 1.1, t_exp: float = 6.0):
    """log10 electron pressure in the line-forming layer: P_e ∝ g^{1/3} Z^{1/3} T^{t_exp} (approx.)."""
    return log_pe_sun + (logg - LOGG_SUN) / 3.0 + mh / 3.0 + t_exp * _log10(teff / T_SUN)


def saha_log_ratio(t_ion, ip, log_u, log_pe_):
    """log10(N_II / N_I) from the Saha equation with P_e in dyn cm⁻²."""
    return log_u + 2.5 * _log10(t_ion) - (5040.0 / t_ion) * ip - 0.1762 - log_pe_


def log_stage_fraction(r, stage):
    """log10 of the fraction in stage 1 (neutral) or 2 (ionised) given r = log10(N_II/N_I).

    Smooth in r (a softplus), so autograd and finite differences agree.
    """
    if isinstance(r, np.ndarray):
        sp = np.logaddexp(0.0, r * LN10) / LN10
    else:
        import torch

        sp = torch.nn.functional.softplus(r * LN10) / LN10
    return (stage == 2) * r - sp


def log_kappa_rel(teff, log_pe_, t_ion_ratio: float = 0.97, log_pe_sun: float = 1.1):
    """log10 of the H⁻ continuum opacity relative to the Sun's: κ ∝ P_e θ^{2.5} 10^{0.754 θ}."""
    th = 5040.0 / (t_ion_ratio * teff)
    th_sun = 5040.0 / (t_ion_ratio * T_SUN)
    return (log_pe_ - log_pe_sun) + 2.5 * _log10(th / th_sun) + 0.754 * (th - th_sun)


def doppler_width(wave, teff, mass, xi, macro: float = 3.0):
    """Doppler width Δλ_D = λ/c·√(2kT/m + ξ² + ζ²) in Å (thermal, micro- and macroturbulence)."""
    v2 = 2.0 * 1.380649e-23 * teff / (mass * 1.66054e-27) * 1e-6 + xi ** 2 + macro ** 2
    return wave / C_KMS * v2 ** 0.5


def voigt_like(v, a):
    """A cheap, smooth stand-in for the Voigt function H(a, v).

    Doppler core exp(−v²) plus Lorentzian wings a/(√π (v² + 1)), which tends to the exact
    damping wing a/(√π v²) far from the centre and stays finite at v = 0.
    """
    if isinstance(v, np.ndarray):
        return np.exp(-v * v) + a / (np.sqrt(np.pi) * (v * v + 1.0))
    return (-v * v).exp() + a / (1.7724538509055159 * (v * v + 1.0))
