"""Metrics: scores against scikit-learn, bootstrap intervals, per-bin tables, ΔR², ρ, seed-averaged scores."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from snrmoe_lib.evaluation import metrics as M


@pytest.fixture(scope="module")
def yp():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 5, 2000)
    good = y + 0.3 * rng.standard_normal(y.size)
    bad = y + 0.9 * rng.standard_normal(y.size)
    return y, good, bad


def test_scores_match_sklearn(yp):
    y, good, _ = yp
    assert M.r2(y, good) == pytest.approx(skm.r2_score(y, good), rel=1e-12)
    assert M.mae(y, good) == pytest.approx(skm.mean_absolute_error(y, good), rel=1e-12)
    assert M.rmse(y, good) == pytest.approx(np.sqrt(skm.mean_squared_error(y, good)), rel=1e-12)


def test_score_input_errors():
    with pytest.raises(ValueError, match="shape"):
        M.r2([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        M.mae([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="no samples"):
        M.rmse([], [])
    assert np.isnan(M.r2([2.0, 2.0], [1.0, 3.0]))  # constant labels: undefined, not 0 or -inf


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded(yp):
    y, good, _ = yp
    lo, hi = M.bootstrap_interval(y, good, n_boot=200, seed=1)
    assert lo < M.r2(y, good) < hi and hi - lo < 0.05
    assert (lo, hi) == M.bootstrap_interval(y, good, n_boot=200, seed=1)
    lo_s, hi_s = M.bootstrap_interval(y[:100], good[:100], n_boot=200, seed=1)
    assert hi_s - lo_s > hi - lo  # fewer spectra, wider interval


def test_delta_r2(yp):
    y, good, bad = yp
    assert M.delta_r2(y, good, bad) == pytest.approx(M.r2(y, good) - M.r2(y, bad))


def test_rho():
    assert M.rho(0.55, 0.5, 0.6) == pytest.approx(0.5)
    assert np.isnan(M.rho(0.55, 0.5, 0.5))
    assert np.isnan(M.rho(0.55, 0.5, 0.51, min_gap=0.02))


def test_per_bin_table_keeps_every_bin(yp):
    y, good, bad = yp
    bins = np.zeros(y.size, int)
    bins[:1000] = 1
    bins[0] = 2  # a single spectrum: kept, scored NaN
    t = M.per_bin_table(y, {"good": good, "bad": bad}, bins, ["a", "b", "c", "d"], n_boot=20)
    assert len(t) == 8 and t.groupby("model")["n"].sum().eq(y.size).all()
    assert np.isnan(t.set_index(["model", "bin"]).loc[("good", "c"), "r2"])
    assert t.set_index(["model", "bin"]).loc[("good", "d"), "n"] == 0


def test_resampled_r2_matches_a_loop(yp):
    y, good, _ = yp
    idx = M.bootstrap_indices(len(y), 5, seed=3)
    np.testing.assert_allclose(M.r2_resampled(y, good, idx), [M.r2(y[i], good[i]) for i in idx], rtol=1e-12)
    with pytest.raises(ValueError):
        M.bootstrap_indices(0, 5)


def test_seed_scores(yp):
    y, good, bad = yp
    one = M.seed_r2(y, good[None, :], n_boot=50)
    assert one["value"] == pytest.approx(M.r2(y, good))
    three = M.seed_r2(y, np.stack([good, good, bad]), n_boot=50)
    assert three["value"] == pytest.approx((2 * M.r2(y, good) + M.r2(y, bad)) / 3)
    same = M.seed_delta_r2(y, np.stack([good, bad]), np.stack([good, bad]), n_boot=50)
    assert same["value"] == 0 and same["interval"] == [0.0, 0.0]
    d = M.seed_delta_r2(y, np.stack([good, good]), np.stack([bad, bad]), n_boot=100)
    assert d["interval"][0] > 0 and len(d["per_seed"]) == 2
    with pytest.raises(ValueError, match="n_seeds"):
        M.seed_r2(y, good[:10])


def test_per_bin_seed_table(yp):
    y, good, bad = yp
    bins = (y > 3).astype(int)
    P = {"global": np.stack([bad, bad]), "oracle": np.stack([good, good])}
    t = M.per_bin_seed_table(y, P, bins, ["low", "high", "empty"], baseline="global", n_boot=30)
    assert len(t) == 6 and t.groupby("model")["n"].sum().eq(y.size).all()
    o = t[t["model"] == "oracle"].set_index("bin")
    assert (o.loc[["low", "high"], "delta_r2"] > 0).all() and np.isnan(o.loc["empty", "r2"])
    assert t[t["model"] == "global"]["delta_r2"].isna().all()
