"""The mixture: soft/hard routing with fallback, the composed estimator, controls, streaming runs, ρ."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.analyses import q3
from snrmoe_lib.features import whitening
from snrmoe_lib.models import mixtures as moe
from snrmoe_lib.models.routing import SNRRouter
from snrmoe_lib.config import params_from_dict
from snrmoe_lib.models.gates import GateError
from snrmoe_lib.data.io import DatasetWriter, open_dataset, split_rows
from snrmoe_lib.data.noise import assign_bins, snr_l2

EDGES = [2.0, 4.0, 7.0]


# ------------------------------------------------------------------ mixing


def test_mix_soft_with_fallback_by_hand():
    W = np.array([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    P = np.array([[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]])
    g = np.array([10.0, 20.0, 30.0])
    y, fell = moe.mix(W, P)
    assert np.allclose(y, [1.2, 2.0, 2.4]) and not fell.any()
    y, fell = moe.mix(W, P, g, tau=0.6)
    assert np.allclose(y, [1.2, 20.0, 2.4]) and fell.tolist() == [False, True, False]
    assert np.allclose(moe.hard_route(W, P), [1.0, 1.0, 3.0])


def test_mix_errors_instead_of_nan():
    P = np.ones((2, 3))
    with pytest.raises(GateError, match="sum to one"):
        moe.mix(np.array([[0.5, 0.4, 0.0], [1.0, 0.0, 0.0]]), P)
    with pytest.raises(GateError, match="3 experts"):
        moe.mix(np.full((2, 4), 0.25), P)  # a 4th bin with no expert
    with pytest.raises(GateError, match="global"):
        moe.mix(np.full((2, 3), 1 / 3), P, tau=0.4)
    with pytest.raises(GateError, match="NaN"):
        moe.mix(np.full((2, 3), 1 / 3), np.full((2, 3), np.nan))


# ------------------------------------------------------------------ a synthetic dataset with an SNR spread


def _arrays(n: int, p: int = 64, seed: int = 0):
    """Flux whose lines deepen with log g; σ scaled per spectrum so the L2 SNR spans the four bins."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(7100.0, 8850.0, p)
    log_g = rng.uniform(1, 5, n)
    lines = np.exp(-0.5 * ((np.arange(p)[None, :] - np.array([[10], [30], [50]])) / 2.0) ** 2).sum(axis=0)
    flux = (1.0 - 0.08 * (log_g[:, None] - 3) * lines[None, :] + 0.01 * rng.standard_normal((n, p))).astype(np.float32)
    scale = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))  # L2 SNR ≈ 1 / (0.22 · scale): 1.5 … 15
    error = (scale[:, None] * (0.2 + 0.05 * rng.random((1, p)))).astype(np.float32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": log_g, "M_H": rng.uniform(-2, 0.5, n),
                           "mag": 21 + np.log(scale)})
    return wave, flux, error, params


@pytest.fixture(scope="module")
def snr_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("moe") / "spread.h5"
    wave, flux, error, params = _arrays(500)
    with DatasetWriter(path, len(flux), wave, with_mask=False) as w:
        w.write(flux, error, params)
    return path, flux, error, params


def _params(path, **gate):
    return params_from_dict({
        "name": "tiny", "data": {"path": str(path), "chunk_size": 128},
        "split": {"n_train": 300, "n_val": 80, "n_test": 120, "seed": 0},
        "seeds": [0, 1],
        "snr_bins": {"edges": EDGES, "labels": ["X", "L", "M", "H"], "min_count": 10},
        "ridge": {"alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0], "bin_pixels": 2},
        "gate": {"fit_n": 200, "n_flux_components": 2, "mlp_epochs": 60, "regression_epochs": 60, **gate},
        "runner": {"n_bootstrap": 50},
    })


def test_synthetic_data_spans_the_bins(snr_data):
    _, flux, error, _ = snr_data
    counts = np.bincount(assign_bins(snr_l2(flux, error), EDGES), minlength=4)
    assert (counts >= 30).all(), counts


# ------------------------------------------------------------------ the composed estimator


def _inputs(flux, error, rows, seed=0):
    rng = np.random.default_rng(seed)
    noisy = flux[rows] + error[rows] * rng.standard_normal(flux[rows].shape).astype(np.float32)
    return moe.SpectraInput(noisy, error[rows])


def test_soft_moe_fits_and_predicts_like_one_estimator(snr_data):
    _, flux, error, params = snr_data
    y = params["log_g"].to_numpy()
    bins = assign_bins(snr_l2(flux, error), EDGES)
    tr, va, te = np.arange(300), np.arange(300, 380), np.arange(380, 500)
    Xtr, Xva, Xte = (_inputs(flux, error, r, s) for s, r in enumerate((tr, va, te)))
    m = moe.SoftMoE(compressor="S4", gate="logistic", tau=0.4, min_count=10, alphas=[1e-3, 1e-2, 1e-1]).fit(
        Xtr, y[tr], bins=bins[tr])
    d = m.predict_details(Xte)
    assert d["y"].shape == (120,) and np.all(np.isfinite(d["y"]))
    assert np.allclose(d["proba"].sum(axis=1), 1.0) and d["proba"].shape[1] == m.n_experts_
    assert np.mean(np.argmax(d["proba"], 1) == m.plan_.route(bins[te])) > 0.8  # the gate finds the SNR bin
    assert np.array_equal(m.predict(Xte), d["y"])
    hard = moe.SoftMoE(compressor="S4", routing="hard", min_count=10, alphas=[1e-2]).fit(Xtr, y[tr], bins=bins[tr])
    assert np.all(np.isfinite(hard.predict(Xte)))
    reg = moe.SoftMoE(compressor="S4", gate="regression", min_count=10, alphas=[1e-2]).fit(
        Xtr, y[tr], bins=bins[tr], X_val=Xva, y_val=y[va])
    assert np.all(np.isfinite(reg.predict(Xte)))
    with pytest.raises(GateError, match="X_val"):
        moe.SoftMoE(gate="regression", min_count=10).fit(Xtr, y[tr], bins=bins[tr])


def test_soft_moe_routes_by_its_router_in_a_pipeline_and_cross_validation(snr_data):
    """The router reads the true SNR the input carries: fit(X, y) alone, so Pipeline and cross_val_score work."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import Pipeline

    _, flux, error, params = snr_data
    y = params["log_g"].to_numpy()
    snr = snr_l2(flux, error)
    rows = np.arange(300)
    X = _inputs(flux, error, rows)
    X = moe.SpectraInput(X.flux, X.sigma, snr=snr[rows])
    router = SNRRouter(EDGES, ["X", "L", "M", "H"])
    kw = dict(compressor="S4", min_count=10, alphas=[1e-2])
    m = moe.SoftMoE(router=router, **kw).fit(X, y[rows])
    ref = moe.SoftMoE(**kw).fit(X, y[rows], bins=assign_bins(snr[rows], EDGES))
    assert np.array_equal(m.predict(X), ref.predict(X))
    pipe = Pipeline([("moe", moe.SoftMoE(router=router, gate="mlp", gate_params={"epochs": 30, "hidden": 8}, **kw))])
    scores = cross_val_score(pipe, X, y[rows], cv=KFold(3))
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    # the first fold by hand, with the bins given explicitly: the same score
    tr, te = np.arange(100, 300), np.arange(100)
    by_hand = moe.SoftMoE(gate="mlp", gate_params={"epochs": 30, "hidden": 8}, **kw).fit(
        X[tr], y[rows][tr], bins=assign_bins(snr[rows][tr], EDGES))
    assert np.isclose(scores[0], by_hand.score(X[te], y[rows][te]))
    with pytest.raises(ValueError, match="true SNR"):
        moe.SoftMoE(router=router, **kw).fit(_inputs(flux, error, rows), y[rows])


def test_the_gate_never_sees_the_flux(snr_data):
    _, flux, error, params = snr_data
    y = params["log_g"].to_numpy()
    bins = assign_bins(snr_l2(flux, error), EDGES)
    X = _inputs(flux, error, np.arange(300))
    m = moe.SoftMoE(compressor="S2", gate="logistic", min_count=10, alphas=[1e-2]).fit(X, y[:300], bins=bins[:300])
    scrambled = moe.SpectraInput(np.random.default_rng(9).permutation(X.flux), X.sigma)
    assert np.array_equal(m.predict_proba(X), m.predict_proba(scrambled))
    assert not np.allclose(m.predict(X), m.predict(scrambled))  # the experts do use the flux


# ------------------------------------------------------------------ Gate-4 control features


def test_control_features(snr_data):
    _, flux, error, _ = snr_data
    X = _inputs(flux, error, np.arange(200))
    w = whitening.WhitenedFlux(bin_pixels=2).fit(X)
    Zw = w.transform(X)
    raw = (X.flux / X.sigma).reshape(200, 32, 2).mean(axis=2)
    assert np.allclose(Zw, raw * w.scale_)
    c = whitening.ConditionalFeatures("S2", n_components=3, bin_pixels=2).fit(X)
    Zc = c.transform(X)
    assert Zc.shape == (200, 32 + 2 * (1 + 3))
    assert np.allclose(Zc[:, :32], X.flux.reshape(200, 32, 2).mean(axis=2))  # the global model's input, unchanged
    q = c.quality(X)
    assert np.allclose(q.mean(axis=0), 0, atol=1e-9) and np.allclose(q.std(axis=0), 1)
    assert whitening.ConditionalFeatures("S4", n_components=0, bin_pixels=2).fit(X).transform(X).shape == (200, 33)


# ------------------------------------------------------------------ the streaming run


def test_run_deployable_streams_and_does_not_depend_on_chunking(snr_data):
    path = snr_data[0]
    p = _params(path)
    ds = open_dataset(path)
    split = split_rows(ds.n, 300, 80, 120, 0)
    a = q3.run_deployable(ds, split, p, seed=0, representation="S2", chunk_size=64)
    b = q3.run_deployable(ds, split, p, seed=0, representation="S2", chunk_size=500)
    assert np.array_equal(a.rows, np.sort(split.test)) and np.array_equal(b.rows, a.rows)
    models = ("global", "oracle", "oracle_soft", "oracle_regression", "logistic_soft_fallback", "mlp_hard",
              "regression_gate", "whitening", "interacted", "snr_alpha", "snr_alpha_gated", "blend_fixed",
              q3.DEPLOYED)
    for name in models:
        assert np.all(np.isfinite(a.pred[name])), name
        # the bagging control's partition shuffles labels within chunks; every other model is chunk-free
        assert np.allclose(a.pred[name], b.pred[name], atol=1e-6), name
    # 10 % of the training rows are held out (seeded, recorded): the gates learn on the rest
    assert a.info["holdout"]["n_holdout"] == 30 and a.info["holdout"]["n_fit"] == 270
    assert a.features["train"].shape == (270, 2) and set(a.features) == {"train", "val", "test"}
    assert np.array_equal(a.y, ds.params["log_g"].to_numpy()[split.test])
    assert a.info["regression_gate_trained_on"].startswith("held-out training rows (30")
    assert a.info["gate_train_spectra"] == 270 and a.info["regression_gate_train_spectra"] == 30
    # τ is chosen on validation from the grid (which always holds gate.tau)
    assert a.info["tau"] in set(p.controls.tau_grid) | {p.gate.tau}
    assert a.info["gate4"]["control"] in ("whitening", "interacted", "snr_alpha_gated")
    # a split larger than gate.train_n: the gates learn from a seeded subsample of that size
    few = q3.run_deployable(ds, split, _params(path, train_n=150), seed=0, representation="S2")
    assert few.info["gate_train_spectra"] == 150 and few.info["regression_gate_train_spectra"] == 30
    assert np.allclose(few.pred["global"], a.pred["global"])  # the experts do not change
    assert not np.allclose(few.pred["logistic_soft"], a.pred["logistic_soft"])
    # no validation split: nothing to choose τ and the Gate-4 control on, said so
    with pytest.raises(ValueError, match="validation"):
        q3.run_deployable(ds, split_rows(ds.n, 300, 0, 120, 0), p, seed=0, representation="S2")
    c = q3.run_deployable(ds, split, p, seed=1, representation="S2")
    assert not np.allclose(a.pred["global"], c.pred["global"])  # another noise seed, other noisy spectra
    s = q3.summarize([a, c], n_boot=50)
    t = s.table
    assert list(t.index[:3]) == ["global", "oracle", q3.DEPLOYED]
    assert (t["r2_lo"] <= t["r2"] + 1e-12).all() and (t["r2"] <= t["r2_hi"] + 1e-12).all()
    assert np.isclose(t.loc["oracle", "delta_r2"], s.oracle_gap)
    cm = q3.confusion([a, c], "logistic")
    assert cm.to_numpy().sum() == 2 * 120
    leak = q3.leak_check(a, [1e-2, 1.0, 100.0], n_boot=20)
    assert leak["r2_linear"] < 0.3  # σ scale is independent of log g in this synthetic set
    pb = q3.per_bin([a, c], ["global", q3.DEPLOYED], ["X", "L", "M", "H"], n_boot=20)
    assert pb["n"].sum() == 2 * 120


# ------------------------------------------------------------------ ρ over seeds


def _fake_runs(y, preds_by_seed):
    out = []
    for s, pred in enumerate(preds_by_seed):
        out.append(q3.DeployRun(s, y, np.arange(len(y)), np.zeros(len(y), int), np.zeros(len(y), int), pred, {},
                                 {}, {}, {}, None))
    return out


def test_rho_defined_when_the_oracle_gap_is_clear():
    rng = np.random.default_rng(0)
    y = rng.normal(3, 1, 2000)
    e = rng.standard_normal((2, 3, 2000))
    runs = _fake_runs(y, [{"global": y + 0.8 * e[s, 0], "oracle": y + 0.3 * e[s, 1],
                           "mid": y + np.sqrt((0.8 ** 2 + 0.3 ** 2) / 2) * e[s, 2]} for s in range(2)])
    t = q3.summarize(runs, n_boot=100).table
    assert 0.35 < t.loc["mid", "rho"] < 0.65
    assert t.loc["mid", "rho_lo"] < t.loc["mid", "rho"] < t.loc["mid", "rho_hi"]


def test_rho_undefined_when_the_oracle_gap_is_noise():
    rng = np.random.default_rng(1)
    y = rng.normal(3, 1, 500)
    e = rng.standard_normal((2, 3, 500))
    runs = _fake_runs(y, [{"global": y + 0.8 * e[s, 0], "oracle": y + 0.8 * e[s, 1], "mid": y + 0.5 * e[s, 2]}
                          for s in range(2)])
    s = q3.summarize(runs, n_boot=100)
    assert s.oracle_gap_interval[0] <= 0 <= s.oracle_gap_interval[1]
    assert np.isnan(s.table.loc["mid", "rho"])  # undefined, not a huge number
    assert "undefined" in q3.format_table(s).loc["mid", "ρ [95 %]"]


def test_summarize_refuses_runs_on_different_test_sets():
    y = np.arange(10.0)
    a = _fake_runs(y, [{"global": y, "oracle": y}])[0]
    b = q3.DeployRun(1, y, np.arange(1, 11), a.snr_bin, a.expert, a.pred, {}, {}, {}, {}, None)
    with pytest.raises(ValueError, match="share the test"):
        q3.summarize([a, b], n_boot=10)


def test_resolve_representation_falls_back_and_says_so(tmp_path):
    p = params_from_dict({"name": "tiny", "gate": {"representation": "S4"}})
    rep, why = q3.resolve_representation(p, tmp_path)
    assert rep == "S4" and "FALLBACK" in why
    p2 = params_from_dict({"name": "tiny", "gate": {"representation": "S3b", "use_q2_choice": False}})
    assert q3.resolve_representation(p2, tmp_path)[0] == "S3b"
