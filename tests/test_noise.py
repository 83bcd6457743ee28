import numpy as np
import pytest

from snrmoe_lib.data.noise import add_noise, assign_bins, bin_labels, effective_sigma, snr, snr_l2, snr_pixel


def test_noise_does_not_depend_on_chunking_or_order():
    rng = np.random.default_rng(0)
    flux = rng.random((30, 100)).astype(np.float32) + 1
    error = np.full_like(flux, 0.1)
    rows = np.arange(100, 130)
    whole = add_noise(flux, error, 1.0, rows, seed=5)
    parts = np.concatenate([add_noise(flux[i:i + 7], error[i:i + 7], 1.0, rows[i:i + 7], seed=5) for i in range(0, 30, 7)])
    np.testing.assert_array_equal(whole, parts)
    perm = rng.permutation(30)
    np.testing.assert_array_equal(add_noise(flux[perm], error[perm], 1.0, rows[perm], seed=5), whole[perm])
    assert not np.array_equal(add_noise(flux, error, 1.0, rows, seed=6), whole)


def test_noise_has_the_protocol_scale():
    flux = np.zeros((200, 2000))
    error = np.full_like(flux, 0.3)
    noisy = add_noise(flux, error, 0.5, np.arange(200), seed=1)
    assert abs(noisy.std() - 0.15) < 0.002
    assert abs(noisy.mean()) < 0.002


def test_effective_sigma_rejects_bad_levels():
    with pytest.raises(ValueError):
        effective_sigma(np.ones(3), 0)
    with pytest.raises(ValueError):
        effective_sigma(np.ones(3), float("nan"))


def test_snr_definitions():
    flux = np.array([[1.0, 2.0, 3.0, 100.0]])
    sigma = np.array([[1.0, 1.0, 1.0, 1.0]])
    assert snr_l2(flux, sigma)[0] == pytest.approx(np.sqrt(1 + 4 + 9 + 1e4) / 2)
    assert snr_pixel(flux, sigma)[0] == pytest.approx(2.5)
    mask = np.array([[0, 0, 0, 1]])
    # the user's definitions count every pixel; the mask matters only when asked to
    assert snr_pixel(flux, sigma, mask)[0] == pytest.approx(2.5)
    assert snr_pixel(flux, sigma, mask, exclude_masked=True)[0] == pytest.approx(2.0)
    assert snr(flux, sigma, 2.0, "pixel", mask, exclude_masked=True)[0] == pytest.approx(1.0)
    assert snr_l2(flux, sigma, mask, exclude_masked=True)[0] == pytest.approx(np.sqrt(14 / 3))
    # a masked pixel with σ = 0 is left out rather than dividing by zero
    sig0 = np.array([[1.0, 1.0, 1.0, 0.0]])
    assert snr_pixel(flux, sig0, mask)[0] == pytest.approx(2.0)
    assert np.isfinite(snr_l2(flux, sig0, mask)[0])
    with pytest.raises(ValueError, match="unknown SNR definition"):
        snr(flux, sigma, 1.0, "peak")


def test_bins_are_right_closed():
    vals = np.array([0.5, 2.0, 2.0001, 4.0, 6.9, 7.0, 7.1, 50])
    np.testing.assert_array_equal(assign_bins(vals, [2, 4, 7]), [0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError):
        assign_bins(vals, [4, 2])
    with pytest.raises(ValueError):
        assign_bins(np.array([np.nan]), [2])
    assert bin_labels([2, 4, 7], ["X", "L", "M", "H"]) == ["X ≤2", "L (2–4]", "M (4–7]", "H >7"]
