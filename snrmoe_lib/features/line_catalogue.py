"""The catalogue of spectral features (stellar lines, molecular and telluric bands, OH sky lines)
used to name where an error vector or a model's importance peaks: ``line_catalogue.csv``, shipped
with the package (air wavelengths in Å; a line has ``low == high``, a band a range).
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

import pandas as pd

__all__ = ["CATALOGUE_FILE", "line_catalogue"]

#: The package file the catalogue is read from.
CATALOGUE_FILE = "line_catalogue.csv"


@lru_cache(maxsize=1)
def _read() -> pd.DataFrame:
    with files("snrmoe_lib.features").joinpath(CATALOGUE_FILE).open("r", encoding="utf-8") as fh:
        cat = pd.read_csv(fh, comment="#", float_precision="round_trip",
                          dtype={"name": str, "kind": str, "low": float, "high": float})
    bad = cat[~(cat["low"] <= cat["high"])]
    if len(bad):
        raise ValueError(f"{CATALOGUE_FILE}: rows with low > high or missing bounds: {bad['name'].tolist()}")
    return cat


def line_catalogue() -> pd.DataFrame:
    """The catalogue as a DataFrame with columns ``name, kind, low, high`` (a fresh copy)."""
    return _read().copy()
