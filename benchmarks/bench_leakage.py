"""Benchmark: the leakage audit's Ridge α path (one eigendecomposition) against one Ridge fit per α.

The Q2 audit fits a Ridge on the raw error (4,096 features) for a grid of α and several targets
(log g, SNR and three shuffled labels). :class:`snrmoe_lib.models.ridge.AlphaPathRidge` decomposes the
training design once and solves every α and target from it. The baseline, measured in the same
run on the same synthetic inputs, is scikit-learn's ``Ridge`` refitted for each α (all targets at
once, its fastest use), with the same standardisation. Both give the same predictions (checked).

    .venv/bin/python benchmarks/bench_leakage.py [--n-train 1000] [--n-pix 4096] [--n-alphas 11]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from snrmoe_lib.models.ridge import AlphaPathRidge, MethodChangeWarning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--n-pix", type=int, default=4096)
    ap.add_argument("--n-alphas", type=int, default=11)
    ap.add_argument("--n-targets", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    # correlated "error vectors": a common template times a scale plus a few star-dependent lines
    e0 = rng.uniform(0.1, 1.0, a.n_pix)
    scale = rng.uniform(0.5, 2.0, a.n_train + a.n_test)
    lines = rng.standard_normal((a.n_train + a.n_test, 40)) @ rng.standard_normal((40, a.n_pix)) * 0.01
    X = scale[:, None] * (e0[None, :] + lines)
    Y = rng.standard_normal((len(X), a.n_targets))
    Xtr, Xte, Ytr = X[:a.n_train], X[a.n_train:], Y[:a.n_train]
    alphas = [10.0 ** k for k in np.linspace(-4, 6, a.n_alphas)]

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MethodChangeWarning)
        path = AlphaPathRidge(alphas=alphas).fit(Xtr, Ytr)
    P = path.predict_path(Xte)
    t_path = time.perf_counter() - t0

    t0 = time.perf_counter()
    sc = StandardScaler().fit(Xtr)
    Xs, Xts = sc.transform(Xtr), sc.transform(Xte)
    ref = [Ridge(alpha=al).fit(Xs, Ytr).predict(Xts) for al in alphas]
    t_loop = time.perf_counter() - t0

    err = max(float(np.max(np.abs(P[i] - ref[i]))) for i in range(len(alphas)))
    print(f"design {a.n_train} × {a.n_pix}, {a.n_alphas} α, {a.n_targets} targets, test {a.n_test}")
    print(f"{'method':38s} {'seconds':>8s} {'ratio':>7s}")
    print(f"{'sklearn Ridge, one fit per α (baseline)':38s} {t_loop:8.2f} {1.0:7.2f}")
    print(f"{'AlphaPathRidge, one eigendecomposition':38s} {t_path:8.2f} {t_loop / t_path:7.2f}× faster")
    print(f"max |prediction difference| = {err:.2e}")


if __name__ == "__main__":
    main()
