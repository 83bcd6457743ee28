"""scikit-learn's own estimator checks over the neural experts (a tiny network, a few epochs).

Each check that does not pass is listed with its reason.
"""
from __future__ import annotations

import warnings

from sklearn.utils.estimator_checks import parametrize_with_checks

from snrmoe_lib.models.neural import NeuralExperts

TINY = dict(channels=(4,), stem_stride=1, pool=1, width=8, max_epochs=3, batch_size=32, n_threads=1, device="cpu")
ESTIMATORS = [NeuralExperts(variant="global", **TINY), NeuralExperts(variant="global", arch="vit", vit_patch=1,
                                                                     vit_depth=1, vit_heads=2, **TINY)]

MINIBATCH = ("minibatch training: a weight of 2 is not the same as a repeated row (the repeat lands in other "
             "batches and changes every later step), so weights match repeats only in expectation")
SHORT_FIT = "a tiny network trained for 3 epochs (kept short for speed) need not reach the check's R² > 0.5"
EXPECTED_FAILURES: dict[str, str] = {
    "check_sample_weight_equivalence_on_dense_data": MINIBATCH,
    "check_regressors_train": SHORT_FIT,
}


def expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_every_expected_failure_has_a_reason():
    assert all(isinstance(r, str) and r for r in EXPECTED_FAILURES.values())
