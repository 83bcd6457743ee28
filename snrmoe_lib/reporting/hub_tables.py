"""What the Hub shows, and its tables: plain rows of cells (text, or a ``(text, href)`` link).

Which result feeds which Hub entry is data (:data:`QUESTION_TREE`, :data:`GATES`, :data:`KNOWLEDGE`,
:data:`MODELS`); the functions below turn the collected runs (:mod:`snrmoe_lib.reporting.hub_runs`)
into rows, formatting numbers with the same helpers as the notebooks' verdict tables.
"""
from __future__ import annotations

import re

from snrmoe_lib.evaluation.records import decide, decision_basis, format_interval, format_number, format_rule
from snrmoe_lib.reporting.hub_rules import is_mock, knowledge_check
from snrmoe_lib.reporting.hub_runs import HubData, Run, label_key

__all__ = ["QUESTION_TREE", "GATES", "KNOWLEDGE", "MODELS", "SWEEP_METRICS", "PENDING", "INCONCLUSIVE", "GATE_HEAD",
           "RUN_HEAD",
           "gate_rows", "tree_text", "tree_matrix", "knowledge_rows", "gap_rows", "model_rows", "sweep_rows",
           "run_rows", "metric_rows"]

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
    {"id": "G4", "text": "Control: does one model without MoE do as well (whitening, interacted, α per SNR bin)?",
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
     "notebook": "fisher_ceiling", "metrics": r"^r2_max_3d_", "decision": "SNR-aware strategy (MoE or conditional)"},
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
     "metrics": r"^deployed_r2|^rho_deployed|^rho_vs_best_oracle|^fallback_rate|^gate_accuracy"},
    {"model": "Matched oracles (hard, soft, regression; best of the three)", "notebook": "q3_deployable_gate",
     "metrics": r"^oracle_(hard|soft|regression|best)_r2"},
    {"model": "Regression gate", "notebook": "q3_deployable_gate", "metrics": r"^regression_"},
    {"model": "Single-model controls (Gate-4: whitening, interacted, α per gated bin)", "notebook": "q3_deployable_gate",
     "metrics": r"^(whitening|interacted|snr_alpha_gated)_r2"},
    {"model": "Stronger experts (Q4: Ridge, boosted, neural — global / oracle / deployed; FiLM; residual mixtures)",
     "notebook": "q4_stronger_experts",
     "metrics": r"^[a-z]+_(global|oracle_hard|oracle_soft|deployed)_r2|^([a-z]+_)?residual_mixture_r2|^film_conditional_r2"},
    {"model": "Fisher / CRLB ceiling (median R²_max, 3-D and 5-D marginal)", "notebook": "fisher_ceiling",
     "metrics": r"^r2_max_"},
]

#: Headline numbers per configuration in the sweep table: (column, notebook, metric).
SWEEP_METRICS = [("global R²", "q1_snr_headroom", "global_r2"), ("SNR-oracle R²", "q1_snr_headroom", "snr_oracle_r2"),
                 ("deployed R²", "q3_deployable_gate", "deployed_r2")]

_SYMBOL = {"PASS": "✅", "FAIL": "❌", "INCONCLUSIVE": "❔", None: "⏳"}
PENDING = "⏳ pending"
INCONCLUSIVE = "❔ INCONCLUSIVE"


# ------------------------------------------------------------------------------------------------
# Tables (plain rows of cells; each cell is text or a (text, href) link)
# ------------------------------------------------------------------------------------------------


def _seeds(run: Run) -> str:
    return ", ".join(str(s) for s in run.rec.get("seeds", []))


def _value(rec: dict) -> str:
    if isinstance(rec, dict):
        iv = format_interval(rec.get("interval"))
        return format_number(rec.get("value")) + (f" {iv}" if iv else "")
    return format_number(rec)


def _checked(v: dict) -> tuple[str, bool]:
    """The verdict re-decided from value, op, threshold and interval, and whether it agrees with the stored one."""
    try:
        mine = decide(v.get("value"), v["op"], v["threshold"], v.get("interval"))
    except (KeyError, ValueError, TypeError):
        return "INCONCLUSIVE", False
    return mine, mine == v.get("verdict")


def _verdict_cell(v: dict) -> str:
    mine, ok = _checked(v)
    basis = decision_basis(v.get("value"), v.get("interval"))
    how = {"point": " (point value, no interval)", "none": " (no value)"}.get(basis, "")
    return f"{_SYMBOL.get(mine, '⏳')} {mine}{how}" + ("" if ok else f" (file says {v.get('verdict')})")


def _source(run: Run):
    return (run.notebook, run.html_rel or run.json_rel)


def _matches_gate(v: dict, gate: str) -> bool:
    return str(v.get("gate", "")) == gate


def gate_rows(data: HubData) -> list[list]:
    """One row per configuration and verdict, with the number, threshold, PASS/FAIL and provenance."""
    order = {g["gate"]: i for i, g in enumerate(GATES)}
    items = sorted(data.verdicts(), key=lambda rv: (label_key(rv[0].label),
                                                     order.get(str(rv[1].get("gate", "")).split(" ")[0], 99),
                                                     str(rv[1].get("gate")), str(rv[1].get("metric"))))
    rows = []
    for run, v in items:
        rows.append([run.label, v.get("gate", "?"), v.get("question", ""), v.get("metric", ""), format_number(v.get("value")),
                     format_interval(v.get("interval")), format_rule(v.get("op"), v.get("threshold")), _verdict_cell(v),
                     _source(run), _seeds(run),
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


def _status(found: list[tuple[Run | None, dict]]) -> str:
    """A node's state from its verdicts: any FAIL fails it, all PASS pass it, anything else (an
    interval straddling a threshold, a missing number) is INCONCLUSIVE."""
    # the word beside the symbol keeps the page readable where no emoji font is installed
    decided = [_checked(v)[0] for _, v in found]
    if not decided:
        return PENDING
    return "❌ FAIL" if "FAIL" in decided else ("✅ PASS" if all(d == "PASS" for d in decided) else INCONCLUSIVE)


def _evidence(found: list[tuple[Run | None, dict]]) -> str:
    def one(v: dict) -> str:
        iv = format_interval(v.get("interval"))
        return (f"{v.get('metric')} = {format_number(v.get('value'))}" + (f" {iv}" if iv else "")
                + f" {format_rule(v.get('op'), v.get('threshold'))}")
    return "; ".join(one(v) for _, v in found)


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
    lines.append("Legend: ✅ verified (PASS) | ❌ rejected (FAIL) | ❔ INCONCLUSIVE (an interval straddles the "
                 "threshold) | ⏳ no result yet (pending)")
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
    """The K-table: each claim's evidence, and its state from the claim's rule
    (:mod:`~snrmoe_lib.reporting.hub_rules`) and the notebooks' own checks of it."""
    rows = []
    for k in KNOWLEDGE:
        run = data.run(label, k["notebook"]) if label else None
        ev = _metric_list(run, k["metrics"]) if run else ""
        checks = [(r, v) for r, v in data.verdicts(label) if str(v.get("question")) == k["id"]] if label else []
        ruled, words = knowledge_check(data, label, k["id"])
        ruled = [(None, v) for v in ruled]
        parts = []
        if words:  # the claim itself, checked by its rule
            parts.append(f"rule: {words} → " + (f"{_status(ruled)}: {_evidence(ruled)}" if ruled else "⏳ no result"))
        if checks:  # the notebooks' own checks filed under the claim (e.g. the mock's calibration)
            parts.append(f"checks: {_status(checks)}: {_evidence(checks)}")
        rows.append([k["id"], k["claim"], ev or f"⏳ no {k['notebook']} result", "; ".join(parts) or "—",
                     k["decision"], _source(run) if run else "—"])
    return rows


def _metric_list(run: Run, pattern: str) -> str:
    items = [(n, m) for n, m in run.rec.get("metrics", {}).items() if re.search(pattern, n, re.I)]
    return "; ".join(f"{n} = {_value(m)}" for n, m in items)


def gap_rows(data: HubData, label: str | None) -> list[list]:
    rows = []
    for g in GATES:
        found = [(r, v) for r, v in data.verdicts(label) if _matches_gate(v, g["gate"])] if label else []
        st = _status(found)
        # a decision taken on mock data is provisional until the same notebook runs on real data
        closed = "provisional (mock data)" if any(is_mock(r) for r, _ in found) else "closed"
        if st.startswith("✅"):
            decision = f"{closed}: {g['on_pass']}"
        elif st.startswith("❌"):
            decision = f"{closed}: {g['on_fail']}"
        elif st == INCONCLUSIVE:
            decision = "open: INCONCLUSIVE (an interval straddles the threshold)"
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
                rows.append([m["model"], ev, label, _seeds(run),
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
        cells = [label, p.get("description", ""), format_number(runs[0].rec.get("dataset", {}).get("n") or mock.get("n")),
                 "–".join(format_number(x) for x in mag) if mag and mag[0] != mag[1] else (format_number(mag[0]) if mag else "real data"),
                 format_number((p.get("noise") or {}).get("noise_level")), snr]
        for _, nb, name in SWEEP_METRICS:
            r = data.run(label, nb)
            cells.append(_value(r.rec["metrics"][name]) if r and name in r.rec.get("metrics", {}) else "⏳")
        for g in GATES:
            found = [(r, v) for r, v in data.verdicts(label) if _matches_gate(v, g["gate"])]
            cells.append(f"{_status(found)} " + ", ".join(format_number(v.get("value")) for _, v in found) if found else "⏳")
        rows.append(cells)
    return head, rows


def run_rows(data: HubData) -> list[list]:
    """Every notebook run: status (from run.json or the results file), seconds, links and provenance."""
    rows, seen = [], set()
    frozen = _frozen_tests(data)
    for s in sorted(data.statuses, key=lambda s: (label_key(s["label"]), s["notebook"])):
        run = data.run(s["label"], s["notebook"])
        seen.add((s["label"], s["notebook"]))
        rows.append(_run_row(s["label"], s["notebook"], s["status"], s["seconds"], run,
                             s["html_rel"], s.get("error"), frozen))
    for run in sorted(data.runs, key=lambda r: (label_key(r.label), r.notebook)):
        if (run.label, run.notebook) not in seen:
            rows.append(_run_row(run.label, run.notebook, "results only", None, run, run.html_rel, None, frozen))
    linked = {c[1] for r in rows for c in r if isinstance(c, tuple)}
    for page in data.html_files:  # a report with neither results nor run status is still linked
        if page not in linked:
            folder, name = page.rsplit("/", 1) if "/" in page else ("", page)
            rows.append([folder, (name, page), "report only (no results file)"] + ["—"] * (len(RUN_HEAD) - 3))
    return rows


def _frozen_tests(data: HubData) -> dict:
    """(label, notebook) → the frozen-test cell: its fingerprint, and whether the configuration's notebooks share it."""
    by_label: dict[str, set] = {}
    for r in data.runs:
        ft = r.rec.get("frozen_test")
        if isinstance(ft, dict) and ft.get("fingerprint"):
            by_label.setdefault(r.label, set()).add(str(ft["fingerprint"]))
    out = {}
    for r in data.runs:
        ft = r.rec.get("frozen_test")
        if not isinstance(ft, dict) or not ft.get("fingerprint"):
            out[(r.label, r.notebook)] = "— (not recorded)"
            continue
        shared = len(by_label[r.label]) == 1
        out[(r.label, r.notebook)] = (f"{_short(str(ft['fingerprint']))} n={ft.get('n')} seed={ft.get('seed')} "
                                      + ("(shared)" if shared else f"⚠ {len(by_label[r.label])} different test sets"))
    return out


def _run_row(label, notebook, status, seconds, run, html_rel, error, frozen=None):
    mark = "✅" if status in ("ok", "results only") else ("⏳" if status in ("running", "pending") else "❌")
    err = (error or "").strip().splitlines()[0][:160] if error else ""
    return [label, (notebook, html_rel) if html_rel else notebook, f"{mark} {status}" + (f": {err}" if err else ""),
            format_number(seconds), (run.json_rel.rsplit("/", 1)[-1], run.json_rel) if run else "—",
            _seeds(run) if run else "—",
            _short(run.fingerprint) if run else "—", (frozen or {}).get((label, notebook), "—") if run else "—",
            str(run.rec.get("code_version", "—")) if run else "—",
            str(run.rec.get("created", "—")) if run else "—"]


RUN_HEAD = ["configuration", "report", "status", "seconds", "results", "seeds", "dataset", "frozen test", "code",
            "created"]


def metric_rows(data: HubData) -> list[list]:
    """Every metric of every run (the appendix: nothing computed is left off the page)."""
    rows = []
    for run in sorted(data.runs, key=lambda r: (label_key(r.label), r.notebook)):
        for name, m in run.rec.get("metrics", {}).items():
            rows.append([run.label, _source(run), name, _value(m)])
    return rows
