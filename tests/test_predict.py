"""snrmoe predict: shards, other grids, bad rows, truncated files, interruptions, formats, the CLI."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.data.catalogue import read_catalogue
from snrmoe_lib.data.io import BadRowsError, DatasetError, DatasetWriter, ShardedWriter, open_dataset
from snrmoe_lib.models.deployed import DeployedMixture, load_model
from snrmoe_lib.orchestration.cli import main
from snrmoe_lib.orchestration.predict import GridMismatchError, predict_catalogue

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "data" / "mock_smoke.h5"
N = 120
pytestmark = pytest.mark.skipif(not SMOKE.exists(), reason="the smoke dataset is made by `make test` "
                                "(snrmoe simulate --params params/smoke.yaml)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The smoke configuration's deployed model, fitted and saved through the CLI."""
    out = tmp_path_factory.mktemp("m") / "smoke"
    assert main(["fit", "--params", str(ROOT / "params" / "smoke.yaml"), "--model", "smoke", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def rows():
    """The first N spectra of the smoke dataset (flux, error, mask, params, wave)."""
    with open_dataset(SMOKE) as ds:
        c = ds.read(np.arange(N))
        return c.flux, c.error, c.mask, c.params, ds.wave.copy()


def _write(path: Path, flux, error, mask, params, wave) -> Path:
    with DatasetWriter(path, len(flux), wave, with_mask=mask is not None) as w:
        w.write(flux, error, params, mask=mask)
    return path


@pytest.fixture
def small(tmp_path, rows):
    return _write(tmp_path / "small.h5", *rows)


def test_cli_predict_and_python_api_agree(model_dir, small, tmp_path, rows, capsys):
    out = tmp_path / "cat.fits"
    assert main(["predict", "--model", str(model_dir), "--data", str(small), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    cat, meta = read_catalogue(out)
    assert len(cat) == N and cat["row"].tolist() == list(range(N))
    assert meta["NOISY"] is False and meta["MODEL"] == "smoke"
    flux, error, mask, params, _ = rows
    import snrmoe_lib

    api = snrmoe_lib.load_model(model_dir).predict(flux, error, noisy=False, mask=mask)
    assert [c for c in cat.columns if c not in params.columns] == list(api.columns)
    np.testing.assert_allclose(cat["log_g_pred"], api["log_g_pred"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cat["T_eff"], params["T_eff"])  # passthrough
    assert (cat["log_g_lo"] <= cat["log_g_pred"]).all() and (cat["log_g_pred"] <= cat["log_g_hi"]).all()
    probs = cat[[c for c in cat.columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # a second run does not overwrite: one line, exit 2
    assert main(["predict", "--model", str(model_dir), "--data", str(small), "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli_boosted_family_fit_and_predict(small, tmp_path, rows, capsys):
    """snrmoe fit --family boosted: the catalogue says which family and σ it used, and the CLI's catalogue is
    the Python API's prediction of the saved model (bit for bit)."""
    out = tmp_path / "trees"
    assert main(["fit", "--params", str(ROOT / "params" / "smoke.yaml"), "--model", "trees", "--out", str(out),
                 "--family", "boosted"]) == 0
    # the smoke configuration reports both error modes; a deployed model reads σ̂, as a real observation has
    assert "boosted experts, σ read: estimated" in capsys.readouterr().out
    assert main(["predict", "--model", str(out), "--data", str(small), "--out", str(tmp_path / "c.parquet")]) == 0
    cat, meta = read_catalogue(tmp_path / "c.parquet")
    meta = {k.lower(): v for k, v in meta.items()}
    assert meta["family"] == "boosted" and meta["errmode"] == "estimated"
    flux, error, mask, _, _ = rows
    api = load_model(out).predict(flux, error, noisy=False, mask=mask)
    np.testing.assert_array_equal(cat["log_g_pred"].to_numpy(), api["log_g_pred"].to_numpy())


def test_shards_give_the_file_result(model_dir, small, tmp_path, rows):
    flux, error, mask, params, wave = rows
    with ShardedWriter(tmp_path / "sharded", N, wave, shard_size=50) as w:
        w.write(flux, error, params, mask=mask)
    a = predict_catalogue(model_dir, small, tmp_path / "a.parquet", progress=False, chunk_size=32)
    b = predict_catalogue(model_dir, tmp_path / "sharded", tmp_path / "b.parquet", progress=False, chunk_size=45)
    assert a["n_rows"] == b["n_rows"] == N
    ca, cb = read_catalogue(tmp_path / "a.parquet")[0], read_catalogue(tmp_path / "b.parquet")[0]
    pd.testing.assert_frame_equal(ca, cb)


def test_noisy_input_is_used_as_given(model_dir, rows):
    model = load_model(model_dir)
    flux, error, *_ = rows
    a = model.predict(flux, error, noisy=True)
    b = model.predict(flux, error, noisy=False, seed=1)
    c = model.predict(flux, error, noisy=False, seed=2)
    assert not np.allclose(a["log_g_pred"], b["log_g_pred"]) and not np.allclose(b["log_g_pred"], c["log_g_pred"])
    np.testing.assert_array_equal(model.predict(flux, error, noisy=False, seed=1)["log_g_pred"], b["log_g_pred"])


def test_other_grid_refused_unless_resample(model_dir, tmp_path, rows):
    flux, error, mask, params, wave = rows
    half = _write(tmp_path / "half.h5", flux[:, ::2], error[:, ::2], mask[:, ::2], params, wave[::2])
    out = tmp_path / "cat.h5"
    with pytest.raises(GridMismatchError, match=r"2048 pixels.*differs from the model's \(4096 pixels.*--resample"):
        predict_catalogue(model_dir, half, out, progress=False)
    assert not out.exists()
    with pytest.raises(GridMismatchError, match="does not cover"):
        predict_catalogue(model_dir, half, out, resample=True, progress=False)  # wave[::2] stops short of the end
    # a finer grid that covers the model's: resampled, predicted, recorded in the metadata
    fine = np.linspace(wave[0] - 1, wave[-1] + 1, 5000)
    interp = (lambda a: np.stack([np.interp(fine, wave, r) for r in a]).astype(np.float32))
    finer = _write(tmp_path / "fine.h5", interp(flux), interp(error), None, params, fine)
    s = predict_catalogue(model_dir, finer, out, resample=True, progress=False)
    cat, meta = read_catalogue(out)
    assert s["n_rows"] == N and meta["resample"] is True and np.isfinite(cat["log_g_pred"]).all()


def test_bad_rows_flagged_or_refused(model_dir, tmp_path, rows):
    flux, error, mask, params, wave = rows
    flux = flux.copy()
    flux[[5, 77]] = np.nan
    bad = _write(tmp_path / "bad.h5", flux, error, mask, params, wave)
    out = tmp_path / "cat.fits"
    with pytest.raises(BadRowsError, match="--on-bad-rows flag"):
        predict_catalogue(model_dir, bad, out, on_bad_rows="refuse", progress=False)
    assert not out.exists()
    s = predict_catalogue(model_dir, bad, out, on_bad_rows="flag", progress=False)
    cat = read_catalogue(out)[0]
    assert len(cat) == N and s["flags"]["bad_row"] == 2 and s["n_predicted"] == N - 2
    flagged = cat[cat["flag_bad_row"]]
    assert flagged["row"].tolist() == [5, 77] and flagged["log_g_pred"].isna().all()
    assert (flagged["flag"] & 4).all() and np.allclose(flagged["T_eff"], params["T_eff"].iloc[[5, 77]])
    assert cat.loc[~cat["flag_bad_row"], "log_g_pred"].notna().all()


def test_masked_pixels_beyond_the_limit_are_flagged(model_dir, rows):
    flux, error, mask, *_ = rows
    mask = mask.copy()
    mask[3, :2000] = 1
    df = load_model(model_dir).predict(flux, error, noisy=False, mask=mask)
    assert df["flag_bad_pixels"].tolist() == [i == 3 for i in range(N)]


def test_truncated_file_is_a_clear_error(model_dir, small, tmp_path):
    cut = tmp_path / "cut.h5"
    shutil.copy(small, cut)
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 2)
    out = tmp_path / "cat.fits"
    with pytest.raises(DatasetError, match="truncated|corrupt|damaged"):
        predict_catalogue(model_dir, cut, out, progress=False)
    assert not out.exists()


def test_interrupted_predict_leaves_no_catalogue(model_dir, small, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = DeployedMixture.predict

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("stopped mid-stream")
        return real(self, *a, **k)

    monkeypatch.setattr(DeployedMixture, "predict", failing)
    out = tmp_path / "cat.parquet"
    with pytest.raises(KeyboardInterrupt):
        predict_catalogue(model_dir, small, out, chunk_size=20, progress=False)
    assert calls["n"] == 3
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_unknown_extension_and_bad_model_are_one_line_errors(model_dir, small, tmp_path, capsys):
    assert main(["predict", "--model", str(model_dir), "--data", str(small), "--out", str(tmp_path / "c.csv")]) == 2
    assert "unknown catalogue format '.csv'" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), "--data", str(small), "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err
    assert "model.json is missing" in err and len(err.strip().splitlines()) == 1


def test_snr_outside_the_training_range_is_flagged(model_dir, rows):
    model = load_model(model_dir)
    flux, error, *_ = rows
    hi = model.record["ranges"]["snr_obs"][1]
    df = model.predict(flux * 50, error, noisy=True)  # 50 × the signal: far above any training SNR
    assert (df["snr_obs"] > hi).all() and df["flag_snr_out_of_range"].all() and (df["flag"] & 1).all()
    ok = model.predict(flux, error, noisy=False)
    assert not ok["flag_snr_out_of_range"].any() and (ok["flag"] == 0).all()


def test_cli_fit_refuses_an_existing_model_without_force(model_dir, capsys):
    before = (model_dir / "model.json").read_text()
    code = main(["fit", "--params", str(ROOT / "params" / "smoke.yaml"), "--model", "smoke", "--out", str(model_dir)])
    assert code == 2 and "refusing to overwrite a saved model (pass --force)" in capsys.readouterr().err
    assert (model_dir / "model.json").read_text() == before
    assert main(["fit", "--params", str(ROOT / "params" / "smoke.yaml"), "--model", "../x"]) == 2
    assert "model name '../x'" in capsys.readouterr().err
