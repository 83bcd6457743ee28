"""The deployed mixture: one fitted pipeline that predicts log g, its σ and interval for any spectra.

:class:`DeployedMixture` holds what the Q3 deployed pipeline fitted (the quality compressor, the
gate, the per-SNR-bin experts — Ridge, another family's regressors in a
:class:`~snrmoe_lib.models.model_set.ModelSet`, or the SNR heads of a network
(:class:`~snrmoe_lib.models.model_set.NeuralHeads`) — and the global fallback, τ; in 'estimated' error
mode the variance model that gives σ̂) plus what deployment needs: the
wavelength grid, the ranges seen in training and the interval calibration
(:class:`SplitConformalPerBin`). :meth:`DeployedMixture.predict` turns flux and error into the
catalogue's columns (a DataFrame); :meth:`~DeployedMixture.save` / :func:`load_model` keep it as a
folder of plain arrays and JSON (:mod:`snrmoe_lib.models.persistence`).

Interval calibration
--------------------
:class:`SplitConformalPerBin` is split-conformal calibration per bin of the *observed* SNR
(computable for any spectrum): the ⌈(n+1)·level⌉-th smallest absolute validation residual is the
interval's half-width (:func:`snrmoe_lib.models.conformal.conformal_quantile`, the quantile the
notebooks' ``evaluation/intervals.py`` uses too), and the bin's validation RMS residual is the
reported σ. A bin with too few validation spectra for the level uses all of them (recorded as
``pooled``; with too few in all, the largest residual), so every star gets a finite interval where
the notebooks' calibration would report an infinite one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.data.noise import VarianceModel, add_noise, add_noise_estimated, assign_bins, effective_sigma
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput
from snrmoe_lib.models.conformal import conformal_quantile, per_bin_quantile
from snrmoe_lib.models.gates import check_proba
from snrmoe_lib.models.mixtures import mix
from snrmoe_lib.models.model_set import NeuralHeads
from snrmoe_lib.models.oracle_stream import LinearModels
from snrmoe_lib.models.persistence import ModelFormatError, load_folder, save_folder

__all__ = ["observed_snr", "SplitConformalPerBin", "DeployedMixture", "load_model", "dump_linear_models",
           "load_linear_models", "dump_variance_model", "load_variance_model", "PREDICTION_COLUMNS", "FAMILIES",
           "ERROR_MODES"]

#: Expert families a deployed model can hold ('ridge': streamed LinearModels; 'boosted': a ModelSet;
#: 'neural': NeuralHeads, the K SNR heads of one trunk and a global head).
FAMILIES = ("ridge", "boosted", "neural")
#: Which σ the model reads: 'clean' (error · noise_level, the products' expected error) or 'estimated'
#: (σ̂ estimated from the same noisy realisation, what an observation's pipeline gives).
ERROR_MODES = ("clean", "estimated")

#: The model's own columns of a catalogue (the gate probabilities ``p_<expert>`` and the quality
#: features ``q_<name>`` follow them; passthrough columns of the params table come first).
PREDICTION_COLUMNS = ("row", "log_g_pred", "log_g_sigma", "log_g_lo", "log_g_hi", "expert", "fallback", "snr_obs",
                      "snr_bin_obs", "n_bad_pixels", "flag_snr_out_of_range", "flag_bad_pixels", "flag_bad_row",
                      "flag")
FLAG_BITS = {"snr_out_of_range": 1, "bad_pixels": 2, "bad_row": 4}


def observed_snr(noisy: np.ndarray, sigma: np.ndarray, definition: str = "l2") -> np.ndarray:
    """SNR of each spectrum from its *noisy* flux and σ (what any observation allows).

    'l2': ``sqrt(max(‖y‖²/‖σ‖² − 1, 0))`` (the noise's own power removed, so it estimates the
    noise-free ‖flux‖/‖σ‖); 'pixel': ``median(y/σ)``.
    """
    if definition not in ("l2", "pixel"):
        raise ValueError(f"unknown SNR definition {definition!r}; use 'l2' or 'pixel'")
    out = np.empty(len(noisy))
    for i in range(0, len(noisy), 256):  # float64 a block of rows at a time: no chunk-sized float64 copies
        y = np.asarray(noisy[i:i + 256], dtype=np.float64)
        s = np.asarray(sigma[i:i + 256], dtype=np.float64)
        if definition == "l2":
            out[i:i + 256] = np.sqrt(np.maximum(np.einsum("ij,ij->i", y, y) / np.einsum("ij,ij->i", s, s) - 1.0, 0.0))
        else:
            out[i:i + 256] = np.median(y / s, axis=1)
    return out


class SplitConformalPerBin:
    """Split-conformal intervals per observed-SNR bin, fitted on validation residuals.

    Parameters
    ----------
    edges : sequence of float
        Bin edges of the observed SNR (right-closed, as the SNR bins).
    level : float
        Nominal coverage of the interval (0 < level < 1).

    Attributes
    ----------
    half_width_ : ndarray (n_bins,)
    sigma_ : ndarray (n_bins,)
        RMS validation residual of the bin.
    counts_ : ndarray (n_bins,)
    pooled_ : ndarray (n_bins,) of bool
        Bins with too few validation spectra: they use every validation residual.
    """

    def __init__(self, edges: Sequence[float] = (2.0, 4.0, 7.0), level: float = 0.9):
        self.edges = edges
        self.level = level

    def get_params(self, deep: bool = False) -> dict:
        return {"edges": [float(e) for e in self.edges], "level": float(self.level)}

    def fit(self, residuals, snr) -> "SplitConformalPerBin":
        r = np.abs(np.asarray(residuals, dtype=np.float64))
        if not 0 < float(self.level) < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if not len(r) or not np.all(np.isfinite(r)):
            raise ValueError("conformal calibration needs finite validation residuals")
        b = assign_bins(np.asarray(snr, dtype=np.float64), self.edges)
        k = len(self.edges) + 1
        self.counts_ = np.bincount(b, minlength=k)
        q = per_bin_quantile(r, b, k, self.level)
        self.pooled_ = ~np.isfinite(q)
        # fewer validation spectra in all than the level needs: the largest residual (the finite limit)
        q_all = conformal_quantile(r, self.level)
        self.half_width_ = np.where(self.pooled_, q_all if np.isfinite(q_all) else float(r.max()), q)
        self.sigma_ = np.array([np.sqrt(np.mean((r if self.pooled_[j] else r[b == j]) ** 2)) for j in range(k)])
        return self

    def predict(self, snr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin, σ, half-width) for each observed SNR."""
        b = assign_bins(np.asarray(snr, dtype=np.float64), self.edges)
        return b, self.sigma_[b], self.half_width_[b]


def dump_linear_models(m: LinearModels) -> tuple[dict, dict]:
    meta = {"names": list(m.names), "alpha_source": list(m.alpha_source),
            "alpha_at_edge": [bool(x) for x in m.alpha_at_edge]}
    return meta, {"coef": m.coef, "intercept": m.intercept, "alpha": m.alpha, "n_train": m.n_train}


def load_linear_models(meta: dict, a: dict) -> LinearModels:
    return LinearModels(meta["names"], a["coef"], a["intercept"], a["alpha"], meta["alpha_source"], a["n_train"],
                        meta["alpha_at_edge"])


def dump_variance_model(vm: VarianceModel) -> tuple[dict, dict]:
    """The fitted per-pixel variance model (error_mode 'estimated') as arrays."""
    return ({"n_iter": int(vm.n_iter), "rel_rms": float(vm.rel_rms_)},
            {"background": vm.background_, "gain": vm.gain_})


def load_variance_model(meta: dict, a: dict) -> VarianceModel:
    vm = VarianceModel(n_iter=meta["n_iter"])
    vm.background_, vm.gain_, vm.rel_rms_ = a["background"], a["gain"], meta["rel_rms"]
    return vm


@dataclass
class DeployedMixture:
    """The fitted deployed pipeline (see the module docstring).

    Attributes
    ----------
    compressor : fitted quality compressor (σ → quality features)
    gate : fitted classification gate (quality features → expert probabilities)
    linear : LinearModels, ModelSet or NeuralHeads
        The experts (``expert_columns``) and the global model (``global_column``), one feature map:
        streamed Ridge (``LinearModels``), another family's fitted regressors (``ModelSet``) or a
        network's SNR heads and global head (``NeuralHeads``).
    expert_labels : list of str
    expert_columns : list of int
    global_column : int
    tau : float
        Fallback threshold on the gate's largest probability.
    bin_pixels : int
    noise_level : float
        σ = error · noise_level when noise is drawn for noise-free products.
    snr_definition : str
    calibration : SplitConformalPerBin
    wave : ndarray (n_pix,)
    record : dict
        The ``model.json`` record (configuration, ranges, metrics, …).
    family : str
        The experts' family (:data:`FAMILIES`).
    error_mode : str
        Which σ the gate's quality features and the observed SNR read (:data:`ERROR_MODES`).
    variance : VarianceModel or None
        In 'estimated' mode: the variance model that turns a noise-free product's error into the σ̂ of
        the drawn noise (the same draw as the noisy flux).
    """

    compressor: Any
    gate: Any
    linear: LinearModels
    expert_labels: list
    expert_columns: list
    global_column: int
    tau: float
    bin_pixels: int
    noise_level: float
    snr_definition: str
    calibration: SplitConformalPerBin
    wave: np.ndarray
    record: dict
    family: str = "ridge"
    error_mode: str = "clean"
    variance: VarianceModel | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown expert family {self.family!r}; known: {list(FAMILIES)}")
        if self.error_mode not in ERROR_MODES:
            raise ValueError(f"error_mode must be one of {list(ERROR_MODES)}, got {self.error_mode!r}")
        if self.error_mode == "estimated" and self.variance is None:
            raise ValueError("error_mode 'estimated' needs the fitted variance model (data.noise.VarianceModel)")

    def draw_noise(self, flux, error, rows, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(noisy flux, σ the model reads) for noise-free products: the protocol's draw keyed by (seed, row);
        σ is error · noise_level ('clean') or σ̂ estimated from the same draw ('estimated')."""
        if self.error_mode == "estimated":
            gain = self.variance.gain(flux, error)
            return add_noise_estimated(flux, error, self.noise_level, rows, seed, gain)
        return add_noise(flux, error, self.noise_level, rows, seed), effective_sigma(error, self.noise_level)

    @property
    def quality_names(self) -> list[str]:
        return [str(n) for n in self.compressor.get_feature_names_out()]

    def details(self, noisy, sigma) -> dict:
        """Every model's output for noisy flux and σ (float32 like the training reads)."""
        noisy = np.asarray(noisy, dtype=np.float32)
        sigma = np.asarray(sigma, dtype=np.float32)
        q = self.compressor.transform(QualityInput(sigma))
        W = check_proba(self.gate.predict_proba(q), len(self.expert_columns))
        X = np.asarray(FluxFeatures(self.bin_pixels).transform(noisy), dtype=np.float32)
        pred = self.linear.predict(X)
        P, g = pred[:, self.expert_columns], pred[:, self.global_column]
        y, fell = mix(W, P, g, self.tau)
        return {"y": y, "proba": W, "experts": P, "global": g, "fell_back": fell, "quality": q,
                "snr_obs": observed_snr(noisy, sigma, self.snr_definition)}

    def predict(self, flux, error, *, noisy: bool = True, rows=None, seed: int = 0, mask=None,
                max_bad_fraction: float | None = None) -> pd.DataFrame:
        """The catalogue's model columns for a block of spectra.

        Parameters
        ----------
        flux, error : array (n, n_pix) on the model's wavelength grid
        noisy : bool
            True: ``flux`` already carries noise and ``error`` is the pipeline's σ estimate (read as
            is). False: noise-free products; noise is drawn by the protocol (keyed by (``seed``, row))
            and σ is :meth:`draw_noise`'s (the model's ``error_mode``).
        rows : array (n,), optional
            Row numbers (the catalogue's ``row`` and the noise keys); default ``0 … n−1``.
        mask : array (n, n_pix), optional
            Non-zero = masked pixel; counted with non-finite pixels in ``n_bad_pixels``.
        max_bad_fraction : float, optional
            Above this fraction of masked or non-finite pixels a star is flagged (``flag_bad_pixels``);
            default :meth:`bad_pixel_limit` (the training spectra's largest fraction + 0.05).
        """
        flux, error = np.asarray(flux, dtype=np.float32), np.asarray(error, dtype=np.float32)
        if flux.ndim != 2 or flux.shape != error.shape:
            raise ValueError(f"flux {flux.shape} and error {error.shape} must be equal 2-D shapes")
        if flux.shape[1] != len(self.wave):
            raise ValueError(f"spectra have {flux.shape[1]} pixels, the model's grid has {len(self.wave)} "
                             "(resample them onto model.wave first)")
        rows = np.arange(len(flux)) if rows is None else np.asarray(rows, dtype=np.int64)
        if noisy:
            y_in, sigma = flux, error
        else:
            y_in, sigma = self.draw_noise(flux, error, rows, seed)
        bad_pix = ~(np.isfinite(flux) & np.isfinite(error))
        if mask is not None:
            bad_pix |= np.asarray(mask) != 0
        limit = self.bad_pixel_limit() if max_bad_fraction is None else float(max_bad_fraction)
        return self._frame(self.details(y_in, sigma), rows, bad_pix.sum(axis=1), limit)

    def bad_pixel_limit(self) -> float:
        """The default limit on a star's masked or non-finite pixel fraction: the largest fraction seen in
        the training spectra (the instrument's own sky and telluric masks) + 0.05."""
        seen = self.record.get("ranges", {}).get("bad_pixel_fraction")
        return float(seen[1]) + 0.05 if seen else 0.1

    def _frame(self, d: dict, rows: np.ndarray, n_bad: np.ndarray, max_bad_fraction: float) -> pd.DataFrame:
        b, s, h = self.calibration.predict(d["snr_obs"])
        lo, hi = self.record["ranges"]["snr_obs"]
        top = np.asarray(self.expert_labels, dtype=object)[np.argmax(d["proba"], axis=1)]
        used = np.where(d["fell_back"], "global", top)
        out = {"row": rows, "log_g_pred": d["y"], "log_g_sigma": s, "log_g_lo": d["y"] - h, "log_g_hi": d["y"] + h,
               "expert": used.astype(str), "fallback": d["fell_back"], "snr_obs": d["snr_obs"],
               "snr_bin_obs": np.asarray(self.record["snr_bins"]["labels"], dtype=object)[b].astype(str),
               "n_bad_pixels": n_bad.astype(np.int64),
               "flag_snr_out_of_range": (d["snr_obs"] < lo) | (d["snr_obs"] > hi),
               "flag_bad_pixels": n_bad > max_bad_fraction * len(self.wave),
               "flag_bad_row": np.zeros(len(rows), dtype=bool)}
        out |= {f"p_{lab}": d["proba"][:, k] for k, lab in enumerate(self.expert_labels)}
        out |= {f"q_{n}": d["quality"][:, j] for j, n in enumerate(self.quality_names)}
        df = pd.DataFrame(out)
        df.insert(df.columns.get_loc("flag_bad_row") + 1, "flag", flag_word(df))
        return df

    def components(self) -> dict:
        """Name → (serializer kind, object) for :func:`~snrmoe_lib.models.persistence.save_folder`."""
        kind = ("linear_models" if isinstance(self.linear, LinearModels) else
                "neural_heads" if isinstance(self.linear, NeuralHeads) else "model_set")
        out = {"compressor": ("estimator", self.compressor), "gate": ("estimator", self.gate),
               "linear": (kind, self.linear),
               "calibration": ("estimator", self.calibration),
               "grid": ("arrays", {"wave": np.asarray(self.wave, dtype=np.float64)})}
        if self.variance is not None:
            out["variance"] = ("variance_model", self.variance)
        return out

    def full_record(self) -> dict:
        """The record with the mixture's own settings (what ``model.json`` holds, less the component list)."""
        return dict(self.record) | {"mixture": {
            "expert_labels": list(self.expert_labels), "expert_columns": [int(c) for c in self.expert_columns],
            "global_column": int(self.global_column), "tau": float(self.tau), "bin_pixels": int(self.bin_pixels),
            "noise_level": float(self.noise_level), "snr_definition": self.snr_definition, "family": self.family,
            "error_mode": self.error_mode}}

    def save(self, path: str | Path, overwrite: bool = False, extra_files: dict | None = None) -> Path:
        """Save as a model folder (:func:`~snrmoe_lib.models.persistence.save_folder`), atomically."""
        return save_folder(path, self.components(), self.full_record(), overwrite=overwrite, extra_files=extra_files)


def flag_word(df: pd.DataFrame) -> np.ndarray:
    """The flags as one integer per star (bits of :data:`FLAG_BITS`)."""
    w = np.zeros(len(df), dtype=np.int64)
    for name, bit in FLAG_BITS.items():
        w |= np.where(df[f"flag_{name}"].to_numpy(bool), bit, 0)
    return w


def load_model(path: str | Path) -> DeployedMixture:
    """A saved deployed model (``models/NAME``), checked, ready to :meth:`~DeployedMixture.predict`.

    Raises :class:`~snrmoe_lib.models.persistence.ModelFormatError` for an incomplete or damaged
    folder, or one written by another format or package version.
    """
    record, c = load_folder(path)
    m = record.get("mixture")
    if not isinstance(m, dict):
        raise ModelFormatError(f"{path}: model.json has no 'mixture' section")
    try:
        return DeployedMixture(c["compressor"], c["gate"], c["linear"], m["expert_labels"], m["expert_columns"],
                               m["global_column"], m["tau"], m["bin_pixels"], m["noise_level"], m["snr_definition"],
                               c["calibration"], c["grid"]["wave"], record, m.get("family", "ridge"),
                               m.get("error_mode", "clean"), c.get("variance"))
    except ValueError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
