"""Neural experts (models.neural): the expert interface, errors, determinism, streaming, resume, variants.

Tiny networks and a few epochs: the whole file runs in well under a minute on two cores.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from conftest import ROOT
from snrmoe_lib.data.io import open_dataset
from snrmoe_lib.data.noise import fit_variance_model
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models.neural import (CheckpointError, NeuralExperts, SnrBins, SpectrumInputs, StreamSource,
                                      TrainingDivergedError, resolve_device)
from snrmoe_lib.models.neural.stream import epoch_noise_seed
from snrmoe_lib.models.neural.training import beta_nll, reblock
from snrmoe_lib.models.routing import SmallBinError

TINY = dict(channels=(4, 8), kernel=3, stem_stride=2, pool=2, width=16, batch_size=32, max_epochs=4,
            n_threads=1, device="cpu")
MOCK = ROOT / "data" / "mock_smoke.h5"


def _line_data(n: int, D: int = 32, seed: int = 0, noise=0.05):
    """Spectra with one absorption line whose depth is the target; noise per row from ``noise``."""
    g = np.random.default_rng(seed)
    y = g.uniform(0, 1, n)
    grid = np.arange(D)
    line = np.exp(-0.5 * ((grid - D / 2) / 2.0) ** 2)
    noise = np.broadcast_to(np.asarray(noise, dtype=float), (n,))
    X = 1 - y[:, None] * line[None, :] * 0.5 + g.normal(size=(n, D)) * noise[:, None]
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    X, y = _line_data(400)
    bins = (y > 0.5).astype(int) + (y > 0.8).astype(int)
    aux = np.column_stack([3 * y + 1, -y])
    return X, y, bins, aux


def _state(m: NeuralExperts) -> dict:
    return {k: v.clone() for k, v in m.module_.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- interface and errors

def test_import_does_not_load_torch():
    code = "import sys, snrmoe_lib.models.neural; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_not_fitted_raises(data):
    X = data[0]
    m = NeuralExperts(**TINY)
    for call in (m.predict, m.predict_all, m.predict_global, m.predict_std):
        with pytest.raises(NotFittedError):
            call(X)


@pytest.mark.parametrize("params, kwargs, match", [
    ({"variant": "nope"}, {}, "variant must be one of"),
    ({"variant": "film"}, {}, "n_quality"),
    ({"variant": "heads"}, {}, "exactly one of bins"),
    ({"variant": "heads", "n_bins": 2}, {"bins": "data"}, r"bins must be in \[0, 2\)"),
    ({"variant": "heads", "n_bins": 3}, {"responsibilities": np.ones((400, 2))}, "responsibilities must have shape"),
    ({"n_quality": 32}, {}, "leaves no spectrum columns"),
    ({"arch": "mlp"}, {}, "arch must be"),
    ({"arch": "vit", "vit_patch": 5}, {}, "multiple of vit_patch"),
    ({"lr": -1.0}, {}, "lr > 0"),
    ({"device": "tpu"}, {}, "device must be"),
    ({}, {"aux": np.ones((3, 2))}, "aux must be"),
])
def test_bad_input_is_named(data, params, kwargs, match):
    X, y, bins, _ = data
    kwargs = {k: (bins if isinstance(v, str) else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        NeuralExperts(**{**TINY, **params}).fit(X, y, **kwargs)


def test_nan_input_and_empty_bin_are_errors(data):
    X, y, bins, _ = data
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        NeuralExperts(**TINY).fit(Xn, y)
    with pytest.raises(SmallBinError, match="bin"):
        NeuralExperts(**{**TINY, "variant": "heads", "n_bins": 4}).fit(X, y, bins=bins)  # bin 3 is empty


def test_heads_interface(data):
    X, y, bins, aux = data
    m = NeuralExperts(**{**TINY, "variant": "heads", "n_bins": 3}).fit(X[:300], y[:300], bins=bins[:300],
                                                                       aux=aux[:300])
    Xt, bt = X[300:], bins[300:]
    P, S = m.predict_all(Xt, return_std=True)
    assert P.shape == S.shape == (100, 3) and m.n_experts_ == 3 and m.n_aux_ == 2
    assert np.all(S > 0)
    np.testing.assert_array_equal(m.predict(Xt, bins=bt), P[np.arange(100), bt])
    onehot = np.eye(3)[bt]
    np.testing.assert_allclose(m.predict_mixture(Xt, onehot), m.predict(Xt, bins=bt))
    np.testing.assert_allclose(m.predict_std(Xt, proba=onehot), m.predict_std(Xt, bins=bt))
    half = np.full((100, 3), 1 / 3)
    mix_sd = m.predict_std(Xt, proba=half)
    assert np.all(mix_sd >= S.min(axis=1) - 1e-12)  # a mixture is at least as wide as its narrowest part
    assert m.predict_global(Xt).shape == (100,) and m.predict_aux(Xt).shape == (100, 2)
    with pytest.raises(ValueError, match="oracle routing needs"):
        m.predict(Xt)
    with pytest.raises(ValueError, match="proba must have shape"):
        m.predict_mixture(Xt, half[:, :2])
    with pytest.raises(ValueError, match="features"):
        m.predict_all(Xt[:, :10])


def test_soft_responsibilities_train_every_head(data):
    X, y, bins, _ = data
    R = np.full((300, 3), 1 / 3)
    m = NeuralExperts(**{**TINY, "variant": "heads", "n_bins": 3}).fit(X[:300], y[:300], responsibilities=R)
    P = m.predict_all(X[300:])
    assert P.shape == (100, 3) and np.all(np.isfinite(P))
    assert not np.allclose(P[:, 0], P[:, 1])  # separate heads, trained on the same rows from different inits


def test_the_global_model_learns(data):
    X, y, _, _ = data
    m = NeuralExperts(**{**TINY, "max_epochs": 25, "patience": 25, "lr": 5e-3}).fit(
        X[:300], y[:300], X_val=X[300:], y_val=y[300:])
    assert m.score(X[300:], y[300:]) > 0.7
    assert len(m.history_["trunk"]) == 25
    assert m.history_["trunk"][-1]["train_loss"] < m.history_["trunk"][0]["train_loss"]


# ---------------------------------------------------------------- determinism, device, stability

def test_same_params_give_bit_identical_predictions(data):
    X, y, bins, aux = data
    kw = {**TINY, "variant": "heads", "n_bins": 3}
    a = NeuralExperts(**kw).fit(X, y, bins=bins, aux=aux)
    b = NeuralExperts(**kw).fit(X, y, bins=bins, aux=aux)
    np.testing.assert_array_equal(a.predict_all(X), b.predict_all(X))
    c = NeuralExperts(**{**kw, "random_state": 1}).fit(X, y, bins=bins, aux=aux)
    assert not np.array_equal(a.predict_all(X), c.predict_all(X))


def test_device_auto_selects_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"


def test_beta_nll():
    mu = torch.tensor([0.3], requires_grad=True)
    var = torch.tensor([4.0], requires_grad=True)
    y = torch.tensor([1.0])
    gauss = 0.5 * (torch.log(var) + (y - mu) ** 2 / var)
    assert torch.allclose(beta_nll(mu, var, y, 0.0), gauss)
    (g_mu,) = torch.autograd.grad(beta_nll(mu, var, y, 1.0).sum(), mu)
    assert torch.allclose(g_mu, mu - y)  # β = 1: the mean's gradient is the squared error's, whatever σ²


def test_divergence_is_reported(data):
    X, y, _, _ = data
    with pytest.raises(TrainingDivergedError, match="epoch 0"):
        NeuralExperts(**{**TINY, "lr": 1e12, "beta": 0.0}).fit(X, y * 1e3)


def test_film_sigma_follows_the_quality(data):
    """Heteroscedastic targets whose noise the quality column announces: FiLM + β-NLL learns a wider σ there."""
    n = 600
    noisy = np.arange(n) % 2 == 1
    X, y = _line_data(n, seed=3)
    y = y + np.where(noisy, 0.3, 0.02) * np.random.default_rng(5).normal(size=n)
    Xq = np.hstack([X, noisy[:, None].astype(np.float32)])
    m = NeuralExperts(**{**TINY, "variant": "film", "n_quality": 1, "max_epochs": 15, "patience": 15,
                         "lr": 5e-3}).fit(Xq, y)
    sd = m.predict_std(Xq)
    assert np.all(np.isfinite(sd))
    assert np.median(sd[noisy]) > 3 * np.median(sd[~noisy])


def test_residual_keeps_the_global_model_and_learns_corrections(data):
    X, y, bins, _ = data
    kw = {**TINY, "n_bins": 3, "max_epochs": 3}
    g = NeuralExperts(**{**kw, "variant": "global"}).fit(X, y)
    r = NeuralExperts(**{**kw, "variant": "residual"}).fit(X, y, bins=bins)
    np.testing.assert_array_equal(r.predict_global(X), g.predict_global(X))  # stage 1 is the global model
    P = r.predict_all(X)
    assert P.shape == (len(X), 3) and set(r.history_) == {"trunk", "correctors"}
    assert not np.allclose(P, r.predict_global(X)[:, None])  # the correctors moved


def test_vit_trunk(data):
    X, y, _, _ = data
    m = NeuralExperts(**{**TINY, "arch": "vit", "vit_patch": 8, "vit_depth": 1, "vit_heads": 2}).fit(X, y)
    assert m.predict(X).shape == (len(X),)


# ---------------------------------------------------------------- checkpoints and resume

def test_resume_after_an_interrupt_ends_where_an_uninterrupted_run_ends(data, tmp_path):
    X, y, bins, _ = data
    kw = {**TINY, "variant": "residual", "n_bins": 3, "max_epochs": 4, "patience": 2}
    fit = dict(bins=bins[:300], X_val=X[300:], y_val=y[300:], val_bins=bins[300:])
    full = NeuralExperts(**kw).fit(X[:300], y[:300], **fit)

    class Interrupt(Exception):
        pass

    def stop(epoch, record):
        if epoch == 1:
            raise Interrupt

    first = NeuralExperts(**kw, checkpoint_dir=tmp_path)
    first._on_epoch_end = stop
    with pytest.raises(Interrupt):
        first.fit(X[:300], y[:300], **fit)
    assert (tmp_path / "trunk.pt").exists() and not list(tmp_path.glob(".*"))  # atomic: no temp file left
    again = NeuralExperts(**kw, checkpoint_dir=tmp_path, resume=True).fit(X[:300], y[:300], **fit)
    np.testing.assert_array_equal(again.predict_all(X), full.predict_all(X))
    assert again.history_ == full.history_
    with pytest.raises(CheckpointError, match="other settings"):
        NeuralExperts(**{**kw, "lr": 1e-3}, checkpoint_dir=tmp_path, resume=True).fit(X[:300], y[:300], **fit)


# ---------------------------------------------------------------- streamed from HDF5

@pytest.fixture(scope="module")
def ds():
    with open_dataset(MOCK) as d:
        yield d


def _source(ds, chunk_size: int, workers: int = 2, inputs=None, **kw) -> StreamSource:
    rows = np.arange(ds.n)
    return StreamSource(ds, rows[:160], rows[160:224], noise_level=1.0, seed=3,
                        inputs=inputs or SpectrumInputs(bin_pixels=128), chunk_size=chunk_size, workers=workers, **kw)


def test_stream_noise_is_fresh_per_epoch_and_keyed_by_row(ds):
    src = _source(ds, 50)
    e0, e0b, e1 = (np.concatenate([c["X"] for c in src.training(e)]) for e in (0, 0, 1))
    np.testing.assert_array_equal(e0, e0b)
    assert not np.allclose(e0, e1)
    val = np.concatenate([c["X"] for c in src.validation()])
    ref = np.concatenate([nc.X for _, nc in split_pass(ds, {"v": np.arange(160, 224)}, noise_level=1.0, seed=3,
                                                        features=FluxFeatures(128), chunk_size=999)])
    np.testing.assert_allclose(val, ref, rtol=1e-6)  # validation: the run's own noise
    assert epoch_noise_seed(3, 0) != epoch_noise_seed(3, 1)


def test_validation_inputs_are_read_once_when_small_and_every_time_when_not(ds):
    calls = []

    def counting(src):
        orig = src._pass
        src._pass = lambda rows, seed, label: (calls.append(label), orig(rows, seed, label))[1]
        return src

    small = counting(_source(ds, 20))
    first = [c["X"] for c in small.validation()]
    next(iter(small.validation()))  # a partial read after the cache: no new pass
    again = [c["X"] for c in small.validation()]
    assert calls == ["val"] and len(first) == 4
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    calls.clear()
    big = counting(_source(ds, 20, validation_cache_mb=1e-4))  # 100 bytes: never kept
    part = next(iter(big.validation()))  # a partial first read keeps nothing either
    full = [c["X"] for c in big.validation()] + [c["X"] for c in big.validation()]
    assert calls == ["val"] * 3 and big._val_cache is None and np.array_equal(part["X"], first[0])
    assert all(np.array_equal(a, b) for a, b in zip(full, first + first))
    fitted = NeuralExperts(**{**TINY, "max_epochs": 2}).fit_stream(_source(ds, 20))
    again = NeuralExperts(**{**TINY, "max_epochs": 2}).fit_stream(_source(ds, 20, validation_cache_mb=0))
    assert _same_state(_state(fitted), _state(again))  # the cache changes nothing in the fit


def test_chunk_size_changes_nothing(ds):
    kw = {**TINY, "variant": "heads", "n_bins": 3, "max_epochs": 2, "shuffle_block": 48}
    route = SnrBins(edges=[5.0, 15.0])
    a = NeuralExperts(**kw).fit_stream(_source(ds, 37, route=route))
    b = NeuralExperts(**kw).fit_stream(_source(ds, 500, workers=0, route=route))
    assert _same_state(_state(a), _state(b))
    assert a.history_ == b.history_ and len(a.history_["trunk"]) == 2


def test_stream_inputs_refuse_the_raw_error_and_whiten_by_sigma_hat(ds):
    with pytest.raises(ValueError, match="leak-free"):
        SpectrumInputs(quality=make_compressor("S0"))
    src = _source(ds, 64)
    chunk = next(split_pass(ds, {"t": np.arange(8)}, noise_level=1.0, seed=0, features=FluxFeatures(1)))[1]
    white = SpectrumInputs(bin_pixels=1, whiten=True)(chunk, 1.0)
    np.testing.assert_allclose(white, chunk.noisy / chunk.error, rtol=1e-5)
    assert src.inputs.n_quality == 0
    vm = fit_variance_model(ds, np.arange(100), n=50)
    est = next(split_pass(ds, {"t": np.arange(8)}, noise_level=1.0, seed=0, features=FluxFeatures(1),
                          error_mode="estimated", variance_model=vm))[1]
    np.testing.assert_allclose(SpectrumInputs(bin_pixels=1, whiten=True)(est, 1.0), est.noisy / est.sigma_hat,
                               rtol=1e-5)  # estimated mode: whitened by σ̂, the only σ a pipeline has
    assert not np.allclose(est.sigma_hat, est.error)


def test_streamed_film_on_whitened_flux_and_quality_features(ds):
    comp = make_compressor("S2").fit(QualityInput(ds.read(np.arange(40)).error))
    inputs = SpectrumInputs(bin_pixels=128, whiten=True, quality=comp)
    src = _source(ds, 64, inputs=inputs)
    test = src.arrays(np.arange(224, 260))
    assert inputs.n_quality >= 1
    assert test["X"].shape == (36, 32 + inputs.n_quality) and test["aux"].shape == (36, 2)
    m = NeuralExperts(**{**TINY, "variant": "film", "n_quality": inputs.n_quality, "max_epochs": 2,
                         "progress": True}).fit_stream(src)
    mu, sd = m.predict(test["X"], return_std=True)
    assert mu.shape == sd.shape == (36,) and np.all(sd > 0) and m.n_aux_ == 2
    assert m.predict_aux(test["X"]).shape == (36, 2)


def test_reblock_is_independent_of_chunking():
    a = np.arange(23)
    chunks = [{"x": a[:5]}, {"x": a[5:6]}, {"x": a[6:23]}]
    blocks = [b["x"] for b in reblock(chunks, 7)]
    assert [len(b) for b in blocks] == [7, 7, 7, 2]
    np.testing.assert_array_equal(np.concatenate(blocks), a)
