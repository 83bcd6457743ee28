""":class:`NeuralExperts`: a shared trunk with Gaussian heads behind the project's one expert interface.

The methods are those of :class:`snrmoe_lib.models.experts.BinnedExperts` (``fit`` with hard bins
or soft responsibilities, ``predict_all``, ``predict_global``, ``predict``, ``predict_mixture``),
plus the Gaussian σ of every prediction (``return_std=True``, :meth:`NeuralExperts.predict_std`)
and a streamed fit (:meth:`NeuralExperts.fit_stream`).

Input: a plain matrix whose columns are the binned (optionally whitened) noisy flux followed by
``n_quality`` leak-free quality features (:class:`snrmoe_lib.models.neural.stream.SpectrumInputs`
builds it). Every column is standardised with the training statistics; targets are standardised
too, and the variances the heads predict are in those units (floored by ``var_floor``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from snrmoe_lib._util.rng import torch_generator

from snrmoe_lib.models.neural.training import TrainSettings, reblock, resolve_device, torch_session, train_network
from snrmoe_lib.models.routing import SmallBinError

__all__ = ["NeuralExperts", "VARIANTS"]

VARIANTS = ("global", "heads", "film", "residual")
#: Validation rows the streamed fit takes its standardisation statistics from (a fixed count: the
#: statistics, hence the weights, do not depend on the chunk size).
STREAM_STATS_ROWS = 8192
_OPERATIONAL = ("checkpoint_dir", "resume", "progress", "device", "n_threads")


def _scale(a: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    mean, std = a.mean(axis=axis), a.std(axis=axis)
    return mean, np.where(std > 0, std, 1.0)


class NeuralExperts(RegressorMixin, BaseEstimator):
    """A 1-D CNN (or ViT) trunk with a global head, K SNR heads and auxiliary heads, all Gaussian.

    Parameters
    ----------
    variant : {'global', 'heads', 'film', 'residual'}
        'global': one head. 'heads': the trunk with a global head and one head per bin, trained
        together (hard ``bins`` or soft ``responsibilities``). 'film': one head on a trunk
        FiLM-conditioned on the ``n_quality`` trailing columns (the single-model control; needs
        ``n_quality`` ≥ 1). 'residual': a global model is trained first, then frozen; K light
        corrector heads learn the residual per bin, ``ŷ_k = ŷ_global + r_k``.
    n_bins : int
        K, the number of bins (heads of the 'heads' and 'residual' variants).
    arch : {'cnn', 'vit'}
        The trunk.
    width : int
        Features the trunk hands the heads (the ViT's token width).
    channels : tuple of int
        CNN: channels of the stem and of each conv block.
    kernel, stem_stride, pool : int
        CNN: kernel size of the blocks, stride of the stem, pooling after each block.
    vit_patch, vit_depth, vit_heads : int
        ViT: patch size, encoder layers, attention heads.
    n_quality : int
        Trailing columns of ``X`` that are quality features: they condition the trunk by FiLM (in
        every variant) and are not part of the spectrum.
    aux_weight : float
        Loss weight of the auxiliary heads (``aux`` targets in ``fit``; 0 trains none).
    beta : float
        β of the β-NLL (0: Gaussian NLL; 0.5 default; 1: MSE-like weighting).
    var_floor : float
        Smallest variance a head may predict (standardised target units).
    lr, weight_decay : float
        AdamW.
    batch_size, max_epochs, patience : int
        Minibatch rows; epochs at most; epochs without validation improvement before stopping
        (early stopping needs validation rows: ``X_val``/``y_val`` or a streamed source).
    shuffle_block : int
        Rows shuffled together (blocks of the row order; chunking does not move them).
    residual_epochs : int, optional
        Epochs of the residual correctors (default ``max_epochs``).
    corrector_hidden : int
        Hidden units of each residual corrector.
    min_count : float
        Smallest summed weight of a bin's head (else :class:`~snrmoe_lib.models.routing.SmallBinError`).
    random_state : int
        Seeds the initial weights (``neural.init``) and the batch order (``neural.batch_order``).
    device : str
        'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:n]'.
    n_threads : int, optional
        CPU threads of torch during fit and predict (None: torch's setting). Determinism holds for a
        fixed thread count.
    checkpoint_dir : str or Path, optional
        A checkpoint per epoch (``<stage>.pt``: ``trunk``, and ``correctors`` for 'residual').
    resume : bool
        Continue from the checkpoints in ``checkpoint_dir`` (written by a fit with the same
        hyper-parameters and data, else :class:`~snrmoe_lib.models.neural.training.CheckpointError`);
        the result equals that of an uninterrupted fit.
    progress : bool
        A tqdm bar per stage with the losses.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network (on the CPU).
    n_features_in_, n_experts_, n_aux_ : int
    x_mean_, x_scale_, y_mean_, y_scale_, aux_mean_, aux_scale_ : ndarray
    history_ : dict of str to list of dict
        Per stage ('trunk', 'correctors'): each epoch's training and validation loss.
    device_ : str
    """

    def __init__(self, variant: str = "global", n_bins: int = 4, arch: str = "cnn", width: int = 64,
                 channels=(16, 32), kernel: int = 5, stem_stride: int = 8, pool: int = 4, vit_patch: int = 16,
                 vit_depth: int = 2, vit_heads: int = 4, n_quality: int = 0, aux_weight: float = 0.1,
                 beta: float = 0.5, var_floor: float = 1e-3, lr: float = 2e-3, weight_decay: float = 1e-4,
                 batch_size: int = 256, max_epochs: int = 20, patience: int = 3, shuffle_block: int = 8192,
                 residual_epochs: int | None = None, corrector_hidden: int = 16, min_count: float = 1.0,
                 random_state: int = 0, device: str = "auto", n_threads: int | None = None,
                 checkpoint_dir=None, resume: bool = False, progress: bool = False):
        self.variant = variant
        self.n_bins = n_bins
        self.arch = arch
        self.width = width
        self.channels = channels
        self.kernel = kernel
        self.stem_stride = stem_stride
        self.pool = pool
        self.vit_patch = vit_patch
        self.vit_depth = vit_depth
        self.vit_heads = vit_heads
        self.n_quality = n_quality
        self.aux_weight = aux_weight
        self.beta = beta
        self.var_floor = var_floor
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.shuffle_block = shuffle_block
        self.residual_epochs = residual_epochs
        self.corrector_hidden = corrector_hidden
        self.min_count = min_count
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress

    # ------------------------------------------------------------------ checks and layout
    def _check_params(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "film" and int(self.n_quality) < 1:
            raise ValueError("variant='film' conditions on quality features: set n_quality ≥ 1 (the trailing "
                             "quality columns of X)")
        for name in ("n_bins", "width", "batch_size", "max_epochs", "shuffle_block"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if int(self.patience) < 1 or int(self.n_quality) < 0:
            raise ValueError(f"need patience ≥ 1 and n_quality ≥ 0, got {self.patience}, {self.n_quality}")
        if not (self.lr > 0 and self.var_floor > 0 and self.beta >= 0 and self.aux_weight >= 0):
            raise ValueError("need lr > 0, var_floor > 0, beta ≥ 0 and aux_weight ≥ 0")

    @property
    def _binned(self) -> bool:
        return self.variant in ("heads", "residual")

    def _layout(self, n_aux: int) -> dict:
        """Network output columns: the global head, the K bin heads (if any), the auxiliary heads."""
        K = int(self.n_bins) if self._binned else 0
        if self.variant == "residual":  # [global, aux..., correctors...]
            return {"global": 0, "aux": list(range(1, 1 + n_aux)), "bins": list(range(1 + n_aux, 1 + n_aux + K)),
                    "n_heads": 1 + n_aux, "n_correctors": K}
        return {"global": 0, "bins": list(range(1, 1 + K)), "aux": list(range(1 + K, 1 + K + n_aux)),
                "n_heads": 1 + K + n_aux, "n_correctors": 0}

    def _route(self, n: int, bins, responsibilities, who: str = "") -> np.ndarray | None:
        """Routing weights (n, K) from hard bins or soft responsibilities (None for one-head variants)."""
        if not self._binned:
            return None
        K = int(self.n_bins)
        if (bins is None) == (responsibilities is None):
            raise ValueError(f"variant={self.variant!r} needs exactly one of {who}bins (hard/oracle) or "
                             f"{who}responsibilities (soft)")
        if bins is not None:
            b = np.asarray(bins)
            if b.shape != (n,) or not np.issubdtype(b.dtype, np.integer):
                raise ValueError(f"{who}bins must be integer labels of shape ({n},), got {b.dtype} {b.shape}")
            if n and (b.min() < 0 or b.max() >= K):
                raise ValueError(f"{who}bins must be in [0, {K}), got [{b.min()}, {b.max()}]")
            return np.eye(K)[b]
        R = np.asarray(responsibilities, dtype=np.float64)
        if R.shape != (n, K):
            raise ValueError(f"{who}responsibilities must have shape ({n}, {K}), got {R.shape}")
        if not np.all(np.isfinite(R)) or np.any(R < 0):
            raise ValueError(f"{who}responsibilities must be finite and non-negative")
        return R

    def _check_aux(self, aux, n: int, who: str = "aux") -> np.ndarray | None:
        if aux is None or not self.aux_weight:
            return None
        A = np.asarray(aux, dtype=np.float64)
        A = A[:, None] if A.ndim == 1 else A
        if A.ndim != 2 or len(A) != n or not np.all(np.isfinite(A)):
            raise ValueError(f"{who} must be finite auxiliary targets of shape ({n}, n_aux), got {np.shape(aux)}")
        return A

    # ------------------------------------------------------------------ rows for the trainer
    def _rows(self, X, y, R, aux, sw, stage: str) -> dict:
        """Standardised inputs, per-head targets ``y`` and weights ``W`` (rows × heads) of one chunk."""
        X = (np.asarray(X, np.float64) - self.x_mean_) / self.x_scale_
        D = self.n_features_in_ - int(self.n_quality)
        n = len(X)
        lay = self._layout(self.n_aux_)
        H = lay["n_heads"] + lay["n_correctors"]
        Y, W = np.zeros((n, H)), np.zeros((n, H))
        ys = (np.asarray(y, np.float64) - self.y_mean_) / self.y_scale_
        sw = np.ones(n) if sw is None else np.asarray(sw, np.float64)
        Y[:, [lay["global"]] + lay["bins"]] = ys[:, None]
        if stage == "trunk":
            W[:, lay["global"]] = sw
            if aux is not None and self.n_aux_:
                Y[:, lay["aux"]] = (aux - self.aux_mean_) / self.aux_scale_
                W[:, lay["aux"]] = float(self.aux_weight) * sw[:, None]
        if R is not None and (stage == "correctors" or self.variant == "heads"):
            W[:, lay["bins"]] = R * sw[:, None]
        out = {"x": X[:, :D].astype(np.float32), "y": Y, "W": W, "sw": sw}
        if int(self.n_quality):
            out["q"] = X[:, D:].astype(np.float32)
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, bins=None, sample_weight=None, responsibilities=None, X_val=None, y_val=None, aux=None,
            val_bins=None, val_responsibilities=None, aux_val=None) -> "NeuralExperts":
        """Fit on in-memory arrays.

        Parameters
        ----------
        X : array (n, D + n_quality)
        y : array (n,)
        bins : int array (n,), optional
            Hard (oracle) bins, for 'heads' and 'residual' (ignored by one-head variants).
        sample_weight : array (n,), optional
        responsibilities : array (n, n_bins), optional
            Soft assignments instead of ``bins``: head k learns every row with weight R[:, k].
        X_val, y_val : arrays, optional
            Validation rows for early stopping (without them every epoch runs and the last is kept).
        aux : array (n, n_aux), optional
            Auxiliary targets (for example T_eff and [M/H]), each learned by its own head.
        val_bins, val_responsibilities, aux_val : optional
            The validation rows' routing and auxiliary targets; without routing, early stopping
            watches the global (and auxiliary) heads, and the residual correctors run every epoch.

        Returns
        -------
        self
        """
        self._check_params()
        X, y = validate_data(self, X, y, y_numeric=True, dtype=[np.float64, np.float32])
        sw = None if sample_weight is None else _check_sample_weight(sample_weight, X, dtype=np.float64)
        R = self._route(len(y), bins, responsibilities)
        if R is not None:
            self._check_mass(R * (1.0 if sw is None else sw[:, None]))
        aux = self._check_aux(aux, len(y))
        self._set_stats(X, y, aux)
        train = {"X": X, "y": y, "sw": sw, "R": R, "aux": aux}
        val = None
        if X_val is not None:
            Xv, yv = validate_data(self, X_val, y_val, reset=False, y_numeric=True, dtype=[np.float64, np.float32])
            val = {"X": Xv, "y": yv, "sw": None, "aux": self._check_aux(aux_val, len(yv), "aux_val"),
                   "R": (self._route(len(yv), val_bins, val_responsibilities, "val_")
                         if (val_bins is not None or val_responsibilities is not None) else None)}
        digest = hashlib.sha1(np.ascontiguousarray(y, dtype=np.float64).tobytes()).hexdigest()[:12]
        self._train(lambda epoch, stage: [self._rows(**train, stage=stage)],
                    None if val is None else (lambda stage: [self._rows(**val, stage=stage)]),
                    has_val_route=val is not None and val["R"] is not None, digest=f"{X.shape}:{digest}")
        return self

    def _set_stats(self, X, y, aux) -> None:
        if int(self.n_quality) >= X.shape[1]:
            raise ValueError(f"n_quality={self.n_quality} leaves no spectrum columns in X of {X.shape[1]} columns")
        self.x_mean_, self.x_scale_ = _scale(X)
        self.y_mean_, self.y_scale_ = (float(v) for v in _scale(y))
        self.n_aux_ = 0 if aux is None else aux.shape[1]
        self.aux_mean_, self.aux_scale_ = _scale(aux) if aux is not None else (np.zeros(0), np.ones(0))

    def fit_stream(self, source) -> "NeuralExperts":
        """Fit on rows streamed from a dataset (:class:`~snrmoe_lib.models.neural.stream.StreamSource`):
        fresh noise per epoch, validation rows for early stopping, memory a few chunks whatever N.

        The standardisation statistics come from the first ``STREAM_STATS_ROWS`` validation rows.
        """
        self._check_params()
        if self._binned and source.route is None:
            raise ValueError(f"variant={self.variant!r} needs the source's route (bins or responsibilities)")
        if not len(source.val_rows):
            raise ValueError("a streamed fit needs validation rows (early stopping and standardisation)")
        first = next(reblock(source.validation(), STREAM_STATS_ROWS))
        X = validate_data(self, first["X"], dtype=[np.float64, np.float32])
        aux = self._check_aux(first.get("aux"), len(X))
        self._set_stats(X, first["y"], aux)

        def convert(chunks, stage):
            for c in chunks:
                R = self._route(len(c["y"]), *self._split_route(c.get("route")))
                yield self._rows(c["X"], c["y"], R, self._check_aux(c.get("aux"), len(c["y"])), None, stage)

        digest = f"stream:{source.ds.n}:{len(source.train_rows)}:{len(source.val_rows)}:{source.seed}"
        self._train(lambda epoch, stage: convert(source.training(epoch), stage),
                    lambda stage: convert(source.validation(), stage), has_val_route=self._binned, digest=digest)
        return self

    @staticmethod
    def _split_route(route) -> tuple:
        if route is None:
            return None, None
        route = np.asarray(route)
        return (route, None) if route.ndim == 1 else (None, route)

    def _fingerprint(self, stage: str, digest: str) -> str:
        params = {k: v for k, v in self.get_params().items() if k not in _OPERATIONAL}
        text = json.dumps({"params": params, "stage": stage, "data": digest, "n_aux": self.n_aux_,
                           "n_features": self.n_features_in_}, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def _settings(self, stage: str, digest: str, epochs: int) -> TrainSettings:
        # ``_on_epoch_end(epoch, record)``, when an instance sets it, runs after each epoch's checkpoint
        # (the tests interrupt a fit there, as a crash or Ctrl-C would)
        ckpt = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / f"{stage}.pt"
        return TrainSettings(max_epochs=epochs, batch_size=int(self.batch_size), shuffle_block=int(self.shuffle_block),
                             lr=float(self.lr), weight_decay=float(self.weight_decay), beta=float(self.beta),
                             patience=int(self.patience), seed=int(self.random_state), device=self.device_,
                             progress=bool(self.progress), checkpoint=ckpt, resume=bool(self.resume),
                             fingerprint=self._fingerprint(stage, digest), label=f"{self.variant}:{stage}",
                             on_epoch_end=getattr(self, "_on_epoch_end", None))

    def _build(self):
        from snrmoe_lib.models.neural.nets import build_network, init_weights

        lay = self._layout(self.n_aux_)
        net = build_network(self.arch, self.n_features_in_ - int(self.n_quality), int(self.n_quality),
                            lay["n_heads"], width=int(self.width), channels=tuple(self.channels),
                            kernel=int(self.kernel), stem_stride=int(self.stem_stride), pool=int(self.pool),
                            vit_patch=int(self.vit_patch), vit_depth=int(self.vit_depth),
                            vit_heads=int(self.vit_heads), var_floor=float(self.var_floor),
                            n_correctors=lay["n_correctors"])
        init_weights(net, torch_generator("neural.init", int(self.random_state)))
        return net

    def _train(self, train_fn, val_fn, has_val_route: bool, digest: str) -> None:
        self.device_ = resolve_device(self.device)
        with torch_session(self.n_threads):
            net = self._build().to(self.device_)
            trunk = [p for n, p in net.named_parameters() if not n.startswith("correctors.")]
            self.history_ = {"trunk": train_network(
                net, trunk, lambda e: train_fn(e, "trunk"), None if val_fn is None else (lambda: val_fn("trunk")),
                self._settings("trunk", digest, int(self.max_epochs)))}
            if self.variant == "residual":
                epochs = int(self.residual_epochs if self.residual_epochs is not None else self.max_epochs)
                val = None if (val_fn is None or not has_val_route) else (lambda: val_fn("correctors"))
                self.history_["correctors"] = train_network(
                    net, list(net.correctors.parameters()), lambda e: train_fn(e, "correctors"), val,
                    self._settings("correctors", digest, epochs))
        self.module_ = net.to("cpu").eval()
        self.n_experts_ = int(self.n_bins) if self._binned else 1

    def _check_mass(self, weights: np.ndarray) -> None:
        """Every bin's head must see at least ``min_count`` summed weight (``weights``: rows × bins)."""
        mass = weights.sum(axis=0)
        small = [k for k in range(len(mass)) if mass[k] < max(float(self.min_count), 1e-12)]
        if small:
            raise SmallBinError(f"head(s) of bin(s) {small} have summed weight {mass[small].round(2).tolist()} "
                                f"< min_count={self.min_count}: nothing to learn from")

    # ------------------------------------------------------------------ predict
    def _forward(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Every head's mean and variance in target units: (n, heads) each."""
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        rows = self._rows(X, np.zeros(len(X)), None, None, None, "trunk")
        device = resolve_device(self.device)
        mus, vars_ = [], []
        with torch_session(self.n_threads) as torch, torch.no_grad():
            net = self.module_.to(device)
            for i in range(0, len(X), int(self.batch_size)):
                x = torch.as_tensor(rows["x"][i:i + int(self.batch_size)]).to(device)
                q = torch.as_tensor(rows["q"][i:i + int(self.batch_size)]).to(device) if "q" in rows else None
                mu, var = net(x, q)
                mus.append(mu.double().cpu().numpy())
                vars_.append(var.double().cpu().numpy())
            self.module_ = net.to("cpu")
        H = self._layout(self.n_aux_)
        mu = np.concatenate(mus) if mus else np.zeros((0, H["n_heads"] + H["n_correctors"]))
        var = np.concatenate(vars_) if vars_ else np.zeros_like(mu)
        scale = np.full(mu.shape[1], self.y_scale_)
        shift = np.full(mu.shape[1], self.y_mean_)
        scale[H["aux"]], shift[H["aux"]] = self.aux_scale_, self.aux_mean_
        return mu * scale + shift, var * scale ** 2

    def _experts(self, X) -> tuple[np.ndarray, np.ndarray]:
        mu, var = self._forward(X)
        lay = self._layout(self.n_aux_)
        cols = lay["bins"] if self._binned else [lay["global"]]
        return mu[:, cols], var[:, cols]

    def predict_all(self, X, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Every expert's prediction: (n, n_experts) — the K bin heads, or the one head of 'global'/'film'.

        With ``return_std`` also each head's σ (same shape).
        """
        mu, var = self._experts(X)
        return (mu, np.sqrt(var)) if return_std else mu

    def predict_global(self, X, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The global head (the residual variant's frozen global model)."""
        mu, var = self._forward(X)
        g = self._layout(self.n_aux_)["global"]
        return (mu[:, g], np.sqrt(var[:, g])) if return_std else mu[:, g]

    def predict_aux(self, X, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The auxiliary heads' predictions (n, n_aux) in the targets' units."""
        mu, var = self._forward(X)
        cols = self._layout(self.n_aux_)["aux"]
        return (mu[:, cols], np.sqrt(var[:, cols])) if return_std else mu[:, cols]

    def predict(self, X, bins=None, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Oracle routing: each row by the head of its bin ('heads', 'residual'); the one head otherwise."""
        check_is_fitted(self, "module_")
        if not self._binned:
            return self.predict_global(X, return_std=return_std)
        if bins is None:
            raise ValueError(f"variant={self.variant!r}: oracle routing needs each row's bin, predict(X, bins=...)")
        mu, var = self._experts(X)
        b = np.asarray(bins)
        if b.shape != (len(mu),) or not np.issubdtype(b.dtype, np.integer) or (len(b) and (
                b.min() < 0 or b.max() >= mu.shape[1])):
            raise ValueError(f"bins must be integers in [0, {mu.shape[1]}) of shape ({len(mu)},)")
        rows = np.arange(len(mu))
        return (mu[rows, b], np.sqrt(var[rows, b])) if return_std else mu[rows, b]

    def predict_mixture(self, X, proba,
                        return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Σ_k p_k μ_k with ``proba`` (n, n_experts); σ² of the Gaussian mixture, Σ p_k (σ²_k + μ²_k) − μ²."""
        mu, var = self._experts(X)
        p = np.asarray(proba, dtype=np.float64)
        if p.shape != mu.shape:
            raise ValueError(f"proba must have shape {mu.shape}, got {p.shape}")
        m = (p * mu).sum(axis=1)
        if not return_std:
            return m
        return m, np.sqrt(np.maximum((p * (var + mu ** 2)).sum(axis=1) - m ** 2, 0.0))

    def predict_std(self, X, bins=None, proba=None) -> np.ndarray:
        """The predicted σ: of the mixture with ``proba``, else of the routed head (``bins``), else of
        the one head."""
        if proba is not None:
            return self.predict_mixture(X, proba, return_std=True)[1]
        return self.predict(X, bins=bins, return_std=True)[1]
