"""Q4's family registry and its fits on synthetic in-memory data (no dataset needed)."""
import numpy as np
import pytest

from conftest import ROOT
from snrmoe_lib.analyses import q4
from snrmoe_lib.analyses.q4_data import Q4Data, train_rows
from snrmoe_lib.analyses.q4_families import FAMILIES, VARIANTS, family, fit_family, fit_gates, fit_residual
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
    assert set(FAMILIES) <= set(Q4Spec.FAMILIES)
    with pytest.raises(ValueError, match="not registered"):
        family("neural") if "neural" not in FAMILIES else family("nope")
    with pytest.raises(ParameterError, match="q4.residual_base"):
        Q4Spec(families=["ridge"], residual_base="boosted")
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
