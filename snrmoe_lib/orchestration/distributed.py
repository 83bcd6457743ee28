"""Per-shard sufficient statistics computed where the shards are, then summed.

A Ridge model (and every expert, see :mod:`snrmoe_lib.ridge`) depends on the data only through
:class:`~snrmoe_lib.ridge.GramStats`, and statistics of disjoint row sets add up exactly
(:meth:`GramStats.merge`). So a sharded dataset (``shard_index.txt`` + ``<shard>/dataset.h5``, as the
mock writes with ``mock.shard_size`` and as the user's 1M set comes in five shards) is reduced one
shard per task: :func:`shard_stats` opens the dataset on the worker, streams its rows of one shard
through :func:`snrmoe_lib.ridge.stream_stats` and returns the O(G·D²) sums, never the spectra.
:func:`distributed_stats` submits one task per shard to any ``concurrent.futures`` executor — a local
process pool, or a Dask cluster's (``distributed.Client(address).get_executor()``, the same one
:mod:`snrmoe_lib.sweep` uses) — and sums the results in shard order, so the answer does not depend on
which worker finished first.

The noise is keyed by (seed, row) (:func:`snrmoe_lib.noise.add_noise`), so the sums equal those of
one pass over all rows on one machine, up to floating-point rounding.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.data.io import PfsDataset, open_dataset
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.models.ridge import GramStats, stream_stats

__all__ = ["shard_blocks", "shard_stats", "distributed_stats"]

# PyTables (the params table) is not thread-safe: workers with several threads open datasets one at a time
_OPEN_LOCK = threading.Lock()


def shard_blocks(ds: PfsDataset, rows: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
    """The given rows (default: all) split by the shard that holds them, in shard order.

    A single-file dataset is one block. Empty blocks are left out.
    """
    rows = np.arange(ds.n) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    if rows.size and (rows[0] < 0 or rows[-1] >= ds.n):
        raise IndexError(f"row numbers must be in [0, {ds.n})")
    cuts = np.searchsorted(rows, ds.row_offsets[1:-1])  # kept-row numbers when bad rows were dropped
    return [b for b in np.split(rows, cuts) if b.size]


def shard_stats(path: str | Path, rows: np.ndarray, *, noise_level: float, seed: int, bin_pixels: int = 1,
                target: str = "log_g", n_groups: int = 1, groups: Callable | None = None,
                chunk_size: int = 4096, on_bad_rows: str = "raise") -> tuple[GramStats, pd.DataFrame]:
    """Task: the sufficient statistics of ``rows`` (normally the rows of one shard) of the dataset at ``path``.

    Runs on a worker: opens the dataset there, so only the path, the row numbers and the small
    result travel. ``groups`` (e.g. a router's ``assign``) must be picklable.

    Returns
    -------
    stats : GramStats
    info : DataFrame
        ``row``, ``y`` (and ``group``) per spectrum: O(n) scalars.
    """
    with _OPEN_LOCK:
        ds = open_dataset(path, on_bad_rows=on_bad_rows)
    with ds:
        return stream_stats(ds, rows, noise_level=noise_level, seed=seed, features=FluxFeatures(bin_pixels),
                            target=target, n_groups=n_groups, groups=groups, chunk_size=chunk_size)


def distributed_stats(ds: PfsDataset | str | Path, rows: Sequence[int] | np.ndarray | None = None, *,
                      noise_level: float, seed: int, bin_pixels: int = 1, target: str = "log_g",
                      n_groups: int = 1, groups: Callable | None = None, chunk_size: int = 4096,
                      executor: cf.Executor | None = None) -> tuple[GramStats, pd.DataFrame]:
    """Sufficient statistics over ``rows``, one task per shard, summed in shard order.

    Parameters
    ----------
    ds
        The dataset (or its path). Workers open it by path: on a cluster the path must be valid there.
    rows
        Rows to use (default: all), e.g. ``split.train``.
    noise_level, seed, bin_pixels, target, n_groups, groups, chunk_size
        As in :func:`snrmoe_lib.ridge.stream_stats`.
    executor
        Where the shard tasks run: a ``concurrent.futures`` executor (process pool, or
        ``distributed.Client.get_executor()``); ``None`` runs them one after another here.

    Returns
    -------
    stats : GramStats
        Equal (up to rounding) to one :func:`stream_stats` pass over ``rows``.
    info : DataFrame
        Per-spectrum ``row``, ``y`` (``group``), in row order.
    """
    opened = not isinstance(ds, PfsDataset)
    dset = open_dataset(ds) if opened else ds
    try:
        path, on_bad = str(dset.path), dset.on_bad_rows
        blocks = shard_blocks(dset, rows)
    finally:
        if opened:
            dset.close()
    if not blocks:
        raise ValueError("no rows to accumulate")
    kw = dict(noise_level=noise_level, seed=seed, bin_pixels=bin_pixels, target=target, n_groups=n_groups,
              groups=groups, chunk_size=chunk_size, on_bad_rows=on_bad)
    if executor is None:
        parts = [shard_stats(path, b, **kw) for b in blocks]
    else:
        futures = [executor.submit(shard_stats, path, b, **kw) for b in blocks]
        parts = [f.result() for f in futures]  # shard order: a deterministic sum
    total = parts[0][0]
    for stats, _ in parts[1:]:
        total.merge(stats)
    info = pd.concat([i for _, i in parts], ignore_index=True)
    return total, info
