import h5py
import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.data.io import (ERROR_KEY, FLUX_KEY, MASK_KEY, PARAMS_KEY, WAVE_KEY, BadRowsError, DatasetError,
                           DatasetWriter, ShardedWriter, dataset_fingerprint, open_dataset, split_rows)

from conftest import make_arrays, write_dataset


def test_round_trip(tiny):
    path, wave, flux, error, mask, params = tiny
    ds = open_dataset(path)
    assert (ds.n, ds.n_pix, ds.has_mask) == (50, 64, True)
    ch = ds.load()
    np.testing.assert_array_equal(ch.flux, flux)
    np.testing.assert_array_equal(ch.error, error)
    np.testing.assert_allclose(ds.wave, wave)
    pd.testing.assert_frame_equal(ch.params, params)


def test_read_any_order_and_chunks_cover_rows(tiny):
    path, wave, flux, *_ = tiny
    ds = open_dataset(path)
    rows = np.array([40, 3, 17, 3])
    np.testing.assert_array_equal(ds.read(rows).flux, flux[rows])
    subset = np.arange(0, 50, 3)
    got = np.concatenate([c.flux for c in ds.iter_chunks(subset, chunk_size=4)])
    np.testing.assert_array_equal(got, flux[subset])
    for rows in ([5, 5, 7], [5, 6, 7], [7, 6, 5]):  # repeats and consecutive runs in any order
        np.testing.assert_array_equal(ds.read(rows).flux, flux[rows])
        np.testing.assert_array_equal(ds.read(rows, with_mask=False).error, ds.read(rows).error)
    assert ds.read([1, 2], with_mask=False).mask is None and ds.read([1, 2]).mask is not None
    with pytest.raises(IndexError):
        ds.read([50])


def test_scattered_rows_read_as_runs_equal_point_selection(tmp_path):
    """A sparse subsample (span > 4× its size) is read as slabs of nearby rows: the same values, any order."""
    path = tmp_path / "wide.h5"
    _, flux, error, *_ = write_dataset(path, n=400, p=16)
    ds = open_dataset(path)
    rows = np.array([390, 3, 4, 12, 200, 3, 211, 0, 399, 150])  # runs, gaps above and below 8, a repeat
    ch = ds.read(rows)
    np.testing.assert_array_equal(ch.flux, flux[rows])
    np.testing.assert_array_equal(ch.error, error[rows])
    with h5py.File(path, "r") as f:  # the point selection it replaces gives the same rows
        uniq = np.unique(rows)
        np.testing.assert_array_equal(f[FLUX_KEY][uniq], flux[uniq])


def test_shards_read_like_one_file(tmp_path):
    wave, flux, error, mask, params = make_arrays(23, 16)
    with ShardedWriter(tmp_path / "sharded", 23, wave, shard_size=10) as w:
        w.write(flux[:7], error[:7], params.iloc[:7], mask[:7])
        w.write(flux[7:], error[7:], params.iloc[7:], mask[7:])
    index = (tmp_path / "sharded" / "shard_index.txt").read_text()
    assert index.count("shard") >= 3
    ds = open_dataset(tmp_path / "sharded")
    assert ds.n == 23 and len(ds.files) == 3
    rows = np.array([0, 9, 10, 22, 15])
    np.testing.assert_array_equal(ds.read(rows).flux, flux[rows])
    np.testing.assert_allclose(ds.params["T_eff"], params["T_eff"])


def test_shard_index_allows_comments(tmp_path):
    wave, flux, error, mask, params = make_arrays(5, 8)
    for name in ("a", "b"):
        with DatasetWriter(tmp_path / "d" / name / "dataset.h5", 5, wave) as w:
            w.write(flux, error, params, mask)
    (tmp_path / "d" / "shard_index.txt").write_text("# two shards\na\n\n b  # second\n")
    assert open_dataset(tmp_path / "d").n == 10


def test_missing_key_names_file_path_and_content(tiny):
    path = tiny[0]
    with h5py.File(path, "a") as h5:
        del h5[ERROR_KEY]
    with pytest.raises(DatasetError) as exc:
        open_dataset(path)
    msg = str(exc.value)
    assert str(path) in msg and ERROR_KEY in msg and FLUX_KEY in msg


def test_missing_params_table(tmp_path):
    wave, flux, error, *_ = make_arrays(4, 8)
    path = tmp_path / "noparams.h5"
    with h5py.File(path, "w") as h5:
        h5[FLUX_KEY] = flux
        h5[ERROR_KEY] = error
        h5[WAVE_KEY] = wave
    with pytest.raises(DatasetError, match=PARAMS_KEY):
        open_dataset(path)


def test_shape_mismatches(tmp_path):
    wave, flux, error, mask, params = make_arrays(6, 8)
    cases = {"error": (flux, error[:, :7], wave, params), "wave": (flux, error, wave[:7], params),
             "params": (flux, error, wave, params.iloc[:5])}
    for name, (f, e, w, p) in cases.items():
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as h5:
            h5[FLUX_KEY], h5[ERROR_KEY], h5[WAVE_KEY] = f, e, w
        p.to_hdf(path, key=PARAMS_KEY, mode="a", format="table")
        with pytest.raises(DatasetError, match=name if name != "params" else "rows"):
            open_dataset(path)


def test_fixed_format_params_table(tmp_path):
    wave, flux, error, mask, params = make_arrays(6, 8)
    path = tmp_path / "fixed.h5"
    with h5py.File(path, "w") as h5:
        h5[FLUX_KEY], h5[ERROR_KEY], h5[WAVE_KEY], h5[MASK_KEY] = flux, error, wave, mask
    params.to_hdf(path, key=PARAMS_KEY, mode="a", format="fixed")
    pd.testing.assert_frame_equal(open_dataset(path).params, params)


@pytest.mark.parametrize("bad", ["nan", "inf", "zero_error", "negative_error"])
def test_bad_rows_raise_by_default_and_can_be_dropped(tmp_path, bad):
    wave, flux, error, mask, params = make_arrays(20, 8)
    if bad == "nan":
        flux[3, 2] = np.nan
    elif bad == "inf":
        error[3, 2] = np.inf
    elif bad == "zero_error":
        error[3, 2] = 0
    else:
        error[3, 2] = -1
    error[11, 0] = 0 if bad != "nan" else error[11, 0]
    flux[11, 0] = np.nan if bad == "nan" else flux[11, 0]
    path = tmp_path / "bad.h5"
    with DatasetWriter(path, 20, wave) as w:
        w.write(flux, error, params, mask)
    with pytest.raises(BadRowsError, match="2 row"):
        open_dataset(path).load()
    with pytest.warns(UserWarning, match="dropped 2 of 20 row"):
        ds = open_dataset(path, on_bad_rows="drop")
    # dropped once, at open: the dataset is its 18 kept rows, renumbered, and every read agrees
    assert (ds.n, ds.n_stored, ds.n_dropped) == (18, 20, 2)
    np.testing.assert_array_equal(ds.dropped_rows, [3, 11])
    kept = np.setdiff1d(np.arange(20), [3, 11])
    got = list(ds.iter_chunks(chunk_size=7))
    np.testing.assert_array_equal(np.concatenate([c.rows for c in got]), np.arange(18))
    np.testing.assert_array_equal(np.concatenate([c.flux for c in got]), flux[kept])
    pd.testing.assert_frame_equal(ds.params, params.iloc[kept].reset_index(drop=True))
    np.testing.assert_array_equal(ds.stored_rows([0, 3, 10]), kept[[0, 3, 10]])
    assert ds.n_dropped == 2  # reading again counts nothing twice
    with pytest.raises(IndexError):
        ds.read([18])


def test_masked_zero_error_is_not_bad(tmp_path):
    wave, flux, error, mask, params = make_arrays(5, 8)
    error[1, 4] = 0
    mask[1, 4] = 1
    with DatasetWriter(tmp_path / "m.h5", 5, wave) as w:
        w.write(flux, error, params, mask)
    assert len(open_dataset(tmp_path / "m.h5").load()) == 5
    # without asking for the mask it is still read where σ ≤ 0, so the row is not called bad
    chunk = open_dataset(tmp_path / "m.h5").read(np.arange(5), with_mask=False)
    assert len(chunk) == 5 and chunk.mask is not None


def test_half_written_file_is_a_clear_error(tiny, tmp_path):
    data = tiny[0].read_bytes()
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match="half-written or corrupt"):
        open_dataset(broken)


def test_writer_refuses_to_overwrite_and_is_atomic(tiny):
    path = tiny[0]
    wave, flux, error, mask, params = make_arrays(50, 64, seed=5)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        DatasetWriter(path, 50, wave)
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, 50, wave, overwrite=True) as w:
            w.write(flux[:10], error[:10], params.iloc[:10], mask[:10])
            raise RuntimeError("simulated crash")
    assert path.read_bytes() == before  # the user's file is untouched
    assert not list(path.parent.glob(".*tmp-*"))  # and no temporary left behind


def test_writer_rejects_incomplete_datasets(tmp_path):
    wave, flux, error, mask, params = make_arrays(10, 8)
    w = DatasetWriter(tmp_path / "short.h5", 10, wave)
    w.write(flux[:4], error[:4], params.iloc[:4], mask[:4])
    with pytest.raises(DatasetError, match="4 rows written"):
        w.close()
    assert not (tmp_path / "short.h5").exists()


def test_split_is_seeded_disjoint_and_size_checked():
    a = split_rows(1000, 600, 100, 200, seed=3)
    b = split_rows(1000, 600, 100, 200, seed=3)
    c = split_rows(1000, 600, 100, 200, seed=4)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    allrows = np.concatenate([a.train, a.val, a.test])
    assert len(np.unique(allrows)) == 900
    with pytest.raises(ValueError, match="needs 1001 rows"):
        split_rows(1000, 1000, 1, 0, seed=0)


def test_fingerprint_changes_with_content(tmp_path):
    write_dataset(tmp_path / "a.h5", seed=1)
    write_dataset(tmp_path / "b.h5", seed=1)
    write_dataset(tmp_path / "c.h5", seed=2)
    fa, fb, fc = (dataset_fingerprint(open_dataset(tmp_path / f"{x}.h5")) for x in "abc")
    assert fa == fb != fc


def test_writers_live_in_writers_and_stay_importable_from_io():
    from snrmoe_lib.data import io, writers

    assert io.DatasetWriter is writers.DatasetWriter and io.ShardedWriter is writers.ShardedWriter
    assert issubclass(writers.DatasetWriter, writers.AtomicWriter)
    assert issubclass(writers.ShardedWriter, writers.AtomicWriter)


def test_atomic_text_replaces_and_leaves_nothing_on_error(tmp_path):
    from snrmoe_lib.data.writers import AtomicWriter, atomic_write_text

    target = tmp_path / "sub" / "r.json"
    assert atomic_write_text(target, "one") == target and target.read_text() == "one"
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError):
        with AtomicWriter(target, overwrite=True) as w:
            w.tmp.write_text("half")
            raise RuntimeError("simulated crash")
    assert target.read_text() == "two" and sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_sharded_writer_replaces_a_folder_atomically(tmp_path):
    from snrmoe_lib.data.writers import ShardedWriter

    wave, flux, error, mask, params = make_arrays(30, 8)
    path = tmp_path / "sharded"
    for n_rows in (30, 20):
        with ShardedWriter(path, n_rows, wave, shard_size=8, overwrite=True) as w:
            w.write(flux[:n_rows], error[:n_rows], params.iloc[:n_rows], mask[:n_rows])
        assert open_dataset(path).n == n_rows
    w = ShardedWriter(path, 30, wave, shard_size=8, overwrite=True)
    w.write(flux[:5], error[:5], params.iloc[:5], mask[:5])
    with pytest.raises(DatasetError, match="declared"):
        w.close()
    assert open_dataset(path).n == 20 and sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]
