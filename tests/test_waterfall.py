"""The attribution waterfall's machinery: controls from the streamed pass, nested training sizes,
held-out rows, fixed blends, bin contributions, matched-oracle ρ, τ selection, the interacted control."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.analyses import q1_waterfall as W
from snrmoe_lib.analyses.q3_models import choose_tau, tau_sweep
from snrmoe_lib.analyses.q3_summary import Summary, oracle_rhos
from snrmoe_lib.data.io import open_dataset, split_rows
from snrmoe_lib.data.noise import add_noise
from snrmoe_lib.data.writers import DatasetWriter
from snrmoe_lib.evaluation.metrics import r2
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput
from snrmoe_lib.features.whitening import InteractedFeatures, log_sigma_level
from snrmoe_lib.models import oracle_stream as S
from snrmoe_lib.models import routing as R
from snrmoe_lib.models.blends import blend, blend_weights
from snrmoe_lib.models.ridge import GramStats, solve_path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(5)
    n, p = 700, 24
    log_g = rng.uniform(1, 5, n)
    scale = rng.uniform(0.08, 0.8, n)
    t1, t2 = np.sin(np.linspace(0, 5, p)), np.cos(np.linspace(0, 7, p))
    flux = (1.0 + 0.2 * (log_g[:, None] - 3.0) * np.where((scale < 0.25)[:, None], t1, t2)).astype(np.float32)
    error = (scale[:, None] * np.ones(p)).astype(np.float32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": log_g, "M_H": rng.uniform(-2.5, 0.75, n)})
    path = tmp_path_factory.mktemp("waterfall") / "w.h5"
    with DatasetWriter(path, n, np.linspace(7100, 8850, p)) as w:
        w.write(flux, error, params, mask=np.zeros((n, p), np.int32))
    return open_dataset(path)


def _fit(ds, split, holdout=None, sizes=(), controls="snr", chunk=64):
    cfg = S.OracleSettings(noise_level=1.0, seed=2, alphas=[1e-2, 1.0, 1e2], min_count=10, chunk_size=chunk,
                           predict_val=True, controls=controls, sizes=sizes)
    return S.fit_oracle_stream(ds, split, {"snr": R.SNRRouter([2, 4, 7], ["X", "L", "M", "H"])}, cfg,
                               features=FluxFeatures(2), holdout=holdout)


def test_carve_holdout_is_seeded_disjoint_and_recorded():
    split = split_rows(1000, 600, 100, 200, 0)
    fit, rows, rec = W.carve_holdout(split, 0.1, 3)
    assert len(rows) == 60 and rec["n_holdout"] == 60 and rec["n_fit"] == 540
    assert np.intersect1d(rows, fit.train).size == 0 and np.all(np.isin(rows, split.train))
    assert np.array_equal(np.sort(np.concatenate([rows, fit.train])), split.train)
    fit2, rows2, rec2 = W.carve_holdout(split, 0.1, 3)
    assert np.array_equal(rows, rows2) and rec["rows_sha256"] == rec2["rows_sha256"]
    assert not np.array_equal(rows, W.carve_holdout(split, 0.1, 4)[1])


def test_nested_sizes_equal_a_fit_on_the_subset(dataset):
    """A curve point is exactly the fit on the rows ranked below its size; the last point is the full fit."""
    split = split_rows(dataset.n, 450, 100, 150, 0)
    fit, holdout, _ = W.carve_holdout(split, 0.1, 0)
    run = _fit(dataset, fit, holdout, sizes=(150, 300))
    assert [pt.n_train for pt in run.curve] == [150, 300, len(fit.train)]
    inc = S.nested_increments(fit.train, (150, 300), 0)
    sub = fit.__class__(fit.train[inc <= 0], fit.val, fit.test, fit.seed)
    ref = _fit(dataset, sub, holdout)
    # a smaller size solves the global model, the SNR experts and the SNR-dependent α (no random partitions)
    small = run.curve[0].models
    assert not any(n.startswith("rand:") for n in small.names)
    keep = [ref.models.index(n) for n in small.names]
    np.testing.assert_allclose(small.coef, ref.models.coef[keep], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(run.curve[0].pred["test"], ref.test_pred[:, keep], rtol=1e-7, atol=1e-9)
    full = _fit(dataset, fit, holdout)
    np.testing.assert_allclose(run.test_pred, full.test_pred, rtol=1e-7, atol=1e-9)
    # held-out rows are predicted, never trained on
    assert run.models.n_train[run.models.index("global")] == len(fit.train)
    assert np.array_equal(run.holdout_info["row"], holdout) and run.holdout_pred.shape[0] == len(holdout)


def test_controls_random_partition_and_snr_alpha(dataset):
    split = split_rows(dataset.n, 450, 100, 150, 0)
    fit, holdout, _ = W.carve_holdout(split, 0.1, 0)
    run = _fit(dataset, fit, holdout)
    m, fams = run.models, run.families
    # random-partition experts have exactly the SNR experts' sizes
    assert [m.n_train[c] for c in fams["rand"].columns] == [m.n_train[c] for c in fams["snr"].columns]
    # one Ridge (the global Gram), α per bin: each coefficient vector is on the global model's α path
    c = dataset.load(fit.train)
    X = FluxFeatures(2).transform(add_noise(c.flux, c.error, 1.0, fit.train, 2))
    st = GramStats(X.shape[1]).update(X, c.params["log_g"].to_numpy())
    path = solve_path(st, [1e-2, 1.0, 1e2])
    for col in fams["snr_alpha"].columns:
        i = list(path.alphas).index(m.alpha[col])
        np.testing.assert_allclose(m.coef[col], path.coef[i], rtol=1e-6, atol=1e-9)
    # the partition is a shuffle of the chunk's labels: same multiset, different rows
    b = np.array([0, 0, 1, 2, 3, 3, 3])
    p = S.random_partition(b, 10, 0)
    assert sorted(p) == sorted(b) and np.array_equal(p, S.random_partition(b, 10, 0))
    preds, weights = W.control_predictions(run.curve[-1], {"test": run.test_info, "val": run.val_info,
                                                          "holdout": run.holdout_info})
    for w in weights.values():
        assert np.isclose(sum(w), 1) and min(w) >= 0
    np.testing.assert_allclose(preds["test"]["oracle_hard"], run.oracle_prediction("snr"))
    np.testing.assert_allclose(preds["test"]["snr_alpha"], run.oracle_prediction("snr_alpha"))


def test_blend_weights_are_convex_and_recover_a_mixture():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(500, 3))
    y = P @ np.array([0.2, 0.8, 0.0]) + 0.01 * rng.normal(size=500)
    w = blend_weights(P, y)
    assert np.isclose(w.sum(), 1) and np.all(w >= 0) and np.allclose(w, [0.2, 0.8, 0.0], atol=0.02)
    assert np.allclose(blend(P, w), P @ w)
    with pytest.raises(ValueError, match="NaN"):
        blend_weights(np.full((5, 2), np.nan), np.zeros(5))
    with pytest.raises(ValueError, match="weights"):
        blend(P, [1.0])


def test_bin_contributions_sum_to_the_gain():
    rng = np.random.default_rng(1)
    y = rng.normal(size=400)
    bins = rng.integers(0, 3, 400)
    base = y + rng.normal(size=400)
    model = y + np.where(bins == 0, 0.3, 1.0) * rng.normal(size=400)
    tab, share = W.bin_contributions(y, model[None], base[None], bins, ["X", "L", "M"], ["X"], 50, 0)
    assert np.isclose(tab["contribution"].sum(), r2(y, model) - r2(y, base))
    assert np.isclose(share["value"], tab["contribution"].iloc[0] / tab["contribution"].sum())
    lo, hi = share["interval"]
    assert lo <= share["value"] <= hi
    # no gain to share: undefined, not a number that looks like a share
    assert np.isnan(W.bin_contributions(y, base[None], model[None], bins, ["X", "L", "M"], ["X"], 20, 0)[1]["value"])
    assert W.low_bins([2, 4, 7], ["X", "L", "M", "H"]) == ["X", "L"]


def test_routing_share_uses_the_validation_choice():
    vals = {"oracle_hard": 0.5, "snr_alpha": 0.45, "blend_fixed": 0.48, "bagging_random": 0.40}
    draws = {k: np.full(10, v) for k, v in vals.items()}
    # validation prefers snr_alpha although blend_fixed is better on test: the share follows validation
    out = W.routing_share(vals, draws, {"snr_alpha": 0.3, "blend_fixed": 0.2, "bagging_random": 0.1})
    assert out["control"] == "snr_alpha" and np.isclose(out["value"], 0.05)
    tab = W.waterfall(vals, draws, ("snr_alpha", "blend_fixed", "oracle_hard"))
    assert np.isclose(tab["step_delta"].iloc[2], 0.02) and np.isclose(tab["delta_vs_global"].iloc[2], 0.05)


def test_tau_choice_and_sweep():
    W_ = np.array([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    P = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    sw = tau_sweep(W_, P, np.array([1.5, 1.5, 1.5]), np.array([1.1, 1.5, 1.7]), [0.0, 0.6, 0.95])
    assert np.allclose(sw["coverage"], [1.0, 2 / 3, 0.0])
    assert choose_tau(pd.DataFrame({"tau": [0.0, 0.4, 0.6], "r2": [0.5, 0.6, 0.6]})) == 0.4


def test_oracle_rhos_flag_a_denominator_that_is_no_bound():
    names = ["global", "oracle", "oracle_soft", "oracle_regression", "deployed"]
    r2s = {"global": 0.40, "oracle": 0.44, "oracle_soft": 0.46, "oracle_regression": 0.47, "deployed": 0.45}
    rng = np.random.default_rng(2)
    draws = {m: r2s[m] + 0.001 * rng.normal(size=200) for m in names}
    table = pd.DataFrame({"r2": [r2s[m] for m in names]}, index=pd.Index(names, name="model"))
    out = oracle_rhos(Summary(table, draws, 0.04, (0.03, 0.05)), ["deployed"]).loc["deployed"]
    assert out["class_oracle"] == "oracle_soft" and np.isclose(out["rho_class"], 5 / 6)
    assert np.isclose(out["rho_best"], 5 / 7) and not out["over_1"]
    table.loc["oracle_soft", "r2"] = 0.43
    draws["oracle_soft"] = 0.43 + 0.001 * rng.normal(size=200)
    assert oracle_rhos(Summary(table, draws, 0.04, (0.03, 0.05)), ["deployed"]).loc["deployed", "over_1"]


def test_interacted_features():
    rng = np.random.default_rng(3)
    flux = 1 + 0.1 * rng.normal(size=(120, 16))
    sigma = np.exp(rng.normal(size=(120, 1))) * np.ones((1, 16))
    f = InteractedFeatures("S4", bin_pixels=2).fit((flux, sigma))
    Z = f.transform((flux, sigma))
    assert Z.shape == (120, f.n_features_out_) == (120, 2 * 8 + f.n_quality_ + 1)
    F = flux.reshape(120, 8, 2).mean(axis=2)
    assert np.allclose(Z[:, :8], F)
    z = (log_sigma_level(sigma) - f.z_mean_) / f.z_scale_
    assert np.allclose(Z[:, -8:], (F - f.f_mean_) * z[:, None])
    assert np.allclose(f.assemble(F, f.compressor_.transform(QualityInput(sigma)), sigma), Z)
