"""The Hub page: every gate, question and headline number of every run, read from the results files.

:func:`build_hub` reads every results JSON under ``reports/`` (written by the notebooks through
:func:`snrmoe_lib.results.write_results`) and the runner's ``run.json`` files, and writes

* ``reports/index.html`` — one self-contained page (no scripts, no network), relative links to
  every HTML report, results JSON and run status;
* ``reports/hub.md`` — the same tables in Markdown.

Both are written atomically. Nothing on the page is typed in: every number comes from a results
file, shown beside its configuration, seeds, dataset fingerprint and code version. The verdicts are
re-decided here with :func:`snrmoe_lib.results.decide` (the one function every notebook uses) and a
disagreement with the stored verdict is flagged, not hidden. A question or gate with no result yet
shows ⏳.

The tables mirror the user's Hub document: the consensus K-table, the question tree (✅ / ❌ / ⏳),
the decision gaps and the "authoritative numbers". Which result feeds which Hub entry is data
(:data:`QUESTION_TREE`, :data:`GATES`, :data:`KNOWLEDGE`, :data:`MODELS`): gates are matched by their
name prefix and question, headline numbers by a regular expression over the metric names of one
notebook, so a new metric shows up without a change here.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from snrmoe_lib.evaluation.records import ResultsError, atomic_write_text, decide, read_results

__all__ = ["QUESTION_TREE", "GATES", "KNOWLEDGE", "MODELS", "Run", "HubData", "collect", "build_hub",
           "render_html", "render_markdown"]

# ------------------------------------------------------------------------------------------------
# What the Hub shows (data, not code)
# ------------------------------------------------------------------------------------------------

#: The Hub's question tree. A node collects the verdicts whose ``question`` equals its id, plus those
#: selected by ``gate`` (the exact gate name: variants such as "Gate-2 (noise_level 0.5)" or "Gate-1
#: (estimated errors)" are robustness checks, listed in the gates table but not deciding the node) and
#: ``metric`` (a regular expression on the verdict's metric).
QUESTION_TREE: list[dict] = [
    {"id": "Q1", "text": "Is there headroom in splitting by SNR?", "children": [
        {"id": "Q1.1", "text": "Oracle SNR experts (true-SNR routing): ΔR² ≥ threshold?", "gate": "Gate-2"},
        {"id": "Q1.2", "text": "Does the headroom come mainly from the low-SNR subset?"},
    ]},
    {"id": "Q2", "text": "How can the error vector be used without leaking?", "children": [
        {"id": "Q2.1", "text": "Can the log g R² of the chosen error representation be pushed below the limit?",
         "gate": "Gate-1", "metric": r"logg|log_g"},
        {"id": "Q2.2", "text": "Does the compressed representation still carry the SNR (enough to gate)?",
         "gate": "Gate-1", "metric": r"snr"},
    ]},
    {"id": "Q3", "text": "How much of the oracle gain does a deployable gate keep?", "children": [
        {"id": "Q3.1", "text": "Soft routing on quality features: ρ ≥ threshold?", "gate": "Gate-3"},
        {"id": "Q3.2", "text": "Does the fallback / rejection improve the full test set?"},
    ]},
    {"id": "G4", "text": "Control: does one model without MoE do as well (whitening, conditional)?",
     "children": [{"id": "G4.1", "text": "Simpler route within the margin of the deployable MoE?",
                   "gate": "Gate-4"}]},
]

#: Gates in the order of the Hub, with the decision rule of the user's "decision gaps" table.
GATES: list[dict] = [
    {"gate": "Gate-1", "dg": "DG1", "question": "Q2", "gap": "Can error features gate without leaking?",
     "matters": "decides whether Route M (quality parameters + SNR MoE) stands",
     "on_pass": "continue with quality_features()", "on_fail": "stronger compression, or no error features"},
    {"gate": "Gate-2", "dg": "DG2", "question": "Q1", "gap": "How much headroom do oracle SNR experts have?",
     "matters": "decides MoE against a single model",
     "on_pass": "build the MoE", "on_fail": "whitening / conditional single model"},
    {"gate": "Gate-3", "dg": "DG3", "question": "Q3", "gap": "How much of the oracle does a deployable gate keep?",
     "matters": "decides whether the MoE can be delivered",
     "on_pass": "integrate the deployable gate", "on_fail": "simplify to a conditional model"},
    {"gate": "Gate-4", "dg": "DG4", "question": "Q3", "gap": "Does a single model do as well without MoE?",
     "matters": "decides whether the simpler route wins",
     "on_pass": "the simpler single model wins", "on_fail": "keep the MoE"},
]

#: The consensus K-table: each claim's evidence is every metric of ``notebook`` whose name matches;
#: verdicts whose ``question`` is the claim's id (e.g. the Fisher notebook's "K1" checks) are its checks.
KNOWLEDGE: list[dict] = [
    {"id": "K1", "claim": "The reachable log g precision is set, piecewise, by the information content (SNR)",
     "notebook": "fisher_ceiling", "metrics": r"^median_r2_max_3d_", "decision": "SNR-aware strategy (MoE or conditional)"},
    {"id": "K2", "claim": "Domain-split training pays most at high noise",
     "notebook": "q1_snr_headroom", "metrics": r"^(global|snr_oracle|phys_oracle)_r2|^delta_r2_", "decision": "MoE is worth most at low SNR"},
    {"id": "K3", "claim": "The raw error vector leaks the spectrum",
     "notebook": "q2_error_leakage", "metrics": r"^clean/r2_(logg|snr)\[S0\]|^clean/control/raw", "decision": "compress the error before any use"},
    {"id": "K4", "claim": "The error vector is ≈ template × scale + sparse residual",
     "notebook": "q2_error_leakage", "metrics": r"^clean/decomposition/|^clean/r2_(logg|snr)\[S2\]",
     "decision": "low-dimensional quality parameters instead of the full vector"},
]

#: The "authoritative numbers": per model, the metrics of ``notebook`` whose name matches ``metrics``.
MODELS: list[dict] = [
    {"model": "Global Ridge", "notebook": "q1_snr_headroom", "metrics": r"^global_r2"},
    {"model": "Oracle SNR experts", "notebook": "q1_snr_headroom", "metrics": r"^snr_oracle_r2|^delta_r2_snr"},
    {"model": "Oracle physical experts (T_eff × [M/H])", "notebook": "q1_snr_headroom",
     "metrics": r"^phys_oracle_r2|^delta_r2_phys"},
    {"model": "Deployable soft MoE (gate + fallback)", "notebook": "q3_deployable_gate",
     "metrics": r"^deployed_r2|^rho_deployed|^fallback_rate|^gate_accuracy"},
    {"model": "Regression gate", "notebook": "q3_deployable_gate", "metrics": r"^regression_"},
    {"model": "Single-model controls (Gate-4: whitening, conditional)", "notebook": "q3_deployable_gate",
     "metrics": r"^(whitening|conditional)_r2"},
    {"model": "Fisher / CRLB ceiling (median R²_max, 3-D and 5-D marginal)", "notebook": "fisher_ceiling",
     "metrics": r"^median_r2_max_"},
]

#: Headline numbers per configuration in the sweep table: (column, notebook, metric).
SWEEP_METRICS = [("global R²", "q1_snr_headroom", "global_r2"), ("SNR-oracle R²", "q1_snr_headroom", "snr_oracle_r2"),
                 ("deployed R²", "q3_deployable_gate", "deployed_r2")]

_SYMBOL = {"PASS": "✅", "FAIL": "❌", "UNDEFINED": "⏳", None: "⏳"}
PENDING = "⏳ pending"
_SKIP_DIRS = {".ipynb_checkpoints"}


# ------------------------------------------------------------------------------------------------
# Collecting the runs
# ------------------------------------------------------------------------------------------------


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
        return sorted(seen, key=_label_key)

    def primary(self) -> str | None:
        """The run whose question tree is drawn in full: 'default' if present, else the most complete."""
        labels = [r.label for r in self.runs]
        if not labels:
            return None
        if "default" in labels:
            return "default"
        return max(sorted(set(labels), key=_label_key), key=labels.count)

    def run(self, label: str, notebook: str) -> Run | None:
        for r in self.runs:
            if r.label == label and r.notebook == notebook:
                return r
        return None

    def verdicts(self, label: str | None = None) -> list[tuple[Run, dict]]:
        return [(r, v) for r in self.runs if label is None or r.label == label for v in r.rec.get("verdicts", [])]


def _label_key(label: str):
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


# ------------------------------------------------------------------------------------------------
# Tables (plain rows of cells; each cell is text or a (text, href) link)
# ------------------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        f = float(v)
        if not math.isfinite(f):
            return "—"
        if f != 0 and (abs(f) < 1e-3 or abs(f) >= 1e5):
            return f"{f:.3g}"
        return f"{f:.4g}" if not float(f).is_integer() else f"{int(f)}"
    return str(v)


def _interval(iv) -> str:
    if not iv or any(x is None for x in iv):
        return ""
    return f"[{_fmt(iv[0])}, {_fmt(iv[1])}]"


def _value(rec: dict) -> str:
    if isinstance(rec, dict):
        iv = _interval(rec.get("interval"))
        return _fmt(rec.get("value")) + (f" {iv}" if iv else "")
    return _fmt(rec)


def _checked(v: dict) -> tuple[str, bool]:
    """The verdict re-decided from value, op and threshold, and whether it agrees with the stored one."""
    try:
        mine = decide(v.get("value"), v["op"], v["threshold"])
    except (KeyError, ValueError):
        return "UNDEFINED", False
    return mine, mine == v.get("verdict")


def _verdict_cell(v: dict) -> str:
    mine, ok = _checked(v)
    return f"{_SYMBOL.get(mine, '⏳')} {mine}" + ("" if ok else f" (file says {v.get('verdict')})")


def _source(run: Run):
    return (run.notebook, run.html_rel or run.json_rel)


def _matches_gate(v: dict, gate: str) -> bool:
    return str(v.get("gate", "")) == gate


def gate_rows(data: HubData) -> list[list]:
    """One row per configuration and verdict, with the number, threshold, PASS/FAIL and provenance."""
    order = {g["gate"]: i for i, g in enumerate(GATES)}
    items = sorted(data.verdicts(), key=lambda rv: (_label_key(rv[0].label),
                                                     order.get(str(rv[1].get("gate", "")).split(" ")[0], 99),
                                                     str(rv[1].get("gate")), str(rv[1].get("metric"))))
    rows = []
    for run, v in items:
        rows.append([run.label, v.get("gate", "?"), v.get("question", ""), v.get("metric", ""), _fmt(v.get("value")),
                     _interval(v.get("interval")), f"{v.get('op', '?')} {_fmt(v.get('threshold'))}", _verdict_cell(v),
                     _source(run), ", ".join(str(s) for s in run.rec.get("seeds", [])),
                     _short(run.fingerprint), str(run.rec.get("code_version", "—"))])
    return rows


GATE_HEAD = ["configuration", "gate", "question", "metric", "value", "interval", "rule", "verdict", "report",
             "seeds", "dataset", "code"]


def _short(fp: str) -> str:
    return fp[:12] if len(fp) > 12 else fp


def _node_verdicts(data: HubData, label: str, node: dict) -> list[tuple[Run, dict]]:
    out = []
    for run, v in data.verdicts(label):
        if str(v.get("question")) == node["id"]:
            out.append((run, v))
        elif "gate" in node and _matches_gate(v, node["gate"]):
            if "metric" not in node or re.search(node["metric"], str(v.get("metric", "")), re.I):
                out.append((run, v))
    return out


def _status(found: list[tuple[Run, dict]]) -> str:
    # the word beside the symbol keeps the page readable where no emoji font is installed
    decided = [_checked(v)[0] for _, v in found]
    if not decided:
        return PENDING
    if all(d == "UNDEFINED" for d in decided):
        return "⏳ undefined"  # computed, but the number is missing (e.g. ρ with no oracle gap)
    return "❌ FAIL" if "FAIL" in decided else ("✅ PASS" if all(d == "PASS" for d in decided) else PENDING)


def _evidence(found: list[tuple[Run, dict]]) -> str:
    return "; ".join(f"{v.get('metric')} = {_fmt(v.get('value'))} {v.get('op')} {_fmt(v.get('threshold'))}"
                     for _, v in found)


def tree_text(data: HubData, label: str | None) -> str:
    """The question tree of one run, drawn like the Hub's, with each node's numbers."""
    lines = ["🌲 Core: SNR / observation-quality split + MoE to improve log g, without error-vector leakage"]
    for i, q in enumerate(QUESTION_TREE):
        last_q = i == len(QUESTION_TREE) - 1
        lines.append(("└── " if last_q else "├── ") + f"{q['id']}: {q['text']}")
        for j, c in enumerate(q["children"]):
            found = _node_verdicts(data, label, c) if label else []
            ev = _evidence(found)
            lead = ("    " if last_q else "│   ") + ("└── " if j == len(q["children"]) - 1 else "├── ")
            lines.append(f"{lead}{c['id']}: {c['text']} → {_status(found)}" + (f"  ({ev})" if ev else ""))
    lines.append("")
    lines.append("Legend: ✅ verified (PASS) | ❌ rejected (FAIL) | ⏳ no result yet (pending)")
    return "\n".join(lines)


def tree_matrix(data: HubData) -> tuple[list[str], list[list]]:
    """Question-tree status per configuration: rows are nodes, columns are runs."""
    labels = data.labels()
    rows = []
    for q in QUESTION_TREE:
        for c in q["children"]:
            rows.append([c["id"], c["text"]] + [_status(_node_verdicts(data, lab, c)) for lab in labels])
    return ["node", "question"] + labels, rows


def knowledge_rows(data: HubData, label: str | None) -> list[list]:
    rows = []
    for k in KNOWLEDGE:
        run = data.run(label, k["notebook"]) if label else None
        ev = _metric_list(run, k["metrics"]) if run else ""
        checks = [(r, v) for r, v in data.verdicts(label) if str(v.get("question")) == k["id"]] if label else []
        rows.append([k["id"], k["claim"], ev or f"⏳ no {k['notebook']} result",
                     (f"{_status(checks)}: {_evidence(checks)}" if checks else "—"), k["decision"],
                     _source(run) if run else "—"])
    return rows


def _metric_list(run: Run, pattern: str) -> str:
    items = [(n, m) for n, m in run.rec.get("metrics", {}).items() if re.search(pattern, n, re.I)]
    return "; ".join(f"{n} = {_value(m)}" for n, m in items)


def gap_rows(data: HubData, label: str | None) -> list[list]:
    rows = []
    for g in GATES:
        found = [(r, v) for r, v in data.verdicts(label) if _matches_gate(v, g["gate"])] if label else []
        st = _status(found)
        if st.startswith("✅"):
            decision = f"closed: {g['on_pass']}"
        elif st.startswith("❌"):
            decision = f"closed: {g['on_fail']}"
        else:
            decision = "open"
            st = "⏳"
        rule = f"PASS → {g['on_pass']}; FAIL → {g['on_fail']}"
        rows.append([g["dg"], g["gate"], g["gap"], g["matters"], rule, _evidence(found) or "⏳ no result",
                     f"{st.split(' ')[0]} {decision}"])
    return rows


def model_rows(data: HubData) -> list[list]:
    rows = []
    for m in MODELS:
        any_row = False
        for label in data.labels():
            run = data.run(label, m["notebook"])
            if run is None:
                continue
            ev = _metric_list(run, m["metrics"])
            if ev:
                any_row = True
                rows.append([m["model"], ev, label, ", ".join(str(s) for s in run.rec.get("seeds", [])),
                             _short(run.fingerprint), _source(run)])
        if not any_row:
            rows.append([m["model"], f"⏳ no {m['notebook']} result", "—", "—", "—", "—"])
    return rows


def sweep_rows(data: HubData) -> tuple[list[str], list[list]]:
    """One row per configuration: data, noise level, median SNR and each gate's verdict."""
    head = (["configuration", "description", "spectra", "i mag", "noise_level", "median L2 SNR"]
            + [c[0] for c in SWEEP_METRICS] + [g["gate"] for g in GATES])
    rows = []
    for label in data.labels():
        runs = [r for r in data.runs if r.label == label]
        if not runs:
            continue
        p = runs[0].rec.get("params", {})
        mock = (p.get("data") or {}).get("mock") or {}
        mag = mock.get("mag")
        over = data.run(label, "00_data_overview")
        snr = _value(over.rec["metrics"]["snr_l2_median"]) if over and "snr_l2_median" in over.rec.get("metrics", {}) else "⏳"
        cells = [label, p.get("description", ""), _fmt(runs[0].rec.get("dataset", {}).get("n") or mock.get("n")),
                 "–".join(_fmt(x) for x in mag) if mag and mag[0] != mag[1] else (_fmt(mag[0]) if mag else "real data"),
                 _fmt((p.get("noise") or {}).get("noise_level")), snr]
        for _, nb, name in SWEEP_METRICS:
            r = data.run(label, nb)
            cells.append(_value(r.rec["metrics"][name]) if r and name in r.rec.get("metrics", {}) else "⏳")
        for g in GATES:
            found = [(r, v) for r, v in data.verdicts(label) if _matches_gate(v, g["gate"])]
            cells.append(f"{_status(found)} " + ", ".join(_fmt(v.get("value")) for _, v in found) if found else "⏳")
        rows.append(cells)
    return head, rows


def run_rows(data: HubData) -> list[list]:
    """Every notebook run: status (from run.json or the results file), seconds, links and provenance."""
    rows, seen = [], set()
    for s in sorted(data.statuses, key=lambda s: (_label_key(s["label"]), s["notebook"])):
        run = data.run(s["label"], s["notebook"])
        seen.add((s["label"], s["notebook"]))
        rows.append(_run_row(s["label"], s["notebook"], s["status"], s["seconds"], run,
                             s["html_rel"], s.get("error")))
    for run in sorted(data.runs, key=lambda r: (_label_key(r.label), r.notebook)):
        if (run.label, run.notebook) not in seen:
            rows.append(_run_row(run.label, run.notebook, "results only", None, run, run.html_rel, None))
    linked = {c[1] for r in rows for c in r if isinstance(c, tuple)}
    for page in data.html_files:  # a report with neither results nor run status is still linked
        if page not in linked:
            folder, name = page.rsplit("/", 1) if "/" in page else ("", page)
            rows.append([folder, (name, page), "report only (no results file)", "—", "—", "—", "—", "—", "—"])
    return rows


def _run_row(label, notebook, status, seconds, run, html_rel, error):
    mark = "✅" if status in ("ok", "results only") else "❌"
    err = (error or "").strip().splitlines()[0][:160] if error else ""
    return [label, (notebook, html_rel) if html_rel else notebook, f"{mark} {status}" + (f": {err}" if err else ""),
            _fmt(seconds), (run.json_rel.rsplit("/", 1)[-1], run.json_rel) if run else "—",
            ", ".join(str(s) for s in run.rec.get("seeds", [])) if run else "—",
            _short(run.fingerprint) if run else "—", str(run.rec.get("code_version", "—")) if run else "—",
            str(run.rec.get("created", "—")) if run else "—"]


RUN_HEAD = ["configuration", "report", "status", "seconds", "results", "seeds", "dataset", "code", "created"]


def metric_rows(data: HubData) -> list[list]:
    """Every metric of every run (the appendix: nothing computed is left off the page)."""
    rows = []
    for run in sorted(data.runs, key=lambda r: (_label_key(r.label), r.notebook)):
        for name, m in run.rec.get("metrics", {}).items():
            rows.append([run.label, _source(run), name, _value(m)])
    return rows


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1400px;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #bbb;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#eef3f8} tr:nth-child(even) td{background:#fafafa}
pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.9em}
.meta{color:#555;font-size:.9em} code{font-size:.95em}
td.pass{background:#dcecf7 !important} td.fail{background:#f9e0cf !important} td.pending{color:#666}
"""

# Okabe–Ito blue / vermillion tints: PASS and FAIL stay distinct for colour-blind readers (and carry words)
_CLASS = {"✅": "pass", "❌": "fail", "⏳": "pending"}


def _cell_html(c) -> str:
    if isinstance(c, tuple):
        text, href = c
        return f'<a href="{html.escape(href, quote=True)}">{html.escape(str(text))}</a>'
    return html.escape(str(c))


def _td(c) -> str:
    cls = _CLASS.get(c[:1]) if isinstance(c, str) else None
    return f'<td class="{cls}">{_cell_html(c)}</td>' if cls else f"<td>{_cell_html(c)}</td>"


def _table_html(tid: str, head: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = list(rows)
    out = [f'<table id="{tid}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    if not rows:
        out.append(f'<tr><td colspan="{len(head)}">⏳ no results yet</td></tr>')
    for r in rows:
        out.append("<tr>" + "".join(_td(c) for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _cell_md(c) -> str:
    if isinstance(c, tuple):
        text, href = c
        return f"[{_md_escape(str(text))}]({href.replace(' ', '%20')})"
    return _md_escape(str(c))


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table_md(head: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = list(rows) or [["⏳ no results yet"] + [""] * (len(head) - 1)]
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell_md(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _sections(data: HubData) -> list[tuple[str, str, str, list[str], list[list], str]]:
    """(id, title, intro, head, rows, kind) for every table of the page, in order."""
    primary = data.primary()
    sweep_head, sweep = sweep_rows(data)
    tm_head, tm = tree_matrix(data)
    on = f"configuration <b>{html.escape(primary)}</b>" if primary else "no configuration yet"
    return [
        ("sweep", "Configurations", "One row per configuration (SNR sweep): its data, noise level, median SNR and "
         "each gate's verdict with its number(s).", sweep_head, sweep, "table"),
        ("gates", "Gates: one row per configuration and verdict",
         "Each verdict is re-decided here from value, rule and threshold with the notebooks' own function; a "
         "disagreement with the results file would be flagged.", GATE_HEAD, gate_rows(data), "table"),
        ("k-table", "Consensus (K-table)", f"Evidence filled from the results of {on}.",
         ["#", "insight", "evidence (from the runs)", "checks", "decision", "source"], knowledge_rows(data, primary), "table"),
        ("question-tree", "Question tree", f"Drawn for {on}; the status of every node in every configuration "
         "is in the table below it.", [], [], "tree"),
        ("question-matrix", "", "", tm_head, tm, "table"),
        ("decision-gaps", "Decision gaps", f"Status for {on}.",
         ["DG", "gate", "missing answer", "why it matters", "decision rule", "evidence", "status"],
         gap_rows(data, primary), "table"),
        ("authoritative", "Authoritative numbers (per model)", "Every matching metric of every configuration, "
         "value [bootstrap or seed interval].", ["model / method", "metrics", "configuration", "seeds", "dataset",
                                                  "source"], model_rows(data), "table"),
        ("runs", "Runs and reports", "Every notebook run with its status (runner), HTML report, results file and "
         "provenance.", RUN_HEAD, run_rows(data), "table"),
        ("metrics", "Appendix: every metric", "", ["configuration", "notebook", "metric", "value [interval]"],
         metric_rows(data), "table"),
    ]


def render_html(data: HubData) -> str:
    """The Hub page as one self-contained HTML document."""
    primary = data.primary()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>snrmoe Hub — log g SNR-MoE</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>🧠 log g SNR-MoE Hub</h1>",
             f'<p class="meta">Built {html.escape(data.created)} from {len(data.runs)} results file(s) in '
             f"{len(data.labels())} configuration(s). Every number below is read from a results JSON "
             "(linked), which records its configuration, seeds, dataset fingerprint and code version. "
             "✅ PASS · ❌ FAIL · ⏳ no result yet.</p>"]
    for sid, title, intro, head, rows, kind in _sections(data):
        if title:
            parts.append(f'<h2 id="h-{sid}">{html.escape(title)}</h2>')
        if intro:
            parts.append(f"<p>{intro}</p>")
        if kind == "tree":
            parts.append(f'<pre id="{sid}">{html.escape(tree_text(data, primary))}</pre>')
        else:
            parts.append(_table_html(sid, head, rows))
    if data.unreadable:
        parts.append('<h2 id="h-unreadable">Files that are not results</h2><ul id="unreadable">')
        parts += [f"<li><code>{html.escape(p)}</code>: {html.escape(why)}</li>" for p, why in data.unreadable]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(data: HubData) -> str:
    """The Hub tables in Markdown (links relative to the reports folder)."""
    primary = data.primary()
    out = ["# 🧠 log g SNR-MoE Hub", "",
           f"Built {data.created} from {len(data.runs)} results file(s) in {len(data.labels())} configuration(s). "
           "Every number is read from a results JSON (linked) with its configuration, seeds, dataset fingerprint "
           "and code version. ✅ PASS · ❌ FAIL · ⏳ no result yet.", ""]
    for sid, title, intro, head, rows, kind in _sections(data):
        if title:
            out += [f"## {title}", ""]
        if intro:
            out += [re.sub(r"</?b>", "**", intro), ""]
        out += ["```", tree_text(data, primary), "```", ""] if kind == "tree" else [_table_md(head, rows), ""]
    if data.unreadable:
        out += ["## Files that are not results", ""] + [f"- `{p}`: {why}" for p, why in data.unreadable] + [""]
    return "\n".join(out)


def build_hub(reports_dir: str | Path = "reports") -> list[Path]:
    """Write ``<reports_dir>/index.html`` and ``<reports_dir>/hub.md`` from every results file under it.

    Parameters
    ----------
    reports_dir
        The reports folder (``reports/<config>/<notebook>.json`` beneath it).

    Returns
    -------
    list of Path
        The two files written (each atomically: a temporary name, then a rename).

    Raises
    ------
    FileNotFoundError
        If ``reports_dir`` does not exist.
    """
    data = collect(reports_dir)
    root = Path(reports_dir)
    return [atomic_write_text(root / "index.html", render_html(data)),
            atomic_write_text(root / "hub.md", render_markdown(data))]
