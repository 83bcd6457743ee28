"""The per-bin bounds' bootstrap from per-star quantities equals recomputing the bounds on every resample."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.ceiling.bayes import van_trees_resampled, van_trees_sampling_prior
from snrmoe_lib.config import MockSpec
from snrmoe_lib.data.mock.base import PARAM_NAMES
from snrmoe_lib.evaluation.metrics import bootstrap_indices, resample_counts


def _stars(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    spec = MockSpec()
    table = pd.DataFrame({name: rng.uniform(0.05, 0.95, n) for name in PARAM_NAMES})
    for name, field in (("T_eff", "teff"), ("log_g", "log_g"), ("M_H", "m_h"), ("a_M", "a_m"), ("C_M", "c_m")):
        lo, hi = getattr(spec, field)
        table[name] = lo + (hi - lo) * rng.beta(1.5, 1.5, n)
    A = rng.normal(size=(n, 5, 8)) * np.array([1e-3, 3.0, 2.0, 1.5, 1.0])[None, :, None]
    F = A @ np.swapaxes(A, 1, 2) + 1e-3 * np.eye(5)
    F[3] = np.nan  # a star without a usable Fisher matrix is left out, as in the one-set bound
    return spec, table, F


@pytest.mark.parametrize("nuisance", [("T_eff", "M_H"), ("T_eff", "M_H", "a_M", "C_M")])
def test_van_trees_resampled_equals_the_bound_of_each_resample(nuisance):
    spec, table, F = _stars(60)
    shape = van_trees_sampling_prior(F, table, spec, "log_g", nuisance, drawn_from="prior")["shape"]
    assert np.isfinite(shape)
    idx = bootstrap_indices(len(F), 30, 4)
    fast = van_trees_resampled(F, table, spec, resample_counts(idx), shape, "log_g", nuisance)
    slow = [van_trees_sampling_prior(F[i], table.iloc[i].reset_index(drop=True), spec, "log_g", nuisance,
                                     drawn_from="prior", shapes=[shape])["bound"] for i in idx]
    assert np.allclose(fast, slow, rtol=1e-10, atol=0)
    assert np.unique(np.round(fast, 12)).size > 10  # the resamples differ: not one number repeated
    # an invalid surrogate shape: only the plain bound, which is vacuous under beta(1.5, 1.5)
    assert np.all(van_trees_resampled(F, table, spec, resample_counts(idx), 1.0, "log_g", nuisance) == 0.0)


def test_lattice_fishers_are_shared_through_the_output_folder(tmp_path):
    from snrmoe_lib.analyses import k1, k1_ceiling
    from snrmoe_lib.config import params_from_dict

    p = params_from_dict({"name": "tiny", "data": {"mock": {"n": 10}},
                          "fisher": {"n_stars": 6, "mags": [21.5, 22.5]}})
    model = k1.model_of(p)
    first = k1_ceiling.lattice_ceiling(p, model, cache_dir=tmp_path)
    path = tmp_path / k1_ceiling.LATTICE_CACHE
    assert path.exists() and not first.fishers.seconds.get("loaded")
    again = k1_ceiling.lattice_ceiling(p, model, cache_dir=tmp_path)
    assert again.fishers.seconds.get("loaded")
    pd.testing.assert_frame_equal(first.frame, again.frame)
    # other parameters: another key, computed again (and the file replaced by theirs)
    q = params_from_dict({"name": "tiny", "data": {"mock": {"n": 10}}, "fisher": {"n_stars": 6, "mags": [22.0]}})
    other = k1_ceiling.lattice_ceiling(q, model, cache_dir=tmp_path)
    assert not other.fishers.seconds.get("loaded") and set(other.frame["mag"]) == {22.0}
    # a damaged file is not trusted: computed again, same numbers
    path.write_bytes(b"damaged")
    fresh = k1_ceiling.lattice_ceiling(p, model, cache_dir=tmp_path)
    assert not fresh.fishers.seconds.get("loaded")
    pd.testing.assert_frame_equal(first.frame, fresh.frame)
