"""One sequential pass over the rows of a split, every spectrum made noisy and featurised once.

The streamed experiments need the same noisy spectra in several roles: training rows fill Grams,
validation rows choose α, test rows are predicted. Reading each role separately costs three
scattered reads of the dataset (the roles interleave in the file) and draws the noise three times
over; :func:`split_pass` reads the union of the roles' rows in file order, adds the noise (keyed by
(seed, row), so nothing depends on chunking) and maps the flux to features once per chunk, then
hands each role its rows. Reading and noise for the coming chunks run on background threads while
the caller works on this one (:func:`snrmoe_lib.threads.ordered_map`).

Memory is a few chunks, whatever the number of rows.
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable, Iterator, Mapping

import numpy as np

from snrmoe_lib.data.io import Chunk
from snrmoe_lib.data.noise import VarianceModel, add_noise, add_noise_estimated
from snrmoe_lib._util.threads import ordered_map

__all__ = ["NoisyChunk", "split_pass", "target_values"]


class NoisyChunk:
    """Rows of one role in one chunk.

    Attributes
    ----------
    chunk : Chunk
        The noise-free rows (flux, error, params) as read.
    noisy : ndarray (n, n_pix)
        ``flux + N(0,1)·error·noise_level``, the noise keyed by (seed, row).
    X : ndarray (n, D)
        ``features.transform(noisy)``.
    y : ndarray (n,) or None
        The target column (None when no target was asked for).
    info : dict of ndarray (n,)
        Per-row values from ``split_pass``'s ``annotate`` (for example routing bins).
    sigma_hat : ndarray (n, n_pix) or None
        In ``error_mode='estimated'``: the error estimated from the same noisy realisation
        (:func:`~snrmoe_lib.data.noise.add_noise_estimated`); None in clean mode.

    The role's rows of ``chunk`` and ``noisy`` (spectra-sized) are only copied out when first used.
    """

    def __init__(self, chunk: Chunk, noisy: np.ndarray, X: np.ndarray, y: np.ndarray | None, info: dict,
                 index: np.ndarray | None = None, sigma_hat: np.ndarray | None = None):
        self._chunk, self._noisy, self._index, self._sigma_hat = chunk, noisy, index, sigma_hat
        pick = (lambda a: a) if index is None else (lambda a: a[index])
        self.rows = pick(chunk.rows)
        self.X = pick(X)
        self.y = None if y is None else pick(y)
        self.info = {k: pick(v) for k, v in info.items()}

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def chunk(self) -> Chunk:
        return self._chunk if self._index is None else self._chunk.take(self._index)

    @cached_property
    def error(self) -> np.ndarray:
        """The role's rows of the expected 1σ error (without copying the rest of the chunk)."""
        return self._chunk.error if self._index is None else self._chunk.error[self._index]

    @cached_property
    def noisy(self) -> np.ndarray:
        return self._noisy if self._index is None else self._noisy[self._index]

    @cached_property
    def sigma_hat(self) -> np.ndarray | None:
        """The estimated error of the role's rows (``error_mode='estimated'``), else None."""
        if self._sigma_hat is None:
            return None
        return self._sigma_hat if self._index is None else self._sigma_hat[self._index]


def target_values(chunk: Chunk, target: str) -> np.ndarray:
    """The ``target`` column of a chunk's params table as float64 (a clear error when it is missing)."""
    if target not in chunk.params.columns:
        raise KeyError(f"target column {target!r} not in the params table (columns: {list(chunk.params.columns)})")
    return chunk.params[target].to_numpy(np.float64)


def split_pass(ds, roles: Mapping[str, np.ndarray], *, noise_level: float, seed: int, features,
               target: str | None = "log_g", chunk_size: int = 4096, with_mask: bool = False,
               annotate: Callable | None = None, workers: int = 2,
               progress: bool | str = False, error_mode: str = "clean",
               variance_model: VarianceModel | None = None) -> Iterator[tuple[str, NoisyChunk]]:
    """Yield ``(role, NoisyChunk)`` for every role present in each chunk, chunks in file order.

    Parameters
    ----------
    ds : PfsDataset
    roles : mapping name → row numbers
        For example ``{"train": split.train, "val": split.val, "test": split.test}``. Empty roles
        are skipped; a row in several roles is handed to each; a row listed twice in one role
        counts once.
    noise_level, seed : float, int
    features : transformer
        ``transform(noisy_flux) -> (n, D)``, for example :class:`~snrmoe_lib.ridge.FluxFeatures`.
    target : str or None
        Params column handed out as ``y``.
    chunk_size : int
        Rows read at once (of the union of the roles).
    with_mask : bool
        Read the pixel mask as well (no streamed model uses it; see :meth:`PfsDataset.read`).
    annotate : callable, optional
        ``annotate(chunk) -> dict`` of per-row arrays computed from the noise-free chunk (for
        example the true SNR and its bin), once per chunk on the background threads.
    workers : int
        Background threads that read, add noise to and featurise the coming chunks while the caller
        works on this one (0: all in the caller's thread).
    progress : bool or str
        A progress bar over chunks (its label when a string).
    error_mode : {'clean', 'estimated'}
        'estimated': each :class:`NoisyChunk` also carries ``sigma_hat``, the error estimated from
        the same noise draw as ``noisy`` with ``variance_model`` (fitted beforehand on training
        rows' clean errors); features of the error must then be made from ``sigma_hat``.
    """
    if error_mode not in ("clean", "estimated"):
        raise ValueError(f"error_mode must be 'clean' or 'estimated', got {error_mode!r}")
    if error_mode == "estimated" and variance_model is None:
        raise ValueError("error_mode='estimated' needs a fitted variance_model (data.noise.VarianceModel)")
    sorted_roles = {name: np.unique(np.asarray(r, dtype=np.int64)) for name, r in roles.items() if len(r)}
    if not sorted_roles:
        raise ValueError("no rows in any role")
    union = np.unique(np.concatenate(list(sorted_roles.values())))

    def produce(rows):
        chunk = ds.read(rows, with_mask=with_mask)
        sigma_hat = None
        if error_mode == "estimated":
            gain = variance_model.gain(chunk.flux, chunk.error)
            noisy, sigma_hat = add_noise_estimated(chunk.flux, chunk.error, noise_level, chunk.rows, seed, gain)
        else:
            noisy = add_noise(chunk.flux, chunk.error, noise_level, chunk.rows, seed)
        X = features.transform(noisy)
        y = None if target is None else target_values(chunk, target)
        return chunk, noisy, X, y, ({} if annotate is None else annotate(chunk)), sigma_hat

    blocks = [union[s:s + chunk_size] for s in range(0, len(union), chunk_size)]
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=progress if isinstance(progress, str) else "pass", unit="chunk")
    made = ordered_map(produce, blocks, workers=workers) if workers else map(produce, blocks)
    for chunk, noisy, X, y, info, sigma_hat in made:
        if not len(chunk):  # every row of the block dropped as bad
            continue
        for name, rows in sorted_roles.items():
            pos = np.searchsorted(rows, chunk.rows)
            inside = (pos < len(rows)) & (rows[np.minimum(pos, len(rows) - 1)] == chunk.rows)
            if not inside.any():
                continue
            yield name, NoisyChunk(chunk, noisy, X, y, info, None if inside.all() else np.flatnonzero(inside),
                                   sigma_hat)
