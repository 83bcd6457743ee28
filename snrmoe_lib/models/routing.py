"""Routing: which bin each spectrum belongs to, and which expert serves each bin.

Routers
    :class:`SNRRouter` bins the *true* SNR of each spectrum (from the noise-free flux and
    σ = error · noise_level, definition 'l2' or 'pixel'); :class:`PhysicalRouter` bins
    (T_eff, [M/H]) into a grid (3 × 3 with two edges on each axis, the user's 9-expert oracle);
    :class:`ColumnRouter` bins one column of a feature matrix. Every router maps an estimator's
    input to bin numbers through ``route(X)``, so a mixture takes its router as a hyper-parameter
    and works inside a scikit-learn ``Pipeline``.

Small bins
    :func:`plan_bins` turns training counts into experts: a bin with fewer than ``min_count``
    training spectra is an error (``'raise'``) or is merged with its smallest neighbour
    (``'merge'``; neighbours along the SNR axis, or sharing an edge in the physical grid). No expert
    is ever fitted on an empty or tiny bin by accident, and the plan records every merge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib.data import noise as _noise

__all__ = ["SmallBinError", "SNRRouter", "PhysicalRouter", "ColumnRouter", "BinPlan", "plan_bins"]


def _chain(k: int) -> list[set[int]]:
    return [{j for j in (i - 1, i + 1) if 0 <= j < k} for i in range(k)]


class SmallBinError(ValueError):
    """A bin holds fewer training spectra than ``min_count`` and the policy is 'raise'."""


# ============================================================================ routers


def _edges_and_labels(edges: Sequence[float], labels: Sequence[str] | None, what: str) -> tuple[list, list]:
    """Strictly increasing bin edges and one label per bin (``bin0``, ``bin1``, … by default)."""
    e = [float(x) for x in edges]
    if any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"{what} must be strictly increasing, got {e}")
    lab = list(labels) if labels is not None else [f"bin{i}" for i in range(len(e) + 1)]
    if len(lab) != len(e) + 1:
        raise ValueError(f"{len(e)} edges make {len(e) + 1} bins, got {len(lab)} labels")
    return e, lab


class SNRRouter:
    """Bins of the true per-spectrum SNR (right-closed: X ≤ e0 < L ≤ e1 < …).

    Parameters
    ----------
    edges : sequence of float
    labels : sequence of str, optional
    definition : {'l2', 'pixel'}
        See :func:`snrmoe_lib.noise.snr`.
    noise_level : float
        σ = error · noise_level: the SNR and hence the bins depend on it.
    """

    name = "snr"

    def __init__(self, edges: Sequence[float], labels: Sequence[str] | None = None, definition: str = "l2",
                 noise_level: float = 1.0):
        self.edges, self.labels = _edges_and_labels(edges, labels, "SNR edges")
        if definition not in _noise.SNR_DEFINITIONS:
            raise ValueError(f"unknown SNR definition {definition!r}; use one of {_noise.SNR_DEFINITIONS}")
        self.definition = definition
        self.noise_level = float(noise_level)

    def __repr__(self) -> str:
        return f"SNRRouter(edges={self.edges}, definition={self.definition!r}, noise_level={self.noise_level:g})"

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def long_labels(self) -> list[str]:
        return _noise.bin_labels(self.edges, self.labels)

    def values(self, chunk) -> np.ndarray:
        """True SNR of each spectrum of a chunk (noise-free flux, σ = error · noise_level)."""
        return _noise.snr(chunk.flux, chunk.error, self.noise_level, self.definition, chunk.mask)

    def assign_values(self, values) -> np.ndarray:
        return _noise.assign_bins(values, self.edges)

    def assign(self, chunk) -> np.ndarray:
        return self.assign_values(self.values(chunk))

    def route(self, X) -> np.ndarray:
        """Bins of the true SNR an estimator's input carries (its ``snr`` attribute, e.g. a
        :class:`~snrmoe_lib.models.mixtures.SpectraInput` built with ``snr=``)."""
        values = getattr(X, "snr", None)
        if values is None:
            raise ValueError("SNR routing needs each spectrum's true SNR: give the input an `snr` "
                             "(SpectraInput(flux, sigma, snr=...)) or pass bins explicitly")
        return self.assign_values(np.asarray(values, dtype=np.float64))

    def neighbours(self) -> list[set[int]]:
        return _chain(self.n_bins)


class PhysicalRouter:
    """A T_eff × [M/H] grid of bins (cells numbered T-major: ``i_teff * n_m_h + i_m_h``)."""

    name = "phys"

    def __init__(self, teff_edges: Sequence[float], m_h_edges: Sequence[float],
                 columns: tuple[str, str] = ("T_eff", "M_H")):
        self.teff_edges = [float(e) for e in teff_edges]
        self.m_h_edges = [float(e) for e in m_h_edges]
        for nm, e in (("teff_edges", self.teff_edges), ("m_h_edges", self.m_h_edges)):
            if any(b <= a for a, b in zip(e, e[1:])):
                raise ValueError(f"{nm} must be strictly increasing, got {e}")
        self.columns = tuple(columns)
        self.shape = (len(self.teff_edges) + 1, len(self.m_h_edges) + 1)
        t = _noise.bin_labels(self.teff_edges, [f"T{i}" for i in range(self.shape[0])], unit=" K")
        z = _noise.bin_labels(self.m_h_edges, [f"Z{j}" for j in range(self.shape[1])])
        self.axis_labels = (t, z)
        self.labels = [f"T{i}Z{j}" for i in range(self.shape[0]) for j in range(self.shape[1])]

    def __repr__(self) -> str:
        return f"PhysicalRouter(teff_edges={self.teff_edges}, m_h_edges={self.m_h_edges})"

    @property
    def n_bins(self) -> int:
        return self.shape[0] * self.shape[1]

    def long_labels(self) -> list[str]:
        t, z = self.axis_labels
        return [f"{t[i]} · [M/H] {z[j]}" for i in range(self.shape[0]) for j in range(self.shape[1])]

    def assign_params(self, params: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in params.columns]
        if missing:
            raise KeyError(f"physical routing needs params column(s) {missing}; the table has {list(params.columns)}")
        i = _noise.assign_bins(params[self.columns[0]].to_numpy(float), self.teff_edges)
        j = _noise.assign_bins(params[self.columns[1]].to_numpy(float), self.m_h_edges)
        return i * self.shape[1] + j

    def assign(self, chunk) -> np.ndarray:
        return self.assign_params(chunk.params)

    def route(self, X) -> np.ndarray:
        """Cells of an input table holding the two columns (a ``DataFrame``)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"physical routing reads columns {list(self.columns)} of a DataFrame, "
                            f"got {type(X).__name__}")
        return self.assign_params(X)

    def neighbours(self) -> list[set[int]]:
        nt, nz = self.shape
        out = []
        for i in range(nt):
            for j in range(nz):
                nb = {(i + di) * nz + (j + dj) for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
                      if 0 <= i + di < nt and 0 <= j + dj < nz}
                out.append(nb)
        return out


class ColumnRouter:
    """Bins of one column of a feature matrix (right-closed, as :class:`SNRRouter`).

    For estimators on plain arrays: put the routing variable (an SNR, a magnitude) in a column and
    ``BinnedExperts(router=ColumnRouter(edges, column=-1))`` routes by it inside a ``Pipeline``.

    Parameters
    ----------
    edges : sequence of float
    column : int
        Column of ``X`` holding the routing variable.
    labels : sequence of str, optional
    """

    name = "column"

    def __init__(self, edges: Sequence[float], column: int = -1, labels: Sequence[str] | None = None):
        self.edges, self.labels = _edges_and_labels(edges, labels, "edges")
        self.column = int(column)

    def __repr__(self) -> str:
        return f"ColumnRouter(edges={self.edges}, column={self.column})"

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def route(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"column routing needs a 2-D feature matrix, got shape {X.shape}")
        return _noise.assign_bins(X[:, self.column].astype(np.float64), self.edges)

    def neighbours(self) -> list[set[int]]:
        return _chain(self.n_bins)


# ============================================================================ small-bin policy


@dataclass
class BinPlan:
    """Which expert serves each original bin.

    Attributes
    ----------
    labels : list of str
        Original bin labels.
    counts : ndarray
        Training spectra per original bin.
    expert_of : ndarray of int
        Expert index of each original bin.
    members : list of list of int
        Original bins served by each expert (more than one after a merge).
    """

    labels: list[str]
    counts: np.ndarray
    expert_of: np.ndarray
    members: list[list[int]]

    @property
    def n_experts(self) -> int:
        return len(self.members)

    @property
    def expert_labels(self) -> list[str]:
        return ["+".join(self.labels[b] for b in m) for m in self.members]

    @property
    def merged(self) -> bool:
        return any(len(m) > 1 for m in self.members)

    def route(self, bins) -> np.ndarray:
        """Expert index for original bin numbers."""
        bins = np.asarray(bins)
        if bins.size and (bins.min() < 0 or bins.max() >= len(self.expert_of)):
            raise ValueError(f"bin numbers must be in [0, {len(self.expert_of)})")
        return self.expert_of[bins]

    def describe(self) -> list[dict]:
        return [{"expert": self.expert_labels[k], "bins": [self.labels[b] for b in m],
                 "n_train": int(self.counts[m].sum())} for k, m in enumerate(self.members)]


def plan_bins(counts: Sequence[int], min_count: int, on_small_bin: str = "merge",
              neighbours: Sequence[set[int]] | None = None, labels: Sequence[str] | None = None) -> BinPlan:
    """Experts from training counts per bin, applying the small-bin policy.

    Parameters
    ----------
    counts : sequence of int
        Training spectra per bin.
    min_count : int
        Fewest training spectra an expert may have (at least 1: an empty expert is never allowed).
    on_small_bin : {'raise', 'merge'}
        ``'raise'``: :class:`SmallBinError` naming every small bin. ``'merge'``: repeatedly merge
        the smallest under-filled group into its neighbouring group with the fewest spectra
        (ties: the lower index).
    neighbours : list of sets, optional
        Adjacency of the original bins (default: a chain, i ± 1).
    labels : list of str, optional
    """
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    if k == 0:
        raise ValueError("no bins")
    labels = list(labels) if labels is not None else [f"bin{i}" for i in range(k)]
    if len(labels) != k:
        raise ValueError(f"{len(labels)} labels for {k} bins")
    if on_small_bin not in ("raise", "merge"):
        raise ValueError(f"on_small_bin must be 'raise' or 'merge', got {on_small_bin!r}")
    need = max(int(min_count), 1)
    if neighbours is None:
        neighbours = _chain(k)
    small = [i for i in range(k) if counts[i] < need]
    if small and on_small_bin == "raise":
        detail = ", ".join(f"{labels[i]} has {counts[i]}" for i in small)
        raise SmallBinError(f"bin(s) below min_count={need} training spectra: {detail}. "
                            f"Set snr_bins.on_small_bin: merge to merge them with a neighbour, or change the edges.")
    groups = [[i] for i in range(k)]
    while True:
        totals = [int(counts[g].sum()) for g in groups]
        under = [gi for gi, t in enumerate(totals) if t < need]
        if not under:
            break
        if len(groups) == 1:
            raise SmallBinError(f"all bins together hold {totals[0]} training spectra, fewer than min_count={need}")
        gi = min(under, key=lambda i: (totals[i], i))
        nb_bins = set().union(*(neighbours[b] for b in groups[gi])) - set(groups[gi])
        cands = sorted({gj for gj, g in enumerate(groups) if gj != gi and set(g) & nb_bins})
        if not cands:
            raise SmallBinError(f"bin {'+'.join(labels[b] for b in groups[gi])} is below min_count={need} "
                                f"and has no neighbour to merge with")
        gj = min(cands, key=lambda j: (totals[j], j))
        groups[gj] = sorted(groups[gj] + groups[gi])
        del groups[gi]
    groups.sort(key=lambda g: g[0])
    expert_of = np.empty(k, dtype=np.int64)
    for e, g in enumerate(groups):
        expert_of[g] = e
    return BinPlan(labels, counts, expert_of, groups)
