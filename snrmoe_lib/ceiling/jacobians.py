"""Jacobians ∂flux/∂θ of the stored (noise-free, median-normalised) flux, two ways.

* :func:`jacobian_autograd` — exact, by automatic differentiation of a mock forward model
  (:meth:`~snrmoe_lib.data.mock.base.ForwardModel.normalized_flux`), batched;
* :func:`jacobian_fd` — central finite differences of the same forward model at chosen steps (the
  user's method without the grid's float32 storage; the step-halving check of the ceiling);
* :func:`grid_jacobian` / :func:`grid_jacobian_dataset` — central finite differences along the axes
  of a regular grid (the method used on pfsspec grid products): the lattice is detected from the
  params table (:func:`detect_lattice`), edges are dropped or differenced one-sided.

Parameters are ordered as :data:`~snrmoe_lib.data.mock.base.PARAM_NAMES`
= (T_eff, log_g, M_H, a_M, C_M).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.io import PfsDataset
from snrmoe_lib.data.mock.base import PARAM_NAMES, ForwardModel
from snrmoe_lib.data.noise import effective_sigma

__all__ = ["PARAM_NAMES", "parameter_matrix", "jacobian_autograd", "jacobian_fd", "flux_and_jacobian", "Lattice", "detect_lattice", "usable_rows",
           "GridJacobian", "grid_jacobian", "grid_jacobian_dataset"]


# --------------------------------------------------------------------------------------------
# Jacobians by autograd
# --------------------------------------------------------------------------------------------


def parameter_matrix(table: pd.DataFrame) -> np.ndarray:
    """The (B, 5) float64 matrix of the :data:`PARAM_NAMES` columns of a params table (finite)."""
    missing = [c for c in PARAM_NAMES if c not in table]
    if missing:
        raise KeyError(f"params table lacks the stellar parameter column(s) {missing}")
    theta = table[list(PARAM_NAMES)].to_numpy(np.float64)
    if not np.all(np.isfinite(theta)):
        raise ValueError("non-finite stellar parameters in the params table")
    return theta


def jacobian_autograd(model: ForwardModel, table: pd.DataFrame, batch_size: int = 128,
                      dtype=None, num_threads: int | None = 1) -> np.ndarray:
    """Exact Jacobian of ``model.normalized_flux(θ, table)`` with respect to θ, per star.

    Parameters
    ----------
    model
        A mock forward model (``get_model(name)``).
    table
        Params table of the B stars: the :data:`PARAM_NAMES` columns and the observing conditions
        the model reads.
    batch_size
        Stars per forward pass (bounds memory).
    dtype
        torch dtype of the computation (default ``torch.float64``).
    num_threads
        torch intra-op threads during the computation (restored afterwards); ``None`` leaves the
        setting alone. The products are many small element-wise operations, for which one thread
        was about ten times faster than two on a loaded 2-core machine.

    Returns
    -------
    ndarray (B, P, 5), float64
        ``J[b, p, k] = ∂ flux[b, p] / ∂ θ_k`` in :data:`PARAM_NAMES` order.

    Notes
    -----
    Stars are independent, so the Jacobian-vector product with the tangent ``e_k`` for every star
    gives column ``k`` of all B Jacobians at once. It is formed by reverse-over-reverse
    differentiation, ``J t = ∂/∂u [uᵀ J] t``: one forward pass and one differentiable backward
    pass per batch, then 5 cheap backward passes (measured faster than 5 forward-mode passes).
    """
    import torch

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dtype = torch.float64 if dtype is None else dtype
    theta = parameter_matrix(table)
    table = table.reset_index(drop=True)
    if len(table) == 0:
        raise ValueError("empty params table: no stars to differentiate")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        out = None
        for s in range(0, len(table), batch_size):
            sl = slice(s, min(s + batch_size, len(table)))
            x = torch.as_tensor(theta[sl], dtype=dtype).requires_grad_(True)
            jb = _batch_jacobian(model, x, table.iloc[sl].reset_index(drop=True))
            if out is None:
                out = np.empty((len(table), jb.shape[1], len(PARAM_NAMES)), dtype=np.float64)
            out[sl] = jb
    finally:
        torch.set_num_threads(old_threads)
    return out


def jacobian_fd(model: ForwardModel, table: pd.DataFrame, steps: Sequence[float], batch_size: int = 64,
                num_threads: int | None = 1) -> np.ndarray:
    """Central finite differences ``(f(θ + h_k e_k) − f(θ − h_k e_k)) / 2h_k`` of the forward model, float64.

    Parameters
    ----------
    model, table
        As :func:`jacobian_autograd`.
    steps
        The five steps ``h_k`` in :data:`PARAM_NAMES` order (e.g. the grid's node spacings).

    Returns
    -------
    ndarray (B, P, 5), float64
    """
    import torch

    h = np.asarray(steps, np.float64)
    if h.shape != (len(PARAM_NAMES),) or not np.all(h > 0):
        raise ValueError(f"steps must be {len(PARAM_NAMES)} positive numbers in {PARAM_NAMES} order, got {steps}")
    theta = parameter_matrix(table)
    table = table.reset_index(drop=True)
    K = len(PARAM_NAMES)
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        out = None
        for s in range(0, len(table), batch_size):
            t = theta[s:s + batch_size]
            shifts = np.concatenate([t + sign * h[k] * np.eye(K)[k] for k in range(K) for sign in (1.0, -1.0)])
            with torch.no_grad():
                f = model.normalized_flux(torch.as_tensor(shifts), table.iloc[np.tile(np.arange(s, s + len(t)), 2 * K)])
            f = f.numpy().reshape(K, 2, len(t), -1)
            if out is None:
                out = np.empty((len(table), f.shape[-1], K), np.float64)
            out[s:s + len(t)] = np.moveaxis((f[:, 0] - f[:, 1]) / (2 * h[:, None, None]), 0, -1)
    finally:
        torch.set_num_threads(old)
    return out


def flux_and_jacobian(model: ForwardModel, theta, table: pd.DataFrame):
    """Flux (B, P) and exact Jacobian (B, P, 5) at the torch tensor ``theta`` (one batch, float64 numpy).

    The building block of Gauss–Newton fits (:mod:`snrmoe_lib.ceiling.template_fit`).
    """
    import torch

    x = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = model.normalized_flux(x, table)
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, x, u, create_graph=True)
        cols = []
        for k in range(len(PARAM_NAMES)):
            tangent = torch.zeros_like(x)
            tangent[:, k] = 1.0
            (d,) = torch.autograd.grad(g, u, tangent, retain_graph=k < len(PARAM_NAMES) - 1)
            cols.append(d.detach().to(torch.float64).numpy())
    return y.detach().to(torch.float64).numpy(), np.stack(cols, axis=-1)


def _batch_jacobian(model: ForwardModel, x, table: pd.DataFrame) -> np.ndarray:
    """(B, P, 5) Jacobian of one batch by reverse-over-reverse differentiation (see :func:`jacobian_autograd`)."""
    return flux_and_jacobian(model, x, table)[1]


# --------------------------------------------------------------------------------------------
# Regular grids: lattice detection and central finite differences
# --------------------------------------------------------------------------------------------


@dataclass
class Lattice:
    """The lattice of a grid dataset, detected from its params table.

    Attributes
    ----------
    names
        All parameter names considered (:data:`PARAM_NAMES`).
    values
        Sorted node values of each parameter (a single value for a fixed parameter).
    axes
        The parameters that vary (more than one node value).
    regular
        Per axis: True when the node spacing is constant.
    index
        (N, K) node index of every row along every parameter.
    node_row
        Flat node number → row (−1 where the lattice has a hole).
    """

    names: tuple
    values: dict
    axes: tuple
    regular: dict
    index: np.ndarray
    node_row: np.ndarray

    @property
    def shape(self) -> tuple:
        return tuple(len(self.values[n]) for n in self.names)

    def steps(self) -> dict:
        """Median node spacing of each axis."""
        return {n: float(np.median(np.diff(self.values[n]))) for n in self.axes}

    def neighbour(self, rows: np.ndarray, axis: str, offset: int) -> np.ndarray:
        """Row of the node ``offset`` steps along ``axis`` from each of ``rows`` (−1 if none)."""
        k = self.names.index(axis)
        idx = self.index[rows].copy()
        idx[:, k] += offset
        inside = (idx[:, k] >= 0) & (idx[:, k] < self.shape[k])
        flat = np.ravel_multi_index(tuple(np.clip(idx, 0, np.array(self.shape) - 1).T), self.shape)
        return np.where(inside, self.node_row[flat], -1)


def detect_lattice(table: pd.DataFrame, names: Sequence[str] = PARAM_NAMES, decimals: int = 6) -> Lattice:
    """Detect the regular lattice of a grid from its params table.

    Node values are the distinct values of each parameter column (rounded to ``decimals`` to
    absorb float noise). Holes (missing nodes) are allowed; two rows on the same node are an
    error (for example a file that mixes magnitudes).
    """
    theta = table[list(names)].to_numpy(np.float64) if all(n in table for n in names) else None
    if theta is None:
        raise KeyError(f"params table lacks the parameter column(s) {[n for n in names if n not in table]}")
    theta = np.round(theta, decimals)
    values, index, regular = {}, np.empty(theta.shape, np.int64), {}
    for k, n in enumerate(names):
        v, inv = np.unique(theta[:, k], return_inverse=True)
        values[n] = v
        index[:, k] = inv.ravel()
        if len(v) > 1:
            d = np.diff(v)
            regular[n] = bool(np.allclose(d, d[0], rtol=1e-3, atol=0))
    shape = tuple(len(values[n]) for n in names)
    flat = np.ravel_multi_index(tuple(index.T), shape)
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    if counts.max() > 1:
        dup = int(np.argmax(counts > 1))
        rows = np.flatnonzero(flat == dup)[:3].tolist()
        raise ValueError(f"rows {rows} share one lattice node of {list(names)}: not a single regular grid "
                         "(one file per magnitude and fixed conditions is expected)")
    node_row = np.full(int(np.prod(shape)), -1, np.int64)
    node_row[flat] = np.arange(len(table))
    axes = tuple(n for n in names if len(values[n]) > 1)
    return Lattice(tuple(names), values, axes, regular, index, node_row)


def _stencils(lat: Lattice, rows: np.ndarray, axes: Sequence[str], edges: str):
    """Per star and axis: the two rows differenced (plus, minus) and the usable flag."""
    if edges not in ("drop", "one_sided"):
        raise ValueError(f"edges must be 'drop' or 'one_sided', got {edges!r}")
    plus = np.empty((len(rows), len(axes)), np.int64)
    minus = np.empty_like(plus)
    for j, a in enumerate(axes):
        p, m = lat.neighbour(rows, a, +1), lat.neighbour(rows, a, -1)
        if edges == "one_sided":
            # fall back to the star itself on the side without a neighbour
            p, m = np.where((p < 0) & (m >= 0), rows, p), np.where((m < 0) & (p >= 0), rows, m)
        plus[:, j], minus[:, j] = p, m
    usable = np.all((plus >= 0) & (minus >= 0), axis=1)
    return plus, minus, usable


def usable_rows(table: pd.DataFrame, axes: Sequence[str] | None = None, edges: str = "drop",
                lattice: Lattice | None = None) -> np.ndarray:
    """Rows whose derivative along every one of ``axes`` can be formed (interior points for 'drop')."""
    lat = detect_lattice(table) if lattice is None else lattice
    axes = lat.axes if axes is None else tuple(axes)
    rows = np.arange(len(table))
    return rows[_stencils(lat, rows, axes, edges)[2]]


@dataclass
class GridJacobian:
    """Finite-difference Jacobians of grid stars.

    ``J`` is (B, P, 5) in :data:`PARAM_NAMES` order, with zero columns for parameters that are not
    lattice axes (listed in ``axes``); ``mask`` (B, P) marks a pixel bad in the star or in any node
    its differences used; ``sigma`` (B, P) is the star's error · noise_level; ``table`` the
    stars' params rows; ``rows`` their row numbers in the grid file; ``central`` (B, n_axes)
    whether each derivative was central (else one-sided).
    """

    rows: np.ndarray
    table: pd.DataFrame
    J: np.ndarray
    sigma: np.ndarray | None
    mask: np.ndarray
    axes: tuple
    central: np.ndarray
    steps: dict


def grid_jacobian(table: pd.DataFrame, flux: np.ndarray, rows: np.ndarray | None = None,
                  mask: np.ndarray | None = None, edges: str = "drop", axes: Sequence[str] | None = None,
                  lattice: Lattice | None = None) -> GridJacobian:
    """Central finite differences of ``flux`` along the lattice axes, for in-memory grids.

    Parameters
    ----------
    table : DataFrame (N rows)
        Params table of the whole grid (the lattice is detected from it).
    flux : ndarray (N, P)
        Noise-free flux of every grid row (or any array indexable by row).
    rows
        Stars to differentiate (default: every usable row). Rows whose stencil is incomplete
        (an edge with ``edges='drop'``, or a hole) raise an error naming them.
    mask : ndarray (N, P), optional
        Non-zero = bad pixel.
    edges
        ``'drop'``: only stars with both neighbours on every axis; ``'one_sided'``: at an edge use
        the forward or backward difference with the star itself.
    axes
        Parameters to differentiate (default: every lattice axis).

    Notes
    -----
    ``(f(x₊) − f(x₋)) / (x₊ − x₋)`` uses the actual node values, so an irregular axis is handled.
    """
    lat = detect_lattice(table) if lattice is None else lattice
    axes = lat.axes if axes is None else tuple(axes)
    not_axes = [a for a in axes if a not in lat.axes]
    if not_axes:
        raise ValueError(f"{not_axes} do not vary in this grid (lattice axes: {list(lat.axes)}); "
                         "a derivative along them needs a grid with those axes")
    rows = usable_rows(table, axes, edges, lat) if rows is None else np.asarray(rows, np.int64)
    plus, minus, usable = _stencils(lat, rows, axes, edges)
    if not usable.all():
        raise ValueError(f"rows {rows[~usable][:5].tolist()} lack grid neighbours on {list(axes)} "
                         f"(edges={edges!r}); select rows with usable_rows()")
    theta = np.round(table[list(PARAM_NAMES)].to_numpy(np.float64), 6)
    P = np.asarray(flux[rows[:1]]).shape[1] if len(rows) else 0
    J = np.zeros((len(rows), P, len(PARAM_NAMES)), np.float64)
    bad = np.zeros((len(rows), P), bool) if mask is None else (np.asarray(mask[rows]) != 0)
    for j, a in enumerate(axes):
        k = PARAM_NAMES.index(a)
        dx = theta[plus[:, j], k] - theta[minus[:, j], k]
        fp = np.asarray(flux[plus[:, j]], np.float64)
        fm = np.asarray(flux[minus[:, j]], np.float64)
        J[:, :, k] = (fp - fm) / dx[:, None]
        if mask is not None:
            bad |= (np.asarray(mask[plus[:, j]]) != 0) | (np.asarray(mask[minus[:, j]]) != 0)
    central = (plus != rows[:, None]) & (minus != rows[:, None])
    return GridJacobian(rows=rows, table=table.iloc[rows].reset_index(drop=True), J=J, sigma=None,
                        mask=bad.astype(np.int32), axes=tuple(axes), central=central, steps=lat.steps())


def grid_jacobian_dataset(ds: PfsDataset, n_stars: int | None = None, seed: int = 0, edges: str = "drop",
                          axes: Sequence[str] | None = None, noise_level: float = 1.0,
                          rows: np.ndarray | None = None) -> GridJacobian:
    """Finite-difference Jacobians of stars of a pfsspec grid file, reading only the rows needed.

    Parameters
    ----------
    ds
        An opened grid dataset (one magnitude, fixed conditions).
    n_stars
        Draw this many usable stars at random (seeded); default all usable stars.
    seed
        Seed of that draw.
    edges, axes
        See :func:`grid_jacobian`.
    noise_level
        σ = error · noise_level of each star.
    rows
        Explicit stars instead of a draw.
    """
    table = ds.params
    lat = detect_lattice(table)
    axes = lat.axes if axes is None else tuple(axes)
    if rows is None:
        cand = usable_rows(table, axes, edges, lat)
        if cand.size == 0:
            raise ValueError(f"{ds.path}: no grid star has neighbours on every axis {list(axes)} with "
                             f"edges={edges!r}; use a larger grid or edges='one_sided'")
        if n_stars is not None and n_stars < cand.size:
            cand = np.sort(_rng("fisher.stars", seed).choice(cand, size=n_stars, replace=False))
        rows = cand
    rows = np.asarray(rows, np.int64)
    plus, minus, _ = _stencils(lat, rows, axes, edges)
    need = np.unique(np.concatenate([rows, plus.ravel(), minus.ravel()]))
    need = need[need >= 0]
    chunk = ds.read(need, dtype=np.float64)
    if len(chunk) != len(need):
        raise ValueError(f"{ds.path}: bad rows among the grid nodes needed; cannot difference across them")
    pos = np.full(len(table), -1, np.int64)
    pos[need] = np.arange(len(need))

    class _ByRow:  # index the read block by global row number
        def __init__(self, a):
            self.a = a

        def __getitem__(self, r):
            return self.a[pos[r]]

    gj = grid_jacobian(table, _ByRow(chunk.flux), rows=rows,
                       mask=None if chunk.mask is None else _ByRow(chunk.mask), edges=edges, axes=axes,
                       lattice=lat)
    gj.sigma = effective_sigma(chunk.error[pos[rows]], noise_level)
    return gj

