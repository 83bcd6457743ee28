"""The parameter schema: one set of dataclasses, validated strictly.

Every notebook and command reads its configuration through :func:`load_params`. Unknown keys and
wrong types are errors that name the offending key (``"mock.teff: expected a list of 2 numbers"``),
so a typo in a YAML file can never be silently ignored by a papermill run.

Every section validates itself when it is built, from YAML or in code (``GateSpec(tau=5)`` raises
``ParameterError: gate.tau: ...``): each dataclass calls the one check, :func:`_validate`, from
``__post_init__``. Names of registered things (representations, mock models) are checked too.

Relative paths in a YAML file are resolved against the folder of that file.
"""
# The schema is written by hand rather than with pydantic v2: pydantic is not a dependency of this
# package (it is only present in some environments through optional tooling), and the sections must
# stay plain dataclasses, which the rest of the code reads with dataclasses.asdict/replace/fields.
# The hand-written check is short and gives the same messages: the key, the expected type, the
# allowed values.
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

import yaml

from snrmoe_lib._util.typed import ParameterError
from snrmoe_lib._util.typed import build as _build
from snrmoe_lib._util.typed import convert as _convert
from snrmoe_lib._util.typed import hints as _hints
from snrmoe_lib._util.typed import low_high as _low_high
from snrmoe_lib._util.typed import positive as _positive
from snrmoe_lib._util.typed import registered as _registered

__all__ = ["ParameterError", "MockSpec", "DataSpec", "SplitSpec", "NoiseSpec", "SNRBinSpec", "QualitySpec", "RidgeSpec",
           "ExpertSpec", "GateSpec", "ControlsSpec", "FisherSpec", "Q4Spec", "Thresholds", "RunnerSpec", "Params", "load_params",
           "params_from_dict", "params_to_dict", "REPRESENTATION_NAMES", "MOCK_MODELS", "PLAIN_NAME"]

#: Names of the error representations (``features.quality.REPRESENTATIONS``; the parameters sit
#: below the features and cannot import them, so a test checks that the two lists agree).
REPRESENTATION_NAMES = ("S0", "S1a", "S1b", "S2", "S2b", "S3_11", "S3_21", "S3b", "S4")
#: Names of the registered mock forward models (``data.mock.base``; a test checks they agree).
MOCK_MODELS = ("calibrated", "simple")


class _Section:
    """Base of every parameter section: the values are checked (and converted) when it is built."""

    #: Where the section sits in a configuration (the prefix of its keys in messages).
    _KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _validate(self)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class MockSpec(_Section):
    """How the embedded mock PFS-MR simulator generates a dataset.

    ``mode='random'`` draws ``n`` stars with parameters inside the ranges; ``mode='grid'`` lays a
    regular lattice (``grid_*`` steps) and writes one file per magnitude in ``grid_mags``.
    """

    _KEY: ClassVar[str] = "data.mock"

    mode: Literal["random", "grid"] = "random"
    n: int = 2000
    seed: int = 42
    chunk_size: int = 1000
    shard_size: int = 0  # 0: a single file; >0: a sharded folder with that many rows per shard
    error_mode: Literal["clean", "estimated"] = "clean"
    model: str = "calibrated"  # forward model: "calibrated" (the calibrated mock, default) or "simple"
    # stellar parameter ranges (random mode: beta(a, b) within the range)
    teff: list[float] = field(default_factory=lambda: [3750.0, 6000.0])
    log_g: list[float] = field(default_factory=lambda: [1.0, 5.0])
    m_h: list[float] = field(default_factory=lambda: [-2.5, 0.75])
    a_m: list[float] = field(default_factory=lambda: [-0.25, 0.5])
    c_m: list[float] = field(default_factory=lambda: [-0.5, 0.5])
    beta_shape: list[float] = field(default_factory=lambda: [1.5, 1.5])
    # observing conditions (random mode: uniform within the range)
    mag: list[float] = field(default_factory=lambda: [20.5, 22.5])
    seeing: list[float] = field(default_factory=lambda: [0.5, 1.5])
    zenith: list[float] = field(default_factory=lambda: [0.0, 45.0])
    field_angle: list[float] = field(default_factory=lambda: [0.0, 0.65])
    n_exp: int = 12
    t_exp: float = 900.0
    moon: float = 0.0  # moon illumination fraction (0 = new moon, the real products' setting; 1 = full)
    # random mode: seeing distribution within the range: 'lognormal' (the shape of site seeing
    # statistics, median seeing_median, dispersion seeing_sigma_ln in ln, redrawn outside the range)
    # or 'uniform'; the real set's SNR spread allows only a narrow one (see the mock's docs)
    seeing_dist: Literal["uniform", "lognormal"] = "lognormal"
    seeing_median: float = 1.0
    seeing_sigma_ln: float = 0.12
    # random mode: per-star sky variation (rms of the continuum offset in mag, rms of ln OH scale);
    # 0: one sky per configuration, as in the real products
    sky_jitter: float = 0.0
    oh_jitter: float = 0.0
    workers: int = 1  # generation processes (each single-threaded); the output does not depend on it
    # grid mode
    grid_teff_step: float = 250.0
    grid_log_g_step: float = 0.5
    grid_m_h_step: float = 0.25
    grid_a_m: list[float] = field(default_factory=lambda: [0.0])
    grid_c_m: list[float] = field(default_factory=lambda: [0.0])
    grid_mags: list[float] = field(default_factory=lambda: [21.5])
    grid_seeing: float = 1.0
    grid_zenith: float = 22.5
    grid_field_angle: float = 0.325


@dataclass
class DataSpec(_Section):
    """Where the dataset lives. With ``mock`` given, a missing dataset is generated."""

    _KEY: ClassVar[str] = "data"

    path: str = "../data/mock_smoke.h5"
    mock: Optional[MockSpec] = None
    on_bad_rows: Literal["raise", "drop"] = "raise"
    chunk_size: int = 4096


@dataclass
class SplitSpec(_Section):
    """Seeded train/val/test split over rows; independent of the chunk size."""

    _KEY: ClassVar[str] = "split"

    n_train: int = 1500
    n_val: int = 250
    n_test: int = 250
    seed: int = 0


@dataclass
class NoiseSpec(_Section):
    _KEY: ClassVar[str] = "noise"

    noise_level: float = 1.0
    extra_noise_levels: list[float] = field(default_factory=lambda: [0.5])
    # 'clean': features see σ = error · noise_level (the expected error of the products);
    # 'estimated': they see σ̂ estimated from the same noisy realisation as the noisy flux
    # (data.noise.VarianceModel, fitted on variance_fit_n training spectra's clean errors);
    # 'both' (Q1, Q3): clean first, then the estimated errors reported beside it (metrics suffixed _estimated)
    error_mode: Literal["clean", "estimated", "both"] = "clean"
    variance_fit_n: int = 2000


@dataclass
class SNRBinSpec(_Section):
    """Bins on a per-spectrum SNR: ``definition`` is 'l2' (‖flux‖/‖σ‖) or 'pixel' (median flux/σ)."""

    _KEY: ClassVar[str] = "snr_bins"

    definition: Literal["l2", "pixel"] = "l2"
    edges: list[float] = field(default_factory=lambda: [2.0, 4.0, 7.0])
    labels: list[str] = field(default_factory=lambda: ["X", "L", "M", "H"])
    min_count: int = 20
    on_small_bin: Literal["raise", "merge"] = "merge"


@dataclass
class QualitySpec(_Section):
    _KEY: ClassVar[str] = "quality"

    representations: list[str] = field(default_factory=lambda: list(REPRESENTATION_NAMES))
    n_pca: int = 5
    chosen: str = "auto"  # 'auto': the passing representation with the best SNR R²
    # 'interval': 'auto' only picks a representation whose whole 95 % bootstrap interval passes
    # (log g upper bound < max, SNR lower bound > min), so the choice is not luck; 'point': values only
    choose_by: Literal["interval", "point"] = "interval"
    # the leakage audit runs on an in-memory subsample of the split (capped by split sizes)
    audit_n_train: int = 800
    audit_n_val: int = 200
    audit_n_test: int = 400
    # α grid of the audit's Ridge path (empty: ridge.alphas); leakage fits want small α
    audit_alphas: list[float] = field(default_factory=lambda: [10.0 ** k for k in range(-4, 7)])
    guard_max_abs_r2: float = 0.05  # the label-shuffle guard must give |R²| below this
    # the non-linear leakage probe (early-stopped gradient boosting) runs on representations with at
    # most this many features (the candidates for quality_features; pixel-level ones already leak linearly)
    probe_max_features: int = 64
    probe_max_iter: int = 300
    estimated_mode: bool = True  # also audit a mock made with error_mode='estimated' (needs data.mock)


@dataclass
class RidgeSpec(_Section):
    """Ridge on noisy flux (see :mod:`snrmoe_lib.ridge`): α candidates chosen on the validation split.

    ``bin_pixels`` averages that many adjacent pixels into one feature (4096 pixels / 4 = 1024
    features ≈ one resolution element each); 1 keeps every pixel (D² memory and D³ solves grow fast).
    ``solver``: 'eigh' (one eigendecomposition for the whole α path), 'cholesky' (one per α) or
    'auto' (Cholesky up to ``ridge.AUTO_CHOLESKY_MAX`` α, else eigh).
    """

    _KEY: ClassVar[str] = "ridge"

    alphas: list[float] = field(default_factory=lambda: [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7])
    bin_pixels: int = 4
    solver: Literal["auto", "eigh", "cholesky"] = "auto"
    target: str = "log_g"


@dataclass
class ExpertSpec(_Section):
    """Oracle experts: T_eff × [M/H] edges of the physical bins (3 × 3); small bins as ``snr_bins`` says."""

    _KEY: ClassVar[str] = "experts"

    physical_teff_edges: list[float] = field(default_factory=lambda: [4500.0, 5250.0])
    physical_m_h_edges: list[float] = field(default_factory=lambda: [-1.5, -0.5])


@dataclass
class GateSpec(_Section):
    """The deployable gate (Q3). ``kind``: the deployed mixture's gate (both kinds are reported). The input
    is Q2's chosen representation; ``representation`` is the announced fallback without Q2 results, or
    always when ``use_q2_choice`` is false."""

    _KEY: ClassVar[str] = "gate"

    kind: Literal["logistic", "mlp"] = "logistic"
    tau: float = 0.4  # the planned fallback threshold; always on controls.tau_grid, which τ is chosen from
    mlp_hidden: int = 32
    mlp_epochs: int = 200
    regression_epochs: int = 300
    learning_rate: float = 0.01
    representation: str = "S2"  # fallback gate input when Q2 has not chosen one
    use_q2_choice: bool = True
    logistic_c: float = 1.0  # inverse L2 strength of the logistic gate (standardised features)
    weight_decay: float = 1e-4  # L2 on the torch gates' weights (MLP and regression gate)
    regression_include_global: bool = True  # the regression gate may also weight the global model
    seed: int = 0  # initial weights of the torch gates
    fit_n: int = 2000  # training spectra (a seeded subsample) that fit the compressor and the flux PCA
    train_n: int = 100_000  # most spectra a gate learns from (a seeded subsample; a gate has few weights)
    n_flux_components: int = 5  # leading flux components multiplied by the quality features (conditional control)


@dataclass
class ControlsSpec(_Section):
    """Q1/Q3 controls: the training rows no expert sees (the blends and the regression gate learn on them),
    the nested learning-curve sizes (the full set is always the last point), the τ grid (chosen on validation)."""

    _KEY: ClassVar[str] = "controls"

    holdout_fraction: float = 0.1
    holdout_seed: int = 0
    curve_sizes: list[int] = field(default_factory=list)
    tau_grid: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.curve_sizes
        for ok, key, what in ((0 < self.holdout_fraction < 0.5, "holdout_fraction", "a fraction in (0, 0.5)"),
                              (all(0 < a < b for a, b in zip(c, c[1:] + [2 ** 62])), "curve_sizes", "increasing sizes"),
                              (all(0 <= t <= 1 for t in self.tau_grid) and self.tau_grid, "tau_grid", "τ in [0, 1]")):
            if not ok:
                raise ParameterError(f"controls.{key}: {what}, got {getattr(self, key)}")


@dataclass
class FisherSpec(_Section):
    """K1, the ceiling: one computation of R²_max, per-SNR-bin bounds, efficiency, the MAP template fit."""
    _KEY: ClassVar[str] = "fisher"

    mags: list[float] = field(default_factory=lambda: [18.0, 20.0, 21.5, 22.0, 22.5, 23.0])
    nuisance_3d: list[str] = field(default_factory=lambda: ["T_eff", "M_H"])
    nuisance_5d: list[str] = field(default_factory=lambda: ["T_eff", "M_H", "a_M", "C_M"])
    # R²_max per magnitude (data and Fisher notebooks alike): n_stars seeded nodes of this lattice (the real grid's)
    lattice_teff: list[float] = field(default_factory=lambda: [3500.0, 7000.0])
    lattice_teff_step: float = 250.0
    lattice_log_g: list[float] = field(default_factory=lambda: [0.0, 5.0])
    lattice_log_g_step: float = 0.5
    lattice_m_h: list[float] = field(default_factory=lambda: [-2.5, 0.75])
    lattice_m_h_step: float = 0.25
    lattice_a_m: list[float] = field(default_factory=lambda: [0.0])  # [α/M] and [C/M] node lists
    lattice_c_m: list[float] = field(default_factory=lambda: [0.0])
    n_stars: int = 500
    method: Literal["fd", "autograd"] = "autograd"  # on the mock ('fd': of the model at fd_steps); grid files: FD
    fd_steps: list[float] = field(default_factory=lambda: [250.0, 0.5, 0.25, 0.25, 0.25])  # the grid's, per θ
    fd_halvings: int = 3
    fd_check_stars: int = 100  # lattice stars (a draw of this size) of the step-halving check
    fd_check_tol: float = 0.05  # allowed median |σ_FD / σ_autograd − 1| at the grid's steps, at fd_check_mag
    fd_check_mag: float = 22.5
    error_scales: list[float] = field(default_factory=lambda: [0.5, 2.0])  # σ × s: the user's sensitivity check
    cond_max: float = 1e12
    seed: int = 0  # draw of the lattice stars, the per-bin stars and the MAP starts
    # real data: the grid products, a path with '{mag}' or a base '<stem>.h5' -> '<stem>_mag<m>.h5'; '' on the mock
    grid_path: str = ""
    edges: Literal["drop", "one_sided"] = "drop"  # grid files: stars at the lattice edges
    reference_var_logg: float = 1.6667  # Var(log g) of R²_max per magnitude: the user's grid (log g 1–5 / 0.5)
    n_bin_stars: int = 1000  # per-SNR-bin bounds: up to this many frozen-test stars per bin
    # the MAP template fit: frozen-test stars (seeded), prior, starts (best of candidates), Gauss–Newton steps
    map_stars: int = 120
    map_prior: Literal["gaussian", "sampling"] = "gaussian"
    map_starts: int = 3
    map_candidates: int = 16
    map_iterations: int = 12
    reference_mags: list[float] = field(default_factory=lambda: [21.5, 22.0, 22.5])
    reference_r2_3d: list[float] = field(default_factory=lambda: [0.89, 0.74, 0.37])
    reference_r2_5d: list[float] = field(default_factory=lambda: [0.87, 0.70, 0.26])
    calibration_tol: float = 0.1  # |mock − real| median R²_max reported as PASS/FAIL in the calibration row


@dataclass
class Q4Spec(_Section):
    """Q4, stronger experts: the families compared, their rows in memory, the trees, the nets, the correctors."""

    _KEY: ClassVar[str] = "q4"
    FAMILIES: ClassVar[tuple[str, ...]] = ("ridge", "boosted", "neural")

    families: list[str] = field(default_factory=lambda: ["ridge", "boosted", "neural"])
    n_seeds: int = 1  # the first n of `seeds` (noise realisations); each refits every family
    max_train_rows: int = 12_000  # training spectra held in memory (a seeded subsample above it)
    curve_sizes: list[int] = field(default_factory=list)  # learning-curve sizes below the full set (none: one point)
    boosted_learning_rate: float = 0.1
    boosted_max_iter: int = 300  # early stopping on the validation rows picks the rounds kept
    boosted_max_leaf_nodes: int = 31
    boosted_min_samples_leaf: int = 20
    boosted_l2: float = 0.0
    boosted_n_iter_no_change: int = 20
    n_threads: int = 1  # CPU threads of the trees and the nets (one: on shared cores a thread team spins)
    neural_arch: Literal["cnn", "vit"] = "cnn"  # the neural family's trunk (models.neural), all its variants
    neural_width: int = 64  # features the trunk hands the heads (the CNN's channels: width/4, width/2)
    neural_epochs: int = 4  # most epochs; early stopping on the validation rows after `neural_patience` flat ones
    neural_patience: int = 2
    neural_batch_size: int = 64  # small batches: more steps per epoch on a few thousand rows
    neural_train_rows: int = 12_000  # training spectra the nets see (a seeded subsample of those in memory)
    neural_aux_weight: float = 0.1  # loss weight of the auxiliary T_eff and [M/H] heads (0: none)
    residual_base: Literal["ridge", "boosted"] = "boosted"  # the residual mixture's frozen global model (nets: own)
    corrector: Literal["ridge", "boosted"] = "ridge"  # the per-bin residual correctors
    corrector_max_iter: int = 50  # shallow boosted correctors
    corrector_max_leaf_nodes: int = 7
    crlb_stars: int = 50  # frozen-test stars per SNR bin whose CRLB σ is set against the predicted σ (mock only)

    def __post_init__(self) -> None:
        super().__post_init__()
        counts = tuple(f.name for f in dataclasses.fields(self) if f.type == "int")  # every count is positive
        _positive(self, "q4.", counts + ("boosted_learning_rate",))
        _positive(self, "q4.", ("boosted_l2", "neural_aux_weight"), strict=False)
        bad = [f for f in self.families if f not in self.FAMILIES]
        if bad or not self.families or len(set(self.families)) != len(self.families):
            raise ParameterError(f"q4.families: distinct names from {list(self.FAMILIES)}, got {self.families}")
        if not all(0 < a < b for a, b in zip(self.curve_sizes, self.curve_sizes[1:] + [2 ** 62])):
            raise ParameterError(f"q4.curve_sizes: increasing positive sizes, got {self.curve_sizes}")
        if self.residual_base not in self.families:
            raise ParameterError(f"q4.residual_base: {self.residual_base!r} is not among q4.families {self.families}")


@dataclass
class Thresholds(_Section):
    _KEY: ClassVar[str] = "thresholds"

    gate1_logg_r2_max: float = 0.05
    gate1_labels_r2_max: float = 0.05  # T_eff and [M/H] from the error representation (a physical router in disguise)
    gate1_snr_r2_min: float = 0.5
    gate2_delta_r2_min: float = 0.02
    gate3_rho_min: float = 0.7
    gate4_margin: float = 0.01


@dataclass
class RunnerSpec(_Section):
    _KEY: ClassVar[str] = "runner"

    timeout_s: int = 1800
    # bootstrap draws behind every interval (≥ 1,000 for a decision; the smoke configuration uses fewer to stay
    # fast: its verdicts are not decisions) and the fewest noise seeds behind Q1's verdicts (fewer: say why)
    n_bootstrap: int = 1000
    min_seeds: int = 3


@dataclass
class Params(_Section):
    """A whole run configuration (one ``params/*.yaml`` file)."""

    _KEY: ClassVar[str] = ""

    name: str = "smoke"
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    snr_bins: SNRBinSpec = field(default_factory=SNRBinSpec)
    quality: QualitySpec = field(default_factory=QualitySpec)
    ridge: RidgeSpec = field(default_factory=RidgeSpec)
    experts: ExpertSpec = field(default_factory=ExpertSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    controls: ControlsSpec = field(default_factory=ControlsSpec)
    fisher: FisherSpec = field(default_factory=FisherSpec)
    q4: Q4Spec = field(default_factory=Q4Spec)
    thresholds: Thresholds = field(default_factory=Thresholds)
    runner: RunnerSpec = field(default_factory=RunnerSpec)
    source: Optional[str] = None  # the YAML file this came from (set by load_params)

    def resolve(self, path: str | Path) -> Path:
        """Resolve a path from the configuration against the folder of its YAML file."""
        p = Path(path).expanduser()
        if p.is_absolute() or self.source is None:
            return p
        return (Path(self.source).parent / p).resolve()

    @property
    def dataset_path(self) -> Path:
        return self.resolve(self.data.path)


# --------------------------------------------------------------------------------------------
# Validation: types (with conversion from plain data), then values
# --------------------------------------------------------------------------------------------

_RANGE_KEYS = ("teff", "log_g", "m_h", "a_m", "c_m", "mag", "seeing", "zenith", "field_angle", "beta_shape")


def _validate(obj: _Section) -> None:
    """The one check of a section: every field's type (converting plain data), then its values."""
    prefix = f"{obj._KEY}." if obj._KEY else ""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, _convert(getattr(obj, f.name), hints[f.name], prefix + f.name))
    check = _VALUE_CHECKS.get(type(obj))
    if check is not None:
        check(obj, prefix)


def _check_mock(obj: MockSpec, p: str) -> None:
    _low_high(obj, p, _RANGE_KEYS)
    _positive(obj, p, ("n", "chunk_size"))
    _positive(obj, p, ("shard_size", "sky_jitter", "oh_jitter", "seeing_sigma_ln"), strict=False)
    if obj.seeing_dist == "lognormal" and not obj.seeing[0] <= obj.seeing_median <= obj.seeing[1]:
        raise ParameterError(f"{p}seeing_median: {obj.seeing_median} lies outside the seeing range {obj.seeing}")
    if not 0.0 <= obj.moon <= 1.0:
        raise ParameterError(f"{p}moon: illumination fraction must be in [0, 1], got {obj.moon}")
    if obj.workers < 1:
        raise ParameterError(f"{p}workers: must be >= 1, got {obj.workers}")
    _registered(f"{p}model", obj.model, MOCK_MODELS, "mock model")


def _check_split(obj: SplitSpec, p: str) -> None:
    _positive(obj, p, ("n_train", "n_val", "n_test"), strict=False)
    if obj.n_train == 0 or obj.n_test == 0:
        raise ParameterError(f"{p}n_train and {p}n_test must be positive")
    if obj.n_val == 0:
        raise ParameterError(f"{p}n_val: must be positive: Q1 and Q3 choose α and the gates on validation rows")


def _check_noise(obj: NoiseSpec, p: str) -> None:
    if obj.noise_level <= 0 or any(x <= 0 for x in obj.extra_noise_levels):
        raise ParameterError(f"{p}noise_level: noise levels must be positive")


def _check_snr_bins(obj: SNRBinSpec, p: str) -> None:
    if list(obj.edges) != sorted(obj.edges) or len(set(obj.edges)) != len(obj.edges):
        raise ParameterError(f"{p}edges: must be strictly increasing, got {obj.edges}")
    if len(obj.labels) != len(obj.edges) + 1:
        raise ParameterError(
            f"{p}labels: {len(obj.edges)} edges make {len(obj.edges) + 1} bins, got {len(obj.labels)} labels"
        )


def _check_quality(obj: QualitySpec, p: str) -> None:
    _positive(obj, p, ("audit_n_train", "audit_n_test", "n_pca"))
    _positive(obj, p, ("audit_n_val",), strict=False)
    if any(a <= 0 for a in obj.audit_alphas):
        raise ParameterError(f"{p}audit_alphas: all must be > 0, got {obj.audit_alphas}")
    if not obj.representations:
        raise ParameterError(f"{p}representations: give at least one")
    for i, name in enumerate(obj.representations):
        _registered(f"{p}representations[{i}]", name, REPRESENTATION_NAMES, "representation")
    _registered(f"{p}chosen", obj.chosen, ("auto",) + REPRESENTATION_NAMES, "representation (or 'auto')")


def _check_ridge(obj: RidgeSpec, p: str) -> None:
    if not obj.alphas or any(a < 0 for a in obj.alphas):
        raise ParameterError(f"{p}alphas: give at least one alpha, all >= 0, got {obj.alphas}")
    _positive(obj, p, ("bin_pixels",))


def _check_fisher(obj: FisherSpec, p: str) -> None:
    nuisance = ["T_eff", "M_H", "a_M", "C_M"]
    for k in ("nuisance_3d", "nuisance_5d"):
        bad = [n for n in getattr(obj, k) if n not in nuisance]
        if bad:
            raise ParameterError(f"{p}{k}: {bad} not among the nuisance parameters {nuisance}")
    if not obj.mags:
        raise ParameterError(f"{p}mags: give at least one magnitude")
    _positive(obj, p, ("n_stars", "n_bin_stars", "fd_check_stars", "map_stars", "map_starts", "map_candidates",
                       "map_iterations"))
    _low_high(obj, p, ("lattice_teff", "lattice_log_g", "lattice_m_h"))
    _positive(obj, p, ("lattice_teff_step", "lattice_log_g_step", "lattice_m_h_step", "reference_var_logg",
                       "cond_max", "fd_check_tol", "calibration_tol"))
    _positive(obj, p, ("fd_halvings",), strict=False)
    if len(obj.fd_steps) != 5 or any(not h > 0 for h in obj.fd_steps):
        raise ParameterError(f"{p}fd_steps: five positive steps (T_eff, log_g, M_H, a_M, C_M), got {obj.fd_steps}")
    if any(not s > 0 for s in obj.error_scales):
        raise ParameterError(f"{p}error_scales: positive factors, got {obj.error_scales}")
    if not obj.lattice_a_m or not obj.lattice_c_m:
        raise ParameterError(f"{p}lattice_a_m and {p}lattice_c_m: give at least one value each")
    if obj.map_candidates < obj.map_starts:
        raise ParameterError(f"{p}map_candidates ({obj.map_candidates}) must be >= map_starts ({obj.map_starts})")
    if not (len(obj.reference_mags) == len(obj.reference_r2_3d) == len(obj.reference_r2_5d)):
        raise ParameterError(f"{p}reference_mags, reference_r2_3d and reference_r2_5d must have equal lengths")


def _check_gate(obj: GateSpec, p: str) -> None:
    if not 0.0 <= obj.tau <= 1.0:
        raise ParameterError(f"{p}tau: a probability threshold in [0, 1], got {obj.tau}")
    _positive(obj, p, ("mlp_hidden", "mlp_epochs", "regression_epochs", "fit_n", "train_n", "learning_rate",
                       "logistic_c"))
    if obj.weight_decay < 0 or obj.n_flux_components < 0:
        raise ParameterError(f"{p}weight_decay and {p}n_flux_components must be >= 0")
    _registered(f"{p}representation", obj.representation, REPRESENTATION_NAMES, "representation")


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a reports folder: never a path, "." or ".."


def _check_params(obj: Params, p: str) -> None:
    if not obj.seeds:
        raise ParameterError("seeds: give at least one seed")
    if len(set(obj.seeds)) != len(obj.seeds):
        raise ParameterError(f"seeds: {obj.seeds} repeats a seed (one noise realisation would count twice)")
    if not PLAIN_NAME.fullmatch(obj.name):
        raise ParameterError(f"name: {obj.name!r} is not a plain name (letters, digits, _ . -; it names reports/<name>/)")


#: Value checks that types cannot express, per section.
_VALUE_CHECKS = {MockSpec: _check_mock, SplitSpec: _check_split, NoiseSpec: _check_noise, SNRBinSpec: _check_snr_bins,
                 QualitySpec: _check_quality, RidgeSpec: _check_ridge, FisherSpec: _check_fisher, GateSpec: _check_gate,
                 RunnerSpec: lambda o, p: _positive(o, p, ("n_bootstrap", "min_seeds")), Params: _check_params}


def params_from_dict(data: dict | None, source: str | Path | None = None) -> Params:
    """Validate a plain mapping (as read from YAML) into :class:`Params`."""
    data = dict(data or {})
    if "source" in data:
        raise ParameterError("source: set by load_params, not a parameter")
    params = _build(Params, data)
    params.source = str(Path(source).resolve()) if source is not None else None
    return params


def load_params(path: str | Path, overrides: dict | None = None) -> Params:
    """Read and validate a ``params/*.yaml`` file.

    Parameters
    ----------
    path
        The YAML file.
    overrides
        Optional nested mapping merged over the file's content before validation
        (for example ``{"split": {"n_train": 500}}``).

    Raises
    ------
    ParameterError
        For unknown keys, wrong types or inconsistent values, naming the key.
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        raise ParameterError(f"{path}: the file is empty (copy params/smoke.yaml to start)")
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping at the top level")
    if overrides:
        data = _merge(data, overrides)
    try:
        return params_from_dict(data, source=path)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def params_to_dict(params: Params) -> dict:
    """Plain, JSON-ready mapping of the validated parameters (for the results file)."""
    return dataclasses.asdict(params)
