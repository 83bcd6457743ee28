"""The Hub's input: every results file and runner status under ``reports/``, with the files beside them."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
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

    Files the runner keeps aside after a failed run (``*.previous.json``) are not current results and
    are left out; a file that is not in the results schema is listed as unreadable (with the reason).
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
        except ResultsError as exc:
            unreadable.append((_rel(path, root), str(exc).replace(str(path), path.name)))
            continue
        html_path = path.with_suffix(".html")
        figs = [_rel(path.parent / f, root) for f in rec.get("figures", []) if (path.parent / f).is_file()]
        runs.append(Run(folder, rec, _rel(path, root), _rel(html_path, root) if html_path.is_file() else None, figs))
    for s in statuses:
        cfg = s.get("config") or s["folder"]
        s["label"] = cfg if cfg == s["folder"] else f"{cfg} ({s['folder']}/)"
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    pages = sorted(_rel(h, root) for h in root.rglob("*.html")
                   if h.parent != root and not h.name.startswith(".") and not _SKIP_DIRS & set(h.parts))
    return HubData(root, runs, statuses, unreadable, created, pages)


def _read_status(path: Path, folder: str, root: Path) -> list[dict]:
    try:
        run = json.loads(path.read_text())
        out = []
        for nb in run.get("notebooks", []):
            html_path = path.parent / f"{nb['notebook']}.html"
            out.append({"folder": folder, "config": run.get("config"), "notebook": nb["notebook"],
                        "status": nb.get("status", "?"), "seconds": nb.get("seconds"), "error": nb.get("error"),
                        "finished": run.get("finished"),
                        "html_rel": _rel(html_path, root) if html_path.is_file() else None})
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return [{"folder": folder, "config": None, "notebook": "?", "status": "unreadable run.json",
                 "seconds": None, "error": None, "finished": None, "html_rel": None}]
