"""``data.on_bad_rows: drop`` through every notebook: bad rows are dropped once and every notebook runs on the kept rows.

A tiny dataset is cut from the smoke mock with four bad rows (NaN flux, zero error, inf error, inf
flux) and all five notebooks run on it through the runner, as a user's ``snrmoe run`` would.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from snrmoe_lib.data.io import DatasetWriter, open_dataset
from snrmoe_lib.orchestration.runner import NOTEBOOK_ORDER, run_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "data" / "mock_smoke.h5"
N, BAD = 1300, [5, 77, 400, 1298]


def _bad_copy(path: Path) -> None:
    with open_dataset(SMOKE) as ds:
        ch = ds.read(np.arange(N))
        wave = ds.wave
    flux, error = ch.flux.copy(), ch.error.copy()
    flux[BAD[0], 10] = np.nan
    error[BAD[1], 3] = 0.0
    error[BAD[2], 100] = np.inf
    flux[BAD[3], 0] = np.inf
    with DatasetWriter(path, N, wave, with_mask=ch.mask is not None) as w:
        w.write(flux, error, ch.params, mask=ch.mask)


def _config(tmp_path: Path) -> Path:
    smoke_grid = _smoke_grid_base()
    if smoke_grid is None:
        pytest.skip("the smoke mock grid is made by the fisher notebook's smoke run (make test)")
    cfg = tmp_path / "badrows.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        name: badrows
        data: {{path: bad.h5, on_bad_rows: drop}}
        split: {{n_train: 800, n_val: 200, n_test: 250, seed: 0}}
        noise: {{noise_level: 1.0, extra_noise_levels: [0.5]}}
        seeds: [0, 1, 2]
        snr_bins: {{definition: l2, edges: [2.0, 4.0, 7.0], labels: [X, L, M, H], min_count: 20, on_small_bin: merge}}
        quality: {{audit_n_train: 600, audit_n_val: 150, audit_n_test: 250}}
        fisher:
          n_stars: 20
          edges: one_sided
          grid_path: {smoke_grid}
          grid_teff: [4500.0, 5500.0]
          grid_teff_step: 500.0
          grid_log_g: [1.5, 4.5]
          grid_log_g_step: 1.5
          grid_m_h: [-1.5, 0.0]
          grid_m_h_step: 0.75
          n_bin_stars: 40
          fd_check_stars: 3
        runner: {{n_bootstrap: 30}}
        ridge: {{bin_pixels: 8}}
        """))
    return cfg


def _smoke_grid_base() -> Path | None:
    from snrmoe_lib.analyses.k1 import grid_files
    from snrmoe_lib.config import load_params

    files = grid_files(load_params(ROOT / "params" / "smoke.yaml"), mags=[18.0])
    path = files[18.0]
    return path.with_name(path.name.replace("_mag18", "")) if path.exists() else None


@pytest.mark.skipif(not SMOKE.exists(), reason="the smoke dataset is made by `make test`")
def test_every_notebook_runs_on_the_kept_rows(tmp_path):
    cfg = _config(tmp_path)
    _bad_copy(tmp_path / "bad.h5")
    statuses = run_config(cfg, reports_dir=tmp_path / "reports", progress=False)
    by = {s.notebook: s for s in statuses}
    assert list(by) == list(NOTEBOOK_ORDER)
    failed = {n: (s.status, (s.error or "")[:400]) for n, s in by.items() if not s.ok}
    assert not failed, failed
    out = tmp_path / "reports" / "badrows"
    recs = {n: json.loads((out / f"{n}.json").read_text()) for n in NOTEBOOK_ORDER}
    for n, rec in recs.items():
        ds = rec["dataset"]
        # dropped once: the same count in every notebook, however many passes it made
        assert ds["n_dropped_rows"] == len(BAD) and ds["n_stored"] == N, n
        assert rec["frozen_test"]["n"] == 250 and rec["frozen_test"]["seed"] == 0
    assert recs["00_data_overview"]["dataset"]["n"] == N - len(BAD)
    assert recs["q1_snr_headroom"]["dataset"]["split"]["n_dropped_rows"] == len(BAD)
    assert len({r["frozen_test"]["fingerprint"] for r in recs.values()}) == 1, "notebooks scored different stars"
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
