"""Streaming Ridge: agreement with scikit-learn, grouped statistics, α path, streaming over a dataset."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_lib.data.io import DatasetWriter, open_dataset
from snrmoe_lib.data.noise import add_noise
from snrmoe_lib.models.ridge import GramStats, StreamingRidge, solve_path, stream_predict, stream_stats
from snrmoe_lib.features.flux import FluxFeatures


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n, d = 600, 40
    # features far from zero with small spread: the case where naive centring loses digits
    X = 5.0 + 0.05 * rng.standard_normal((n, d)) + 0.02 * rng.standard_normal((n, 1))
    w_true = rng.standard_normal(d)
    y = (X - 5.0) @ w_true * 10 + 0.1 * rng.standard_normal(n) + 3.0
    sw = rng.uniform(0.2, 3.0, n)
    return X, y, sw


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 100.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("solver", ["eigh", "cholesky"])
def test_agrees_with_sklearn(data, alpha, weighted, solver):
    X, y, sw = data
    w = sw if weighted else None
    ref = Ridge(alpha=alpha).fit(X, y, sample_weight=w)
    est = StreamingRidge(alpha=alpha, chunk_size=97, solver=solver).fit(X, y, sample_weight=w)
    assert _rel(est.coef_, ref.coef_) < 1e-6
    assert abs(est.intercept_ - ref.intercept_) < 1e-6 * max(1.0, abs(ref.intercept_))
    assert _rel(est.predict(X), ref.predict(X)) < 1e-6


def test_no_intercept_agrees_with_sklearn(data):
    X, y, sw = data
    ref = Ridge(alpha=0.5, fit_intercept=False).fit(X, y, sample_weight=sw)
    est = StreamingRidge(alpha=0.5, fit_intercept=False, chunk_size=50).fit(X, y, sample_weight=sw)
    assert _rel(est.coef_, ref.coef_) < 1e-6
    assert est.intercept_ == 0.0


def test_alpha_path_matches_single_solves(data):
    X, y, _ = data
    alphas = [1e-2, 1.0, 1e2, 1e4]
    stats = GramStats(X.shape[1]).update(X, y)
    path = solve_path(stats, alphas, solver="eigh")
    for i, a in enumerate(alphas):
        ref = Ridge(alpha=a).fit(X, y)
        assert _rel(path.coef[i], ref.coef_) < 1e-6
        assert abs(path.intercept[i] - ref.intercept_) < 1e-6 * abs(ref.intercept_)
    # more penalty, fewer effective degrees of freedom
    assert np.all(np.diff(path.dof) < 0)


def test_chunking_and_partial_fit_do_not_change_the_fit(data):
    X, y, sw = data
    a = StreamingRidge(alpha=1.0, chunk_size=7).fit(X, y, sample_weight=sw)
    b = StreamingRidge(alpha=1.0, chunk_size=10_000).fit(X, y, sample_weight=sw)
    c = StreamingRidge(alpha=1.0)
    for s in range(0, len(X), 123):
        c.partial_fit(X[s:s + 123], y[s:s + 123], sample_weight=sw[s:s + 123])
    assert _rel(a.coef_, b.coef_) < 1e-9
    assert _rel(c.coef_, b.coef_) < 1e-9


def test_validation_mse_from_statistics_is_exact(data):
    X, y, _ = data
    tr, va = slice(0, 400), slice(400, None)
    path = solve_path(GramStats(X.shape[1]).update(X[tr], y[tr]), [1e-3, 1e-1, 10.0, 1e3])
    vs = GramStats(X.shape[1]).update(X[va][:77], y[va][:77]).update(X[va][77:], y[va][77:])
    direct = [np.mean((y[va] - X[va] @ path.coef[i] - path.intercept[i]) ** 2) for i in range(4)]
    np.testing.assert_allclose(path.mse(vs), direct, rtol=1e-8)


def test_alpha_chosen_on_validation_and_by_gcv(data):
    X, y, _ = data
    alphas = [1e-3, 1e-1, 10.0, 1e3, 1e5]
    est = StreamingRidge(alpha=alphas).fit(X[:400], y[:400], X_val=X[400:], y_val=y[400:])
    errs = [np.mean((Ridge(alpha=a).fit(X[:400], y[:400]).predict(X[400:]) - y[400:]) ** 2) for a in alphas]
    assert est.alpha_ == alphas[int(np.argmin(errs))]
    gcv = StreamingRidge(alpha=alphas).fit(X[:400], y[:400])
    assert gcv.alpha_ in alphas and gcv.alpha_ < 1e5  # the signal is strong: heavy shrinkage must lose


def test_grouped_statistics_sum_to_the_global_ones(data):
    X, y, sw = data
    groups = np.random.default_rng(0).integers(0, 3, len(y))
    g3 = GramStats(X.shape[1], 3)
    for s in range(0, len(y), 100):
        g3.update(X[s:s + 100], y[s:s + 100], groups=groups[s:s + 100], sample_weight=sw[s:s + 100])
    one = GramStats(X.shape[1]).update(X, y, sample_weight=sw)
    tot = g3.total()
    assert tot.count_[0] == len(y)
    # the raw sums differ by the shift (first chunk's mean); the centred Gram does not
    np.testing.assert_allclose(tot.centered(0)["C"], one.centered(0)["C"], rtol=1e-9, atol=1e-12)
    assert _rel(solve_path(tot, [1.0]).coef, solve_path(one, [1.0]).coef) < 1e-8
    # each group alone is the Ridge of its rows
    for g in range(3):
        sel = groups == g
        ref = Ridge(alpha=1.0).fit(X[sel], y[sel], sample_weight=sw[sel])
        assert _rel(solve_path(g3, [1.0], g=g).coef[0], ref.coef_) < 1e-6
    # collapse: groups {0, 2} together
    m = g3.collapse([0, 1, 0])
    sel = groups != 1
    ref = Ridge(alpha=1.0).fit(X[sel], y[sel], sample_weight=sw[sel])
    assert _rel(solve_path(m, [1.0], g=0).coef[0], ref.coef_) < 1e-6


def test_merge_with_different_shifts(data):
    X, y, _ = data
    a = GramStats(X.shape[1]).update(X[:300], y[:300])
    b = GramStats(X.shape[1]).update(X[300:] + 0.0, y[300:])
    assert not np.array_equal(a.shift_, b.shift_)
    a.merge(b)
    ref = Ridge(alpha=0.1).fit(X, y)
    assert _rel(solve_path(a, [0.1]).coef[0], ref.coef_) < 1e-6


def test_soft_weights_fill_every_group(data):
    X, y, _ = data
    W = np.random.default_rng(2).dirichlet([1.0, 1.0, 1.0], size=len(y))
    st = GramStats(X.shape[1], 3).update(X, y, sample_weight=W)
    for g in range(3):
        ref = Ridge(alpha=0.3).fit(X, y, sample_weight=W[:, g])
        assert _rel(solve_path(st, [0.3], g=g).coef[0], ref.coef_) < 1e-6


def test_memory_does_not_grow_with_rows(data):
    X, y, _ = data
    small = GramStats(X.shape[1]).update(X[:50], y[:50])
    big = GramStats(X.shape[1])
    for _ in range(5):
        big.update(X, y)
    assert small.nbytes() == big.nbytes()


@pytest.mark.parametrize("bad, match", [
    (dict(X=np.full((5, 3), np.nan)), "NaN"),
    (dict(X=np.ones(5)), "2-D"),
    (dict(y=np.ones(4)), "4 values"),
    (dict(sample_weight=-np.ones(5)), "non-negative"),
    (dict(groups=np.array([0, 1, 2, 3, 0])), r"\[0, 2\)"),
])
def test_bad_input_is_named(bad, match):
    args = dict(X=np.ones((5, 3)), y=np.ones(5), groups=np.zeros(5, int), sample_weight=None) | bad
    with pytest.raises(ValueError, match=match):
        GramStats(3, 2).update(args["X"], args["y"], groups=args["groups"], sample_weight=args["sample_weight"])


def test_solver_errors():
    st = GramStats(3, 2).update(np.random.default_rng(0).random((10, 3)), np.arange(10.0), groups=np.zeros(10, int))
    with pytest.raises(ValueError, match="no rows"):
        solve_path(st, [1.0], g=1)
    with pytest.raises(ValueError, match=">= 0"):
        solve_path(st, [-1.0])
    with pytest.raises(ValueError, match="solver"):
        solve_path(st, [1.0], solver="qr")
    with pytest.raises(ValueError, match="features"):
        StreamingRidge().fit(np.ones((4, 3)), np.arange(4.0)).predict(np.ones((2, 5)))


def test_sklearn_pipeline_and_clone(data):
    X, y, _ = data
    pipe = Pipeline([("scale", StandardScaler()), ("ridge", StreamingRidge(alpha=2.0))]).fit(X, y)
    ref = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=2.0))]).fit(X, y)
    assert _rel(pipe.predict(X), ref.predict(X)) < 1e-6
    c = clone(StreamingRidge(alpha=[1.0, 2.0], solver="eigh"))
    assert c.get_params()["alpha"] == [1.0, 2.0] and not hasattr(c, "coef_")
    assert pipe.score(X, y) > 0.9


def test_flux_features():
    X = np.arange(24.0).reshape(2, 12)
    np.testing.assert_allclose(FluxFeatures(4).fit_transform(X), X.reshape(2, 3, 4).mean(axis=2))
    assert FluxFeatures(1).transform(X) is X or np.array_equal(FluxFeatures(1).transform(X), X)
    with pytest.raises(ValueError, match="multiple"):
        FluxFeatures(5).transform(X)


# ------------------------------------------------------------------------- streaming over a dataset


@pytest.fixture(scope="module")
def linear_dataset(tmp_path_factory):
    """A pfsspec file where log g moves a few pixels linearly and the error varies per spectrum."""
    rng = np.random.default_rng(5)
    n, p = 300, 48
    log_g = rng.uniform(1, 5, n)
    template = np.sin(np.linspace(0, 6, p))
    flux = (1.0 + 0.05 * (log_g[:, None] - 3.0) * template).astype(np.float32)
    error = (rng.uniform(0.02, 0.2, (n, 1)) * np.ones(p)).astype(np.float32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": log_g, "M_H": rng.uniform(-2.5, 0.75, n)})
    path = tmp_path_factory.mktemp("ridge") / "lin.h5"
    with DatasetWriter(path, n, np.linspace(7100, 8850, p)) as w:
        w.write(flux, error, params, mask=np.zeros((n, p), np.int32))
    return open_dataset(path)


def test_stream_stats_equals_in_memory_fit(linear_dataset):
    ds = linear_dataset
    rows = np.arange(0, ds.n, 2)
    feats = FluxFeatures(2)
    s_small, info = stream_stats(ds, rows, noise_level=1.0, seed=3, features=feats, chunk_size=17)
    s_big, _ = stream_stats(ds, rows, noise_level=1.0, seed=3, features=feats, chunk_size=1000)
    c = ds.load(rows)
    X = feats.transform(add_noise(c.flux, c.error, 1.0, rows, 3))
    ref = Ridge(alpha=0.01).fit(X, c.params["log_g"])
    for s in (s_small, s_big):
        assert _rel(solve_path(s, [0.01]).coef[0], ref.coef_) < 1e-6
    np.testing.assert_array_equal(info["row"], rows)
    path = solve_path(s_small, [0.01])
    pred, pinfo = stream_predict(ds, rows, path.coef, path.intercept, noise_level=1.0, seed=3, features=feats,
                                 chunk_size=50)
    np.testing.assert_allclose(pred[:, 0], ref.predict(X), rtol=1e-6, atol=1e-8)
    assert np.corrcoef(pred[:, 0], pinfo["y"])[0, 1] > 0.9  # the signal is learnable


def test_stream_stats_errors(linear_dataset):
    with pytest.raises(KeyError, match="not_a_column"):
        stream_stats(linear_dataset, np.arange(10), noise_level=1.0, seed=0, target="not_a_column")
    with pytest.raises(ValueError, match="multiple"):
        stream_stats(linear_dataset, np.arange(10), noise_level=1.0, seed=0, features=FluxFeatures(5))


def test_one_alpha_path_solve_serves_both_fitters():
    from snrmoe_lib.models.ridge import DEFAULT_ALPHAS, AlphaPathRidge, eigen_ridge_path

    assert AlphaPathRidge().get_params()["alphas"] == DEFAULT_ALPHAS
    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 6))
    lam, V = np.linalg.eigh(A.T @ A)
    proj = V.T @ (A.T @ rng.standard_normal((40, 2)))
    alphas = np.array([0.0, 1e-2, 1.0, 1e2])
    tol = lam.max() * 40 * np.finfo(float).eps
    stacked = eigen_ridge_path(lam, V, proj, alphas, tol)
    one_by_one = eigen_ridge_path(lam, V, proj, alphas, tol, per_alpha=True)
    assert stacked.shape == one_by_one.shape == (4, 6, 2)
    assert np.allclose(stacked, one_by_one, rtol=1e-12, atol=0)
    for i, a in enumerate(alphas):  # the normal equations, solved directly
        assert np.allclose(stacked[i], np.linalg.solve(A.T @ A + a * np.eye(6), V @ proj), rtol=1e-9)
