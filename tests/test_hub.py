"""The Hub page: built from results files only, every verdict re-decided, opened in a real headless browser.

The results files below are TEST FIXTURES, fabricated here to exercise every table (they are not
science results); one test also builds the page from a real papermill run of ``00_data_overview``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from snrmoe_lib.orchestration.cli import main
from snrmoe_lib.config import params_from_dict
from snrmoe_lib.reporting.hub import build_hub, collect
from snrmoe_lib.evaluation.records import metric, verdict, write_results

ROOT = Path(__file__).resolve().parent.parent
TABLE_IDS = ("sweep", "gates", "k-table", "question-matrix", "decision-gaps", "authoritative", "runs", "metrics")


# ---------------------------------------------------------------------------------------- fixtures


def _fixture_run(reports: Path, config: str, notebook: str, metrics: dict, verdicts: list, mag=(20.5, 22.5),
                 html: bool = True) -> Path:
    """Write one fabricated results file (and a stand-in HTML report) the way a notebook would."""
    p = params_from_dict({"name": config, "description": f"test fixture {config}",
                          "data": {"path": "x.h5", "mock": {"n": 100, "mag": list(mag)}}})
    out = reports / config
    path = write_results(out, notebook, p, dataset={"path": "x.h5", "fingerprint": f"fp-{config}-0123456789abcdef",
                                                    "n": 100}, metrics=metrics, verdicts=verdicts,
                         figures=[f"{notebook}_fig.png"])
    (out / f"{notebook}_fig.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    if html:
        (out / f"{notebook}.html").write_text(f"<!DOCTYPE html><html><body><h1>{notebook} {config}</h1></body></html>")
    return path


@pytest.fixture
def reports(tmp_path):
    """Two configurations: 'default' complete, 'mag22.5' with Q3 missing and one failed notebook."""
    r = tmp_path / "reports"
    for cfg, dr2, logg_r2 in (("default", 0.051, 0.012), ("mag22.5", 0.004, 0.2)):
        _fixture_run(r, cfg, "00_data_overview", {"snr_l2_median": metric(2.9 if cfg == "default" else 1.7)}, [])
        _fixture_run(r, cfg, "q1_snr_headroom",
                     {"global_r2": metric(0.4611, (0.45, 0.47)), "snr_oracle_r2": metric(0.4611 + dr2),
                      "phys_oracle_r2": metric(0.6249), "delta_r2_snr": metric(dr2, (dr2 - 0.01, dr2 + 0.01))},
                     [verdict("Gate-2", "Q1", "delta_r2_snr", dr2, ">=", 0.02, (dr2 - 0.01, dr2 + 0.01)),
                      # a robustness variant: listed, but it does not decide Q1.1
                      verdict("Gate-2 (noise_level 0.5)", "Q1", "delta_r2_snr", 0.001, ">=", 0.02)])
        _fixture_run(r, cfg, "q2_error_leakage", {"clean/r2_logg[S0]": metric(0.93),
                                                  "clean/r2_logg[S2]": metric(logg_r2)},
                     [verdict("Gate-1", "Q2", "r2_logg[S2]", logg_r2, "<", 0.05),
                      verdict("Gate-1", "Q2", "r2_snr[S2]", 0.8, ">", 0.5)])
    _fixture_run(r, "default", "q3_deployable_gate", {"deployed_r2": metric(0.50), "rho_deployed": metric(0.81)},
                 [verdict("Gate-3", "Q3", "rho_deployed", 0.81, ">=", 0.7)])
    _fixture_run(r, "default", "fisher_ceiling", {"r2_max_3d_mag21.5": metric(0.8914)},
                 [verdict("K1-check", "K1", "fd_vs_autograd", 0.03, "<=", 0.25)])
    (r / "mag22.5" / "run.json").write_text(json.dumps({"config": "mag22.5", "finished": "2026-01-01T00:00:00+00:00",
        "notebooks": [{"notebook": "q1_snr_headroom", "status": "ok", "seconds": 12.0},
                      {"notebook": "q3_deployable_gate", "status": "failed", "seconds": 3.0,
                       "error": "RuntimeError: fixture failure"}]}))
    # a results file kept aside by the runner after a failed run is stale: never shown as current
    stale = json.loads((r / "default" / "q3_deployable_gate.json").read_text())
    stale["metrics"]["rho_deployed"]["value"] = 0.123456
    (r / "mag22.5" / "q3_deployable_gate.previous.json").write_text(json.dumps(stale))
    (r / "mag22.5" / "notes.json").write_text('{"not": "a results file"}')
    (r / "mag22.5" / "orphan.html").write_text("<!DOCTYPE html><html><body>a report without results</body></html>")
    return r


class _Page(HTMLParser):
    """Collects links, table ids and their row counts, the title and the question tree."""

    def __init__(self):
        super().__init__()
        self.links, self.tables, self.title, self.pre = [], {}, "", ""
        self._table, self._in = None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = 0
        elif tag == "tr" and self._table is not None:
            self.tables[self._table] += 1
        elif tag in ("title", "pre"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "pre":
            self.pre += data


def _browser() -> str | None:
    for name in (os.environ.get("SNRMOE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _browser()
    if exe is None:
        if os.environ.get("SNRMOE_ALLOW_NO_BROWSER") == "1":
            pytest.skip("no chromium and SNRMOE_ALLOW_NO_BROWSER=1")
        pytest.fail("the Hub test needs Debian's chromium (apt-get install -y chromium); "
                    "set SNRMOE_ALLOW_NO_BROWSER=1 to skip it on a machine without one")
    return exe


def dump_dom(exe: str, page: Path) -> str:
    """Load ``page`` in headless chromium and return the DOM it built."""
    with tempfile.TemporaryDirectory(prefix="snrmoe-chromium-") as profile:
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--no-first-run",
                              f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"chromium failed on {page}: {out.stderr[-2000:]}"
    return out.stdout


def check_in_browser(exe: str, index: Path, n_reports: int = 3) -> _Page:
    """The page loads, its tables are there, every link resolves; a few linked reports load too."""
    dom = dump_dom(exe, index)
    page = _Page()
    page.feed(dom)
    assert "Hub" in page.title
    for tid in TABLE_IDS:
        assert tid in page.tables, f"table #{tid} missing from the rendered page"
        assert page.tables[tid] >= 2, f"table #{tid} has no body rows"
    assert "Q1.1" in page.pre and "Legend" in page.pre
    base = index.resolve().as_uri()
    assert page.links, "the page links to nothing"
    reports = []
    for href in page.links:
        assert not urlparse(href).scheme, f"absolute link {href!r}: links must be relative"
        target = Path(unquote(urlparse(urljoin(base, href)).path))
        assert target.is_file(), f"link {href!r} does not resolve ({target} missing)"
        if target.suffix == ".html" and target not in reports:
            reports.append(target)
    for target in reports[:n_reports]:
        assert "<body" in dump_dom(exe, target)
    return page


# ---------------------------------------------------------------------------------------- tests


def test_collect_reads_results_and_leaves_stale_and_foreign_files_out(reports):
    data = collect(reports)
    assert sorted({r.label for r in data.runs}) == ["default", "mag22.5"]
    assert len(data.runs) == 8  # default: 5 notebooks, mag22.5: 3
    assert data.primary() == "default"
    assert [p for p, _ in data.unreadable] == ["mag22.5/notes.json"]
    assert {s["status"] for s in data.statuses} == {"ok", "failed"}


def test_hub_tables_come_from_the_results(reports):
    paths = build_hub(reports)
    assert [p.name for p in paths] == ["index.html", "hub.md"]
    md = (reports / "hub.md").read_text()
    page = (reports / "index.html").read_text()
    # one gates row per configuration and verdict: 2 configs × (2 × Gate-2 + 2 × Gate-1) + Gate-3 = 9
    gate_lines = [ln for ln in md.splitlines() if ln.startswith("| default |") or ln.startswith("| mag22.5 |")]
    gate_lines = [ln for ln in gate_lines if "| Gate-" in ln]
    assert len(gate_lines) == 9
    assert "| K1-check | K1 |" in md
    assert any("| Gate-2 |" in ln and "0.051" in ln and ">= 0.02" in ln and "✅ PASS" in ln for ln in gate_lines)
    assert any(ln.startswith("| mag22.5 |") and "| Gate-2 |" in ln and "❌ FAIL" in ln for ln in gate_lines)
    assert any(ln.startswith("| mag22.5 |") and "r2_logg[S2]" in ln and "❌ FAIL" in ln for ln in gate_lines)
    # numbers from the files, provenance beside them, the stale value nowhere
    for text in ("0.4611", "0.6249", "0.8914", "fp-default-0", "[0.45, 0.47]"):
        assert text in md and text in page
    assert "0.1235" not in md and "0.123456" not in md
    # the question tree of the primary configuration, and the per-configuration matrix
    assert "Q1.1: Oracle SNR experts" in md and "→ ✅ PASS  (delta_r2_snr = 0.051 [0.041, 0.061] >= 0.02)" in md
    assert [ln for ln in md.splitlines() if ln.startswith("| K1 |")][0].count("✅ PASS: fd_vs_autograd") == 1
    matrix = [ln for ln in md.splitlines() if ln.startswith("| Q3.1 |")]
    assert matrix == ["| Q3.1 | Soft routing on quality features: ρ ≥ threshold? | ✅ PASS | ⏳ pending |"]
    assert [ln for ln in md.splitlines() if ln.startswith("| Q2.1 |")][0].endswith("| ✅ PASS | ❌ FAIL |")
    # decision gaps: decided by a pass (provisional: the fixtures are mock runs), open without a result
    assert "| DG2 | Gate-2 |" in md and "✅ provisional (mock data): build the MoE" in md
    assert "closed:" not in md
    assert "⏳ open" in md
    # a failed notebook is shown with its error; missing results are ⏳, not blank
    assert "❌ failed: RuntimeError: fixture failure" in md
    assert "[orphan.html](mag22.5/orphan.html)" in md
    assert "⏳" in [ln for ln in md.splitlines() if ln.startswith("| mag22.5 |") and "test fixture" in ln][0]
    assert not list(reports.glob(".*tmp*")), "atomic writes leave no temporary files"


def test_hub_flags_a_verdict_that_disagrees_with_its_numbers(reports):
    path = reports / "default" / "q3_deployable_gate.json"
    rec = json.loads(path.read_text())
    rec["verdicts"][0]["value"] = 0.5  # below the 0.7 threshold while the file still says PASS
    path.write_text(json.dumps(rec))
    build_hub(reports)
    md = (reports / "hub.md").read_text()
    assert "❌ FAIL (point value, no interval) (file says PASS)" in md


def test_hub_shows_mock_data_inconclusive_verdicts_and_checks_k_claims(reports):
    # Gate-3's interval straddles the threshold: INCONCLUSIVE everywhere it is shown, the gap stays open
    _fixture_run(reports, "default", "q3_deployable_gate", {"rho_deployed": metric(0.75, (0.62, 0.88))},
                 [verdict("Gate-3", "Q3", "rho_deployed", 0.75, ">=", 0.7, (0.62, 0.88))])
    # K2's rule: the SNR-oracle gain must be larger at the higher noise level (here it is smaller)
    _fixture_run(reports, "default", "q1_snr_headroom",
                 {"delta_r2_snr": metric(0.02, (0.015, 0.025)), "delta_r2_snr_nl0.5": metric(0.05, (0.04, 0.06))},
                 [verdict("Gate-2", "Q1", "delta_r2_snr", 0.02, ">=", 0.02, (0.015, 0.025))])
    build_hub(reports)
    md = (reports / "hub.md").read_text()
    page = (reports / "index.html").read_text()
    assert md.startswith("# 🧠 log g SNR-MoE Hub\n\n> ⚠️ **MOCK DATA") and 'id="mock-banner"' in page
    assert "❔ INCONCLUSIVE" in [ln for ln in md.splitlines() if ln.startswith("| default |") and "| Gate-3 |" in ln][0]
    assert [ln for ln in md.splitlines() if ln.startswith("| Q3.1 |")][0].startswith("| Q3.1 | Soft routing") \
        and "❔ INCONCLUSIVE" in md and 'class="inconclusive"' in page
    assert "❔ open: INCONCLUSIVE" in [ln for ln in md.splitlines() if ln.startswith("| DG3 |")][0]
    k2 = [ln for ln in md.splitlines() if ln.startswith("| K2 |")][0]
    assert "rule: ΔR²_snr larger at the higher noise level" in k2 and "❌ FAIL" in k2
    k3 = [ln for ln in md.splitlines() if ln.startswith("| K3 |")][0]
    assert "rule: raw-σ log g R² above the Gate-1 limit" in k3 and "✅ PASS" in k3  # S0 leaks: 0.93 > 0.05


def test_a_hub_without_mock_runs_has_no_banner(tmp_path):
    p = params_from_dict({"name": "real", "data": {"path": "x.h5"}})
    write_results(tmp_path / "real", "q1_snr_headroom", p, dataset={"path": "x.h5", "fingerprint": "f"},
                  metrics={}, verdicts=[verdict("Gate-2", "Q1", "delta_r2_snr", 0.05, ">=", 0.02, (0.03, 0.07))])
    build_hub(tmp_path)
    md = (tmp_path / "hub.md").read_text()
    assert "MOCK DATA" not in md and "✅ closed: build the MoE" in md


def test_hub_on_an_empty_folder_and_a_missing_one(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    build_hub(tmp_path / "r")
    assert "⏳ no results yet" in (tmp_path / "r" / "hub.md").read_text()
    with pytest.raises(FileNotFoundError, match="reports folder not found"):
        build_hub(tmp_path / "nope")
    assert main(["hub", "--reports", str(tmp_path / "nope")]) == 2
    assert "reports folder not found" in capsys.readouterr().err


def test_hub_page_in_a_headless_browser(reports, browser):
    build_hub(reports)
    page = check_in_browser(browser, reports / "index.html")
    # every HTML report and every results file is linked
    hrefs = set(page.links)
    for f in list(reports.glob("*/*.html")) + [p for p in reports.glob("*/*.json") if p.name not in
                                                  ("run.json", "notes.json") and not p.name.endswith(".previous.json")]:
        assert f.relative_to(reports).as_posix() in hrefs, f"{f.name} is not linked"


def test_hub_from_a_real_overview_run(tmp_path, browser):
    """A real papermill run of 00_data_overview on the smoke configuration, then the Hub over it."""
    from snrmoe_lib.orchestration.runner import run_config

    if not (ROOT / "data" / "mock_smoke.h5").exists():
        pytest.skip("the smoke dataset is made by `make test` (snrmoe simulate --params params/smoke.yaml)")
    statuses = run_config(ROOT / "params" / "smoke.yaml", notebooks=["00_data_overview"],
                          reports_dir=tmp_path / "reports", progress=False)
    assert [s.status for s in statuses] == ["ok"], statuses[0].error
    assert main(["hub", "--reports", str(tmp_path / "reports")]) == 0
    rec = json.loads((tmp_path / "reports" / "smoke" / "00_data_overview.json").read_text())
    md = (tmp_path / "reports" / "hub.md").read_text()
    snr = rec["metrics"]["snr_l2_median"]["value"]
    assert f"{snr:.4g}" in md and rec["dataset"]["fingerprint"][:12] in md and rec["code_version"] in md
    page = check_in_browser(browser, tmp_path / "reports" / "index.html", n_reports=1)
    assert "smoke/00_data_overview.html" in page.links
