"""Training rows streamed from a pfsspec dataset through the project's split pass, fresh noise per epoch.

:class:`StreamSource` hands the trainer one epoch of training rows at a time, read in file order by
:func:`snrmoe_lib.data.passes.split_pass` (background threads read and add noise to the coming
chunks). Epoch ``e`` uses the noise seed drawn from the ``neural.epoch_noise`` stream at
``(seed, e)``; the pass keys each spectrum's noise by (that seed, row), so a spectrum's noise is a
function of (seed, epoch, row) alone, and chunk size changes nothing. Validation rows keep the
run's own noise (``noise.flux`` at (seed, row)), the same every epoch and the same as every other
model of the run sees.

:class:`SpectrumInputs` turns a noisy chunk into the network's input matrix: the binned noisy flux
(optionally whitened by σ — the estimated σ̂ in ``error_mode='estimated'``), followed by the
leak-free quality features of a fitted compressor (for FiLM). The raw error vector never enters.
Memory is a few chunks, whatever the number of rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.noise import VarianceModel, assign_bins, snr
from snrmoe_lib.data.passes import NoisyChunk, split_pass, target_values
from snrmoe_lib.features.flux import bin_pixels
from snrmoe_lib.features.quality import FluxNormalizedError, QualityInput, RawError

__all__ = ["SpectrumInputs", "StreamSource", "SnrBins", "epoch_noise_seed"]

#: Compressors an input may not use: the raw error vector (the label leak) and those that need the
#: noise-free flux (which a deployed model never has).
_FORBIDDEN = (RawError, FluxNormalizedError)


def epoch_noise_seed(seed: int, epoch: int) -> int:
    """The noise seed of epoch ``epoch``'s training rows (stream ``neural.epoch_noise``)."""
    return int(_rng("neural.epoch_noise", int(seed), int(epoch)).integers(2 ** 62))


def _sigma(nc: NoisyChunk, noise_level: float) -> np.ndarray:
    """σ a deployed model may know: the estimated σ̂ in error_mode='estimated', else error · noise_level."""
    return nc.sigma_hat if nc.sigma_hat is not None else nc.error * np.float32(noise_level)


@dataclass
class SpectrumInputs:
    """The network input of a noisy chunk: binned flux (or flux / σ), then quality features.

    Parameters
    ----------
    bin_pixels : int
        Pixels averaged into one input feature (4 gives 1,024 features from 4,096 pixels).
    whiten : bool
        Divide the noisy flux by σ before binning (σ̂ when the pass estimates the errors).
    quality : fitted compressor, optional
        A compressor of :mod:`snrmoe_lib.features.quality` (fitted beforehand on training rows'
        σ); its features are appended as the trailing columns (``n_quality`` of the estimator).
        The raw error (S0) and flux-normalised errors (S1a/S1b) are refused.
    """

    bin_pixels: int = 4
    whiten: bool = False
    quality: object = None

    def __post_init__(self) -> None:
        if isinstance(self.quality, _FORBIDDEN):
            raise ValueError(f"{type(self.quality).__name__} is not a leak-free quality feature: the raw error "
                             "vector (and the noise-free flux) must never be a network input")

    @property
    def n_quality(self) -> int:
        if self.quality is None:
            return 0
        names = getattr(self.quality, "get_feature_names_out", None)
        return len(names()) if names is not None else int(self.quality.n_features_out_)

    def __call__(self, nc: NoisyChunk, noise_level: float) -> np.ndarray:
        flux = nc.noisy
        sigma = _sigma(nc, noise_level) if (self.whiten or self.quality is not None) else None
        F = bin_pixels(flux / sigma if self.whiten else flux, int(self.bin_pixels)).astype(np.float32)
        if self.quality is None:
            return F
        q = np.asarray(self.quality.transform(QualityInput(sigma)), dtype=np.float32)
        return np.hstack([F, q])


@dataclass
class SnrBins:
    """Routing by the true SNR bin (the hard oracle): the SNR of the noise-free flux at σ = error ·
    noise_level, binned by ``edges`` (right-closed, as :func:`snrmoe_lib.data.noise.assign_bins`)."""

    edges: Sequence[float]
    noise_level: float = 1.0
    definition: str = "l2"

    def __call__(self, nc: NoisyChunk) -> np.ndarray:
        return assign_bins(snr(nc.chunk.flux, nc.error, self.noise_level, self.definition), self.edges)


class _Noisy:
    """The split pass's feature map left as the identity: inputs are built from the whole chunk."""

    @staticmethod
    def transform(X):
        return X


@dataclass
class StreamSource:
    """Training and validation rows of a dataset, streamed in file order with fresh noise per epoch.

    Parameters
    ----------
    ds : PfsDataset
    train_rows, val_rows : ndarray of int
    noise_level : float
    seed : int
        The run's noise seed (validation noise; the seed epochs' noise seeds are drawn from).
    inputs : SpectrumInputs
    route : callable, optional
        ``route(noisy_chunk)`` → (n,) integer bins (hard) or (n, K) responsibilities (soft), for
        the ``heads`` and ``residual`` variants (for example :class:`SnrBins`, or a gate's
        probabilities on the chunk's quality features).
    target : str
    aux : tuple of str
        Params columns of the auxiliary targets (empty: none).
    chunk_size, workers : int
        Rows per read and background threads of the pass (neither changes the result).
    error_mode : {'clean', 'estimated'}
    variance_model : VarianceModel, optional
        Needed for ``error_mode='estimated'``.
    validation_cache_mb : float
        The validation rows' inputs (the same every epoch) are kept in memory after the first full
        pass when they take at most this much; larger validation sets are read again each epoch.
    """

    ds: object
    train_rows: np.ndarray
    val_rows: np.ndarray
    noise_level: float
    seed: int
    inputs: SpectrumInputs = field(default_factory=SpectrumInputs)
    route: Callable | None = None
    target: str = "log_g"
    aux: tuple = ("T_eff", "M_H")
    chunk_size: int = 4096
    workers: int = 2
    error_mode: str = "clean"
    variance_model: VarianceModel | None = None
    validation_cache_mb: float = 256.0
    _val_cache: list | None = field(default=None, init=False, repr=False, compare=False)

    def _pass(self, rows: np.ndarray, seed: int, label: str) -> Iterator[dict]:
        for _, nc in split_pass(self.ds, {label: rows}, noise_level=self.noise_level, seed=seed, features=_Noisy(),
                                target=self.target, chunk_size=self.chunk_size, workers=self.workers,
                                error_mode=self.error_mode, variance_model=self.variance_model):
            out = {"X": self.inputs(nc, self.noise_level), "y": nc.y}
            if self.aux:
                out["aux"] = np.column_stack([target_values(nc.chunk, a) for a in self.aux])
            if self.route is not None:
                out["route"] = np.asarray(self.route(nc))
            yield out

    def arrays(self, rows: np.ndarray) -> dict:
        """Any rows (for example the test rows) with the run's own noise, as in-memory arrays: ``X``,
        ``y`` and, as configured, ``aux`` and ``route`` (for :meth:`NeuralExperts.fit` and predictions)."""
        parts = list(self._pass(np.asarray(rows), int(self.seed), "rows"))
        if not parts:
            raise ValueError("no rows to read")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def training(self, epoch: int) -> Iterator[dict]:
        """Epoch ``epoch``'s training rows: dicts with ``X``, ``y`` and, as configured, ``aux`` and ``route``."""
        return self._pass(np.asarray(self.train_rows), epoch_noise_seed(self.seed, epoch), "train")

    def validation(self) -> Iterator[dict]:
        """The validation rows with the run's own noise (the same every call: kept in memory after the
        first complete pass when they fit ``validation_cache_mb``)."""
        if self._val_cache is not None:
            yield from self._val_cache
            return
        kept, size = [], 0
        for c in self._pass(np.asarray(self.val_rows), int(self.seed), "val"):
            if kept is not None:
                size += sum(np.asarray(v).nbytes for v in c.values())
                if size <= self.validation_cache_mb * 2 ** 20:
                    kept.append(c)
                else:
                    kept = None
            yield c
        if kept is not None:  # reached only when the pass was read to its end
            self._val_cache = kept
