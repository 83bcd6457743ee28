"""Q4's family registry and its fits on synthetic in-memory data (no dataset needed)."""
import numpy as np
import pytest

from conftest import ROOT
from snrmoe_lib.analyses import q4
from snrmoe_lib.analyses.q4_data import Q4Data, train_rows
from snrmoe_lib.analyses.q4_families import FAMILIES, VARIANTS, family, fit_curve, fit_family, fit_gates, fit_residual
from snrmoe_lib.config import ParameterError, Q4Spec, load_params
from snrmoe_lib.evaluation.metrics import r2


def _data(seed=0, n=(1600, 500, 500)):
    """SNR-like bins with a different linear law per bin: experts should beat one global Ridge."""
    g = np.random.default_rng(seed)
    out = {k: {} for k in ("X", "q", "snr", "bin", "y", "row")}
    for role, m in zip(("train", "val", "test"), n):
        snr = np.exp(g.uniform(np.log(0.8), np.log(12), m))
        b = np.digitize(snr, [2.0, 4.0, 7.0]).astype(np.int64)
        X = g.normal(size=(m, 8)).astype(np.float32)
        w = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], float)[b]
        out["X"][role], out["bin"][role], out["snr"][role] = X, b, snr
        out["y"][role] = (X[:, :3] * w).sum(axis=1) + 0.2 * g.normal(size=m)
        out["q"][role] = np.log(snr)[:, None] + 0.1 * g.normal(size=(m, 1))  # a noisy quality feature
        out["row"][role] = np.arange(m)
    return Q4Data(**out, labels=["X", "L", "M", "H"], seed=seed, n_train_split=n[0])


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params" / "smoke.yaml", {"q4": {"boosted_max_iter": 40}})


def test_registry_agrees_with_the_configuration():
    assert set(FAMILIES) == set(Q4Spec.FAMILIES)
    with pytest.raises(ValueError, match="not registered"):
        family("nope")
    with pytest.raises(ParameterError, match="q4.residual_base"):
        Q4Spec(families=["ridge"], residual_base="boosted")
    with pytest.raises(ParameterError, match="q4.residual_base"):  # the nets fit their own residual mixture
        Q4Spec(residual_base="neural")
    with pytest.raises(ParameterError, match="q4.neural_epochs"):
        Q4Spec(neural_epochs=0)
    with pytest.raises(ParameterError, match="q4.curve_sizes"):
        Q4Spec(curve_sizes=[10, 5])


def test_train_rows_cap_is_seeded_and_sorted():
    rows = np.arange(100, 200)
    a, b = train_rows(rows, 30, 0), train_rows(rows, 30, 0)
    assert len(a) == 30 and np.array_equal(a, b) and np.all(np.diff(a) > 0) and set(a) <= set(rows)
    assert np.array_equal(train_rows(rows, 500, 0), rows)


def test_families_fit_every_variant_and_experts_beat_the_global_ridge(params):
    d = _data()
    gates = fit_gates(params, d, q4._plan(params, d.bin["train"]))
    fits = {name: fit_family(FAMILIES[name], params, d, gates) for name in ("ridge", "boosted")}
    for name, fit in fits.items():
        assert set(fit["pred"]["test"]) == {*VARIANTS, "conditional"}
        assert all(len(v) == 500 and np.all(np.isfinite(v)) for v in fit["pred"]["test"].values())
    y = d.y["test"]
    ridge = fits["ridge"]["pred"]["test"]
    assert r2(y, ridge["oracle_hard"]) > r2(y, ridge["global"]) + 0.1
    assert r2(y, ridge["deployed"]) > r2(y, ridge["global"])  # the gate sees a noisy log SNR
    res = fit_residual(params, d, fits["boosted"], gates)
    assert r2(y, res["pred"]["test"]["residual_oracle_hard"]) > r2(y, fits["boosted"]["pred"]["test"]["global"])


def _run(seed=0, n=4000):
    """A synthetic seed whose ridge oracle beats its global model by construction and whose boosted one does not."""
    g = np.random.default_rng(seed)
    pred = {}
    y = {r: g.normal(size=n) for r in ("val", "test")}
    bins = {r: g.integers(0, 4, n) for r in ("val", "test")}
    for r in ("val", "test"):
        yy = y[r]
        pred[r] = {"ridge_global": yy + 0.9 * g.normal(size=n), "ridge_oracle_hard": yy + 0.6 * g.normal(size=n),
                   "ridge_oracle_soft": yy + 0.65 * g.normal(size=n), "ridge_deployed": yy + 0.7 * g.normal(size=n),
                   "ridge_conditional": yy + 0.9 * g.normal(size=n), "boosted_global": yy + 0.5 * g.normal(size=n),
                   "boosted_oracle_hard": yy + 0.55 * g.normal(size=n), "boosted_oracle_soft": yy + 0.55 * g.normal(size=n),
                   "boosted_deployed": yy + 0.55 * g.normal(size=n), "boosted_conditional": yy + 0.5 * g.normal(size=n),
                   "residual_mixture": yy + 0.5 * g.normal(size=n), "residual_oracle_hard": yy + 0.5 * g.normal(size=n)}
    return q4.Q4Run(seed, y, bins, np.arange(n), pred, ["X", "L", "M", "H"],
                    {"data": {"n_train_kept": 1000, "noise_level": 1.0}})


def test_summary_shares_and_verdicts_follow_the_numbers(params):
    from snrmoe_lib.analyses import q4_report

    runs = [_run()]
    s = q4.summarize(runs, ["ridge", "boosted"], "boosted", n_boot=200, seed=0)
    t = s.table
    assert t.loc["ridge_oracle_hard", "delta_lo"] > 0 and t.loc["boosted_oracle_hard", "delta_hi"] < 0
    # ρ of the ridge mixture against its best oracle (the hard one here) lies in (0, 1); undefined for boosted
    assert 0 < t.loc["ridge_deployed", "rho"] < 1 and np.isnan(t.loc["boosted_deployed", "rho"])
    sh = q4_report.shares(s, runs, ["ridge", "boosted"])
    v = {x["metric"]: x["verdict"] for x in q4_report.verdicts(params, sh)}
    assert v["routing_share_ridge"] == "PASS" and v["routing_share_boosted"] == "FAIL"
    cov = q4_report.coverage(runs, ["ridge_global"], n_boot=50)
    mond = cov[(cov.method == "mondrian") & (cov.bin == "all")].set_index("level")["coverage"]
    assert abs(mond[0.68] - 0.68) < 0.03 and abs(mond[0.95] - 0.95) < 0.02


def _spectra(seed=0, n=(1600, 400, 400), D=64):
    """Spectrum-like rows (a template scaled by the label, white noise ∝ 1/SNR) with auxiliary labels."""
    g = np.random.default_rng(seed)
    out = {k: {} for k in ("X", "q", "snr", "bin", "y", "row", "aux")}
    template = np.sin(np.arange(D) / 3.0)
    for role, m in zip(("train", "val", "test"), n):
        snr, y = np.exp(g.uniform(np.log(0.8), np.log(12), m)), g.normal(size=m)
        out["X"][role] = ((1 + 0.3 * y[:, None] * template) + g.normal(size=(m, D)) / snr[:, None]).astype(np.float32)
        out["y"][role], out["snr"][role], out["row"][role] = y, snr, np.arange(m)
        out["bin"][role] = np.digitize(snr, [2.0, 4.0, 7.0]).astype(np.int64)
        out["q"][role] = np.log(snr)[:, None] + 0.1 * g.normal(size=(m, 1))
        out["aux"][role] = np.column_stack([y + g.normal(size=m), g.normal(size=m)])
    aux = out.pop("aux")
    return Q4Data(**out, labels=["X", "L", "M", "H"], seed=seed, n_train_split=n[0], aux=aux)


@pytest.fixture(scope="module")
def neural_params():
    return load_params(ROOT / "params" / "smoke.yaml", {"q4": {
        "neural_width": 16, "neural_batch_size": 32, "neural_epochs": 4, "neural_patience": 2,
        "neural_train_rows": 1200, "n_threads": 1}})


def test_neural_family_gives_every_row_with_a_sigma(neural_params):
    p, d = neural_params, _spectra()
    gates = fit_gates(p, d, q4._plan(p, d.bin["train"]))
    fit = fit_family(FAMILIES["neural"], p, d, gates)
    names = {*VARIANTS, "conditional", "residual_mixture", "residual_oracle_hard"}
    assert set(fit["pred"]["test"]) == names and set(fit["sigma"]["test"]) == names
    for r in ("val", "test"):
        for v in names:
            assert fit["pred"][r][v].shape == fit["sigma"][r][v].shape == (len(d.y[r]),)
            assert np.all(np.isfinite(fit["pred"][r][v])) and np.all(fit["sigma"][r][v] > 0)
    assert fit["info"]["n_train"] == 1200 and fit["info"]["aux"]  # the cap and the auxiliary targets
    y = d.y["test"]
    assert r2(y, fit["pred"]["test"]["global"]) > 0.5  # the trunk learns the template
    assert r2(y, fit["pred"]["test"]["deployed"]) > 0.5
    with pytest.raises(ValueError, match="residual mixture needs"):
        fit_residual(p, d, fit, gates)


def test_neural_learning_curve_stops_below_its_cap(neural_params):
    d = _spectra(n=(1600, 300, 300))
    pts = fit_curve(FAMILIES["neural"], neural_params, d, [600, 1200, 1500])
    assert [pt["n_train"] for pt in pts] == [600]  # 1200 is the cap: the full fit's own point
    assert set(pts[0]["pred"]) == {"global", "oracle_hard", "deployed"}


def _neural_run(seed=0, n=4000, sigma_scale=0.5):
    """The synthetic ridge/boosted run plus a neural family whose Gaussian σ is right in shape but
    ``sigma_scale`` times too small (post-hoc calibration must fix the scale)."""
    r = _run(seed, n)
    g = np.random.default_rng(seed + 100)
    r.sigma = {}
    for role in ("val", "test"):
        y, b = r.y[role], r.bins[role]
        sd = np.array([0.3, 0.5, 0.7, 0.9])[b]  # the true per-star error grows with the bin number
        r.pred[role] |= {f"neural_{v}": y + sd * g.normal(size=n) for v in
                         (*VARIANTS, "conditional", "residual_mixture", "residual_oracle_hard")}
        r.sigma[role] = {m: sigma_scale * sd for m in r.pred[role] if m.startswith("neural_")}
    return r


def test_neural_coverage_is_calibrated_and_named(params):
    from snrmoe_lib.analyses import q4_report

    runs, fams = [_neural_run()], ["ridge", "boosted", "neural"]
    s = q4.summarize(runs, fams, "boosted", n_boot=100, seed=0)
    assert {"neural_residual_mixture", "neural_conditional"} <= set(s.table.index)
    assert s.table.loc["neural_residual_mixture", "family"] == "neural"
    cov = q4_report.coverage(runs, ["neural_deployed", "ridge_global"], n_boot=50)
    nd = cov[cov.model == "neural_deployed"]
    assert set(nd.method) == {"mondrian", "global", "gaussian"} and nd.scaled.all()
    assert not cov[cov.model == "ridge_global"].scaled.any()
    mond = nd[nd.method == "mondrian"].set_index(["level", "bin"])["coverage"]
    for k in ["X", "L", "M", "H"]:
        assert abs(mond[(0.68, k)] - 0.68) < 0.06 and abs(mond[(0.95, k)] - 0.95) < 0.04
    raw = nd[(nd.method == "gaussian") & (nd.bin == "all")].set_index("level")["coverage"]
    assert raw[0.68] < 0.45  # σ half the truth: the raw Gaussian intervals under-cover, the calibrated ones do not
    sh = q4_report.shares(s, runs, fams)
    curve = q4_report.with_full_size(q4_report.curve_table(runs), s, runs)
    pits = q4_report.pit(runs, ["neural_deployed"])
    assert pits["neural_deployed"]["histogram"]["max_rel_deviation"] < 0.3
    res = q4_report.results(params, runs, s, q4.per_bin(runs, ["neural_deployed"], n_boot=20), cov, curve, sh,
                            pits, "S2", "test")
    m = res["metrics"]
    for name in ("neural_global_r2", "neural_oracle_hard_r2", "neural_oracle_soft_r2", "neural_deployed_r2",
                 "film_conditional_r2", "neural_residual_mixture_r2", "rho_neural_residual_mixture",
                 "routing_share_neural", "coverage68_neural_deployed_binX", "coverage95_neural_deployed_binH"):
        assert name in m, name
    assert m["film_conditional_r2"]["value"] == m["neural_conditional_r2"]["value"]
    assert {v["metric"] for v in res["verdicts"]} >= {"routing_share_neural", "deployed_gain_neural"}


def test_prediction_columns_stack_the_seeds_of_every_test_model():
    runs = [_run(0), _run(1)]
    cols = q4.prediction_columns(runs)
    assert set(cols) == set(runs[0].pred["test"])
    for m, a in cols.items():
        assert a.shape == (2, len(runs[0].pred["test"][m]))
        np.testing.assert_array_equal(a[1], runs[1].pred["test"][m])
