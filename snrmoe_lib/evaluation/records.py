"""One results schema for every notebook run: write, read, aggregate, and decide verdicts.

Each notebook's last cell writes ``<output_dir>/<notebook>.json``. Later notebooks and the Hub
read these files; nothing is re-run and no number is typed in.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from snrmoe_lib.config import params_to_dict
from snrmoe_lib.data.writers import atomic_write_text

__all__ = [
    "SCHEMA_VERSION",
    "OPS",
    "VERDICT_STATES",
    "MOCK_CAVEAT",
    "decide",
    "decision_basis",
    "verdict",
    "metric",
    "code_version",
    "to_jsonable",
    "write_results",
    "read_results",
    "find_results",
    "format_number",
    "format_interval",
    "format_rule",
    "verdict_frame",
    "print_verdicts",
    "ResultsError",
]

SCHEMA_VERSION = 1
#: The states a verdict can take (the ``verdict`` field of every record).
VERDICT_STATES = ("PASS", "FAIL", "INCONCLUSIVE")
OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
REQUIRED = ("schema", "notebook", "config", "params", "seeds", "dataset", "code_version", "created",
            "metrics", "verdicts", "figures")


class ResultsError(ValueError):
    """A results file is missing, malformed or of another schema."""


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _usable_interval(interval: Iterable[float] | None) -> tuple[float, float] | None:
    """``(lo, hi)`` when ``interval`` is two finite numbers, else ``None`` (no interval to decide on)."""
    if interval is None:
        return None
    iv = list(interval)
    if len(iv) != 2 or not all(_finite(x) for x in iv):
        return None
    lo, hi = sorted(float(x) for x in iv)
    return lo, hi


def decision_basis(value: float | None, interval: Iterable[float] | None = None) -> str:
    """What a verdict is decided on: ``'interval'``, ``'point'`` (a value but no interval) or
    ``'none'`` (no finite value: the verdict is INCONCLUSIVE)."""
    if not _finite(value):
        return "none"
    return "interval" if _usable_interval(interval) is not None else "point"


def decide(value: float | None, op: str, threshold: float, interval: Iterable[float] | None = None) -> str:
    """The one decision rule: ``'PASS'``, ``'FAIL'`` or ``'INCONCLUSIVE'`` for ``value op threshold``.

    With an ``interval`` (two finite ends) the whole interval decides: PASS when every value in it
    satisfies the rule (the worst end clears the threshold), FAIL when none does (the best end is
    on the wrong side), INCONCLUSIVE when it straddles the threshold. Without an interval the point
    value decides (:func:`decision_basis` says so, and every verdict table shows it). A missing or
    NaN value is INCONCLUSIVE.
    """
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}; use one of {list(OPS)}")
    if not _finite(value):
        return "INCONCLUSIVE"
    iv = _usable_interval(interval)
    rule = OPS[op]
    if iv is None:
        return "PASS" if bool(rule(float(value), float(threshold))) else "FAIL"
    lo, hi = iv
    worst, best = (lo, hi) if op in (">=", ">") else (hi, lo)
    if bool(rule(worst, float(threshold))):
        return "PASS"
    if not bool(rule(best, float(threshold))):
        return "FAIL"
    return "INCONCLUSIVE"


def verdict(gate: str, question: str, metric: str, value: float | None, op: str, threshold: float,
            interval: Iterable[float] | None = None, note: str = "") -> dict:
    """A verdict record; the decision is computed here by :func:`decide`, never typed in.

    ``basis`` records what decided it (``'interval'``, ``'point'`` or ``'none'``).
    """
    iv = None if interval is None else [None if not _finite(x) else float(x) for x in interval]
    rec = {"gate": gate, "question": question, "metric": metric,
           "value": float(value) if _finite(value) else None, "op": op, "threshold": float(threshold),
           "interval": iv, "verdict": decide(value, op, threshold, interval),
           "basis": decision_basis(value, interval)}
    if note:
        rec["note"] = note
    return rec


def format_number(value: Any) -> str:
    """A number as shown in verdict tables and on the Hub: 4 significant digits, '—' when missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            return "—"
        if f != 0 and (abs(f) < 1e-3 or abs(f) >= 1e5):
            return f"{f:.3g}"
        return f"{f:.4g}" if not f.is_integer() else f"{int(f)}"
    return str(value)


def format_interval(interval: Iterable[float] | None) -> str:
    """``[lo, hi]`` of a metric or verdict record, or '' when there is none."""
    if not interval or any(x is None for x in interval):
        return ""
    lo, hi = interval
    return f"[{format_number(lo)}, {format_number(hi)}]"


def format_rule(op: Any, threshold: Any) -> str:
    """A verdict's decision rule, e.g. ``>= 0.02``."""
    return f"{op if op is not None else '?'} {format_number(threshold)}"


#: How a verdict's basis is shown beside it.
BASIS_TEXT = {"interval": "95 % interval", "point": "point value (no interval)", "none": "no value"}


def verdict_frame(verdicts: Iterable[dict]) -> pd.DataFrame:
    """Verdict records (:func:`verdict`) as one table: the only way verdicts are shown.

    ``decided on`` says whether the whole interval decided, or only the point value (no interval).
    """
    rows = []
    for v in verdicts:
        basis = v.get("basis") or decision_basis(v.get("value"), v.get("interval"))
        rows.append({"gate": v["gate"], "metric": v["metric"], "value": format_number(v["value"]),
                     "rule": format_rule(v["op"], v["threshold"]),
                     "95 % interval": format_interval(v["interval"]),
                     "verdict": v["verdict"], "decided on": BASIS_TEXT.get(basis, basis)})
    return pd.DataFrame(rows)


#: The line above every verdict table decided on mock data (a decision on the mock is not yet evidence).
MOCK_CAVEAT = ("MOCK DATA: these verdicts are provisional; they say how the pipeline behaves on the simulator "
               "and become decisions only when the same notebook runs on real PFS products.")


def print_verdicts(verdicts: Iterable[dict], mock: bool = False) -> None:
    """Print the verdict table of a notebook (see :func:`verdict_frame`), under :data:`MOCK_CAVEAT` when
    ``mock`` (the run's data came from the simulator)."""
    if mock:
        print(MOCK_CAVEAT)
    print(verdict_frame(verdicts).to_string(index=False))


def metric(value: float | None, interval: Iterable[float] | None = None, **extra: Any) -> dict:
    """A metric record ``{"value": v, "interval": [lo, hi]}`` (plus any extra fields)."""
    rec = {"value": None if value is None else float(value),
           "interval": None if interval is None else [float(x) for x in interval]}
    rec.update(extra)
    return rec


def code_version() -> str:
    """``git describe`` of the project when run from a checkout, else the package version."""
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return version("snrmoe_lib")
    except PackageNotFoundError:
        return "unknown"


def to_jsonable(obj: Any) -> Any:
    """Cast numpy scalars/arrays, paths and tuples into plain JSON types; NaN becomes null."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(output_dir: str | Path, notebook: str, params: Any, *, dataset: dict, metrics: dict,
                  verdicts: list[dict] | None = None, figures: list[str] | None = None,
                  extra: dict | None = None, frozen_test: dict | None = None) -> Path:
    """Write ``<output_dir>/<notebook>.json`` in the results schema and return its path.

    Parameters
    ----------
    params
        The validated :class:`~snrmoe_lib.config.Params` of the run.
    dataset
        ``{"path", "fingerprint", "n_train", "n_test", ...}``.
    metrics
        Name → :func:`metric` record (or plain number).
    verdicts
        Records made by :func:`verdict`.
    extra
        Notebook-specific content (tables, the chosen representation, …) kept under ``"extra"``.
    frozen_test
        ``{"seed", "n", "fingerprint"}`` of the configuration's test stars
        (:func:`snrmoe_lib.data.io.frozen_test_record`; :meth:`NotebookRun.finish` passes it).
    """
    rec = {
        "schema": SCHEMA_VERSION,
        "notebook": notebook,
        "config": params.name,
        "params": params_to_dict(params),
        "seeds": list(params.seeds),
        "dataset": dataset,
        "code_version": code_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "verdicts": verdicts or [],
        "figures": figures or [],
    }
    if frozen_test is not None:
        missing = {"seed", "n", "fingerprint"} - set(frozen_test)
        if missing:
            raise ResultsError(f"frozen_test lacks {sorted(missing)}")
        rec["frozen_test"] = dict(frozen_test)
    if extra:
        rec["extra"] = extra
    for v in rec["verdicts"]:
        expect = decide(v.get("value"), v["op"], v["threshold"], v.get("interval"))
        if v.get("verdict") != expect:
            raise ResultsError(f"verdict for {v.get('gate')} says {v.get('verdict')} but the numbers give {expect}")
    text = json.dumps(to_jsonable(rec), indent=2, allow_nan=False)
    return atomic_write_text(Path(output_dir) / f"{notebook}.json", text)


def read_results(path: str | Path) -> dict:
    """Read and check one results JSON."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise ResultsError(f"{path}: missing field(s) {missing}")
    if rec["schema"] != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema {rec['schema']}, this code reads schema {SCHEMA_VERSION}")
    rec["_path"] = str(path)
    return rec


def find_results(root: str | Path, notebook: str | None = None, config: str | None = None) -> list[dict]:
    """All results under ``root`` (recursively), optionally filtered by notebook and config name."""
    out = []
    for p in sorted(Path(root).rglob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            rec = read_results(p)
        except ResultsError:
            continue
        if notebook and rec["notebook"] != notebook:
            continue
        if config and rec["config"] != config:
            continue
        out.append(rec)
    return out
