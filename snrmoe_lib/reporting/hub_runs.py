"""The Hub's input: every results file and runner status under ``reports/``, with the files beside them."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from snrmoe_lib.evaluation.records import ResultsError, read_results

__all__ = ["Run", "HubData", "collect", "label_key"]

_SKIP_DIRS = {".ipynb_checkpoints"}

@dataclass
class Run:
    """One results file, with where it sits and the files beside it (paths relative to reports/)."""

    folder: str                   # reports/<folder>/ (normally the configuration's name)
    rec: dict
    json_rel: str
    html_rel: str | None
    figures_rel: list[str] = field(default_factory=list)

    @property
    def config(self) -> str:
        return str(self.rec["config"])

    @property
    def label(self) -> str:
        """The run's name on the page: the configuration, plus the folder when they differ."""
        return self.config if self.folder == self.config else f"{self.config} ({self.folder}/)"

    @property
    def notebook(self) -> str:
        return str(self.rec["notebook"])

    @property
    def fingerprint(self) -> str:
        return str((self.rec.get("dataset") or {}).get("fingerprint") or "—")


@dataclass
class HubData:
    """Everything the page shows, gathered from ``reports/``."""

    root: Path
    runs: list[Run]
    statuses: list[dict]          # one per notebook of every run.json (the runner's status)
    unreadable: list[tuple[str, str]]
    created: str
    html_files: list[str] = field(default_factory=list)  # every report page under reports/<folder>/

    def labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.runs:
            seen.setdefault(r.label, None)
        for s in self.statuses:
            seen.setdefault(s["label"], None)
        return sorted(seen, key=label_key)

    def primary(self) -> str | None:
        """The run whose question tree is drawn in full: 'default' if present, else the most complete."""
        labels = [r.label for r in self.runs]
        if not labels:
            return None
        if "default" in labels:
            return "default"
        return max(sorted(set(labels), key=label_key), key=labels.count)

    def run(self, label: str, notebook: str) -> Run | None:
        for r in self.runs:
            if r.label == label and r.notebook == notebook:
                return r
        return None

    def verdicts(self, label: str | None = None) -> list[tuple[Run, dict]]:
        return [(r, v) for r in self.runs if label is None or r.label == label for v in r.rec.get("verdicts", [])]


def label_key(label: str):
    # 'default' first, then natural order (mag18 < mag20 < mag21.5)
    parts = re.split(r"(\d+(?:\.\d+)?)", label)
    return (label != "default", [(0, float(p)) if re.fullmatch(r"\d+(?:\.\d+)?", p) else (1, p) for p in parts])


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def collect(reports_dir: str | Path) -> HubData:
    """Read every results JSON and ``run.json`` under ``reports_dir``.

    Hidden files (the runner keeps the last results aside as ``.<notebook>.previous.json`` while a
    notebook runs or after it failed) and ``*.previous.json`` are not current results and are left
    out; a file that is not in the results schema (invalid JSON, missing fields, fields of the wrong
    kind) is listed as unreadable with the reason, and the page is built from the others.
    """
    root = Path(reports_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"reports folder not found: {root}")
    runs, statuses, unreadable = [], [], []
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith(".") or path.name.endswith(".previous.json") or _SKIP_DIRS & set(path.parts):
            continue
        if path.parent == root:
            continue  # the hub's own files and anything not in a run folder
        folder = _rel(path.parent, root)
        if path.name == "run.json":
            statuses.extend(_read_status(path, folder, root))
            continue
        try:
            rec = read_results(path)
            _check_record(rec)
        except (ResultsError, TypeError, AttributeError, UnicodeDecodeError, OSError) as exc:
            why = str(exc).replace(str(path), path.name) if isinstance(exc, ResultsError) else \
                f"not in the results schema ({type(exc).__name__}: {exc})"
            unreadable.append((_rel(path, root), why))
            continue
        html_path = path.with_suffix(".html")
        figs = [_rel(path.parent / f, root) for f in rec.get("figures", []) if (path.parent / f).is_file()]
        runs.append(Run(folder, rec, _rel(path, root), _rel(html_path, root) if html_path.is_file() else None, figs))
    for s in statuses:
        cfg = s.get("config") or s["folder"]
        s["label"] = cfg if cfg == s["folder"] else f"{cfg} ({s['folder']}/)"
        _mark_earlier_results(s, runs)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pages = sorted(_rel(h, root) for h in root.rglob("*.html")
                   if h.parent != root and not h.name.startswith(".") and not _SKIP_DIRS & set(h.parts))
    return HubData(root, runs, statuses, unreadable, created, pages)


def _number(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _check_record(rec: dict) -> None:
    """Raise ResultsError when a field the Hub reads is of the wrong kind (it would break the page)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ResultsError(f"not in the results schema: {what}")

    for k in ("notebook", "config", "created", "code_version"):
        need(isinstance(rec.get(k), str), f"'{k}' must be a string")
    need(isinstance(rec.get("seeds"), list), "'seeds' must be a list")
    need(isinstance(rec.get("dataset"), dict), "'dataset' must be a mapping")
    need(isinstance(rec.get("figures"), list) and all(isinstance(f, str) for f in rec["figures"]),
         "'figures' must be a list of file names")
    need(isinstance(rec.get("metrics"), dict), "'metrics' must be a mapping")
    for name, m in rec["metrics"].items():
        if isinstance(m, dict):
            iv = m.get("interval")
            need(_number(m.get("value")) and (iv is None or (isinstance(iv, list) and len(iv) == 2
                                                            and all(_number(x) for x in iv))),
                 f"metric {name!r} needs a numeric value and interval")
        else:
            need(_number(m) or isinstance(m, (str, bool, list)), f"metric {name!r} is of an unknown kind")
    need(isinstance(rec.get("verdicts"), list), "'verdicts' must be a list")
    for v in rec["verdicts"]:
        need(isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("gate", "metric", "op", "verdict"))
             and _number(v.get("value")) and _number(v.get("threshold")) and v.get("threshold") is not None
             and (v.get("interval") is None or (isinstance(v["interval"], list) and len(v["interval"]) == 2)),
             "every verdict needs gate, metric, op, value, threshold and verdict")
    if "frozen_test" in rec:
        need(isinstance(rec["frozen_test"], dict), "'frozen_test' must be a mapping")


def _pid_gone(host: str | None, pid) -> bool:
    """Whether the process that wrote a 'running' run.json is known to be gone (only on this host)."""
    if host != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _run_state(run: dict) -> str:
    """'running', 'interrupted' or 'finished' (a run.json written before states existed is finished)."""
    state = run.get("state", "finished")
    if state == "running" and _pid_gone(run.get("host"), run.get("pid")):
        return "interrupted"
    return state if isinstance(state, str) else "finished"


def _read_status(path: Path, folder: str, root: Path) -> list[dict]:
    try:
        run = json.loads(path.read_text())
        state = _run_state(run)
        out = []
        for nb in run.get("notebooks", []):
            status, error = str(nb.get("status", "?")), nb.get("error")
            if state == "interrupted" and status in ("running", "pending"):
                status = "interrupted" if status == "running" else "not_run"
                error = error or "the run stopped before this notebook finished (killed, or the machine went down)"
            elif state == "running" and status == "running":
                error = error or f"running since {nb.get('started', '?')} (pid {run.get('pid')} on {run.get('host')})"
            html_path = path.parent / f"{nb['notebook']}.html"
            if status in ("running", "pending", "interrupted", "not_run"):
                html_path = path.parent / ".none"  # a page there now is not this run's: never link it as one
            out.append({"folder": folder, "config": run.get("config"), "notebook": str(nb["notebook"]),
                        "status": status, "seconds": nb.get("seconds") if _number(nb.get("seconds")) else None,
                        "error": None if error is None else str(error), "finished": run.get("finished"),
                        "started": run.get("started"),
                        "html_rel": _rel(html_path, root) if html_path.is_file() else None})
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [{"folder": folder, "config": None, "notebook": "?", "status": "unreadable run.json",
                 "seconds": None, "error": None, "finished": None, "html_rel": None}]


def _mark_earlier_results(status: dict, runs: list[Run]) -> None:
    """A notebook of this run that did not finish ok but has a results file: say it is an earlier run's."""
    if status["status"] == "ok" or not status.get("started"):
        return
    for r in runs:
        if r.folder == status["folder"] and r.notebook == status["notebook"] and \
                str(r.rec.get("created", "")) < str(status["started"]):
            status["error"] = ((status.get("error") or "").strip() + f" (results shown are from an earlier run, "
                               f"created {r.rec.get('created')})").strip()
