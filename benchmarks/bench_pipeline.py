"""End-to-end scale benchmark: the Q1 + Q3 pipeline on a sharded mock set of N spectra, streamed.

Issue 7/7 targets (at N = 1,000,000 on 2 cores, generation excluded): peak RSS < 6 GB; Q1 + Q3
under 10 minutes. The 1M run is not part of CI; ``make bench`` runs the default N = 20,000.

Stages (wall time, and peak RSS of this process sampled every 50 ms during the stage):

generate        the mock writes a sharded dataset (``mock.shard_size``); timed separately
q1_oracle       Q1: one seed of the oracle experiments — a streamed pass over train (a Gram per
                SNR-bin × physical-bin cell), val (α choice) and test (predictions), global model,
                SNR experts and physical experts (:func:`snrmoe_lib.models.experts.fit_oracle_stream`)
q3_deployable   Q3: one seed of the deployable MoE (:func:`snrmoe_lib.analyses.q3.run_deployable`: its own
                expert pass, quality features, gates, regression gate, Gate-4 controls)
stats_local     the global train Gram in one process (:func:`snrmoe_lib.models.ridge.stream_stats`)
stats_dask      the same Gram from per-shard statistics computed on a Dask LocalCluster's workers and
                summed (:func:`snrmoe_lib.orchestration.distributed.distributed_stats`); checked equal to stats_local

Gram throughput: :class:`~snrmoe_lib.models.ridge.GramStats` updates (float64 dsyrk on the lower triangle,
N·D² useful flops) against a numpy ``X.T @ X`` matmul (2·N·D² flops) of the same block, measured in
the same run. Below N = 1,000,000 each Q stage also runs on a quarter of the split, and the 1M
figures printed at the end are EXTRAPOLATED from the two sizes (fixed + per-spectrum cost; the
streaming pass is linear in N, the per-model solves do not depend on N) and labelled as such; at
N = 1,000,000 they are measured.

Each Q stage is one sequential pass over the dataset (:func:`snrmoe_lib.data.passes.split_pass`): train,
validation and test rows read together in file order, the noise drawn once per spectrum.

    .venv/bin/python benchmarks/bench_pipeline.py [--n 20000] [--shard-size 5000] [--workdir DIR]
                                                  [--keep] [--no-dask] [--bin-pixels 4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGET_N = 1_000_000


class RssSampler:
    """Peak resident set size of this process during a block (sampled from /proc every 50 ms)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.05)

    def __enter__(self):
        self.peak = self.rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def stage(results: dict, name: str, fn, *args, **kw):
    with RssSampler() as s:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds of this process beside the wall time: on a shared machine wall time includes waiting
    results[name] = {"seconds": dt, "cpu_seconds": cpu, "peak_rss_gb": s.peak / 1e9, "load_avg": os.getloadavg()[0]}
    print(f"  {name:<22} {dt:8.1f} s wall {cpu:8.1f} s CPU   peak RSS {s.peak / 1e9:5.2f} GB   "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return out


def gram_throughput(D: int, n: int = 4096, repeats: int = 5) -> dict:
    """GFLOP/s of GramStats.update vs numpy matmul on the same (n, D) float64 block."""
    from snrmoe_lib.models.ridge import GramStats

    X = np.random.default_rng(0).standard_normal((n, D))
    y = X[:, 0].copy()
    g = GramStats(D)
    g.update(X[:8], y[:8])  # allocate and set the shift outside the timing
    t_upd, t_mm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g.update(X, y)
        g.nbytes()  # flushes any buffered rows: the Gram is really updated
        t_upd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _ = X.T @ X
        t_mm.append(time.perf_counter() - t0)
    upd, mm = float(np.median(t_upd)), float(np.median(t_mm))
    return {"D": D, "rows": n, "gram_update_s": upd, "matmul_s": mm,
            "gram_gflops_useful": n * D * D / upd / 1e9, "matmul_gflops": 2 * n * D * D / mm / 1e9,
            "gram_vs_matmul_time": upd / mm}


def make_params(n: int, shard_size: int, workdir: Path, bin_pixels: int):
    from snrmoe_lib.config import load_params

    n_val, n_test = int(0.08 * n), int(0.2 * n)
    over = {"name": f"bench{n}",
            "data": {"path": str(workdir / f"mock_bench_{n}"),
                     "mock": {"mode": "random", "n": n, "seed": 42, "chunk_size": 1000, "shard_size": shard_size}},
            "split": {"n_train": n - n_val - n_test, "n_val": n_val, "n_test": n_test, "seed": 0},
            "ridge": {"bin_pixels": bin_pixels}}
    return load_params(ROOT / "params" / "default.yaml", overrides=over)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="spectra (default 20,000; the issue's target is 1,000,000)")
    ap.add_argument("--shard-size", type=int, default=5_000, help="rows per shard (the user's set: 200,000)")
    ap.add_argument("--workdir", default=None, help="where the dataset goes (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated dataset (reused by the next run)")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask LocalCluster stage")
    ap.add_argument("--workers", type=int, default=2, help="Dask LocalCluster worker processes")
    ap.add_argument("--bin-pixels", type=int, default=None, help="ridge.bin_pixels (default: default.yaml's)")
    a = ap.parse_args()

    from snrmoe_lib.analyses.q1 import oracle_settings, routers_from_params
    from snrmoe_lib.models.experts import fit_oracle_stream
    from snrmoe_lib.data.io import open_dataset, split_rows
    from snrmoe_lib.data.mock import simulate
    from snrmoe_lib.models.ridge import stream_stats
    from snrmoe_lib.features.flux import FluxFeatures

    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="snrmoe-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bp = a.bin_pixels
    p = make_params(a.n, a.shard_size, workdir, bp or 1)
    if bp is None:
        from snrmoe_lib.config import load_params

        bp = load_params(ROOT / "params" / "default.yaml").ridge.bin_pixels
        p.ridge.bin_pixels = bp
    res: dict = {"n": a.n, "shard_size": a.shard_size, "bin_pixels": bp, "cpu_count": os.cpu_count(),
                 "load_avg_start": os.getloadavg(), "model": p.data.mock.model, "stages": {}}
    st = res["stages"]
    print(f"bench_pipeline: N = {a.n:,} spectra, shards of {a.shard_size:,}, D = 4096/{bp} features, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    try:
        if not p.dataset_path.exists():
            stage(st, "generate", simulate, p.data.mock, p.dataset_path, progress=False)
        else:
            print(f"  generate       (reusing {p.dataset_path})")
        ds = open_dataset(p.dataset_path)
        print(f"  dataset: {ds}")
        split = split_rows(ds.n, p.split.n_train, p.split.n_val, p.split.n_test, p.split.seed)
        seed, nl = p.seeds[0], p.noise.noise_level

        from snrmoe_lib.evaluation import metrics as M
        from snrmoe_lib.analyses.q3 import resolve_representation, run_deployable

        rep, _ = resolve_representation(p, None)
        # each pipeline stage at a quarter of the split, then at the full split: the two points
        # separate the fixed cost (per-model solves, gate training) from the per-spectrum cost
        sizes = (("_quarter", quarter(split)), ("", split)) if a.n < TARGET_N else (("", split),)
        for tag, sp in sizes:
            run = stage(st, "q1_oracle" + tag, fit_oracle_stream, ds, sp, routers_from_params(p),
                        oracle_settings(p, nl, seed), features=FluxFeatures(bp))
            res["q1_global_r2" + tag] = M.r2(run.y, run.global_prediction())
            res["q1_snr_oracle_r2" + tag] = M.r2(run.y, run.oracle_prediction("snr"))
            del run
            dep = stage(st, "q3_deployable" + tag, run_deployable, ds, sp, p, seed, rep)
            res["q3_deployed_r2" + tag] = M.r2(dep.y, dep.pred["deployed"])
            del dep

        ref, _ = stage(st, "stats_local", stream_stats, ds, split.train, noise_level=nl, seed=seed,
                       features=FluxFeatures(bp), chunk_size=p.data.chunk_size)
        if not a.no_dask:
            res["dask"] = run_dask(st, ds.path, split.train, nl, seed, bp, p.data.chunk_size, a.workers, ref)
        ds.close()
        res["gram"] = gram_throughput(4096 // bp)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    res["peak_rss_gb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    report(res, a.n)


def quarter(split):
    """The first quarter of each part of a split (a smaller problem with the same data)."""
    from snrmoe_lib.data.io import Split

    return Split(*(np.sort(r)[: max(1, len(r) // 4)] for r in (split.train, split.val, split.test)), split.seed)


def run_dask(st, path, rows, nl, seed, bp, chunk_size, workers, ref) -> dict:
    import dask
    from distributed import Client, LocalCluster

    from snrmoe_lib.orchestration.distributed import distributed_stats

    dask.config.set({"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False})
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        stats, _ = stage(st, "stats_dask", distributed_stats, path, rows, noise_level=nl, seed=seed, bin_pixels=bp,
                         chunk_size=chunk_size, executor=client.get_executor(pure=False))
        mem = client.run(_vm_hwm)
    a, b = ref.centered(0), stats.centered(0)
    rel = float(np.abs(a["C"] - b["C"]).max() / np.abs(a["C"]).max())
    worker_peak = max(mem.values()) / 1e9
    print(f"  dask Gram = local Gram: max relative difference {rel:.1e}; worker peak RSS {worker_peak:.2f} GB")
    if rel > 1e-9:
        raise SystemExit(f"the per-shard Gram differs from the one-pass Gram (relative {rel:.1e})")
    return {"workers": workers, "max_rel_diff_C": rel, "worker_peak_rss_gb": worker_peak}


def _vm_hwm() -> int:
    """Peak RSS of the calling process (VmHWM; ru_maxrss would include the parent's before exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def report(res: dict, n: int) -> None:
    st, g = res["stages"], res["gram"]
    print("\nmeasured (this machine, this run)")
    print(f"{'stage':<22} {'wall s':>9} {'CPU s':>8} {'spectra/s':>10} {'peak RSS GB':>12} {'load avg':>9}")
    for name, s in st.items():
        m = n // 4 if name.endswith("_quarter") else n
        print(f"{name:<22} {s['seconds']:9.1f} {s['cpu_seconds']:8.1f} {m / s['seconds']:10.0f} "
              f"{s['peak_rss_gb']:12.2f} {s['load_avg']:9.1f}")
    print(f"\nGram update: {g['gram_gflops_useful']:.1f} GFLOP/s useful (dsyrk, N·D² flops) vs numpy matmul "
          f"{g['matmul_gflops']:.1f} GFLOP/s (2·N·D²) at D = {g['D']}; time per block: Gram / matmul = "
          f"{g['gram_vs_matmul_time']:.2f}")
    q = sum(st[k]["seconds"] for k in ("q1_oracle", "q3_deployable"))
    c = sum(st[k]["cpu_seconds"] for k in ("q1_oracle", "q3_deployable"))
    res["q1_q3_seconds"] = q
    if "q1_oracle_quarter" in st:
        q4 = sum(st[k]["seconds"] for k in ("q1_oracle_quarter", "q3_deployable_quarter"))
        c4 = sum(st[k]["cpu_seconds"] for k in ("q1_oracle_quarter", "q3_deployable_quarter"))
        c_1m = c + (c - c4) / (0.75 * n) * (TARGET_N - n)
        per_spectrum = (q - q4) / (0.75 * n)  # two sizes: t(N) = fixed + per_spectrum · N
        fixed = q - per_spectrum * n
        q_1m = fixed + per_spectrum * TARGET_N
        res["q1_q3_fit"] = {"fixed_s": fixed, "per_spectrum_s": per_spectrum}
        res["q1_q3_extrapolated_1m_seconds"] = q_1m
        res["q1_q3_cpu_extrapolated_1m_seconds"] = c_1m
        print(f"\nQ1 + Q3 (one seed) at N = {n:,}: {q:.0f} s; at N/4: {q4:.0f} s → fixed {fixed:.0f} s + "
              f"{per_spectrum * 1e3:.2f} ms per spectrum")
        print(f"EXTRAPOLATED to N = 1,000,000 (fixed + linear fit, not measured): Q1 + Q3 ≈ {q_1m / 60:.1f} min "
              f"(target < 10 min: {'met' if q_1m < 600 else 'NOT met'}); in CPU seconds ≈ {c_1m / 60:.1f} min")
        if "generate" in st:
            print(f"EXTRAPOLATED generation at 1M ≈ {st['generate']['seconds'] * TARGET_N / n / 60:.0f} min")
    else:
        print(f"\nQ1 + Q3 (one seed) at N = {n:,}, MEASURED: {q:.0f} s = {q / 60:.1f} min wall, {c / 60:.1f} min CPU "
              f"(target at 1M < 10 min: {'met' if q < 600 else 'NOT met'})")
    peak = max([s["peak_rss_gb"] for s in st.values()] + [res.get("dask", {}).get("worker_peak_rss_gb", 0)])
    print(f"peak RSS: {peak:.2f} GB (target < 6 GB; streamed: a few chunks, the Grams, and the test rows' features kept as float32)")
    res["peak_rss_gb"] = peak
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"bench_pipeline_{n}.json").write_text(json.dumps(res, indent=2, default=float))
    print(f"figures written to benchmarks/out/bench_pipeline_{n}.json")


if __name__ == "__main__":
    sys.exit(main())
