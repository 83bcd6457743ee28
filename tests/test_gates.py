"""Gates: validated probabilities, routing only into bins with an expert, learning on separable data."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from snrmoe_lib.models.gates import (GateError, LogisticGate, MLPGate, RegressionGate, check_labels, check_proba,
                              make_gate)
from snrmoe_lib.features.quality import make_compressor


def _snr_problem(n: int = 600, seed: int = 0):
    """Quality features (log SNR + a nuisance) and the SNR bin of each spectrum (edges 2, 4, 7)."""
    rng = np.random.default_rng(seed)
    snr = np.exp(rng.uniform(np.log(1.0), np.log(12.0), n))
    X = np.column_stack([-np.log(snr) + 0.02 * rng.standard_normal(n), rng.standard_normal(n)])
    return X, np.digitize(snr, [2.0, 4.0, 7.0], right=True)


# ------------------------------------------------------------------ validation


def test_check_proba_accepts_valid_rows():
    P = np.array([[0.2, 0.8], [1.0, 0.0]])
    assert np.array_equal(check_proba(P, 2), P)


@pytest.mark.parametrize("P, match", [
    (np.array([[0.2, 0.7]]), "sum to one"),
    (np.array([[np.nan, 1.0]]), "NaN"),
    (np.array([[-0.5, 1.5]]), "negative"),
    (np.array([0.5, 0.5]), "2-D"),
])
def test_check_proba_rejects_bad_probabilities(P, match):
    with pytest.raises(GateError, match=match):
        check_proba(P)


def test_check_proba_rejects_a_bin_without_expert():
    with pytest.raises(GateError, match="no expert|3 experts"):
        check_proba(np.full((2, 4), 0.25), n_experts=3)


def test_labels_naming_a_bin_without_expert_are_an_error():
    with pytest.raises(GateError, match="no expert"):
        check_labels(np.array([0, 1, 2, 3]), n_classes=3)
    with pytest.raises(GateError, match=r"expert\(s\) \[1\] have no training spectra"):
        check_labels(np.array([0, 0, 2, 2]), n_classes=3)
    with pytest.raises(GateError, match="integer"):
        check_labels(np.array([0.5, 1.0]))


def test_gate_fit_refuses_a_bin_without_expert():
    X, y = _snr_problem(100)
    with pytest.raises(GateError, match="no expert"):
        LogisticGate(n_classes=3).fit(X, y)  # y holds bin 3, but only 3 experts (0..2)


# ------------------------------------------------------------------ classification gates


@pytest.mark.parametrize("gate", [LogisticGate(C=10.0), MLPGate(hidden=16, epochs=300, learning_rate=0.03)])
def test_gates_learn_the_snr_bin(gate):
    X, y = _snr_problem(600, seed=0)
    Xt, yt = _snr_problem(400, seed=1)
    g = clone(gate).fit(X, y)
    P = g.predict_proba(Xt)
    assert P.shape == (400, 4)
    assert np.allclose(P.sum(axis=1), 1.0)
    acc = np.mean(g.predict(Xt) == yt)
    assert acc > 0.9, acc
    # a gate that only sees the nuisance feature cannot do better than the majority bin
    g0 = clone(gate).fit(X[:, 1:], y)
    assert np.mean(g0.predict(Xt[:, 1:]) == yt) < acc - 0.3


def test_mlp_gate_is_seeded_and_pickles_without_torch_state():
    X, y = _snr_problem(300)
    a = MLPGate(hidden=8, epochs=50, seed=3).fit(X, y)
    b = MLPGate(hidden=8, epochs=50, seed=3).fit(X, y)
    c = MLPGate(hidden=8, epochs=50, seed=4).fit(X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))
    assert a.loss_[-1] < a.loss_[0]
    r = pickle.loads(pickle.dumps(a))
    assert np.array_equal(r.predict_proba(X), a.predict_proba(X))


def test_gate_in_a_pipeline_after_a_compressor():
    rng = np.random.default_rng(0)
    scale = np.exp(rng.uniform(-1, 1, 200))
    sigma = scale[:, None] * (0.2 + 0.01 * rng.random((200, 32)))
    y = np.digitize(scale, [0.6, 1.6])
    pipe = Pipeline([("q", make_compressor("S4")), ("gate", LogisticGate(C=100.0))]).fit(sigma, y)
    assert np.mean(pipe.predict(sigma) == y) > 0.9
    assert pipe.predict_proba(sigma).shape == (200, 3)


def test_gate_rejects_wrong_feature_count_and_nan():
    X, y = _snr_problem(100)
    g = LogisticGate().fit(X, y)
    with pytest.raises(GateError, match="fitted on 2"):
        g.predict_proba(X[:, :1])
    X2 = X.copy()
    X2[0, 0] = np.nan
    with pytest.raises(GateError, match="NaN"):
        g.predict_proba(X2)


def test_make_gate_kinds():
    assert isinstance(make_gate("logistic"), LogisticGate)
    assert isinstance(make_gate("mlp"), MLPGate)
    with pytest.raises(GateError, match="unknown gate kind"):
        make_gate("forest")


# ------------------------------------------------------------------ regression gate


def _two_experts(n: int, seed: int):
    """Expert 0 is accurate where q < 0, expert 1 where q > 0."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1, 1, n)
    y = rng.normal(3.0, 1.0, n)
    good, bad = 0.1 * rng.standard_normal(n), 1.0 * rng.standard_normal(n)
    P = np.column_stack([y + np.where(q < 0, good, bad), y + np.where(q > 0, good, bad)])
    return q[:, None], y, P


def test_regression_gate_learns_which_expert_to_trust():
    q, y, P = _two_experts(800, 0)
    qt, yt, Pt = _two_experts(800, 1)
    g = RegressionGate(hidden=8, epochs=400, learning_rate=0.05).fit(q, y, expert_pred=P)
    W = g.predict_proba(qt)
    assert np.allclose(W.sum(axis=1), 1.0)
    mse = np.mean((g.predict(qt, expert_pred=Pt) - yt) ** 2)
    uniform = np.mean((Pt.mean(axis=1) - yt) ** 2)
    assert mse < 0.5 * uniform, (mse, uniform)
    assert W[qt[:, 0] < -0.3, 0].mean() > 0.8 and W[qt[:, 0] > 0.3, 1].mean() > 0.8
    assert g.loss_[-1] < g.loss_[0]


def test_regression_gate_needs_the_frozen_experts():
    q, y, P = _two_experts(50, 0)
    with pytest.raises(GateError, match="expert_pred"):
        RegressionGate().fit(q, y)
    g = RegressionGate(hidden=0, epochs=20).fit(q, y, expert_pred=P)
    with pytest.raises(GateError, match="mixes 2 experts"):
        g.predict(q, expert_pred=np.column_stack([P, P]))
    with pytest.raises(GateError, match="expert_pred"):
        g.predict(q)
