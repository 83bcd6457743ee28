"""Catalogues of per-star predictions, written atomically as FITS, Parquet or HDF5 (by extension).

:class:`CatalogueWriter` collects the rows of a catalogue block by block (a few dozen numbers per
star: the spectra are never held) and writes the file under a temporary name when it is closed,
then renames it into place (:class:`~snrmoe_lib.data.writers.AtomicWriter`). An exception or a
signal before that leaves nothing under the real name, so an interrupted ``snrmoe predict`` never
leaves half a catalogue.

Formats
    ``.fits`` / ``.fit``: one binary table HDU (astropy), the metadata as header cards
    ``.parquet``: pyarrow through pandas, the metadata as JSON in the file's pandas attrs
    ``.h5`` / ``.hdf5``: a pandas table under key ``catalogue`` (PyTables), the metadata as JSON in
    the root attribute ``snrmoe_meta``
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib.data.writers import AtomicWriter

__all__ = ["FORMATS", "catalogue_format", "CatalogueWriter", "write_catalogue", "read_catalogue"]

FORMATS = {".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".h5": "hdf5", ".hdf5": "hdf5"}
H5_KEY = "catalogue"


def catalogue_format(path: str | Path) -> str:
    """The format of a catalogue path by its extension (a clear error for any other)."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unknown catalogue format {ext or '(no extension)'!r}; use one of "
                         f"{', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def _fits_header_cards(meta: dict) -> dict:
    """Short header cards: keys up to 8 characters, values plain scalars (longer text cut to 68)."""
    out = {}
    for k, v in meta.items():
        key = str(k).upper()[:8]
        if isinstance(v, (bool, int, float)) and not isinstance(v, np.generic):
            out[key] = v
        else:
            out[key] = str(v)[:68]
    return out


def _write_fits(df: pd.DataFrame, path: Path, meta: dict) -> None:
    from astropy.table import Table

    t = Table.from_pandas(df)
    t.meta.update(_fits_header_cards(meta))
    t.write(path, format="fits")


def _write_parquet(df: pd.DataFrame, path: Path, meta: dict) -> None:
    df = df.copy()
    df.attrs = {"snrmoe": json.dumps(meta)}
    df.to_parquet(path, engine="pyarrow", index=False)


def _write_hdf5(df: pd.DataFrame, path: Path, meta: dict) -> None:
    import h5py

    df.to_hdf(path, key=H5_KEY, format="table", index=False)
    with h5py.File(path, "a") as h5:
        h5.attrs["snrmoe_meta"] = json.dumps(meta)


_WRITERS = {"fits": _write_fits, "parquet": _write_parquet, "hdf5": _write_hdf5}


class CatalogueWriter(AtomicWriter):
    """Collect catalogue blocks (:meth:`append`) and write them in one atomic step on :meth:`close`.

    Parameters
    ----------
    path : the catalogue file; its extension picks the format (:data:`FORMATS`)
    meta : dict
        Plain values written into the file's metadata (model, data, options).
    overwrite : replace an existing file (else :class:`FileExistsError` at construction, before any work)
    sort_by : str, optional
        A column the rows are sorted by (stably) before writing.
    """

    def __init__(self, path: str | Path, meta: dict | None = None, overwrite: bool = False,
                 sort_by: str | None = None):
        self.format = catalogue_format(path)
        if Path(path).exists() and not overwrite:
            raise FileExistsError(f"{path} exists; refusing to overwrite the catalogue (pass --force)")
        super().__init__(path, overwrite=overwrite)
        self.meta = dict(meta or {})
        self.blocks: list[pd.DataFrame] = []
        self.sort_by = sort_by

    def append(self, block: pd.DataFrame) -> None:
        if self.blocks and list(block.columns) != list(self.blocks[0].columns):
            raise ValueError("a catalogue block has other columns than the first")
        self.blocks.append(block)

    @property
    def n_rows(self) -> int:
        return sum(len(b) for b in self.blocks)

    def _finish(self) -> None:
        if not self.blocks:
            raise ValueError(f"{self.path}: no rows to write")
        df = pd.concat(self.blocks, ignore_index=True)
        self.blocks = []
        if self.sort_by is not None:
            df = df.sort_values(self.sort_by, kind="stable", ignore_index=True)
        _WRITERS[self.format](df, self.tmp, self.meta)


def write_catalogue(df: pd.DataFrame, path: str | Path, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write one DataFrame as a catalogue (atomically)."""
    with CatalogueWriter(path, meta, overwrite) as w:
        w.append(df)
    return w.path


def read_catalogue(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of a catalogue written here, in any of the formats."""
    fmt = catalogue_format(path)
    if fmt == "fits":
        from astropy.table import Table

        t = Table.read(path, format="fits")
        meta = dict(t.meta)
        df = t.to_pandas()
        for c in df.columns:
            if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], bytes):
                df[c] = df[c].str.decode("utf-8")
        return df, meta
    if fmt == "parquet":
        df = pd.read_parquet(path, engine="pyarrow")
        return df, json.loads(df.attrs.get("snrmoe", "{}"))
    import h5py

    df = pd.read_hdf(path, key=H5_KEY)
    with h5py.File(path, "r") as h5:
        meta = json.loads(h5.attrs.get("snrmoe_meta", "{}"))
    return df, meta
