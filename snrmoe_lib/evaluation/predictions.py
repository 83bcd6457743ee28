"""Per-star predictions on the frozen test set, saved beside a results file.

``<notebook>_predictions.npz`` (numpy's zip of plain arrays: no pickle, read with
``allow_pickle=False``) holds, for one notebook run, the frozen test's fingerprint, the test rows,
the true target, the noise seeds and every model's predictions as named columns, each
(n_seeds, n_test). Later analyses (the ceiling's paired efficiency) pair models with bounds star by
star through these files instead of re-running the models. Written atomically (temporary name, then
rename).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from snrmoe_lib.data.writers import AtomicWriter
from snrmoe_lib.evaluation.records import ResultsError

__all__ = ["FORMAT", "Predictions", "PredictionsError", "predictions_path", "write_predictions", "read_predictions"]

#: Version of the file layout.
FORMAT = 1


class PredictionsError(ResultsError):
    """A predictions file is missing, malformed, or scored on other stars than expected."""


@dataclass
class Predictions:
    """One run's frozen-test predictions: ``models[name]`` is (n_seeds, n_test), rows sorted as ``rows``."""

    notebook: str
    fingerprint: str
    rows: np.ndarray
    y: np.ndarray
    seeds: np.ndarray
    models: dict

    def squared_errors(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Per star: (y − ŷ)² averaged over the seeds, for ``rows`` (default: all, in file order)."""
        pos = self.positions(rows)
        return np.mean((self.models[name][:, pos] - self.y[pos]) ** 2, axis=0)

    def positions(self, rows: np.ndarray | None) -> np.ndarray:
        """Positions of ``rows`` in the file; a row that was not predicted raises :class:`PredictionsError`."""
        if rows is None:
            return np.arange(len(self.rows))
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.searchsorted(self.rows, rows)
        ok = (pos < len(self.rows)) & (self.rows[np.minimum(pos, len(self.rows) - 1)] == rows)
        if not ok.all():
            raise PredictionsError(f"{self.notebook}: rows {rows[~ok][:5].tolist()} … were not predicted")
        return pos


def predictions_path(output_dir: str | Path, notebook: str) -> Path:
    """``<output_dir>/<notebook>_predictions.npz``."""
    return Path(output_dir) / f"{notebook}_predictions.npz"


def write_predictions(output_dir: str | Path, notebook: str, *, fingerprint: str, rows: Sequence[int], y,
                      seeds: Sequence[int], models: Mapping[str, np.ndarray]) -> Path:
    """Write ``<notebook>_predictions.npz`` atomically and return its path.

    ``models``: name → (n_seeds, n_test) (or (n_test,) for one seed) predictions, aligned with ``rows``
    (sorted, unique) and ``y``. Shapes are checked before anything is written.
    """
    rows = np.asarray(rows, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    seeds = np.asarray(seeds, dtype=np.int64)
    if rows.ndim != 1 or y.shape != rows.shape:
        raise ValueError(f"rows {rows.shape} and y {y.shape} must be equal 1-D shapes")
    if len(rows) and np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be sorted and unique")
    if not models:
        raise ValueError("no model predictions to write")
    arrays = {"format": np.array(FORMAT), "notebook": np.array(notebook), "fingerprint": np.array(fingerprint),
              "rows": rows, "y": y, "seeds": seeds, "models": np.array(list(models), dtype=str)}
    for i, (name, p) in enumerate(models.items()):
        p = np.atleast_2d(np.asarray(p, dtype=np.float32))
        if p.shape != (len(seeds), len(rows)):
            raise ValueError(f"model {name!r}: predictions of shape {p.shape}, expected (n_seeds, n_test) = "
                             f"{(len(seeds), len(rows))}")
        arrays[f"pred_{i}"] = p
    path = predictions_path(output_dir, notebook)
    with AtomicWriter(path, overwrite=True) as w:
        with open(w.tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def read_predictions(path: str | Path, fingerprint: str | None = None) -> Predictions:
    """Read a predictions file; with ``fingerprint``, check it was scored on that frozen test.

    Raises
    ------
    PredictionsError
        The file is missing, not a predictions file of this format, inconsistent, or of another test set.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no predictions file")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or int(z["format"]) != FORMAT:
                raise PredictionsError(f"{path}: not a predictions file of format {FORMAT}")
            names = [str(n) for n in z["models"]]
            out = Predictions(str(z["notebook"]), str(z["fingerprint"]), z["rows"], z["y"], z["seeds"],
                              {n: z[f"pred_{i}"] for i, n in enumerate(names)})
    except PredictionsError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise PredictionsError(f"{path}: unreadable predictions file ({type(exc).__name__}: {exc})") from None
    shape = (len(out.seeds), len(out.rows))
    bad = [n for n, p in out.models.items() if p.shape != shape]
    if out.y.shape != out.rows.shape or bad:
        raise PredictionsError(f"{path}: inconsistent shapes (models {bad} are not {shape})")
    if fingerprint is not None and out.fingerprint != fingerprint:
        raise PredictionsError(f"{path}: predictions of another frozen test (fingerprint {out.fingerprint[:12]}…, "
                               f"expected {fingerprint[:12]}…)")
    return out
