"""Deployable gates (Q3): SNR-bin probabilities from the observation-quality features.

A gate sees only the compact quality features of :mod:`snrmoe_lib.quality` (made from
σ = error · noise_level, never from the flux or the raw error vector) and says, for each spectrum,
how probable each expert's bin is. Three gates:

* :class:`LogisticGate` — multinomial logistic regression on standardised features (scikit-learn).
* :class:`MLPGate` — a one-hidden-layer network trained with torch (cross-entropy, full batch, Adam).
  The fitted weights are kept as numpy arrays, so prediction (and pickling) does not need torch.
* :class:`RegressionGate` — mixing weights from the same features, trained (torch) to minimise the
  squared error of the *final* log g, Σ_k w_k ŷ_k, with the experts frozen (their predictions are
  inputs, not parameters). It answers "which weights give the best estimate", not "which bin".

Classes are expert indices ``0 … K−1``. Routing into a bin that has no expert, or probabilities that
are negative, non-finite or do not sum to one, raise :class:`GateError` — never a silent NaN.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted
from snrmoe_lib._util.rng import torch_generator

__all__ = ["GateError", "check_proba", "check_labels", "LogisticGate", "MLPGate", "RegressionGate", "make_gate"]

#: Rows of a probability matrix must sum to one within this tolerance.
PROBA_ATOL = 1e-6


class GateError(ValueError):
    """A gate was asked to route into a bin without an expert, or produced unusable probabilities."""


def check_proba(proba, n_experts: int | None = None, atol: float = PROBA_ATOL, name: str = "proba") -> np.ndarray:
    """Validate a probability matrix (n, K): finite, non-negative, rows summing to one.

    Parameters
    ----------
    proba : array (n, K)
    n_experts : int, optional
        The number of experts the probabilities must address (K).
    atol : float
        Tolerance on |Σ_k p_k − 1|.
    name : str
        Named in the error.

    Returns
    -------
    ndarray (n, K), float64

    Raises
    ------
    GateError
        Naming the offending rows or columns.
    """
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2:
        raise GateError(f"{name} must be 2-D (n_spectra, n_experts), got shape {P.shape}")
    if n_experts is not None and P.shape[1] != n_experts:
        raise GateError(f"{name} has {P.shape[1]} columns but there are {n_experts} experts: "
                        f"a bin without an expert cannot receive probability")
    bad = ~np.isfinite(P)
    if bad.any():
        raise GateError(f"{name}: {int(bad.sum())} NaN/inf probabilities (rows {np.flatnonzero(bad.any(1))[:5].tolist()})")
    if np.any(P < -atol):
        raise GateError(f"{name}: negative probabilities in rows {np.flatnonzero((P < -atol).any(1))[:5].tolist()}")
    s = P.sum(axis=1)
    off = np.flatnonzero(np.abs(s - 1.0) > atol)
    if off.size:
        raise GateError(f"{name}: {off.size} row(s) do not sum to one (e.g. row {off[0]} sums to {s[off[0]]:.6g})")
    return P


def check_labels(y, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Integer expert labels and the number of experts; every expert must have training rows."""
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise GateError(f"labels must be a non-empty 1-D array of expert indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise GateError(f"labels must be integer expert indices, got dtype {y.dtype}")
    if y.min() < 0:
        raise GateError(f"labels must be expert indices >= 0, got {int(y.min())}")
    k = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.max() >= k:
        raise GateError(f"label {int(y.max())} names a bin with no expert (there are {k} experts, 0…{k - 1})")
    empty = np.flatnonzero(np.bincount(y, minlength=k) == 0)
    if empty.size:
        raise GateError(f"expert(s) {empty.tolist()} have no training spectra: the gate cannot learn to route there "
                        "(merge small bins first, see experts.plan_bins)")
    return y.astype(np.int64), k


def _features(X, n_features: int | None = None, owner: str = "gate") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise GateError(f"gate features must be 2-D (n_spectra, n_features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise GateError(f"the gate was fitted on {n_features} quality features, got {X.shape[1]} "
                        f"(X has {X.shape[1]} features, but {owner} is expecting {n_features} features as input)")
    if not np.all(np.isfinite(X)):
        raise GateError("gate features hold NaN or infinite values")
    return X


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(scale > 0, scale, 1.0)  # a constant feature stays 0 instead of NaN


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


def _adam(torch, params: list, loss_fn, epochs: int, lr: float, weight_decay: float) -> list[float]:
    """Full-batch Adam (coupled L2 ``weight_decay`` on the weight matrices, not the biases).

    A few lines instead of ``torch.optim.Adam``, whose first use imports the torch compiler stack
    (seconds on a busy machine) for networks this small.
    """
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    losses = []
    for t in range(1, int(epochs) + 1):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        losses.append(loss.item())
        with torch.no_grad():
            for p, g, mi, vi in zip(params, grads, m, v):
                if weight_decay and p.ndim > 1:
                    g = g + weight_decay * p
                mi.mul_(b1).add_(g, alpha=1 - b1)
                vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.sub_(step * mi / (vi.sqrt() + eps))
    return losses


@contextmanager
def _torch_threads(n: int = 1) -> Iterator:
    """Small full-batch networks run fastest on one thread (and do not fight for shared cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield torch
    finally:
        torch.set_num_threads(old)


class _ProbaGate(ClassifierMixin, BaseEstimator):
    """Shared parts of the classification gates: label checks, argmax, validated probabilities."""

    def _check_fit(self, X, y):
        y, k = check_labels(y, self.n_classes)
        X = _features(X)
        if len(X) != len(y):
            raise GateError(f"{len(X)} feature rows for {len(y)} labels")
        self.classes_ = np.arange(k)
        self.n_features_in_ = X.shape[1]
        self.mean_, self.scale_ = _standardizer(X)
        return (X - self.mean_) / self.scale_, y

    def _scaled(self, X) -> np.ndarray:
        check_is_fitted(self, "classes_")
        return (_features(X, self.n_features_in_, type(self).__name__) - self.mean_) / self.scale_

    def predict_proba(self, X) -> np.ndarray:
        """Probability of each expert's bin: (n, K), rows summing to one (checked)."""
        return check_proba(self._proba(self._scaled(X)), len(self.classes_), name=type(self).__name__)

    def predict(self, X) -> np.ndarray:
        """The most probable expert of each spectrum."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class LogisticGate(_ProbaGate):
    """Multinomial logistic regression on standardised quality features.

    Parameters
    ----------
    C : float
        Inverse L2 regularisation strength.
    n_classes : int, optional
        The number of experts K; labels must lie in ``[0, K)`` and every expert must appear.
        Default: ``max(label) + 1``.
    max_iter : int

    Attributes
    ----------
    classes_ : ndarray (K,)
    model_ : sklearn.linear_model.LogisticRegression
    """

    def __init__(self, C: float = 1.0, n_classes: int | None = None, max_iter: int = 1000):
        self.C = C
        self.n_classes = n_classes
        self.max_iter = max_iter

    def fit(self, X, y) -> "LogisticGate":
        from sklearn.linear_model import LogisticRegression

        Xs, y = self._check_fit(X, y)
        if len(self.classes_) == 1:
            self.model_ = None  # one expert: nothing to decide
            return self
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(Xs, y)
        return self

    def _proba(self, Xs: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            return np.ones((len(Xs), 1))
        return self.model_.predict_proba(Xs)


class MLPGate(_ProbaGate):
    """A small neural gate: standardised features → tanh hidden layer → softmax over experts.

    Trained with torch (full-batch Adam on the cross-entropy, seeded initial weights); the fitted
    weights are stored as numpy arrays.

    Parameters
    ----------
    hidden : int
    epochs : int
    learning_rate : float
    weight_decay : float
        L2 penalty on the weights (Adam ``weight_decay``).
    seed : int
        Seed of the initial weights.
    n_classes : int, optional
        See :class:`LogisticGate`.

    Attributes
    ----------
    weights_ : list of ndarray
        ``[W1 (d, h), b1 (h,), W2 (h, K), b2 (K,)]``.
    loss_ : list of float
        Training cross-entropy per epoch.
    """

    def __init__(self, hidden: int = 32, epochs: int = 200, learning_rate: float = 0.01, weight_decay: float = 1e-4,
                 seed: int = 0, n_classes: int | None = None):
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed
        self.n_classes = n_classes

    def fit(self, X, y) -> "MLPGate":
        Xs, y = self._check_fit(X, y)
        if int(self.hidden) <= 0 or int(self.epochs) <= 0:
            raise GateError(f"hidden and epochs must be positive, got {self.hidden}, {self.epochs}")
        with _torch_threads() as torch:
            gen = torch_generator("torch.init", int(self.seed))
            net = _mlp(torch, Xs.shape[1], int(self.hidden), len(self.classes_), gen)
            Xt, yt = torch.as_tensor(Xs, dtype=torch.float32), torch.as_tensor(y)
            self.loss_ = _adam(torch, list(net.parameters()), lambda: torch.nn.functional.cross_entropy(net(Xt), yt),
                               self.epochs, float(self.learning_rate), float(self.weight_decay))
            self.weights_ = _numpy_weights(net)
        return self

    def _proba(self, Xs: np.ndarray) -> np.ndarray:
        return _softmax(_mlp_numpy(self.weights_, Xs))


def _mlp(torch, d: int, h: int, k: int, gen, zero_last: bool = False):
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, k))
    with torch.no_grad():
        # seeded initial weights (independent of torch's global random state)
        for layer, std in ((net[0], 1.0 / np.sqrt(d)), (net[2], 0.0 if zero_last else 1.0 / np.sqrt(h))):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
            layer.bias.zero_()
    return net


def _numpy_weights(net) -> list[np.ndarray]:
    return [net[0].weight.detach().numpy().T.astype(np.float64), net[0].bias.detach().numpy().astype(np.float64),
            net[2].weight.detach().numpy().T.astype(np.float64), net[2].bias.detach().numpy().astype(np.float64)]


def _mlp_numpy(w: list[np.ndarray], Xs: np.ndarray) -> np.ndarray:
    return np.tanh(Xs @ w[0] + w[1]) @ w[2] + w[3]


class RegressionGate(RegressorMixin, BaseEstimator):
    """Mixing weights from the quality features, trained to minimise the final log g squared error.

    ``ŷ = Σ_k w_k(q) ŷ_k`` with ``w = softmax(MLP(q))``; the experts' predictions ``ŷ_k`` are frozen
    inputs. Train it on spectra the experts did not fit (a validation split), otherwise it learns to
    trust the experts' in-sample optimism.

    Parameters
    ----------
    hidden : int
        Hidden units (0: the logits are linear in the features).
    epochs, learning_rate, weight_decay, seed
        As in :class:`MLPGate`.

    Attributes
    ----------
    n_experts_ : int
    weights_ : list of ndarray
    loss_ : list of float
        Training mean squared error per epoch.
    """

    def __init__(self, hidden: int = 32, epochs: int = 300, learning_rate: float = 0.01, weight_decay: float = 1e-4,
                 seed: int = 0):
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed

    def _check(self, X, expert_pred, n_features=None) -> tuple[np.ndarray, np.ndarray]:
        X = _features(X, n_features)
        P = np.asarray(expert_pred, dtype=np.float64)
        if P.ndim != 2 or len(P) != len(X):
            raise GateError(f"expert_pred must be (n_spectra={len(X)}, n_experts), got shape {P.shape}")
        if hasattr(self, "n_experts_") and P.shape[1] != self.n_experts_:
            raise GateError(f"the gate mixes {self.n_experts_} experts, got predictions of {P.shape[1]}")
        if not np.all(np.isfinite(P)):
            raise GateError("expert predictions hold NaN or infinite values")
        return X, P

    def fit(self, X, y, expert_pred=None) -> "RegressionGate":
        """Fit the weights on features ``X`` (n, d), targets ``y`` (n,) and frozen ``expert_pred`` (n, K)."""
        if expert_pred is None:
            raise GateError("RegressionGate.fit needs the frozen experts' predictions: fit(X, y, expert_pred=...)")
        for a in ("n_experts_", "weights_"):
            self.__dict__.pop(a, None)
        X, P = self._check(X, expert_pred)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != len(X) or not np.all(np.isfinite(y)):
            raise GateError(f"y must hold {len(X)} finite targets")
        if int(self.epochs) <= 0 or int(self.hidden) < 0:
            raise GateError(f"epochs must be positive and hidden >= 0, got {self.epochs}, {self.hidden}")
        self.n_experts_ = P.shape[1]
        self.n_features_in_ = X.shape[1]
        self.mean_, self.scale_ = _standardizer(X)
        Xs = (X - self.mean_) / self.scale_
        with _torch_threads() as torch:
            gen = torch_generator("torch.init", int(self.seed))
            h = int(self.hidden)
            # the output layer starts at zero: training starts from the uniform mixture
            net = (_mlp(torch, Xs.shape[1], h, self.n_experts_, gen, zero_last=True) if h
                   else torch.nn.Sequential(torch.nn.Linear(Xs.shape[1], self.n_experts_)))
            if not h:
                with torch.no_grad():
                    net[0].weight.zero_()
                    net[0].bias.zero_()
            Xt = torch.as_tensor(Xs, dtype=torch.float32)
            Pt = torch.as_tensor(P, dtype=torch.float32)
            yt = torch.as_tensor(y, dtype=torch.float32)

            def loss_fn():
                w = torch.softmax(net(Xt), dim=1)
                return torch.mean(((w * Pt).sum(dim=1) - yt) ** 2)

            self.loss_ = _adam(torch, list(net.parameters()), loss_fn, self.epochs, float(self.learning_rate),
                               float(self.weight_decay))
            if h:
                self.weights_ = _numpy_weights(net)
            else:
                self.weights_ = [net[0].weight.detach().numpy().T.astype(np.float64),
                                 net[0].bias.detach().numpy().astype(np.float64)]
        return self

    def predict_proba(self, X) -> np.ndarray:
        """The mixing weights (n, K), rows summing to one (checked)."""
        check_is_fitted(self, "weights_")
        Xs = (_features(X, self.n_features_in_) - self.mean_) / self.scale_
        w = self.weights_
        Z = _mlp_numpy(w, Xs) if len(w) == 4 else Xs @ w[0] + w[1]
        return check_proba(_softmax(Z), self.n_experts_, name="RegressionGate")

    def predict(self, X, expert_pred=None) -> np.ndarray:
        """The mixed estimate Σ_k w_k ŷ_k."""
        check_is_fitted(self, "weights_")
        if expert_pred is None:
            raise GateError("RegressionGate.predict needs the experts' predictions: predict(X, expert_pred=...)")
        X, P = self._check(X, expert_pred, self.n_features_in_)
        return (self.predict_proba(X) * P).sum(axis=1)


def make_gate(kind: str, n_classes: int | None = None, **hyperparameters):
    """A gate by name, with plain keyword hyper-parameters.

    Parameters
    ----------
    kind : {'logistic', 'mlp', 'regression'}
    n_classes : int, optional
        The number of experts of a classification gate (not used by the regression gate, which
        learns it from the experts' predictions).
    **hyperparameters
        Passed to :class:`LogisticGate` (``C``, ``max_iter``), :class:`MLPGate` or
        :class:`RegressionGate` (``hidden``, ``epochs``, ``learning_rate``, ``weight_decay``, ``seed``).
    """
    if kind == "logistic":
        return LogisticGate(n_classes=n_classes, **hyperparameters)
    if kind == "mlp":
        return MLPGate(n_classes=n_classes, **hyperparameters)
    if kind == "regression":
        return RegressionGate(**hyperparameters)
    raise GateError(f"unknown gate kind {kind!r}; use 'logistic', 'mlp' or 'regression'")
