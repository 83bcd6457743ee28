"""The deployed neural family: a tiny trunk with SNR heads fitted on the smoke mock, saved, loaded, applied."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_same_catalogue, fit_smoke_clean

from snrmoe_lib.data.catalogue import read_catalogue
from snrmoe_lib.data.io import DatasetWriter, open_dataset, split_rows
from snrmoe_lib.models.deployed import PREDICTION_COLUMNS, load_model
from snrmoe_lib.models.model_set import NeuralHeads
from snrmoe_lib.models.persistence import ModelFormatError, dump_component, load_component
from snrmoe_lib.orchestration.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "data" / "mock_smoke.h5"
pytestmark = pytest.mark.skipif(not SMOKE.exists(), reason="the smoke dataset is made by `make test` "
                                "(snrmoe simulate --params params/smoke.yaml)")
#: A tiny net: it runs in seconds on two cores (it does not learn much; the plumbing is under test).
TINY = {"neural_width": 8, "neural_epochs": 2, "neural_batch_size": 64, "neural_train_rows": 2000, "n_threads": 1}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(params, dataset, model, frozen-test predictions, saved folder) of the tiny neural deployed model,
    clean σ."""
    params, ds, model, test = fit_smoke_clean("neural", {"q4": TINY})
    path = tmp_path_factory.mktemp("neural") / "net"
    model.save(path)
    yield params, ds, model, test, path
    ds.close()


def test_saved_neural_model_predicts_what_the_fitted_one_does(fitted):
    _, ds, model, test, saved = fitted
    loaded = load_model(saved)
    assert loaded.family == "neural" and isinstance(loaded.linear, NeuralHeads)
    chunk = ds.read(test["row"][:200])
    atol = 1e-6 if _cuda() else 0.0  # bit-identical on the CPU
    for noisy in (False, True):
        a = model.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows, seed=0)
        assert_same_catalogue(a, loaded.predict(chunk.flux, chunk.error, noisy=noisy, rows=chunk.rows, seed=0), atol)
    assert set(PREDICTION_COLUMNS) <= set(a.columns)
    assert [c for c in a.columns if c.startswith("p_")] == [f"p_{e}" for e in model.expert_labels]
    assert set(a["expert"]) <= set(model.expert_labels) | {"global"}


def test_model_json_says_neural_and_the_nets_are_saved_as_neural(fitted):
    saved = fitted[4]
    rec = json.loads((saved / "model.json").read_text())
    assert rec["family"] == "neural" and rec["mixture"]["family"] == "neural"
    assert rec["components"]["linear"]["kind"] == "neural_heads"
    meta = json.loads((saved / "linear.json").read_text())["meta"]
    assert set(meta["nets"]) == {"heads", "global"}
    assert meta["names"] == [*fitted[2].expert_labels, "global"]
    assert rec["experts"]["n_train_rows_net"] == 2000 and "heads" in rec["experts"]["epochs"]


def test_frozen_test_predictions_are_q4s_neural_deployed_and_intervals_cover(fitted):
    """The deployed nets' frozen-test predictions are the Q4 notebook's ``neural_deployed`` for that seed
    (clean σ), and the split-conformal intervals cover about their level on the test rows."""
    from snrmoe_lib.analyses.q4_data import collect
    from snrmoe_lib.analyses.q4_families import FAMILIES, fit_family
    from snrmoe_lib.analyses.q4_variants import expert_plan, fit_gates

    params, ds, model, test, _ = fitted
    chunk = ds.read(test["row"])
    df = model.predict(chunk.flux, chunk.error, noisy=False, rows=chunk.rows, seed=model.record["seed"])
    np.testing.assert_array_equal(df["log_g_pred"].to_numpy(), test["pred"])
    split = split_rows(ds.n, params.split.n_train, params.split.n_val, params.split.n_test, params.split.seed,
                       n_dropped=ds.n_dropped)
    data = collect(ds, split, params, model.record["seed"], model.record["representation"])
    gates = fit_gates(params, data, expert_plan(params, data.bin["train"]))
    fit = fit_family(FAMILIES["neural"], params, data, gates, control=False)
    np.testing.assert_array_equal(data.row["test"], test["row"])
    np.testing.assert_allclose(fit["pred"]["test"]["deployed"], test["pred"], rtol=0, atol=1e-6 if _cuda() else 0)
    assert fit["tau"] == model.tau
    y = test["y"]
    cover = np.mean((y >= df["log_g_lo"].to_numpy()) & (y <= df["log_g_hi"].to_numpy()))
    assert model.calibration.level == 0.9 and 0.75 <= cover <= 0.98
    assert abs(model.record["metrics"]["coverage"] - cover) < 1e-12
    assert np.all(df["log_g_sigma"].to_numpy() > 0) and np.isfinite(model.record["metrics"]["r2"])


def test_neural_heads_refuse_a_mismatch_and_a_saved_set_without_heads(fitted):
    from snrmoe_lib.features.flux import FluxFeatures

    _, ds, model, test, _ = fitted
    nh = model.linear
    X = np.asarray(FluxFeatures(model.bin_pixels).transform(ds.read(test["row"][:50]).flux), dtype=np.float32)
    own = NeuralHeads(nh.names, nh.heads).predict(X)  # without a second net: the heads net's own global head
    np.testing.assert_array_equal(own[:, :-1], nh.predict(X)[:, :-1])
    np.testing.assert_array_equal(own[:, -1], nh.heads.predict_global(X))
    assert not np.array_equal(own[:, -1], nh.predict(X)[:, -1])
    with pytest.raises(ValueError, match="experts for"):
        NeuralHeads(["a", "global"], nh.heads)
    with pytest.raises(ValueError, match="ending with 'global'"):
        NeuralHeads([*model.expert_labels, "fallback"], nh.heads)
    meta, arrays = dump_component("neural_heads", nh)
    meta["meta"]["nets"].pop("heads")
    with pytest.raises(ModelFormatError, match="no 'heads' network"):
        load_component(meta, arrays)


def test_cli_fits_and_predicts_the_neural_family(tmp_path, capsys):
    """snrmoe fit --family neural on a small params file (the smoke configuration, tiny nets, σ̂ read),
    then snrmoe predict: the catalogue is the Python API's prediction of the saved model."""
    cfg = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    cfg["data"]["path"] = str(SMOKE)
    cfg["q4"] = cfg.get("q4", {}) | TINY
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "net"
    assert main(["fit", "--params", str(tmp_path / "tiny.yaml"), "--model", "net", "--out", str(out),
                 "--family", "neural", "--reports", str(tmp_path / "none")]) == 0
    assert "neural experts, σ read: estimated" in capsys.readouterr().out
    assert (out / "card.html").is_file() and "neural network" in (out / "card.html").read_text()
    with open_dataset(SMOKE) as ds:
        c, wave = ds.read(np.arange(80)), ds.wave.copy()
    with DatasetWriter(tmp_path / "small.h5", len(c.flux), wave, with_mask=c.mask is not None) as w:
        w.write(c.flux, c.error, c.params, mask=c.mask)
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "small.h5"),
                 "--out", str(tmp_path / "c.parquet")]) == 0
    cat, meta = read_catalogue(tmp_path / "c.parquet")
    assert {k.lower(): v for k, v in meta.items()}["family"] == "neural"
    api = load_model(out).predict(c.flux, c.error, noisy=False, mask=c.mask)
    np.testing.assert_allclose(cat["log_g_pred"].to_numpy(), api["log_g_pred"].to_numpy(), rtol=0,
                               atol=1e-6 if _cuda() else 0)
