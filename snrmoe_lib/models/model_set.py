"""Fitted regressors of a deployed mixture kept as named columns, and the boosted trees saved as plain arrays.

:class:`ModelSet` holds the experts and the global model of a family that does not fit from
sufficient statistics (boosted trees, networks): ``predict(X)`` stacks every model's prediction as
one column, the interface :class:`~snrmoe_lib.models.oracle_stream.LinearModels` gives the Ridge
family, so the deployed mixture mixes either the same way.

Saving boosted trees without pickle
-----------------------------------
A fitted ``HistGradientBoostingRegressor`` predicts raw (unbinned) data from its trees alone: per
boosting round a ``TreePredictor`` whose ``nodes`` is a structured array of
``PREDICTOR_RECORD_DTYPE`` (numbers only: no object field, so ``numpy.load(allow_pickle=False)``
reads it) plus two uint32 bitset arrays (categorical splits), the baseline prediction, and, for the
known-category bitsets of raw data, the bin mapper's ``is_categorical_`` / ``bin_thresholds_``.
:func:`dump_boosted` writes exactly those arrays and the hyper-parameters as JSON;
:func:`load_boosted` builds a fresh estimator from the JSON and sets them back (no code from the
file runs). The loader refuses what it cannot rebuild faithfully, naming it: a node layout other
than this scikit-learn's ``PREDICTOR_RECORD_DTYPE``, a loss other than squared error, categorical
features (their preprocessor is a fitted ``ColumnTransformer``), more than one tree per round.
The scikit-learn version is recorded; the package-version check of the folder already ties a model
to the environment it was saved in.

Saving networks without pickle
------------------------------
A fitted :class:`~snrmoe_lib.models.neural.NeuralExperts` is its hyper-parameters (JSON), its
standardisation statistics and its network's ``state_dict`` (every tensor as a numpy array).
:func:`load_neural` builds the same architecture from the hyper-parameters (the estimator's own
``_build``) and loads the tensors with ``strict=True`` (a missing, extra or misshapen tensor is an
error naming it); predictions on the CPU are bit-identical. ``checkpoint_dir``/``resume``/``progress``
are training-time settings and are not restored.

:class:`NeuralHeads` is the neural family's deployed experts: the K SNR heads of one trunk (a 'heads'
network) and a global head (of another network, Q4's residual net, or of the same), as the named
columns a deployed mixture mixes. :func:`dump_neural_heads` saves each network through
:func:`dump_neural` (kind ``neural``) and only adds which network gives which columns.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from snrmoe_lib.models.boosted import BoostedRegressor
from snrmoe_lib.models.neural import NeuralExperts
from snrmoe_lib.models.persistence import ModelFormatError, _plain, dump_component, load_component

__all__ = ["ModelSet", "NeuralHeads", "dump_boosted", "load_boosted", "dump_neural", "load_neural",
           "dump_model_set", "load_model_set", "dump_neural_heads", "load_neural_heads", "MEMBER_KINDS"]

#: Class name of a member of a :class:`ModelSet` → the serializer kind that saves it
#: (:data:`snrmoe_lib.models.persistence.SERIALIZERS`).
MEMBER_KINDS = {"BoostedRegressor": "boosted", "StreamingRidge": "estimator", "NeuralExperts": "neural"}


class ModelSet:
    """Named fitted regressors; ``predict(X)`` is the (n, n_models) matrix of their predictions.

    Parameters
    ----------
    names : sequence of str
        One per model (the experts' labels, then ``'global'``).
    models : sequence of fitted regressors
    """

    def __init__(self, names: Sequence[str], models: Sequence):
        if len(names) != len(models) or len(set(names)) != len(names):
            raise ValueError(f"a model set needs one distinct name per model, got {list(names)} for {len(models)}")
        self.names = [str(n) for n in names]
        self.models = list(models)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def predict(self, X) -> np.ndarray:
        return np.column_stack([np.asarray(m.predict(X), dtype=np.float64).ravel() for m in self.models])


class NeuralHeads:
    """The K SNR heads of one fitted network and a global head as named columns (the neural family's
    deployed experts); ``predict(X)`` is (n, K + 1): the heads, then the global head.

    Parameters
    ----------
    names : sequence of str
        The K experts' labels, then ``'global'``.
    heads : fitted NeuralExperts
        A binned network ('heads' or 'residual' variant) with K = ``len(names) - 1`` experts.
    global_net : fitted NeuralExperts, optional
        The network whose global head is the global column (default ``heads``).
    """

    def __init__(self, names: Sequence[str], heads, global_net=None):
        names = [str(n) for n in names]
        if len(set(names)) != len(names) or names[-1:] != ["global"]:
            raise ValueError(f"neural heads need distinct names ending with 'global', got {names}")
        if int(getattr(heads, "n_experts_", -1)) != len(names) - 1:
            raise ValueError(f"the heads network has {getattr(heads, 'n_experts_', None)} experts for "
                             f"{len(names) - 1} expert names")
        self.names, self.heads, self.global_net = names, heads, global_net

    def index(self, name: str) -> int:
        return self.names.index(name)

    def predict(self, X) -> np.ndarray:
        """(n, K + 1): the K heads' predictions, then the global head's."""
        G = (self.heads if self.global_net is None else self.global_net).predict_global(X)
        return np.column_stack([self.heads.predict_all(X), G]).astype(np.float64)


def _error(msg: str):
    return ModelFormatError(msg)


def _hgb_dump(h) -> tuple[dict, dict]:
    """(meta, arrays) of a fitted HistGradientBoostingRegressor (trees as arrays)."""
    import sklearn
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    if h.loss != "squared_error" or getattr(h, "_preprocessor", None) is not None or h.n_trees_per_iteration_ != 1:
        raise _error("only squared-error boosted trees on numerical features (one tree per round) can be saved")
    arrays = {"baseline": np.asarray(h._baseline_prediction), "is_categorical": h._bin_mapper.is_categorical_,
              "n_bins_non_missing": np.asarray(h._bin_mapper.n_bins_non_missing_)}
    for j, t in enumerate(h._bin_mapper.bin_thresholds_):
        arrays[f"thr.{j}"] = np.asarray(t)
    for i, (p,) in enumerate(h._predictors):
        if p.nodes.dtype != PREDICTOR_RECORD_DTYPE:
            raise _error(f"tree {i}: node layout {p.nodes.dtype} is not PREDICTOR_RECORD_DTYPE")
        arrays[f"tree.{i}.nodes"] = p.nodes
        arrays[f"tree.{i}.raw_bitsets"] = p.raw_left_cat_bitsets
        arrays[f"tree.{i}.binned_bitsets"] = p.binned_left_cat_bitsets
    meta = {"params": {k: _plain(v, f"HistGradientBoostingRegressor.{k}") for k, v in h.get_params().items()},
            "n_features_in": int(h.n_features_in_), "n_iter": int(h.n_iter_), "n_trees": len(h._predictors),
            "missing_values_bin_idx": int(h._bin_mapper.missing_values_bin_idx_),
            "node_dtype": str(PREDICTOR_RECORD_DTYPE.descr), "sklearn_version": sklearn.__version__}
    return meta, arrays


def _hgb_load(meta: dict, a: dict):
    """A HistGradientBoostingRegressor rebuilt from its JSON hyper-parameters and tree arrays."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    if meta["node_dtype"] != str(PREDICTOR_RECORD_DTYPE.descr):
        raise _error(f"boosted trees saved with node layout {meta['node_dtype']} (scikit-learn "
                     f"{meta['sklearn_version']}); this scikit-learn uses {PREDICTOR_RECORD_DTYPE.descr}: refit")
    h = HistGradientBoostingRegressor(**meta["params"])
    n = meta["n_features_in"]
    bm = _BinMapper(n_bins=int(meta["params"]["max_bins"]) + 1)
    bm.is_categorical_ = a["is_categorical"]
    bm.bin_thresholds_ = [a[f"thr.{j}"] for j in range(n)]
    bm.n_bins_non_missing_ = a["n_bins_non_missing"]
    bm.missing_values_bin_idx_ = meta["missing_values_bin_idx"]
    h._bin_mapper, h._preprocessor, h.is_categorical_, h._is_categorical_remapped = bm, None, None, None
    h.n_features_in_, h._n_features, h.n_trees_per_iteration_ = n, n, 1
    h._baseline_prediction = a["baseline"]
    h._loss = h._get_loss(sample_weight=None)
    h._predictors = [[TreePredictor(a[f"tree.{i}.nodes"], a[f"tree.{i}.binned_bitsets"], a[f"tree.{i}.raw_bitsets"])]
                     for i in range(meta["n_trees"])]
    for i, (p,) in enumerate(h._predictors):
        if p.nodes.dtype != PREDICTOR_RECORD_DTYPE:
            raise _error(f"tree {i}: stored nodes are {p.nodes.dtype}, not PREDICTOR_RECORD_DTYPE")
    if h.n_iter_ != meta["n_iter"]:  # n_iter_ is the number of stored rounds
        raise _error(f"boosted trees: {h.n_iter_} rounds stored, {meta['n_iter']} recorded")
    return h


def dump_boosted(est) -> tuple[dict, dict]:
    """(meta, arrays) of a fitted :class:`~snrmoe_lib.models.boosted.BoostedRegressor`."""
    hm, arrays = _hgb_dump(est.model_)
    params = {k: _plain(v, f"BoostedRegressor.{k}") for k, v in est.get_params(deep=False).items()}
    state = {k: _plain(getattr(est, k), k) for k in ("n_iter_", "early_stopped_", "n_train_used_", "subsampled_",
                                                       "n_features_in_")}
    return {"params": params, "state": state, "trees": hm}, arrays


def load_boosted(meta: dict, arrays: dict):
    est = BoostedRegressor(**meta["params"])
    est.model_ = _hgb_load(meta["trees"], arrays)
    for k, v in meta["state"].items():
        setattr(est, k, v)
    return est


def dump_model_set(ms: ModelSet) -> tuple[dict, dict]:
    """(meta, arrays) of a :class:`ModelSet`: each member through its own kind (:data:`MEMBER_KINDS`)."""
    members, arrays = [], {}
    for i, m in enumerate(ms.models):
        kind = MEMBER_KINDS.get(type(m).__name__)
        if kind is None:
            raise _error(f"{type(m).__name__} has no serializer for a model set (known: {sorted(MEMBER_KINDS)})")
        meta, sub = dump_component(kind, m)
        members.append(meta)
        arrays |= {f"m{i}.{k}": v for k, v in sub.items()}
    return {"names": ms.names, "members": members}, arrays


def load_model_set(meta: dict, arrays: dict) -> ModelSet:
    models = []
    for i, m in enumerate(meta["members"]):
        p = f"m{i}."
        models.append(load_component(m, {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}))
    return ModelSet(meta["names"], models)


_NEURAL_ARRAYS = ("x_mean_", "x_scale_", "aux_mean_", "aux_scale_")
_NEURAL_SCALARS = ("n_features_in_", "n_experts_", "n_aux_", "y_mean_", "y_scale_")


def dump_neural(est) -> tuple[dict, dict]:
    """(meta, arrays) of a fitted NeuralExperts: hyper-parameters, statistics, ``state_dict`` as arrays."""
    import json

    params = est.get_params(deep=False) | {"checkpoint_dir": None, "resume": False, "progress": False}
    arrays = {f"sd.{k}": v.detach().cpu().numpy() for k, v in est.module_.state_dict().items()}
    arrays |= {k: np.asarray(getattr(est, k)) for k in _NEURAL_ARRAYS}
    meta = {"params": {k: _plain(v, f"NeuralExperts.{k}") for k, v in params.items()},
            "state": {k: _plain(getattr(est, k), k) for k in _NEURAL_SCALARS},
            "tensors": [k for k in est.module_.state_dict()],
            "history": json.loads(json.dumps(getattr(est, "history_", {}), default=float))}
    return meta, arrays


def load_neural(meta: dict, arrays: dict):
    """A NeuralExperts rebuilt from its hyper-parameters with its saved tensors (on the CPU)."""
    import torch

    params = dict(meta["params"])
    if isinstance(params.get("channels"), list):
        params["channels"] = tuple(params["channels"])
    est = NeuralExperts(**params)
    for k, v in meta["state"].items():
        setattr(est, k, v)
    for k in _NEURAL_ARRAYS:
        setattr(est, k, arrays[k])
    net = est._build()
    state = {k: torch.from_numpy(np.array(arrays[f"sd.{k}"])) for k in meta["tensors"]}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _error(f"the saved network does not fit the architecture of its hyper-parameters: {exc}") from None
    est.module_, est.history_, est.device_ = net.to("cpu").eval(), meta["history"], "cpu"
    return est


def dump_neural_heads(nh: NeuralHeads) -> tuple[dict, dict]:
    """(meta, arrays) of a :class:`NeuralHeads`: each network through :func:`dump_neural`."""
    nets = {"heads": nh.heads} | ({} if nh.global_net is None else {"global": nh.global_net})
    meta, arrays = {"names": nh.names, "nets": {}}, {}
    for key, net in nets.items():
        meta["nets"][key], sub = dump_neural(net)
        arrays |= {f"{key}.{k}": v for k, v in sub.items()}
    return meta, arrays


def load_neural_heads(meta: dict, arrays: dict) -> NeuralHeads:
    nets = {}
    for key, m in meta["nets"].items():
        p = f"{key}."
        nets[key] = load_neural(m, {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)})
    if "heads" not in nets:
        raise _error("saved neural heads hold no 'heads' network")
    try:
        return NeuralHeads(meta["names"], nets["heads"], nets.get("global"))
    except ValueError as exc:
        raise _error(f"saved neural heads: {exc}") from None
