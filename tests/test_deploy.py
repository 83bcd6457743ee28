"""The deployed model: fit on the smoke configuration, safe save / load, clear errors, interval calibration."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_catalogue, fit_smoke_clean

from snrmoe_lib.config import load_params
from snrmoe_lib.data.io import split_rows
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models import persistence
from snrmoe_lib.models.deployed import PREDICTION_COLUMNS, SplitConformalPerBin, load_model
from snrmoe_lib.models.gates import LogisticGate, MLPGate
from snrmoe_lib.models.persistence import ModelFormatError, dump_estimator, load_estimator

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "data" / "mock_smoke.h5"
needs_smoke = pytest.mark.skipif(not SMOKE.exists(), reason="the smoke dataset is made by `make test` "
                                 "(snrmoe simulate --params params/smoke.yaml)")


@pytest.fixture(scope="module")
def fitted():
    """(params, dataset, model, frozen-test predictions) of the smoke configuration's deployed mixture."""
    if not SMOKE.exists():
        pytest.skip("no smoke dataset")
    out = fit_smoke_clean("ridge")
    yield out
    out[1].close()


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "smoke"
    fitted[2].save(path)
    return path


@needs_smoke
def test_round_trip_predictions_equal(fitted, saved):
    _, ds, model, test = fitted
    loaded = load_model(saved)
    chunk = ds.read(test["row"][:150])
    for noisy in (False, True):
        a = model.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows, seed=0)
        assert_same_catalogue(a, loaded.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows, seed=0), 1e-12)
    assert set(PREDICTION_COLUMNS) <= set(a.columns)
    assert [c for c in a.columns if c.startswith("p_")] == [f"p_{e}" for e in model.expert_labels]


@needs_smoke
def test_predict_reproduces_the_fit_and_q3(fitted):
    """The deployed predictions of the frozen test rows (noise drawn by the protocol with the fit's seed)
    are the fit's own, and those are the Q3 notebook's deployed mixture for that seed."""
    from snrmoe_lib.analyses.q3 import DEPLOYED, run_deployable

    params, ds, model, test = fitted
    chunk = ds.read(test["row"])
    df = model.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=model.record["seed"])
    np.testing.assert_array_equal(df["log_g_pred"].to_numpy(), test["pred"])
    split = split_rows(ds.n, params.split.n_train, params.split.n_val, params.split.n_test, params.split.seed)
    run = run_deployable(ds, split, params, model.record["seed"], model.record["representation"])
    np.testing.assert_array_equal(run.rows, test["row"])
    np.testing.assert_allclose(run.pred[DEPLOYED], test["pred"], rtol=0, atol=1e-12)
    assert run.info["tau"] == model.tau


@needs_smoke
def test_record_holds_what_deployment_needs(fitted, saved):
    rec = json.loads((saved / "model.json").read_text())
    for key in ("params", "dataset", "grid", "ranges", "code_version", "metrics", "leak_check", "calibration",
                "frozen_test", "format_version", "package_version", "mixture", "components"):
        assert key in rec, key
    assert rec["grid"]["n_pix"] == fitted[1].n_pix and len(rec["dataset"]["fingerprint"]) == 64
    assert rec["leak_check"]["q2"] == "not run"  # no results folder given
    assert rec["leak_check"]["gate_inputs"]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    m = rec["metrics"]
    assert len(m["per_bin"]) == len(rec["snr_bins"]["labels"])
    assert abs(m["coverage"] - rec["calibration"]["level"]) < 0.1  # split-conformal: near nominal on the test
    lo, hi = rec["ranges"]["label"]
    assert 0.5 < lo < hi < 5.5


@needs_smoke
def test_no_pickle_in_the_folder(saved):
    for f in saved.glob("*.npz"):
        with np.load(f, allow_pickle=False) as z:
            for k in z.files:
                assert z[k].dtype != object


def _copy(saved: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(saved, dst)
    return dst


@needs_smoke
@pytest.mark.parametrize("missing", ["gate.npz", "linear.json", "model.json"])
def test_incomplete_folder_is_a_clear_error(saved, tmp_path, missing):
    m = _copy(saved, tmp_path)
    (m / missing).unlink()
    with pytest.raises(ModelFormatError, match=f"incomplete model folder: {missing} is missing"):
        load_model(m)


@needs_smoke
@pytest.mark.parametrize("key,value,match", [("format_version", 99, "model format 99"),
                                             ("package_version", "0.0.1", "saved by snrmoe_lib '0.0.1'")])
def test_other_version_is_a_clear_error(saved, tmp_path, key, value, match):
    m = _copy(saved, tmp_path)
    rec = json.loads((m / "model.json").read_text())
    rec[key] = value
    (m / "model.json").write_text(json.dumps(rec))
    with pytest.raises(ModelFormatError, match=match):
        load_model(m)


@needs_smoke
def test_changed_file_is_refused(saved, tmp_path):
    m = _copy(saved, tmp_path)
    meta = json.loads((m / "gate.json").read_text())
    meta["meta"]["params"]["C"] = 123.0
    (m / "gate.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="gate.json does not match the hash"):
        load_model(m)


@needs_smoke
def test_save_refuses_to_overwrite(fitted, saved):
    before = (saved / "model.json").read_text()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        fitted[2].save(saved)
    assert (saved / "model.json").read_text() == before
    fitted[2].save(saved, overwrite=True)
    assert load_model(saved).tau == fitted[2].tau
    assert not [p for p in saved.parent.iterdir() if ".tmp-" in p.name]  # the temporary folder is gone


def test_a_class_outside_the_table_is_refused():
    meta, arrays = dump_estimator(make_compressor("S4").fit(QualityInput(np.ones((5, 8)))))
    meta["class"] = "os.system"
    with pytest.raises(ModelFormatError, match="not one this version can load"):
        load_estimator(meta, arrays)
    with pytest.raises(ModelFormatError, match="unknown component kind"):
        persistence.load_component({"kind": "pickle", "meta": {}}, {})


@pytest.mark.parametrize("rep", ["S0", "S2", "S2b", "S3_11", "S3b", "S4"])
def test_every_gate_compressor_round_trips(rep):
    rng = np.random.default_rng(3)
    sigma = (0.1 + rng.random((40, 32))).astype(np.float32)
    comp = make_compressor(rep).fit(QualityInput(sigma))
    back = load_estimator(*dump_estimator(comp))
    np.testing.assert_array_equal(back.transform(QualityInput(sigma)), comp.transform(QualityInput(sigma)))


@pytest.mark.parametrize("gate", [LogisticGate(C=0.5), MLPGate(hidden=4, epochs=5)])
def test_gates_round_trip(gate):
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((60, 3)), np.repeat([0, 1, 2], 20)
    gate.fit(X, y)
    meta, arrays = dump_estimator(gate)
    json.dumps(meta)  # plain JSON
    back = load_estimator(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_array_equal(back.predict_proba(X), gate.predict_proba(X))


def test_conformal_covers_near_the_level_per_bin():
    rng = np.random.default_rng(5)
    snr = rng.uniform(0.5, 10, 4000)
    scale = np.where(snr < 4, 1.0, 0.3)  # residuals twice as wide at low SNR
    r = rng.standard_normal(4000) * scale
    cal = SplitConformalPerBin([2.0, 4.0, 7.0], level=0.8).fit(r[:2000], snr[:2000])
    b, s, h = cal.predict(snr[2000:])
    inside = np.abs(r[2000:]) <= h
    for j in range(4):
        assert abs(inside[b == j].mean() - 0.8) < 0.06
    assert h[b == 0].mean() > 2 * h[b == 3].mean() and s[b == 0].mean() > 2 * s[b == 3].mean()
    small = SplitConformalPerBin([2.0], level=0.9).fit(r[:40], np.r_[np.full(35, 1.0), np.full(5, 3.0)])
    assert small.pooled_.tolist() == [False, True]  # 5 residuals cannot give a 90 % quantile: all are used


@needs_smoke
def test_card_and_hub_link(fitted, tmp_path):
    from snrmoe_lib.reporting.hub import build_hub
    from snrmoe_lib.reporting.model_card import MOCK_CAVEAT, render_card

    rec = fitted[2].full_record()
    card = render_card(rec, "smoke")
    assert "provisional" in MOCK_CAVEAT and "mock-banner" in card
    assert 'id="per-bin"' in card and all(f"<td>{b}</td>" in card for b in rec["snr_bins"]["labels"])
    assert "Not available: no K1" in card  # no ceiling results at fit time
    r2_x = rec["metrics"]["per_bin"][0]["r2"]
    rec["ceiling"] = {"source": "k1.json", "frozen_test": rec["frozen_test"],
                      "metrics": {f"van_trees_r2_bin{rec['snr_bins']['labels'][0]}": {"value": 0.5}}}
    with_bound = render_card(rec, "smoke")
    assert "the same frozen test stars" in with_bound and f"<td>{r2_x / 0.5:.4g}</td>" in with_bound
    (tmp_path / "reports").mkdir()
    (tmp_path / "models" / "smoke").mkdir(parents=True)
    (tmp_path / "models" / "smoke" / "card.html").write_text(card)
    build_hub(tmp_path / "reports")
    assert 'href="../models/smoke/card.html"' in (tmp_path / "reports" / "index.html").read_text()


def test_leak_record_reads_q2_when_present(tmp_path):
    from snrmoe_lib.analyses.deploy import leak_record
    from snrmoe_lib.evaluation.records import verdict, write_results

    params = load_params(ROOT / "params" / "smoke.yaml")
    rng = np.random.default_rng(6)
    data = {r: {"q": rng.standard_normal((n, 2)), "y": rng.uniform(1, 5, n)}
            for r, n in (("train", 300), ("val", 100), ("test", 200))}
    before = leak_record(params, tmp_path, "S2", data, n_boot=50, seed=0)
    assert before["q2"] == "not run"
    g = before["gate_inputs"]
    assert g["value"] < params.thresholds.gate1_logg_r2_max and g["verdict"] in ("PASS", "INCONCLUSIVE")
    v = verdict("Gate-1", "Q2", "r2_logg[S2]", 0.01, "<", 0.05, [0.0, 0.02])
    write_results(tmp_path / "smoke", "q2_error_leakage", params, dataset={"path": "x"}, metrics={},
                  verdicts=[v, verdict("Gate-2", "Q1", "x", 0.1, ">=", 0.02)])
    after = leak_record(params, tmp_path, "S2", data, n_boot=50, seed=0)
    assert [x["gate"] for x in after["q2"]["verdicts"]] == ["Gate-1"] and after["q2"]["verdicts"][0]["verdict"] == "PASS"


# ------------------------------------------------------------------------------- families and error modes


def _assert_frames_identical(a, b):
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        np.testing.assert_array_equal(b[c].to_numpy(), a[c].to_numpy(), err_msg=c)


@pytest.fixture(scope="module")
def boosted(fitted, tmp_path_factory):
    """The smoke configuration's deployed mixture of boosted trees, fitted and saved."""
    from snrmoe_lib.analyses.deploy import fit_deployed

    params, ds, _, _ = fitted
    model, test = fit_deployed(ds, params, family="boosted")
    path = tmp_path_factory.mktemp("models") / "boosted"
    model.save(path)
    return model, test, path


@needs_smoke
def test_boosted_round_trip_is_bit_identical(fitted, boosted):
    _, ds, _, _ = fitted
    model, test, path = boosted
    loaded = load_model(path)
    assert loaded.family == "boosted" and type(loaded.linear).__name__ == "ModelSet"
    chunk = ds.read(test["row"][:150])
    for noisy in (False, True):
        _assert_frames_identical(model.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows),
                                 loaded.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows))
    rec = json.loads((path / "model.json").read_text())
    assert rec["family"] == rec["mixture"]["family"] == "boosted"
    assert rec["errors"]["error_mode"] == rec["mixture"]["error_mode"] == "clean"
    assert rec["components"]["linear"]["kind"] == "model_set"
    assert set(rec["experts"]["n_iter"]) == set(model.expert_labels) | {"global"}
    from snrmoe_lib.reporting.model_card import render_card

    card = render_card(rec, "boosted")
    assert "boosted trees" in card and "global model (boosted)" in card and "error mode &#x27;clean&#x27;" in card
    for f in path.glob("*.npz"):
        with np.load(f, allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)


@needs_smoke
def test_boosted_is_q4s_deployed_column(fitted, boosted):
    """The deployed boosted mixture's frozen-test predictions are the Q4 table's 'boosted_deployed' of that seed,
    and predicting the saved model with the fit's noise seed gives them back."""
    from snrmoe_lib.analyses import q4_data, q4_families

    params, ds, _, _ = fitted
    model, test, _ = boosted
    split = split_rows(ds.n, params.split.n_train, params.split.n_val, params.split.n_test, params.split.seed)
    data = q4_data.collect(ds, split, params, model.record["seed"], model.record["representation"])
    fit = q4_families.fit_family(q4_families.family("boosted"), params, data, None, control=False)
    np.testing.assert_array_equal(data.row["test"], test["row"])
    np.testing.assert_array_equal(fit["pred"]["test"]["deployed"], test["pred"])
    assert fit["tau"] == model.tau
    chunk = ds.read(test["row"])
    df = model.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=model.record["seed"])
    np.testing.assert_array_equal(df["log_g_pred"].to_numpy(), test["pred"])


@needs_smoke
def test_unknown_family_is_a_clear_error(fitted, tmp_path, capsys):
    from snrmoe_lib.analyses.deploy import fit_deployed
    from snrmoe_lib.orchestration.cli import main

    params, ds, _, _ = fitted
    with pytest.raises(ValueError, match="unknown expert family 'xgb'.*ridge"):
        fit_deployed(ds, params, family="xgb")
    with pytest.raises(SystemExit):
        main(["fit", "--params", str(ROOT / "params" / "smoke.yaml"), "--model", "m", "--out", str(tmp_path / "m"),
              "--family", "xgb"])
    assert "invalid choice: 'xgb'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_boosted_trees_round_trip_and_refuse_another_layout(tmp_path):
    """A model set of boosted trees: bit-identical predictions after save/load (missing values included), and a
    node layout this scikit-learn does not use is refused by name."""
    from snrmoe_lib.models.boosted import BoostedRegressor
    from snrmoe_lib.models.model_set import ModelSet

    r = np.linspace(0, 1, 400 * 12).reshape(400, 12)
    X = np.sin(37.0 * r + r[:, ::-1] * 11.0)
    y = X[:, 0] - 2 * X[:, 3] ** 2 + 0.1 * np.cos(50 * r[:, 5])
    a = BoostedRegressor(max_iter=30, n_threads=1).fit(X[:300], y[:300], X_val=X[300:], y_val=y[300:])
    b = BoostedRegressor(max_iter=10, n_threads=1).fit(X, y)
    ms = ModelSet(["e", "global"], [a, b])
    persistence.save_folder(tmp_path / "m", {"experts": ("model_set", ms)}, {})
    _, c = persistence.load_folder(tmp_path / "m")
    np.testing.assert_array_equal(c["experts"].predict(X[::-1] * 1.1), ms.predict(X[::-1] * 1.1))
    Xn = X.copy()
    Xn[::7, 2] = np.nan  # the trees' own missing-value branches
    np.testing.assert_array_equal(c["experts"].models[0].model_.predict(Xn), a.model_.predict(Xn))
    assert c["experts"].models[0].n_iter_ == a.n_iter_
    meta, arrays = persistence.dump_component("boosted", a)
    meta["meta"]["trees"]["node_dtype"] = "[('value', '<f4')]"
    with pytest.raises(ModelFormatError, match="node layout"):
        persistence.load_component(meta, arrays)


@pytest.fixture(scope="module")
def estimated(fitted, tmp_path_factory):
    """The smoke configuration with noise.error_mode 'estimated': the Ridge deployed mixture, saved."""
    import dataclasses

    from snrmoe_lib.analyses.deploy import fit_deployed

    params, ds, _, _ = fitted
    p = dataclasses.replace(params, noise=dataclasses.replace(params.noise, error_mode="estimated"))
    model, test = fit_deployed(ds, p)
    path = tmp_path_factory.mktemp("models") / "estimated"
    model.save(path)
    return p, model, test, path


@needs_smoke
def test_estimated_mode_reads_sigma_hat(fitted, estimated, tmp_path):
    """error_mode 'estimated': the record says so and keeps the variance model; noise-free products are read
    through σ̂ of the drawn noise (the same numbers as giving the noisy flux and σ̂ with --noisy); the round trip
    is exact; the experts (flux only) are those of the clean mode."""
    from snrmoe_lib.data.noise import add_noise_estimated

    _, ds, clean, _ = fitted
    p, model, test, path = estimated
    rec = json.loads((path / "model.json").read_text())
    assert rec["errors"]["error_mode"] == rec["mixture"]["error_mode"] == "estimated"
    assert rec["errors"]["variance_model"]["fit_rows"] == p.noise.variance_fit_n
    assert "σ̂" in rec["errors"]["sigma_read"] and "variance" in rec["components"]
    from snrmoe_lib.reporting.model_card import render_card

    assert "error mode &#x27;estimated&#x27;" in render_card(rec) and "variance model" in render_card(rec)
    loaded = load_model(path)
    chunk = ds.read(test["row"][:120])
    a = model.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=3)
    _assert_frames_identical(a, loaded.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=3))
    noisy, sigma_hat = add_noise_estimated(chunk.flux, chunk.error, model.noise_level, chunk.rows, 3,
                                           model.variance.gain(chunk.flux, chunk.error))
    _assert_frames_identical(a, model.predict(noisy, sigma_hat, noisy=True, rows=chunk.rows))
    bad = _copy(path, tmp_path)
    rec["mixture"]["error_mode"] = "guessed"
    (bad / "model.json").write_text(json.dumps(rec))
    with pytest.raises(ModelFormatError, match="error_mode must be one of"):
        load_model(bad)
    b = clean.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=3)
    assert not np.allclose(a["snr_obs"], b["snr_obs"])  # σ̂ is not the clean σ
    np.testing.assert_array_equal(model.linear.coef, clean.linear.coef)


@pytest.mark.parametrize("variant", ["heads", "residual"])
def test_neural_round_trip_is_bit_identical(tmp_path, variant):
    """A tiny NeuralExperts (quality features conditioning the trunk, auxiliary heads) saved as its state_dict
    arrays + JSON and rebuilt: every head's mean and σ bit-identical on the CPU; a tensor of another shape
    is refused by name."""
    pytest.importorskip("torch")
    from snrmoe_lib.models.model_set import ModelSet
    from snrmoe_lib.models.neural import NeuralExperts

    t = np.linspace(0, 1, 300 * 66).reshape(300, 66)
    X = np.sin(23.0 * t + 5.0 * t[:, :1])
    y = 2.0 * t[:, 0] + 0.3 * np.cos(9 * t[:, 7])
    bins = np.minimum((t[:, 0] * 3).astype(int), 2)
    tiny = dict(variant=variant, n_bins=3, channels=(4, 8), kernel=3, stem_stride=2, pool=2, width=16, batch_size=32,
                max_epochs=2, n_threads=1, device="cpu", n_quality=2)
    est = NeuralExperts(**tiny).fit(X[:240], y[:240], bins=bins[:240], X_val=X[240:], y_val=y[240:],
                                    aux=np.column_stack([y[:240] * 3, -y[:240]]))
    ms = ModelSet(["net"], [est])
    persistence.save_folder(tmp_path / "m", {"experts": ("model_set", ms)}, {})
    _, c = persistence.load_folder(tmp_path / "m")
    back = c["experts"].models[0]
    for a, b in zip(est._forward(X[::-1]), back._forward(X[::-1])):
        np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(back.predict_all(X), est.predict_all(X))
    np.testing.assert_array_equal(back.predict_global(X), est.predict_global(X))
    assert back.get_params() == est.get_params() and back.history_.keys() == est.history_.keys()
    meta, arrays = persistence.dump_component("neural", est)
    name = meta["meta"]["tensors"][0]
    arrays[f"sd.{name}"] = np.zeros((1, 1), arrays[f"sd.{name}"].dtype)
    with pytest.raises(ModelFormatError, match="does not fit the architecture"):
        persistence.load_component(meta, arrays)
