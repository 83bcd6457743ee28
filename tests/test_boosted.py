"""Boosted trees: early stopping on the given validation rows only, the row cap, use as SNR experts."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from snrmoe_lib.evaluation.metrics import r2
from snrmoe_lib.models.boosted import BoostedRegressor, SubsampleWarning, boosted_experts
from snrmoe_lib.models.experts import BinnedExperts
from snrmoe_lib.models.ridge import StreamingRidge


def _data(n, seed=0):
    g = np.random.default_rng(seed)
    X = g.normal(size=(n, 6))
    b = (X[:, 0] > 0).astype(np.int64)
    y = np.where(b == 1, np.sin(2 * X[:, 1]), X[:, 2] ** 2) + 0.1 * g.normal(size=n)
    return X, y, b


def test_early_stopping_uses_the_given_validation_rows():
    X, y, _ = _data(1500)
    Xv, yv, _ = _data(400, seed=1)
    m = BoostedRegressor(max_iter=400, n_iter_no_change=5, n_threads=1).fit(X, y, X_val=Xv, y_val=yv)
    assert m.early_stopped_ and m.n_iter_ < 400
    # scikit-learn's internal split is never used: the model records the validation scores of our rows
    assert len(m.model_.validation_score_) == m.n_iter_ + 1
    again = BoostedRegressor(max_iter=400, n_iter_no_change=5, n_threads=1).fit(X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(m.predict(Xv), again.predict(Xv))  # reproducible
    assert r2(yv, m.predict(Xv)) > 0.8


def test_without_validation_rows_it_runs_every_round():
    X, y, _ = _data(600)
    m = BoostedRegressor(max_iter=17, n_threads=1).fit(X, y)
    assert not m.early_stopped_ and m.n_iter_ == 17


def test_more_rows_than_the_cap_subsample_with_a_warning():
    X, y, _ = _data(900)
    with pytest.warns(SubsampleWarning, match="max_train_rows=300"):
        m = BoostedRegressor(max_iter=5, max_train_rows=300, n_threads=1).fit(X, y)
    assert m.subsampled_ and m.n_train_used_ == 300
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsampleWarning)
        m2 = BoostedRegressor(max_iter=5, max_train_rows=None, n_threads=1).fit(X, y)
    assert not m2.subsampled_ and m2.n_train_used_ == 900


@pytest.mark.parametrize("kw, match", [({"max_train_rows": 1}, "max_train_rows"), ({"max_features": 0.0}, "max_features")])
def test_bad_hyperparameters_are_named(kw, match):
    X, y, _ = _data(100)
    with pytest.raises(ValueError, match=match):
        BoostedRegressor(**kw).fit(X, y)


def test_half_a_validation_set_is_an_error_and_unfitted_predict_raises():
    X, y, _ = _data(100)
    with pytest.raises(ValueError, match="X_val and y_val"):
        BoostedRegressor().fit(X, y, X_val=X)
    with pytest.raises(NotFittedError):
        BoostedRegressor().predict(X)


def test_as_snr_experts_each_expert_stops_on_its_own_bin():
    X, y, b = _data(2000)
    Xv, yv, bv = _data(600, seed=1)
    ex = boosted_experts(n_bins=2, max_iter=300, n_iter_no_change=5, n_threads=1)
    ex.fit(X, y, bins=b, validation=(Xv, yv, bv))
    assert all(e.early_stopped_ for e in ex.experts_) and ex.global_.early_stopped_
    seen = []
    orig = BoostedRegressor.fit

    def spy(self, X, y, sample_weight=None, X_val=None, y_val=None, sample_weight_val=None):
        seen.append(None if X_val is None else len(X_val))
        return orig(self, X, y, sample_weight, X_val, y_val, sample_weight_val)

    BoostedRegressor.fit = spy
    try:
        ex.fit(X, y, bins=b, validation=(Xv, yv, bv))
    finally:
        BoostedRegressor.fit = orig
    assert seen == [int((bv == 0).sum()), int((bv == 1).sum()), len(bv)]  # expert 0, expert 1, global
    # the experts of the two regimes beat one global model of the same kind on routed rows
    assert r2(yv, ex.predict(Xv, bins=bv)) > r2(yv, ex.predict_global(Xv)) - 0.02


def test_binned_experts_validation_chooses_ridge_alpha_per_bin():
    X, y, b = _data(1500)
    Xv, yv, bv = _data(500, seed=1)
    ex = BinnedExperts(estimator=StreamingRidge(alpha=[1e-3, 1e6]), n_bins=2, min_count=10)
    ex.fit(X, y, bins=b, validation=(Xv, yv, bv))
    assert {float(e.alpha_) for e in ex.experts_} <= {1e-3, 1e6}
    with pytest.raises(ValueError, match="validation rows disagree"):
        ex.fit(X, y, bins=b, validation=(Xv, yv[:10], bv))
    with pytest.raises(ValueError, match="validation must be"):
        ex.fit(X, y, bins=b, validation=(Xv, yv))
