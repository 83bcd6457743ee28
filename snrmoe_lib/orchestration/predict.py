"""``snrmoe predict``: a saved model applied to any pfsspec dataset, streamed, into an atomic catalogue.

:func:`predict_catalogue` reads the dataset (one file or a sharded folder) in row chunks on a
background thread (flat memory: a few chunks of spectra at once, whatever N), predicts each chunk
with the model (:meth:`~snrmoe_lib.models.deployed.DeployedMixture.predict`) and collects the
per-star rows in a :class:`~snrmoe_lib.data.catalogue.CatalogueWriter`, which writes the file in
one atomic step at the end: an error, Ctrl-C or SIGTERM part-way leaves no catalogue.

* ``noisy=False`` (noise-free products, as the mock and the simulator write them): noise is drawn
  by the protocol (keyed by (``seed``, stored row)), the same draw the notebooks make, and σ is the
  one the model was fitted on: error · noise level (error mode 'clean') or σ̂ estimated from that
  same draw with the model's variance model ('estimated'). ``noisy=True``: the flux is an
  observation and the file's error, the pipeline's σ̂, is read as is.
* The wavelength grid must be the model's; another grid is refused unless ``resample`` (linear
  interpolation of flux, error and mask onto the model's grid, which the data must cover).
* Bad rows (NaN/inf flux or error, error ≤ 0 on an unmasked pixel): ``on_bad_rows='refuse'`` stops
  with an error and writes nothing; ``'flag'`` keeps them in the catalogue without a prediction and
  with ``flag_bad_row`` set (a chunk that holds one is read again in halves until the bad rows are
  alone: no screening pass over the whole file).
* ``row`` is the stored row number (file order over the shards); it also keys the noise draw.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from snrmoe_lib._util.threads import ordered_map
from snrmoe_lib.data.catalogue import CatalogueWriter, catalogue_format
from snrmoe_lib.data.io import BadRowsError, Chunk, DatasetError, open_dataset
from snrmoe_lib.models.deployed import FLAG_BITS, DeployedMixture, load_model

__all__ = ["GridMismatchError", "grid_map", "predict_catalogue"]


class GridMismatchError(ValueError):
    """The dataset's wavelength grid is not the model's (and resampling was not asked for, or cannot work)."""


def _describe(w: np.ndarray) -> str:
    return f"{len(w)} pixels, {w[0]:.2f}–{w[-1]:.2f} Å"


def grid_map(wave: np.ndarray, model_wave: np.ndarray, resample: bool, where: str = "the data"):
    """``None`` when ``wave`` is the model's grid; else, with ``resample``, the linear interpolation
    ``(left index, right index, right weight)`` onto ``model_wave``; else :class:`GridMismatchError`."""
    wave, model_wave = np.asarray(wave, np.float64), np.asarray(model_wave, np.float64)
    if len(wave) == len(model_wave) and np.allclose(wave, model_wave, rtol=0, atol=1e-6 * np.abs(model_wave).max()):
        return None
    if not resample:
        raise GridMismatchError(f"{where}: wavelength grid ({_describe(wave)}) differs from the model's "
                                f"({_describe(model_wave)}); pass --resample to interpolate onto the model's grid")
    if np.any(np.diff(wave) <= 0):
        raise GridMismatchError(f"{where}: the wavelength grid does not increase: cannot resample it")
    if wave[0] > model_wave[0] or wave[-1] < model_wave[-1]:
        raise GridMismatchError(f"{where}: the wavelength grid ({_describe(wave)}) does not cover the model's "
                                f"({_describe(model_wave)}): cannot resample onto it")
    right = np.clip(np.searchsorted(wave, model_wave), 1, len(wave) - 1)
    left = right - 1
    return left, right, (model_wave - wave[left]) / (wave[right] - wave[left])


def _resample(chunk, gmap):
    if gmap is None:
        return chunk.flux, chunk.error, chunk.mask
    left, right, w = gmap
    lin = (lambda a: (a[:, left] * (1 - w) + a[:, right] * w).astype(a.dtype))
    mask = None if chunk.mask is None else ((chunk.mask[:, left] != 0) | (chunk.mask[:, right] != 0))
    return lin(chunk.flux), lin(chunk.error), mask


def _passthrough(params: pd.DataFrame, model_cols) -> pd.DataFrame:
    """The params table's columns, renamed ``param_<name>`` where a model column has the same name."""
    clash = set(params.columns) & set(model_cols)
    return params.rename(columns={c: f"param_{c}" for c in clash}).reset_index(drop=True)


def _bad_rows_block(ds, rows: np.ndarray, template: pd.DataFrame) -> pd.DataFrame:
    """Catalogue rows for bad rows: passthrough columns, no prediction, flagged."""
    stored = ds.params.iloc[rows]
    own = [c for c in template.columns if c not in stored.columns and not c.startswith("param_")]
    params = _passthrough(stored, own)
    empty = {"f": np.nan, "b": False, "i": 0, "u": 0}
    cols = {}
    for c in template.columns:
        if c in params.columns:
            cols[c] = params[c].to_numpy()
        else:
            cols[c] = np.full(len(rows), empty.get(template[c].dtype.kind, ""), dtype=template[c].dtype)
    block = pd.DataFrame(cols)
    block["row"], block["flag_bad_row"], block["flag"] = rows, True, FLAG_BITS["bad_row"]
    return block.astype(template.dtypes.to_dict())


def _read_good(ds, rows: np.ndarray) -> tuple[list, list]:
    """(chunks of the good rows, arrays of the bad rows) of ``rows``: a block that holds a bad row is
    halved until the bad rows are alone (a few reads per bad row; no screening pass over the file)."""
    try:
        return [ds.read(rows, with_mask=ds.has_mask)], []
    except BadRowsError:
        if len(rows) == 1:
            return [], [rows]
    mid = len(rows) // 2
    (g1, b1), (g2, b2) = _read_good(ds, rows[:mid]), _read_good(ds, rows[mid:])
    return g1 + g2, b1 + b2


def _concat(chunks: list) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    cat = (lambda k: None if getattr(chunks[0], k) is None else np.concatenate([getattr(c, k) for c in chunks]))
    return Chunk(cat("rows"), cat("flux"), cat("error"), cat("mask"),
                 pd.concat([c.params for c in chunks], ignore_index=True))


def _meta(model: DeployedMixture, model_path, data, noisy: bool, seed: int, resampled: bool, on_bad_rows: str) -> dict:
    rec = model.record
    return {"model": rec.get("name", ""), "modelfp": rec.get("dataset", {}).get("fingerprint", "")[:16],
            "codever": rec.get("code_version", ""), "modeldir": str(model_path), "data": str(data),
            "noisy": bool(noisy), "seed": int(seed), "resample": bool(resampled), "badrows": on_bad_rows,
            "level": float(model.calibration.level), "tau": float(model.tau), "family": model.family,
            "errmode": model.error_mode}


def predict_catalogue(model: DeployedMixture | str | Path, data: str | Path, out: str | Path, *, noisy: bool = False,
                      resample: bool = False, on_bad_rows: str = "flag", seed: int = 0, chunk_size: int = 1024,
                      max_bad_fraction: float | None = None, overwrite: bool = False,
                      progress: bool | str = True) -> dict:
    """Predict every spectrum of a dataset into the catalogue ``out`` (format by extension).

    Returns a summary: rows written, flagged counts, wall seconds and spectra per second.
    """
    if on_bad_rows not in ("flag", "refuse"):
        raise ValueError(f"on_bad_rows must be 'flag' or 'refuse', got {on_bad_rows!r}")
    catalogue_format(out)
    model_path = model
    if not isinstance(model, DeployedMixture):
        model = load_model(model)
    t0 = time.perf_counter()
    ds = open_dataset(data, on_bad_rows="raise")
    try:
        gmap = grid_map(ds.wave, model.wave, resample, str(data))
        writer = CatalogueWriter(out, _meta(model, model_path, data, noisy, seed, gmap is not None, on_bad_rows),
                                 overwrite=overwrite, sort_by="row")
        with writer:
            bad = _stream(ds, model, writer, gmap, noisy, seed, chunk_size, max_bad_fraction, on_bad_rows, progress)
            if len(bad):
                writer.append(_bad_rows_block(ds, bad, writer.blocks[0]))
            n = writer.n_rows
            flags = {k: int(sum(int(b[f"flag_{k}"].sum()) for b in writer.blocks)) for k in FLAG_BITS}
    finally:
        ds.close()
    dt = time.perf_counter() - t0
    return {"path": str(Path(out)), "n_rows": int(n), "n_predicted": int(n - len(bad)), "flags": flags,
            "seconds": dt, "spectra_per_s": (n - len(bad)) / dt if dt > 0 else float("nan")}


def _stream(ds, model, writer, gmap, noisy, seed, chunk_size, max_bad_fraction, on_bad_rows, progress) -> np.ndarray:
    """Predict every good row into ``writer``; returns the bad rows (``on_bad_rows='flag'``)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if ds.n == 0:
        raise DatasetError(f"{ds.path}: no rows to predict")
    starts = range(0, ds.n, chunk_size)

    def read(s):
        rows = np.arange(s, min(s + chunk_size, ds.n))
        try:
            if on_bad_rows == "refuse":
                good, bad = [ds.read(rows, with_mask=ds.has_mask)], []
            else:
                good, bad = _read_good(ds, rows)
        except BadRowsError as exc:
            raise BadRowsError(f"{exc} With snrmoe predict: --on-bad-rows flag keeps them, flagged.") from None
        except OSError as exc:  # h5py: a truncated or damaged file fails at the read, not at the open
            raise DatasetError(f"{ds.path}: cannot read rows {rows[0]}–{rows[-1]} ({exc}); the file is "
                               "truncated or damaged") from None
        if not good:
            return None, None, bad, None, None, None
        chunk = _concat(good)
        flux, error, mask = _resample(chunk, gmap)
        if not noisy:  # the protocol's noise (and σ of the model's error mode), drawn here on the reader thread
            flux, error = model.draw_noise(flux, error, chunk.rows, seed)
        return chunk.rows, chunk.params, bad, flux, error, mask  # not the chunk: its raw arrays are freed

    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress if isinstance(progress, str) else "predict", unit="chunk")
    bad_rows = []
    # one chunk prepared ahead on the reader thread: at most two chunks of spectra in memory
    for rows, table, bad, flux, error, mask in ordered_map(read, starts, workers=1, ahead=0):
        bad_rows += bad
        if rows is None:
            continue
        df = model.predict(flux, error, noisy=True, rows=rows, mask=mask, max_bad_fraction=max_bad_fraction)
        del flux, error, mask
        params = _passthrough(table, df.columns)
        writer.append(pd.concat([df[["row"]], params, df.drop(columns="row")], axis=1))
    if not writer.blocks:
        raise BadRowsError(f"{ds.path}: every row is bad (NaN/inf or error <= 0): nothing to predict")
    return np.concatenate(bad_rows) if bad_rows else np.empty(0, np.int64)
