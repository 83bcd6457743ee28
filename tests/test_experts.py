"""Binned experts: routers, the small-bin policy, pluggable experts, and the streaming Ridge oracle."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from snrmoe_lib.analyses import q1
from snrmoe_lib.models import experts as E
from snrmoe_lib.models import routing as R
from snrmoe_lib.config import params_from_dict
from snrmoe_lib.data.io import DatasetWriter, open_dataset, split_rows
from snrmoe_lib.evaluation.metrics import r2
from snrmoe_lib.data.noise import add_noise, assign_bins, snr
from snrmoe_lib.features.flux import FluxFeatures


# ------------------------------------------------------------------------------- small-bin policy


def test_plan_raise_names_the_bin():
    with pytest.raises(R.SmallBinError, match=r"H has 3"):
        R.plan_bins([50, 60, 40, 3], min_count=20, on_small_bin="raise", labels=["X", "L", "M", "H"])


def test_plan_merges_into_the_smaller_neighbour():
    plan = R.plan_bins([50, 5, 30, 40], min_count=20, on_small_bin="merge", labels=["X", "L", "M", "H"])
    assert plan.members == [[0], [1, 2], [3]]
    assert plan.expert_labels == ["X", "L+M", "H"]
    np.testing.assert_array_equal(plan.route([0, 1, 2, 3]), [0, 1, 1, 2])
    assert plan.merged


def test_plan_empty_bin_is_never_an_expert():
    plan = R.plan_bins([10, 0, 10], min_count=0, on_small_bin="merge")
    assert all(plan.counts[m].sum() > 0 for m in plan.members)
    with pytest.raises(R.SmallBinError):
        R.plan_bins([10, 0, 10], min_count=0, on_small_bin="raise")


def test_plan_all_small_raises():
    with pytest.raises(R.SmallBinError, match="all bins"):
        R.plan_bins([3, 4], min_count=20, on_small_bin="merge")


def test_plan_merges_on_the_physical_grid():
    router = R.PhysicalRouter([4500, 5250], [-1.5, -0.5])
    counts = np.full(9, 100)
    counts[4] = 2  # the centre cell; neighbours 1, 3, 5, 7
    counts[3] = 50
    plan = R.plan_bins(counts, 20, "merge", router.neighbours(), router.labels)
    assert [3, 4] in plan.members and plan.n_experts == 8


# ------------------------------------------------------------------------------------- routers


def test_physical_router_cells_and_neighbours():
    r = R.PhysicalRouter([4500, 5250], [-1.5, -0.5])
    df = pd.DataFrame({"T_eff": [4000, 4500, 4501, 6000], "M_H": [-2.0, -0.5, -1.0, 0.5]})
    np.testing.assert_array_equal(r.assign_params(df), [0, 1, 4, 8])  # right-closed, T-major
    nb = r.neighbours()
    assert nb[4] == {1, 3, 5, 7} and nb[0] == {1, 3}
    assert all(i in nb[j] for i in range(9) for j in nb[i])
    assert len(r.labels) == 9
    with pytest.raises(KeyError, match="M_H"):
        r.assign_params(df[["T_eff"]])


def test_snr_router_uses_the_noise_protocol(expert_dataset):
    ds = expert_dataset
    c = ds.load(np.arange(40))
    r = R.SNRRouter([2, 4, 7], ["X", "L", "M", "H"], "l2", noise_level=0.5)
    np.testing.assert_array_equal(r.assign(c), assign_bins(snr(c.flux, c.error, 0.5, "l2", c.mask), [2, 4, 7]))
    with pytest.raises(ValueError, match="definition"):
        R.SNRRouter([2], definition="median")


# ------------------------------------------------------------------------- in-memory, pluggable


@pytest.fixture(scope="module")
def two_regimes():
    """y depends on x with opposite slopes in two bins: one global linear model cannot fit both."""
    rng = np.random.default_rng(0)
    n = 800
    bins = rng.integers(0, 2, n)
    X = rng.standard_normal((n, 5))
    y = np.where(bins == 0, 1.0, -1.0) * X[:, 0] + 0.1 * rng.standard_normal(n)
    return X, y, bins


def test_binned_experts_beat_global_on_two_regimes(two_regimes):
    X, y, bins = two_regimes
    m = E.BinnedExperts(n_bins=2, min_count=10).fit(X, y, bins=bins)
    assert m.predict_all(X).shape == (len(y), 2)
    assert r2(y, m.predict(X, bins)) > 0.95
    assert r2(y, m.predict_global(X)) < 0.1


def test_expert_type_is_pluggable(two_regimes):
    X, y, bins = two_regimes
    m = E.BinnedExperts(estimator=Ridge(alpha=0.1), n_bins=2, min_count=10).fit(X, y, bins=bins)
    assert all(isinstance(e, Ridge) for e in m.experts_)
    ref = Ridge(alpha=0.1).fit(X[bins == 1], y[bins == 1])
    np.testing.assert_allclose(m.experts_[1].coef_, ref.coef_)


def test_one_hot_responsibilities_equal_hard_bins(two_regimes):
    X, y, bins = two_regimes
    hard = E.BinnedExperts(n_bins=2).fit(X, y, bins=bins)
    soft = E.BinnedExperts(n_bins=2).fit(X, y, responsibilities=np.eye(2)[bins])
    np.testing.assert_allclose(soft.predict_all(X), hard.predict_all(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(hard.predict_mixture(X, np.eye(2)[bins]), hard.predict(X, bins))


def test_binned_experts_errors(two_regimes):
    X, y, bins = two_regimes
    with pytest.raises(ValueError, match="exactly one"):
        E.BinnedExperts(n_bins=2).fit(X, y)
    with pytest.raises(R.SmallBinError):
        E.BinnedExperts(n_bins=3, on_small_bin="raise").fit(X, y, bins=bins)
    with pytest.raises(ValueError, match="needs each row's bin"):
        E.BinnedExperts(n_bins=2).fit(X, y, bins=bins).predict(X)
    with pytest.raises(NotFittedError):
        E.BinnedExperts(n_bins=2).predict_all(X)


def test_binned_experts_take_their_router_as_a_parameter(two_regimes):
    """With a router the experts fit and predict on X alone: they work in a Pipeline and cross_val_score."""
    X, y, bins = two_regimes
    Xb = np.column_stack([X, bins])  # the routing variable as the last column
    router = R.ColumnRouter([0.5], column=-1)
    m = E.BinnedExperts(router=router, min_count=10).fit(Xb, y)
    np.testing.assert_array_equal(m.predict(Xb), E.BinnedExperts(n_bins=2, min_count=10).fit(Xb, y, bins=bins)
                                  .predict(Xb, bins))
    pipe = Pipeline([("scale", FunctionTransformer(lambda Z: Z * [1, 1, 1, 1, 1, 1])),
                     ("moe", E.BinnedExperts(router=router, min_count=10))])
    scores = cross_val_score(pipe, Xb, y, cv=3)
    assert scores.min() > 0.95
    assert cross_val_score(Ridge(), Xb, y, cv=3).max() < 0.1  # one global model cannot do it


# ----------------------------------------------------------------------- streaming Ridge oracle


@pytest.fixture(scope="module")
def expert_dataset(tmp_path_factory):
    """log g acts on the flux with an SNR-dependent sign pattern, so SNR experts have real headroom."""
    rng = np.random.default_rng(11)
    n, p = 900, 32
    log_g = rng.uniform(1, 5, n)
    scale = rng.uniform(0.08, 0.8, n)  # L2 SNR ≈ 1 / scale: spans X, L, M, H
    t1, t2 = np.sin(np.linspace(0, 5, p)), np.cos(np.linspace(0, 7, p))
    tmpl = np.where((scale < 0.25)[:, None], t1, t2)
    flux = (1.0 + 0.2 * (log_g[:, None] - 3.0) * tmpl).astype(np.float32)
    error = (scale[:, None] * np.ones(p)).astype(np.float32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": log_g, "M_H": rng.uniform(-2.5, 0.75, n)})
    path = tmp_path_factory.mktemp("experts") / "exp.h5"
    with DatasetWriter(path, n, np.linspace(7100, 8850, p)) as w:
        w.write(flux, error, params, mask=np.zeros((n, p), np.int32))
    return open_dataset(path)


def test_oracle_stream_experts_are_ridge_on_their_bins(expert_dataset):
    ds = expert_dataset
    split = split_rows(ds.n, 600, 100, 200, seed=0)
    routers = {"snr": R.SNRRouter([2, 4, 7], ["X", "L", "M", "H"]), "phys": R.PhysicalRouter([4500, 5250], [-1.5, -0.5])}
    cfg = E.OracleSettings(noise_level=1.0, seed=4, alphas=[1e-2, 1.0, 1e2], min_count=10, chunk_size=64)
    run = E.fit_oracle_stream(ds, split, routers, cfg, features=FluxFeatures(2))
    # one model per expert plus the global one, each the Ridge of its own training rows
    m = run.models
    assert m.names[0] == "global" and len(m.names) == 1 + run.families["snr"].plan.n_experts + 9
    c = ds.load(split.train)
    X = FluxFeatures(2).transform(add_noise(c.flux, c.error, 1.0, split.train, 4))
    b = run.train_info["snr_bin"].to_numpy()
    plan = run.families["snr"].plan
    for e, col in enumerate(run.families["snr"].columns):
        sel = plan.route(b) == e
        ref = Ridge(alpha=m.alpha[col]).fit(X[sel], c.params["log_g"].to_numpy()[sel])
        np.testing.assert_allclose(m.coef[col], ref.coef_, rtol=1e-6, atol=1e-9)
    ref = Ridge(alpha=m.alpha[0]).fit(X, c.params["log_g"])
    np.testing.assert_allclose(m.coef[0], ref.coef_, rtol=1e-6, atol=1e-9)
    # oracle routing picks the expert of the true bin, and the SNR experts find the headroom
    assert run.expert_predictions("snr").shape == (len(split.test), plan.n_experts)
    y = run.y
    assert r2(y, run.oracle_prediction("snr")) > r2(y, run.global_prediction()) + 0.05


def test_fit_oracle_stream_one_pass_or_two_gives_the_same_run(expert_dataset):
    """Test features kept in memory, or predicted by a second pass when over ``cache_bytes``: same numbers."""
    ds = expert_dataset
    split = split_rows(ds.n, 600, 100, 200, seed=0)
    routers = {"snr": R.SNRRouter([2, 4, 7], ["X", "L", "M", "H"])}
    seen: dict = {"one": [], "two": []}
    runs = {}
    for key, cache in (("one", 2e9), ("two", 0)):
        cfg = E.OracleSettings(noise_level=1.0, seed=3, alphas=[1e-2, 1.0, 1e2], min_count=10, chunk_size=96,
                               predict_val=True, cache_bytes=cache)
        runs[key] = E.fit_oracle_stream(
            ds, split, routers, cfg, features=FluxFeatures(2),
            on_chunk=lambda role, nc, k=key: seen[k].extend((role, int(r)) for r in nc.rows))
    a, b = runs["one"], runs["two"]
    np.testing.assert_allclose(a.test_pred, b.test_pred, rtol=1e-12)
    np.testing.assert_allclose(a.val_pred, b.val_pred, rtol=1e-12)
    assert a.test_info.equals(b.test_info) and a.val_info.equals(b.val_info)
    # the hook sees every row of every role exactly once, in either mode
    expect = sorted([("train", int(r)) for r in split.train] + [("val", int(r)) for r in split.val]
                    + [("test", int(r)) for r in split.test])
    assert sorted(seen["one"]) == expect and sorted(seen["two"]) == expect
    assert np.array_equal(a.test_info["row"], np.sort(split.test))


def test_run_headroom_over_seeds(expert_dataset):
    p = params_from_dict({
        "data": {"path": str(expert_dataset.path), "chunk_size": 128},
        "split": {"n_train": 600, "n_val": 100, "n_test": 200, "seed": 0},
        "seeds": [0, 1, 2], "snr_bins": {"min_count": 10, "on_small_bin": "merge"},
        "ridge": {"alphas": [1e-2, 1.0, 1e2], "bin_pixels": 2}})
    split = split_rows(expert_dataset.n, 600, 100, 200, 0)
    h = q1.run_headroom(expert_dataset, split, p)
    s = h.scores(n_boot=30)
    assert h.seeds == [0, 1, 2] and len(s["delta_r2_snr"]["per_seed"]) == 3
    lo, hi = s["delta_r2_snr"]["interval"]
    assert lo <= s["delta_r2_snr"]["value"] <= hi and s["delta_r2_snr"]["value"] > 0.02
    tab = h.per_bin("snr", n_boot=20)
    assert tab.groupby("model")["n"].sum().eq(200).all()
    assert set(q1.scores_table({1.0: s})["model"]) == set(q1.HEADROOM_MODELS)
    metrics = q1.headroom_metrics({1.0: s, 0.5: s}, primary=1.0)
    assert "global_r2" in metrics and "global_r2_nl0.5" in metrics
