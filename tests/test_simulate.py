"""The simulator interface: pfsspec layout, chunk-size independence, refusal to overwrite, grid mode."""
import numpy as np
import pytest

from snrmoe_lib.orchestration.cli import main
from snrmoe_lib.config import MockSpec
from snrmoe_lib.data.io import open_dataset
from snrmoe_lib.data.mock import grid_table, simulate
from snrmoe_lib.data.mock.generate import grid_path

SMALL = dict(n=24, teff=[4000.0, 5500.0], mag=[20.5, 22.5], model="simple")


def test_output_does_not_depend_on_chunk_size(tmp_path):
    a = simulate(MockSpec(chunk_size=24, **SMALL), tmp_path / "a.h5", progress=False)[0]
    b = simulate(MockSpec(chunk_size=5, **SMALL), tmp_path / "b.h5", progress=False)[0]
    da, db = open_dataset(a).load(), open_dataset(b).load()
    np.testing.assert_array_equal(da.flux, db.flux)
    np.testing.assert_array_equal(da.error, db.error)
    assert da.params.equals(db.params)


def test_estimated_errors_do_not_depend_on_chunk_size(tmp_path):
    kw = dict(SMALL, error_mode="estimated")
    a = simulate(MockSpec(chunk_size=24, **kw), tmp_path / "a.h5", progress=False)[0]
    b = simulate(MockSpec(chunk_size=7, **kw), tmp_path / "b.h5", progress=False)[0]
    c = simulate(MockSpec(chunk_size=7, **dict(SMALL)), tmp_path / "c.h5", progress=False)[0]
    ea, eb, ec = (open_dataset(x).load().error for x in (a, b, c))
    np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(ea, ec)


def test_layout_and_columns(tmp_path):
    path = simulate(MockSpec(**SMALL), tmp_path / "m.h5", progress=False)[0]
    ds = open_dataset(path)
    assert ds.n_pix == 4096 and ds.has_mask
    assert ds.wave[0] == pytest.approx(7100.2) and ds.wave[-1] == pytest.approx(8849.8)
    for col in ("T_eff", "log_g", "M_H", "a_M", "C_M", "mag", "snr", "seeing", "redshift"):
        assert col in ds.params
    ch = ds.load()
    assert np.all(ch.error > 0) and np.all(np.isfinite(ch.flux))
    assert np.median(ch.flux, axis=1) == pytest.approx(1.0, rel=0.05)
    p = ds.params
    assert p["T_eff"].between(4000, 5500).all() and p["mag"].between(20.5, 22.5).all()


def test_seed_changes_the_draws(tmp_path):
    a = simulate(MockSpec(seed=1, **SMALL), tmp_path / "a.h5", progress=False)[0]
    b = simulate(MockSpec(seed=2, **SMALL), tmp_path / "b.h5", progress=False)[0]
    assert not open_dataset(a).params.equals(open_dataset(b).params)


def test_refuses_to_overwrite(tmp_path):
    path = simulate(MockSpec(**SMALL), tmp_path / "m.h5", progress=False)[0]
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        simulate(MockSpec(seed=9, **SMALL), path, progress=False)
    assert path.read_bytes() == before
    simulate(MockSpec(seed=9, **SMALL), path, overwrite=True, progress=False)
    assert path.read_bytes() != before


def test_grid_mode_writes_one_file_per_magnitude(tmp_path):
    spec = MockSpec(mode="grid", teff=[4000.0, 4500.0], log_g=[1.0, 2.0], m_h=[-1.0, -0.5], grid_mags=[21.5, 22.5],
                    model="simple")
    paths = simulate(spec, tmp_path / "grid.h5", progress=False)
    assert [p.name for p in paths] == ["grid_mag21.5.h5", "grid_mag22.5.h5"]
    assert paths[0] == grid_path(tmp_path / "grid.h5", 21.5)
    ds = open_dataset(paths[0])
    assert ds.n == 3 * 3 * 3 == len(grid_table(spec, 21.5))
    assert sorted(ds.params["T_eff"].unique()) == [4000.0, 4250.0, 4500.0]
    assert (ds.params["seeing"] == 1.0).all() and (ds.params["mag"] == 21.5).all()
    s1, s2 = (np.median(open_dataset(p).params["snr"]) for p in paths)
    assert s1 > s2  # fainter is noisier


def test_sharded_output(tmp_path):
    path = simulate(MockSpec(shard_size=10, **SMALL), tmp_path / "sharded", progress=False)[0]
    ds = open_dataset(path)
    assert ds.n == 24 and len(ds.files) == 3


def test_cli_simulate(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: out.h5\n  mock:\n    n: 6\n    model: simple\n")
    assert main(["simulate", "--params", str(cfg)]) == 0
    assert open_dataset(tmp_path / "out.h5").n == 6
    assert main(["simulate", "--params", str(cfg)]) == 0  # keeps the existing dataset
    assert "keeping it" in capsys.readouterr().out


def test_stale_mock_dataset_is_an_error_not_silently_reused(tmp_path, capsys):
    from snrmoe_lib.config import params_from_dict
    from snrmoe_lib.data.mock import StaleDatasetError, ensure_dataset, ensure_mock, stored_mock_spec

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: out.h5\n  mock:\n    n: 6\n    model: simple\n")
    assert main(["simulate", "--params", str(cfg)]) == 0
    assert stored_mock_spec(tmp_path / "out.h5")["n"] == 6
    before = (tmp_path / "out.h5").read_bytes()
    cfg.write_text("name: c\ndata:\n  path: out.h5\n  mock:\n    n: 6\n    seed: 3\n    model: simple\n")
    assert main(["simulate", "--params", str(cfg)]) == 2
    assert "seed" in capsys.readouterr().err
    p = params_from_dict({"data": {"path": str(tmp_path / "out.h5"), "mock": {"n": 6, "seed": 3, "model": "simple"}}})
    with pytest.raises(StaleDatasetError, match="--overwrite"):
        ensure_dataset(p, progress=False)
    assert (tmp_path / "out.h5").read_bytes() == before  # nothing replaced
    # a cache the library owns may be regenerated on request
    ds = ensure_mock(p.data.mock, tmp_path / "out.h5", on_stale="regenerate", progress=False)
    assert stored_mock_spec(tmp_path / "out.h5")["seed"] == 3 and ds.n == 6
    # chunk size does not make a dataset stale
    spec = p.data.mock
    spec.chunk_size = 2
    ensure_mock(spec, tmp_path / "out.h5", progress=False)


def test_a_file_of_older_mock_physics_is_regenerated_not_reused(tmp_path, monkeypatch, capsys):
    """Files made by an older mock (no physics fingerprint, or another physics version) are remade."""
    import json

    import h5py

    from snrmoe_lib.config import params_from_dict
    from snrmoe_lib.data.mock import StaleDatasetError, ensure_dataset, ensure_mock, stored_mock_spec
    from snrmoe_lib.data.mock.generate import PHYSICS_KEY, SPEC_ATTR
    from snrmoe_lib.data.mock.simple import SimpleMock

    spec = MockSpec(**SMALL)
    path = simulate(spec, tmp_path / "m.h5", progress=False)[0]
    assert stored_mock_spec(path)[PHYSICS_KEY] == "simple:v1"
    # a file of the first mock: its stored spec has no fingerprint, and its flux is not this model's
    with h5py.File(path, "a") as fh:
        legacy = json.loads(fh.attrs[SPEC_ATTR])
        legacy.pop(PHYSICS_KEY)
        fh.attrs[SPEC_ATTR] = json.dumps(legacy)
        fh["dataset/arrays/flux/value"][0, :] = 0.0
    p = params_from_dict({"data": {"path": str(path), "mock": dict(SMALL)}})
    ensure_dataset(p, progress=False).close()   # the configured dataset: regenerated, not an error
    assert stored_mock_spec(path)[PHYSICS_KEY] == "simple:v1"
    assert np.all(open_dataset(path).load().flux[0] > 0)
    # a new physics version makes the file stale again: the CLI remakes it too
    monkeypatch.setattr(SimpleMock, "physics_version", 7)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndata:\n  path: {path}\n  mock:\n    n: 24\n    teff: [4000.0, 5500.0]\n"
                   "    mag: [20.5, 22.5]\n    model: simple\n")
    assert main(["simulate", "--params", str(cfg)]) == 0
    assert "regenerating" in capsys.readouterr().out
    assert stored_mock_spec(path)[PHYSICS_KEY] == "simple:v7"
    ensure_mock(spec, path, progress=False).close()   # up to date: kept
    # with the same physics, other settings are still an error (never replace a user's choice silently)
    with pytest.raises(StaleDatasetError, match="seed"):
        ensure_mock(MockSpec(seed=5, **SMALL), path, progress=False)
    # older physics and other settings: nothing can reuse it, so it is remade for the new settings
    monkeypatch.setattr(SimpleMock, "physics_version", 8)
    ensure_mock(MockSpec(seed=5, **SMALL), path, progress=False).close()
    assert stored_mock_spec(path)["seed"] == 5 and stored_mock_spec(path)[PHYSICS_KEY] == "simple:v8"


def test_calibrated_fingerprint_follows_its_settings():
    from snrmoe_lib.data.mock.calibrated import CalibratedMock

    a = CalibratedMock().physics_fingerprint()
    assert a.startswith("calibrated:v2:")
    assert CalibratedMock(overrides={"detector": {"sky_residual": 0.02}}).physics_fingerprint() != a
