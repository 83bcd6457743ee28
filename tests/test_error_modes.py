"""Clean and estimated errors in Q1 and Q3: one pass, shared flux-only models, the gate fed σ̂."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.analyses import error_modes, q3
from snrmoe_lib.config import ParameterError, params_from_dict
from snrmoe_lib.data.io import DatasetWriter, open_dataset, split_rows
from snrmoe_lib.evaluation.records import VERDICT_STATES


@pytest.fixture(scope="module")
def photon_data(tmp_path_factory):
    """Spectra whose σ² = background + gain · flux (the variance model's form), SNR spread over the bins."""
    rng = np.random.default_rng(5)
    n, p = 500, 64
    wave = np.linspace(7100.0, 8850.0, p)
    log_g = rng.uniform(1, 5, n)
    lines = np.exp(-0.5 * ((np.arange(p)[None, :] - np.array([[10], [30], [50]])) / 2.0) ** 2).sum(axis=0)
    flux = (1.0 - 0.08 * (log_g[:, None] - 3) * lines[None, :] + 0.01 * rng.standard_normal((n, p))).astype(np.float32)
    scale = np.exp(rng.uniform(np.log(0.3), np.log(3.0), n))
    bg = 0.02 * (1 + 0.3 * np.sin(np.arange(p) / 7.0))
    error = (scale[:, None] * np.sqrt(bg[None, :] + 0.03 * flux)).astype(np.float32)
    params = pd.DataFrame({"T_eff": rng.uniform(3750, 6000, n), "log_g": log_g, "M_H": rng.uniform(-2, 0.5, n)})
    path = tmp_path_factory.mktemp("modes") / "photon.h5"
    with DatasetWriter(path, n, wave, with_mask=False) as w:
        w.write(flux, error, params)
    return path


def _params(path, mode="both", **extra):
    return params_from_dict({
        "name": "tiny", "data": {"path": str(path), "chunk_size": 128},
        "split": {"n_train": 300, "n_val": 80, "n_test": 120, "seed": 0}, "seeds": [0, 1],
        "noise": {"error_mode": mode, "variance_fit_n": 200},
        "snr_bins": {"edges": [2.0, 4.0, 7.0], "labels": ["X", "L", "M", "H"], "min_count": 10},
        "ridge": {"alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0], "bin_pixels": 2},
        "gate": {"fit_n": 200, "n_flux_components": 2, "mlp_epochs": 40, "regression_epochs": 40},
        "controls": {"curve_sizes": [150]}, "runner": {"n_bootstrap": 50}, **extra})


def test_error_mode_config():
    assert error_modes.error_modes(_params("x")) == ("clean", "estimated")
    assert error_modes.error_modes(_params("x", "estimated")) == ("estimated",)
    assert error_modes.suffix("estimated", _params("x")) == "_estimated" and error_modes.suffix("clean", _params("x")) == ""
    with pytest.raises(ParameterError, match="error_mode"):
        _params("x", "guessed")


def test_both_modes_share_one_pass_and_the_flux_only_models(photon_data):
    p = _params(photon_data)
    ds = open_dataset(photon_data)
    split = split_rows(ds.n, 300, 80, 120, 0)
    vm = error_modes.variance_model(ds, split, p)
    assert vm is not None and vm.rel_rms_ < 0.05  # the data follow the model's form
    both = q3.run_deployable_modes(ds, split, p, 0, "S2", curve=True, variance_model=vm)
    c, e = both["clean"], both["estimated"]
    assert c.info["error_mode"] == "clean" and e.info["error_mode"] == "estimated"
    assert len(c.curve) == 2 and len(e.curve) == 1  # the learning curve in the primary mode only
    # the clean mode is exactly what a clean-only run gives (the extra collector changes nothing)
    alone = q3.run_deployable(ds, split, _params(photon_data, "clean"), 0, "S2", curve=True)
    for name, v in alone.pred.items():
        assert np.allclose(c.pred[name], v, atol=1e-6), name
    # models of the flux alone and the oracles of the true SNR do not see σ: identical in both modes
    for name in ("global", "oracle", "snr_alpha", "blend_fixed", "bagging_random", "oracle_regression"):
        assert np.array_equal(c.pred[name], e.pred[name]), name
    # what sees σ changes: the gate's inputs and the σ-based controls
    assert not np.allclose(c.features["test"], e.features["test"])
    for name in ("whitening", "logistic_soft", "regression_gate"):
        assert not np.allclose(c.pred[name], e.pred[name]), name
    with pytest.raises(ValueError, match="error modes"):
        q3.run_deployable_modes(ds, split, p, 0, "S2", modes=("noisy",))
    # the check the Q1 notebook shows: both passes hand flux-only models the same numbers
    chk = error_modes.flux_check(ds, split, p, vm, n=60)
    assert chk["error_mode"].tolist() == ["clean", "estimated"]
    assert (chk[["noisy_flux_max_abs_diff", "features_max_abs_diff"]] == 0).all().all()
    assert chk.loc[1, "sigma_rel_rms_vs_clean"] > 0.01


def test_results_report_both_modes(photon_data):
    p = _params(photon_data)
    ds = open_dataset(photon_data)
    split = split_rows(ds.n, 300, 80, 120, 0)
    by = {"clean": [], "estimated": []}
    for s in p.seeds:
        for m, r in q3.run_deployable_modes(ds, split, p, s, "S2").items():
            by[m].append(r)
    reps = {m: q3.mode_summary(by[m], p, 50, 0) for m in by}
    table = q3.modes_table(reps, p.gate.kind)
    assert list(table.columns) == ["clean errors", "estimated errors"]
    assert table.loc["global", "clean errors"] == table.loc["global", "estimated errors"]
    c = reps["clean"]
    others = {"estimated": q3.other_mode(p, "estimated", by["estimated"], **reps["estimated"])}
    pb = q3.per_bin(by["clean"], ["global", q3.DEPLOYED], ["X", "L", "M", "H"], n_boot=20)
    res = q3.results(p, by["clean"], c["summary"], c["diagnostics"], c["leak"], pb, "S2", "test", split.test,
                     c["falls"], None, others)
    m = res["metrics"]
    for name in ("oracle_hard_r2", "oracle_soft_r2", "oracle_regression_r2", "oracle_best_r2", "rho_vs_best_oracle",
                 "blend_fixed_r2", "bagging_random_r2", "snr_alpha_r2", "interacted_r2", "gate_accuracy"):
        assert name in m and f"{name}_estimated" in m, name
    assert m["global_r2"]["value"] == m["global_r2_estimated"]["value"]
    assert 0 <= m["gate_accuracy_estimated"]["value"] <= 1
    gates = [v["gate"] for v in res["verdicts"]]
    assert "Gate-3" in gates and "Gate-3 (estimated errors)" in gates and "leak-free (estimated errors)" in gates
    assert all(v["verdict"] in VERDICT_STATES for v in res["verdicts"])
    est = [v for v in res["verdicts"] if v["gate"].endswith("(estimated errors)")]
    assert est and all(v["question"].endswith("(estimated errors)") and v["metric"].endswith("_estimated") for v in est)
    assert res["extra"]["error_modes"]["estimated"]["runs"][0]["error_mode"] == "estimated"
    cols = q3.prediction_columns(by, "clean")
    assert cols["oracle_hard"].shape == (2, 120) and "deployed_estimated" in cols and "oracle" not in cols
