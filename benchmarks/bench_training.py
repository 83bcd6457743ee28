"""Benchmark of the neural experts' training (snrmoe_lib.models.neural): streamed from HDF5 vs in memory.

Every figure is a ratio against a baseline measured in the same run on the same machine:

1. Training rate (spectra per second, training rows × epochs / fit wall time, validation included)
   of the default CNN on binned input (4,096 pixels → 1,024 features) on ``--threads`` CPU threads:
   fed from in-memory arrays (the baseline) and streamed from an HDF5 file through the split pass
   with fresh noise per epoch. The ratio streamed / in memory is the streaming overhead.
   Targets of the project: ratio ≥ 0.8 and ≥ 2,000 spectra/s on 2 cores.
2. Peak memory (max RSS) of a streamed fit at two N, each in a fresh process: it should not grow with N.
3. The same two rates on CUDA, when torch sees a GPU.

The machine may be shared: the load average is printed beside the figures; timings are best of
``--repeat``, the two contenders run in turn. Usage::

    python benchmarks/bench_training.py            # about two to five minutes on 2 cores
    python benchmarks/bench_training.py --quick    # small sizes
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snrmoe_lib.data.io import DatasetWriter, open_dataset  # noqa: E402
from snrmoe_lib.data.passes import split_pass  # noqa: E402
from snrmoe_lib.features.flux import FluxFeatures  # noqa: E402
from snrmoe_lib.models.neural import NeuralExperts, SpectrumInputs, StreamSource  # noqa: E402

N_PIX, BIN, CHUNK = 4096, 4, 1024


def write_dataset(path: Path, n: int, seed: int = 0) -> None:
    """A dataset whose flux carries log g as the depth of a few lines (pixel values as the mock's)."""
    g = np.random.default_rng(seed)
    grid = np.linspace(0, 1, N_PIX)
    lines = sum(np.exp(-0.5 * ((grid - c) / 0.002) ** 2) for c in (0.2, 0.45, 0.7, 0.9))
    with DatasetWriter(path, n, np.linspace(7100, 8850, N_PIX), with_mask=False) as w:
        for s in range(0, n, 1000):
            k = min(1000, n - s)
            lg = g.uniform(1, 5, k)
            flux = (1 - 0.1 * (lg[:, None] - 0.5) * lines[None, :] / 5).astype(np.float32)
            err = (g.uniform(0.02, 0.2, (k, 1)) * np.ones(N_PIX)).astype(np.float32)
            w.write(flux, err, pd.DataFrame({"log_g": lg, "T_eff": 5000.0 + 0 * lg, "M_H": 0.0 * lg}))


def source(ds, n_val: int, workers: int = 2) -> StreamSource:
    rows = np.arange(ds.n)
    return StreamSource(ds, rows[n_val:], rows[:n_val], noise_level=1.0, seed=0,
                        inputs=SpectrumInputs(bin_pixels=BIN), aux=(), chunk_size=CHUNK, workers=workers)


def in_memory(ds, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parts = [(nc.X.astype(np.float32), nc.y) for _, nc in split_pass(ds, {"r": rows}, noise_level=1.0, seed=0,
                                                                     features=FluxFeatures(BIN), chunk_size=CHUNK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def model(epochs: int, threads: int, device: str) -> NeuralExperts:
    return NeuralExperts(max_epochs=epochs, patience=epochs, n_threads=threads, device=device)


def rates(ds, n_val: int, epochs: int, threads: int, device: str, repeat: int) -> dict:
    """Best training rate of each contender (spectra/s), run in turn."""
    src = source(ds, n_val)
    X, y = in_memory(ds, src.train_rows)
    Xv, yv = in_memory(ds, src.val_rows)
    n = len(src.train_rows) * epochs
    fits = {"memory": lambda: model(epochs, threads, device).fit(X, y, X_val=Xv, y_val=yv),
            "stream": lambda: model(epochs, threads, device).fit_stream(src)}
    model(1, threads, device).fit(X[:512], y[:512])  # warm-up: torch's first calls are slow
    times: dict = {k: [] for k in fits}
    cpu: dict = {k: [] for k in fits}
    for _ in range(repeat):
        for k, fit in fits.items():
            t, c = time.perf_counter(), time.process_time()
            m = fit()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    r2 = float(m.score(Xv, yv))
    return ({k: n / min(v) for k, v in times.items()} | {f"{k}_per_cpu_s": n / min(v) for k, v in cpu.items()}
            | {"val_r2_stream": r2, "n_train": len(src.train_rows), "epochs": epochs})


def child(path: str, n_val: int, threads: int) -> None:
    """One streamed epoch in a fresh process; prints its time and max RSS as JSON."""
    ds = open_dataset(path)
    t = time.perf_counter()
    model(1, threads, "cpu").fit_stream(source(ds, n_val))
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": ds.n, "seconds": dt, "maxrss_mb": rss}))


def memory(tmp: Path, sizes: list[int], n_val: int, threads: int) -> list[dict]:
    out = []
    for n in sizes:
        path = tmp / f"m{n}.h5"
        write_dataset(path, n, seed=1)
        run = subprocess.run([sys.executable, __file__, "--child", str(path), str(n_val), str(threads)],
                             capture_output=True, text=True, check=True)
        out.append(json.loads(run.stdout.strip().splitlines()[-1]))
        path.unlink()
    return out


def report(res: dict) -> None:
    c = res["cpu"]
    print(f"\n1. Training rate, default CNN, {BIN}-pixel bins (D = {N_PIX // BIN}), {res['threads']} threads, "
          f"{c['n_train']} training spectra × {c['epochs']} epochs (validation included)")
    print(f"   in memory : {c['memory']:8.0f} spectra/s   (baseline)")
    print(f"   streamed  : {c['stream']:8.0f} spectra/s   = {c['stream'] / c['memory']:.2f} of in memory "
          f"(target ≥ 0.80; absolute target ≥ 2,000 spectra/s)")
    print(f"   per CPU-second (all threads, background reads and noise included): in memory "
          f"{c['memory_per_cpu_s']:.0f}, streamed {c['stream_per_cpu_s']:.0f} spectra/s "
          f"(= {c['stream_per_cpu_s'] / c['memory_per_cpu_s']:.2f}); the wall rate on {res['threads']} idle cores "
          f"is at most {res['threads']}× these")
    print(f"   validation R² of the streamed fit: {c['val_r2_stream']:.3f} (a sanity check, not a target)")
    m = res["memory"]
    print("\n2. Peak memory of one streamed epoch (fresh process each)")
    for r in m:
        print(f"   N = {r['n']:<7d} {r['seconds']:7.1f} s   max RSS {r['maxrss_mb']:7.0f} MB")
    print(f"   RSS ratio {m[1]['maxrss_mb'] / m[0]['maxrss_mb']:.2f} for an N ratio of {m[1]['n'] / m[0]['n']:.0f}")
    if "cuda" in res:
        g = res["cuda"]
        print(f"\n3. CUDA: in memory {g['memory']:.0f}, streamed {g['stream']:.0f} spectra/s "
              f"(= {g['stream'] / g['memory']:.2f}; {g['memory'] / c['memory']:.1f}× the CPU in-memory rate)")
    else:
        print("\n3. CUDA: torch sees no GPU here; no GPU figure")
    print(f"\nload average before / after: {res['load_before']} / {res['load_after']} on {os.cpu_count()} CPUs "
          "(a shared machine: rates scale with the share of the cores this run got)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("PATH", "NVAL", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_training.json"))
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]))
        return
    import torch

    n, n_val, epochs = (2560, 512, 1) if a.quick else (8704, 512, 2)
    sizes = [1536, 6144] if a.quick else [3072, 12288]
    res: dict = {"threads": a.threads, "load_before": [round(x, 1) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        path = Path(tmp) / "train.h5"
        write_dataset(path, n)
        with open_dataset(path) as ds:
            res["cpu"] = rates(ds, n_val, epochs, a.threads, "cpu", a.repeat)
            if torch.cuda.is_available():
                res["cuda"] = rates(ds, n_val, epochs, a.threads, "cuda", a.repeat)
        res["memory"] = memory(Path(tmp), sizes, n_val, a.threads)
    res["load_after"] = [round(x, 1) for x in os.getloadavg()]
    report(res)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"\nwritten {a.out}")


if __name__ == "__main__":
    main()
