"""Estimated errors (noise.error_mode: estimated): σ̂ from the same noisy realisation as the flux."""
from __future__ import annotations

import numpy as np
import pytest

from snrmoe_lib.config import params_from_dict
from snrmoe_lib.data.io import open_dataset, split_rows
from snrmoe_lib.data.noise import (VarianceModel, add_noise, add_noise_estimated, estimated_sigma, fit_variance_model,
                                   row_normals)
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures

from conftest import write_dataset


def _planted(n=400, p=60, seed=0):
    """σ² = s_b·β + s_g·γ·flux with known templates and per-spectrum scales."""
    rng = np.random.default_rng(seed)
    beta = 0.5 + 0.4 * np.sin(np.arange(p) / 7.0) ** 2
    gamma = 1.0 + 0.5 * np.cos(np.arange(p) / 11.0)
    flux = 1.0 + 0.3 * rng.standard_normal((n, p)).clip(-2, 2)
    sb, sg = rng.uniform(0.2, 2.0, (n, 1)), rng.uniform(0.2, 2.0, (n, 1))
    e2 = sb * beta + sg * gamma * flux
    return flux, np.sqrt(e2), sg * gamma


def test_the_variance_model_recovers_the_photon_term():
    flux, error, gain = _planted()
    vm = VarianceModel().fit(flux[:300], error[:300])
    assert vm.rel_rms_ < 1e-3
    g = vm.gain(flux[300:], error[300:])  # spectra it was not fitted on
    np.testing.assert_allclose(g * flux[300:], gain[300:] * flux[300:], rtol=1e-2)
    with pytest.raises(RuntimeError, match="not fitted"):
        VarianceModel().gain(flux, error)
    with pytest.raises(ValueError, match="shape"):
        VarianceModel().fit(flux, error[:, :5])


def test_sigma_hat_comes_from_the_same_draw_as_the_noisy_flux():
    flux, error, gain = _planted(n=50)
    flux, error = flux.astype(np.float32), error.astype(np.float32)
    rows = np.arange(100, 150)
    noisy, sh = add_noise_estimated(flux, error, 0.5, rows, seed=3, gain=gain)
    np.testing.assert_array_equal(noisy, add_noise(flux, error, 0.5, rows, 3))  # the protocol's numbers
    z = row_normals(rows, flux.shape[1], 3)
    # an upward fluctuation of the counts raises the estimated variance: σ̂ and z move together
    assert np.corrcoef((sh / (0.5 * error)).ravel(), z.ravel())[0, 1] > 0.2
    # no photon term: σ̂ is exactly σ = error · noise_level
    np.testing.assert_allclose(estimated_sigma(error, np.zeros_like(gain), z, 0.5), 0.5 * error, rtol=1e-6)
    # unbiased in variance where the clip does not bite
    big = np.repeat(error[:1], 20000, 0).astype(np.float64)
    zz = np.random.default_rng(0).standard_normal(big.shape)
    v = estimated_sigma(big, 0.1 * np.repeat(gain[:1], 20000, 0), zz, 1.0).astype(np.float64) ** 2
    np.testing.assert_allclose(v.mean(axis=0), big[0] ** 2, rtol=0.01)


def test_split_pass_yields_sigma_hat_in_estimated_mode(tmp_path):
    path = tmp_path / "d.h5"
    write_dataset(path, n=300, p=48, seed=4)
    ds = open_dataset(path)
    split = split_rows(ds.n, 200, 40, 60, seed=1)
    vm = fit_variance_model(ds, split.train, n=100)
    roles = {"train": split.train, "test": split.test}
    clean = {r: nc.noisy.copy() for r, nc in split_pass(ds, {"test": split.test}, noise_level=1.0, seed=2,
                                                          features=FluxFeatures(4), workers=0)}
    n = 0
    for role, nc in split_pass(ds, roles, noise_level=1.0, seed=2, features=FluxFeatures(4), chunk_size=50,
                               error_mode="estimated", variance_model=vm):
        ref = ds.read(nc.rows)
        np.testing.assert_array_equal(nc.noisy, add_noise(ref.flux, ref.error, 1.0, nc.rows, 2))
        _, want = add_noise_estimated(ref.flux, ref.error, 1.0, nc.rows, 2, vm.gain(ref.flux, ref.error))
        np.testing.assert_array_equal(nc.sigma_hat, want)
        assert nc.sigma_hat.shape == nc.noisy.shape and np.all(nc.sigma_hat > 0)
        n += len(nc)
    assert n == 260 and clean["test"].shape == (60, 48)
    for nc in (nc for _, nc in split_pass(ds, roles, noise_level=1.0, seed=2, features=FluxFeatures(4))):
        assert nc.sigma_hat is None  # clean mode
    with pytest.raises(ValueError, match="variance_model"):
        next(split_pass(ds, roles, noise_level=1.0, seed=2, features=FluxFeatures(4), error_mode="estimated"))


def test_noise_spec_has_an_error_mode():
    assert params_from_dict({}).noise.error_mode == "clean"
    assert params_from_dict({"noise": {"error_mode": "estimated"}}).noise.error_mode == "estimated"
    with pytest.raises(Exception, match="error_mode"):
        params_from_dict({"noise": {"error_mode": "guessed"}})
