"""Intervals behind verdicts carry training variability: the two-level (stars × seeds) bootstrap."""
from __future__ import annotations

import numpy as np

from snrmoe_lib.evaluation.metrics import seed_delta_r2, seed_r2, seed_resample_mean


def _preds(spread: float, n: int = 2000, seeds: int = 3):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(n)
    # each seed's model has its own systematic error (a training realisation), of size ``spread``
    P = np.stack([y + 0.5 * rng.standard_normal(n) + spread * (s - 1) * y for s in range(seeds)])
    return y, P


def test_seed_resampling_widens_the_interval_by_the_seed_spread():
    y, P = _preds(spread=0.3)
    stars = seed_r2(y, P, n_boot=400, resample_seeds=False)["interval"]
    both = seed_r2(y, P, n_boot=400)["interval"]
    assert both[1] - both[0] > 1.5 * (stars[1] - stars[0])
    # with identical seeds there is nothing to add
    y, P = _preds(spread=0.0, seeds=1)
    assert seed_r2(y, P, n_boot=200)["interval"] == seed_r2(y, P, n_boot=200, resample_seeds=False)["interval"]


def test_paired_differences_resample_the_same_seeds_for_both_models():
    y, P = _preds(spread=0.3)
    d = seed_delta_r2(y, P, P, n_boot=200)
    assert d["value"] == 0 and d["interval"] == [0.0, 0.0]


def test_seed_resample_mean_is_the_mean_without_resampling():
    B = np.arange(12.0).reshape(3, 4)
    assert np.allclose(seed_resample_mean(B, resample_seeds=False), B.mean(axis=0))
    draws = seed_resample_mean(B, seed=1)
    assert draws.shape == (4,) and np.all((draws >= B.min(axis=0)) & (draws <= B.max(axis=0)))
