"""Data overview: what the dataset of a configuration holds before any model sees it.

Per-spectrum SNR (L2 and per-pixel) with the params columns, the share of spectra per SNR bin,
the example stars the notebook shows, and the notebook's metrics, checks and results payload.
The mock-against-real calibration is :mod:`snrmoe_lib.analyses.calibration`; the figures are
:mod:`snrmoe_lib.reporting.plots.overview`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.data.noise import assign_bins, bin_labels, snr
from snrmoe_lib.evaluation.records import metric

__all__ = ["snr_table", "bin_fractions", "example_rows", "snr_medians", "check_overview", "overview_results"]


def snr_table(ds: PfsDataset, rows: np.ndarray, noise_level: float, chunk_size: int = 4096) -> pd.DataFrame:
    """Per-spectrum L2 and per-pixel SNR (from σ = error · noise_level) with the params columns."""
    parts = []
    for ch in ds.iter_chunks(rows, chunk_size=chunk_size):
        df = ch.params.copy()
        df["row"] = ch.rows
        df["snr_l2"] = snr(ch.flux, ch.error, noise_level, "l2", ch.mask)
        df["snr_pixel"] = snr(ch.flux, ch.error, noise_level, "pixel", ch.mask)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def bin_fractions(values: np.ndarray, edges, labels) -> pd.DataFrame:
    """Count and fraction of spectra per SNR bin."""
    idx = assign_bins(values, edges)
    counts = np.bincount(idx, minlength=len(labels))
    return pd.DataFrame({"bin": bin_labels(edges, labels), "n": counts, "fraction": counts / counts.sum()})


def example_rows(table: pd.DataFrame, n: int = 3) -> np.ndarray:
    """Rows of ``n`` spectra spread evenly in log g (lowest to highest)."""
    return table.sort_values("log_g")["row"].to_numpy()[np.linspace(0, len(table) - 1, n).astype(int)]


def snr_medians(table: pd.DataFrame) -> dict:
    """Metric records of the median L2, per-pixel and (when present) ``snr``-column SNR."""
    medians = {"snr_l2_median": metric(np.median(table["snr_l2"])),
               "snr_pixel_median": metric(np.median(table["snr_pixel"]))}
    if "snr" in table:
        medians["snr_column_median"] = metric(np.median(table["snr"]))
    return medians


def check_overview(table: pd.DataFrame, fractions: pd.DataFrame, n: int) -> None:
    """Raise unless every spectrum has a finite, positive SNR and every spectrum is counted in a bin."""
    snrs = table[["snr_l2", "snr_pixel"]].to_numpy()
    if not (np.all(np.isfinite(snrs)) and (table["snr_l2"] > 0).all()):
        raise ValueError("a spectrum has a non-finite or non-positive SNR: check its error vector and mask")
    if fractions["n"].sum() != n:
        raise ValueError(f"the SNR bins count {fractions['n'].sum()} spectra, the dataset holds {n}")


def overview_results(table: pd.DataFrame, fractions: pd.DataFrame, n: int,
                     calibration: dict | None = None) -> tuple[dict, list, dict]:
    """The notebook's metrics, verdicts and extra payload, after :func:`check_overview`.

    ``calibration`` is :func:`snrmoe_lib.analyses.calibration.calibration_results` of the mock
    calibration (``None`` for real data: no verdicts).
    """
    check_overview(table, fractions, n)
    calibration = calibration or {"metrics": {}, "verdicts": [], "extra": {}}
    metrics = {**snr_medians(table), **calibration["metrics"]}
    extra = {"bin_fractions": fractions.to_dict(orient="records"), **calibration["extra"]}
    return metrics, calibration["verdicts"], extra
