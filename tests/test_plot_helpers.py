"""The shared figure helpers."""
import numpy as np

from snrmoe_lib.reporting.plots.common import interval_extent


def test_interval_extent_is_never_negative_and_keeps_the_far_end():
    # a percentile interval may lie entirely above its point value: no bar below, the far end kept
    e = interval_extent([0.5, 0.2, np.nan], [0.4, 0.3, 0.1], [0.6, 0.5, 0.2])
    assert e.shape == (2, 3)
    assert np.allclose(e, [[0.1, 0.0, 0.0], [0.1, 0.3, 0.0]])


def test_interval_extent_of_scalars_is_a_2x1_column_for_errorbar():
    assert interval_extent(1.0, 0.5, 2.0).tolist() == [[0.5], [1.0]]
