"""Split-conformal intervals: coverage near nominal, per bin (Mondrian) and global; PIT; σ against a bound."""
import numpy as np
import pytest

from snrmoe_lib.evaluation.intervals import (calibrate, conformal_quantile, coverage, coverage_table, interval,
                                             pit_histogram, pit_values, predicted_sigma, sigma_vs_bound)


def _heteroscedastic(n, seed):
    """Four bins whose noise σ differs by a factor of 8: a global interval over-covers some, under-covers others."""
    g = np.random.default_rng(seed)
    b = g.integers(0, 4, n)
    sigma = np.array([0.1, 0.2, 0.4, 0.8])[b]
    pred = g.normal(size=n)
    return pred + sigma * g.normal(size=n), pred, b, sigma


LABELS = ["X", "L", "M", "H"]


def test_mondrian_coverage_is_near_nominal_in_every_bin():
    yv, pv, bv, _ = _heteroscedastic(40000, 0)
    yt, pt, bt, _ = _heteroscedastic(20000, 1)
    cal = calibrate(yv, pv, bv, LABELS)
    t = coverage_table(cal, yt, pt, bt, n_boot=100)
    for rec in t.itertuples():
        assert abs(rec.coverage - rec.level) < 0.025, rec
        assert rec.lo <= rec.coverage <= rec.hi
    g = coverage_table(cal, yt, pt, bt, mondrian=False, n_boot=0)
    low, high = g[(g.level == 0.68) & (g.bin == "X")].coverage.item(), g[(g.level == 0.68) & (g.bin == "H")].coverage.item()
    assert low > 0.9 and high < 0.45  # one global width: right on average, wrong in every bin
    assert abs(g[(g.level == 0.68) & (g.bin == "all")].coverage.item() - 0.68) < 0.02


def test_normalised_scores_scale_with_the_predicted_sigma():
    yv, pv, bv, sv = _heteroscedastic(6000, 2)
    yt, pt, bt, st = _heteroscedastic(10000, 3)
    cal = calibrate(yv, pv, levels=(0.68, 0.95), scale_val=sv)
    lo, hi = interval(cal, pt, 0.95, scale=st)
    assert abs(coverage(yt, lo, hi).mean() - 0.95) < 0.01
    np.testing.assert_allclose(predicted_sigma(cal, len(st), scale=st) / st, cal.q_global[0.68])
    assert abs(cal.q_global[0.68] - 1.0) < 0.05  # |N(0,1)| 68 % quantile ≈ 0.994
    with pytest.raises(ValueError, match="pass scale"):
        interval(cal, pt, 0.68)


def test_quantile_rule_and_small_bins_fall_back():
    assert conformal_quantile(np.arange(1, 10), 0.5) == 5.0  # ⌈10 · 0.5⌉ = 5th smallest
    assert conformal_quantile([1.0, 2.0], 0.95) == np.inf
    y = np.r_[np.zeros(50), 0.0]
    p = np.r_[np.linspace(-1, 1, 50), 0.5]
    cal = calibrate(y, p, np.r_[np.zeros(50, int), 1], ["A", "B"])
    assert cal.fallback[0.95] == ["B"] and cal.q_bin[0.95][1] == cal.q_global[0.95]


def test_pit_is_uniform_when_calibrated_and_shows_overconfidence():
    yv, pv, bv, _ = _heteroscedastic(5000, 4)
    yt, pt, bt, _ = _heteroscedastic(20000, 5)
    cal = calibrate(yv, pv, bv, LABELS)
    h = pit_histogram(pit_values(cal, yt, pt, bt))
    assert h["max_rel_deviation"] < 0.12 and sum(h["counts"]) == 20000
    wide = pit_histogram(pit_values(cal, pt + 3 * (yt - pt), pt, bt))  # test errors 3× the calibration's
    assert wide["counts"][0] > 2 * wide["expected"] and wide["counts"][-1] > 2 * wide["expected"]


def test_sigma_against_a_bound_per_bin():
    b = np.array([0, 0, 1, 1])
    t = sigma_vs_bound([0.2, 0.4, 0.5, 0.5], [0.1, 0.2, 1.0, 1.0], b, ["X", "L"])
    assert t.ratio_median.tolist() == [2.0, 0.5] and t.below_bound.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("call, match", [
    (lambda: calibrate([1.0], [1.0]), "needs validation rows"),
    (lambda: calibrate([1.0, 2.0], [1.0]), "pred has 1 values for 2"),
    (lambda: calibrate([1.0, np.nan], [1.0, 2.0]), "NaN"),
    (lambda: calibrate([1.0, 2.0], [1.0, 2.0], levels=(1.2,)), r"fraction in \(0, 1\)"),
    (lambda: calibrate([1.0, 2.0], [1.0, 2.0], bins_val=[0, 3], labels=["a", "b"]), r"bins must lie in \[0, 2\)"),
    (lambda: calibrate([1.0, 2.0], [1.0, 2.0], bins_val=[0.0, 1.0], labels=["a", "b"]), "integer"),
    (lambda: calibrate([1.0, 2.0], [1.0, 2.0], scale_val=[1.0, 0.0]), "positive"),
    (lambda: calibrate([1.0, 2.0, 3.0], [1.0, 2.0, 2.0]).half_width(0.5), "not calibrated"),
    (lambda: pit_histogram([0.5], n_bins=1), "n_bins"),
    (lambda: sigma_vs_bound([1.0], [0.0], [0], ["a"]), "positive"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_deployed_and_notebook_calibrations_share_the_quantile_and_keep_their_small_bin_policies():
    """One conformal quantile (models.conformal) under both: the deployed model's per-observed-SNR-bin
    half-widths and the notebooks' Mondrian ones agree wherever a bin has enough rows; a bin too small
    pools every residual (deployed: always finite) or takes the global quantile (notebooks: inf when
    even all rows are too few)."""
    from snrmoe_lib.models import conformal
    from snrmoe_lib.models.deployed import SplitConformalPerBin

    assert conformal.conformal_quantile is conformal_quantile
    assert conformal.conformal_rank(9, 0.5) == 5 and conformal.conformal_rank(2, 0.95) == 3
    r = np.r_[np.linspace(0.1, 3.0, 30), np.linspace(0.2, 0.6, 4)]
    snr = np.r_[np.full(30, 1.0), np.full(4, 5.0)]
    dep = SplitConformalPerBin([2.0], level=0.9).fit(r, snr)
    nb = calibrate(r, np.zeros(len(r)), np.r_[np.zeros(30, int), np.ones(4, int)], ["low", "high"], levels=(0.9,))
    assert dep.half_width_[0] == nb.q_bin[0.9][0] == np.sort(r[:30])[27]  # ⌈31 · 0.9⌉ = 28th smallest
    assert dep.pooled_.tolist() == [False, True] and nb.fallback[0.9] == ["high"]
    assert dep.half_width_[1] == nb.q_bin[0.9][1] == conformal_quantile(r, 0.9)
    assert dep.sigma_[1] == np.sqrt(np.mean(r ** 2))  # a pooled bin reports the RMS of all residuals
    tiny = SplitConformalPerBin([2.0], level=0.9).fit([0.5, -2.0, 1.0], [1.0, 1.0, 5.0])
    assert tiny.half_width_.tolist() == [2.0, 2.0] and tiny.pooled_.all()  # too few in all: the largest
    few = calibrate([0.0, 0.0, 0.0], [0.5, -2.0, 1.0], [0, 0, 1], ["a", "b"], levels=(0.9,))
    assert np.isinf(few.q_global[0.9]) and np.isinf(few.q_bin[0.9]).all()
    with pytest.raises(ValueError, match="NaN"):
        conformal.per_bin_quantile([1.0, np.nan], [0, 1], 2, 0.9)
