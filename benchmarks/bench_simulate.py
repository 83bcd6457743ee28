"""Throughput and memory of the mock generator (random mode), against the simple mock as baseline.

Each configuration runs in a fresh subprocess so its peak RSS is its own. Prints spectra/s, the
ratio to the simple model measured in the same run, and peak RSS at two dataset sizes (memory
must not grow with N: generation streams in chunks).

    .venv/bin/python benchmarks/bench_simulate.py [--n 4000] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(model: str, n: int, workers: int, chunk: int) -> dict:
    import torch

    from snrmoe_lib.config import MockSpec
    from snrmoe_lib.data.mock import get_model, simulate

    if workers > 1:
        torch.set_num_threads(1)
    get_model(model)  # build static templates outside the timed region
    spec = MockSpec(n=n, seed=1, chunk_size=chunk, model=model, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        r0, k0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0 = r0.ru_utime + r0.ru_stime + k0.ru_utime + k0.ru_stime
        t0 = time.perf_counter()
        simulate(spec, Path(tmp) / "bench.h5", progress=False)
        dt = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0
    return {"model": model, "n": n, "workers": workers, "seconds": dt, "spectra_per_s": n / dt,
            "cpu_s_per_1000": 1000.0 * cpu / n, "peak_rss_mb": me.ru_maxrss / 1024.0,
            "peak_rss_worker_mb": kids.ru_maxrss / 1024.0 if workers > 1 else float("nan")}


def _run(model: str, n: int, workers: int, chunk: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", model, str(n), str(workers), str(chunk)],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="spectra per timed run")
    ap.add_argument("--workers", type=int, default=2, help="processes for the parallel run")
    ap.add_argument("--chunk", type=int, default=500, help="rows per chunk")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        m, n, w, c = a.child
        print(json.dumps(_one(m, int(n), int(w), int(c))))
        return
    print(f"cores visible: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f} "
          "(other processes on the machine slow the wall-clock figures; CPU s/1000 is less affected)")
    runs = [("simple", a.n, 1), ("calibrated", a.n, 1), ("calibrated", a.n, a.workers),
            ("calibrated", 4 * a.n, a.workers)]
    res = [_run(m, n, w, a.chunk) for m, n, w in runs]
    base = res[0]["spectra_per_s"]
    print(f"{'model':<11} {'N':>6} {'workers':>7} {'spectra/s':>10} {'× simple':>9} {'CPU s/1000':>11} "
          f"{'peak RSS main':>14} {'peak RSS worker':>16}")
    for r in res:
        print(f"{r['model']:<11} {r['n']:>6} {r['workers']:>7} {r['spectra_per_s']:>10.0f} {r['spectra_per_s'] / base:>9.2f} "
              f"{r['cpu_s_per_1000']:>11.2f} {r['peak_rss_mb']:>11.0f} MB {r['peak_rss_worker_mb']:>13.0f} MB")
    grow = max(res[3]["peak_rss_mb"], res[3]["peak_rss_worker_mb"]) / max(res[2]["peak_rss_mb"], res[2]["peak_rss_worker_mb"])
    print(f"peak RSS at N = {4 * a.n} vs N = {a.n}: × {grow:.2f} (bounded memory: ≈ 1)")
    # steady state: the largest run amortises the workers' start-up (each imports torch)
    best = res[3]
    print(f"target ≥ 1000 spectra/s: {'met' if best['spectra_per_s'] >= 1000 else 'NOT met'} "
          f"({best['spectra_per_s']:.0f} spectra/s with {a.workers} workers at N = {best['n']}; "
          f"load average after: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
