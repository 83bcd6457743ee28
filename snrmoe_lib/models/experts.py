"""Binned experts: one model per bin of a routing variable, with oracle routing.

Routers
    :class:`SNRRouter` bins the *true* SNR of each spectrum (from the noise-free flux and
    σ = error · noise_level, definition 'l2' or 'pixel'); :class:`PhysicalRouter` bins
    (T_eff, [M/H]) into a grid (3 × 3 with two edges on each axis, the user's 9-expert oracle).

Small bins
    :func:`plan_bins` turns training counts into experts: a bin with fewer than ``min_count``
    training spectra is an error (``'raise'``) or is merged with its smallest neighbour
    (``'merge'``; neighbours along the SNR axis, or sharing an edge in the physical grid). No expert
    is ever fitted on an empty or tiny bin by accident, and the plan records every merge.

Two ways to fit
    * :class:`BinnedExperts` — in memory, any scikit-learn-style regressor (``fit(X, y,
      sample_weight)`` / ``predict``) as the expert type, hard bins or soft responsibilities.
    * :func:`fit_oracle_stream` — the out-of-core path for Ridge experts: one sequential pass over
      train, validation and test rows fills a Gram per cell of (every router's bins crossed); each
      family's experts and the global model are sums of cells (:meth:`GramStats.collapse`).
      Returns every expert's prediction for every test spectrum (:class:`OracleRun`), so mixtures
      and gates can be built on top without refitting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone

from snrmoe_lib.data import noise as _noise
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.models.ridge import GramStats, StreamingRidge, solve_path
from snrmoe_lib.features.flux import FluxFeatures

__all__ = [
    "SmallBinError",
    "SNRRouter",
    "PhysicalRouter",
    "BinPlan",
    "plan_bins",
    "BinnedExperts",
    "LinearModels",
    "ExpertFamily",
    "OracleRun",
    "fit_oracle_stream",
    "routers_from_params",
    "HEADROOM_MODELS",
    "Headroom",
    "run_headroom",
    "scores_table",
    "headroom_metrics",
]


class SmallBinError(ValueError):
    """A bin holds fewer training spectra than ``min_count`` and the policy is 'raise'."""


# ============================================================================ routers


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
        self.edges = [float(e) for e in edges]
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"SNR edges must be strictly increasing, got {self.edges}")
        if definition not in _noise.SNR_DEFINITIONS:
            raise ValueError(f"unknown SNR definition {definition!r}; use one of {_noise.SNR_DEFINITIONS}")
        self.definition = definition
        self.noise_level = float(noise_level)
        self.labels = list(labels) if labels is not None else [f"bin{i}" for i in range(len(self.edges) + 1)]
        if len(self.labels) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges make {len(self.edges) + 1} bins, got {len(self.labels)} labels")

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

    def neighbours(self) -> list[set[int]]:
        k = self.n_bins
        return [{j for j in (i - 1, i + 1) if 0 <= j < k} for i in range(k)]


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

    def neighbours(self) -> list[set[int]]:
        nt, nz = self.shape
        out = []
        for i in range(nt):
            for j in range(nz):
                nb = {(i + di) * nz + (j + dj) for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
                      if 0 <= i + di < nt and 0 <= j + dj < nz}
                out.append(nb)
        return out


def routers_from_params(params, noise_level: float | None = None) -> dict:
    """The two oracle routers of a configuration: ``{'snr': SNRRouter, 'phys': PhysicalRouter}``."""
    nl = params.noise.noise_level if noise_level is None else noise_level
    sb = params.snr_bins
    return {"snr": SNRRouter(sb.edges, sb.labels, sb.definition, nl),
            "phys": PhysicalRouter(params.experts.physical_teff_edges, params.experts.physical_m_h_edges)}


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
        neighbours = [{j for j in (i - 1, i + 1) if 0 <= j < k} for i in range(k)]
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


# ============================================================================ in-memory, pluggable


class BinnedExperts(RegressorMixin, BaseEstimator):
    """One regressor per bin plus a global one; predictions by oracle routing or by mixing.

    Parameters
    ----------
    estimator : regressor, optional
        The expert type: anything with ``fit(X, y, sample_weight=...)`` and ``predict(X)``
        (cloned per expert). Default :class:`~snrmoe_lib.ridge.StreamingRidge` (α = 1).
    n_bins : int
        Number of original bins (routing values in ``[0, n_bins)``).
    labels : list of str, optional
    min_count : int
    on_small_bin : {'raise', 'merge'}
    neighbours : list of sets, optional
        Bin adjacency for merging (default: a chain). Routers provide it (``router.neighbours()``).
    fit_global : bool
        Also fit one model on all rows (the baseline and the fallback).

    Attributes
    ----------
    experts_ : list of fitted regressors
    global_ : fitted regressor or None
    plan_ : BinPlan (hard bins) or None (soft responsibilities)
    """

    def __init__(self, estimator=None, n_bins: int = 4, labels=None, min_count: int = 20,
                 on_small_bin: str = "merge", neighbours=None, fit_global: bool = True):
        self.estimator = estimator
        self.n_bins = n_bins
        self.labels = labels
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.neighbours = neighbours
        self.fit_global = fit_global

    def _base(self):
        return StreamingRidge(alpha=1.0) if self.estimator is None else self.estimator

    @staticmethod
    def _fit_one(est, X, y, w):
        return est.fit(X, y) if w is None else est.fit(X, y, sample_weight=w)

    def fit(self, X, y, bins=None, sample_weight=None, responsibilities=None) -> "BinnedExperts":
        """Fit the experts on hard ``bins`` (n,) or soft ``responsibilities`` (n, n_bins).

        With responsibilities, expert k is fitted on every row with weight
        ``responsibilities[:, k] · sample_weight``; an expert whose summed weight is below
        ``min_count`` is an error (merging has no meaning for soft assignments).
        """
        X = np.asarray(X)
        y = np.asarray(y, dtype=np.float64)
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if (bins is None) == (responsibilities is None):
            raise ValueError("give exactly one of bins (oracle/hard) or responsibilities (soft)")
        self.experts_ = []
        if bins is not None:
            bins = np.asarray(bins)
            if bins.shape != y.shape or not np.issubdtype(bins.dtype, np.integer):
                raise ValueError(f"bins must be integer labels of shape {y.shape}")
            if bins.min() < 0 or bins.max() >= self.n_bins:
                raise ValueError(f"bins must be in [0, {self.n_bins}), got [{bins.min()}, {bins.max()}]")
            self.plan_ = plan_bins(np.bincount(bins, minlength=self.n_bins), self.min_count, self.on_small_bin,
                                   self.neighbours, self.labels)
            route = self.plan_.route(bins)
            for e in range(self.plan_.n_experts):
                sel = route == e
                self.experts_.append(self._fit_one(clone(self._base()), X[sel], y[sel],
                                                   None if sw is None else sw[sel]))
        else:
            R = np.asarray(responsibilities, dtype=np.float64)
            if R.shape != (len(y), self.n_bins):
                raise ValueError(f"responsibilities must have shape ({len(y)}, {self.n_bins}), got {R.shape}")
            if np.any(R < 0) or not np.all(np.isfinite(R)):
                raise ValueError("responsibilities must be finite and non-negative")
            self.plan_ = None
            mass = R.sum(axis=0)
            small = [k for k in range(self.n_bins) if mass[k] < max(self.min_count, 1)]
            if small:
                raise SmallBinError(f"expert(s) {small} have summed responsibility {mass[small].round(1).tolist()} "
                                    f"< min_count={self.min_count}")
            for k in range(self.n_bins):
                w = R[:, k] if sw is None else R[:, k] * sw
                self.experts_.append(self._fit_one(clone(self._base()), X, y, w))
        self.global_ = self._fit_one(clone(self._base()), X, y, sw) if self.fit_global else None
        self.n_features_in_ = X.shape[1] if X.ndim == 2 else None
        return self

    def predict_all(self, X) -> np.ndarray:
        """Every expert's prediction for every row: (n, n_experts)."""
        if not hasattr(self, "experts_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("BinnedExperts is not fitted yet")
        return np.column_stack([np.asarray(e.predict(X), dtype=np.float64) for e in self.experts_])

    def predict_global(self, X) -> np.ndarray:
        if self.global_ is None:
            raise ValueError("fitted with fit_global=False: there is no global model")
        return np.asarray(self.global_.predict(X), dtype=np.float64)

    def predict(self, X, bins=None) -> np.ndarray:
        """Oracle routing: each row predicted by the expert of its (true) bin."""
        if bins is None:
            raise ValueError("oracle routing needs each row's bin: predict(X, bins=...)")
        if self.plan_ is None:
            raise ValueError("fitted with soft responsibilities: use predict_mixture")
        P = self.predict_all(X)
        e = self.plan_.route(np.asarray(bins))
        return P[np.arange(len(P)), e]

    def predict_mixture(self, X, proba) -> np.ndarray:
        """Σ_k p_k ŷ_k with ``proba`` (n, n_experts) rows summing to 1."""
        P = self.predict_all(X)
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape != P.shape:
            raise ValueError(f"proba must have shape {P.shape}, got {proba.shape}")
        return (P * proba).sum(axis=1)


# ============================================================================ streaming Ridge oracle


@dataclass
class LinearModels:
    """Linear models sharing one feature map, as a stack: ``predict(X) -> (n, M)``."""

    names: list[str]
    coef: np.ndarray          # (M, D)
    intercept: np.ndarray     # (M,)
    alpha: np.ndarray         # (M,)
    alpha_source: list[str]   # 'val' or 'gcv' per model
    n_train: np.ndarray       # (M,) training spectra per model
    alpha_at_edge: list[bool] = field(default_factory=list)

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef.T + self.intercept

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass
class ExpertFamily:
    """One family of experts (one router and its bin plan) inside a :class:`LinearModels` stack."""

    name: str
    router: object
    plan: BinPlan
    columns: list[int]  # model indices of the family's experts, in expert order


@dataclass
class OracleRun:
    """One fitted seed × noise level: every model's prediction for every test spectrum.

    ``test_pred[:, models.index('global')]`` is the global model; :meth:`expert_predictions`
    gives a family's (n, K) block; :meth:`oracle_prediction` routes by the true bin.
    ``test_info`` holds ``row``, ``y``, ``snr`` (true) and ``<family>_bin`` (original bins).
    """

    noise_level: float
    seed: int
    models: LinearModels
    families: dict[str, ExpertFamily]
    test_pred: np.ndarray
    test_info: pd.DataFrame
    train_info: pd.DataFrame
    features: FluxFeatures
    val_pred: np.ndarray | None = None
    val_info: pd.DataFrame | None = None

    @property
    def y(self) -> np.ndarray:
        return self.test_info["y"].to_numpy()

    def global_prediction(self) -> np.ndarray:
        return self.test_pred[:, self.models.index("global")]

    def expert_predictions(self, family: str) -> np.ndarray:
        return self.test_pred[:, self.families[family].columns]

    def oracle_prediction(self, family: str) -> np.ndarray:
        fam = self.families[family]
        e = fam.plan.route(self.test_info[f"{family}_bin"].to_numpy())
        return self.expert_predictions(family)[np.arange(len(e)), e]


def _select_alpha(stats: GramStats, g: int, val: GramStats, vg: int, alphas, solver: str, min_val: int):
    path = solve_path(stats, alphas, g=g, solver=solver)
    if val.count_[vg] >= max(min_val, 2):
        i, src = path.best(path.mse(val, vg)), "val"
    else:
        # a validation bin this small would pick α by noise; GCV uses the training sums instead
        path = solve_path(stats, alphas, g=g, solver="eigh")
        i, src = path.best(path.gcv()), "gcv"
    edge = len(path.alphas) > 1 and path.alphas[i] in (path.alphas.min(), path.alphas.max())
    return path.coef[i], path.intercept[i], path.alphas[i], src, bool(edge)


def fit_oracle_stream(ds, split, routers: dict, *, noise_level: float, seed: int, alphas: Sequence[float],
                      features: FluxFeatures | None = None, min_count: int = 20, on_small_bin: str = "merge",
                      target: str = "log_g", chunk_size: int = 4096, solver: str = "eigh",
                      min_val_count: int = 20, on_chunk: Callable | None = None, predict_val: bool = False,
                      cache_bytes: float = 2e9, progress: bool | str = False) -> OracleRun:
    """Fit a global Ridge and one Ridge expert per bin of every router in one sequential pass.

    The pass (:func:`snrmoe_lib.passes.split_pass`) reads train, validation and test rows together,
    in file order: training rows fill one Gram per cell, validation rows their own Grams (α is
    chosen on them), and the test rows' features are kept, as float32, until the models are solved.
    When those kept features would exceed ``cache_bytes`` a second pass over the test rows predicts
    them instead (same noise, same numbers).

    Parameters
    ----------
    ds : PfsDataset
    split : Split
        ``train`` fits, ``val`` chooses α (per model, on the validation spectra of its own bins),
        ``test`` is predicted.
    routers : dict name → router
        For example :func:`routers_from_params`. Bins of all routers are crossed into cells; one
        Gram per cell.
    noise_level, seed : float, int
        Noise drawn on the fly, keyed by (seed, row); the same seed for the three splits (their rows
        differ, so their draws are independent).
    alphas : sequence of float
    min_count, on_small_bin
        The small-bin policy (:func:`plan_bins`), applied to training counts.
    min_val_count : int
        Below this many validation spectra a model chooses α by GCV instead (recorded).
    on_chunk : callable, optional
        ``on_chunk(role, noisy_chunk)`` for every chunk of every role ('train', 'val', 'test'), each
        row exactly once: other models can be built from the same pass (the deployable MoE does).
    predict_val : bool
        Also predict the validation spectra (:attr:`OracleRun.val_pred`).
    cache_bytes : float
        Largest size of the kept test (and validation) features.
    progress : bool or str
        A progress bar over the pass.
    """
    features = FluxFeatures() if features is None else features
    names = list(routers)
    dims = [routers[n].n_bins for n in names]
    n_cells = int(np.prod(dims))
    D = features.n_features(ds.n_pix)

    def route(chunk) -> dict:
        out = {}
        for n in names:
            r = routers[n]
            if hasattr(r, "values"):
                v = r.values(chunk)
                out[n] = v
                out[f"{n}_bin"] = r.assign_values(v)
            else:
                out[f"{n}_bin"] = r.assign(chunk)
        return out

    predicted = ["test"] + (["val"] if predict_val and len(split.val) else [])
    cache = sum(len(getattr(split, r)) for r in predicted) * D * 4 <= cache_bytes
    roles = {"train": split.train, "val": split.val} | ({r: getattr(split, r) for r in predicted} if cache else {})
    train, val = GramStats(D, n_cells), GramStats(D, n_cells)
    parts: dict = {r: [] for r in ("train", "val", "test")}
    kept: dict = {r: [] for r in predicted}
    kw = dict(noise_level=noise_level, seed=seed, features=features, target=target, chunk_size=chunk_size,
              annotate=route)
    for role, nc in split_pass(ds, roles, progress=progress, **kw):
        info = nc.info
        if role in ("train", "val"):
            cell = np.ravel_multi_index(tuple(info[f"{n}_bin"] for n in names), dims)
            (train if role == "train" else val).update(nc.X, nc.y, groups=cell)
        if cache and role in kept:
            kept[role].append(np.asarray(nc.X, dtype=np.float32))
        parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | info))
        if on_chunk is not None:
            on_chunk(role, nc)
    if not parts["train"]:
        raise ValueError("no training rows (empty split, or every row dropped as bad)")
    train_info = pd.concat(parts["train"], ignore_index=True)

    cell_idx = np.unravel_index(np.arange(n_cells), dims)
    coefs, icpts, alps, srcs, ntr, edges, mnames = [], [], [], [], [], [], []

    def add_models(stats_t, stats_v, prefix, labels):
        for g, lab in enumerate(labels):
            c, b, a, src, edge = _select_alpha(stats_t, g, stats_v, g, alphas, solver, min_val_count)
            for lst, v in ((coefs, c), (icpts, b), (alps, a), (srcs, src), (edges, edge),
                           (ntr, int(stats_t.count_[g])), (mnames, prefix + lab)):
                lst.append(v)

    glob = np.zeros(n_cells, dtype=np.int64)
    add_models(train.collapse(glob, 1), val.collapse(glob, 1), "", ["global"])
    families = {}
    for f, n in enumerate(names):
        r = routers[n]
        counts = np.bincount(train_info[f"{n}_bin"].to_numpy(), minlength=r.n_bins)
        plan = plan_bins(counts, min_count, on_small_bin, r.neighbours(), r.labels)
        mapping = plan.expert_of[cell_idx[f]]
        start = len(mnames)
        add_models(train.collapse(mapping, plan.n_experts), val.collapse(mapping, plan.n_experts), f"{n}:",
                   plan.expert_labels)
        families[n] = ExpertFamily(n, r, plan, list(range(start, len(mnames))))
    models = LinearModels(mnames, np.array(coefs), np.array(icpts), np.array(alps), srcs, np.array(ntr), edges)
    del train, val

    if not cache:  # the features did not fit in cache_bytes: a second pass predicts chunk by chunk
        for role, nc in split_pass(ds, {r: getattr(split, r) for r in predicted}, progress=progress, **kw):
            kept[role].append(models.predict(np.asarray(nc.X, dtype=np.float32)))
            if role == "test":  # validation rows were recorded (and handed out) by the first pass
                parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | nc.info))
                if on_chunk is not None:
                    on_chunk(role, nc)
    else:
        kept = {r: [models.predict(x) for x in v] for r, v in kept.items()}  # block by block: no float64 copy of all
    if not kept["test"]:
        raise ValueError("no rows to predict")
    pred, test_info = np.concatenate(kept["test"]), pd.concat(parts["test"], ignore_index=True)
    out = OracleRun(float(noise_level), int(seed), models, families, pred, test_info, train_info, features)
    if kept.get("val"):
        out.val_pred, out.val_info = np.concatenate(kept["val"]), pd.concat(parts["val"], ignore_index=True)
    return out


# ============================================================================ Q1: headroom over seeds

#: Names of the three compared predictions in :class:`Headroom`.
HEADROOM_MODELS = ("global", "snr_oracle", "phys_oracle")


@dataclass
class Headroom:
    """Global vs oracle experts at one noise level, over several noise seeds (one :class:`OracleRun` each).

    The test stars are the same for every seed (fixed split); only the noise differs, so the true
    SNR and the bins are shared and seed-mean scores get star-bootstrap intervals.
    """

    noise_level: float
    runs: list[OracleRun]
    seconds: float = float("nan")

    def __post_init__(self):
        if not self.runs:
            raise ValueError("no runs")
        rows = self.runs[0].test_info["row"].to_numpy()
        for r in self.runs[1:]:
            if not np.array_equal(r.test_info["row"].to_numpy(), rows):
                raise ValueError("runs were predicted on different test rows")

    @property
    def info(self) -> pd.DataFrame:
        return self.runs[0].test_info

    @property
    def y(self) -> np.ndarray:
        return self.runs[0].y

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def predictions(self) -> dict[str, np.ndarray]:
        """Model name → (n_seeds, n_test) predictions."""
        return {"global": np.array([r.global_prediction() for r in self.runs]),
                "snr_oracle": np.array([r.oracle_prediction("snr") for r in self.runs]),
                "phys_oracle": np.array([r.oracle_prediction("phys") for r in self.runs])}

    def scores(self, n_boot: int = 200, seed: int = 0) -> dict:
        """Seed-mean R², MAE, RMSE of each model and ΔR² of each oracle, with intervals."""
        from snrmoe_lib.evaluation import metrics as M

        y, P = self.y, self.predictions()
        out = {}
        for name, p in P.items():
            s = M.seed_r2(y, p, n_boot=n_boot, seed=seed)
            out[f"{name}_r2"] = s
            out[f"{name}_mae"] = {"value": float(np.mean([M.mae(y, q) for q in p])), "interval": None}
            out[f"{name}_rmse"] = {"value": float(np.mean([M.rmse(y, q) for q in p])), "interval": None}
        for name in ("snr_oracle", "phys_oracle"):
            out[f"delta_r2_{name.split('_')[0]}"] = M.seed_delta_r2(y, P[name], P["global"], n_boot=n_boot, seed=seed)
        return out

    def per_bin(self, family: str = "snr", n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
        """Per-bin table (bins of ``family``'s router, original bins) with ΔR² against the global model."""
        from snrmoe_lib.evaluation.metrics import per_bin_seed_table

        router = self.runs[0].families[family].router
        tab = per_bin_seed_table(self.y, self.predictions(), self.info[f"{family}_bin"].to_numpy(), router.labels,
                                 baseline="global", n_boot=n_boot, seed=seed)
        tab.insert(0, "noise_level", self.noise_level)
        return tab

    def alphas(self) -> pd.DataFrame:
        """Chosen α, its source and training count per model and seed."""
        recs = []
        for r in self.runs:
            m = r.models
            for i, nm in enumerate(m.names):
                recs.append({"noise_level": self.noise_level, "seed": r.seed, "model": nm, "alpha": float(m.alpha[i]),
                             "source": m.alpha_source[i], "at_grid_edge": bool(m.alpha_at_edge[i]),
                             "n_train": int(m.n_train[i])})
        return pd.DataFrame(recs)

    def plans(self) -> dict:
        """Each family's experts (after the small-bin policy) for every seed's training counts."""
        return {f: self.runs[0].families[f].plan.describe() for f in self.runs[0].families}


def run_headroom(ds, split, params, noise_level: float | None = None, seeds: Sequence[int] | None = None) -> Headroom:
    """Q1 at one noise level: :func:`fit_oracle_stream` for every noise seed of the configuration.

    Uses ``params.ridge`` (α grid, pixel binning, solver, target), ``params.snr_bins`` (edges,
    definition, small-bin policy), ``params.experts`` (physical edges) and ``params.data.chunk_size``.
    """
    import time

    nl = params.noise.noise_level if noise_level is None else float(noise_level)
    seeds = list(params.seeds) if seeds is None else list(seeds)
    features = FluxFeatures(params.ridge.bin_pixels)
    t0 = time.perf_counter()
    runs = [fit_oracle_stream(ds, split, routers_from_params(params, nl), noise_level=nl, seed=s,
                              alphas=params.ridge.alphas, features=features, min_count=params.snr_bins.min_count,
                              on_small_bin=params.snr_bins.on_small_bin, target=params.ridge.target,
                              chunk_size=params.data.chunk_size, solver=params.ridge.solver) for s in seeds]
    return Headroom(nl, runs, time.perf_counter() - t0)


def scores_table(scores: dict) -> pd.DataFrame:
    """One row per noise level × model from ``{noise_level: Headroom.scores()}``: R² (interval), MAE,
    RMSE and ΔR² against the global model (interval)."""
    recs = []
    for nl, s in scores.items():
        for m in HEADROOM_MODELS:
            r = s[f"{m}_r2"]
            iv = r["interval"] or [np.nan, np.nan]
            rec = {"noise_level": nl, "model": m, "r2": r["value"], "r2_lo": iv[0], "r2_hi": iv[1],
                   "r2_seed_std": float(np.std(r["per_seed"], ddof=1)) if len(r["per_seed"]) > 1 else 0.0,
                   "mae": s[f"{m}_mae"]["value"], "rmse": s[f"{m}_rmse"]["value"],
                   "delta_r2": np.nan, "delta_lo": np.nan, "delta_hi": np.nan}
            if m != "global":
                d = s[f"delta_r2_{m.split('_')[0]}"]
                div = d["interval"] or [np.nan, np.nan]
                rec.update(delta_r2=d["value"], delta_lo=div[0], delta_hi=div[1])
            recs.append(rec)
    return pd.DataFrame(recs)


def headroom_metrics(scores: dict, primary: float) -> dict:
    """Results-file metrics: names without suffix at the primary noise level, ``_nl<level>`` otherwise."""
    from snrmoe_lib.evaluation.records import metric

    out = {}
    for nl, s in scores.items():
        suffix = "" if nl == primary else f"_nl{nl:g}"
        for k, v in s.items():
            extra = {"per_seed": v["per_seed"]} if "per_seed" in v else {}
            out[k + suffix] = metric(v["value"], v["interval"], **extra)
    return out
