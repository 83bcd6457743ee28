"""Q4's data: the binned features, quality features, true SNR and bins of a split, held in memory.

Stronger experts (boosted trees, later networks) do not fit from sufficient statistics: they need the
rows. :func:`collect` reads them through the same split pass as Q1/Q3
(:func:`snrmoe_lib.data.passes.split_pass`: noise keyed by (seed, row), flux binned once) and keeps,
per role, the binned flux as float32 (N × D × 4 bytes: 20,000 rows at D = 1024 are 82 MB), the
gate's quality features (from σ only, the representation Q2 chose), the true SNR, its bin, the
label and, where the params table has them, the auxiliary labels T_eff and [M/H] (the nets' auxiliary
heads learn them; no model sees them as inputs). At most ``q4.max_train_rows`` training rows are kept (a seeded subsample, stream
``q4.train_rows``; the validation and test rows are always all of the split's).

The same pass serves the deployed models (:mod:`snrmoe_lib.analyses.deploy_rows`): it also keeps the
observed SNR of every row (from the noisy flux and the σ the model reads: interval bins and flags),
the fitted compressor, and the masked or non-finite pixel fraction of the compressor's template rows.
Given a fitted variance model (``variance``: error mode 'estimated'), the gate's quality features, the
compressor and the observed SNR read σ̂, estimated from the same noise draw as the flux; without it
(Q4's notebook) they read the clean σ = error · noise_level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.data.noise import add_noise_estimated, effective_sigma
from snrmoe_lib.data.passes import split_pass, target_values
from snrmoe_lib.features.flux import FluxFeatures
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.models.deployed import observed_snr
from snrmoe_lib.models.routing import SNRRouter

__all__ = ["Q4Data", "ROLES", "AUX", "train_rows", "sigma_read", "template_sigma", "collect"]

ROLES = ("train", "val", "test")
#: The auxiliary labels kept when the dataset has them (targets of the nets' auxiliary heads).
AUX = ("T_eff", "M_H")


@dataclass
class Q4Data:
    """Per role ('train', 'val', 'test'): ``X`` binned flux (float32), ``q`` quality features, ``snr``
    (true), ``bin`` (true SNR bin), ``y`` (label), ``row`` (dataset rows, file order); ``aux`` (per role,
    (n, 2): T_eff and [M/H]) is empty when the dataset has no such columns; ``snr_obs`` (per role) the
    observed SNR, ``compressor`` the fitted quality compressor and ``bad_pixel_fraction`` the (median,
    largest) masked or non-finite pixel fraction of its template rows (see the module docstring)."""

    X: dict
    q: dict
    snr: dict
    bin: dict
    y: dict
    row: dict
    labels: list[str]
    seed: int
    n_train_split: int
    info: dict = field(default_factory=dict)
    aux: dict = field(default_factory=dict)
    snr_obs: dict = field(default_factory=dict)
    compressor: Any = None
    bad_pixel_fraction: list = field(default_factory=list)

    def subset(self, role: str, keep: np.ndarray) -> dict:
        """The arrays of ``role`` restricted to ``keep`` (a mask or indices)."""
        return {k: getattr(self, k)[role][keep] for k in ("X", "q", "snr", "bin", "y", "row")}

    @property
    def log_snr(self) -> dict:
        """log of the true SNR per role, as a one-column matrix (the soft oracle's input)."""
        return {r: np.log(np.clip(v, 1e-6, None))[:, None] for r, v in self.snr.items()}


def train_rows(train: np.ndarray, most: int, seed: int) -> np.ndarray:
    """All training rows when there are at most ``most``, else a seeded sorted subsample of ``most``."""
    train = np.asarray(train)
    if len(train) <= int(most):
        return train
    return np.sort(_rng("q4.train_rows", int(seed)).choice(train, int(most), replace=False))


def sigma_read(noise_free, error, noisy_rows, seed: int, noise_level: float, variance=None) -> np.ndarray:
    """σ a model reads for rows made noisy by the protocol: error · noise_level (clean) or, given the
    variance model, σ̂ estimated from the same draw (keyed by (seed, row))."""
    if variance is None:
        return error if noise_level == 1 else effective_sigma(error, noise_level)
    return add_noise_estimated(noise_free, error, noise_level, noisy_rows, seed, variance.gain(noise_free, error))[1]


def template_sigma(ds, rows: np.ndarray, noise_level: float, seed: int, variance=None) -> tuple[np.ndarray, list]:
    """σ (as :func:`sigma_read`) of the compressor's template rows, and their fraction of masked or
    non-finite pixels (median, largest)."""
    ch = ds.read(rows, with_mask=True)
    bad = ~np.isfinite(ch.flux) | ~np.isfinite(ch.error) | (ch.mask != 0 if ch.mask is not None else False)
    frac = bad.mean(axis=1)
    return sigma_read(ch.flux, ch.error, ch.rows, seed, noise_level, variance), [float(np.median(frac)),
                                                                                 float(frac.max())]


def _compressor(ds, split, params, representation: str, noise_level: float, seed: int, variance=None):
    """The quality compressor fitted on Q3's template rows (a seeded training subsample, ``gate.fit_n``),
    and the template rows' bad-pixel fraction (median, largest)."""
    g = params.gate
    n = min(int(g.fit_n), len(split.train))
    rows = np.sort(_rng("gate.template_subsample", int(g.seed)).choice(split.train, n, replace=False))
    sigma, bad_fraction = template_sigma(ds, rows, noise_level, seed, variance)
    return make_compressor(representation).fit(QualityInput(sigma)), bad_fraction


def collect(ds, split, params, seed: int, representation: str, noise_level: float | None = None,
            progress: bool | str = False, variance=None) -> Q4Data:
    """One pass over the split's rows for noise seed ``seed``: Q4's in-memory arrays.

    Parameters
    ----------
    ds : PfsDataset
    split : Split
    params : Params
        ``q4.max_train_rows``, ``ridge.bin_pixels`` and ``ridge.target``, ``snr_bins``, ``data.chunk_size``.
    seed : int
        Noise seed.
    representation : str
        The gate's quality representation (Q2's choice; see :func:`snrmoe_lib.analyses.q3.resolve_representation`).
    noise_level : float, optional
        Default ``noise.noise_level``.
    variance : VarianceModel, optional
        Fitted variance model: the quality features, the compressor and the observed SNR read σ̂ of the
        same noise draw (error mode 'estimated'); default the clean σ.
    """
    p = params
    if not len(split.val) or not len(split.test):
        raise ValueError("Q4 selects on validation rows and scores on test rows: the split needs both")
    nl = p.noise.noise_level if noise_level is None else float(noise_level)
    sb = p.snr_bins
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    comp, bad_fraction = _compressor(ds, split, p, representation, nl, seed, variance)
    roles = {"train": train_rows(split.train, p.q4.max_train_rows, p.split.seed), "val": split.val, "test": split.test}
    has_aux = set(AUX) <= set(ds.params.columns)
    keys = ("X", "q", "snr_obs", "snr", "bin", "y", "row") + (("aux",) if has_aux else ())

    def annotate(ch):
        aux = {"aux": np.column_stack([target_values(ch, a) for a in AUX])} if has_aux else {}
        return {"snr": router.values(ch), "bin": router.assign(ch)} | aux

    acc = {r: {k: [] for k in keys} for r in ROLES}
    for role, nc in split_pass(ds, roles, noise_level=nl, seed=seed, features=FluxFeatures(p.ridge.bin_pixels),
                               target=p.ridge.target, chunk_size=p.data.chunk_size, progress=progress,
                               annotate=annotate, error_mode="clean" if variance is None else "estimated",
                               variance_model=variance):
        sigma = nc.sigma_hat if nc.sigma_hat is not None else sigma_read(None, nc.error, None, seed, nl)
        a = acc[role]
        a["X"].append(np.asarray(nc.X, dtype=np.float32))
        a["q"].append(comp.transform(QualityInput(sigma)))
        a["snr_obs"].append(observed_snr(nc.noisy, sigma, sb.definition))
        a["snr"].append(nc.info["snr"])
        a["bin"].append(nc.info["bin"].astype(np.int64))
        a["y"].append(nc.y)
        a["row"].append(nc.rows)
        if has_aux:
            a["aux"].append(nc.info["aux"])
    cat = {k: {r: np.concatenate(acc[r][k]) for r in ROLES} for k in keys}
    info = {"representation": representation, "noise_level": nl, "n_train_kept": int(len(roles["train"])),
            "train_subsampled": bool(len(roles["train"]) < len(split.train)), "n_features": int(cat["X"]["train"].shape[1])}
    return Q4Data(**cat, labels=list(sb.labels), seed=int(seed), n_train_split=int(len(split.train)), info=info,
                  compressor=comp, bad_pixel_fraction=bad_fraction)
