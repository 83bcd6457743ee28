"""Q3 / Gate-3 and Gate-4: the deployable mixture of experts, the regression gate, single-model controls.

Mixing
    :func:`mix` — the soft mixture ``ŷ = Σ_k p_k ŷ_k`` with a fallback to the global model where the
    gate is unsure (``max_k p_k < τ``); :func:`hard_route` — each spectrum to its most probable
    expert. Both validate the probabilities (:func:`snrmoe_lib.gates.check_proba`).

One estimator
    :class:`SoftMoE` composes the compressor (σ → quality features), the gate, the binned experts
    and the global model, and fits / predicts like one scikit-learn regressor on a
    :class:`SpectraInput` (noisy flux and σ). It is the in-memory form, for small data and tests.

Controls (Gate-4): single models without a gate
    :class:`WhitenedFlux` — the noisy flux divided by σ (whitening); :class:`ConditionalFeatures` —
    the flux plus the quality features and their products with a few leading flux components (one
    Ridge that can change its weights with the observing quality). Both are transformers; a Ridge
    on them is the control.

At scale
    :func:`run_deployable` fits everything for one noise seed without materialising N × pixels: the
    experts and the global model come from :func:`snrmoe_lib.experts.fit_oracle_stream` (streamed
    sufficient statistics), and the same sequential pass computes, through its per-chunk hook, the
    compact quality features and the controls' Gram matrices. Gates train on the compact arrays
    (n × quality features, n × K expert predictions) only. :func:`summarize` and friends turn
    several seeds into the Q3 table with bootstrap intervals and ρ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from snrmoe_lib.models.gates import GateError, RegressionGate, check_labels, check_proba, make_gate
from snrmoe_lib.evaluation.metrics import r2, rho
from snrmoe_lib.data.noise import add_noise, effective_sigma
from snrmoe_lib.data.passes import split_pass
from snrmoe_lib.features.quality import QualityInput, make_compressor
from snrmoe_lib.features.flux import bin_pixels
from snrmoe_lib._util.threads import one_blas_thread
from snrmoe_lib._util.rng import rng as _rng

__all__ = [
    "mix",
    "hard_route",
    "SpectraInput",
    "WhitenedFlux",
    "ConditionalFeatures",
    "SoftMoE",
    "DeployRun",
    "run_deployable",
    "resolve_representation",
    "seed_bootstrap",
    "Summary",
    "summarize",
    "per_bin",
    "confusion",
    "gate_accuracy",
    "fallback_rate",
    "leak_check",
    "format_table",
    "DEPLOYED",
    "model_names",
]


# ============================================================================ mixing


def mix(proba, expert_pred, global_pred=None, tau: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Soft mixture Σ_k p_k ŷ_k, falling back to the global model where max_k p_k < τ.

    Parameters
    ----------
    proba : array (n, K)
        Gate probabilities, rows summing to one (checked).
    expert_pred : array (n, K)
        Each expert's prediction for each spectrum.
    global_pred : array (n,), optional
        The global model's predictions (needed when ``tau`` is given).
    tau : float, optional
        Fallback threshold; ``None`` (or 0) mixes every spectrum.

    Returns
    -------
    y : ndarray (n,)
    fell_back : ndarray (n,) of bool
        Where the global model was used.
    """
    P = _expert_block(expert_pred)
    W = check_proba(proba, P.shape[1])
    if len(W) != len(P):
        raise GateError(f"{len(W)} probability rows for {len(P)} spectra")
    y = (W * P).sum(axis=1)
    fell = np.zeros(len(y), dtype=bool)
    if tau is not None and tau > 0:
        if global_pred is None:
            raise GateError("a fallback threshold needs the global model's predictions (global_pred)")
        g = np.asarray(global_pred, dtype=np.float64).ravel()
        if g.shape != y.shape:
            raise GateError(f"global_pred has {len(g)} values for {len(y)} spectra")
        fell = W.max(axis=1) < tau
        y = np.where(fell, g, y)
    return y, fell


def hard_route(proba, expert_pred) -> np.ndarray:
    """Each spectrum predicted by its most probable expert (ties: the lower index)."""
    P = _expert_block(expert_pred)
    W = check_proba(proba, P.shape[1])
    return P[np.arange(len(P)), np.argmax(W, axis=1)]


def _expert_block(expert_pred) -> np.ndarray:
    P = np.asarray(expert_pred, dtype=np.float64)
    if P.ndim != 2:
        raise GateError(f"expert predictions must be (n_spectra, n_experts), got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise GateError("expert predictions hold NaN or infinite values")
    return P


# ============================================================================ inputs and control features


@dataclass
class SpectraInput:
    """Noisy flux and σ = error · noise_level of a block of spectra (the MoE's input).

    Supports ``len`` and row indexing, so it passes through scikit-learn utilities.
    """

    flux: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        self.flux = np.asarray(self.flux)
        self.sigma = np.asarray(self.sigma)
        if self.flux.ndim != 2 or self.flux.shape != self.sigma.shape:
            raise ValueError(f"flux {self.flux.shape} and sigma {self.sigma.shape} must be equal 2-D shapes")

    @classmethod
    def from_chunk(cls, chunk, noise_level: float, seed: int) -> "SpectraInput":
        """Noisy flux (noise keyed by (seed, row)) and σ of a dataset chunk."""
        noisy = add_noise(chunk.flux, chunk.error, noise_level, chunk.rows, seed)
        return cls(noisy, effective_sigma(chunk.error, noise_level))

    def __len__(self) -> int:
        return len(self.flux)

    def __getitem__(self, rows) -> "SpectraInput":
        return SpectraInput(self.flux[rows], self.sigma[rows])

    @property
    def quality(self) -> QualityInput:
        """What a compressor may see: σ only (never the flux)."""
        return QualityInput(self.sigma)


def _spectra(X) -> SpectraInput:
    if isinstance(X, SpectraInput):
        return X
    if isinstance(X, tuple) and len(X) == 2:
        return SpectraInput(*X)
    raise TypeError(f"expected a SpectraInput (noisy flux, sigma) or a (flux, sigma) tuple, got {type(X).__name__}")


def _bin_pixels(X: np.ndarray, b: int) -> np.ndarray:
    return np.asarray(bin_pixels(X, b), dtype=np.float64)


def _mean_std(F: np.ndarray) -> float:
    s = float(np.mean(F.std(axis=0)))
    return s if s > 0 else 1.0


class WhitenedFlux(TransformerMixin, BaseEstimator):
    """Gate-4 control (a): the noisy flux divided by σ, averaged over ``bin_pixels`` pixels.

    One global factor (fitted) brings the features to the typical spread of the plain flux features,
    so the same α grid spans the same range of effective regularisation. Note that σ here is the
    per-pixel error vector itself, as the Hub's control prescribes; it is not a compressed quality.

    Attributes
    ----------
    scale_ : float
    """

    def __init__(self, bin_pixels: int = 1):
        self.bin_pixels = bin_pixels

    def _raw(self, X) -> np.ndarray:
        X = _spectra(X)
        return _bin_pixels(X.flux / X.sigma, int(self.bin_pixels))  # binned (and summed) in float64

    def fit(self, X, y=None) -> "WhitenedFlux":
        X = _spectra(X)
        self.scale_ = _mean_std(_bin_pixels(X.flux, int(self.bin_pixels))) / _mean_std(self._raw(X))
        self.n_features_out_ = X.flux.shape[1] // int(self.bin_pixels)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "scale_")
        return self._raw(X) * self.scale_


class ConditionalFeatures(TransformerMixin, BaseEstimator):
    """Gate-4 control (b): flux features plus quality features and their products with flux components.

    Output columns: the flux averaged over ``bin_pixels`` (exactly the global model's input), the
    standardised quality features q, and the products q_j · z_i with the first ``n_components``
    standardised principal components z of the flux features. A linear model on these can tilt its
    weights in the leading flux directions with the observing quality: one model conditioned on SNR.
    The extra columns are scaled to the flux features' typical spread (one α grid for all).

    Parameters
    ----------
    representation : str or transformer
        The quality compressor (a name for :func:`snrmoe_lib.quality.make_compressor`, or an unfitted
        compressor). It sees σ only.
    n_components : int
    bin_pixels : int

    Attributes
    ----------
    compressor_, q_mean_, q_scale_, components_, z_mean_, z_scale_, scale_
    """

    def __init__(self, representation: Any = "S2", n_components: int = 5, bin_pixels: int = 1):
        self.representation = representation
        self.n_components = n_components
        self.bin_pixels = bin_pixels

    def fit(self, X, y=None) -> "ConditionalFeatures":
        X = _spectra(X)
        comp = self.representation
        self.compressor_ = make_compressor(comp) if isinstance(comp, str) else clone(comp)
        self.compressor_.fit(X.quality)
        q = self.compressor_.transform(X.quality)
        self.q_mean_, self.q_scale_ = q.mean(axis=0), np.where(q.std(axis=0) > 0, q.std(axis=0), 1.0)
        F = _bin_pixels(X.flux, int(self.bin_pixels))
        m = int(self.n_components)
        if m < 0 or m > min(F.shape):
            raise ValueError(f"n_components must be in [0, {min(F.shape)}], got {m}")
        self.z_mean_ = F.mean(axis=0)
        if m:
            from scipy.linalg import eigh

            # only the m leading eigenpairs of the covariance (far cheaper than a full SVD); one BLAS
            # thread, as in ridge.solve_path: multi-threaded LAPACK collapses on shared cores
            Fc = F - self.z_mean_
            with one_blas_thread():
                lam, vec = eigh(Fc.T @ Fc / max(len(F) - 1, 1), subset_by_index=[F.shape[1] - m, F.shape[1] - 1])
            lam, vec = lam[::-1], vec[:, ::-1]
            self.components_ = (vec * np.where(vec.sum(axis=0) < 0, -1.0, 1.0)).T  # deterministic signs
            self.z_scale_ = np.sqrt(np.where(lam > 0, lam, 1.0))
        else:
            self.components_, self.z_scale_ = np.zeros((0, F.shape[1])), np.zeros(0)
        self.scale_ = _mean_std(F)
        self.n_quality_ = q.shape[1]
        return self

    def quality(self, X) -> np.ndarray:
        """Standardised quality features of ``X`` (from σ only)."""
        check_is_fitted(self, "compressor_")
        return self.standardise(self.compressor_.transform(_spectra(X).quality))

    def standardise(self, q_raw: np.ndarray) -> np.ndarray:
        """Standardised quality features from the compressor's output."""
        return (np.asarray(q_raw) - self.q_mean_) / self.q_scale_

    def transform(self, X) -> np.ndarray:
        X = _spectra(X)
        return self.assemble(_bin_pixels(X.flux, int(self.bin_pixels)), self.quality(X))

    def assemble(self, F: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The output columns from the binned flux ``F`` and the standardised quality ``q`` (what
        :meth:`transform` computes; the streamed pass already holds both)."""
        check_is_fitted(self, "compressor_")
        z = (F - self.z_mean_) @ self.components_.T / self.z_scale_
        prods = (q[:, :, None] * z[:, None, :]).reshape(len(F), -1)
        return np.hstack([F, self.scale_ * q, self.scale_ * prods])


# ============================================================================ the in-memory estimator


class SoftMoE(RegressorMixin, BaseEstimator):
    """Compressor + gate + binned experts + global model, fitted and used as one regressor.

    Parameters
    ----------
    compressor : str or transformer
        Quality representation (σ → features); it never sees the flux.
    gate : {'logistic', 'mlp', 'regression'} or estimator
        A classification gate (``fit(F, expert_index)``, ``predict_proba``) or ``'regression'`` for a
        :class:`~snrmoe_lib.gates.RegressionGate` trained on held-out spectra (``X_val``).
    experts : BinnedExperts, optional
        Unfitted binned experts (default: :class:`~snrmoe_lib.experts.BinnedExperts` of
        :class:`~snrmoe_lib.ridge.StreamingRidge` on ``bin_pixels``-averaged flux).
    routing : {'soft', 'hard'}
    tau : float or None
        Fallback threshold on max p_k (soft routing only; None: no fallback).
    n_bins : int
        Original bins (routing labels in ``[0, n_bins)``); small bins are merged by the experts.
    bin_pixels : int
    alphas : sequence of float
        Ridge α candidates of the default experts (chosen on ``X_val`` when given, else GCV).
    gate_params : GateSpec, optional
        Hyper-parameters of named gates.

    Attributes
    ----------
    compressor_, gate_, experts_, plan_
    """

    def __init__(self, compressor: Any = "S2", gate: Any = "logistic", experts=None, routing: str = "soft",
                 tau: float | None = 0.4, n_bins: int = 4, min_count: int = 20, on_small_bin: str = "merge",
                 bin_pixels: int = 1, alphas: Sequence[float] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5),
                 gate_params=None):
        self.compressor = compressor
        self.gate = gate
        self.experts = experts
        self.routing = routing
        self.tau = tau
        self.n_bins = n_bins
        self.min_count = min_count
        self.on_small_bin = on_small_bin
        self.bin_pixels = bin_pixels
        self.alphas = alphas
        self.gate_params = gate_params

    def _flux(self, X: SpectraInput) -> np.ndarray:
        return _bin_pixels(X.flux, int(self.bin_pixels))

    def fit(self, X, y, bins=None, X_val=None, y_val=None) -> "SoftMoE":
        """Fit on spectra ``X`` with targets ``y`` and each spectrum's true SNR bin ``bins``.

        The experts and the classification gate learn from the training spectra; the regression gate
        learns its weights from the frozen experts' predictions on ``X_val`` (required for it).
        """
        from snrmoe_lib.models.experts import BinnedExperts
        from snrmoe_lib.models.ridge import StreamingRidge

        if self.routing not in ("soft", "hard"):
            raise ValueError(f"routing must be 'soft' or 'hard', got {self.routing!r}")
        if bins is None:
            raise ValueError("SoftMoE.fit needs each training spectrum's true SNR bin: fit(X, y, bins=...)")
        X = _spectra(X)
        y = np.asarray(y, dtype=np.float64)
        comp = self.compressor
        self.compressor_ = (make_compressor(comp) if isinstance(comp, str) else clone(comp)).fit(X.quality)
        F = self.compressor_.transform(X.quality)
        base = self.experts if self.experts is not None else BinnedExperts(
            StreamingRidge(alpha=list(self.alphas)), n_bins=self.n_bins, min_count=self.min_count,
            on_small_bin=self.on_small_bin)
        self.experts_ = clone(base).fit(self._flux(X), y, bins=np.asarray(bins))
        self.plan_ = self.experts_.plan_
        K = self.plan_.n_experts
        if isinstance(self.gate, str) and self.gate == "regression":
            if X_val is None or y_val is None:
                raise GateError("the regression gate learns from spectra the experts did not fit: pass X_val, y_val")
            Xv = _spectra(X_val)
            gp = self.gate_params
            self.gate_ = RegressionGate(**({} if gp is None else dict(
                hidden=gp.mlp_hidden, epochs=gp.regression_epochs, learning_rate=gp.learning_rate,
                weight_decay=gp.weight_decay, seed=gp.seed)))
            self.gate_.fit(self.compressor_.transform(Xv.quality), y_val,
                           expert_pred=self.experts_.predict_all(self._flux(Xv)))
        else:
            gate = make_gate(self.gate, self.gate_params, n_classes=K) if isinstance(self.gate, str) else clone(self.gate)
            self.gate_ = gate.fit(F, check_labels(self.plan_.route(np.asarray(bins)), K)[0])
        self.n_experts_ = K
        return self

    def predict_proba(self, X) -> np.ndarray:
        """The gate's probabilities (or mixing weights) over the experts: (n, K)."""
        check_is_fitted(self, "gate_")
        return check_proba(self.gate_.predict_proba(self.compressor_.transform(_spectra(X).quality)), self.n_experts_)

    def predict_details(self, X) -> dict:
        """Prediction plus what produced it: ``y``, ``proba``, ``experts`` (n, K), ``global``, ``fell_back``."""
        X = _spectra(X)
        W = self.predict_proba(X)
        Fx = self._flux(X)
        P = self.experts_.predict_all(Fx)
        g = self.experts_.predict_global(Fx)
        if self.routing == "hard":
            y, fell = hard_route(W, P), np.zeros(len(P), bool)
        else:
            tau = None if isinstance(self.gate_, RegressionGate) else self.tau
            y, fell = mix(W, P, g, tau)
        return {"y": y, "proba": W, "experts": P, "global": g, "fell_back": fell}

    def predict(self, X) -> np.ndarray:
        return self.predict_details(X)["y"]


# ============================================================================ streaming, one seed

#: name of the deployed model in the tables (soft mixture with fallback, gate kind from the parameters)
DEPLOYED = "deployed"


def model_names(kind: str) -> dict[str, str]:
    """Row names of the Q3 table → a readable description."""
    return {
        "global": "global Ridge (baseline)",
        "oracle": "oracle: expert of the true SNR bin",
        DEPLOYED: f"deployed: soft {kind} gate + fallback",
        "logistic_soft_fallback": "logistic gate, soft, fallback",
        "logistic_soft": "logistic gate, soft, no fallback",
        "logistic_hard": "logistic gate, hard",
        "mlp_soft_fallback": "MLP gate, soft, fallback",
        "mlp_soft": "MLP gate, soft, no fallback",
        "mlp_hard": "MLP gate, hard",
        "regression_gate": "regression gate (trained on log g MSE)",
        "whitening": "control: Ridge on flux / σ",
        "conditional": "control: Ridge on flux + q + q × flux PCs",
    }


@dataclass
class DeployRun:
    """One noise seed: every model's test predictions and the gate's inputs and outputs.

    Attributes
    ----------
    seed : int
    y : ndarray (n_test,)
        True log g of the test spectra (rows sorted).
    rows : ndarray (n_test,)
    snr_bin : ndarray (n_test,)
        True SNR bin (original bins).
    expert : ndarray (n_test,)
        The expert serving the true bin (after merges).
    pred : dict name → ndarray (n_test,)
    proba : dict gate → ndarray (n_test, K)
    fell_back : dict name → bool ndarray
    features : dict split → ndarray (n, k)
        Quality features (the gate's input) of train, val and test.
    targets : dict split → ndarray
        log g of train, val and test (for the leak check).
    plan : BinPlan
    info : dict
        α of the controls, representation, consistency checks.
    """

    seed: int
    y: np.ndarray
    rows: np.ndarray
    snr_bin: np.ndarray
    expert: np.ndarray
    pred: dict
    proba: dict
    fell_back: dict
    features: dict
    targets: dict
    plan: Any
    info: dict = field(default_factory=dict)


def resolve_representation(params, results_root=None) -> tuple[str, str]:
    """The gate's input representation and where it came from.

    Q2's choice (its results JSON under ``results_root`` for this configuration; the notebook
    passes its own output folder, where the runner writes every notebook of a configuration) when
    ``gate.use_q2_choice`` and it exists; otherwise ``gate.representation``, with the reason.
    """
    from snrmoe_lib.features.quality import chosen_representation

    fallback = params.gate.representation
    if not params.gate.use_q2_choice:
        return fallback, f"gate.representation = {fallback} (gate.use_q2_choice is false)"
    if results_root is None:
        return fallback, f"gate.representation = {fallback} (no results folder given to look for Q2's choice)"
    try:
        rep = chosen_representation(results_root, params.name)
    except FileNotFoundError:
        return fallback, (f"FALLBACK gate.representation = {fallback}: no Q2 results for config "
                          f"{params.name!r} under {results_root} (run notebooks/q2_error_leakage first)")
    return rep, f"{rep}, chosen by the Q2 notebook (results under {results_root})"


def _subsample(n: int, most: int, seed: int) -> np.ndarray:
    """All of ``range(n)`` when ``n <= most``, else a seeded sorted subsample of ``most`` of them."""
    if n <= most:
        return np.arange(n)
    return np.sort(_rng("gate.fit_subsample", int(seed)).choice(n, int(most), replace=False))


def _fit_rows(split, n: int, seed: int) -> np.ndarray:
    rng = _rng("gate.template_subsample", int(seed))
    n = min(int(n), len(split.train))
    return np.sort(rng.choice(split.train, n, replace=False))


def run_deployable(ds, split, params, seed: int, representation: str, noise_level: float | None = None,
                   chunk_size: int | None = None, progress: bool | str = False) -> DeployRun:
    """Fit and evaluate the deployable mixtures, the regression gate and the controls for one seed.

    Streaming: no array of N × pixels is formed. One sequential pass over the data
    (:func:`~snrmoe_lib.experts.fit_oracle_stream`) fills the experts' Grams and, through its
    per-chunk hook, the quality features and the two controls' Grams; the test spectra's features
    (flux, whitened flux, conditional) are kept as float32 until the models are solved, about
    ``n_test × 3 × D × 4`` bytes.

    Parameters
    ----------
    ds : PfsDataset
    split : Split
    params : Params
    seed : int
        Noise seed (noise keyed by (seed, row): every model sees the same noisy spectra).
    representation : str
        The quality representation of the gate (see :func:`resolve_representation`).
    progress : bool or str
        A progress bar over the pass.
    """
    from snrmoe_lib.models.experts import SNRRouter, fit_oracle_stream
    from snrmoe_lib.models.ridge import GramStats, StreamingRidge
    from snrmoe_lib.features.flux import FluxFeatures

    p = params
    nl = p.noise.noise_level if noise_level is None else float(noise_level)
    cs = p.data.chunk_size if chunk_size is None else int(chunk_size)
    sb, g = p.snr_bins, p.gate
    router = SNRRouter(sb.edges, sb.labels, sb.definition, nl)
    feats = FluxFeatures(p.ridge.bin_pixels)

    # templates of the compressor and the flux PCA of the conditional control: a seeded subsample
    sub = SpectraInput.from_chunk(ds.read(_fit_rows(split, g.fit_n, g.seed), with_mask=False), nl, seed)
    cond = ConditionalFeatures(representation, g.n_flux_components, p.ridge.bin_pixels).fit(sub)
    white = WhitenedFlux(p.ridge.bin_pixels).fit(sub)
    del sub

    D = feats.n_features(ds.n_pix)
    n_c = D + cond.n_quality_ * (1 + int(g.n_flux_components))
    stats = {"train": [GramStats(D), GramStats(n_c)], "val": [GramStats(D), GramStats(n_c)]}
    seen = {r: {"row": [], "q": []} for r in ("train", "val", "test")}
    test_controls: list = [[], []]

    def on_chunk(role, nc):
        # the controls and the gate features from the experts' own pass: every spectrum is read,
        # made noisy and binned once for every model of Q3
        sigma = nc.error if nl == 1 else effective_sigma(nc.error, nl)  # no copy at the usual level
        X = SpectraInput(nc.noisy, sigma)
        q = cond.compressor_.transform(X.quality)
        seen[role]["row"].append(nc.rows)
        seen[role]["q"].append(q)
        # the conditional features reuse the pass's binned flux (nc.X) and this chunk's quality
        Z = (white.transform(X), cond.assemble(np.asarray(nc.X, dtype=np.float64), cond.standardise(q)))
        if role == "test":
            for kept, z in zip(test_controls, Z):
                kept.append(z.astype(np.float32))
        else:
            for st, z in zip(stats[role], Z):
                st.update(z, nc.y)

    run = fit_oracle_stream(ds, split, {"snr": router}, noise_level=nl, seed=seed, alphas=p.ridge.alphas,
                            features=feats, min_count=sb.min_count, on_small_bin=sb.on_small_bin,
                            target=p.ridge.target, chunk_size=cs, solver=p.ridge.solver, on_chunk=on_chunk,
                            predict_val=True, progress=progress)
    fam = run.families["snr"]
    plan, cols = fam.plan, fam.columns
    gi = run.models.index("global")
    has_val = stats["val"][0].count_[0] >= 2
    controls = [StreamingRidge.from_stats(s, alpha=list(p.ridge.alphas), val_stats=v if has_val else None,
                                          solver=p.ridge.solver) for s, v in zip(stats["train"], stats["val"])]
    stats.clear()  # the Grams are solved: free them before the predictions

    def by_role(role, info):
        rows = np.concatenate(seen[role]["row"])
        at = np.searchsorted(rows, info["row"].to_numpy())  # both in file order; this only checks it
        if not np.array_equal(rows[at], info["row"].to_numpy()):
            raise RuntimeError(f"{role}: the pass handed out different rows to the experts and the gate")
        return {"row": rows[at], "q": np.concatenate(seen[role]["q"])[at], "bin": info["snr_bin"].to_numpy(),
                "y": info["y"].to_numpy()}

    tr = by_role("train", run.train_info)
    te = by_role("test", run.test_info) | {"pred": run.test_pred}
    ctrl = np.column_stack([np.concatenate([m.predict(z) for z in Z]) for m, Z in zip(controls, test_controls)])
    te["ctrl"] = ctrl[np.searchsorted(np.concatenate(seen["test"]["row"]), te["row"])]
    test_controls.clear()
    va = by_role("val", run.val_info) | {"pred": run.val_pred} if run.val_pred is not None else None

    K = plan.n_experts
    e_tr, e_te = plan.route(tr["bin"]), plan.route(te["bin"])
    P_te, glob_te = te["pred"][:, cols], te["pred"][:, gi]
    pred = {"global": glob_te, "oracle": P_te[np.arange(len(P_te)), e_te],
            "whitening": te["ctrl"][:, 0], "conditional": te["ctrl"][:, 1]}
    proba, fell = {}, {}
    gate_rows = _subsample(len(tr["q"]), g.train_n, g.seed)
    for kind in ("logistic", "mlp"):
        gate = make_gate(kind, g, n_classes=K).fit(tr["q"][gate_rows], check_labels(e_tr[gate_rows], K)[0])
        W = gate.predict_proba(te["q"])
        proba[kind] = W
        pred[f"{kind}_soft_fallback"], fell[f"{kind}_soft_fallback"] = mix(W, P_te, glob_te, g.tau)
        pred[f"{kind}_soft"], _ = mix(W, P_te)
        pred[f"{kind}_hard"] = hard_route(W, P_te)
    pred[DEPLOYED] = pred[f"{g.kind}_soft_fallback"]
    fell[DEPLOYED] = fell[f"{g.kind}_soft_fallback"]

    # regression gate: learns on validation spectra, which the experts did not fit
    rg_cols = cols + ([gi] if g.regression_include_global else [])
    reg_src = va if has_val else _train_sample(ds, split, run, tr, g, nl, seed, cs)
    rgate = RegressionGate(hidden=g.mlp_hidden, epochs=g.regression_epochs, learning_rate=g.learning_rate,
                           weight_decay=g.weight_decay, seed=g.seed)
    reg_rows = _subsample(len(reg_src["q"]), g.train_n, g.seed + 1)
    rgate.fit(reg_src["q"][reg_rows], reg_src["y"][reg_rows], expert_pred=reg_src["pred"][reg_rows][:, rg_cols])
    pred["regression_gate"] = rgate.predict(te["q"], expert_pred=te["pred"][:, rg_cols])
    proba["regression"] = rgate.predict_proba(te["q"])

    info = {"representation": representation, "n_quality_features": int(cond.n_quality_),
            "expert_labels": plan.expert_labels, "bin_labels": list(router.labels),
            "alpha_whitening": controls[0].alpha_, "alpha_conditional": controls[1].alpha_,
            "alpha_at_edge_controls": [bool(c.alpha_ in (min(p.ridge.alphas), max(p.ridge.alphas))) for c in controls],
            "alpha_experts": dict(zip(run.models.names, run.models.alpha.tolist())),
            "regression_gate_trained_on": "val" if has_val else "a train subsample (no validation split: optimistic)",
            "regression_gate_components": [run.models.names[c] for c in rg_cols],
            "gate_train_spectra": int(len(gate_rows)), "regression_gate_train_spectra": int(len(reg_rows))}
    feats_out = {"train": tr["q"], "test": te["q"]} | ({"val": va["q"]} if va is not None else {})
    targets = {"train": tr["y"], "test": te["y"]} | ({"val": va["y"]} if va is not None else {})
    return DeployRun(int(seed), te["y"], te["row"], te["bin"], e_te, pred, proba, fell, feats_out, targets, plan, info)


def _train_sample(ds, split, run, tr: dict, g, noise_level: float, seed: int, chunk_size: int) -> dict:
    """Gate features, targets and expert predictions of a seeded training subsample (no validation split)."""
    rows = _fit_rows(split, max(g.fit_n, 2), g.seed + 1)
    pred = []
    for _, nc in split_pass(ds, {"train": rows}, noise_level=noise_level, seed=seed, features=run.features,
                            target=None, chunk_size=chunk_size, workers=0):
        pred.append(run.models.predict(np.asarray(nc.X, dtype=np.float32)))
    at = np.searchsorted(tr["row"], rows)
    return {"q": tr["q"][at], "y": tr["y"][at], "pred": np.concatenate(pred)}


# ============================================================================ over seeds


def seed_bootstrap(y, preds: Sequence[np.ndarray], n_boot: int = 200, seed: int = 0, level: float = 0.95,
                   stat=r2) -> tuple[float, tuple[float, float], np.ndarray]:
    """Seed-averaged statistic with a bootstrap interval over test spectra.

    The same resampled spectra are used for every seed (the noise seeds share the test set), so the
    interval reflects the finite test set; the spread between seeds is reported separately.

    Returns
    -------
    value : float
        mean over seeds of ``stat(y, pred_s)``.
    interval : (lo, hi)
    draws : ndarray (n_boot,)
        The bootstrap draws (for paired comparisons use the same ``seed``).
    """
    y = np.asarray(y, dtype=np.float64)
    preds = [np.asarray(q, dtype=np.float64) for q in preds]
    value = float(np.mean([stat(y, q) for q in preds]))
    rng = _rng("bootstrap.stars", seed)
    n = len(y)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, n, n)
        draws[b] = np.mean([stat(y[i], q[i]) for q in preds])
    a = (1 - level) / 2
    if n_boot == 0:
        return value, (float("nan"), float("nan")), draws
    return value, (float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))), draws


def _check_runs(runs: Sequence[DeployRun]) -> None:
    if not runs:
        raise ValueError("no runs to summarise")
    for r in runs[1:]:
        if not np.array_equal(r.rows, runs[0].rows):
            raise ValueError("runs of different seeds must share the test spectra")


@dataclass
class Summary:
    """The Q3 table over seeds plus the bootstrap draws behind its intervals.

    ``table`` has one row per model: R² (seed mean), its interval, the seed spread, ΔR² against the
    global model (paired interval), ρ and its interval, and the fallback rate where one applies.
    """

    table: pd.DataFrame
    draws: dict
    oracle_gap: float
    oracle_gap_interval: tuple
    level: float = 0.95

    def difference(self, a: str, b: str) -> tuple[float, tuple[float, float]]:
        """R²(a) − R²(b) with a paired interval from the shared bootstrap draws."""
        d = self.draws[a] - self.draws[b]
        q = (1 - self.level) / 2
        return (float(self.table.loc[a, "r2"] - self.table.loc[b, "r2"]),
                (float(np.nanquantile(d, q)), float(np.nanquantile(d, 1 - q))))


def summarize(runs: Sequence[DeployRun], n_boot: int = 200, seed: int = 0, level: float = 0.95) -> Summary:
    """The Q3 table: one row per model with R² (seed mean, bootstrap interval, seed std), ΔR² and ρ.

    Intervals resample test *stars* (the same resampled indices for every seed and every model, so
    differences stay paired). ρ = (R² − R²_global) / (R²_oracle − R²_global) for every model, with an
    interval from the same draws; NaN (undefined) when the oracle gap's interval reaches zero
    (``min_gap`` = the gap's distance to its lower bound, :func:`snrmoe_lib.metrics.rho`).
    """
    from snrmoe_lib.evaluation.metrics import bootstrap_indices, r2_resampled

    _check_runs(runs)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2 for intervals, got {n_boot}")
    y = runs[0].y
    canon = list(model_names("logistic"))
    names = sorted(runs[0].pred, key=lambda m: canon.index(m) if m in canon else len(canon))
    idx = bootstrap_indices(len(y), n_boot, seed)
    q = (1 - level) / 2
    iv = lambda v: (float(np.nanquantile(v, q)), float(np.nanquantile(v, 1 - q)))  # noqa: E731
    per_seed = {nm: np.array([r2(y, r.pred[nm]) for r in runs]) for nm in names}
    vals = {nm: float(per_seed[nm].mean()) for nm in names}
    draws = {nm: np.mean([r2_resampled(y, r.pred[nm], idx) for r in runs], axis=0) for nm in names}
    gap_draws = draws["oracle"] - draws["global"]
    gap = vals["oracle"] - vals["global"]
    gap_iv = iv(gap_draws)
    min_gap = gap - gap_iv[0]
    rows = []
    for nm in names:
        d = draws[nm] - draws["global"]
        rho_v = rho(vals[nm], vals["global"], vals["oracle"], min_gap)
        with np.errstate(divide="ignore", invalid="ignore"):
            rho_iv = iv(d / gap_draws) if np.isfinite(rho_v) else (np.nan, np.nan)
        fb = [r.fell_back[nm].mean() for r in runs] if nm in runs[0].fell_back else [np.nan]
        rows.append({"model": nm, "r2": vals[nm], "r2_lo": iv(draws[nm])[0], "r2_hi": iv(draws[nm])[1],
                     "r2_seed_std": float(np.std(per_seed[nm], ddof=1)) if len(runs) > 1 else 0.0,
                     "delta_r2": vals[nm] - vals["global"], "delta_lo": iv(d)[0], "delta_hi": iv(d)[1],
                     "rho": rho_v, "rho_lo": rho_iv[0], "rho_hi": rho_iv[1], "fallback_rate": float(np.mean(fb))})
    return Summary(pd.DataFrame(rows).set_index("model"), draws, gap, gap_iv, level)


def per_bin(runs: Sequence[DeployRun], models: Sequence[str], labels: Sequence[str], n_boot: int = 200,
            seed: int = 0) -> pd.DataFrame:
    """Seed-mean R² per true SNR bin and model, with intervals and ΔR² against the global model."""
    from snrmoe_lib.evaluation.metrics import per_bin_seed_table

    _check_runs(runs)
    preds = {nm: np.stack([r.pred[nm] for r in runs]) for nm in models}
    base = "global" if "global" in preds else None
    return per_bin_seed_table(runs[0].y, preds, runs[0].snr_bin, labels, baseline=base, n_boot=n_boot, seed=seed)


def confusion(runs: Sequence[DeployRun], gate: str) -> pd.DataFrame:
    """Confusion matrix of the gate's argmax (columns) against the true expert (rows), summed over seeds."""
    _check_runs(runs)
    labels = runs[0].plan.expert_labels
    K = len(labels)
    cm = np.zeros((K, K), dtype=np.int64)
    for r in runs:
        np.add.at(cm, (r.expert, np.argmax(r.proba[gate], axis=1)), 1)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="gate"))


def gate_accuracy(runs: Sequence[DeployRun], gate: str, n_boot: int = 200, seed: int = 0) -> tuple[float, tuple]:
    """Fraction of test spectra whose most probable expert is the true one (seed mean, bootstrap interval)."""
    hits = [np.argmax(r.proba[gate], axis=1) == r.expert for r in runs]
    acc = lambda yy, hh: float(np.mean(hh))  # noqa: E731 - a statistic for seed_bootstrap
    v, iv, _ = seed_bootstrap(np.zeros(len(hits[0])), [h.astype(float) for h in hits], n_boot, seed, stat=acc)
    return v, iv


def fallback_rate(runs: Sequence[DeployRun], name: str = DEPLOYED) -> float:
    """Fraction of test spectra sent to the global model (mean over seeds)."""
    return float(np.mean([r.fell_back[name].mean() for r in runs]))


def leak_check(run: DeployRun, alphas: Sequence[float], n_boot: int = 200, seed: int = 0) -> dict:
    """Do the gate's inputs alone predict log g? The Gate-1 audit model applied to them.

    A Ridge α path (:class:`snrmoe_lib.leakage.RidgePath`, standardised features) fitted on the
    training features, α chosen on validation, R² on test with a bootstrap interval — the same
    method the Q2 audit uses. Also a non-linear probe (gradient-boosted trees), since an MLP gate
    could use non-linear structure a linear audit cannot see.
    """
    import warnings

    from sklearn.ensemble import HistGradientBoostingRegressor

    from snrmoe_lib.analyses.q2 import AuditWarning, RidgePath
    from snrmoe_lib.evaluation.metrics import bootstrap_interval

    F, Y = run.features, run.targets
    val = "val" if "val" in F else "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AuditWarning)
        m = RidgePath(alphas=list(alphas)).fit(F["train"], Y["train"]).select(F[val], Y[val])
    pl = m.predict(F["test"])
    # one OpenMP thread: on shared cores the trees' thread team otherwise spins for minutes
    with one_blas_thread(user_api=None):
        ph = HistGradientBoostingRegressor(max_iter=100, random_state=seed).fit(F["train"], Y["train"]).predict(F["test"])
    return {"r2_linear": r2(Y["test"], pl), "interval_linear": bootstrap_interval(Y["test"], pl, n_boot=n_boot, seed=seed),
            "r2_nonlinear": r2(Y["test"], ph), "interval_nonlinear": bootstrap_interval(Y["test"], ph, n_boot=n_boot, seed=seed),
            "n_features": int(F["train"].shape[1]), "alpha": float(m.alpha_[0])}


def format_table(summary: Summary, kind: str = "logistic", digits: int = 3) -> pd.DataFrame:
    """The Q3 table for display: R² [interval], seed spread, ΔR² [interval], ρ [interval], fallback rate."""
    t = summary.table
    f = lambda v, lo, hi: (f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"  # noqa: E731
                           if np.isfinite(v) else "undefined")
    names = model_names(kind)
    out = pd.DataFrame({
        "model": [names.get(m, m) for m in t.index],
        "R² [95 %]": [f(r.r2, r.r2_lo, r.r2_hi) for r in t.itertuples()],
        "seed std": t["r2_seed_std"].round(digits).to_numpy(),
        "ΔR² vs global [95 %]": [f(r.delta_r2, r.delta_lo, r.delta_hi) if r.Index != "global" else "—"
                                  for r in t.itertuples()],
        "ρ [95 %]": [f(r.rho, r.rho_lo, r.rho_hi) if r.Index not in ("global", "oracle") else "—"
                     for r in t.itertuples()],
        "fallback": [f"{100 * v:.1f} %" if np.isfinite(v) else "—" for v in t["fallback_rate"]],
    }, index=t.index)
    return out
