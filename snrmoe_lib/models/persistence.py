"""Safe persistence of fitted models: plain arrays (``.npz``) plus JSON, nothing that runs code at load.

A saved model is one folder::

    model.json            the record (configuration, data fingerprint, ranges, metrics, …) and the
                          list of components with the sha256 of each of their files
    <component>.json      the component's kind, class and hyper-parameters (plain JSON)
    <component>.npz       its fitted arrays, read back with ``numpy.load(allow_pickle=False)``

No pickle, no joblib: a class is looked up by name in :data:`ESTIMATOR_CLASSES` (a fixed table,
never a module path taken from the file), built from its JSON hyper-parameters, and given its
arrays back. The folder is written under a temporary name and renamed into place when complete
(:class:`~snrmoe_lib.data.writers.AtomicWriter`); an existing folder is replaced only with
``overwrite=True``. Loading checks the format version, the package version, that every listed file
is there and that its hash matches, and raises :class:`ModelFormatError` naming what is wrong.

Adding a model family
---------------------
**The one place to register a new family's serializer is** :data:`SERIALIZERS` (kind →
``(module, dump function, load function)``, imported only when that kind is saved or loaded):

* an estimator whose fitted state is arrays, lists of arrays, plain scalars and nested registered
  estimators (the scikit-learn convention of trailing-underscore attributes) needs no new code:
  add its class to :data:`ESTIMATOR_CLASSES` (``"module:ClassName"``) and save it with kind
  ``"estimator"``;
* anything else (a torch network: its ``state_dict`` as arrays, a boosted ensemble: its trees as
  arrays) adds ``kind: ("module", "dump", "load")`` with ``dump(obj) -> (meta: dict, arrays: dict)``
  and ``load(meta, arrays) -> obj``; ``meta`` must be plain JSON.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snrmoe_lib.data.writers import AtomicWriter

__all__ = ["FORMAT_VERSION", "ModelFormatError", "ESTIMATOR_CLASSES", "SERIALIZERS", "dump_component",
           "load_component", "save_folder", "read_record", "load_folder", "dump_estimator", "load_estimator"]

#: Version of the folder layout; a folder written with another one is refused at load.
FORMAT_VERSION = 1
RECORD = "model.json"

#: Classes the generic estimator serializer may build, by the name written in the file.
ESTIMATOR_CLASSES: dict[str, str] = {
    name: f"snrmoe_lib.features.quality:{name}"
    for name in ("RawError", "TemplateScale", "PCATemplates", "SortedQuantiles", "AggregateStats", "ErrorNorm")
} | {
    "LogisticGate": "snrmoe_lib.models.gates:LogisticGate",
    "MLPGate": "snrmoe_lib.models.gates:MLPGate",
    "RegressionGate": "snrmoe_lib.models.gates:RegressionGate",
    "LogisticRegression": "sklearn.linear_model:LogisticRegression",
    "StreamingRidge": "snrmoe_lib.models.ridge:StreamingRidge",
    "SplitConformalPerBin": "snrmoe_lib.models.deployed:SplitConformalPerBin",
}

#: Component kind → (module, dump function, load function): the one registry of serializers.
SERIALIZERS: dict[str, tuple[str, str, str]] = {
    "estimator": ("snrmoe_lib.models.persistence", "dump_estimator", "load_estimator"),
    "linear_models": ("snrmoe_lib.models.deployed", "dump_linear_models", "load_linear_models"),
    "arrays": ("snrmoe_lib.models.persistence", "dump_arrays", "load_arrays"),
    "boosted": ("snrmoe_lib.models.model_set", "dump_boosted", "load_boosted"),
    "model_set": ("snrmoe_lib.models.model_set", "dump_model_set", "load_model_set"),
    "neural": ("snrmoe_lib.models.model_set", "dump_neural", "load_neural"),
    "neural_heads": ("snrmoe_lib.models.model_set", "dump_neural_heads", "load_neural_heads"),
    "variance_model": ("snrmoe_lib.models.deployed", "dump_variance_model", "load_variance_model"),
}

#: Attributes of a fitted estimator that are not saved (large intermediate state, rebuilt or unused).
_SKIP = {"stats_", "path_"}


class ModelFormatError(ValueError):
    """A model folder is incomplete, damaged, or written by another format or package version."""


def _package_version() -> str:
    """The installed package's version (the code version a model folder must match)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("snrmoe_lib")
    except PackageNotFoundError:
        return "unknown"


def _class(name: str) -> type:
    if name not in ESTIMATOR_CLASSES:
        raise ModelFormatError(f"class {name!r} is not one this version can load (known: {sorted(ESTIMATOR_CLASSES)})")
    module, attr = ESTIMATOR_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _serializer(kind: str) -> tuple[Callable, Callable]:
    if kind not in SERIALIZERS:
        raise ModelFormatError(f"unknown component kind {kind!r} (known: {sorted(SERIALIZERS)}); "
                               "a new family registers its serializer in models/persistence.py SERIALIZERS")
    module, dump, load = SERIALIZERS[kind]
    mod = importlib.import_module(module)
    return getattr(mod, dump), getattr(mod, load)


# ------------------------------------------------------------------------------------------ estimators


def _plain(v: Any, where: str) -> Any:
    """A JSON value from a hyper-parameter or a scalar state (numpy scalars cast), else an error."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple)) and all(not isinstance(x, (list, tuple, dict, np.ndarray)) for x in v):
        return [_plain(x, where) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{where}.{k}") for k, x in v.items()}
    raise ModelFormatError(f"{where}: {type(v).__name__} cannot be saved as plain JSON")


def _put(name: str, v: Any, state: dict, arrays: dict, prefix: str) -> None:
    key = prefix + name
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise ModelFormatError(f"{key}: object arrays cannot be saved without pickle")
        arrays[key] = v
        state[name] = {"array": key}
    elif isinstance(v, (list, tuple)) and v and all(isinstance(x, np.ndarray) for x in v):
        for i, x in enumerate(v):
            arrays[f"{key}.{i}"] = x
        state[name] = {"arrays": [f"{key}.{i}" for i in range(len(v))]}
    elif hasattr(v, "get_params") and hasattr(v, "fit"):
        meta, sub = dump_estimator(v, prefix=key + ".")
        arrays.update(sub)
        state[name] = {"estimator": meta}
    else:
        state[name] = {"value": _plain(v, key)}


def dump_estimator(est, prefix: str = "") -> tuple[dict, dict]:
    """(JSON meta, arrays) of a fitted estimator of :data:`ESTIMATOR_CLASSES`."""
    name = type(est).__name__
    _class(name)
    params = {k: _plain(v, f"{name}.{k}") for k, v in est.get_params(deep=False).items()}
    state: dict = {}
    arrays: dict = {}
    for k, v in vars(est).items():
        if k.endswith("_") and not k.startswith("_") and k not in _SKIP:
            _put(k, v, state, arrays, prefix)
    return {"class": name, "params": params, "state": state}, arrays


def load_estimator(meta: dict, arrays: dict) -> Any:
    """The estimator of ``meta`` with its fitted state back (no code from the file is run)."""
    est = _class(meta["class"])(**meta["params"])
    for k, s in meta["state"].items():
        if "array" in s:
            v = arrays[s["array"]]
        elif "arrays" in s:
            v = [arrays[a] for a in s["arrays"]]
        elif "estimator" in s:
            v = load_estimator(s["estimator"], arrays)
        else:
            v = s["value"]
        setattr(est, k, v)
    return est


def dump_arrays(obj: dict) -> tuple[dict, dict]:
    """A plain dict of named arrays."""
    return {"names": sorted(obj)}, {k: np.asarray(v) for k, v in obj.items()}


def load_arrays(meta: dict, arrays: dict) -> dict:
    return {k: arrays[k] for k in meta["names"]}


# ------------------------------------------------------------------------------------------ components


def dump_component(kind: str, obj: Any) -> tuple[dict, dict]:
    """(meta, arrays) of one component through its kind's serializer."""
    dump, _ = _serializer(kind)
    meta, arrays = dump(obj)
    return {"kind": kind, "meta": meta}, arrays


def load_component(meta: dict, arrays: dict) -> Any:
    _, load = _serializer(meta["kind"])
    return load(meta["meta"], arrays)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=True) + "\n")


def save_folder(path: str | Path, components: dict[str, tuple[str, Any]], record: dict, *,
                overwrite: bool = False, extra_files: dict[str, str] | None = None) -> Path:
    """Write a model folder atomically.

    Parameters
    ----------
    path : the folder (created; its parent too).
    components : name → (kind, object)
        Each is written as ``<name>.json`` + ``<name>.npz`` by its kind's serializer.
    record : dict
        Plain JSON for ``model.json``; ``format_version``, ``package_version`` and ``components``
        are added.
    overwrite : replace an existing folder (else :class:`FileExistsError`).
    extra_files : name → text written beside (for example the model card).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a saved model (pass --force / overwrite=True)")
    with AtomicWriter(path, overwrite=overwrite) as w:
        w.tmp.mkdir(parents=True)
        listed = {}
        for name, (kind, obj) in components.items():
            meta, arrays = dump_component(kind, obj)
            _write_json(w.tmp / f"{name}.json", meta)
            np.savez(w.tmp / f"{name}.npz", **arrays)
            listed[name] = {"kind": kind, "files": {f: _sha256(w.tmp / f) for f in (f"{name}.json", f"{name}.npz")}}
        for name, text in (extra_files or {}).items():
            (w.tmp / name).write_text(text)
        full = dict(record) | {"format_version": FORMAT_VERSION, "package_version": _package_version(),
                               "components": listed}
        _write_json(w.tmp / RECORD, full)
    return path


def read_record(path: str | Path) -> dict:
    """``model.json`` of a model folder, checked: present, readable, same format and package version."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFormatError(f"{path}: not a model folder (it does not exist or is not a folder)")
    rec_path = path / RECORD
    if not rec_path.is_file():
        raise ModelFormatError(f"{path}: incomplete model folder: {RECORD} is missing")
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{rec_path}: unreadable ({exc})") from None
    fv, pv = record.get("format_version"), record.get("package_version")
    if fv != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: written in model format {fv!r}, this code reads format {FORMAT_VERSION}; "
                               "refit the model with this version (snrmoe fit)")
    if pv != _package_version():
        raise ModelFormatError(f"{path}: saved by snrmoe_lib {pv!r} (code {record.get('code_version')!r}), this is "
                               f"{_package_version()!r}; refit the model with this version (snrmoe fit)")
    if not isinstance(record.get("components"), dict):
        raise ModelFormatError(f"{rec_path}: lists no components")
    return record


def load_folder(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """(record, name → component) of a model folder; every file is checked against its hash first."""
    path = Path(path)
    record = read_record(path)
    out = {}
    for name, entry in record["components"].items():
        for fname, digest in entry["files"].items():
            f = path / fname
            if not f.is_file():
                raise ModelFormatError(f"{path}: incomplete model folder: {fname} is missing")
            if _sha256(f) != digest:
                raise ModelFormatError(f"{path}: {fname} does not match the hash in {RECORD} (changed or damaged)")
        meta = json.loads((path / f"{name}.json").read_text())
        with np.load(path / f"{name}.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        out[name] = load_component(meta, arrays)
    return record, out
