"""Tests of the Fisher / CRLB code: closed-form linear Gaussian case, Schur vs inverse, FD vs autograd."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib import ceiling
from snrmoe_lib.analyses import k1, k1_efficiency
from snrmoe_lib.config import MockSpec
from snrmoe_lib.data.mock import PARAM_NAMES, get_model, grid_table

NUIS_3D = ("T_eff", "M_H")
NUIS_5D = ("T_eff", "M_H", "a_M", "C_M")


def _spd(rng, n, k=5, scales=(1e3, 1.0, 1.0, 0.1, 0.1)):
    """Random SPD matrices with very different parameter units (like K vs dex)."""
    A = rng.normal(size=(n, 40, k)) / np.asarray(scales)
    return np.einsum("bpi,bpj->bij", A, A)


# ------------------------------------------------------------------ closed form / Schur


def test_linear_gaussian_crlb_is_attained_by_the_efficient_estimator():
    # y = A θ + n, n ~ N(0, diag σ²): F = Aᵀ Σ⁻¹ A exactly, and weighted least squares is unbiased
    # and efficient, so its Monte-Carlo variance of θ_g must match the marginal CRLB.
    rng = np.random.default_rng(1)
    P, K, n_draw = 60, 5, 4000
    A = rng.normal(size=(P, K)) * np.array([1e-3, 1.0, 0.5, 0.3, 0.2])  # T_eff in K: tiny derivative
    A[:, 2] += 0.6 * A[:, 1]  # degeneracy of log g with M_H
    sigma = rng.uniform(0.5, 2.0, size=P)
    F = ceiling.fisher_matrix(A[None], sigma[None])
    np.testing.assert_allclose(F[0], A.T @ np.diag(1 / sigma**2) @ A, rtol=1e-12)
    crlb5 = ceiling.marginal_crlb(F, "log_g", NUIS_5D)[0]
    theta = np.array([5000.0, 3.0, -1.0, 0.2, 0.0])
    y = A @ theta + rng.normal(size=(n_draw, P)) * sigma
    W = np.diag(1 / sigma**2)
    est = np.linalg.solve(A.T @ W @ A, (A.T @ W @ y.T)).T
    var_g = est[:, 1].var(ddof=1)
    # sampling error of a variance from 4000 draws: ≈ √(2/4000) ≈ 2.2 %; allow 4 standard errors
    assert abs(var_g / crlb5 - 1) < 0.09, (var_g, crlb5)
    assert abs(est[:, 1].mean() - theta[1]) < 4 * np.sqrt(crlb5 / n_draw)  # unbiased
    # known nuisances give a smaller bound; marginalising over more never helps
    crlb0 = ceiling.marginal_crlb(F, "log_g", ())[0]
    crlb3 = ceiling.marginal_crlb(F, "log_g", NUIS_3D)[0]
    assert crlb0 <= crlb3 <= crlb5
    np.testing.assert_allclose(crlb0, 1 / F[0, 1, 1])


def test_schur_complement_matches_direct_inverse():
    rng = np.random.default_rng(2)
    F = _spd(rng, 50)
    for nuis in [(), NUIS_3D, NUIS_5D, ("a_M",)]:
        crlb, info = ceiling.marginal_crlb(F, "log_g", nuis, return_info=True)
        idx = [1] + [PARAM_NAMES.index(n) for n in nuis]
        direct = np.array([np.linalg.inv(f[np.ix_(idx, idx)])[0, 0] for f in F])
        np.testing.assert_allclose(crlb, direct, rtol=1e-8)
        assert info.ok.all()
        np.testing.assert_allclose(info.schur_decay, F[:, 1, 1] ** -1 / direct, rtol=1e-8)
        assert np.all((info.schur_decay > 0) & (info.schur_decay <= 1 + 1e-12))
    # a single (K, K) matrix gives a scalar
    assert np.ndim(ceiling.marginal_crlb(F[0], "log_g", NUIS_3D)) == 0


def test_ill_conditioned_stars_are_flagged_not_garbage():
    rng = np.random.default_rng(3)
    F = _spd(rng, 4)
    J = rng.normal(size=(30, 5))
    J[:, 3] = 2.0 * J[:, 2]  # a_M exactly degenerate with M_H: F singular in 5-D
    F[1] = J.T @ J
    F[2] = 0.0  # no information at all
    F[3, 1, :] = F[3, :, 1] = 0.0  # no information on log g
    crlb, info = ceiling.marginal_crlb(F, "log_g", NUIS_5D, return_info=True)
    assert info.ok.tolist() == [True, False, False, False]
    assert np.isfinite(crlb[0]) and np.isnan(crlb[1:]).all()
    # the 3-D bound of star 1 does not involve a_M and is fine
    assert ceiling.marginal_crlb(F[1], "log_g", NUIS_3D) > 0


def test_bad_inputs_name_the_problem():
    F = np.eye(5)[None]
    with pytest.raises(KeyError, match="logg"):
        ceiling.marginal_crlb(F, "logg", NUIS_3D)
    with pytest.raises(ValueError, match="nuisance"):
        ceiling.marginal_crlb(F, "log_g", ("log_g",))
    with pytest.raises(ValueError, match="shape"):
        ceiling.marginal_crlb(np.eye(3), "log_g", ())
    J = np.ones((2, 4, 5))
    sigma = np.ones((2, 4))
    sigma[1, 2] = 0.0
    with pytest.raises(ValueError, match="star 1"):
        ceiling.fisher_matrix(J, sigma)
    with pytest.raises(ValueError, match="Var"):
        ceiling.r2_max(0.1, 0.0)


def test_masked_pixels_are_excluded():
    rng = np.random.default_rng(4)
    J = rng.normal(size=(3, 20, 5))
    sigma = rng.uniform(0.5, 1.5, size=(3, 20))
    mask = np.zeros((3, 20), np.int32)
    mask[:, [2, 7]] = 1
    sigma[:, 2] = np.nan  # a masked pixel may hold anything
    keep = [i for i in range(20) if i not in (2, 7)]
    np.testing.assert_allclose(ceiling.fisher_matrix(J, sigma, mask),
                               ceiling.fisher_matrix(J[:, keep], sigma[:, keep]), rtol=1e-12)


def test_r2_max_and_summary():
    crlb = np.array([0.1, 0.2, 0.4, np.nan])
    np.testing.assert_allclose(ceiling.r2_max(crlb[:3], 2.0), [0.95, 0.9, 0.8])
    s = ceiling.ceiling_summary(crlb, 2.0)
    assert s["n_flagged"] == 1 and s["n"] == 4
    np.testing.assert_allclose(s["median_r2_max"], 0.9)
    np.testing.assert_allclose(s["population_r2_max"], 1 - (0.7 / 3) / 2.0)
    np.testing.assert_allclose(s["p90_r2_max"], np.quantile([0.95, 0.9, 0.8], 0.9))


# ------------------------------------------------------------------ priors and Bayesian bounds


def test_beta_prior_moments_and_information():
    rng = np.random.default_rng(5)
    x = 1.0 + 4.0 * rng.beta(1.5, 1.5, 200_000)
    np.testing.assert_allclose(ceiling.beta_variance(1.0, 5.0, 1.5, 1.5), x.var(), rtol=0.01)
    assert ceiling.beta_prior_information(1.0, 5.0, 1.5, 1.5) == np.inf
    # numerical E[(d log p / dx)²] for Beta(4, 3) on [0, 2]
    a, b, lo, hi = 4.0, 3.0, 0.0, 2.0
    u = (np.arange(200_000) + 0.5) / 200_000
    from math import gamma

    pdf = u ** (a - 1) * (1 - u) ** (b - 1) * gamma(a + b) / (gamma(a) * gamma(b))
    score = ((a - 1) / u - (b - 1) / (1 - u)) / (hi - lo)
    np.testing.assert_allclose(ceiling.beta_prior_information(lo, hi, a, b), np.mean(pdf * score**2), rtol=1e-3)


def test_bayesian_bounds_sit_below_crlb_and_prior():
    rng = np.random.default_rng(6)
    F = _spd(rng, 30) * 1e-2  # weak information: the prior matters
    pv = np.array([300.0**2, 1.0, 0.5, 0.03, 0.06])
    crlb = ceiling.marginal_crlb(F, "log_g", NUIS_3D)
    bcrlb = ceiling.bayesian_crlb(F, pv, "log_g", NUIS_3D)
    assert np.all(bcrlb <= crlb) and np.all(bcrlb <= pv[1])
    # Gaussian prior: the Bayesian bound equals the inverse of F + Σ⁻¹
    idx = [1, 0, 2]
    direct = [np.linalg.inv(f[np.ix_(idx, idx)] + np.diag(1 / pv[idx]))[0, 0] for f in F]
    np.testing.assert_allclose(bcrlb, direct, rtol=1e-10)
    # Van Trees with a Gaussian prior's information 1/var: Jensen puts it below the mean of per-star bounds
    vt = ceiling.van_trees_bound(F, 1 / pv, "log_g", NUIS_3D)
    assert 0 < vt <= bcrlb.mean()
    assert ceiling.van_trees_bound(F, np.full(5, np.inf), "log_g", NUIS_3D) == 0.0


# ------------------------------------------------------------------ FD against autograd on the mock


@pytest.fixture(scope="module")
def model():
    return get_model("simple")


@pytest.fixture(scope="module", params=["simple", "calibrated"])
def any_model(request):
    return get_model(request.param)


def _local_lattice(center: dict, steps: dict, mag: float = 21.5) -> pd.DataFrame:
    """The star and its ±1-step neighbours on every axis: a lattice with holes (11 of 3⁵ nodes)."""
    spec = MockSpec(mode="grid", n_exp=12)
    nodes = [dict(center)]
    for n in PARAM_NAMES:
        for sgn in (-1.0, 1.0):
            nodes.append({**center, n: center[n] + sgn * steps[n]})
    df = pd.DataFrame(nodes)[list(PARAM_NAMES)]
    cond = grid_table(spec, mag).iloc[:1].drop(columns=list(PARAM_NAMES))
    for c in cond:
        df[c] = cond[c].iloc[0]
    return df


def test_finite_differences_match_autograd_on_the_mock(any_model):
    import torch

    model = any_model
    center = {"T_eff": 4800.0, "log_g": 2.5, "M_H": -1.0, "a_M": 0.2, "C_M": 0.0}
    steps = {"T_eff": 2.0, "log_g": 0.002, "M_H": 0.002, "a_M": 0.002, "C_M": 0.002}
    table = _local_lattice(center, steps)
    flux = model.normalized_flux(torch.tensor(table[list(PARAM_NAMES)].to_numpy()), table).numpy()
    gj = ceiling.grid_jacobian(table, flux, edges="drop")
    assert len(gj.rows) == 1 and gj.central.all() and set(gj.axes) == set(PARAM_NAMES)
    Ja = ceiling.jacobian_autograd(model, gj.table)
    assert Ja.shape == gj.J.shape
    for k, n in enumerate(PARAM_NAMES):
        err = np.linalg.norm(gj.J[0, :, k] - Ja[0, :, k]) / np.linalg.norm(Ja[0, :, k])
        assert err < 1e-4, (n, err)
    sigma = np.full(flux.shape[1], 0.1)
    c_fd = ceiling.marginal_crlb(ceiling.fisher_matrix(gj.J, sigma[None]), "log_g", NUIS_5D)
    c_ad = ceiling.marginal_crlb(ceiling.fisher_matrix(Ja, sigma[None]), "log_g", NUIS_5D)
    np.testing.assert_allclose(c_fd, c_ad, rtol=1e-2)


def test_autograd_batches_agree(model):
    spec = MockSpec(mode="grid", teff=[4500, 5500], log_g=[2, 4], m_h=[-1, 0], grid_teff_step=1000,
                    grid_log_g_step=2, grid_m_h_step=1)
    table = grid_table(spec, 21.5).iloc[:3]
    np.testing.assert_allclose(ceiling.jacobian_autograd(model, table, batch_size=2),
                               ceiling.jacobian_autograd(model, table, batch_size=3), rtol=1e-10, atol=1e-14)
    with pytest.raises(KeyError, match="C_M"):
        ceiling.jacobian_autograd(model, table.drop(columns="C_M"))


# ------------------------------------------------------------------ lattice detection on grid files


def test_lattice_detection_edges_and_holes():
    spec = MockSpec(mode="grid", teff=[4000, 5000], log_g=[1, 3], m_h=[-1, 0], grid_teff_step=250,
                    grid_log_g_step=0.5, grid_m_h_step=0.5)
    table = grid_table(spec, 21.5)
    lat = ceiling.detect_lattice(table)
    assert lat.axes == ("T_eff", "log_g", "M_H") and lat.shape == (5, 5, 3, 1, 1)
    assert all(lat.regular.values()) and lat.steps()["T_eff"] == 250.0
    drop = ceiling.usable_rows(table, edges="drop")
    one = ceiling.usable_rows(table, edges="one_sided")
    assert len(drop) == 3 * 3 * 1 and len(one) == len(table)
    # a hole removes the stars that needed it; shuffled rows do not matter
    holed = table.drop(index=int(drop[0])).sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert len(ceiling.usable_rows(holed, edges="drop")) < len(drop)
    with pytest.raises(ValueError, match="share one lattice node"):
        ceiling.detect_lattice(pd.concat([table, table.iloc[:1]], ignore_index=True))
    flux = np.random.default_rng(0).normal(size=(len(table), 8))
    with pytest.raises(ValueError, match="do not vary"):
        ceiling.grid_jacobian(table, flux, axes=("a_M",))
    with pytest.raises(ValueError, match="lack grid neighbours"):
        ceiling.grid_jacobian(table, flux, rows=np.array([0]), edges="drop")


def test_one_sided_edges_are_exact_on_linear_flux():
    spec = MockSpec(mode="grid", teff=[4000, 5000], log_g=[1, 3], m_h=[-1, 0], grid_teff_step=500,
                    grid_log_g_step=1.0, grid_m_h_step=0.5)
    table = grid_table(spec, 21.5)
    G = np.random.default_rng(1).normal(size=(5, 7))
    flux = table[list(PARAM_NAMES)].to_numpy() @ G
    gj = ceiling.grid_jacobian(table, flux, edges="one_sided")
    assert len(gj.rows) == len(table) and not gj.central.all()
    for k in range(3):
        np.testing.assert_allclose(gj.J[:, :, k], np.broadcast_to(G[k], gj.J[:, :, k].shape), rtol=1e-9)
    assert np.all(gj.J[:, :, 3:] == 0)  # not lattice axes


def test_grid_file_roundtrip(tmp_path, model):
    from snrmoe_lib.data.io import open_dataset
    from snrmoe_lib.data.mock import simulate

    spec = MockSpec(mode="grid", model="simple", teff=[4500, 5500], log_g=[2, 4], m_h=[-1, 0], grid_teff_step=500,
                    grid_log_g_step=1.0, grid_m_h_step=0.5, grid_a_m=[0.0, 0.2, 0.4], grid_mags=[21.5], chunk_size=200)
    (path,) = simulate(spec, tmp_path / "g.h5", progress=False)
    ds = open_dataset(path)
    gj = ceiling.grid_jacobian_dataset(ds, n_stars=None, edges="drop", noise_level=1.0)
    assert len(gj.rows) == 1 and gj.axes == ("T_eff", "log_g", "M_H", "a_M")
    chunk = ds.read(gj.rows)
    np.testing.assert_allclose(gj.sigma, chunk.error, rtol=1e-6)
    # masked pixels of the star or its neighbours are masked in the Jacobian's mask
    assert np.all(gj.mask[chunk.mask != 0] != 0)
    F = ceiling.fisher_matrix(gj.J, gj.sigma, gj.mask)
    crlb, info = ceiling.marginal_crlb(F, "log_g", ("T_eff", "M_H", "a_M"), return_info=True)
    assert info.ok.all() and np.all(crlb > 0)
    # coarse steps: FD and exact derivatives agree to tens of percent, not to round-off
    Ja = ceiling.jacobian_autograd(model, gj.table)
    ca = ceiling.marginal_crlb(ceiling.fisher_matrix(Ja, gj.sigma, gj.mask), "log_g", ("T_eff", "M_H", "a_M"))
    assert 0.5 < np.sqrt(crlb[0] / ca[0]) < 2.0


def test_van_trees_under_the_sampling_prior_is_valid_and_not_vacuous():
    # scalar model y = g + n, n ~ N(0, v), g ~ 0 + 1·Beta(1.5, 1.5): the exact Bayes MMSE by quadrature
    # is the best any estimator can do; the bound must sit below it (and above 0)
    import dataclasses

    spec = dataclasses.replace(MockSpec(), log_g=[0.0, 1.0], beta_shape=[1.5, 1.5])
    g = (np.arange(2000) + 0.5) / 2000
    prior = np.sqrt(g * (1 - g))
    prior /= prior.sum()
    for v in (0.3**2, 0.1**2, 0.03**2):
        y = np.linspace(-1.5, 2.5, 1500)
        like = np.exp(-0.5 * (y[:, None] - g[None, :]) ** 2 / v)
        post = like * prior
        py = post.sum(1)
        keep = py > 1e-300 * post.max()
        post, py = post[keep], py[keep]
        mean = (post * g).sum(1) / py
        mmse = float(np.sum(py * ((post * g**2).sum(1) / py - mean**2)) / py.sum())
        F = np.zeros((50, 5, 5))
        F[:, 1, 1] = 1 / v
        table = pd.DataFrame({n: np.full(50, 0.5) for n in PARAM_NAMES})
        table["log_g"] = np.linspace(0.01, 0.99, 50)
        vt = ceiling.van_trees_sampling_prior(F, table, spec, "log_g", (), drawn_from="prior")
        assert vt["plain"] == 0.0  # beta(1.5, 1.5) has infinite prior information
        assert 0 < vt["bound"] <= mmse, (v, vt, mmse)
        assert vt["bound"] > 0.2 * mmse  # loose but informative


def test_model_scores_and_efficiency(tmp_path):
    from snrmoe_lib.config import params_from_dict
    from snrmoe_lib.evaluation.records import write_results

    p = params_from_dict({"name": "unit"})
    per_bin = [{"model": "oracle", "bin": "X (≤2)", "n": 10, "r2": 0.2, "r2_lo": 0.1, "r2_hi": 0.3, "rmse": 0.9},
               {"model": "oracle", "bin": "L (2–4]", "n": 10, "r2": 0.5, "r2_lo": 0.4, "r2_hi": 0.6, "rmse": 0.7},
               {"model": "global", "bin": "L (2–4]", "n": 10, "r2": 0.4, "r2_lo": 0.3, "r2_hi": 0.5, "rmse": 0.8},
               {"model": "global", "bin": "H >7", "n": 3, "r2": None}]
    other_noise = [dict(r, noise_level=0.5, r2=0.9) for r in per_bin]
    write_results(tmp_path, "q1_snr_headroom", p, dataset={}, metrics={},
                  extra={"per_bin": [dict(r, noise_level=1.0) for r in per_bin] + other_noise, "note": "x"})
    write_results(tmp_path, "00_data_overview", p, dataset={}, metrics={}, extra={"per_bin": per_bin})
    # Q3 repeats Q1's oracle, and adds its own model
    write_results(tmp_path, "q3_deployable_gate", p, dataset={}, metrics={},
                  extra={"per_bin": [dict(per_bin[0]), dict(per_bin[1]), dict(per_bin[0], model="deployed", r2=0.25)]})
    models = k1_efficiency.model_bin_scores(tmp_path, config="unit", noise_level=1.0)
    assert models["model"].tolist() == ["q1:oracle", "q1:oracle", "q1:global", "q3:deployed"]
    assert models["bin"].tolist() == ["X", "L", "L", "X"]
    bounds = pd.DataFrame({"bin": ["X", "L"], "tag": "5d", "n_test": [10, 11], "var_bin": [1.0, 2.0],
                           **{f"{b}_mse{s}": [0.4, 0.5] for b in k1_efficiency.BOUNDS for s in ("", "_lo", "_hi")}})
    eff = k1_efficiency.efficiency_table(models, bounds, "5d")
    np.testing.assert_allclose(eff["model_mse"], [0.8, 1.0, 1.2, 0.75])   # (1 − R²) · Var_bin
    np.testing.assert_allclose(eff["vantrees_eff"], [0.5, 0.5, 0.5 / 1.2, 0.4 / 0.75])
    np.testing.assert_allclose(eff["vantrees_eff_lo"][0], 0.4 / 0.9)      # bound_lo / model_mse_hi
    assert eff["n_matches"].tolist() == [True, False, False, True]
    assert k1_efficiency.model_bin_scores(tmp_path / "none").empty
    assert k1_efficiency.efficiency_table(models.iloc[:0], bounds).empty


def test_grid_files_and_configuration_checks(tmp_path):
    from snrmoe_lib.config import ParameterError, params_from_dict

    p = params_from_dict({"name": "unit", "fisher": {"mags": [22.0], "grid_path": str(tmp_path / "g_{mag:g}.h5")}})
    with pytest.raises(FileNotFoundError, match="g_22.h5"):
        k1.grid_files(p)
    with pytest.raises(ValueError, match="grid_path is empty"):
        k1.grid_files(params_from_dict({"name": "unit"}))
    with pytest.raises(ParameterError, match="nuisance_5d"):
        params_from_dict({"fisher": {"nuisance_5d": ["T_eff", "logg"]}})
    with pytest.raises(ParameterError, match="reference"):
        params_from_dict({"fisher": {"reference_mags": [21.5]}})
    with pytest.raises(ParameterError, match="fd_steps"):
        params_from_dict({"fisher": {"fd_steps": [250.0, 0.5]}})
    with pytest.raises(ParameterError, match="map_candidates"):
        params_from_dict({"fisher": {"map_candidates": 1, "map_starts": 3}})


def test_real_data_path_reads_grid_products(tmp_path):
    """With fisher.grid_path (real data, no forward model) the per-magnitude table comes from grid files."""
    from snrmoe_lib.config import params_from_dict
    from snrmoe_lib.data.mock import simulate

    spec = MockSpec(mode="grid", model="simple", teff=[4500, 5500], log_g=[2, 4], m_h=[-1, 0], grid_teff_step=500,
                    grid_log_g_step=1.0, grid_m_h_step=0.5, grid_a_m=[-0.2, 0.0, 0.2], grid_c_m=[-0.2, 0.0, 0.2],
                    grid_mags=[21.5, 22.5], chunk_size=300)
    simulate(spec, tmp_path / "g.h5", progress=False)
    p = params_from_dict({"name": "unit", "fisher": {"mags": [21.5, 22.5], "grid_path": str(tmp_path / "g.h5"),
                                                     "n_stars": 5, "edges": "drop"}, "runner": {"n_bootstrap": 10}})
    lc, table = k1.ceiling_by_magnitude(p, None)
    assert table["n"].tolist() == [1, 1]  # one interior star of a 3-node lattice
    assert table["sigma_3d"].iloc[1] > table["sigma_3d"].iloc[0] > 0


def test_fd_converges_to_autograd_on_a_smooth_flux():
    """Without the median normalisation the mock is smooth: central differences converge as h²."""
    from snrmoe_lib.ceiling.stars import lattice_axes, sample_lattice

    m = get_model("calibrated")

    class Raw:
        def normalized_flux(self, th, table=None):
            return m.stellar(th)

    st = sample_lattice(lattice_axes([4000, 6000], 250, [1, 5], 0.5, [-2, 0.5], 0.25, [0.0], [0.0]), 3, 5)
    A = ceiling.jacobian_autograd(Raw(), st)
    h = np.array([250, 0.5, 0.25, 0.25, 0.25])
    err = [np.median(np.linalg.norm(ceiling.jacobian_fd(Raw(), st, h * s) - A, axis=1) / np.linalg.norm(A, axis=1))
           for s in (1.0, 0.25)]
    assert err[1] < err[0] / 8, err
    with pytest.raises(ValueError, match="positive"):
        ceiling.jacobian_fd(Raw(), st, [1.0, 1.0])


def test_lattice_ceiling_checks_on_few_stars():
    from snrmoe_lib.analyses import k1_ceiling
    from snrmoe_lib.config import params_from_dict

    p = params_from_dict({"name": "unit", "fisher": {"n_stars": 6, "fd_check_stars": 4, "fd_halvings": 1,
                                                     "mags": [21.5, 22.5]}})
    m = get_model("calibrated")
    lc = k1_ceiling.lattice_ceiling(p, m)
    tab = k1_ceiling.magnitude_table(lc.frame, lc.var_logg, n_boot=20)
    assert (tab["r2_3d_lo"] <= tab["r2_3d"]).all() and (tab["r2_3d"] <= tab["r2_3d_hi"]).all()
    assert (tab["r2_5d"] <= tab["r2_3d"] + 1e-12).all()
    assert k1_ceiling.schur_vs_inverse(lc, p)["max_rel_diff"].max() < 1e-8
    sc = k1_ceiling.error_scaling(lc, p).set_index(["error_scale", "mag"])
    # σ × 2 doubles σ_CRLB exactly
    np.testing.assert_allclose(sc.loc[(2.0, 21.5), "sigma_3d"], 2 * sc.loc[(1.0, 21.5), "sigma_3d"], rtol=1e-9)
    conv, _ = k1_ceiling.fd_convergence(p, m, n_boot=10)
    assert set(conv["step_factor"]) == {1.0, 0.5} and (conv["median_abs_dev"] < 0.2).all()


def test_map_fit_recovers_noise_free_labels_and_laplace_sigma():
    import torch

    from snrmoe_lib.ceiling.template_fit import LabelPrior, map_fit

    m = get_model("calibrated")
    spec = MockSpec()
    table = grid_table(MockSpec(mode="grid", teff=[4500, 5000], log_g=[2, 3], m_h=[-1, -0.5], grid_teff_step=500,
                                grid_log_g_step=1, grid_m_h_step=0.5), 21.5).iloc[[0, 5]].reset_index(drop=True)
    truth = table[list(PARAM_NAMES)].to_numpy(float)
    with torch.no_grad():
        y = m.normalized_flux(torch.as_tensor(truth), table).numpy()
    sigma = np.full_like(y, 0.02)
    lo = np.array([3750, 1.0, -2.5, -0.25, -0.5]); hi = np.array([6000, 5.0, 0.75, 0.5, 0.5])
    flat = LabelPrior("gaussian", (lo + hi) / 2, (hi - lo) * 100, lo, hi)  # a nearly flat prior
    start = truth + np.array([150.0, 0.3, 0.2, 0.05, 0.05])
    fit = map_fit(m, table, y, sigma, None, flat, start[None], n_iter=15)
    np.testing.assert_allclose(fit.theta[:, 1], truth[:, 1], atol=0.01)
    # Laplace σ of log g = the marginal CRLB of the noise-free Jacobian (the prior adds nothing)
    J = ceiling.jacobian_autograd(m, table)
    crlb = ceiling.marginal_crlb(ceiling.fisher_matrix(J, sigma), "log_g", NUIS_5D)
    np.testing.assert_allclose(fit.sigma[:, 1], np.sqrt(crlb), rtol=0.05)
    # the sampling prior keeps every label inside its range
    beta = LabelPrior("sampling", (lo + hi) / 2, (hi - lo) / 4, lo, hi)
    fit2 = map_fit(m, table, y + 0.3 * np.random.default_rng(0).standard_normal(y.shape), sigma * 15, None, beta,
                   start[None], n_iter=5)
    assert np.all(fit2.theta >= lo) and np.all(fit2.theta <= hi) and np.isfinite(fit2.sigma).all()
