"""Q2: the audit sample — train/validation/test blocks of σ (+flux, mask) and the targets, in memory."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from snrmoe_lib._util.rng import rng as _rng
from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, split_rows
from snrmoe_lib.data.noise import snr as snr_values
from snrmoe_lib.features.quality import QualityInput, quality_input
from snrmoe_lib.models.ridge import MethodChangeWarning

__all__ = ["AuditWarning", "AuditSample", "LEAK_LABELS", "audit_sizes", "load_audit_sample"]

#: Stellar labels audited besides log g (when the dataset's parameter table has them).
LEAK_LABELS = ("T_eff", "M_H")

#: The audit changed its method because of the data (e.g. fewer spectra than features). The same
#: class as the α-path fitter's warning, so one filter silences both.
AuditWarning = MethodChangeWarning


@dataclass
class AuditSample:
    """Train/validation/test blocks of σ (+flux, mask) and the targets, held in memory."""

    label: str
    train: QualityInput
    val: QualityInput
    test: QualityInput
    targets: dict[str, dict[str, np.ndarray]]  # split → {"log_g": …, "snr": …, "T_eff": …, "M_H": …}
    wave: np.ndarray
    rows: dict[str, np.ndarray]
    path: str = ""
    snr_definition: str = "l2"

    def sizes(self) -> dict[str, int]:
        return {k: int(len(getattr(self, k))) for k in ("train", "val", "test")}


def audit_sizes(params: Params) -> tuple[int, int, int]:
    """(train, val, test) sizes of the audit sample: ``quality.audit_n_*`` capped by the split."""
    q, s = params.quality, params.split
    n_tr, n_va, n_te = min(q.audit_n_train, s.n_train), min(q.audit_n_val, s.n_val), min(q.audit_n_test, s.n_test)
    if n_va == 0:
        # α must be chosen on held-out data; without a validation split, a fifth of train is held out
        n_va = max(2, n_tr // 5)
        n_tr -= n_va
        warnings.warn(f"split.n_val is 0: the audit holds out {n_va} training spectra to choose α",
                      AuditWarning, stacklevel=2)
    return n_tr, n_va, n_te


def _read_block(ds: PfsDataset, rows: np.ndarray, chunk_size: int):
    rows = np.sort(rows)
    flux = np.empty((len(rows), ds.n_pix), np.float32)
    err = np.empty_like(flux)
    mask = np.zeros(flux.shape, np.int32) if ds.has_mask else None
    params, got, i = [], [], 0
    for ch in ds.iter_chunks(rows, chunk_size=chunk_size):
        k = len(ch)
        flux[i:i + k], err[i:i + k] = ch.flux, ch.error
        if mask is not None:
            mask[i:i + k] = ch.mask
        params.append(ch.params)
        got.append(ch.rows)
        i += k
    # rows dropped as bad (on_bad_rows='drop') shrink the block
    got = np.concatenate(got) if got else np.empty(0, np.int64)
    return got, flux[:i], err[:i], (None if mask is None else mask[:i]), pd.concat(params, ignore_index=True)


def load_audit_sample(ds: PfsDataset, params: Params, label: str = "clean",
                      use_configured_split: bool = True) -> AuditSample:
    """Stream the audit sample from ``ds`` into memory.

    With ``use_configured_split`` the rows are a seeded subsample of the configured train/val/test
    split (so the audit never tests on rows other notebooks train on); otherwise (a separate
    dataset such as the ``estimated`` mock) the dataset is split afresh with the audit sizes.
    Targets: log g and the SNR (``snr_bins.definition``) from σ = error · ``noise.noise_level``, and
    :data:`LEAK_LABELS` (T_eff, [M/H]) where the parameter table has them.
    """
    n_tr, n_va, n_te = audit_sizes(params)
    seed = params.split.seed
    if use_configured_split:
        sp = split_rows(ds.n, params.split.n_train, params.split.n_val, params.split.n_test, seed)
        parts = {"train": sp.train, "val": sp.val, "test": sp.test}
        if params.split.n_val == 0:  # no validation split configured: carve one from train
            tr = _rng("audit.train_order", seed).permutation(sp.train)
            parts.update(train=tr[n_va:], val=tr[:n_va])
        rng = _rng("audit.subsample", seed)
        want = {"train": n_tr, "val": n_va, "test": n_te}
        parts = {k: np.sort(rng.choice(v, want[k], replace=False)) for k, v in parts.items()}
    else:
        sp = split_rows(ds.n, n_tr, n_va, n_te, seed)
        parts = {"train": sp.train, "val": sp.val, "test": sp.test}
    level = params.noise.noise_level
    blocks, targets, rows = {}, {}, {}
    for k, r in parts.items():
        got, flux, err, mask, table = _read_block(ds, r, params.data.chunk_size)
        q = quality_input(err, level, flux=flux, mask=mask)
        blocks[k] = q
        rows[k] = got
        targets[k] = {"log_g": table["log_g"].to_numpy(np.float64),
                      "snr": snr_values(flux, err, level, params.snr_bins.definition, mask)}
        # the other labels a gate must not encode (a gate reading T_eff would be a physical router)
        targets[k].update({c: table[c].to_numpy(np.float64) for c in LEAK_LABELS if c in table})
    return AuditSample(label, blocks["train"], blocks["val"], blocks["test"], targets, ds.wave.copy(), rows,
                       path=str(ds.path), snr_definition=params.snr_bins.definition)
