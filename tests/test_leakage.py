"""The leakage audit (snrmoe_lib.analyses.q2): α path, audit on synthetic leaks, controls, choice, mock I/O."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from snrmoe_lib.analyses import q2 as L
from snrmoe_lib.analyses.q2_controls import _mask_control
from snrmoe_lib.data.mock.estimated import ensure_estimated_dataset, mock_provenance
from snrmoe_lib.models.ridge import AlphaPathRidge, MethodChangeWarning
from snrmoe_lib.config import params_from_dict
from snrmoe_lib.features.quality import QualityError, QualityInput

REPS = ["S0", "S1a", "S1b", "S2", "S2b", "S3_11", "S3_21", "S3b", "S4"]


def _params(**quality):
    return params_from_dict({"name": "t", "seeds": [0, 1, 2], "runner": {"n_bootstrap": 30},
                             "quality": {"representations": REPS, **quality}})


def synthetic_sample(n=(300, 100, 150), p=80, seed=0, leak=0.08):
    """σ = scale · (e0 + leak · (log g − 3) · line): the error leaks log g at two 'lines' only;
    the scale (the observing conditions) is independent of log g and sets the SNR."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(7100.0, 8850.0, p)
    pix = np.arange(p)
    # one line deepens and one weakens with log g, so ‖σ‖ (to first order) does not carry log g
    line = np.exp(-0.5 * ((pix - 20) / 1.5) ** 2) - np.exp(-0.5 * ((pix - 55) / 1.5) ** 2)
    e0 = 0.2 + 0.5 * np.exp(-0.5 * ((pix - 40) / 0.8) ** 2)  # a 'sky line'
    blocks, targets, rows, start = {}, {}, {}, 0
    for name, k in zip(("train", "val", "test"), n):
        logg = rng.uniform(1, 5, k)
        scale = rng.uniform(0.8, 1.25, k)
        sigma = scale[:, None] * (e0 + leak * (logg[:, None] - 3) * line)
        flux = 1.0 - 0.2 * (logg[:, None] - 3) / 2 * line + 0.0 * sigma
        blocks[name] = QualityInput(sigma, flux)
        targets[name] = {"log_g": logg, "snr": np.linalg.norm(flux, axis=1) / np.linalg.norm(sigma, axis=1)}
        rows[name] = np.arange(start, start + k)
        start += k
    return L.AuditSample("clean", blocks["train"], blocks["val"], blocks["test"], targets, wave, rows)


# ------------------------------------------------------------------------------ AlphaPathRidge


@pytest.mark.parametrize("shape", [(60, 10), (30, 50)], ids=["primal", "dual"])
def test_ridge_path_matches_sklearn(shape):
    rng = np.random.default_rng(1)
    X = rng.standard_normal(shape) * rng.uniform(0.5, 3, shape[1]) + 2.0
    y = X @ rng.standard_normal(shape[1]) + rng.standard_normal(shape[0])
    Xt = rng.standard_normal((25, shape[1])) + 2.0
    alphas = [1e-3, 0.1, 10.0, 1e3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MethodChangeWarning)
        path = AlphaPathRidge(alphas=alphas).fit(X, y)
    sc = StandardScaler().fit(X)
    P = path.predict_path(Xt)
    for i, a in enumerate(alphas):
        ref = Ridge(alpha=a).fit(sc.transform(X), y).predict(sc.transform(Xt))
        assert np.allclose(P[i], ref, atol=1e-6), f"alpha={a}"
    Xs = sc.transform(X)
    ols = np.linalg.lstsq(Xs, y - y.mean(), rcond=None)[0]
    assert np.allclose(path.predict_ols(Xt), sc.transform(Xt) @ ols + y.mean(), atol=1e-6)


def test_ridge_path_selects_on_validation_and_warns_when_underdetermined():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 100))
    y = X[:, 0] + 0.1 * rng.standard_normal(40)
    Y = np.column_stack([y, rng.permutation(y)])
    with pytest.warns(MethodChangeWarning, match="minimum-norm"):
        path = AlphaPathRidge(alphas=[1e-2, 1.0, 1e2, 1e4]).fit(X, Y)
    Xv = rng.standard_normal((40, 100))
    Yv = np.column_stack([Xv[:, 0], rng.permutation(Xv[:, 0])])
    path.select(Xv, Yv)
    assert path.val_r2_.shape == (4, 2)
    assert np.all(path.alpha_index_ == np.argmax(path.val_r2_, axis=0))
    assert path.coef_.shape == (100, 2) and path.predict(Xv).shape == (40, 2)
    with pytest.raises(ValueError, match="positive"):
        AlphaPathRidge(alphas=[0.0]).fit(X, y)
    with pytest.raises(ValueError, match="constant"):
        AlphaPathRidge().fit(np.ones((10, 3)), np.arange(10.0))


# ------------------------------------------------------------------------------ the audit


@pytest.fixture(scope="module")
def audit():
    sample = synthetic_sample()
    return sample, L.run_audit(sample, _params())


def test_audit_finds_the_planted_leak(audit):
    sample, a = audit
    t = a.table.set_index("representation")
    assert list(t.index) == REPS
    assert t.loc["S0", "r2_logg"] > 0.5                      # the raw error leaks
    assert t.loc["S0", "r2_logg_lo"] <= t.loc["S0", "r2_logg"] <= t.loc["S0", "r2_logg_hi"]
    assert t.loc["S4", "r2_logg"] < 0.05 and t.loc["S4", "r2_snr"] > 0.8
    assert t.loc["S4", "verdict"] == "PASS" and t.loc["S0", "verdict"] == "FAIL"
    assert t.loc["S2", "n_features"] == 2 and t.loc["S0", "n_features"] == 80
    # importance peaks sit on the two planted lines (pixels 20 and 55), not on the sky line (40)
    top = np.argsort(a.importance)[::-1][:4]
    assert set(np.abs(top[:, None] - np.array([20, 55])[None, :]).min(axis=1)) <= {0, 1, 2}


def test_controls(audit):
    _, a = audit
    c = a.controls.set_index("control")
    s0 = c.loc["raw σ (S0)", "r2_logg"]
    assert abs(c.loc["fixed pixel permutation", "r2_logg"] - s0) < 1e-8
    assert c.loc["per-spectrum shuffle", "r2_logg"] < s0 - 0.3
    assert c.loc["mask only", "description"] == "the dataset has no mask"
    guards = c[c.index.str.startswith("label shuffle")]
    assert len(guards) == 3
    assert L.guard_r2(a) == pytest.approx(guards["r2_logg"].abs().max())
    assert L.guard_r2(a) < 0.1


def test_mask_control_uses_varying_pixels_only():
    s = synthetic_sample(n=(200, 60, 100))
    rng = np.random.default_rng(5)
    for name in ("train", "val", "test"):
        q = getattr(s, name)
        m = np.zeros(q.shape, np.int32)
        # a pixel flagged for low-gravity stars: the mask itself then carries log g
        m[:, 7] = (s.targets[name]["log_g"] < 2.5).astype(np.int32)
        m[:, 9] = rng.integers(0, 2, len(q))
        setattr(s, name, QualityInput(q.sigma, q.flux, m))
    row = _mask_control(s, _params())
    assert row["control"] == "mask only" and row["n_features"] == 2 and row["r2_logg"] > 0.4


def _table(**over):
    t = pd.DataFrame({"representation": ["A", "B", "C"], "n_features": [10, 2, 1],
                      "r2_logg": [0.04, 0.0, 0.3], "r2_logg_lo": [0.0, -0.01, 0.2], "r2_logg_hi": [0.07, 0.01, 0.4],
                      "r2_snr": [0.95, 0.9, 0.99], "r2_snr_lo": [0.9, 0.85, 0.98], "r2_snr_hi": [0.97, 0.93, 1.0],
                      # validation scores: what the choice reads (here they rank A above B, as test does)
                      "r2_snr_val": [0.96, 0.91, 0.99], "r2_logg_val": [0.03, 0.0, 0.3],
                      "verdict": ["PASS", "PASS", "FAIL"], "verdict_interval": ["INCONCLUSIVE", "PASS", "FAIL"],
                      "verdict_val_point": ["PASS", "PASS", "FAIL"], "verdict_val": ["INCONCLUSIVE", "PASS", "FAIL"]})
    return t.assign(**over)


def test_choose_representation_rules():
    t = _table()
    assert L.choose_representation(t, "auto", by="point")[0] == "A"
    assert L.choose_representation(t, "auto", by="interval")[0] == "B"
    assert L.choose_representation(t, "C")[0] == "C"
    with pytest.raises(ValueError, match="not among"):
        L.choose_representation(t, "Z")
    none = t.assign(verdict_val="FAIL", verdict_val_point="FAIL")
    name, why = L.choose_representation(none)
    assert name == "B" and "no representation passes" in why
    p = _params()
    v = L.gate1_verdicts(t, "A", p)
    # A's log g interval [0, 0.07] straddles 0.05: INCONCLUSIVE, not the point value's PASS
    assert [x["verdict"] for x in v] == ["INCONCLUSIVE", "PASS"] and v[0]["interval"] == [0.0, 0.07]
    assert [x["verdict"] for x in L.gate1_verdicts(t, "C", p, label="estimated")] == ["FAIL", "PASS"]


def test_the_choice_never_reads_test_scores():
    # scramble every test column: the choice must not move
    t = _table()
    scrambled = t.assign(r2_logg=[0.9, 0.9, 0.9], r2_snr=[0.0, 0.0, 0.0], verdict="FAIL", verdict_interval="FAIL",
                         r2_logg_lo=np.nan, r2_logg_hi=np.nan)
    for by in ("interval", "point"):
        assert L.choose_representation(scrambled, by=by) == L.choose_representation(t, by=by)
    # while validation scores do move it
    assert L.choose_representation(t.assign(r2_snr_val=[0.5, 0.99, 0.99]), by="point")[0] == "B"


def test_bad_input_names_the_representation():
    s = synthetic_sample(n=(100, 30, 40))
    sig = s.test.sigma.copy()
    sig[4] = 0.0
    s.test = QualityInput(sig, s.test.flux)
    with pytest.raises(QualityError, match="clean audit: representation S4"):
        L.run_audit(s, _params(representations=["S4"]))
    s = synthetic_sample(n=(100, 30, 40))
    sig = s.train.sigma.copy()
    sig[:, 3] = 0.25  # an error constant over the training spectra
    s.train = QualityInput(sig, s.train.flux)
    with pytest.raises(QualityError, match=r"S0: column\(s\) \[3\] are constant"):
        L.run_audit(s, _params(representations=["S0"]))


def test_fewer_spectra_than_pixels_warns_and_says_what_it_did():
    s = synthetic_sample(n=(60, 30, 40), p=150)
    with pytest.warns(L.AuditWarning, match="dual"):
        a = L.run_audit(s, _params(representations=["S0", "S4"]))
    assert a.notes and "minimum-norm" in a.notes[0]


def test_nearest_feature_and_importance_table():
    assert L.nearest_feature(8542.5)[:2] == ("Ca II 8542", "stellar line")
    assert L.nearest_feature(8827.0)[:2] == ("OH 8827", "sky (OH)")
    assert L.nearest_feature(7630.0)[:2] == ("O2 A-band", "telluric")
    assert L.nearest_feature(7594.5)[0] == "O2 A-band"  # the band head, not Fe I 7586 8 Å away
    assert L.nearest_feature(8000.0)[:2] == ("OH 7993", "sky (OH)")  # no band: nearest line within 15 Å
    assert L.nearest_feature(7480.0)[:2] == ("—", "none")
    assert L.nearest_feature(7260.0, max_distance=5.0)[0] == "H2O 7150–7350"
    wave = np.linspace(8400, 8700, 601)  # 0.5 Å pixels
    imp = np.exp(-0.5 * ((wave - 8542.1) / 1.0) ** 2) + 0.5 * np.exp(-0.5 * ((wave - 8662.1) / 1.0) ** 2)
    t = L.importance_table(wave, imp, n_top=2, merge_A=5.0)
    assert t["feature"].tolist() == ["Ca II 8542", "Ca II 8662"]
    assert t["share"].sum() > 0.95
    with pytest.raises(ValueError, match="differ in shape"):
        L.importance_table(wave, imp[:-1])


def test_decomposition_locates_the_residual():
    s = synthetic_sample()
    d = L.decompose_errors(s, n_top=10, n_peaks=3)
    assert d.explained_total > 0.98 and 0.0 < d.explained_variance <= 1.0
    assert d.cosine_median > 0.99
    assert d.top_fraction > 0.8  # the planted residual sits in a handful of pixels
    assert np.isclose(d.delta_share.sum(), 1.0)
    peak_pix = np.argsort(d.delta_share)[::-1][:4]
    assert np.abs(peak_pix[:, None] - np.array([20, 55])[None, :]).min(axis=1).max() <= 2


# ------------------------------------------------------------------------------ on a mock dataset


@pytest.fixture(scope="module")
def mock_params(tmp_path_factory):
    d = tmp_path_factory.mktemp("mock")
    return params_from_dict({
        "name": "tiny", "seeds": [0, 1, 2], "runner": {"n_bootstrap": 20},
        "data": {"path": str(d / "m.h5"), "mock": {"n": 90, "seed": 3, "chunk_size": 45}, "chunk_size": 32},
        "split": {"n_train": 60, "n_val": 10, "n_test": 20, "seed": 1},
        "quality": {"audit_n_train": 40, "audit_n_val": 10, "audit_n_test": 16, "representations": ["S2", "S4", "S0"]},
    })


def test_mock_sample_estimated_mode_and_results(mock_params, tmp_path):
    from snrmoe_lib.data.io import split_rows
    from snrmoe_lib.data.mock import ensure_dataset
    from snrmoe_lib.data.noise import snr
    from snrmoe_lib.evaluation.records import read_results, write_results

    p = mock_params
    ds = ensure_dataset(p, progress=False)
    s = L.load_audit_sample(ds, p)
    assert s.sizes() == {"train": 40, "val": 10, "test": 16}
    sp = split_rows(ds.n, 60, 10, 20, 1)
    assert set(s.rows["train"]) <= set(sp.train) and set(s.rows["test"]) <= set(sp.test)
    ch = ds.read(s.rows["test"])
    assert np.allclose(s.targets["test"]["snr"], snr(ch.flux, ch.error, 1.0, "l2", ch.mask))
    assert np.allclose(s.test.sigma, ch.error)  # noise_level 1: σ = error
    assert np.array_equal(s.targets["test"]["log_g"], ch.params["log_g"].to_numpy())

    n = sum(L.audit_sizes(p))
    est = ensure_estimated_dataset(p, n)
    assert est.path.name == "m_estimated_v2.h5" and est.n == 66
    mtime = est.path.stat().st_mtime_ns
    assert ensure_estimated_dataset(p, n).path.stat().st_mtime_ns == mtime  # reused, not regenerated
    assert not np.allclose(est.read([0]).error, ds.read([0]).error)  # the errors differ from the clean mock

    assert mock_provenance(ds, p) is None  # made by the configured mock
    other_model = "simple" if p.data.mock.model != "simple" else "calibrated"
    other = params_from_dict({"name": "tiny", "data": {"path": str(ds.path), "mock": {"n": 90, "model": other_model}}})
    assert "was not made by the configured mock" in mock_provenance(ds, other)
    with pytest.warns(L.AuditWarning):
        a_est, s_est = L.audit_estimated(p, clean=ds)
    assert not any("not made by" in n for n in a_est.notes)
    assert s_est.label == "estimated" and a_est.label == "estimated"
    with pytest.warns(L.AuditWarning):
        a = L.run_audit(s, p)
    chosen, why = L.choose_representation(a.table, "auto", by=p.quality.choose_by)
    decs = {"clean": L.decompose_errors(s), "estimated": L.decompose_errors(s_est)}
    metrics, extra = L.results_payload({"clean": a, "estimated": a_est}, chosen, why, decs,
                                       L.importance_table(s.wave, a.importance), params=p)
    assert "clean/r2_logg[S0]" in metrics and "estimated/guard_max_abs_r2" in metrics
    assert extra["estimated_dataset"] == str(est.path)
    verdicts = L.q2_verdicts({"clean": a, "estimated": a_est}, chosen, p)
    assert [v["gate"] for v in verdicts][-2:] == ["guard", "guard"]
    if L.guard_r2(a) >= p.quality.guard_max_abs_r2:  # 40 training spectra: the guard may well fail here
        with pytest.raises(RuntimeError, match="label-shuffle guard"):
            L.check_invariants({"clean": a, "estimated": a_est}, chosen, verdicts, p)
    out = write_results(tmp_path / "tiny", "q2_error_leakage", p, dataset={"path": str(ds.path)},
                        metrics=metrics, verdicts=L.gate1_verdicts(a.table, chosen, p), extra=extra)
    assert read_results(out)["extra"]["chosen_representation"] == chosen
    assert L.chosen_representation(tmp_path, "tiny") == chosen

    off = params_from_dict({**{"name": "x"}, "quality": {"estimated_mode": False}})
    assert L.audit_estimated(off) == (None, None)


def test_identical_features_reuse_the_fit_and_say_so():
    s = synthetic_sample(n=(100, 30, 40))
    for name in ("train", "val", "test"):
        q = getattr(s, name)
        setattr(s, name, QualityInput(q.sigma, np.ones_like(q.sigma)))  # median(flux) = 1: S1a ≡ S0
    a = L.run_audit(s, _params(representations=["S1a", "S0", "S4"]))
    t = a.table.set_index("representation")
    assert t.loc["S1a", "r2_logg"] == t.loc["S0", "r2_logg"]
    assert not any(n.startswith("S0: features identical") for n in a.notes)  # S0 carries the guard: refitted
    a = L.run_audit(s, _params(representations=["S0", "S1a"]))
    assert any(n.startswith("S1a: features identical to S0") for n in a.notes)


def test_chosen_representation_reads_results(tmp_path):
    from snrmoe_lib.config import params_from_dict
    from snrmoe_lib.evaluation.records import write_results

    with pytest.raises(FileNotFoundError, match="run notebooks/q2_error_leakage"):
        L.chosen_representation(tmp_path, "smoke")
    p = params_from_dict({"name": "smoke"})
    write_results(tmp_path / "smoke", "q2_error_leakage", p, dataset={}, metrics={},
                  extra={"chosen_representation": "S2"})
    assert L.chosen_representation(tmp_path, "smoke") == "S2"
    with pytest.raises(FileNotFoundError):
        L.chosen_representation(tmp_path, "default")


def test_line_catalogue_is_package_data():
    from snrmoe_lib.features.line_catalogue import line_catalogue

    cat = line_catalogue()
    assert list(cat.columns) == ["name", "kind", "low", "high"] and len(cat) > 50
    assert (cat["low"] <= cat["high"]).all()
    assert set(cat["kind"]) == {"stellar line", "sky (OH)", "telluric", "molecular"}
    cat.loc[0, "name"] = "changed"  # a copy: the cached table is not touched
    assert line_catalogue().loc[0, "name"] != "changed"


# ------------------------------------------------------------------------------ stronger audit (issue 2/7)


def test_the_label_shuffle_is_one_fixed_mapping_of_rows():
    s = synthetic_sample(n=(120, 40, 60))
    from snrmoe_lib.analyses.q2_controls import shuffled_labels
    fake = dict(zip(np.concatenate([s.rows[k] for k in ("train", "val", "test")]),
                    np.concatenate(shuffled_labels(s, 0))))
    # the same rows in other blocks (train ↔ test swapped) keep their fake labels
    t = L.AuditSample("clean", s.test, s.val, s.train, {"train": s.targets["test"], "val": s.targets["val"],
                                                          "test": s.targets["train"]}, s.wave,
                      {"train": s.rows["test"], "val": s.rows["val"], "test": s.rows["train"]})
    again = dict(zip(np.concatenate([t.rows[k] for k in ("train", "val", "test")]),
                     np.concatenate(shuffled_labels(t, 0))))
    assert again == fake
    real = dict(zip(np.concatenate([s.rows[k] for k in ("train", "val", "test")]),
                    np.concatenate([s.targets[k]["log_g"] for k in ("train", "val", "test")])))
    assert sorted(fake.values()) == sorted(real.values()) and fake != real
    assert not np.array_equal(np.concatenate(shuffled_labels(s, 1)), np.concatenate(shuffled_labels(s, 0)))


def test_the_nonlinear_probe_finds_a_leak_the_ridge_misses():
    from snrmoe_lib.analyses.q2_fit import fit_targets, probe_targets
    s = synthetic_sample(n=(600, 200, 300))
    rng = np.random.default_rng(3)
    # a two-feature 'representation' x with log g = 1 + 4 x² (x of random sign) and a noise feature:
    # corr(x, log g) = 0, so invisible to a linear model, plainly visible to trees
    F = []
    for k in ("train", "val", "test"):
        y = s.targets[k]["log_g"]
        x = rng.choice([-1.0, 1.0], len(y)) * np.sqrt((y - 1.0) / 4.0)
        F.append(np.column_stack([x, rng.standard_normal(len(y))]))
    sc, model = fit_targets(*F, s, None, _params())
    nl = probe_targets(*F, s, None, _params(), model)
    assert sc["log_g"]["r2"] < 0.05
    assert nl["log_g"]["r2"] > 0.5 and nl["log_g"]["n_iter"] > 10
    # on pure noise features, the early-stopped probe stays near zero
    noise = [rng.standard_normal((len(f), 2)) for f in F]
    sc0, m0 = fit_targets(*noise, s, None, _params())
    assert probe_targets(*noise, s, None, _params(), m0)["log_g"]["r2"] < 0.05


def test_gate1_audits_teff_and_metallicity_and_the_probe(audit):
    sample, a = audit
    s = synthetic_sample(n=(200, 60, 100))
    for k in ("train", "val", "test"):
        # T_eff planted in the scale (hence in S4), [M/H] independent of σ
        s.targets[k]["T_eff"] = 5000 + 500 * (np.linalg.norm(s.__dict__[k].sigma, axis=1) - 2)
        s.targets[k]["M_H"] = np.random.default_rng(len(k)).uniform(-2, 0.5, len(s.targets[k]["log_g"]))
    au = L.run_audit(s, _params(representations=["S2", "S4"]))
    t = au.table.set_index("representation")
    assert t.loc["S4", "r2_teff"] > 0.5 and t.loc["S4", "verdict_val"] == "FAIL"
    assert abs(t.loc["S4", "r2_mh"]) < 0.1 and np.isfinite(t.loc["S4", "nl_r2_logg"])
    vs = L.gate1_verdicts(au.table, "S4", _params())
    assert [v["metric"] for v in vs] == ["r2_logg[S4]", "r2_logg_nonlinear[S4]", "r2_teff[S4]",
                                         "r2_teff_nonlinear[S4]", "r2_mh[S4]", "r2_mh_nonlinear[S4]", "r2_snr[S4]"]
    assert {v["metric"]: v["verdict"] for v in vs}["r2_teff[S4]"] == "FAIL"
