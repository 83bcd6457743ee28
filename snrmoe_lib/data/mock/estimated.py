"""The simulator's ``estimated`` error mode, beside a configured mock.

The Q2 audit repeats itself on a small mock made with the configured settings but
``error_mode='estimated'`` (the error recomputed from noisy counts, as a reduction pipeline would;
the counts' noise is the noise protocol's own draw at the mock's seed, so σ̂ and the noisy flux of
that seed share one realisation — other noise seeds get σ̂ from :class:`~snrmoe_lib.data.noise.VarianceModel`).
This module places that mock, generates it when missing or stale, and checks that the configured
dataset was made by the configured mock (so that the clean and estimated audits compare like with like).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, open_dataset
from snrmoe_lib.data.mock.registry import get_model
from snrmoe_lib.data.mock.generate import ensure_mock

__all__ = ["ESTIMATED_VERSION", "estimated_path", "ensure_estimated_dataset", "mock_provenance"]


#: Version of the estimated-mode generation, part of the file name: a changed generation never reuses
#: an older file (v2: σ̂ from the noise protocol's own draw, the realisation of the noisy flux).
ESTIMATED_VERSION = 2


def estimated_path(params: Params) -> Path:
    """Where the ``estimated``-error mock lives: ``<stem>_estimated_v<N><suffix>`` beside the dataset."""
    p = params.dataset_path
    return p.with_name(f"{p.stem}_estimated_v{ESTIMATED_VERSION}{p.suffix or '.h5'}")


def ensure_estimated_dataset(params: Params, n: int, progress: bool = False) -> PfsDataset | None:
    """Open (generating when missing or stale) a mock of ``n`` spectra like the configured one but
    with ``error_mode='estimated'``. ``None`` when the configuration has no mock (real data).

    Parameters
    ----------
    params : Params
        The run's parameters (``data.mock`` is the spec to copy).
    n : int
        Number of spectra (the audit sample's size).
    progress : bool
        Show the generator's progress bar.
    """
    mock = params.data.mock
    if mock is None:
        return None
    spec = dataclasses.replace(mock, error_mode="estimated", n=int(n), shard_size=0)
    # a cache the library owns: made with other settings (the file records its spec), it is regenerated
    ensure_mock(spec, estimated_path(params), on_stale="regenerate", progress=progress).close()
    return open_dataset(estimated_path(params), on_bad_rows=params.data.on_bad_rows)


def mock_provenance(ds: PfsDataset, params: Params, rows: Sequence[int] = (0,)) -> str | None:
    """Check that ``ds`` was made by the configured mock (``data.mock``): re-simulate a few rows
    and compare. ``None`` when they agree (or there is no mock to compare with), else a message.

    The estimated-mode audit generates its mock from the configuration; if the clean dataset on
    disk was made with another model or instrument settings, the two tables would compare
    different mocks. (The stored parameter table is re-observed, so a different ``seed`` alone,
    which only changes which stars are drawn, is not a mismatch.)
    """
    mock = params.data.mock
    if mock is None:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    ch = ds.read(rows)
    obs = get_model(mock.model).observe(ch.params.reset_index(drop=True), rows, mock.seed, mock.error_mode)
    if np.allclose(obs.error, ch.error, rtol=1e-4, atol=0) and np.allclose(obs.flux, ch.flux, rtol=1e-4, atol=0):
        return None
    return (f"{ds.path} was not made by the configured mock (model {mock.model!r}, seed {mock.seed}, "
            f"error_mode {mock.error_mode!r}): re-simulated rows {rows.tolist()} differ. The estimated-mode "
            "mock follows the configuration, so the clean and estimated tables come from different "
            "mocks; regenerate the dataset to compare like with like")
