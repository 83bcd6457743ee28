"""Shared fixtures: small synthetic datasets in the pfsspec layout, written to a temporary folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.data.io import DatasetWriter

ROOT = Path(__file__).resolve().parent.parent


def make_arrays(n: int = 50, p: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = np.linspace(7100.0, 8850.0, p)
    flux = (1.0 + 0.1 * rng.standard_normal((n, p))).astype(np.float32)
    error = (0.2 + 0.05 * rng.random((n, p))).astype(np.float32)
    mask = np.zeros((n, p), np.int32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": rng.uniform(1, 5, n),
                           "M_H": rng.uniform(-2.5, 0.75, n), "mag": rng.uniform(20.5, 22.5, n)})
    return wave, flux, error, mask, params


def write_dataset(path: Path, n: int = 50, p: int = 64, seed: int = 0, with_mask: bool = True):
    wave, flux, error, mask, params = make_arrays(n, p, seed)
    with DatasetWriter(path, n, wave, with_mask=with_mask) as w:
        w.write(flux, error, params, mask=mask if with_mask else None)
    return wave, flux, error, mask, params


@pytest.fixture
def tiny(tmp_path):
    """(path, arrays…) of a 50 × 64 dataset."""
    path = tmp_path / "tiny.h5"
    return (path, *write_dataset(path))


def fit_smoke_clean(family: str = "ridge", overrides: dict | None = None):
    """(params, dataset, model, frozen-test predictions) of the smoke configuration's deployed mixture with
    clean σ (so it compares with Q3's and Q4's clean-mode columns); the caller closes the dataset."""
    import dataclasses

    from snrmoe_lib.analyses.deploy import fit_deployed
    from snrmoe_lib.config import load_params
    from snrmoe_lib.data.io import open_dataset

    params = load_params(ROOT / "params" / "smoke.yaml", overrides)
    params = dataclasses.replace(params, noise=dataclasses.replace(params.noise, error_mode="clean"))
    ds = open_dataset(ROOT / "data" / "mock_smoke.h5")
    model, test = fit_deployed(ds, params, family=family)
    return params, ds, model, test


def assert_same_catalogue(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> None:
    """Two predictions' catalogue columns: the same names in order, floats within ``atol``, the rest equal."""
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(b[c].to_numpy(), a[c].to_numpy(), rtol=0, atol=atol, err_msg=c)
        else:
            assert (a[c].to_numpy() == b[c].to_numpy()).all(), c
