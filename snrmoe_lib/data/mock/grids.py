"""Mock grid files for the Fisher ceiling: one regular lattice per magnitude, made once and reused.

A mock grid is named by its forward model and a hash of everything that shapes it (lattice, model,
the model's physics fingerprint, exposure, conditions, seed), so specs that differ only in settings of the random set share one
grid, and a grid made with other settings is never silently reused.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.config import MockSpec
from snrmoe_lib.data.io import open_dataset
from snrmoe_lib.data.mock.base import PARAM_NAMES
from snrmoe_lib.data.mock.generate import grid_path, grid_table, physics_fingerprint, simulate

__all__ = ["mock_grid_base", "mock_grid_files", "check_grid_matches", "ensure_mock_grid"]

#: MockSpec fields that only shape the random set (or how the work is split): they do not change a grid
_NOT_GRID_CONTENT = ("grid_mags", "n", "chunk_size", "shard_size", "workers", "mag", "seeing", "zenith",
                     "field_angle", "beta_shape", "sky_jitter", "oh_jitter", "seeing_dist", "seeing_median",
                     "seeing_sigma_ln")


def mock_grid_base(spec: MockSpec, directory: str | Path) -> Path:
    """Base path (before ``_mag<m>``) of the mock grid of ``spec`` in ``directory``."""
    content = dataclasses.asdict(spec)
    for k in _NOT_GRID_CONTENT:
        content.pop(k, None)
    content["physics"] = physics_fingerprint(spec.model)  # a grid of older physics is never reused
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(directory) / f"mock_grid_{content['model']}_{digest}.h5"


def mock_grid_files(base: str | Path, mags: Sequence[float]) -> dict[float, Path]:
    """Magnitude → file of a grid whose base path is ``base``."""
    return {float(m): grid_path(base, m) for m in mags}


def check_grid_matches(path: str | Path, expected: pd.DataFrame) -> None:
    """Raise when the lattice stored at ``path`` is not the one of ``expected`` (a params table)."""
    with open_dataset(path) as ds:
        got = ds.params
        same = len(got) == len(expected) and all(
            np.array_equal(np.unique(np.round(got[c].to_numpy(float), 6)), np.unique(np.round(expected[c].to_numpy(float), 6)))
            for c in PARAM_NAMES)
    if not same:
        raise ValueError(f"{path}: this mock grid was made with other fisher.grid_* settings than the "
                         "configuration's; delete it to regenerate")


def ensure_mock_grid(spec: MockSpec, base: str | Path, progress: bool = False) -> dict[float, Path]:
    """Magnitude → file of each of ``spec.grid_mags``, simulating the missing ones first.

    An existing file made with another lattice is an error (never silently reused).
    """
    base = Path(base)
    files = mock_grid_files(base, spec.grid_mags)
    missing = sorted(m for m, p in files.items() if not p.exists())
    if missing:
        base.parent.mkdir(parents=True, exist_ok=True)
    for m in missing:
        try:
            simulate(dataclasses.replace(spec, grid_mags=[m]), base, progress=progress)
        except FileExistsError:
            pass  # another process wrote it first (the writer renames atomically)
    for m, p in files.items():
        if m not in missing:
            check_grid_matches(p, grid_table(spec, m))
    return files
