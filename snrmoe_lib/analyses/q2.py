"""Q2 / Gate-1: does the error vector leak the spectrum? The audit, its controls and diagnostics.

The mock (and the real PFS simulator) computes the expected error from the *noise-free* model flux,
so σ carries the stellar lines. The audit asks, for each error representation of
:mod:`snrmoe_lib.quality`: how well does a linear model on that representation *alone* predict

* log g — it should not (R² < ``thresholds.gate1_logg_r2_max``): anything it learns is leakage;
* the SNR — it should (R² > ``thresholds.gate1_snr_r2_min``): that is what a gate needs.

Method: a Ridge α path solved from one eigendecomposition of the training design (the Gram
``XᵀX``, or the kernel ``XXᵀ`` when there are fewer spectra than features), α chosen on the
validation block by R², R² reported on the test block with a bootstrap interval; the minimum-norm
least-squares (OLS) fit from the same decomposition is kept for reference. Features are
standardised with training statistics.

Controls (on the raw σ, S0): a fixed pixel permutation applied to train and test alike (a linear
model does not need pixel order, so the leakage must survive it), a per-spectrum shuffle that
destroys the alignment with spectral features, the mask alone, the aggregate statistics alone,
and a label shuffle, which must give R² ≈ 0 (a guard that the audit cannot leak by itself).

Diagnostics: the raw-σ Ridge's per-pixel importance mapped to wavelength, each peak named by the
nearest stellar line, molecular or telluric band, or OH sky line; and the decomposition
e ≈ s·e0 + δ (how much of σ the scaled template explains, and where δ concentrates).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from snrmoe_lib.config import Params
from snrmoe_lib.data.io import PfsDataset, open_dataset, split_rows
from snrmoe_lib.evaluation.metrics import bootstrap_interval, r2
from snrmoe_lib.data.noise import snr as snr_values
from snrmoe_lib.features.quality import QualityError, QualityInput, check_features, make_compressor, quality_input
from snrmoe_lib.evaluation.records import decide
from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib._util.rng import rng as _rng

__all__ = [
    "AuditWarning",
    "RidgePath",
    "AuditSample",
    "Audit",
    "Decomposition",
    "FEATURES",
    "audit_sizes",
    "load_audit_sample",
    "run_audit",
    "choose_representation",
    "gate1_verdicts",
    "nearest_feature",
    "importance_table",
    "decompose_errors",
    "estimated_path",
    "ensure_estimated_dataset",
    "audit_estimated",
    "mock_provenance",
    "format_table",
    "guard_r2",
    "results_payload",

]


class AuditWarning(UserWarning):
    """The audit changed its method because of the data (e.g. fewer spectra than features)."""


# ------------------------------------------------------------------------------------------
# Spectral features to name importance peaks (air wavelengths in Å). Data, not logic: extend freely.
# Each entry: (name, kind, low, high); a line has low == high, a band a range.
# Sources: MOCK_PHYSICS line list and sky notes (UVES OH atlas, Kitt Peak telluric table).
# ------------------------------------------------------------------------------------------
_STELLAR = [
    ("Ca II 8498", 8498.02), ("Ca II 8542", 8542.09), ("Ca II 8662", 8662.14),
    ("Na I 8183", 8183.26), ("Na I 8195", 8194.79), ("K I 7665", 7664.90), ("K I 7699", 7698.96),
    ("Mg I 8807", 8806.76), ("Mg I 8736", 8736.02), ("Mg I 7658", 7657.60), ("Mg I 7692", 7691.55),
    ("Fe I 8689", 8688.62), ("Fe I 8824", 8824.22), ("Fe I 7748", 7748.27), ("Fe I 7832", 7832.20),
    ("Fe I 8327", 8327.06), ("Fe I 8388", 8387.77), ("Fe I 8468", 8468.41), ("Fe I 8514", 8514.07),
    ("Fe I 8582", 8582.26), ("Fe I 8612", 8611.80), ("Fe I 8622", 8621.60), ("Fe I 8675", 8674.75),
    ("Fe I 8757", 8757.19), ("Fe I 7131", 7130.92), ("Fe I 7187", 7187.32), ("Fe I 7207", 7207.39),
    ("Fe I 7386", 7386.33), ("Fe I 7389", 7389.40), ("Fe I 7293", 7293.04), ("Fe I 7311", 7311.07),
    ("Fe II 7308", 7308.07), ("Fe II 7321", 7320.66), ("Fe I 7586", 7586.02), ("Ca I 7148", 7148.15), ("Ca I 7202", 7202.20),
    ("Ca I 7326", 7326.15), ("Ti I 8427", 8426.50), ("Ti I 8435", 8435.30), ("Si I 8728", 8728.01),
    ("Si I 8742", 8742.45), ("O I 7774", 7774.17), ("Ni I 7788", 7788.93), ("Fe II 7712", 7711.72),
    ("Pa 12 8750", 8750.5), ("Pa 14 8598", 8598.4), ("Pa 16 8502", 8502.5),
]
_OH = [7276.4, 7316.3, 7340.9, 7750.7, 7794.1, 7821.5, 7913.7, 7964.7, 7993.3, 8288.6, 8298.9,
       8344.6, 8352.9, 8399.2, 8430.1, 8465.3, 8761.3, 8767.9, 8778.3, 8791.2, 8827.1, 8836.4]
_BANDS = [
    ("O2 A-band", "telluric", 7594.0, 7700.0), ("H2O 7150–7350", "telluric", 7150.0, 7350.0),
    ("H2O 8100–8360", "telluric", 8100.0, 8360.0),
    ("TiO 7054", "molecular", 7054.0, 7150.0), ("TiO 7589", "molecular", 7589.0, 7700.0),
    ("TiO 8432", "molecular", 8432.0, 8520.0), ("TiO 7126", "molecular", 7126.0, 7206.0),
    ("TiO 7672", "molecular", 7672.0, 7742.0), ("CN 7088", "molecular", 7088.0, 7148.0),
    ("CN 7259", "molecular", 7259.0, 7319.0), ("CN 7875", "molecular", 7875.0, 7955.0),
    ("CN 8067", "molecular", 8067.0, 8147.0), ("CN 8270", "molecular", 8270.0, 8350.0),
]

#: The catalogue used by :func:`nearest_feature`: one row per feature.
FEATURES = pd.DataFrame(
    [(n, "stellar line", w, w) for n, w in _STELLAR]
    + [(f"OH {w:.0f}", "sky (OH)", w, w) for w in _OH]
    + list(_BANDS),
    columns=["name", "kind", "low", "high"],
)


def nearest_feature(wavelength: float, max_distance: float = 15.0, catalogue: pd.DataFrame | None = None,
                    line_tolerance: float = 3.0) -> tuple[str, str, float]:
    """The catalogued feature that best explains ``wavelength`` (Å): ``(name, kind, distance_Å)``.

    In order: a line within ``line_tolerance`` (a few pixels at R ≈ 5000); else a band the
    wavelength lies in (distance 0); else the nearest line within ``max_distance``. Returns
    ``("—", "none", d)`` (d: distance to the nearest line) when nothing qualifies.
    """
    cat = FEATURES if catalogue is None else catalogue
    lines = cat[cat["low"] == cat["high"]]
    d = np.abs(lines["low"].to_numpy() - wavelength)
    i = int(np.argmin(d)) if d.size else -1
    if d.size and d[i] <= line_tolerance:
        return str(lines["name"].iloc[i]), str(lines["kind"].iloc[i]), float(d[i])
    bands = cat[cat["low"] < cat["high"]]
    inside = bands[(bands["low"] <= wavelength) & (wavelength <= bands["high"])]
    if len(inside):
        return str(inside["name"].iloc[0]), str(inside["kind"].iloc[0]), 0.0
    if d.size and d[i] <= max_distance:
        return str(lines["name"].iloc[i]), str(lines["kind"].iloc[i]), float(d[i])
    return "—", "none", float(d[i]) if d.size else float("inf")


# ------------------------------------------------------------------------------------------
# Ridge α path from one eigendecomposition
# ------------------------------------------------------------------------------------------


def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition with BLAS on one thread.

    The tridiagonal reduction is a long chain of small, memory-bound BLAS-2 calls: threads add
    synchronisation and no speed, and on a shared, oversubscribed machine OpenBLAS threads made
    it up to 40× slower (0.4 s on one thread against 19 s on two, for an 800 × 800 kernel).
    """
    from scipy.linalg import eigh

    with one_blas_thread():
        return eigh(a, check_finite=False)


class RidgePath(RegressorMixin, BaseEstimator):
    """Ridge regression for a whole α grid from one eigendecomposition, plus min-norm OLS.

    With n spectra and p features the training design X (standardised) is decomposed once: the
    Gram ``XᵀX`` (p × p) when n > p, else the kernel ``XXᵀ`` (n × n, the "dual" form). Every α
    then costs one small matrix product. Several targets (columns of ``y``) share the
    decomposition, so log g, the SNR and shuffled labels cost one fit.

    Parameters
    ----------
    alphas : sequence of float
        The α grid.
    standardize : bool
        Centre and scale features with the training mean and standard deviation.

    Attributes
    ----------
    coef_path_ : ndarray (n_alphas, p, n_targets)
        Coefficients in standardised units for each α.
    coef_ols_ : ndarray (p, n_targets)
        Minimum-norm least-squares coefficients.
    alpha_index_ : ndarray (n_targets,)
        Index of the α chosen per target by :meth:`select` (default: the largest α).
    dual_ : bool
        Whether the kernel (n ≤ p) form was used.
    """

    def __init__(self, alphas: Sequence[float] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5),
                 standardize: bool = True):
        self.alphas = alphas
        self.standardize = standardize

    def fit(self, X, y):
        """Decompose the training design and solve every α (and OLS) for every target."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(y, dtype=np.float64)
        self.single_target_ = Y.ndim == 1
        Y = Y[:, None] if Y.ndim == 1 else Y
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {self.alphas!r}")
        if X.ndim != 2 or len(X) != len(Y):
            raise ValueError(f"X {X.shape} and y {Y.shape} do not match")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
            raise ValueError("X or y holds NaN or infinite values")
        n, p = X.shape
        if n < 2:
            raise ValueError("need at least 2 training samples")
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) if self.standardize else np.ones(p)
        const = np.flatnonzero(self.scale_ == 0)
        if self.standardize and const.size:
            raise ValueError(f"feature column(s) {const[:8].tolist()} are constant in the training data")
        Xs = (X - self.mean_) / self.scale_
        self.y_mean_ = Y.mean(axis=0)
        Yc = Y - self.y_mean_
        self.dual_ = n <= p
        if self.dual_:
            warnings.warn(
                f"{n} training spectra for {p} features: ordinary least squares is under-determined, "
                "so the OLS reference is the minimum-norm solution (it interpolates the training set) "
                "and Ridge is solved in its dual (kernel) form", AuditWarning, stacklevel=2)
            w, U = _eigh(Xs @ Xs.T)
            basis = Xs.T @ U            # p × n: V·S
            b = U.T @ Yc                # n × t
        else:
            w, basis = _eigh(Xs.T @ Xs)  # p × p
            b = basis.T @ (Xs.T @ Yc)    # p × t
        w = np.clip(w, 0.0, None)
        tol = w.max() * max(n, p) * np.finfo(np.float64).eps
        self.coef_path_ = np.stack([basis @ (b / (w + a)[:, None]) for a in alphas])
        inv = np.where(w > tol, 1.0 / np.where(w > tol, w, 1.0), 0.0)
        self.coef_ols_ = basis @ (b * inv[:, None])
        self.rank_ = int(np.sum(w > tol))
        self.alpha_index_ = np.full(Y.shape[1], len(alphas) - 1)
        self.n_features_in_ = p
        return self

    def _scaled(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_path_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got shape {X.shape}")
        return (X - self.mean_) / self.scale_

    def _out(self, P: np.ndarray) -> np.ndarray:
        return P[..., 0] if self.single_target_ else P

    def predict_path(self, X) -> np.ndarray:
        """Predictions for every α: (n_alphas, n, n_targets) (targets squeezed for 1-D ``y``)."""
        Xs = self._scaled(X)
        return self._out(np.einsum("np,apt->ant", Xs, self.coef_path_, optimize=True) + self.y_mean_)

    def select(self, X_val, y_val) -> "RidgePath":
        """Choose α per target by the validation R²."""
        Yv = np.asarray(y_val, dtype=np.float64)
        Yv = Yv[:, None] if Yv.ndim == 1 else Yv
        P = self.predict_path(X_val)
        P = P[..., None] if self.single_target_ else P
        scores = np.array([[r2(Yv[:, t], P[a, :, t]) for t in range(Yv.shape[1])] for a in range(len(P))])
        self.val_r2_ = scores
        self.alpha_index_ = np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)
        return self

    @property
    def alpha_(self) -> np.ndarray:
        """The chosen α per target."""
        return np.asarray(self.alphas, dtype=float)[self.alpha_index_]

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients (standardised units) at the chosen α: (p, n_targets) or (p,)."""
        c = np.stack([self.coef_path_[a, :, t] for t, a in enumerate(self.alpha_index_)], axis=1)
        return self._out(c)

    def predict(self, X) -> np.ndarray:
        c = self.coef_
        c = c[:, None] if self.single_target_ else c
        return self._out(self._scaled(X) @ c + self.y_mean_)

    def predict_ols(self, X) -> np.ndarray:
        return self._out(self._scaled(X) @ self.coef_ols_ + self.y_mean_)


# ------------------------------------------------------------------------------------------
# The audit sample
# ------------------------------------------------------------------------------------------


@dataclass
class AuditSample:
    """Train/validation/test blocks of σ (+flux, mask) and the targets, held in memory."""

    label: str
    train: QualityInput
    val: QualityInput
    test: QualityInput
    targets: dict[str, dict[str, np.ndarray]]  # split → {"log_g": …, "snr": …}
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
    Targets: log g and the SNR (``snr_bins.definition``) from σ = error · ``noise.noise_level``.
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
    return AuditSample(label, blocks["train"], blocks["val"], blocks["test"], targets, ds.wave.copy(), rows,
                       path=str(ds.path), snr_definition=params.snr_bins.definition)


# ------------------------------------------------------------------------------------------
# Running the audit
# ------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """Everything the audit found for one sample."""

    label: str
    table: pd.DataFrame          # one row per representation
    controls: pd.DataFrame       # one row per control
    importance: np.ndarray       # |coefficient| of the raw-σ log g Ridge per pixel (standardised units)
    wave: np.ndarray
    sizes: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _alphas(params: Params) -> list[float]:
    # α = 0 in ridge.alphas means plain least squares, which the audit reports separately (OLS)
    return list(params.quality.audit_alphas) or [a for a in params.ridge.alphas if a > 0]


def _score(model: RidgePath, F_val, F_te, Y_val: np.ndarray, Y_te: np.ndarray, names: list[str],
           n_boot: int, seed: int) -> dict:
    """Select α on validation, score each target on test (with a bootstrap interval)."""
    model.select(F_val, Y_val)
    P = model.predict(F_te)
    P_ols = model.predict_ols(F_te)
    P = P[:, None] if P.ndim == 1 else P
    P_ols = P_ols[:, None] if P_ols.ndim == 1 else P_ols
    out = {}
    n_alpha = len(model.alphas)
    for t, name in enumerate(names):
        yt = Y_te[:, t]
        lo, hi = bootstrap_interval(yt, P[:, t], n_boot=n_boot, seed=seed) if n_boot else (np.nan, np.nan)
        ai = int(model.alpha_index_[t])
        out[name] = {"r2": r2(yt, P[:, t]), "lo": lo, "hi": hi, "alpha": float(model.alphas[ai]),
                     "alpha_at_edge": ai in (0, n_alpha - 1), "r2_ols": r2(yt, P_ols[:, t])}
    return out


def _fit_targets(F_tr, F_va, F_te, sample: AuditSample, extra: dict[str, tuple] | None, params: Params):
    """One RidgePath fit for log g, SNR and any extra targets; returns (scores, model)."""
    names = ["log_g", "snr"]
    cols = {s: [sample.targets[s]["log_g"], sample.targets[s]["snr"]] for s in ("train", "val", "test")}
    for name, (ytr, yva, yte) in (extra or {}).items():
        names.append(name)
        for s, y in zip(("train", "val", "test"), (ytr, yva, yte)):
            cols[s].append(y)
    Y = {s: np.column_stack(v) for s, v in cols.items()}
    with warnings.catch_warnings():
        # the dual-form notice is raised once per audit by run_audit, not once per representation
        warnings.simplefilter("ignore", AuditWarning)
        model = RidgePath(alphas=_alphas(params)).fit(F_tr, Y["train"])
    scores = _score(model, F_va, F_te, Y["val"], Y["test"], names, params.runner.n_bootstrap, params.seeds[0])
    return scores, model


def _features(name: str, sample: AuditSample, params: Params):
    comp = make_compressor(name, n_pca=params.quality.n_pca).fit(sample.train)
    F = [comp.transform(getattr(sample, s)) for s in ("train", "val", "test")]
    check_features(F[0], name, require_variation=True)
    return F, comp


def _row_verdict(r2_logg: float, r2_snr: float, th) -> str:
    a = decide(r2_logg, "<", th.gate1_logg_r2_max)
    b = decide(r2_snr, ">", th.gate1_snr_r2_min)
    if "UNDEFINED" in (a, b):
        return "UNDEFINED"
    return "PASS" if a == b == "PASS" else "FAIL"


def _table_row(name: str, n_feat: int, sc: dict, th) -> dict:
    g, s = sc["log_g"], sc["snr"]
    return {"representation": name, "n_features": n_feat,
            "r2_logg": g["r2"], "r2_logg_lo": g["lo"], "r2_logg_hi": g["hi"], "alpha_logg": g["alpha"],
            "r2_logg_ols": g["r2_ols"],
            "r2_snr": s["r2"], "r2_snr_lo": s["lo"], "r2_snr_hi": s["hi"], "alpha_snr": s["alpha"],
            "alpha_at_edge": bool(g["alpha_at_edge"] or s["alpha_at_edge"]),
            "verdict": _row_verdict(g["r2"], s["r2"], th),
            "verdict_interval": _row_verdict(g["hi"], s["lo"], th)}


def _digest(F: Sequence[np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha1()
    for a in F:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _shuffled_labels(sample: AuditSample, seed: int) -> tuple:
    out = []
    for k, split in enumerate(("train", "val", "test")):
        y = sample.targets[split]["log_g"]
        out.append(_rng("audit.label_shuffle", int(seed), k).permutation(y))
    return tuple(out)


def _per_spectrum_shuffle(sigma: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    # one permutation per spectrum, keyed by (seed, row): alignment with the wavelength is destroyed
    out = np.empty_like(sigma)
    for i, r in enumerate(rows):
        out[i] = sigma[i, _rng("audit.pixel_shuffle", int(seed), int(r)).permutation(sigma.shape[1])]
    return out


def run_audit(sample: AuditSample, params: Params, representations: Sequence[str] | None = None) -> Audit:
    """Audit every representation and run the controls on one sample.

    Returns an :class:`Audit`; its ``table`` has one row per representation with R² (test, with a
    bootstrap interval) for log g and the SNR, the chosen α, the OLS reference and a verdict
    against the Gate-1 thresholds.
    """
    reps = list(representations or params.quality.representations)
    th = params.thresholds
    n_boot, seed0 = params.runner.n_bootstrap, params.seeds[0]
    notes = []
    n_tr, p = sample.train.shape
    if n_tr <= p:
        msg = (f"{n_tr} training spectra for {p} pixels: the pixel-level fits (S0, S1a, S1b, controls) use "
               "Ridge in its dual (kernel) form, and their OLS reference is the minimum-norm solution, "
               "which interpolates the training set")
        warnings.warn(msg, AuditWarning, stacklevel=2)
        notes.append(msg)

    # S0 carries the label-shuffle guard as extra targets: it shares the decomposition
    shuffles = {f"shuffle_{s}": _shuffled_labels(sample, s) for s in params.seeds}
    rows, importance, s0_scores = [], None, None
    seen: dict[str, tuple] = {}  # feature digest → (scores, model, representation)
    for name in reps:
        try:
            F, _ = _features(name, sample, params)
        except QualityError as exc:
            raise QualityError(f"{sample.label} audit: {exc}") from None
        key = _digest(F)
        if key in seen and (name != "S0" or f"shuffle_{params.seeds[0]}" in seen[key][0]):
            # bit-identical features (e.g. S1a = S0 when every flux median is exactly 1, as in
            # median-normalised products) give bit-identical fits: reuse, and say so
            sc, model, same = seen[key]
            notes.append(f"{name}: features identical to {same}'s (bit for bit); its fit is reused")
        else:
            sc, model = _fit_targets(*F, sample, shuffles if name == "S0" else None, params)
            seen[key] = (sc, model, name)
        if name == "S0":
            s0_scores = sc
            importance = np.abs(model.coef_[:, 0])
        rows.append(_table_row(name, F[0].shape[1], sc, th))
    table = pd.DataFrame(rows)

    controls = []

    def add(control: str, what: str, expect: str, n_feat: int, sc: dict, r2_snr: bool = True):
        g, s = sc["log_g"], sc.get("snr")
        controls.append({"control": control, "description": what, "expect": expect, "n_features": n_feat,
                         "r2_logg": g["r2"], "r2_logg_lo": g["lo"], "r2_logg_hi": g["hi"],
                         "r2_snr": s["r2"] if (s and r2_snr) else np.nan})

    if s0_scores is None:
        F, _ = _features("S0", sample, params)
        s0_scores, model = _fit_targets(*F, sample, shuffles, params)
        importance = np.abs(model.coef_[:, 0])
    add("raw σ (S0)", "reference: Ridge on the raw σ", "high (leaks)", p, s0_scores)

    perm = _rng("audit.pixel_order", int(seed0)).permutation(p)
    F = [getattr(sample, s).sigma[:, perm] for s in ("train", "val", "test")]
    add("fixed pixel permutation", "one permutation of the pixels, the same for train and test",
        "≈ S0 (a linear model needs no pixel order)", p, _fit_targets(*F, sample, None, params)[0])

    F = [_per_spectrum_shuffle(getattr(sample, s).sigma, sample.rows[s], seed0) for s in ("train", "val", "test")]
    add("per-spectrum shuffle", "each spectrum's σ in its own random pixel order",
        "low (alignment destroyed)", p, _fit_targets(*F, sample, None, params)[0])
    del F

    add(*_mask_control(sample, params))

    if "S3b" in set(table["representation"]):
        r = table.set_index("representation").loc["S3b"]
        sc = {"log_g": {"r2": r["r2_logg"], "lo": r["r2_logg_lo"], "hi": r["r2_logg_hi"]}, "snr": {"r2": r["r2_snr"]}}
    else:
        F, _ = _features("S3b", sample, params)
        sc = _fit_targets(*F, sample, None, params)[0]
    add("aggregate statistics only (S3b)", "the ten summary statistics of σ", "low log g, high SNR", 10, sc)

    for s in params.seeds:
        g = s0_scores[f"shuffle_{s}"]
        add(f"label shuffle (seed {s})", "raw σ against randomly permuted log g", "≈ 0 (guard)", p,
            {"log_g": g}, r2_snr=False)
    return Audit(sample.label, table, pd.DataFrame(controls), importance, sample.wave, sample.sizes(), notes)


def _mask_control(sample: AuditSample, params: Params):
    what, expect = "the pixel mask alone (varying pixels)", "low"
    if sample.train.mask is None:
        nan = {"r2": np.nan, "lo": np.nan, "hi": np.nan}
        return "mask only", "the dataset has no mask", expect, 0, {"log_g": nan, "snr": nan}
    M = [getattr(sample, s).mask.astype(np.float64) for s in ("train", "val", "test")]
    keep = np.ptp(M[0], axis=0) > 0
    if not keep.any():
        # the mask is the same for every spectrum: the only honest prediction is the training mean
        sc = {}
        for t in ("log_g", "snr"):
            yte = sample.targets["test"][t]
            pred = np.full_like(yte, sample.targets["train"][t].mean())
            lo, hi = bootstrap_interval(yte, pred, n_boot=params.runner.n_bootstrap, seed=params.seeds[0])
            sc[t] = {"r2": r2(yte, pred), "lo": lo, "hi": hi}
        return "mask only", "the mask is identical for every spectrum: prediction = training mean", expect, 0, sc
    M = [m[:, keep] for m in M]
    return "mask only", what, expect, int(keep.sum()), _fit_targets(*M, sample, None, params)[0]


# ------------------------------------------------------------------------------------------
# Choice and verdicts
# ------------------------------------------------------------------------------------------


def choose_representation(table: pd.DataFrame, chosen: str = "auto", by: str = "interval") -> tuple[str, str]:
    """The representation ``quality_features`` will use, and why.

    ``chosen='auto'``: among the passing rows, the best SNR R² (ties: fewer features). With
    ``by='interval'`` a row passes only when its whole bootstrap interval does (log g upper bound
    below the limit, SNR lower bound above the minimum), so that a borderline representation is
    not chosen on a lucky draw; ``by='point'`` uses the point values. With no passing row, the one
    with the lowest log g R² is named (and Gate-1 then fails with its numbers). An explicit name
    is used as given (it must be in the table).
    """
    if chosen != "auto":
        if chosen not in set(table["representation"]):
            raise ValueError(f"quality.chosen={chosen!r} is not among the audited representations "
                             f"{table['representation'].tolist()}")
        return chosen, "set in the parameters (quality.chosen)"
    if by not in ("interval", "point"):
        raise ValueError(f"by must be 'interval' or 'point', got {by!r}")
    col = "verdict_interval" if by == "interval" else "verdict"
    ok = table[table[col] == "PASS"]
    if len(ok):
        best = ok.sort_values(["r2_snr", "n_features"], ascending=[False, True]).iloc[0]
        how = "whose whole 95 % interval passes" if by == "interval" else "passing on point values"
        return str(best["representation"]), f"best SNR R² among the representations {how}"
    best = table.sort_values(["r2_logg", "n_features"]).iloc[0]
    return str(best["representation"]), "no representation passes; the one leaking least is named"


def gate1_verdicts(table: pd.DataFrame, chosen: str, params: Params, label: str = "clean") -> list[dict]:
    """The two Gate-1 verdict records (log g R² < max, SNR R² > min) for ``chosen``."""
    from snrmoe_lib.evaluation.records import verdict

    th = params.thresholds
    r = table.set_index("representation").loc[chosen]
    suffix = "" if label == "clean" else f" ({label} errors)"
    return [
        verdict("Gate-1" + suffix, "Q2", f"r2_logg[{chosen}]", r["r2_logg"], "<", th.gate1_logg_r2_max,
                (r["r2_logg_lo"], r["r2_logg_hi"])),
        verdict("Gate-1" + suffix, "Q2", f"r2_snr[{chosen}]", r["r2_snr"], ">", th.gate1_snr_r2_min,
                (r["r2_snr_lo"], r["r2_snr_hi"])),
    ]


# ------------------------------------------------------------------------------------------
# Importance and decomposition
# ------------------------------------------------------------------------------------------


def importance_table(wave: np.ndarray, importance: np.ndarray, n_top: int = 10, merge_A: float = 5.0,
                     max_distance: float = 15.0) -> pd.DataFrame:
    """The strongest importance peaks with the nearest named feature.

    Pixels are ranked by importance; a pixel within ``merge_A`` Å of an already listed peak is
    counted into that peak (so one line is not listed five times).

    Returns
    -------
    DataFrame with wavelength (Å), importance (peak value), share (fraction of the total
    importance within ±merge_A of the peak), feature, kind, distance_A.
    """
    wave = np.asarray(wave, float)
    imp = np.asarray(importance, float)
    if wave.shape != imp.shape:
        raise ValueError(f"wave {wave.shape} and importance {imp.shape} differ in shape")
    total = imp.sum()
    peaks: list[float] = []
    for i in np.argsort(imp)[::-1]:
        if len(peaks) >= n_top:
            break
        if not peaks or np.min(np.abs(np.asarray(peaks) - wave[i])) > merge_A:
            peaks.append(float(wave[i]))
    rows = []
    for w in peaks:
        near = np.abs(wave - w) <= merge_A
        name, kind, d = nearest_feature(w, max_distance)
        rows.append({"wavelength": w, "importance": float(imp[np.argmin(np.abs(wave - w))]),
                     "share": float(imp[near].sum() / total) if total > 0 else np.nan,
                     "feature": name, "kind": kind, "distance_A": d})
    return pd.DataFrame(rows)


@dataclass
class Decomposition:
    """e ≈ s·e0 + δ on a block of spectra (see :func:`decompose_errors`)."""

    e0: np.ndarray                 # template (n_pix,)
    scale: np.ndarray              # s per spectrum
    delta_share: np.ndarray        # per-pixel share of Σδ² (sums to 1): where δ concentrates
    explained_total: float         # 1 − Σ‖δ‖² / Σ‖e‖²
    explained_variance: float      # 1 − Σ‖δ‖² / Σ‖e − ē‖² (variation across spectra explained by s·e0)
    cosine_median: float           # median cosine similarity between e and e0
    top_fraction: float            # share of Σδ² in the top ``n_top`` pixels
    n_top: int
    peaks: pd.DataFrame            # where δ concentrates, features named


def decompose_errors(sample: AuditSample, n_top: int = 40, n_peaks: int = 10) -> Decomposition:
    """Fit e0 on the training σ (S2's template) and decompose the test σ as s·e0 + δ."""
    comp = make_compressor("S2").fit(sample.train)
    sig = sample.test.sigma.astype(np.float64)
    s, delta = comp.decompose(sample.test)
    e0 = comp.e0_
    tot = np.sum(sig ** 2)
    var = np.sum((sig - sig.mean(axis=0)) ** 2)
    d2 = np.sum(delta ** 2)
    share = np.sum(delta ** 2, axis=0) / d2 if d2 > 0 else np.zeros(len(e0))
    top = float(np.sort(share)[::-1][:n_top].sum())
    cos = sig @ e0 / (np.linalg.norm(sig, axis=1) * np.linalg.norm(e0))
    return Decomposition(e0, s, share, float(1 - d2 / tot), float(1 - d2 / var) if var > 0 else np.nan,
                         float(np.median(cos)), top, n_top,
                         importance_table(sample.wave, share, n_top=n_peaks, merge_A=5.0))


# ------------------------------------------------------------------------------------------
# The simulator's 'estimated' error mode
# ------------------------------------------------------------------------------------------


def estimated_path(params: Params) -> Path:
    """Where the ``estimated``-error mock lives: ``<stem>_estimated<suffix>`` beside the dataset."""
    p = params.dataset_path
    return p.with_name(f"{p.stem}_estimated{p.suffix or '.h5'}")


def ensure_estimated_dataset(params: Params, progress: bool = False) -> PfsDataset | None:
    """Open (generating when missing or stale) a small mock like the configured one but with
    ``error_mode='estimated'``, sized to the audit sample. ``None`` when the configuration has no mock.
    """
    from snrmoe_lib.data.mock.generate import ensure_mock

    mock = params.data.mock
    if mock is None:
        return None
    n = sum(audit_sizes(params))
    spec = dataclasses.replace(mock, error_mode="estimated", n=n, shard_size=0)
    # a cache the library owns: made with other settings (the file records its spec), it is regenerated
    ensure_mock(spec, estimated_path(params), on_stale="regenerate", progress=progress).close()
    return open_dataset(estimated_path(params), on_bad_rows=params.data.on_bad_rows)


def mock_provenance(ds: PfsDataset, params: Params, rows: Sequence[int] = (0,)) -> str | None:
    """Check that ``ds`` was made by the configured mock (``data.mock``): re-simulate a few rows
    and compare. ``None`` when they agree (or there is no mock to compare with), else a message.

    The estimated-mode audit generates its mock from the configuration; if the clean dataset on
    disk was made with another model or instrument settings, the two tables would compare
    different mocks. (The stored parameter table is re-observed, so a different ``seed`` alone,
    which only changes which stars are drawn, is not a mismatch.)
    """
    mock = params.data.mock
    if mock is None:
        return None
    from snrmoe_lib.data.mock import get_model

    rows = np.asarray(rows, dtype=np.int64)
    ch = ds.read(rows)
    obs = get_model(mock.model).observe(ch.params.reset_index(drop=True), rows, mock.seed, mock.error_mode)
    if np.allclose(obs.error, ch.error, rtol=1e-4, atol=0) and np.allclose(obs.flux, ch.flux, rtol=1e-4, atol=0):
        return None
    return (f"{ds.path} was not made by the configured mock (model {mock.model!r}, seed {mock.seed}, "
            f"error_mode {mock.error_mode!r}): re-simulated rows {rows.tolist()} differ. The estimated-mode "
            "mock follows the configuration, so the clean and estimated tables come from different "
            "mocks; regenerate the dataset to compare like with like")


def audit_estimated(params: Params, clean: PfsDataset | None = None,
                    progress: bool = False) -> tuple[Audit | None, AuditSample | None]:
    """Run the same audit on the ``estimated``-error mock; ``(None, None)`` when it is switched off
    (``quality.estimated_mode: false``) or the configuration has no ``data.mock`` (real data).

    With ``clean`` (the configured dataset) given, :func:`mock_provenance` checks first that it
    was made by the same mock; a mismatch warns and is kept in the audit's notes.
    """
    if not params.quality.estimated_mode:
        return None, None
    ds = ensure_estimated_dataset(params, progress=progress)
    if ds is None:
        return None, None
    mismatch = mock_provenance(clean, params) if clean is not None else None
    if mismatch:
        warnings.warn(mismatch, AuditWarning, stacklevel=2)
    with ds:
        sample = load_audit_sample(ds, params, label="estimated", use_configured_split=False)
    audit = run_audit(sample, params)
    if mismatch:
        audit.notes.append(mismatch)
    return audit, sample


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def _iv(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{v:.3f}"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The results table as shown in the report: representation, n_features, R² log g, R² SNR
    (each with its 95 % bootstrap interval), the chosen α and the verdicts (point values, and
    interval ends: log g upper bound and SNR lower bound)."""
    return pd.DataFrame({
        "representation": table["representation"],
        "n_features": table["n_features"],
        "R² log g [95 %]": [_iv(*r) for r in table[["r2_logg", "r2_logg_lo", "r2_logg_hi"]].to_numpy()],
        "R² SNR [95 %]": [_iv(*r) for r in table[["r2_snr", "r2_snr_lo", "r2_snr_hi"]].to_numpy()],
        "R² log g (OLS)": table["r2_logg_ols"].round(3),
        "α log g": table["alpha_logg"],
        "α SNR": table["alpha_snr"],
        "verdict": table["verdict"],
        "interval verdict": table["verdict_interval"],
    })


def guard_r2(audit: Audit) -> float:
    """The label-shuffle guard: the largest |R²| over the shuffle seeds."""
    c = audit.controls
    return float(c.loc[c["control"].str.startswith("label shuffle"), "r2_logg"].abs().max())


def results_payload(audits: dict[str, Audit], chosen: str, reason: str,
                    decompositions: dict[str, Decomposition], importance_peaks: pd.DataFrame) -> tuple[dict, dict]:
    """``(metrics, extra)`` for :func:`snrmoe_lib.results.write_results`.

    Metric names: ``<mode>/r2_logg[<rep>]``, ``<mode>/r2_snr[<rep>]``, ``<mode>/guard_max_abs_r2``,
    ``<mode>/control/<control>``, ``<mode>/decomposition/...``; the chosen representation, the
    tables and the importance peaks go to ``extra``.
    """
    from snrmoe_lib.evaluation.records import metric

    metrics: dict = {}
    extra: dict = {"chosen_representation": chosen, "chosen_reason": reason, "error_modes": list(audits)}
    for mode, a in audits.items():
        for _, r in a.table.iterrows():
            rep = r["representation"]
            metrics[f"{mode}/r2_logg[{rep}]"] = metric(r["r2_logg"], (r["r2_logg_lo"], r["r2_logg_hi"]),
                                                      alpha=r["alpha_logg"], r2_ols=r["r2_logg_ols"])
            metrics[f"{mode}/r2_snr[{rep}]"] = metric(r["r2_snr"], (r["r2_snr_lo"], r["r2_snr_hi"]),
                                                     alpha=r["alpha_snr"])
        for _, r in a.controls.iterrows():
            iv = (r["r2_logg_lo"], r["r2_logg_hi"]) if np.isfinite(r["r2_logg_lo"]) else None
            metrics[f"{mode}/control/{r['control']}"] = metric(r["r2_logg"], iv)
        metrics[f"{mode}/guard_max_abs_r2"] = metric(guard_r2(a))
        d = decompositions.get(mode)
        if d is not None:
            metrics[f"{mode}/decomposition/explained_total"] = metric(d.explained_total)
            metrics[f"{mode}/decomposition/explained_variance"] = metric(d.explained_variance)
            metrics[f"{mode}/decomposition/cosine_median"] = metric(d.cosine_median)
            metrics[f"{mode}/decomposition/top{d.n_top}_share"] = metric(d.top_fraction)
        extra[f"{mode}_table"] = a.table.to_dict(orient="records")
        extra[f"{mode}_controls"] = a.controls.to_dict(orient="records")
        extra[f"{mode}_sizes"] = a.sizes
        extra[f"{mode}_notes"] = a.notes
        if d is not None:
            extra[f"{mode}_delta_peaks"] = d.peaks.to_dict(orient="records")
    extra["importance_peaks"] = importance_peaks.to_dict(orient="records")
    return metrics, extra
