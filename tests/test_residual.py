"""The residual mixture: a frozen global model plus per-bin correctors of its residuals."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from snrmoe_lib.evaluation.metrics import r2
from snrmoe_lib.models.boosted import BoostedRegressor
from snrmoe_lib.models.residual import ResidualMixture
from snrmoe_lib.models.ridge import StreamingRidge
from snrmoe_lib.models.routing import ColumnRouter


def _data(n, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 5))
    b = (X[:, 0] > 0).astype(np.int64)
    # one shared linear trend plus a bin-specific linear term a single linear model cannot fit
    y = X[:, 1] + np.where(b == 1, 2.0 * X[:, 2], -2.0 * X[:, 2]) + 0.1 * g.normal(size=n)
    return X, y, b


def test_correctors_fix_what_the_global_model_misses():
    X, y, b = _data(3000)
    Xv, yv, bv = _data(800, seed=1)
    Xt, yt, bt = _data(800, seed=2)
    base = StreamingRidge(alpha=1.0).fit(X, y)
    m = ResidualMixture(base=base, prefit=True, n_bins=2).fit(X, y, bins=b, X_val=Xv, y_val=yv, bins_val=bv)
    assert m.base_ is base  # frozen: the given model itself, not refitted
    hard = m.predict(Xt, bins=bt)
    assert r2(yt, hard) > r2(yt, base.predict(Xt)) + 0.3
    one_hot = np.eye(2)[bt]
    np.testing.assert_allclose(m.predict(Xt, proba=one_hot), hard)
    half = m.predict(Xt, proba=np.full((len(yt), 2), 0.5))
    np.testing.assert_allclose(half, m.predict_base(Xt) + m.predict_corrections(Xt).mean(axis=1))


def test_light_correctors_stay_near_zero_where_nothing_is_left():
    g = np.random.default_rng(3)
    X = g.normal(size=(2000, 4))
    b = (X[:, 0] > 0).astype(np.int64)
    y = X @ np.array([0.0, 1.0, -1.0, 0.5]) + 0.5 * g.normal(size=2000)
    Xv = g.normal(size=(600, 4))
    yv = Xv @ np.array([0.0, 1.0, -1.0, 0.5]) + 0.5 * g.normal(size=600)
    m = ResidualMixture(base=StreamingRidge(alpha=1.0), n_bins=2).fit(X, y, bins=b, X_val=Xv, y_val=yv,
                                                                      bins_val=(Xv[:, 0] > 0).astype(np.int64))
    assert np.abs(m.predict_corrections(Xv)).mean() < 0.1


def test_boosted_base_and_boosted_correctors_with_a_router():
    X, y, b = _data(1500)
    Xv, yv, bv = _data(400, seed=1)
    m = ResidualMixture(base=BoostedRegressor(max_iter=60, n_threads=1),
                        corrector=BoostedRegressor(max_iter=30, max_leaf_nodes=7, n_threads=1),
                        router=ColumnRouter([0.0], column=0), n_bins=2)
    m.fit(X, y, X_val=Xv, y_val=yv)
    assert m.base_.early_stopped_ and all(c.early_stopped_ for c in m.correctors_.experts_)
    assert r2(yv, m.predict(Xv)) > r2(yv, m.predict_base(Xv))


def test_soft_responsibilities_fit_every_corrector_on_every_row():
    X, y, b = _data(1000)
    R = np.column_stack([1 - b, b]).astype(float) * 0.8 + 0.1
    m = ResidualMixture(base=StreamingRidge(alpha=1.0), n_bins=2).fit(X, y, responsibilities=R)
    assert m.correctors_.plan_ is None
    with pytest.raises(ValueError, match="soft responsibilities"):
        m.predict(X, bins=b)
    assert m.predict(X, proba=R).shape == y.shape


def test_clear_errors():
    X, y, b = _data(200)
    with pytest.raises(ValueError, match="prefit=True needs a fitted base"):
        ResidualMixture(prefit=True).fit(X, y, bins=b)
    with pytest.raises(NotFittedError):
        ResidualMixture(base=StreamingRidge(), prefit=True, n_bins=2).fit(X, y, bins=b)
    with pytest.raises(ValueError, match="bins_val"):
        ResidualMixture(base=StreamingRidge(), n_bins=2).fit(X, y, bins=b, X_val=X, y_val=y)
    m = ResidualMixture(base=StreamingRidge(), n_bins=2).fit(X, y, bins=b)
    with pytest.raises(ValueError, match="weights are missing"):
        m.predict(X)
    with pytest.raises(ValueError, match="not both"):
        m.predict(X, proba=np.eye(2)[b], bins=b)
    with pytest.raises(NotFittedError):
        ResidualMixture().predict(X)
