"""Error compressors S0–S4 (snrmoe_lib.features.quality): shapes, known answers, bad input, sklearn behaviour."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from snrmoe_lib.features import quality as Q
from snrmoe_lib.features.quality import QualityError, QualityInput, make_compressor, quality_features, quality_input

P = 64


def _data(n=40, seed=0):
    """σ = s · e0 + small star-dependent residual, flux around 1."""
    rng = np.random.default_rng(seed)
    e0 = 0.2 + 0.1 * np.sin(np.linspace(0, 6, P)) ** 2
    s = rng.uniform(0.5, 2.0, n)
    sigma = s[:, None] * e0[None, :] * (1 + 0.01 * rng.standard_normal((n, P)))
    flux = 1.0 + 0.1 * rng.standard_normal((n, P))
    return QualityInput(sigma, flux), s, e0


EXPECTED_WIDTH = {"S0": P, "S1a": P, "S1b": P, "S2": 2, "S2b": 5, "S3_11": 11, "S3_21": 21, "S3b": 10, "S4": 1}


@pytest.mark.parametrize("name", list(Q.REPRESENTATIONS))
def test_every_representation_shape_and_finite(name):
    X, _, _ = _data()
    comp = make_compressor(name).fit(X)
    F = comp.transform(X)
    assert F.shape == (40, EXPECTED_WIDTH[name])
    assert F.dtype == np.float64 and np.all(np.isfinite(F))
    assert len(comp.get_feature_names_out()) == EXPECTED_WIDTH[name]
    # clone gives an unfitted copy with the same hyper-parameters (sklearn contract)
    c2 = clone(comp)
    assert c2.get_params() == comp.get_params()
    with pytest.raises(NotFittedError):
        c2.transform(X)


def test_quality_input_uses_effective_sigma():
    err = np.full((3, P), 0.5)
    q = quality_input(err, 0.2, flux=np.ones((3, P)))
    assert np.allclose(q.sigma, 0.1)
    with pytest.raises(ValueError, match="noise_level"):
        quality_input(err, 0.0)
    with pytest.raises(QualityError, match="flux shape"):
        QualityInput(np.ones((3, P)), np.ones((3, P + 1)))
    assert len(q[[0, 2]]) == 2 and q[[0, 2]].flux.shape == (2, P)


def test_known_answers():
    X, s, e0 = _data()
    sig = X.sigma
    assert np.allclose(make_compressor("S0").fit(X).transform(X), sig)
    med = np.median(X.flux, axis=1)
    assert np.allclose(make_compressor("S1a").fit(X).transform(X), sig / med[:, None])
    assert np.allclose(make_compressor("S1b").fit(X).transform(X), sig / np.linalg.norm(X.flux, axis=1)[:, None])
    assert np.allclose(make_compressor("S4").fit(X).transform(X)[:, 0], np.log(np.linalg.norm(sig, axis=1)))
    assert np.allclose(make_compressor("S3_11").fit(X).transform(X), np.quantile(sig, np.linspace(0, 1, 11), axis=1).T)
    agg = make_compressor("S3b").fit(X).transform(X)
    assert np.allclose(agg[:, 0], sig.mean(1)) and np.allclose(agg[:, 5], sig.sum(1))
    assert np.allclose(agg[:, 2], sig.min(1)) and np.allclose(agg[:, 3], sig.max(1))


def test_template_scale_recovers_the_scale():
    X, s, e0 = _data(n=200)
    comp = make_compressor("S2", log=False).fit(X)
    scale, delta = comp.decompose(X)
    # e0_ is the mean σ, so s is recovered up to the mean scale
    assert np.corrcoef(scale, s)[0, 1] > 0.999
    assert np.allclose(scale / s, (scale / s).mean(), rtol=0.01)
    assert np.linalg.norm(delta) / np.linalg.norm(X.sigma) < 0.02
    svd = make_compressor("S2", template="svd", log=False).fit(X)
    assert np.corrcoef(svd.transform(X)[:, 0], s)[0, 1] > 0.999


def test_pca_templates_are_orthonormal():
    X, _, _ = _data(n=100)
    for n in (100, 30):  # n > pixels and n < pixels take different routes
        comp = make_compressor("S2b", n_pca=3).fit(X[np.arange(n)])
        C = comp.components_
        assert C.shape == (3, P)
        assert np.allclose(C @ C.T, np.eye(3), atol=1e-8)
        assert 0.99 < comp.explained_.sum() <= 1.0 + 1e-9
        assert comp.explained_[0] > 0.99  # uncentred: the first template is the mean shape


def test_flux_normalised_needs_flux():
    X, _, _ = _data()
    with pytest.raises(QualityError, match="needs it"):
        make_compressor("S1a").fit(X.sigma)


def test_bad_input_is_named():
    X, _, _ = _data()
    comp = make_compressor("S4").fit(X)
    bad = X.sigma.copy()
    bad[3] = 0.0  # zero error: log ‖σ‖ = −inf
    with pytest.raises(QualityError, match=r"representation S4: .*spectra \[3\]"):
        comp.transform(bad)
    with pytest.raises(QualityError, match="fitted on 64 pixels"):
        comp.transform(X.sigma[:, :10])
    with pytest.raises(QualityError, match="unknown representation"):
        make_compressor("S9")
    with pytest.raises(QualityError, match="n_components"):
        make_compressor("S2b", n_pca=0).fit(X)
    with pytest.raises(QualityError, match=r"expected σ of shape \(n_spectra, n_pixels\)"):
        make_compressor("S0").fit(np.ones(P))
    F = np.ones((5, 3))
    F[:, 1] = np.arange(5)
    with pytest.raises(QualityError, match=r"column\(s\) \[0, 2\] are constant"):
        Q.check_features(F, "S3b", require_variation=True)


def test_pipeline_and_quality_features():
    X, s, _ = _data(n=120)
    pipe = Pipeline([("q", make_compressor("S4")), ("lr", LinearRegression())])
    pipe.fit(X, np.log(s))
    assert np.corrcoef(pipe.predict(X), np.log(s))[0, 1] > 0.99
    train, test = X[np.arange(80)], X[np.arange(80, 120)]
    f = quality_features(test, "S2", fit_on=train)
    comp = make_compressor("S2").fit(train)
    assert np.allclose(f, comp.transform(test))
    assert np.allclose(quality_features(test, compressor=comp), f)
    assert quality_features(test, "S2b", fit_on=train, n_pca=2).shape == (40, 2)
