"""Read datasets in the pfsspec layout (one HDF5 file, or a sharded folder), split and fingerprint them.

The layout (keys, shard folders) is described in :mod:`snrmoe_lib.data.writers`, which writes it.
Arrays are never read whole: :meth:`PfsDataset.iter_chunks` streams row chunks, so N may exceed
the machine's memory.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
# the writers are importable from here too, where every reader of a dataset already looks
from snrmoe_lib.data.writers import (ERROR_KEY, FLUX_KEY, MASK_KEY, PARAMS_KEY, SHARD_FILE, SHARD_INDEX, WAVE_KEY,
                                     DatasetError, DatasetWriter, ShardedWriter)

__all__ = [
    "FLUX_KEY",
    "ERROR_KEY",
    "MASK_KEY",
    "WAVE_KEY",
    "PARAMS_KEY",
    "DatasetError",
    "BadRowsError",
    "Chunk",
    "PfsDataset",
    "open_dataset",
    "DatasetWriter",
    "ShardedWriter",
    "Split",
    "split_rows",
    "dataset_fingerprint",
    "dataset_record",
]


class BadRowsError(DatasetError):
    """Rows hold NaN/inf or non-positive errors."""


@dataclass
class Chunk:
    """A block of rows read from a dataset.

    ``rows`` are global row numbers; ``mask`` is ``None`` when the dataset has no mask.
    """

    rows: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    mask: np.ndarray | None
    params: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index) -> "Chunk":
        """The rows selected by ``index`` (a boolean mask or positions), as a new chunk."""
        index = np.asarray(index)
        pos = np.flatnonzero(index) if index.dtype == bool else index
        return Chunk(self.rows[pos], self.flux[pos], self.error[pos],
                     None if self.mask is None else self.mask[pos], self.params.iloc[pos].reset_index(drop=True))


def _list_keys(h5: h5py.File) -> list[str]:
    keys: list[str] = []
    h5.visit(keys.append)
    return keys


def _require(h5: h5py.File, key: str, path: Path) -> h5py.Dataset:
    if key not in h5:
        present = ", ".join(k for k in _list_keys(h5) if isinstance(h5[k], h5py.Dataset)) or "nothing"
        raise DatasetError(f"{path}: missing '{key}'. The file holds: {present}")
    obj = h5[key]
    if not isinstance(obj, h5py.Dataset):
        raise DatasetError(f"{path}: '{key}' is a group, expected an array")
    return obj


def _read_params_table(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_hdf(path, PARAMS_KEY)
    except KeyError:
        with h5py.File(path, "r") as h5:
            present = ", ".join(_list_keys(h5))
        raise DatasetError(f"{path}: missing the params table '{PARAMS_KEY}'. The file holds: {present}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: cannot read the params table '{PARAMS_KEY}': {exc}") from exc
    if not isinstance(df, pd.DataFrame):
        raise DatasetError(f"{path}: '{PARAMS_KEY}' is not a table")
    return df.reset_index(drop=True)


class _File:
    """One pfsspec HDF5 file, checked for consistency at open."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {path}")
        try:
            h5 = h5py.File(path, "r")
        except OSError as exc:
            raise DatasetError(f"{path}: not a readable HDF5 file (half-written or corrupt?): {exc}") from exc
        with h5:
            flux = _require(h5, FLUX_KEY, path)
            error = _require(h5, ERROR_KEY, path)
            wave = _require(h5, WAVE_KEY, path)
            self.has_mask = MASK_KEY in h5
            if flux.ndim != 2:
                raise DatasetError(f"{path}: flux must be 2-D (N, pixels), got shape {flux.shape}")
            if error.shape != flux.shape:
                raise DatasetError(f"{path}: error shape {error.shape} differs from flux shape {flux.shape}")
            if self.has_mask and h5[MASK_KEY].shape != flux.shape:
                raise DatasetError(f"{path}: mask shape {h5[MASK_KEY].shape} differs from flux shape {flux.shape}")
            if wave.shape != (flux.shape[1],):
                raise DatasetError(
                    f"{path}: wave has shape {wave.shape}, expected ({flux.shape[1]},) to match the flux pixels"
                )
            self.shape = flux.shape
            self.wave = np.asarray(wave[()], dtype=np.float64)
            self.dtype = flux.dtype
        self.params = _read_params_table(path)
        if len(self.params) != self.shape[0]:
            raise DatasetError(
                f"{path}: params table has {len(self.params)} rows but flux has {self.shape[0]} spectra"
            )
        self._h5: h5py.File | None = None

    def handle(self) -> h5py.File:
        if self._h5 is None or not self._h5.id.valid:
            self._h5 = h5py.File(self.path, "r")
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        self._h5 = None

    def read(self, key: str, local_rows: np.ndarray) -> np.ndarray:
        """Read sorted local rows (repeats allowed); dense spans are read as one slice (fast in HDF5)."""
        ds = self.handle()[key]
        uniq, inverse = np.unique(local_rows, return_inverse=True)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        if hi - lo == len(uniq) == len(local_rows):  # a run of consecutive rows (the sequential passes): no copy
            return ds[lo:hi]
        if hi - lo <= 4 * len(uniq):
            return ds[lo:hi][local_rows - lo]
        return ds[uniq][inverse]


class PfsDataset:
    """A pfsspec dataset: one file or a sharded folder, read lazily in row chunks.

    Parameters
    ----------
    path
        An HDF5 file, or a folder holding ``shard_index.txt``.
    on_bad_rows
        ``'raise'`` (default): a row with NaN/inf flux or error, or error <= 0 on an unmasked
        pixel, raises :class:`BadRowsError`. ``'drop'``: such rows are left out of every chunk and
        counted in :attr:`n_dropped` (a warning reports how many).

    Attributes
    ----------
    n, n_pix : int
    wave : ndarray (n_pix,)
    params : DataFrame (n rows)
    has_mask : bool
    """

    def __init__(self, path: str | Path, on_bad_rows: str = "raise"):
        if on_bad_rows not in ("raise", "drop"):
            raise ValueError(f"on_bad_rows must be 'raise' or 'drop', got {on_bad_rows!r}")
        self.path = Path(path)
        self.on_bad_rows = on_bad_rows
        self.n_dropped = 0
        if self.path.is_dir():
            index = self.path / SHARD_INDEX
            if not index.is_file():
                raise DatasetError(f"{self.path}: a dataset folder needs '{SHARD_INDEX}'")
            names = [ln.split("#", 1)[0].strip() for ln in index.read_text().splitlines()]
            names = [n for n in names if n]
            if not names:
                raise DatasetError(f"{index}: lists no shards")
            self.files = [_File(self.path / n / SHARD_FILE) for n in names]
        elif self.path.exists():
            self.files = [_File(self.path)]
        else:
            raise FileNotFoundError(f"dataset not found: {self.path}")
        first = self.files[0]
        for f in self.files[1:]:
            if f.shape[1] != first.shape[1] or not np.allclose(f.wave, first.wave):
                raise DatasetError(f"{f.path}: wavelength grid differs from {first.path}")
            if list(f.params.columns) != list(first.params.columns):
                raise DatasetError(f"{f.path}: params columns differ from {first.path}")
        self.wave = first.wave
        self.n_pix = first.shape[1]
        self.has_mask = all(f.has_mask for f in self.files)
        self._offsets = np.cumsum([0] + [f.shape[0] for f in self.files])
        self.n = int(self._offsets[-1])
        self.params = pd.concat([f.params for f in self.files], ignore_index=True)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        kind = f"{len(self.files)} shards" if len(self.files) > 1 else "1 file"
        return f"PfsDataset({str(self.path)!r}, n={self.n}, n_pix={self.n_pix}, {kind}, mask={self.has_mask})"

    @property
    def attrs(self) -> dict:
        """Root attributes of the (first) file: provenance such as the mock spec that made it."""
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.files[0].handle().attrs.items()}

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "PfsDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.n)):
            raise IndexError(f"row numbers must be in [0, {self.n}), got range [{rows.min()}, {rows.max()}]")
        return rows.astype(np.int64)

    def read(self, rows: Sequence[int] | np.ndarray, dtype=np.float32, with_mask: bool = True) -> Chunk:
        """Read the given rows (any order; returned in that order), checked for bad values.

        ``with_mask=False`` skips the pixel mask (a third array as large as the flux) when the caller
        does not use it: the chunk's ``mask`` is then ``None``, except that the mask is still read
        for a chunk in which some σ ≤ 0, to tell masked pixels from bad ones.
        """
        rows = self._check_rows(np.asarray(rows))
        order = np.argsort(rows, kind="stable")
        srows = rows[order]
        in_order = bool(np.all(order == np.arange(len(order))))
        shard_of = np.searchsorted(self._offsets, srows, side="right") - 1
        pieces = [(self.files[s], srows[shard_of == s] - self._offsets[s]) for s in np.unique(shard_of)]

        def gather(key, astype=None):
            parts = [f.read(key, local) for f, local in pieces]
            a = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if astype is not None:
                a = a.astype(astype, copy=False)
            return a if in_order else a[np.argsort(order)]

        flux, error = gather(FLUX_KEY, dtype), gather(ERROR_KEY, dtype)
        positive = (error > 0).all(axis=1)
        mask = None
        if self.has_mask and (with_mask or not positive.all()):
            mask = gather(MASK_KEY)
        chunk = Chunk(rows, flux, error, mask, self.params.iloc[rows].reset_index(drop=True))
        return self._screen(chunk, positive)

    def _screen(self, chunk: Chunk, positive: np.ndarray) -> Chunk:
        """Rows with NaN/inf, or σ ≤ 0 on an unmasked pixel (``positive``: σ > 0 on every pixel)."""
        finite = np.isfinite(chunk.flux).all(axis=1) & np.isfinite(chunk.error).all(axis=1)
        if chunk.mask is not None and not positive.all():
            positive = ((chunk.mask != 0) | (chunk.error > 0)).all(axis=1)
        bad = ~(finite & positive)
        if not bad.any():
            return chunk
        n_bad = int(bad.sum())
        if self.on_bad_rows == "raise":
            examples = ", ".join(str(r) for r in chunk.rows[bad][:5])
            raise BadRowsError(
                f"{self.path}: {n_bad} row(s) hold NaN/inf or error <= 0 (rows {examples}"
                f"{', ...' if n_bad > 5 else ''}). Pass on_bad_rows='drop' (data.on_bad_rows: drop) to skip them."
            )
        self.n_dropped += n_bad
        warnings.warn(f"{self.path}: dropped {n_bad} bad row(s) (NaN/inf or error <= 0) from this chunk", stacklevel=3)
        keep = ~bad
        return Chunk(
            chunk.rows[keep],
            chunk.flux[keep],
            chunk.error[keep],
            None if chunk.mask is None else chunk.mask[keep],
            chunk.params[keep].reset_index(drop=True),
        )

    def iter_chunks(
        self,
        rows: Sequence[int] | np.ndarray | None = None,
        chunk_size: int = 4096,
        dtype=np.float32,
        progress: bool | str = False,
        with_mask: bool = True,
    ) -> Iterator[Chunk]:
        """Yield :class:`Chunk` objects over ``rows`` (default: all), in sorted row order.

        Memory is bounded by ``chunk_size`` whatever the number of rows. ``with_mask``: see :meth:`read`.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        rows = np.arange(self.n) if rows is None else np.sort(self._check_rows(np.asarray(rows)))
        starts = range(0, len(rows), chunk_size)
        if progress:
            from tqdm.auto import tqdm  # kept lazy: in a notebook it loads IPython's widgets

            starts = tqdm(starts, desc=progress if isinstance(progress, str) else "reading", unit="chunk")
        for s in starts:
            chunk = self.read(rows[s : s + chunk_size], dtype=dtype, with_mask=with_mask)
            if len(chunk):
                yield chunk

    def load(self, rows: Sequence[int] | np.ndarray | None = None, dtype=np.float32) -> Chunk:
        """Read ``rows`` into memory at once (for subsets that fit; prefer :meth:`iter_chunks`)."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        return self.read(rows, dtype=dtype)


def open_dataset(path: str | Path, on_bad_rows: str = "raise") -> PfsDataset:
    """Open a pfsspec dataset (file or sharded folder). See :class:`PfsDataset`."""
    return PfsDataset(path, on_bad_rows=on_bad_rows)


# ------------------------------------------------------------------------------------ splits


@dataclass
class Split:
    """Row numbers of a seeded train/val/test split (each sorted)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int

    def to_dict(self) -> dict:
        """What the results file records: sizes, seed and a digest of the row numbers."""
        digest = hashlib.sha256()
        for a in (self.train, self.val, self.test):
            digest.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return {"seed": int(self.seed), "n_train": int(len(self.train)), "n_val": int(len(self.val)),
                "n_test": int(len(self.test)), "rows_sha256": digest.hexdigest()}


def split_rows(n: int, n_train: int, n_val: int, n_test: int, seed: int) -> Split:
    """A seeded random split of ``range(n)``; it depends only on (n, sizes, seed).

    Raises
    ------
    ValueError
        When the dataset holds fewer rows than requested.
    """
    need = n_train + n_val + n_test
    if need > n:
        raise ValueError(f"split needs {need} rows (train {n_train} + val {n_val} + test {n_test}) but the dataset has {n}")
    perm = _rng("split.permutation", seed).permutation(n)
    train = np.sort(perm[:n_train])
    val = np.sort(perm[n_train:n_train + n_val])
    test = np.sort(perm[n_train + n_val:need])
    return Split(train, val, test, seed)


def dataset_fingerprint(ds: PfsDataset) -> str:
    """sha256 of the layout, the sizes, the wavelength grid and the first and last rows."""
    h = hashlib.sha256()
    h.update(f"{ds.n}:{ds.n_pix}:{ds.has_mask}:{len(ds.files)}:{list(ds.params.columns)}".encode())
    h.update(np.ascontiguousarray(ds.wave).tobytes())
    rows = [0, ds.n - 1] if ds.n > 1 else [0]
    f0 = ds.files[0].handle()
    fl = ds.files[-1].handle()
    h.update(np.ascontiguousarray(f0[FLUX_KEY][0]).tobytes())
    h.update(np.ascontiguousarray(f0[ERROR_KEY][0]).tobytes())
    h.update(np.ascontiguousarray(fl[FLUX_KEY][-1]).tobytes())
    h.update(np.ascontiguousarray(fl[ERROR_KEY][-1]).tobytes())
    h.update(pd.util.hash_pandas_object(ds.params.iloc[rows], index=False).values.tobytes())
    return h.hexdigest()


def dataset_record(ds: PfsDataset, split: Split | None = None) -> dict:
    """The ``dataset`` block of a results file: path, fingerprint, sizes and the split."""
    rec = {"path": str(ds.path), "fingerprint": dataset_fingerprint(ds), "n": int(ds.n), "n_pix": int(ds.n_pix),
           "has_mask": bool(ds.has_mask), "n_dropped_rows": int(ds.n_dropped)}
    if split is not None:
        rec.update(n_train=int(len(split.train)), n_val=int(len(split.val)), n_test=int(len(split.test)),
                   split=split.to_dict())
    return rec
