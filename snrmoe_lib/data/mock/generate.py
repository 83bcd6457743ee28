"""Generate mock datasets in the pfsspec layout: random sampling and regular grids.

Generation streams in chunks (memory bounded whatever N is) and every random draw is keyed by the
configuration's seed and the row number, so the output does not depend on the chunk size.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.config import MockSpec, Params
from snrmoe_lib.data.io import DatasetWriter, ShardedWriter, open_dataset
from snrmoe_lib.data.mock.base import PARAM_NAMES, PARAM_SPEC_FIELD
from snrmoe_lib.data.mock.registry import get_model
from snrmoe_lib._util.rng import rng as _rng

__all__ = ["physics_fingerprint", "PHYSICS_KEY", "ensure_mock", "mock_is_current", "stored_mock_spec", "StaleDatasetError", "draw_stellar", "draw_conditions", "grid_table", "random_table", "simulate", "ensure_dataset",
           "grid_path"]

def draw_stellar(spec: MockSpec, n: int, seed: int) -> pd.DataFrame:
    """Stellar parameters from beta(a, b) distributions stretched onto the configured ranges."""
    rng = _rng("mock.stellar", seed)
    a, b = spec.beta_shape
    out = {}
    for name in PARAM_NAMES:
        lo, hi = getattr(spec, PARAM_SPEC_FIELD[name])
        out[name] = lo + (hi - lo) * rng.beta(a, b, size=n) if hi > lo else np.full(n, lo)
    return pd.DataFrame(out)


def draw_conditions(spec: MockSpec, n: int, seed: int) -> pd.DataFrame:
    """Magnitude and observing conditions, uniform within the configured ranges (seeing: see
    ``spec.seeing_dist``; its log-normal draws come from their own stream, so the others do not move)."""
    rng = _rng("mock.conditions", seed)
    out = {k: rng.uniform(*getattr(spec, k), size=n) for k in ("mag", "seeing", "zenith", "field_angle")}
    out["n_exp"] = np.full(n, spec.n_exp, dtype=np.int64)
    out["t_exp"] = np.full(n, spec.t_exp)
    out["moon"] = np.full(n, spec.moon)
    # drawn after the columns above, so adding them did not change those draws
    out["sky_offset"] = rng.normal(0.0, spec.sky_jitter, size=n)
    out["oh_scale"] = np.exp(rng.normal(0.0, spec.oh_jitter, size=n))
    out["redshift"] = np.zeros(n)
    if spec.seeing_dist == "lognormal":
        out["seeing"] = _lognormal_in_range(spec.seeing_median, spec.seeing_sigma_ln, spec.seeing, n, seed)
    return pd.DataFrame(out)


def _lognormal_in_range(median: float, sigma_ln: float, bounds, n: int, seed: int) -> np.ndarray:
    """``n`` log-normal draws (median, dispersion in ln) inside ``bounds``: draws outside are redrawn
    (a truncated distribution, nothing piles up at the edges)."""
    lo, hi = bounds
    rng = _rng("mock.seeing", seed)
    out = median * np.exp(sigma_ln * rng.standard_normal(n))
    for _ in range(1000):
        bad = (out < lo) | (out > hi)
        if not bad.any():
            return out
        out[bad] = median * np.exp(sigma_ln * rng.standard_normal(int(bad.sum())))
    raise ValueError(f"seeing: a log-normal of median {median} and sigma_ln {sigma_ln} rarely falls in {bounds}")


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
    df["moon"] = np.full(n, spec.moon)
    df["sky_offset"] = np.zeros(n)   # the grid's fixed conditions: the median sky
    df["oh_scale"] = np.ones(n)
    df["redshift"] = np.zeros(n)
    return df


#: Fields of MockSpec that do not change the generated data (speed settings only)
_NOT_CONTENT = ("chunk_size", "workers")
SPEC_ATTR = "snrmoe_mock_spec"


#: Key of the forward model's physics fingerprint in the stored spec (model, physics version, settings digest)
PHYSICS_KEY = "physics"


def physics_fingerprint(model: str) -> str:
    """The physics fingerprint of the registered forward model ``model`` (see ``ForwardModel.physics_fingerprint``)."""
    return get_model(model).physics_fingerprint()


def _content_spec(spec: MockSpec) -> str:
    d = dataclasses.asdict(spec)
    for k in _NOT_CONTENT:
        d.pop(k, None)
    d[PHYSICS_KEY] = physics_fingerprint(spec.model)
    return json.dumps(d, sort_keys=True)


def _provenance(spec: MockSpec) -> dict:
    return {SPEC_ATTR: _content_spec(spec)}


def stored_mock_spec(path: str | Path) -> dict | None:
    """The mock spec a dataset was generated with (``None`` for data not made by the mock)."""
    with open_dataset(path) as ds:
        raw = ds.attrs.get(SPEC_ATTR)
    return None if raw is None else json.loads(raw)


def ensure_mock(spec: MockSpec, path: str | Path, on_stale: str = "raise", progress: bool = True):
    """Open the mock dataset at ``path``, generating it when missing.

    A dataset made from a different spec (another forward model, size, seed, ranges, …) is stale:
    ``on_stale='raise'`` (for the configured dataset: never replace data silently) raises
    :class:`StaleDatasetError` saying how to regenerate it; ``'regenerate'`` (for derived caches
    the library owns) replaces it. A dataset made by an older version of the mock's physics (its
    stored ``physics`` fingerprint differs, or is absent) is regenerated in both modes, with a
    message: it is the library's own output of a superseded model, which nothing can reuse.
    """
    path = Path(path)
    if path.exists():
        stored = stored_mock_spec(path)
        current = json.loads(_content_spec(spec))
        if stored is not None and stored != current:
            diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
            if on_stale != "regenerate" and PHYSICS_KEY not in diff:
                raise StaleDatasetError(
                    f"{path} was generated by the mock with other settings ({', '.join(diff)} differ). "
                    f"Regenerate it with `snrmoe simulate --params <this config> --overwrite`, or delete it.")
            # older physics (or a cache the library owns): the file is the library's own output of a
            # superseded mock, which no configuration can reuse, so it is remade, and said so
            if PHYSICS_KEY in diff:
                print(f"{path} was made by mock physics {stored.get(PHYSICS_KEY, 'v1 (unversioned)')} "
                      f"({', '.join(diff)} differ); regenerating it with {current[PHYSICS_KEY]}")
            simulate(spec, path, overwrite=True, progress=progress)
    else:
        try:
            simulate(spec, path, progress=progress)
        except FileExistsError:
            pass  # another process finished it first: the rename is atomic, so the file is complete
    return open_dataset(path)


def mock_is_current(spec: MockSpec, path: str | Path) -> bool:
    """Whether the mock file at ``path`` exists and was generated from exactly ``spec`` by this physics."""
    path = Path(path)
    return path.exists() and stored_mock_spec(path) == json.loads(_content_spec(spec))


class StaleDatasetError(ValueError):
    """A mock dataset on disk was generated from another spec than the configuration's."""


def grid_path(path: str | Path, mag: float) -> Path:
    """File name of one magnitude of a grid dataset: ``<stem>_mag21.5.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_mag{mag:g}{path.suffix or '.h5'}")


_WORKER_MODEL: dict = {}


def _worker_init(name: str) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: threads would only contend
    _WORKER_MODEL["model"] = get_model(name)


def _worker_observe(block: pd.DataFrame, rows: np.ndarray, seed: int, error_mode: str):
    return _WORKER_MODEL["model"].observe(block, rows, seed, error_mode)


def _observations(model_name: str, table: pd.DataFrame, spec: MockSpec):
    """Yield (rows, block, Observation) chunk by chunk, in order, from ``spec.workers`` processes.

    At most 2 × workers chunks are in flight, so memory stays bounded whatever N is; every draw
    is keyed by (seed, row), so the output does not depend on the number of workers.
    """
    n = len(table)
    starts = list(range(0, n, spec.chunk_size))

    def block(s):
        rows = np.arange(s, min(s + spec.chunk_size, n))
        return rows, table.iloc[rows].reset_index(drop=True)

    if spec.workers <= 1:
        model = get_model(model_name)
        for s in starts:
            rows, b = block(s)
            yield rows, b, model.observe(b, rows, spec.seed, spec.error_mode)
        return
    ctx = mp.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=_worker_init, initargs=(model_name,)) as pool:
        pending: deque = deque()
        it = iter(starts)
        for s in it:
            rows, b = block(s)
            pending.append((rows, b, pool.submit(_worker_observe, b, rows, spec.seed, spec.error_mode)))
            if len(pending) >= 2 * spec.workers:
                break
        while pending:
            rows, b, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                r2, b2 = block(nxt)
                pending.append((r2, b2, pool.submit(_worker_observe, b2, r2, spec.seed, spec.error_mode)))
            yield rows, b, fut.result()


def _write(table: pd.DataFrame, spec: MockSpec, path: Path, overwrite: bool, progress: bool) -> Path:
    model = get_model(spec.model)
    n = len(table)
    if spec.shard_size > 0:
        writer = ShardedWriter(path, n, model.wave, spec.shard_size, overwrite=overwrite, attrs=_provenance(spec))
    else:
        writer = DatasetWriter(path, n, model.wave, overwrite=overwrite, attrs=_provenance(spec))
    chunks = _observations(spec.model, table, spec)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=-(-n // spec.chunk_size), desc=f"simulating {path.name}", unit="chunk")
    with writer:
        for rows, block, obs in chunks:
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

    Returns a :class:`~snrmoe_lib.data.io.PfsDataset`. A mock dataset generated from other settings
    than the configuration's raises :class:`StaleDatasetError` (see :func:`ensure_mock`).
    """
    path = params.dataset_path
    spec = params.data.mock
    if spec is None:
        if not path.exists():
            raise FileNotFoundError(f"dataset {path} not found and the configuration has no data.mock to generate it")
        return open_dataset(path, on_bad_rows=params.data.on_bad_rows)
    if spec.mode != "random":
        raise ValueError("data.mock must be in random mode for a training dataset; grids are made by the fisher code")
    ensure_mock(spec, path, on_stale="raise", progress=progress).close()
    return open_dataset(path, on_bad_rows=params.data.on_bad_rows)
