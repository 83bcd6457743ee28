"""The parameter schema: one set of dataclasses, validated strictly.

Every notebook and command reads its configuration through :func:`load_params`. Unknown keys and
wrong types are errors that name the offending key (``"mock.teff: expected a list of 2 numbers"``),
so a typo in a YAML file can never be silently ignored by a papermill run.

Relative paths in a YAML file are resolved against the folder of that file.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "ParameterError",
    "MockSpec",
    "DataSpec",
    "SplitSpec",
    "NoiseSpec",
    "SNRBinSpec",
    "QualitySpec",
    "RidgeSpec",
    "ExpertSpec",
    "GateSpec",
    "FisherSpec",
    "Thresholds",
    "RunnerSpec",
    "Params",
    "load_params",
    "params_from_dict",
    "params_to_dict",
]


class ParameterError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class MockSpec:
    """How the embedded mock PFS-MR simulator generates a dataset.

    ``mode='random'`` draws ``n`` stars with parameters inside the ranges; ``mode='grid'`` lays a
    regular lattice (``grid_*`` steps) and writes one file per magnitude in ``grid_mags``.
    """

    mode: Literal["random", "grid"] = "random"
    n: int = 2000
    seed: int = 42
    chunk_size: int = 1000
    shard_size: int = 0  # 0: a single file; >0: a sharded folder with that many rows per shard
    error_mode: Literal["clean", "estimated"] = "clean"
    model: str = "simple"  # name of the forward model (see snrmoe_lib.mock.models)
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
class DataSpec:
    """Where the dataset lives. With ``mock`` given, a missing dataset is generated."""

    path: str = "../data/mock_smoke.h5"
    mock: Optional[MockSpec] = None
    on_bad_rows: Literal["raise", "drop"] = "raise"
    chunk_size: int = 4096


@dataclass
class SplitSpec:
    """Seeded train/val/test split over rows; independent of the chunk size."""

    n_train: int = 1500
    n_val: int = 250
    n_test: int = 250
    seed: int = 0


@dataclass
class NoiseSpec:
    noise_level: float = 1.0
    extra_noise_levels: list[float] = field(default_factory=lambda: [0.5])


@dataclass
class SNRBinSpec:
    """Bins on a per-spectrum SNR: ``definition`` is 'l2' (‖flux‖/‖σ‖) or 'pixel' (median flux/σ)."""

    definition: Literal["l2", "pixel"] = "l2"
    edges: list[float] = field(default_factory=lambda: [2.0, 4.0, 7.0])
    labels: list[str] = field(default_factory=lambda: ["X", "L", "M", "H"])
    min_count: int = 20
    on_small_bin: Literal["raise", "merge"] = "merge"


@dataclass
class QualitySpec:
    representations: list[str] = field(
        default_factory=lambda: ["S0", "S1a", "S1b", "S2", "S2b", "S3_11", "S3_21", "S3b", "S4"]
    )
    n_pca: int = 5
    chosen: str = "auto"  # 'auto': the passing representation with the best SNR R²


@dataclass
class RidgeSpec:
    alphas: list[float] = field(default_factory=lambda: [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5])


@dataclass
class ExpertSpec:
    physical_teff_edges: list[float] = field(default_factory=lambda: [4500.0, 5250.0])
    physical_m_h_edges: list[float] = field(default_factory=lambda: [-1.5, -0.5])


@dataclass
class GateSpec:
    kind: Literal["logistic", "mlp"] = "logistic"
    tau: float = 0.4
    mlp_hidden: int = 32
    mlp_epochs: int = 200
    regression_epochs: int = 300
    learning_rate: float = 0.01


@dataclass
class FisherSpec:
    mags: list[float] = field(default_factory=lambda: [18.0, 20.0, 21.5, 22.0, 22.5, 23.0])
    nuisance_3d: list[str] = field(default_factory=lambda: ["T_eff", "M_H"])
    nuisance_5d: list[str] = field(default_factory=lambda: ["T_eff", "M_H", "a_M", "C_M"])
    n_stars: int = 200
    edges: Literal["drop", "one_sided"] = "drop"
    cond_max: float = 1e12


@dataclass
class Thresholds:
    gate1_logg_r2_max: float = 0.05
    gate1_snr_r2_min: float = 0.5
    gate2_delta_r2_min: float = 0.02
    gate3_rho_min: float = 0.7
    gate4_margin: float = 0.01


@dataclass
class RunnerSpec:
    timeout_s: int = 1800
    n_bootstrap: int = 200


@dataclass
class Params:
    """A whole run configuration (one ``params/*.yaml`` file)."""

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
    fisher: FisherSpec = field(default_factory=FisherSpec)
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
# Strict conversion from plain data
# --------------------------------------------------------------------------------------------

_RANGE_KEYS = {"teff", "log_g", "m_h", "a_m", "c_m", "mag", "seeing", "zenith", "field_angle", "beta_shape"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ParameterError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParameterError(f"{key}: expected a mapping of settings, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e5 (no dot) as a string: accept numeric strings explicitly
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ParameterError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParameterError(f"{key}: expected a string, got {value!r}")
        return value
    raise ParameterError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParameterError(
            f"unknown parameter(s) {', '.join(where + u for u in unknown)}; "
            f"allowed in {prefix or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    obj = cls(**kwargs)
    _check(obj, prefix)
    return obj


def _check(obj: Any, prefix: str) -> None:
    """Value checks that types cannot express."""
    p = f"{prefix}." if prefix else ""
    if isinstance(obj, MockSpec):
        for k in _RANGE_KEYS:
            v = getattr(obj, k)
            if len(v) != 2 or v[0] > v[1]:
                raise ParameterError(f"{p}{k}: expected [low, high] with low <= high, got {v}")
        for k in ("n", "chunk_size"):
            if getattr(obj, k) <= 0:
                raise ParameterError(f"{p}{k}: must be positive, got {getattr(obj, k)}")
        if obj.shard_size < 0:
            raise ParameterError(f"{p}shard_size: must be >= 0, got {obj.shard_size}")
    elif isinstance(obj, SplitSpec):
        for k in ("n_train", "n_val", "n_test"):
            if getattr(obj, k) < 0:
                raise ParameterError(f"{p}{k}: must be >= 0")
        if obj.n_train == 0 or obj.n_test == 0:
            raise ParameterError(f"{p}n_train and {p}n_test must be positive")
    elif isinstance(obj, NoiseSpec):
        if obj.noise_level <= 0 or any(x <= 0 for x in obj.extra_noise_levels):
            raise ParameterError(f"{p}noise_level: noise levels must be positive")
    elif isinstance(obj, SNRBinSpec):
        if list(obj.edges) != sorted(obj.edges) or len(set(obj.edges)) != len(obj.edges):
            raise ParameterError(f"{p}edges: must be strictly increasing, got {obj.edges}")
        if len(obj.labels) != len(obj.edges) + 1:
            raise ParameterError(
                f"{p}labels: {len(obj.edges)} edges make {len(obj.edges) + 1} bins, got {len(obj.labels)} labels"
            )
    elif isinstance(obj, Params):
        if not obj.seeds:
            raise ParameterError("seeds: give at least one seed")
        if not obj.name or "/" in obj.name:
            raise ParameterError(f"name: must be a non-empty folder name, got {obj.name!r}")


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
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ParameterError(f"{path}: not valid YAML: {exc}") from exc
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
