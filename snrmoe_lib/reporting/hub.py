"""The Hub page: every gate, question and headline number of every run, read from the results files.

:func:`build_hub` reads every results JSON under ``reports/`` (written by the notebooks through
:func:`snrmoe_lib.evaluation.records.write_results`) and the runner's ``run.json`` files, and writes

* ``reports/index.html`` — one self-contained page (no scripts, no network), relative links to
  every HTML report, results JSON and run status;
* ``reports/hub.md`` — the same tables in Markdown.

Both are written atomically. Nothing on the page is typed in: every number comes from a results
file, shown beside its configuration, seeds, dataset fingerprint and code version. The verdicts are
re-decided with :func:`snrmoe_lib.evaluation.records.decide` (the one function every notebook
uses) and a disagreement with the stored verdict is flagged, not hidden. A question or gate with no result yet
shows ⏳.

The tables mirror the user's Hub document: the consensus K-table, the question tree (✅ / ❌ / ⏳),
the decision gaps and the "authoritative numbers". Which result feeds which Hub entry is data
(:data:`QUESTION_TREE`, :data:`GATES`, :data:`KNOWLEDGE`, :data:`MODELS`, in
:mod:`snrmoe_lib.reporting.hub_tables`): gates are matched by their name prefix and question,
headline numbers by a regular expression over the metric names of one notebook, so a new metric
shows up without a change here. This module renders those tables as HTML and Markdown.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Iterable, Sequence

from snrmoe_lib.data.writers import atomic_write_text
from snrmoe_lib.reporting.hub_rules import mock_labels
from snrmoe_lib.reporting.hub_runs import HubData, Run, collect
from snrmoe_lib.reporting.hub_tables import (GATE_HEAD, GATES, KNOWLEDGE, MODELS, QUESTION_TREE, RUN_HEAD, gap_rows,
                                             gate_rows, knowledge_rows, metric_rows, model_rows, run_rows, sweep_rows,
                                             tree_matrix, tree_text)

__all__ = ["QUESTION_TREE", "GATES", "KNOWLEDGE", "MODELS", "Run", "HubData", "collect", "build_hub",
           "render_html", "render_markdown", "mock_banner"]

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
td.inconclusive{background:#fbf1c7 !important}
td.warn{background:#fff3c4 !important}
.banner{border:2px solid #d55e00;background:#fdf0e6;padding:.6em 1em;font-weight:600}
"""

# Okabe–Ito blue / vermillion tints: PASS and FAIL stay distinct for colour-blind readers (and carry words)
_CLASS = {"✅": "pass", "❌": "fail", "❔": "inconclusive", "⏳": "pending", "⚠": "warn"}
_LEGEND = "✅ PASS · ❌ FAIL · ❔ INCONCLUSIVE (the interval straddles the threshold) · ⏳ no result yet."


def mock_banner(data: HubData) -> str:
    """The warning shown above everything when any run used mock data ('' when none did)."""
    labels = mock_labels(data)
    if not labels:
        return ""
    return ("MOCK DATA: configuration(s) " + ", ".join(labels) + " ran on the project's mock simulator, not on "
            "BOSZ / PFS-simulator products. Every verdict and decision below is provisional until the same "
            "notebooks run on real data.")


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
         "provenance; the frozen test says whether a configuration's notebooks scored the same test stars.",
         RUN_HEAD, run_rows(data) + _unreadable_rows(data), "table"),
        ("metrics", "Appendix: every metric", "", ["configuration", "notebook", "metric", "value [interval]"],
         metric_rows(data), "table"),
    ]


def _unreadable_rows(data: HubData) -> list[list]:
    """A visible warning row for every file under reports/ that could not be read as results."""
    return [[p.rsplit("/", 1)[0] if "/" in p else "", (p.rsplit("/", 1)[-1], p), f"⚠ not read: {why}"]
            + ["—"] * (len(RUN_HEAD) - 3) for p, why in data.unreadable]


def render_html(data: HubData, models: Sequence[tuple[str, str]] = ()) -> str:
    """The Hub page as one self-contained HTML document (``models``: (name, link) of saved models' cards)."""
    primary = data.primary()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>snrmoe Hub — log g SNR-MoE</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>🧠 log g SNR-MoE Hub</h1>"]
    banner = mock_banner(data)
    if banner:
        parts.append(f'<p class="banner" id="mock-banner">⚠️ {html.escape(banner)}</p>')
    parts += [f'<p class="meta">Built {html.escape(data.created)} from {len(data.runs)} results file(s) in '
              f"{len(data.labels())} configuration(s). Every number below is read from a results JSON "
              "(linked), which records its configuration, seeds, dataset fingerprint and code version. "
              f"{html.escape(_LEGEND)}</p>"]
    for sid, title, intro, head, rows, kind in _sections(data):
        if title:
            parts.append(f'<h2 id="h-{sid}">{html.escape(title)}</h2>')
        if intro:
            parts.append(f"<p>{intro}</p>")
        if kind == "tree":
            parts.append(f'<pre id="{sid}">{html.escape(tree_text(data, primary))}</pre>')
        else:
            parts.append(_table_html(sid, head, rows))
    if models:
        parts.append('<h2 id="h-models">Deployed models</h2><ul id="models">')
        parts += [f'<li><a href="{html.escape(href, quote=True)}">{html.escape(n)}</a> (model card)</li>' for n, href in models]
        parts.append("</ul>")
    if data.unreadable:
        parts.append('<h2 id="h-unreadable">Files that are not results</h2><ul id="unreadable">')
        parts += [f"<li><code>{html.escape(p)}</code>: {html.escape(why)}</li>" for p, why in data.unreadable]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_markdown(data: HubData) -> str:
    """The Hub tables in Markdown (links relative to the reports folder)."""
    primary = data.primary()
    banner = mock_banner(data)
    out = ["# 🧠 log g SNR-MoE Hub", ""] + ([f"> ⚠️ **{banner}**", ""] if banner else []) + [
           f"Built {data.created} from {len(data.runs)} results file(s) in {len(data.labels())} configuration(s). "
           "Every number is read from a results JSON (linked) with its configuration, seeds, dataset fingerprint "
           f"and code version. {_LEGEND}", ""]
    for sid, title, intro, head, rows, kind in _sections(data):
        if title:
            out += [f"## {title}", ""]
        if intro:
            out += [re.sub(r"</?b>", "**", intro), ""]
        out += ["```", tree_text(data, primary), "```", ""] if kind == "tree" else [_table_md(head, rows), ""]
    if data.unreadable:
        out += ["## Files that are not results", ""] + [f"- `{p}`: {why}" for p, why in data.unreadable] + [""]
    return "\n".join(out)


def model_cards(reports_dir: Path) -> list[tuple[str, str]]:
    """(name, link relative to the reports folder) of every saved model's card in ``<project>/models/``."""
    models = Path(reports_dir).parent / "models"
    cards = sorted(models.glob("*/card.html")) if models.is_dir() else []
    return [(c.parent.name, f"../models/{c.parent.name}/card.html") for c in cards]


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
    return [atomic_write_text(root / "index.html", render_html(data, model_cards(root))),
            atomic_write_text(root / "hub.md", render_markdown(data))]
