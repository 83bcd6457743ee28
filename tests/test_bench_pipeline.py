"""The scale benchmark at 20,000 spectra (its 1M run is not part of CI): it runs end to end.

Its timings and memory are printed, not asserted (they depend on the machine); what is checked is
that every stage ran, the Dask per-shard Gram equalled the one-process Gram (the script exits
non-zero otherwise), and the models learned something.
"""
import json
import subprocess
import sys

from conftest import ROOT


def test_bench_pipeline_20k_runs_end_to_end(tmp_path):
    out = ROOT / "benchmarks" / "out" / "bench_pipeline_20000.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_pipeline.py"), "--n", "20000",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["stages"]) >= {"generate", "q1_oracle_quarter", "q3_deployable_quarter", "q1_oracle",
                                  "q3_deployable", "stats_local", "stats_dask"}
    assert res["dask"]["max_rel_diff_C"] <= 1e-9
    assert 0.2 < res["q1_global_r2"] < res["q1_snr_oracle_r2"] and res["q3_deployed_r2"] > res["q1_global_r2"]
    assert res["q1_q3_extrapolated_1m_seconds"] > 0 and res["gram"]["matmul_gflops"] > 0
    assert "EXTRAPOLATED" in proc.stdout and "peak RSS" in proc.stdout
