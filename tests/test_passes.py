"""The shared sequential pass and the ordered background map behind it."""
import numpy as np
import pytest

from snrmoe_lib.data.io import open_dataset, split_rows
from snrmoe_lib.data.noise import add_noise
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib._util.threads import ordered_map

from conftest import write_dataset


@pytest.fixture(scope="module")
def pass_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("passes") / "d.h5"
    write_dataset(path, n=500, p=64, seed=5)
    return open_dataset(path)


def test_ordered_map_keeps_order_and_raises_the_workers_error():
    import time

    def slow_square(i):
        time.sleep(0.01 * (i % 3))  # later items often finish first
        return i * i

    assert list(ordered_map(slow_square, range(40), workers=3, ahead=2)) == [i * i for i in range(40)]

    def broken(i):
        if i == 2:
            raise RuntimeError("disk went away")
        return i

    it = ordered_map(broken, range(10))
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(RuntimeError, match="disk went away"):
        next(it)
    with pytest.raises(ValueError, match="workers"):
        list(ordered_map(broken, [1], workers=0))


def test_ordered_map_stops_early_and_bounds_the_work_ahead():
    started = []

    def record(i):
        started.append(i)
        return i

    for i in ordered_map(record, range(10_000), workers=2, ahead=2):
        if i == 5:
            break
    assert 6 <= len(started) <= 6 + 2 + 2 + 1  # what was consumed plus the bounded look-ahead


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_split_pass_hands_each_role_its_rows_with_the_same_noise(pass_dataset, workers):
    ds = pass_dataset
    split = split_rows(ds.n, 300, 50, 100, seed=2)
    roles = {"train": split.train, "val": split.val, "test": split.test}
    got = {r: [] for r in roles}
    for role, nc in split_pass(ds, roles, noise_level=0.5, seed=9, features=FluxFeatures(4), chunk_size=77,
                               annotate=lambda c: {"twice": 2 * c.rows}, workers=workers):
        ref = ds.read(nc.rows)
        np.testing.assert_array_equal(nc.noisy, add_noise(ref.flux, ref.error, 0.5, nc.rows, 9))
        np.testing.assert_allclose(nc.X, FluxFeatures(4).transform(nc.noisy))
        np.testing.assert_array_equal(nc.y, ref.params["log_g"].to_numpy())
        np.testing.assert_array_equal(nc.info["twice"], 2 * nc.rows)
        assert nc.chunk.mask is None  # the streamed models do not read the mask
        got[role].append(nc.rows)
    for role, rows in roles.items():
        assert np.array_equal(np.concatenate(got[role]), np.sort(rows))
    with pytest.raises(ValueError, match="no rows"):
        next(split_pass(ds, {"train": []}, noise_level=1.0, seed=0, features=FluxFeatures()))
