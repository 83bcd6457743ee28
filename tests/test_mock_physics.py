"""The calibrated mock: interface, determinism, autograd vs finite differences, physical trends."""
import numpy as np
import pandas as pd
import pytest
import torch

from snrmoe_lib.config import MockSpec
from snrmoe_lib.data.io import open_dataset
from snrmoe_lib.data.mock import PARAM_NAMES, get_model, simulate
from snrmoe_lib.data.mock.calibrated import CalibratedMock
from snrmoe_lib.data.mock.instrument import MASK_BITS

CAT_BANDS = [(8484.0, 8513.0), (8522.0, 8562.0), (8642.0, 8682.0)]  # Cenarro et al. 2001


@pytest.fixture(scope="module")
def model():
    return get_model("calibrated")


def stars(**kw) -> pd.DataFrame:
    """A params table with the real grid's fixed conditions; keyword arrays broadcast."""
    d = dict(T_eff=4500.0, log_g=2.0, M_H=-1.0, a_M=0.2, C_M=0.0, mag=21.5, seeing=1.0, zenith=22.5,
             field_angle=0.325, n_exp=12, t_exp=900.0, moon=0.0)
    d.update(kw)
    n = max(np.size(v) for v in d.values())
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v, float), (n,)) for k, v in d.items()})


def theta(df):
    return torch.as_tensor(df[list(PARAM_NAMES)].to_numpy(), dtype=torch.float64)


def ew(model, df, select, bands):
    """Equivalent widths in Å of the ``select``-ed lines, summed over wavelength ``bands``, per star."""
    r = model.star.line_ratio(theta(df), select).detach().cpu().numpy()
    inside = np.zeros(len(model.wave), bool)
    for lo, hi in bands:
        inside |= (model.wave >= lo) & (model.wave <= hi)
    return ((1.0 - r) * inside).sum(axis=1) * (model.wave[1] - model.wave[0])


def test_grid_and_registry(model):
    assert isinstance(model, CalibratedMock) and get_model("calibrated") is model
    assert model.wave.shape == (4096,)
    assert model.wave[0] == pytest.approx(7100.2) and model.wave[-1] == pytest.approx(8849.8)
    assert np.diff(model.wave).mean() == pytest.approx(0.4272, abs=1e-4)


def test_observation_shapes_and_units(model):
    df = stars(T_eff=[3800.0, 4800.0, 5900.0], log_g=[1.0, 3.0, 4.5], mag=[20.5, 21.5, 22.5])
    obs = model.observe(df, np.arange(3), seed=0)
    assert obs.flux.shape == obs.error.shape == obs.mask.shape == (3, 4096)
    assert obs.flux.dtype == np.float32 and obs.mask.dtype == np.int32
    assert np.all(np.isfinite(obs.flux)) and np.all(obs.error > 0)
    np.testing.assert_allclose(np.median(obs.flux, axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(obs.mask)) <= {0, *MASK_BITS.values()} and (obs.mask > 0).sum(axis=1).min() > 10
    snr = obs.columns["snr"]
    assert snr.shape == (3,) and snr[0] > snr[1] > snr[2] > 0   # brighter star, higher SNR
    # the stored flux is the differentiable model's, up to float32 rounding
    ref = model.normalized_flux(theta(df), df).numpy()
    np.testing.assert_allclose(obs.flux, ref, rtol=2e-5, atol=2e-6)


def test_bad_input_is_named(model):
    with pytest.raises(ValueError, match="error_mode"):
        model.observe(stars(), np.arange(1), 0, error_mode="noisy")
    with pytest.raises(KeyError, match="log_g"):
        model.observe(stars().drop(columns="log_g"), np.arange(1), 0)
    with pytest.raises(KeyError, match="seeing"):
        model.observe(stars().drop(columns="seeing"), np.arange(1), 0)
    with pytest.raises(ValueError, match="shape"):
        model.stellar(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="row numbers"):
        model.observe(stars(), np.arange(2), 0)


def test_determinism_across_chunks_and_batches():
    df = stars(T_eff=np.linspace(3800, 6000, 7), log_g=np.linspace(1, 5, 7), mag=np.linspace(20.5, 22.5, 7))
    rows = np.arange(100, 107)
    small = CalibratedMock(batch_size=3)
    big = CalibratedMock(batch_size=250)
    for mode in ("clean", "estimated"):
        a = big.observe(df, rows, seed=5, error_mode=mode)
        b = small.observe(df, rows, seed=5, error_mode=mode)
        c = big.observe(df.iloc[2:5].reset_index(drop=True), rows[2:5], seed=5, error_mode=mode)
        np.testing.assert_allclose(a.flux, b.flux, rtol=1e-6)
        np.testing.assert_allclose(a.error, b.error, rtol=1e-6)
        np.testing.assert_allclose(a.error[2:5], c.error, rtol=1e-6)
    est = big.observe(df, rows, seed=5, error_mode="estimated").error
    cln = big.observe(df, rows, seed=5, error_mode="clean").error
    assert not np.array_equal(est, cln)
    ratio = np.median(est / cln, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.05)   # one noisy realisation: same level, different pixels
    other = big.observe(df, rows, seed=6, error_mode="estimated").error
    assert not np.array_equal(est, other)


def test_estimated_errors_share_the_noise_of_the_noisy_flux():
    # σ̂ is the error of the realisation flux + z·σ with z the protocol's own draw at the same seed:
    # where the counts fluctuated up (z > 0) the estimated variance is larger, pixel by pixel
    from snrmoe_lib.data.noise import row_normals
    df = stars(T_eff=np.linspace(3800, 6000, 5), log_g=np.linspace(1, 5, 5), mag=np.full(5, 20.5))
    rows = np.arange(40, 45)
    m = CalibratedMock(batch_size=250)
    est = m.observe(df, rows, seed=5, error_mode="estimated").error.astype(np.float64)
    cln = m.observe(df, rows, seed=5, error_mode="clean").error.astype(np.float64)
    z = row_normals(rows, est.shape[1], 5).astype(np.float64)
    rel = (est ** 2 / cln ** 2 - 1).ravel()
    assert np.corrcoef(rel, z.ravel())[0, 1] > 0.5
    z_other = row_normals(rows, est.shape[1], 6).astype(np.float64)
    assert abs(np.corrcoef(rel, z_other.ravel())[0, 1]) < 0.05


def test_determinism_across_workers(tmp_path):
    kw = dict(n=10, seed=3, model="calibrated", error_mode="estimated")
    a = simulate(MockSpec(chunk_size=10, workers=1, **kw), tmp_path / "a.h5", progress=False)[0]
    b = simulate(MockSpec(chunk_size=3, workers=2, **kw), tmp_path / "b.h5", progress=False)[0]
    da, db = open_dataset(a).load(), open_dataset(b).load()
    np.testing.assert_allclose(da.flux, db.flux, rtol=1e-6)
    np.testing.assert_allclose(da.error, db.error, rtol=1e-6)
    np.testing.assert_array_equal(da.mask, db.mask)
    assert "moon" in da.params and "snr" in da.params


def test_autograd_agrees_with_central_differences(model):
    df = stars(T_eff=[4100.0, 5200.0], log_g=[1.7, 4.3], M_H=[-1.2, 0.1], a_M=[0.3, 0.0], C_M=[0.1, -0.2])
    th = theta(df)
    cols = []
    for k in range(5):   # forward mode: one Jacobian-vector product per parameter for all stars
        t = torch.zeros_like(th)
        t[:, k] = 1.0
        cols.append(torch.func.jvp(lambda x: model.normalized_flux(x, df), (th,), (t,))[1].numpy())
    J = np.stack(cols, axis=-1)
    steps = np.array([0.05, 1e-5, 1e-5, 1e-5, 1e-5])  # small: the median normalisation has kinks
    for k in range(5):
        d = torch.zeros_like(th)
        d[:, k] = steps[k]
        fd = ((model.normalized_flux(th + d, df) - model.normalized_flux(th - d, df)) / (2 * steps[k])).numpy()
        err = np.linalg.norm(fd - J[:, :, k], axis=1) / np.linalg.norm(J[:, :, k], axis=1)
        assert np.all(err < 1e-3), (PARAM_NAMES[k], err)


def test_cat_rises_with_metallicity_on_the_giant_branch(model):
    ll = model.star.lines
    cat = (ll.element == "Ca") & (ll.stage == 2)
    mh = np.linspace(-2.0, -0.5, 7)   # the range of the red-giant-branch calibrations
    w = ew(model, stars(T_eff=4500.0, log_g=1.5, M_H=mh, a_M=0.3), cat, CAT_BANDS)
    slope = np.polyfit(mh, w, 1)[0]
    assert 2.5 <= slope <= 5.0, slope   # ≈ 3–4 Å per dex (Simpson 2020)
    assert np.all(np.diff(w) > 0)
    assert 4.5 <= w[np.argmin(np.abs(mh + 1.5))] <= 8.0   # ΣCaT ≈ 5.5–6.5 Å at [M/H] = −1.5


def test_cat_rises_toward_low_gravity_along_the_giant_branch(model):
    ll = model.star.lines
    cat = (ll.element == "Ca") & (ll.stage == 2)
    # a metal-poor red giant branch: cooler as gravity falls
    rgb = stars(T_eff=[5000.0, 4750.0, 4500.0, 4250.0, 4100.0], log_g=[3.5, 2.8, 2.0, 1.4, 1.0], M_H=-1.0, a_M=0.3)
    w = ew(model, rgb, cat, CAT_BANDS)
    assert np.all(np.diff(w) > 0), w


def test_gravity_sensitive_neutral_lines_strengthen_in_cool_dwarfs(model):
    ll = model.star.lines
    g = np.array([1.0, 2.5, 4.0, 5.0])
    na = ew(model, stars(T_eff=4000.0, log_g=g, M_H=0.0, a_M=0.0), ll.element == "Na", [(8170.0, 8210.0)])
    mg = ew(model, stars(T_eff=4500.0, log_g=g, M_H=0.0, a_M=0.0), np.abs(ll.wave - 8806.756) < 0.01,
            [(8790.0, 8822.0)])
    assert np.all(np.diff(na) > 0) and na[-1] > 1.5 * na[0], na
    assert np.all(np.diff(mg) >= 0) and mg[-1] > 1.3 * mg[0], mg


def test_tio_only_in_cool_stars(model):
    df = stars(T_eff=[3600.0, 3750.0, 4500.0, 5500.0], log_g=1.5, M_H=0.0, a_M=0.0)
    tio, _ = model.star.band_depths(theta(df))
    depth = 1.0 - np.exp(-tio.numpy() * model.star.band_shapes["TiO"].max())
    assert depth[0, 0] > depth[1, 0] > 0.1
    assert depth[2, 0] < 0.02 and depth[3, 0] < 1e-3


def test_moon_and_seeing_lower_the_snr(model):
    base = model.observe(stars(), np.arange(1), 0).columns["snr"][0]
    moon = model.observe(stars(moon=1.0), np.arange(1), 0).columns["snr"][0]
    bad_seeing = model.observe(stars(seeing=1.5), np.arange(1), 0).columns["snr"][0]
    more_time = model.observe(stars(n_exp=24), np.arange(1), 0).columns["snr"][0]
    assert moon < 0.9 * base and bad_seeing < base < more_time


def test_error_carries_the_spectrum_and_the_sky(model):
    """The clean error is built from noise-free counts: it leaks the stellar lines (the Hub's Q2)."""
    df = stars(T_eff=4300.0, log_g=1.5, M_H=0.0, mag=20.0)
    obs = model.observe(df, np.arange(1), 0)
    w = model.wave
    core = np.argmin(np.abs(w - 8542.1))
    near = (np.abs(w - 8570) < 5)
    # relative error is larger in the deep CaT core than in the nearby continuum
    assert (obs.error[0, core] / obs.flux[0, core]) > 1.3 * np.median(obs.error[0, near] / obs.flux[0, near])
    oh = np.argmin(np.abs(w - 8827.1))
    assert obs.error[0, oh] > 3 * np.median(obs.error[0])


def test_telluric_bands_at_their_documented_depths(model):
    """ETC / Kitt Peak at R = 5000, zenith: O2 A band 759–770 nm mean 0.65, min 0.22."""
    w, t = model.wave, model.instrument.telluric
    a = (w > 7590) & (w < 7700)
    assert 0.6 < t[a].mean() < 0.7 and 0.17 < t[a].min() < 0.27
    for lo, hi, mean in ((7150, 7350, 0.86), (8100, 8360, 0.89)):
        s = (w > lo) & (w < hi)
        assert abs(t[s].mean() - mean) < 0.04 and t[s].min() > 0.5


def test_one_sky_per_configuration(model):
    """The sky does not follow a star's own zenith or field angle; the star's own light does."""
    df = stars(zenith=[0.0, 45.0, 22.5], field_angle=[0.325, 0.325, 0.6])
    spec = model.star.spectrum(theta(df)).detach().numpy()
    k = model.counts(df, spec)
    np.testing.assert_allclose(k["sky"][0], k["sky"][1], rtol=1e-5)
    np.testing.assert_allclose(k["sky"][0], k["sky"][2], rtol=1e-5)
    a_band = np.argmin(np.abs(model.wave - 7605.0))
    assert k["obj"][1, a_band] / k["obj"][0, a_band] < 0.8 * np.median(k["obj"][1] / k["obj"][0])
    assert np.median(k["obj"][2] / k["obj"][0]) < 0.95  # vignetting and a smaller fibre at 0.6°
    # with the star's own sky (reference_zenith null), the sky follows the star's airmass
    own = CalibratedMock(overrides={"sky": {"reference_zenith": None, "reference_field_angle": None}})
    k2 = own.counts(df, spec)
    assert np.median(k2["sky"][1] / k2["sky"][0]) > 1.2


def test_seeing_is_log_normal_within_its_range():
    from snrmoe_lib.data.mock.generate import draw_conditions

    c = draw_conditions(MockSpec(n=4000, seed=3), 4000, 3)
    s = c["seeing"].to_numpy()
    assert s.min() >= 0.5 and s.max() <= 1.5 and abs(np.median(s) - 1.0) < 0.02
    assert 0.09 < np.std(np.log(s)) < 0.15
    u = draw_conditions(MockSpec(n=4000, seed=3, seeing_dist="uniform"), 4000, 3)
    assert abs(np.std(u["seeing"]) - 1 / np.sqrt(12)) < 0.02
    # the other draws do not depend on the seeing distribution
    pd.testing.assert_series_equal(c["zenith"], u["zenith"])
    assert (c["sky_offset"] == 0).all() and (c["oh_scale"] == 1).all()  # one sky per configuration
