"""Generate mock datasets in the pfsspec layout: random sampling and regular grids.

Generation streams in chunks (memory bounded whatever N is) and every random draw is keyed by the
configuration's seed and the row number, so the output does not depend on the chunk size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import MockSpec, Params
from ..io import DatasetWriter, ShardedWriter, open_dataset
from .base import PARAM_NAMES, get_model

__all__ = ["draw_stellar", "draw_conditions", "grid_table", "random_table", "simulate", "ensure_dataset",
           "grid_path"]

_SPEC_KEY = {"T_eff": "teff", "log_g": "log_g", "M_H": "m_h", "a_M": "a_m", "C_M": "c_m"}


def draw_stellar(spec: MockSpec, n: int, seed: int) -> pd.DataFrame:
    """Stellar parameters from beta(a, b) distributions stretched onto the configured ranges."""
    rng = np.random.default_rng((seed, 0))
    a, b = spec.beta_shape
    out = {}
    for name in PARAM_NAMES:
        lo, hi = getattr(spec, _SPEC_KEY[name])
        out[name] = lo + (hi - lo) * rng.beta(a, b, size=n) if hi > lo else np.full(n, lo)
    return pd.DataFrame(out)


def draw_conditions(spec: MockSpec, n: int, seed: int) -> pd.DataFrame:
    """Magnitude and observing conditions, uniform within the configured ranges."""
    rng = np.random.default_rng((seed, 1))
    out = {k: rng.uniform(*getattr(spec, k), size=n) for k in ("mag", "seeing", "zenith", "field_angle")}
    out["n_exp"] = np.full(n, spec.n_exp, dtype=np.int64)
    out["t_exp"] = np.full(n, spec.t_exp)
    out["redshift"] = np.zeros(n)
    return pd.DataFrame(out)


def random_table(spec: MockSpec) -> pd.DataFrame:
    """The full params table of a random-mode dataset (stellar parameters + conditions)."""
    return pd.concat([draw_stellar(spec, spec.n, spec.seed), draw_conditions(spec, spec.n, spec.seed)], axis=1)


def _axis(lo: float, hi: float, step: float) -> np.ndarray:
    return np.round(np.arange(lo, hi + 0.5 * step, step), 6) if hi > lo else np.array([lo])


def grid_table(spec: MockSpec, mag: float) -> pd.DataFrame:
    """A regular lattice over (T_eff, log_g, M_H, a_M, C_M) at fixed conditions and magnitude."""
    axes = [_axis(*spec.teff, spec.grid_teff_step), _axis(*spec.log_g, spec.grid_log_g_step),
            _axis(*spec.m_h, spec.grid_m_h_step), np.asarray(spec.grid_a_m, float), np.asarray(spec.grid_c_m, float)]
    mesh = np.meshgrid(*axes, indexing="ij")
    df = pd.DataFrame({name: m.ravel() for name, m in zip(PARAM_NAMES, mesh)})
    n = len(df)
    df["mag"] = np.full(n, mag)
    df["seeing"] = np.full(n, spec.grid_seeing)
    df["zenith"] = np.full(n, spec.grid_zenith)
    df["field_angle"] = np.full(n, spec.grid_field_angle)
    df["n_exp"] = np.full(n, spec.n_exp, dtype=np.int64)
    df["t_exp"] = np.full(n, spec.t_exp)
    df["redshift"] = np.zeros(n)
    return df


def grid_path(path: str | Path, mag: float) -> Path:
    """File name of one magnitude of a grid dataset: ``<stem>_mag21.5.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_mag{mag:g}{path.suffix or '.h5'}")


def _write(table: pd.DataFrame, spec: MockSpec, path: Path, overwrite: bool, progress: bool) -> Path:
    model = get_model(spec.model)
    n = len(table)
    if spec.shard_size > 0:
        writer = ShardedWriter(path, n, model.wave, spec.shard_size, overwrite=overwrite)
    else:
        writer = DatasetWriter(path, n, model.wave, overwrite=overwrite)
    starts = range(0, n, spec.chunk_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"simulating {path.name}", unit="chunk")
    with writer:
        for s in starts:
            rows = np.arange(s, min(s + spec.chunk_size, n))
            block = table.iloc[rows].reset_index(drop=True)
            obs = model.observe(block, rows, spec.seed, spec.error_mode)
            cols = block.copy()
            for k, v in obs.columns.items():
                cols[k] = v
            writer.write(obs.flux, obs.error, cols, mask=obs.mask)
    return path


def simulate(spec: MockSpec, path: str | Path, overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Generate a mock dataset at ``path`` (random mode) or one file per magnitude (grid mode).

    Refuses to overwrite an existing dataset unless ``overwrite=True``. Returns the written paths.
    """
    path = Path(path)
    if spec.mode == "random":
        return [_write(random_table(spec), spec, path, overwrite, progress)]
    return [_write(grid_table(spec, m), spec, grid_path(path, m), overwrite, progress) for m in spec.grid_mags]


def ensure_dataset(params: Params, progress: bool = True):
    """Open the configured dataset, generating it first from ``data.mock`` when it is missing.

    Returns a :class:`~snrmoe_lib.io.PfsDataset`.
    """
    path = params.dataset_path
    if not path.exists():
        if params.data.mock is None:
            raise FileNotFoundError(f"dataset {path} not found and the configuration has no data.mock to generate it")
        if params.data.mock.mode != "random":
            raise ValueError("data.mock must be in random mode for a training dataset; grids are made by fisher notebooks")
        try:
            simulate(params.data.mock, path, progress=progress)
        except FileExistsError:
            pass  # another process finished it first: the rename is atomic, so the file is complete
    return open_dataset(path, on_bad_rows=params.data.on_bad_rows)
