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
    "require_labels",
    "DatasetWriter",
    "ShardedWriter",
    "Split",
    "split_rows",
    "dataset_fingerprint",
    "fingerprint_rows",
    "frozen_test_record",
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
        return _read_runs(ds, uniq)[inverse]


def _read_runs(ds: h5py.Dataset, uniq: np.ndarray, gap: int = 8) -> np.ndarray:
    """Sorted unique rows read as slabs of nearby rows (a gap of at most ``gap`` rows is read through).

    h5py's point selection (``ds[rows]``) builds one hyperslab per row and costs 2–4× as much as
    reading the few runs of nearby rows as slices (a scattered template or variance-fit subsample)."""
    out = np.empty((len(uniq),) + ds.shape[1:], ds.dtype)
    cuts = np.flatnonzero(np.diff(uniq) > gap) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(uniq)]):
        lo = int(uniq[a])
        out[a:b] = ds[lo:int(uniq[b - 1]) + 1][uniq[a:b] - lo]
    return out


def _shard_files(folder: Path) -> list[Path]:
    """The shard files ``shard_index.txt`` lists, each once (a shard listed twice would duplicate rows)."""
    index = folder / SHARD_INDEX
    if not index.is_file():
        raise DatasetError(f"{folder}: a dataset folder needs '{SHARD_INDEX}'")
    names = [ln.split("#", 1)[0].strip() for ln in index.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{index}: lists no shards")
    seen: dict[Path, str] = {}
    for name in names:
        path = folder / name / SHARD_FILE
        key = path.resolve()
        if key in seen:
            same = f"'{name}' is listed twice" if seen[key] == name else f"'{name}' is the same file as '{seen[key]}'"
            raise DatasetError(f"{index}: shard {same}; every shard must appear once (its rows would be "
                               "counted twice and could land in both train and test)")
        seen[key] = name
    return [folder / n / SHARD_FILE for n in names]


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
        if self.path.is_dir():
            self.files = [_File(p) for p in _shard_files(self.path)]
        elif self.path.exists():
            self.files = [_File(self.path)]
        else:
            raise FileNotFoundError(f"dataset not found: {self.path}")
        first = self.files[0]
        for f in self.files[1:]:
            if f.shape[1] != first.shape[1] or not np.allclose(f.wave, first.wave):
                raise DatasetError(f"{f.path}: wavelength grid differs from {first.path}; "
                                   "every shard of a dataset must share one grid")
            if list(f.params.columns) != list(first.params.columns):
                raise DatasetError(f"{f.path}: params columns differ from {first.path}")
        self.wave = first.wave
        self.n_pix = first.shape[1]
        self.has_mask = all(f.has_mask for f in self.files)
        self._offsets = np.cumsum([0] + [f.shape[0] for f in self.files])
        self.n_stored = int(self._offsets[-1])
        self.params = pd.concat([f.params for f in self.files], ignore_index=True)
        # drop: one screening pass now, then the dataset *is* its kept rows (renumbered 0..n-1), so
        # every split, pass and table built on it sees only them and nothing is dropped twice
        self._kept: np.ndarray | None = None
        self.dropped_rows = np.empty(0, np.int64)
        if on_bad_rows == "drop":
            self.dropped_rows = self._scan_bad_rows()
            if self.dropped_rows.size:
                self._kept = np.setdiff1d(np.arange(self.n_stored), self.dropped_rows)
                self.params = self.params.iloc[self._kept].reset_index(drop=True)
                examples = ", ".join(str(r) for r in self.dropped_rows[:5])
                warnings.warn(f"{self.path}: dropped {self.dropped_rows.size} of {self.n_stored} row(s) holding "
                              f"NaN/inf or error <= 0 (stored rows {examples}"
                              f"{', ...' if self.dropped_rows.size > 5 else ''}); the dataset is the "
                              f"{self.n_stored - self.dropped_rows.size} kept rows", stacklevel=2)
        self.n = self.n_stored - int(self.dropped_rows.size)

    @property
    def n_dropped(self) -> int:
        """Rows left out as bad (``on_bad_rows='drop'``), counted once when the dataset was opened."""
        return int(self.dropped_rows.size)

    def stored_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (file) row numbers of kept rows ``rows`` (the same numbers when nothing was dropped)."""
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self._kept is None else self._kept[rows]

    @property
    def row_offsets(self) -> np.ndarray:
        """Where each file's rows start, in the dataset's (kept) row numbers, plus the total."""
        return self._offsets if self._kept is None else np.searchsorted(self._kept, self._offsets)

    def _scan_bad_rows(self, chunk_size: int = 4096) -> np.ndarray:
        """Stored row numbers of the bad rows (one sequential pass over flux and error)."""
        bad = []
        for s in range(0, self.n_stored, chunk_size):
            rows = np.arange(s, min(s + chunk_size, self.n_stored))
            flux, error, positive, mask = self._gather(rows, np.float32, with_mask=False)
            bad.append(rows[self._bad(flux, error, positive, mask)])
        return np.concatenate(bad) if bad else np.empty(0, np.int64)

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

    def _gather(self, stored: np.ndarray, dtype, with_mask: bool):
        """flux, error, (σ > 0 on every pixel) and the mask (or None) of stored rows, in the given order."""
        order = np.argsort(stored, kind="stable")
        srows = stored[order]
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
        return flux, error, positive, mask

    @staticmethod
    def _bad(flux, error, positive, mask) -> np.ndarray:
        """Rows with NaN/inf, or σ ≤ 0 on an unmasked pixel (``positive``: σ > 0 on every pixel)."""
        finite = np.isfinite(flux).all(axis=1) & np.isfinite(error).all(axis=1)
        if mask is not None and not positive.all():
            positive = ((mask != 0) | (error > 0)).all(axis=1)
        return ~(finite & positive)

    def read(self, rows: Sequence[int] | np.ndarray, dtype=np.float32, with_mask: bool = True) -> Chunk:
        """Read the given rows (any order; returned in that order), checked for bad values.

        ``with_mask=False`` skips the pixel mask (a third array as large as the flux) when the caller
        does not use it: the chunk's ``mask`` is then ``None``, except that the mask is still read
        for a chunk in which some σ ≤ 0, to tell masked pixels from bad ones.
        """
        rows = self._check_rows(np.asarray(rows))
        flux, error, positive, mask = self._gather(self.stored_rows(rows), dtype, with_mask)
        bad = self._bad(flux, error, positive, mask)
        if bad.any():
            # with 'drop' the bad rows were left out at open: a bad row now means the file changed
            n_bad = int(bad.sum())
            examples = ", ".join(str(r) for r in self.stored_rows(rows[bad])[:5])
            hint = (" Pass on_bad_rows='drop' (data.on_bad_rows: drop) to skip them." if self.on_bad_rows == "raise"
                    else " The file changed after it was opened: open it again.")
            raise BadRowsError(f"{self.path}: {n_bad} row(s) hold NaN/inf or error <= 0 (stored rows {examples}"
                               f"{', ...' if n_bad > 5 else ''}).{hint}")
        return Chunk(rows, flux, error, mask, self.params.iloc[rows].reset_index(drop=True))

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


def require_labels(ds: PfsDataset, target: str = "log_g") -> PfsDataset:
    """``ds`` if its params table holds the label ``log_g`` and the regression ``target``.

    Otherwise ``ds`` is closed and :class:`DatasetError` names the missing column(s) and those it holds.
    """
    need = [c for c in dict.fromkeys(["log_g", target]) if c not in ds.params.columns]
    if need:
        ds.close()
        raise DatasetError(f"{ds.path}: the params table has no column(s) {need} (it holds "
                           f"{list(ds.params.columns)}); the notebooks need the label log_g (and ridge.target)")
    return ds


# ------------------------------------------------------------------------------------ splits


@dataclass
class Split:
    """Row numbers of a seeded train/val/test split (each sorted).

    The rows are the dataset's: with ``data.on_bad_rows: drop`` they are kept rows only, and
    ``n_dropped`` records how many stored rows were left out before the split was drawn.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    n_dropped: int = 0

    def to_dict(self) -> dict:
        """What the results file records: sizes, seed, rows dropped before it and a digest of the row numbers."""
        digest = hashlib.sha256()
        for a in (self.train, self.val, self.test):
            digest.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        return {"seed": int(self.seed), "n_train": int(len(self.train)), "n_val": int(len(self.val)),
                "n_test": int(len(self.test)), "n_dropped_rows": int(self.n_dropped),
                "rows_sha256": digest.hexdigest()}


def split_rows(n: int, n_train: int, n_val: int, n_test: int, seed: int, n_dropped: int = 0) -> Split:
    """A seeded random split of ``range(n)``; it depends only on (n, sizes, seed).

    ``n`` is the number of rows the dataset holds (its kept rows when bad rows were dropped:
    ``n_dropped`` only records how many were).

    Raises
    ------
    ValueError
        When the dataset holds fewer rows than requested.
    """
    need = n_train + n_val + n_test
    if need > n:
        kept = f" ({n_dropped} bad row(s) dropped)" if n_dropped else ""
        raise ValueError(f"split needs {need} rows (train {n_train} + val {n_val} + test {n_test}) but the dataset "
                         f"has {n}{kept}")
    perm = _rng("split.permutation", seed).permutation(n)
    train = np.sort(perm[:n_train])
    val = np.sort(perm[n_train:n_train + n_val])
    test = np.sort(perm[n_train + n_val:need])
    return Split(train, val, test, seed, int(n_dropped))


#: Spectra hashed by :func:`dataset_fingerprint` (besides the first and the last row)
FINGERPRINT_ROWS = 64


def fingerprint_rows(n: int, k: int = FINGERPRINT_ROWS) -> np.ndarray:
    """A fixed sample of ``k`` rows spread over ``range(n)``, plus the first and the last.

    A golden-ratio (Weyl) sequence: deterministic, no random stream, and spread evenly at every
    scale, so an edit of any contiguous block of more than about n/k rows is caught.
    """
    if n <= k + 2:
        return np.arange(n)
    weyl = np.floor(np.modf(np.arange(1, k + 1) * 0.6180339887498949)[0] * n).astype(np.int64)
    return np.unique(np.concatenate([[0, n - 1], weyl]))


def dataset_fingerprint(ds: PfsDataset) -> str:
    """sha256 of what identifies a dataset, cheaply (a few dozen spectra read, whatever N).

    Covers: the layout (pixels, mask, number and sizes of the files, params columns), the
    wavelength grid, the **whole** params table of the stored rows (labels and conditions of every
    star), and the flux, error (and mask) of :data:`FINGERPRINT_ROWS` stored rows spread over the
    file by :func:`fingerprint_rows` plus the first and the last. A change to the spectra of rows
    outside that sample is not seen; a change to any label is.
    """
    h = hashlib.sha256()
    sizes = [int(f.shape[0]) for f in ds.files]
    h.update(f"{ds.n_stored}:{ds.n_pix}:{ds.has_mask}:{sizes}:{list(ds.params.columns)}".encode())
    h.update(np.ascontiguousarray(ds.wave).tobytes())
    stored = pd.concat([f.params for f in ds.files], ignore_index=True)
    h.update(pd.util.hash_pandas_object(stored, index=False).values.tobytes())
    rows = fingerprint_rows(ds.n_stored)
    flux, error, _, mask = ds._gather(rows, None, with_mask=ds.has_mask)
    for a in (flux, error) + ((mask,) if mask is not None else ()):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def frozen_test_record(ds: PfsDataset, split: Split, fingerprint: str | None = None) -> dict:
    """The ``frozen_test`` block of a results file: the test stars every model of a run is scored on.

    ``fingerprint`` hashes the stored row numbers of the test rows with the dataset fingerprint:
    two results with the same one scored the same stars of the same data.
    """
    h = hashlib.sha256((fingerprint or dataset_fingerprint(ds)).encode())
    h.update(np.ascontiguousarray(ds.stored_rows(split.test), dtype=np.int64).tobytes())
    return {"seed": int(split.seed), "n": int(len(split.test)), "fingerprint": h.hexdigest()}


def dataset_record(ds: PfsDataset, split: Split | None = None) -> dict:
    """The ``dataset`` block of a results file: path, fingerprint, sizes, dropped rows and the split."""
    rec = {"path": str(ds.path), "fingerprint": dataset_fingerprint(ds), "n": int(ds.n), "n_pix": int(ds.n_pix),
           "has_mask": bool(ds.has_mask), "n_stored": int(ds.n_stored), "n_dropped_rows": int(ds.n_dropped),
           "on_bad_rows": ds.on_bad_rows}
    if ds.n_dropped:
        rec["dropped_rows_sha256"] = hashlib.sha256(
            np.ascontiguousarray(ds.dropped_rows, dtype=np.int64).tobytes()).hexdigest()
    if split is not None:
        rec.update(n_train=int(len(split.train)), n_val=int(len(split.val)), n_test=int(len(split.test)),
                   split=split.to_dict())
    return rec
