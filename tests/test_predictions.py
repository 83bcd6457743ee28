"""Per-star frozen-test predictions: the writer/reader and the ceiling's paired efficiency built on them."""
from __future__ import annotations

import numpy as np
import pytest

from snrmoe_lib.analyses import k1_efficiency
from snrmoe_lib.evaluation import predictions as pr
from snrmoe_lib.evaluation.metrics import bootstrap_indices


def _write(tmp_path, fingerprint="abc", **models):
    rows = np.array([3, 5, 8, 13])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    models = models or {"global": np.array([[1.5, 2.0, 3.0, 4.5], [1.0, 2.5, 3.0, 4.0]]),
                        "deployed": np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.5, 4.0]])}
    return pr.write_predictions(tmp_path, "q9_test", fingerprint=fingerprint, rows=rows, y=y, seeds=[0, 1],
                                models=models)


def test_round_trip_and_per_star_errors(tmp_path):
    path = _write(tmp_path)
    assert path.name == "q9_test_predictions.npz" and path == pr.predictions_path(tmp_path, "q9_test")
    p = pr.read_predictions(path, fingerprint="abc")
    assert p.notebook == "q9_test" and p.fingerprint == "abc" and list(p.models) == ["global", "deployed"]
    assert p.rows.tolist() == [3, 5, 8, 13] and p.seeds.tolist() == [0, 1]
    assert np.allclose(p.models["deployed"][1], [1.0, 2.0, 3.5, 4.0])
    # seed-mean squared error per star, for chosen rows in any order
    assert np.allclose(p.squared_errors("global"), [0.125, 0.125, 0.0, 0.125])
    assert np.allclose(p.squared_errors("deployed", np.array([8, 3])), [0.125, 0.0])
    with pytest.raises(pr.PredictionsError, match="not predicted"):
        p.positions(np.array([4]))


def test_bad_input_and_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="expected \\(n_seeds, n_test\\)"):
        _write(tmp_path, global_=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="sorted"):
        pr.write_predictions(tmp_path, "q9_test", fingerprint="f", rows=[2, 1], y=[0, 0], seeds=[0],
                             models={"a": np.zeros((1, 2))})
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(pr.PredictionsError, match="no predictions file"):
        pr.read_predictions(tmp_path / "missing_predictions.npz")
    path = _write(tmp_path)
    with pytest.raises(pr.PredictionsError, match="another frozen test"):
        pr.read_predictions(path, fingerprint="xyz")
    junk = tmp_path / "junk_predictions.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(pr.PredictionsError, match="unreadable"):
        pr.read_predictions(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(pr.PredictionsError, match="not a predictions file"):
        pr.read_predictions(other)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.array(pr.FORMAT), models=np.array([{"a": 1}], dtype=object))
    with pytest.raises(pr.PredictionsError, match="unreadable"):  # allow_pickle=False refuses object arrays
        pr.read_predictions(pickled)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = _write(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, fingerprint="new")
    assert path.read_bytes() == before  # the old file is untouched
    assert [f.name for f in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def _draws(n: int, n_boot: int, seed: int, per_star: np.ndarray, scale: float) -> dict:
    """A bin whose bound, draw by draw, is ``scale`` × the mean of ``per_star`` over the same resample."""
    idx = bootstrap_indices(n, n_boot, seed)
    return {"point": {"vantrees": scale * per_star.mean()}, "rows": np.arange(n) * 2, "n_boot": n_boot,
            "seed": seed, "draws": {"vantrees": scale * per_star[idx].mean(axis=1)}}


def test_paired_efficiency_uses_the_bound_stars_and_the_same_draws(tmp_path):
    n, rng = 40, np.random.default_rng(1)
    rows = np.arange(2 * n)  # every other row carries the bound
    y = rng.normal(3, 1, 2 * n)
    err = rng.normal(0, 0.5, (2, 2 * n))
    pr.write_predictions(tmp_path, "q3_deployable_gate", fingerprint="fp", rows=rows, y=y, seeds=[0, 1],
                         models={"deployed": y + err, "global": y + 2 * err})
    preds, notes = k1_efficiency.load_predictions(tmp_path, "fp")
    # every other notebook of PAIRED_MODELS has no file here: one note each, naming it
    assert list(preds) == ["q3_deployable_gate"] and len(notes) == len(k1_efficiency.PAIRED_MODELS) - 1
    assert any("q1_snr_headroom" in n for n in notes) and all("no predictions file" in n for n in notes)
    e2 = np.mean(err[:, ::2] ** 2, axis=0)  # the deployed model's seed-mean squared errors on the bound's stars
    draws = {("L", "5d"): _draws(n, 200, 3, e2, 0.6), ("L", "3d"): _draws(n, 200, 3, e2, 0.1)}
    t = k1_efficiency.paired_efficiency(preds, draws, "5d")
    assert len(t) == 1 and t.loc[0, "model"] == "q3:deployed" and t.loc[0, "n_stars"] == n
    assert np.isclose(t.loc[0, "model_mse"], e2.mean())
    # the bound moves with the model's MSE on every draw: paired, the ratio does not vary at all
    assert np.isclose(t.loc[0, "vantrees_eff"], 0.6)
    assert np.isclose(t.loc[0, "vantrees_eff_lo"], 0.6) and np.isclose(t.loc[0, "vantrees_eff_hi"], 0.6)
    # 'global' is not among the compared Q3 models; unknown fingerprint: skipped with a note, no crash
    none, notes = k1_efficiency.load_predictions(tmp_path, "other")
    assert none == {} and any("another frozen test" in s for s in notes)
    assert k1_efficiency.paired_efficiency(none, draws).empty


def test_model_errors_per_bin_and_magnitude(tmp_path):
    import pandas as pd

    from snrmoe_lib.analyses.k1_bins import FrozenTest

    rng = np.random.default_rng(2)
    n = 60
    rows = np.arange(n) + 10
    y = rng.normal(3, 1, n)
    shift = np.array([0.1, 0.1])[:, None]  # both seeds predict truth + 0.1: bias 0.1, RMSE 0.1
    pr.write_predictions(tmp_path, "q1_snr_headroom", fingerprint="fp", rows=rows, y=y, seeds=[0, 1],
                         models={"global": y + shift, "oracle_hard": np.tile(y, (2, 1))})
    preds, _ = k1_efficiency.load_predictions(tmp_path, "fp", ("q1_snr_headroom",))
    table = pd.DataFrame({"row": rows[::-1], "mag": np.linspace(20.5, 22.4, n)})  # any row order
    ft = FrozenTest(rows, table, np.arange(n)[::-1] % 2, ["L", "H"], {})
    t = k1_efficiency.model_errors(preds, ft, n_boot=100, seed=0).set_index(["model", "bin"])
    g = t.loc[("q1:global", "L")]
    assert g["n"] == 30 and np.isclose(g["bias"], 0.1) and np.isclose(g["rmse"], 0.1)
    assert np.isclose(g["bias_lo"], 0.1) and np.isclose(g["bias_hi"], 0.1)  # a constant shift on every resample
    assert np.isclose(t.loc[("q1:oracle_hard", "H"), "r2"], 1.0)
    m = k1_efficiency.model_errors(preds, ft, n_boot=50, seed=0, by="mag")
    assert set(m["mag"]) == {"20.5–21", "21–21.5", "21.5–22", "22–22.5"} and m.groupby("model")["n"].sum().eq(n).all()
    with pytest.raises(ValueError, match="'bin' or 'mag'"):
        k1_efficiency.model_errors(preds, ft, 10, 0, by="teff")
    frame = k1_efficiency.residual_frame(preds["q1_snr_headroom"], ft, "global")
    assert np.allclose(frame["pred"] - frame["log_g"], 0.1) and frame["bin"].tolist() == ft.bins.tolist()
