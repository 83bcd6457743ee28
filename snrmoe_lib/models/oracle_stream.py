"""The streamed Ridge oracle: one sequential pass, one Gram per cell, every family's experts.

:func:`fit_oracle_stream` reads train, validation and test rows together (:func:`split_pass`);
training rows fill one Gram per cell of every router's bins crossed, validation rows their own
Grams (α is chosen on them), test rows' features are kept (float32) until the models are solved.
Each family's experts and the global model are sums of cells (:meth:`GramStats.collapse`).

The same pass also gives, when asked (:class:`OracleSettings`):

* the **non-routing controls** of the attribution waterfall (``controls``, a router's name):
  experts trained on *random* partitions with exactly the sizes of that router's bins (the labels
  of each chunk's training rows, shuffled among them), and one Ridge whose shrinkage α varies with
  the bin (the global model's α path, α chosen per bin on that bin's validation rows);
* **held-out rows** (``holdout``): predicted by every model but never trained on (the regression
  gate and the fixed blends learn from them);
* **nested training sizes** (``sizes``, the learning curve): each training row gets a rank in a
  seeded permutation; the rows ranked below ``n`` are a random subset of ``n`` rows. Grams are kept
  per (cell, size increment), so every size is a sum of groups: no second pass, the same Gram
  flops, memory × (number of sizes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.models.ridge import GramStats, solve_path
from snrmoe_lib.models.routing import BinPlan, plan_bins

__all__ = ["LinearModels", "ExpertFamily", "CurvePoint", "OracleRun", "OracleSettings", "random_partition",
           "nested_increments", "fit_oracle_stream"]


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
    """One family of experts (one router and its bin plan) inside a :class:`LinearModels` stack.

    ``bins`` names the router whose true bin routes the family (default: the family's own name; the
    SNR-dependent-α family is routed by the SNR bins).
    """

    name: str
    router: object
    plan: BinPlan
    columns: list[int]  # model indices of the family's experts, in expert order
    bins: str | None = None

    @property
    def bin_key(self) -> str:
        return f"{self.bins or self.name}_bin"


@dataclass
class CurvePoint:
    """Every model fitted on the first ``n_train`` rows of the seeded training order, and its predictions.

    ``pred[role]`` is (n_role, M) for 'test' and, when asked for, 'val' and 'holdout'.
    """

    n_train: int
    models: LinearModels
    families: dict[str, ExpertFamily]
    pred: dict[str, np.ndarray]


@dataclass
class OracleRun:
    """One fitted seed × noise level: every model's prediction for every test spectrum.

    ``test_pred[:, models.index('global')]`` is the global model; :meth:`expert_predictions`
    gives a family's (n, K) block; :meth:`oracle_prediction` routes by the true bin.
    ``test_info`` holds ``row``, ``y``, ``snr`` (true) and ``<family>_bin`` (original bins).
    ``curve`` holds one :class:`CurvePoint` per training size (the last is this full fit).
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
    holdout_pred: np.ndarray | None = None
    holdout_info: pd.DataFrame | None = None
    curve: list[CurvePoint] = field(default_factory=list)

    @property
    def y(self) -> np.ndarray:
        return self.test_info["y"].to_numpy()

    def global_prediction(self) -> np.ndarray:
        return self.test_pred[:, self.models.index("global")]

    def expert_predictions(self, family: str) -> np.ndarray:
        return self.test_pred[:, self.families[family].columns]

    def oracle_prediction(self, family: str) -> np.ndarray:
        fam = self.families[family]
        e = fam.plan.route(self.test_info[fam.bin_key].to_numpy())
        return self.expert_predictions(family)[np.arange(len(e)), e]


def _select_alpha(stats: GramStats, g: int, val: GramStats, vg: int, alphas, solver: str, min_val: int, path=None):
    path = solve_path(stats, alphas, g=g, solver=solver) if path is None else path
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
        Largest size of the kept test (and validation, held-out) features.
    controls : str or None
        A router's name: also fit the non-routing controls on its bins (families ``rand``, random
        partitions of the same sizes, and ``<name>_alpha``, one Ridge with a per-bin α).
    sizes : sequence of int
        Nested training sizes below the full training set (the learning curve); empty: none. At these
        sizes only the global model, the ``controls`` family and its SNR-dependent α are solved (the
        Grams cost nothing extra; each solve does). Needs ``controls``.
    size_seed : int
        Seed of the training order the sizes take their rows from (shared by every noise seed).
    error_mode : {'clean', 'estimated'}
        'estimated': the pass also hands every chunk σ̂, estimated from the same noise draw with
        ``variance_model`` (:func:`~snrmoe_lib.data.passes.split_pass`); the noisy flux, hence every
        model of this fit, is the same in both modes (only an ``on_chunk`` hook can use σ̂).
    variance_model : VarianceModel or None
        Needed with ``error_mode='estimated'``.
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
    controls: str | None = None
    sizes: Sequence[int] = ()
    size_seed: int = 0
    error_mode: str = "clean"
    variance_model: object = None


def random_partition(bins: np.ndarray, key_row: int, seed: int) -> np.ndarray:
    """The labels ``bins`` shuffled among the rows that carry them (same sizes, no relation to the rows).

    Keyed by (seed, the chunk's first row): the partition is reproducible for a given chunking.
    """
    bins = np.asarray(bins)
    return bins[_rng("bagging.partition", int(seed), int(key_row)).permutation(len(bins))]


def nested_increments(train_rows: np.ndarray, sizes: Sequence[int], seed: int) -> np.ndarray:
    """For each training row (sorted), the first nested size that contains it: 0 … len(sizes).

    Rows ranked below ``sizes[k]`` in a seeded permutation form the size-``sizes[k]`` subset, so the
    subsets are nested random subsets; increment ``len(sizes)`` holds the rest.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size and (np.any(np.diff(sizes) <= 0) or sizes[0] <= 0 or sizes[-1] >= len(train_rows)):
        raise ValueError(f"training sizes must increase strictly within (0, {len(train_rows)}), got {sizes.tolist()}")
    rank = np.empty(len(train_rows), dtype=np.int64)
    rank[_rng("learning_curve.order", int(seed)).permutation(len(train_rows))] = np.arange(len(train_rows))
    return np.searchsorted(sizes, rank, side="right")


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
    """What the sequential pass leaves: Grams per (cell, size increment), per-row info, kept features."""

    train: GramStats
    rand: GramStats | None
    val: GramStats
    n_inc: int
    parts: dict
    kept: dict
    predicted: list
    cache: bool


class _ModelStack:
    """Accumulates solved models (one row per model) before they become a :class:`LinearModels`."""

    def __init__(self):
        self.rows: list[tuple] = []

    def append(self, name, coef, intercept, alpha, source, edge, n_train) -> int:
        self.rows.append((name, coef, intercept, alpha, source, edge, int(n_train)))
        return len(self.rows) - 1

    def add(self, stats_t: GramStats, stats_v: GramStats, prefix: str, labels: Sequence[str],
            cfg: OracleSettings, val_groups: Sequence[int] | None = None, path=None) -> list[int]:
        cols = []
        for g, lab in enumerate(labels):
            vg = g if val_groups is None else int(val_groups[g])
            c, b, a, src, edge = _select_alpha(stats_t, g, stats_v, vg, cfg.alphas, cfg.solver, cfg.min_val_count,
                                               path)
            cols.append(self.append(prefix + lab, c, b, a, src, edge, stats_t.count_[g]))
        return cols

    def models(self) -> LinearModels:
        names, coef, b, a, src, edge, n = (list(x) for x in zip(*self.rows))
        return LinearModels(names, np.array(coef), np.array(b), np.array(a), src, np.array(n), edge)


def _pass_kwargs(routers: dict, cfg: OracleSettings, features) -> dict:
    return dict(noise_level=cfg.noise_level, seed=cfg.seed, features=features, target=cfg.target,
                chunk_size=cfg.chunk_size, annotate=partial(_annotate, routers), error_mode=cfg.error_mode,
                variance_model=cfg.variance_model)


def _first_pass(ds, split, routers: dict, cfg: OracleSettings, features, holdout, on_chunk, progress) -> _FirstPass:
    """Train rows fill Grams per (cell, size increment), validation rows per cell; the predicted roles' features
    are kept when they fit."""
    names = list(routers)
    dims = [routers[n].n_bins for n in names]
    D = features.n_features(ds.n_pix)
    predicted = (["test"] + (["val"] if cfg.predict_val and len(split.val) else [])
                 + (["holdout"] if holdout is not None and len(holdout) else []))
    rows_of = {"train": split.train, "val": split.val, "test": split.test, "holdout": holdout}
    cache = sum(len(rows_of[r]) for r in predicted) * D * 4 <= cfg.cache_bytes
    roles = {"train": split.train, "val": split.val} | ({r: rows_of[r] for r in predicted} if cache else {})
    n_cells, n_inc = int(np.prod(dims)), len(cfg.sizes) + 1
    inc = nested_increments(np.asarray(split.train), cfg.sizes, cfg.size_seed) if cfg.sizes else None
    k_ctrl = routers[cfg.controls].n_bins if cfg.controls else 0
    out = _FirstPass(GramStats(D, n_cells * n_inc), GramStats(D, k_ctrl * n_inc) if k_ctrl else None,
                     GramStats(D, n_cells), n_inc, {r: [] for r in rows_of}, {r: [] for r in predicted},
                     predicted, cache)
    for role, nc in split_pass(ds, roles, progress=progress, **_pass_kwargs(routers, cfg, features)):
        info = nc.info
        if role in ("train", "val"):
            cell = np.ravel_multi_index(tuple(info[f"{n}_bin"] for n in names), dims)
            if role == "val":
                out.val.update(nc.X, nc.y, groups=cell)
            else:
                step = 0 if inc is None else inc[np.searchsorted(split.train, nc.rows)]
                out.train.update(nc.X, nc.y, groups=cell + n_cells * step)
                if k_ctrl:
                    rb = random_partition(info[f"{cfg.controls}_bin"], nc.rows[0], cfg.seed)
                    out.rand.update(nc.X, nc.y, groups=rb + k_ctrl * step)
        if cache and role in out.kept:
            out.kept[role].append(np.asarray(nc.X, dtype=np.float32))
        out.parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | info))
        if on_chunk is not None:
            on_chunk(role, nc)
    if not out.parts["train"]:
        raise ValueError("no training rows (empty split, or every row dropped as bad)")
    return out


def _up_to(stats: GramStats | None, n_groups: int, k: int) -> GramStats | None:
    """The statistics of size increments 0 … k, one group per cell (groups are cell + n_groups · increment)."""
    if stats is None or stats.n_groups == n_groups:  # one size only: nothing to sum
        return stats
    g = np.arange(stats.n_groups)
    return stats.collapse(np.where(g // n_groups <= k, g % n_groups, -1), n_groups)


def _smaller(fp: _FirstPass, k: int, routers: dict, cfg: OracleSettings) -> tuple:
    """A smaller size of the learning curve: the global model, the ``controls`` family, its SNR-dependent α
    and the fixed blend's experts (not the other families, not the random partitions: each solve costs)."""
    names = list(routers)
    n_cells = fp.val.n_groups
    own = np.unravel_index(np.arange(n_cells), [routers[n].n_bins for n in names])[names.index(cfg.controls)]
    g = np.arange(fp.train.n_groups)
    train = fp.train.collapse(np.where(g // n_cells <= k, own[g % n_cells], -1), routers[cfg.controls].n_bins)
    val = fp.val.collapse(own, routers[cfg.controls].n_bins)
    return (int(train.count_.sum()), *_solve(train, None, val, {cfg.controls: routers[cfg.controls]}, cfg))


def _solve(train: GramStats, rand: GramStats | None, val: GramStats, routers: dict,
           cfg: OracleSettings) -> tuple[LinearModels, dict[str, ExpertFamily]]:
    """The global model, every family's experts (each a sum of cells with its own α) and the controls."""
    names = list(routers)
    dims = [routers[n].n_bins for n in names]
    n_cells = int(np.prod(dims))
    cell_idx = np.unravel_index(np.arange(n_cells), dims)
    stack = _ModelStack()
    glob_t = train.total()
    glob_path = solve_path(glob_t, cfg.alphas, solver=cfg.solver)  # also the SNR-dependent α's path
    stack.add(glob_t, val.total(), "", ["global"], cfg, path=glob_path)
    families = {}
    for f, n in enumerate(names):
        r = routers[n]
        counts = np.bincount(cell_idx[f], weights=train.count_, minlength=r.n_bins).astype(np.int64)
        plan = plan_bins(counts, cfg.min_count, cfg.on_small_bin, r.neighbours(), r.labels)
        mapping = plan.expert_of[cell_idx[f]]
        cols = stack.add(train.collapse(mapping, plan.n_experts), val.collapse(mapping, plan.n_experts),
                         f"{n}:", plan.expert_labels, cfg)
        families[n] = ExpertFamily(n, r, plan, cols)
        if n == cfg.controls:
            families |= _controls(stack, glob_t, glob_path, rand, val, families[n], mapping, cfg)
    return stack.models(), families


def _controls(stack: _ModelStack, glob_t: GramStats, path, rand: GramStats, val: GramStats, fam: ExpertFamily,
              mapping: np.ndarray, cfg: OracleSettings) -> dict[str, ExpertFamily]:
    """Random-partition experts (α on every validation row) and one Ridge with an α per bin of ``fam``."""
    plan, K = fam.plan, fam.plan.n_experts
    val_all = val.total()
    out = {}
    if rand is not None:
        cols = stack.add(rand.collapse(plan.expert_of, K), val_all, "rand:", plan.expert_labels, cfg, [0] * K)
        out["rand"] = ExpertFamily("rand", None, plan, cols, bins=fam.name)
    val_k = val.collapse(mapping, K)
    fallback = None
    alpha_cols = []
    for e, lab in enumerate(plan.expert_labels):
        if val_k.count_[e] >= max(cfg.min_val_count, 2):
            i, src = path.best(path.mse(val_k, e)), "val"
        else:  # too few validation rows in the bin: the global model's α
            fallback = fallback if fallback is not None else path.best(path.mse(val_all, 0))
            i, src = fallback, "val (all rows)"
        edge = len(path.alphas) > 1 and path.alphas[i] in (path.alphas.min(), path.alphas.max())
        alpha_cols.append(stack.append(f"{fam.name}_alpha:{lab}", path.coef[i], path.intercept[i], path.alphas[i],
                                       src, bool(edge), glob_t.count_[0]))
    name = f"{fam.name}_alpha"
    return out | {name: ExpertFamily(name, fam.router, plan, alpha_cols, bins=fam.name)}


def _predictions(ds, split, fp: _FirstPass, stacks: list[LinearModels], routers: dict, cfg: OracleSettings,
                 features, holdout, on_chunk, progress) -> list[dict]:
    """Predictions of every stack per predicted role: from the kept features, or from a second pass."""
    if fp.cache:  # block by block: no float64 copy
        return [{r: [m.predict(x) for x in v] for r, v in fp.kept.items()} for m in stacks]
    preds: list[dict] = [{r: [] for r in fp.predicted} for _ in stacks]
    rows_of = {"val": split.val, "test": split.test, "holdout": holdout}
    for role, nc in split_pass(ds, {r: rows_of[r] for r in fp.predicted}, progress=progress,
                               **_pass_kwargs(routers, cfg, features)):
        X = np.asarray(nc.X, dtype=np.float32)
        for p, m in zip(preds, stacks):
            p[role].append(m.predict(X))
        if role != "val":  # validation rows were recorded (and handed out) by the first pass
            fp.parts[role].append(pd.DataFrame({"row": nc.rows, "y": nc.y} | nc.info))
            if on_chunk is not None:
                on_chunk(role, nc)
    return preds


def fit_oracle_stream(ds, split, routers: dict, settings: OracleSettings, *, features: FluxFeatures | None = None,
                      holdout: np.ndarray | None = None, on_chunk: Callable | None = None,
                      progress: bool | str = False) -> OracleRun:
    """Fit a global Ridge and one Ridge expert per bin of every router in one sequential pass.

    The pass (:func:`snrmoe_lib.data.passes.split_pass`) reads train, validation, test (and held-out)
    rows together, in file order: training rows fill one Gram per cell, validation rows their own
    Grams (α is chosen on them), and the predicted rows' features are kept, as float32, until the
    models are solved. When those kept features would exceed ``settings.cache_bytes`` a second pass
    predicts them instead (same noise, same numbers).

    Parameters
    ----------
    ds : PfsDataset
    split : Split
        ``train`` fits, ``val`` chooses α (per model, on the validation spectra of its own bins),
        ``test`` is predicted.
    routers : dict name → router
        For example :func:`snrmoe_lib.analyses.q1.routers_from_params`. Bins of all routers are
        crossed into cells; one Gram per cell (and per size increment when ``settings.sizes``).
    settings : OracleSettings
        Noise level and seed, α grid, small-bin policy, target, chunking, solver, controls, sizes.
    features : FluxFeatures, optional
    holdout : array of int, optional
        Rows (not in ``split.train``) that every model predicts but none trains on.
    on_chunk : callable, optional
        ``on_chunk(role, noisy_chunk)`` for every chunk of every role ('train', 'val', 'test',
        'holdout'), each row exactly once: other models can be built from the same pass.
    progress : bool or str
        A progress bar over the pass.
    """
    features = FluxFeatures() if features is None else features
    if holdout is not None and np.intersect1d(holdout, split.train).size:
        raise ValueError("held-out rows must not be training rows")
    if settings.sizes and settings.controls not in routers:
        raise ValueError(f"training sizes need settings.controls to name a router ({list(routers)}), "
                         f"got {settings.controls!r}")
    fp = _first_pass(ds, split, routers, settings, features, holdout, on_chunk, progress)
    n_cells, k_ctrl = fp.val.n_groups, (fp.rand.n_groups // fp.n_inc if fp.rand is not None else 0)
    solved = [_smaller(fp, k, routers, settings) for k in range(fp.n_inc - 1)]
    tr = _up_to(fp.train, n_cells, fp.n_inc - 1)
    solved.append((int(tr.count_.sum()), *_solve(tr, _up_to(fp.rand, k_ctrl, fp.n_inc - 1), fp.val, routers, settings)))
    fp.train = fp.val = fp.rand = None  # the Grams are solved: free them before the predictions
    kept = _predictions(ds, split, fp, [m for _, m, _ in solved], routers, settings, features, holdout, on_chunk,
                        progress)
    if not kept[-1]["test"]:
        raise ValueError("no rows to predict")
    curve = [CurvePoint(n, m, fams, {r: np.concatenate(v) for r, v in pr.items() if v})
             for (n, m, fams), pr in zip(solved, kept)]
    info = {r: pd.concat(v, ignore_index=True) if v else None for r, v in fp.parts.items()}
    full = curve[-1]
    return OracleRun(float(settings.noise_level), int(settings.seed), full.models, full.families, full.pred["test"],
                     info["test"], info["train"], features, full.pred.get("val"),
                     info["val"] if "val" in full.pred else None, full.pred.get("holdout"),
                     info["holdout"] if "holdout" in full.pred else None, curve)
