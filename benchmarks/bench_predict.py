"""Fit and predict throughput of the deployed model (spectra per second), against raw reading.

Measured in the same run on the configuration's dataset:

read          the dataset streamed in chunks (flux, error, mask, params): the floor any predict pays
predict       ``snrmoe predict`` on noise-free products: read + the protocol's noise draw + quality
              features + gate + experts + catalogue (Parquet), with a background reader thread
predict_noisy the same with ``--noisy`` (no noise draw: the flux is used as given)
fit           ``snrmoe fit`` without the save: the streamed experts' pass over train + validation +
              test, the compressor, the gate, τ, the calibration, the frozen-test metrics and the leak
              probe (spectra/s over the split's rows)

    .venv/bin/python benchmarks/bench_predict.py [--params params/smoke.yaml] [--family ridge|boosted|neural] [--rows N]
                                                 [--no-fit]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snrmoe_lib.config import load_params  # noqa: E402
from snrmoe_lib.data.io import DatasetWriter, open_dataset  # noqa: E402
from snrmoe_lib.data.mock import ensure_dataset  # noqa: E402


def _subset(ds, n: int, folder: Path) -> Path:
    """The first ``n`` rows as their own file (so predict runs over exactly them)."""
    path = folder / "subset.h5"
    with DatasetWriter(path, n, ds.wave, with_mask=ds.has_mask, lock=False) as w:
        for c in ds.iter_chunks(np.arange(n), chunk_size=4096):
            w.write(c.flux, c.error, c.params, mask=c.mask)
    return path


def _read(path: Path) -> float:
    t = time.perf_counter()
    with open_dataset(path) as ds:
        n = sum(len(c) for c in ds.iter_chunks(chunk_size=4096, with_mask=ds.has_mask))
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params" / "smoke.yaml"))
    ap.add_argument("--rows", type=int, default=None, help="spectra to predict (default: all of the dataset)")
    ap.add_argument("--no-fit", action="store_true", help="skip the fit timing")
    ap.add_argument("--family", default="ridge", choices=("ridge", "boosted", "neural"), help="the experts' family")
    args = ap.parse_args(argv)
    from snrmoe_lib.analyses.deploy import fit_deployed
    from snrmoe_lib.orchestration.predict import predict_catalogue

    params = load_params(args.params)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp, ensure_dataset(params, progress=False) as ds:
        tmp = Path(tmp)
        t = time.perf_counter()
        model, _ = fit_deployed(ds, params, family=args.family)
        dt = time.perf_counter() - t
        n_fit = params.split.n_train + params.split.n_val + params.split.n_test
        if not args.no_fit:
            figures["fit"] = n_fit / dt
        n = min(args.rows or ds.n, ds.n)
        data = ds.path if n == ds.n else _subset(ds, n, tmp)
        figures["read"] = _read(data)
        for key, noisy in (("predict", False), ("predict_noisy", True)):
            s = predict_catalogue(model, data, tmp / f"{key}.parquet", noisy=noisy, progress=False)
            figures[key] = s["spectra_per_s"]
    print(f"configuration {params.name}, {args.family} experts, σ read: {model.error_mode}: {n} spectra predicted, "
          f"fit on {n_fit} (train + val + test)")
    for key, v in figures.items():
        ratio = "" if key == "read" else f"  ({v / figures['read']:.2f} × raw read)"
        print(f"{key:14s} {v:10.0f} spectra/s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
