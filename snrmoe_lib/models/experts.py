"""Binned experts: one model per bin of a routing variable, with oracle routing.

Routing (which bin a spectrum belongs to, which expert serves a bin after small-bin merges) lives in
:mod:`snrmoe_lib.models.routing`.

Two ways to fit
    * :class:`BinnedExperts` — in memory, any scikit-learn-style regressor (``fit(X, y,
      sample_weight)`` / ``predict``) as the expert type, hard bins (from its ``router``, or given)
      or soft responsibilities.
    * :func:`fit_oracle_stream` — the out-of-core path for Ridge experts: one sequential pass over
      train, validation and test rows fills a Gram per cell of (every router's bins crossed); each
      family's experts and the global model are sums of cells (:meth:`GramStats.collapse`).
      Returns every expert's prediction for every test spectrum (:class:`OracleRun`), so mixtures
      and gates can be built on top without refitting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.models.ridge import GramStats, StreamingRidge, solve_path
from snrmoe_lib.models.routing import BinPlan, SmallBinError, plan_bins

__all__ = [
    "BinnedExperts",
    "LinearModels",
    "ExpertFamily",
    "OracleRun",
    "OracleSettings",
    "fit_oracle_stream",
]


# ============================================================================ in-memory, pluggable


class BinnedExperts(RegressorMixin, BaseEstimator):
    """One regressor per bin plus a global one; predictions by oracle routing or by mixing.

    Parameters
    ----------
    estimator : regressor, optional
        The expert type: anything with ``fit(X, y, sample_weight=...)`` and ``predict(X)``
        (cloned per expert). Default :class:`~snrmoe_lib.models.ridge.StreamingRidge` (α = 1).
    router : router, optional
        Maps the input to bin numbers (``router.route(X)``, ``router.n_bins``, ``router.labels``,
        ``router.neighbours()``; see :mod:`snrmoe_lib.models.routing`). With a router, ``fit(X, y)``
        and ``predict(X)`` need nothing else, so the experts work in a ``Pipeline`` and in
        ``cross_val_score``. Without one, bins are passed explicitly (``bins=``).
    n_bins : int
        Number of original bins when there is no router (routing values in ``[0, n_bins)``).
    labels : list of str, optional
        Default: the router's labels.
    min_count : int
    on_small_bin : {'raise', 'merge'}
    neighbours : list of sets, optional
        Bin adjacency for merging (default: the router's, else a chain).
    fit_global : bool
        Also fit one model on all rows (the baseline and the fallback).

    Attributes
    ----------
    experts_ : list of fitted regressors
    global_ : fitted regressor or None
    plan_ : BinPlan (hard bins) or None (soft responsibilities)
    n_features_in_ : int
    """

    def __init__(self, estimator=None, router=None, n_bins: int = 4, labels=None, min_count: int = 20,
                 on_small_bin: str = "merge", neighbours=None, fit_global: bool = True):
        self.estimator = estimator
        self.router = router
        self.n_bins = n_bins
        self.labels = labels
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.neighbours = neighbours
        self.fit_global = fit_global

    def _base(self):
        return StreamingRidge(alpha=1.0) if self.estimator is None else self.estimator

    def _n_bins(self) -> int:
        return int(self.router.n_bins) if self.router is not None else int(self.n_bins)

    def _plan(self, bins: np.ndarray) -> BinPlan:
        r = self.router
        labels = self.labels if self.labels is not None or r is None else r.labels
        neighbours = self.neighbours if self.neighbours is not None or r is None else r.neighbours()
        return plan_bins(np.bincount(bins, minlength=self._n_bins()), self.min_count, self.on_small_bin,
                         neighbours, labels)

    def _route(self, X, bins) -> np.ndarray | None:
        if bins is not None:
            return np.asarray(bins)
        return None if self.router is None else np.asarray(self.router.route(X))

    @staticmethod
    def _fit_one(est, X, y, w):
        return est.fit(X, y) if w is None else est.fit(X, y, sample_weight=w)

    def fit(self, X, y, bins=None, sample_weight=None, responsibilities=None) -> "BinnedExperts":
        """Fit the experts on hard bins (the router's, or ``bins`` (n,)) or soft ``responsibilities``
        (n, n_bins).

        With responsibilities, expert k is fitted on every row with weight
        ``responsibilities[:, k] · sample_weight``; an expert whose summed weight is below
        ``min_count`` is an error (merging has no meaning for soft assignments).
        """
        Xv, y = validate_data(self, X, y, y_numeric=True)
        bins = self._route(X, bins) if responsibilities is None else bins  # routers read the input as given
        X, y = Xv, np.asarray(y, dtype=np.float64)
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64)
        if (bins is None) == (responsibilities is None):
            raise ValueError("give exactly one of bins (oracle/hard, or a router) or responsibilities (soft)")
        if bins is not None:
            self.experts_ = self._fit_hard(X, y, np.asarray(bins), sw)
        else:
            self.experts_ = self._fit_soft(X, y, responsibilities, sw)
        self.global_ = self._fit_one(clone(self._base()), X, y, sw) if self.fit_global else None
        return self

    def _fit_hard(self, X, y, bins, sw) -> list:
        k = self._n_bins()
        if bins.shape != y.shape or not np.issubdtype(bins.dtype, np.integer):
            raise ValueError(f"bins must be integer labels of shape {y.shape}")
        if bins.min() < 0 or bins.max() >= k:
            raise ValueError(f"bins must be in [0, {k}), got [{bins.min()}, {bins.max()}]")
        self.plan_ = self._plan(bins)
        route = self.plan_.route(bins)
        experts = []
        for e in range(self.plan_.n_experts):
            sel = route == e
            experts.append(self._fit_one(clone(self._base()), X[sel], y[sel], None if sw is None else sw[sel]))
        return experts

    def _fit_soft(self, X, y, responsibilities, sw) -> list:
        k = self._n_bins()
        R = np.asarray(responsibilities, dtype=np.float64)
        if R.shape != (len(y), k):
            raise ValueError(f"responsibilities must have shape ({len(y)}, {k}), got {R.shape}")
        if np.any(R < 0) or not np.all(np.isfinite(R)):
            raise ValueError("responsibilities must be finite and non-negative")
        self.plan_ = None
        mass = R.sum(axis=0)
        small = [j for j in range(k) if mass[j] < max(self.min_count, 1)]
        if small:
            raise SmallBinError(f"expert(s) {small} have summed responsibility {mass[small].round(1).tolist()} "
                                f"< min_count={self.min_count}")
        return [self._fit_one(clone(self._base()), X, y, R[:, j] if sw is None else R[:, j] * sw) for j in range(k)]

    def predict_all(self, X) -> np.ndarray:
        """Every expert's prediction for every row: (n, n_experts)."""
        check_is_fitted(self, "experts_")
        X = validate_data(self, X, reset=False)
        return np.column_stack([np.asarray(e.predict(X), dtype=np.float64) for e in self.experts_])

    def predict_global(self, X) -> np.ndarray:
        check_is_fitted(self, "experts_")
        if self.global_ is None:
            raise ValueError("fitted with fit_global=False: there is no global model")
        return np.asarray(self.global_.predict(validate_data(self, X, reset=False)), dtype=np.float64)

    def predict(self, X, bins=None) -> np.ndarray:
        """Oracle routing: each row predicted by the expert of its (true) bin (the router's, or ``bins``)."""
        check_is_fitted(self, "experts_")
        validate_data(self, X, reset=False)
        bins = self._route(X, bins)
        if bins is None:
            raise ValueError("oracle routing needs each row's bin: a router, or predict(X, bins=...)")
        if self.plan_ is None:
            raise ValueError("fitted with soft responsibilities: use predict_mixture")
        P = self.predict_all(X)
        e = self.plan_.route(bins)
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


@dataclass(frozen=True)
class OracleSettings:
    """Plain settings of a streamed oracle fit (:func:`fit_oracle_stream`).

    Attributes
    ----------
    noise_level, seed : float, int
        Noise drawn on the fly, keyed by (seed, row); the same seed for the three splits (their rows
        differ, so their draws are independent).
    alphas : sequence of float
    min_count, on_small_bin
        The small-bin policy (:func:`~snrmoe_lib.models.routing.plan_bins`), applied to training counts.
    target : str
    chunk_size : int
    solver : str
    min_val_count : int
        Below this many validation spectra a model chooses α by GCV instead (recorded).
    predict_val : bool
        Also predict the validation spectra (:attr:`OracleRun.val_pred`).
    cache_bytes : float
        Largest size of the kept test (and validation) features.
    """

    noise_level: float
    seed: int
    alphas: Sequence[float]
    min_count: int = 20
    on_small_bin: str = "merge"
    target: str = "log_g"
    chunk_size: int = 4096
    solver: str = "eigh"
    min_val_count: int = 20
    predict_val: bool = False
    cache_bytes: float = 2e9


def _annotate(routers: dict, chunk) -> dict:
    """Each router's true value (where it has one) and bin for every row of a noise-free chunk."""
    out = {}
    for n, r in routers.items():
        if hasattr(r, "values"):
            v = r.values(chunk)
            out[n] = v
            out[f"{n}_bin"] = r.assign_values(v)
        else:
            out[f"{n}_bin"] = r.assign(chunk)
    return out


@dataclass
class _FirstPass:
    """What the sequential pass leaves: Grams per cell, per-row info, and (cached) kept features."""

    train: GramStats
    val: GramStats
    parts: dict
    kept: dict
    predicted: list
    cache: bool


class _ModelStack:
    """Accumulates solved models (one row per model) before they become a :class:`LinearModels`."""

    def __init__(self):
        self.coef, self.intercept, self.alpha, self.source, self.n_train, self.edge, self.names = \
            [], [], [], [], [], [], []

    def add(self, stats_t: GramStats, stats_v: GramStats, prefix: str, labels: Sequence[str],
            cfg: OracleSettings) -> list[int]:
        start = len(self.names)
        for g, lab in enumerate(labels):
            c, b, a, src, edge = _select_alpha(stats_t, g, stats_v, g, cfg.alphas, cfg.solver, cfg.min_val_count)
            self.coef.append(c)
            self.intercept.append(b)
            self.alpha.append(a)
            self.source.append(src)
            self.edge.append(edge)
            self.n_train.append(int(stats_t.count_[g]))
            self.names.append(prefix + lab)
        return list(range(start, len(self.names)))

    def models(self) -> LinearModels:
        return LinearModels(self.names, np.array(self.coef), np.array(self.intercept), np.array(self.alpha),
                            self.source, np.array(self.n_train), self.edge)


def _pass_kwargs(routers: dict, cfg: OracleSettings, features) -> dict:
    return dict(noise_level=cfg.noise_level, seed=cfg.seed, features=features, target=cfg.target,
                chunk_size=cfg.chunk_size, annotate=partial(_annotate, routers))


def _first_pass(ds, split, routers: dict, cfg: OracleSettings, features, on_chunk, progress) -> _FirstPass:
    """Train and validation rows fill Grams per cell; test (and validation) features are kept when they fit."""
    names = list(routers)
    dims = [routers[n].n_bins for n in names]
    D = features.n_features(ds.n_pix)
    predicted = ["test"] + (["val"] if cfg.predict_val and len(split.val) else [])
    cache = sum(len(getattr(split, r)) for r in predicted) * D * 4 <= cfg.cache_bytes
    roles = {"train": split.train, "val": split.val} | ({r: getattr(split, r) for r in predicted} if cache else {})
    n_cells = int(np.prod(dims))
    out = _FirstPass(GramStats(D, n_cells), GramStats(D, n_cells), {r: [] for r in ("train", "val", "test")},
                     {r: [] for r in predicted}, predicted, cache)
    for role, nc in split_pass(ds, roles, progress=progress, **_pass_kwargs(routers, cfg, features)):
        info = nc.info
        if role in ("train", "val"):
            cell = np.ravel_multi_index(tuple(info[f"{n}_bin"] for n in names), dims)
            (out.train if role == "train" else out.val).update(nc.X, nc.y, groups=cell)
        if cache and role in out.kept:
            out.kept[role].append(np.asarray(nc.X, dtype=np.float32))
        out.parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | info))
        if on_chunk is not None:
            on_chunk(role, nc)
    if not out.parts["train"]:
        raise ValueError("no training rows (empty split, or every row dropped as bad)")
    return out


def _solve(fp: _FirstPass, train_info: pd.DataFrame, routers: dict,
           cfg: OracleSettings) -> tuple[LinearModels, dict[str, ExpertFamily]]:
    """The global model and every family's experts, each a sum of cells with its own α."""
    names = list(routers)
    dims = [routers[n].n_bins for n in names]
    n_cells = int(np.prod(dims))
    cell_idx = np.unravel_index(np.arange(n_cells), dims)
    stack = _ModelStack()
    glob = np.zeros(n_cells, dtype=np.int64)
    stack.add(fp.train.collapse(glob, 1), fp.val.collapse(glob, 1), "", ["global"], cfg)
    families = {}
    for f, n in enumerate(names):
        r = routers[n]
        counts = np.bincount(train_info[f"{n}_bin"].to_numpy(), minlength=r.n_bins)
        plan = plan_bins(counts, cfg.min_count, cfg.on_small_bin, r.neighbours(), r.labels)
        mapping = plan.expert_of[cell_idx[f]]
        cols = stack.add(fp.train.collapse(mapping, plan.n_experts), fp.val.collapse(mapping, plan.n_experts),
                         f"{n}:", plan.expert_labels, cfg)
        families[n] = ExpertFamily(n, r, plan, cols)
    return stack.models(), families


def _predictions(ds, split, fp: _FirstPass, models: LinearModels, routers: dict, cfg: OracleSettings, features,
                 on_chunk, progress) -> dict:
    """Predictions per predicted role: from the kept features, or from a second pass when they were not kept."""
    if fp.cache:
        return {r: [models.predict(x) for x in v] for r, v in fp.kept.items()}  # block by block: no float64 copy
    preds: dict = {r: [] for r in fp.predicted}
    roles = {r: getattr(split, r) for r in fp.predicted}
    for role, nc in split_pass(ds, roles, progress=progress, **_pass_kwargs(routers, cfg, features)):
        preds[role].append(models.predict(np.asarray(nc.X, dtype=np.float32)))
        if role == "test":  # validation rows were recorded (and handed out) by the first pass
            fp.parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | nc.info))
            if on_chunk is not None:
                on_chunk(role, nc)
    return preds


def fit_oracle_stream(ds, split, routers: dict, settings: OracleSettings, *, features: FluxFeatures | None = None,
                      on_chunk: Callable | None = None, progress: bool | str = False) -> OracleRun:
    """Fit a global Ridge and one Ridge expert per bin of every router in one sequential pass.

    The pass (:func:`snrmoe_lib.data.passes.split_pass`) reads train, validation and test rows
    together, in file order: training rows fill one Gram per cell, validation rows their own Grams
    (α is chosen on them), and the test rows' features are kept, as float32, until the models are
    solved. When those kept features would exceed ``settings.cache_bytes`` a second pass over the
    test rows predicts them instead (same noise, same numbers).

    Parameters
    ----------
    ds : PfsDataset
    split : Split
        ``train`` fits, ``val`` chooses α (per model, on the validation spectra of its own bins),
        ``test`` is predicted.
    routers : dict name → router
        For example :func:`snrmoe_lib.analyses.q1.routers_from_params`. Bins of all routers are
        crossed into cells; one Gram per cell.
    settings : OracleSettings
        Noise level and seed, α grid, small-bin policy, target, chunking, solver.
    features : FluxFeatures, optional
    on_chunk : callable, optional
        ``on_chunk(role, noisy_chunk)`` for every chunk of every role ('train', 'val', 'test'), each
        row exactly once: other models can be built from the same pass (the deployable MoE does).
    progress : bool or str
        A progress bar over the pass.
    """
    features = FluxFeatures() if features is None else features
    fp = _first_pass(ds, split, routers, settings, features, on_chunk, progress)
    train_info = pd.concat(fp.parts["train"], ignore_index=True)
    models, families = _solve(fp, train_info, routers, settings)
    fp.train = fp.val = None  # the Grams are solved: free them before the predictions
    kept = _predictions(ds, split, fp, models, routers, settings, features, on_chunk, progress)
    if not kept["test"]:
        raise ValueError("no rows to predict")
    pred, test_info = np.concatenate(kept["test"]), pd.concat(fp.parts["test"], ignore_index=True)
    out = OracleRun(float(settings.noise_level), int(settings.seed), models, families, pred, test_info, train_info,
                    features)
    if kept.get("val"):
        out.val_pred, out.val_info = np.concatenate(kept["val"]), pd.concat(fp.parts["val"], ignore_index=True)
    return out
