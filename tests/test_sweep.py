"""Sweeps: many configurations through one code path, local processes or a Dask LocalCluster on loopback.

The notebooks here are tiny test notebooks (a kernel start each), so the tests check the machinery:
one task per configuration, failures isolated, reports of every good configuration written.
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from snrmoe_lib.config import load_params
from snrmoe_lib.orchestration.sweep import prepare_dataset, run_one, run_sweep, summary_table

ROOT = Path(__file__).resolve().parent.parent

BODY = '''import os
from snrmoe_lib import load_params, write_results, metric
p = load_params(params_path)
if p.name == "broken":
    raise RuntimeError("this configuration fails on purpose")
write_results(output_dir, "a_only", p, dataset={}, metrics={"noise_level": metric(p.noise.noise_level),
                                                             "pid": metric(os.getpid())})'''


@pytest.fixture
def project(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_path = "x"\noutput_dir = "y"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "a_only.ipynb")
    cfgs = []
    for name, level in (("n01", 0.1), ("broken", 1.0)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"name: {name}\nnoise:\n  noise_level: {level}\n")
        cfgs.append(cfg)
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: typo\nnoise:\n  noise_levle: 0.2\n")  # unknown key: a parameter error
    return tmp_path, nbdir, cfgs + [bad]


def _check(outcomes, reports: Path):
    by = {o.config: o for o in outcomes}
    assert [o.config for o in outcomes] == ["n01", "broken", "typo"]
    assert by["n01"].ok
    assert by["broken"].status == "failed" and "a_only: failed" in by["broken"].error
    assert "this configuration fails on purpose" in by["broken"].notebooks[0]["error"]
    assert by["typo"].status == "error" and "noise_levle" in by["typo"].error
    for name, level in (("n01", 0.1),):
        rec = json.loads((reports / name / "a_only.json").read_text())
        assert rec["metrics"]["noise_level"]["value"] == level
        assert (reports / name / "a_only.html").exists()
    assert not (reports / "broken" / "a_only.json").exists()
    assert json.loads((reports / "broken" / "run.json").read_text())["notebooks"][0]["status"] == "failed"
    table = summary_table(outcomes)
    assert "broken" in table and "typo" in table


def test_local_processes_isolate_failures(project):
    root, nbdir, cfgs = project
    outcomes = run_sweep(cfgs, reports_dir=root / "reports", notebooks_dir=nbdir, jobs=2, progress=False)
    _check(outcomes, root / "reports")
    # the good configurations ran in worker processes, not in the caller
    workers = {o.worker for o in outcomes if o.ok}
    assert all(w and not w.endswith(f":{__import__('os').getpid()}") for w in workers)


def test_dask_local_cluster_same_path(project):
    distributed = pytest.importorskip("distributed")
    root, nbdir, cfgs = project
    # processes=True: the tasks and their results are pickled, as on a real cluster
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        outcomes = run_sweep(cfgs, reports_dir=root / "reports", notebooks_dir=nbdir,
                             scheduler=cluster.scheduler_address, progress=False)
    _check(outcomes, root / "reports")


def test_tasks_never_raise(tmp_path):
    missing = tmp_path / "nope.yaml"
    res = run_one(str(missing))
    assert res["status"] == "error" and "not found" in res["error"]
    assert prepare_dataset(str(missing))["status"] == "error"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        run_sweep([missing], progress=False)


def test_shared_dataset_is_generated_once(tmp_path):
    """Two configurations on one mock dataset path: phase 1 makes it once, both then see it."""
    common = "data:\n  path: shared.h5\n  mock:\n    n: 20\n    chunk_size: 10\n"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("name: a\n" + common)
    b.write_text("name: b\nnoise:\n  noise_level: 0.2\n" + common)
    assert load_params(a).dataset_path == load_params(b).dataset_path
    first = prepare_dataset(str(a))
    assert first["status"] == "generated" and Path(first["path"]).exists()
    assert prepare_dataset(str(b))["status"] == "exists"


SWEEP_FILES = ["default", "mag18", "mag20", "mag21.5", "mag22", "mag22.5", "mag23",
               "noise0.05", "noise0.1", "noise0.2", "noise0.5", "noise1.0"]


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_sweep_parameter_files_are_valid(name):
    p = load_params(ROOT / "params" / f"{name}.yaml")
    assert p.name == name
    assert p.data.mock is not None and p.data.mock.mode == "random"
    assert p.split.n_train + p.split.n_val + p.split.n_test <= p.data.mock.n


def test_sweep_parameter_files_describe_the_sweeps():
    mags = {n: load_params(ROOT / "params" / f"{n}.yaml") for n in SWEEP_FILES if n.startswith("mag")}
    for name, p in mags.items():
        m = float(name[3:])
        assert p.data.mock.mag == [m, m] and p.noise.noise_level == 1.0
    assert len({p.dataset_path for p in mags.values()}) == len(mags)  # one dataset per magnitude
    noise = {n: load_params(ROOT / "params" / f"{n}.yaml") for n in SWEEP_FILES if n.startswith("noise")}
    assert sorted(p.noise.noise_level for p in noise.values()) == [0.05, 0.1, 0.2, 0.5, 1.0]
    assert len({p.dataset_path for p in noise.values()}) == 1  # the noise sweep re-uses one dataset
    assert len({p.name for p in list(mags.values()) + list(noise.values())}) == len(mags) + len(noise)
    assert load_params(ROOT / "params" / "default.yaml").data.mock.mag == [20.5, 22.5]


# ------------------------------------------------------------------ per-shard statistics (scale)


@pytest.fixture
def sharded(tmp_path):
    """A 90-row dataset in 4 shards (25 rows each, the last 15)."""
    from conftest import make_arrays
    from snrmoe_lib.data.io import ShardedWriter

    wave, flux, error, mask, params = make_arrays(n=90, p=32, seed=3)
    path = tmp_path / "sharded"
    with ShardedWriter(path, 90, wave, shard_size=25) as w:
        for s in range(0, 90, 30):  # blocks that straddle shard boundaries
            w.write(flux[s:s + 30], error[s:s + 30], params.iloc[s:s + 30], mask=mask[s:s + 30])
    return path


def _assert_same_stats(a, b):
    import numpy as np

    assert (a.count_ == b.count_).all()
    for g in range(a.n_groups):
        ca, cb = a.centered(g), b.centered(g)
        # the shift is an internal reference (first chunk's mean): compare what does not depend on it
        ca["x_abs_mean"], cb["x_abs_mean"] = ca["x_mean"] + ca["shift"], cb["x_mean"] + cb["shift"]
        for k in ("C", "c", "x_abs_mean", "y_mean", "syy", "sum_w", "count"):
            np.testing.assert_allclose(ca[k], cb[k], rtol=1e-9, atol=1e-9, err_msg=f"group {g}: {k}")


def test_distributed_stats_equal_one_pass(sharded):
    import numpy as np
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from snrmoe_lib.orchestration.distributed import distributed_stats, shard_blocks
    from snrmoe_lib.models.routing import SNRRouter
    from snrmoe_lib.data.io import open_dataset
    from snrmoe_lib.models.ridge import solve_path, stream_stats
    from snrmoe_lib.features.flux import FluxFeatures

    ds = open_dataset(sharded)
    rows = np.random.default_rng(0).choice(90, 70, replace=False)
    assert [len(b) for b in shard_blocks(ds)] == [25, 25, 25, 15]
    from snrmoe_lib.data.noise import snr

    every = ds.load()
    edge = float(np.median(snr(every.flux, every.error, 1.0, "l2")))  # two groups of similar size
    router = SNRRouter([edge], ["low", "high"], "l2", 1.0)
    kw = dict(noise_level=1.0, seed=5, n_groups=2, groups=router.assign, chunk_size=7)
    ref, ref_info = stream_stats(ds, rows, features=FluxFeatures(2), **kw)
    local, info = distributed_stats(ds, rows, bin_pixels=2, **kw)
    _assert_same_stats(ref, local)
    assert info["row"].tolist() == sorted(rows.tolist()) == ref_info["row"].tolist()
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as ex:
        pooled, _ = distributed_stats(sharded, rows, bin_pixels=2, executor=ex, **kw)
    _assert_same_stats(ref, pooled)
    np.testing.assert_allclose(solve_path(pooled.total(), [1.0]).coef, solve_path(ref.total(), [1.0]).coef,
                               rtol=1e-8, atol=1e-10)


def test_distributed_stats_on_a_dask_cluster(sharded):
    distributed = pytest.importorskip("distributed")
    import numpy as np

    from snrmoe_lib.orchestration.distributed import distributed_stats
    from snrmoe_lib.models.ridge import stream_stats
    from snrmoe_lib.features.flux import FluxFeatures
    from snrmoe_lib.data.io import open_dataset

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        stats, _ = distributed_stats(sharded, None, noise_level=0.5, seed=1, executor=client.get_executor(pure=False))
    ref, _ = stream_stats(open_dataset(sharded), np.arange(90), noise_level=0.5, seed=1, features=FluxFeatures())
    _assert_same_stats(ref, stats)


def test_cli_routes_several_configurations_to_the_sweep(monkeypatch, tmp_path, capsys):
    """`snrmoe run --params a b --jobs 2 --scheduler ...` reaches run_sweep with those arguments."""
    import snrmoe_lib.orchestration.sweep as sweep
    from snrmoe_lib.orchestration.cli import main

    seen = {}

    def fake(params, notebooks=None, reports_dir=None, jobs=None, scheduler=None):
        seen.update(params=params, jobs=jobs, scheduler=scheduler, reports=reports_dir)
        return [sweep.ConfigOutcome("a.yaml", "a", "ok", 1.0), sweep.ConfigOutcome("b.yaml", "b", "failed", 2.0,
                                                                                  error="q1: failed")]

    monkeypatch.setattr(sweep, "run_sweep", fake)
    code = main(["run", "--params", "a.yaml", "b.yaml", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1",
                 "--reports", str(tmp_path), "--hub"])
    assert code == 1 and seen == {"params": ["a.yaml", "b.yaml"], "jobs": 2, "scheduler": "tcp://127.0.0.1:1",
                                  "reports": str(tmp_path)}
    out = capsys.readouterr()
    assert "q1: failed" in out.out and "did not finish cleanly: b" in out.err
    assert (tmp_path / "index.html").exists()  # --hub builds the page even when a configuration failed
