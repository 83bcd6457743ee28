"""The runner: papermill execution, HTML beside each notebook, and a failure that hides nothing."""
import json

import nbformat
import pytest

from snrmoe_lib.orchestration.cli import main
from snrmoe_lib.orchestration.runner import discover_notebooks, run_config

GOOD = '''from snrmoe_lib import load_params, write_results, metric
p = load_params(params_path)
write_results(output_dir, "{name}", p, dataset={{}}, metrics={{"answer": metric(42)}})
print("done")'''


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_path = "x"\noutput_dir = "y"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("# A test notebook"),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "a_first.ipynb", GOOD.format(name="a_first"))
    _notebook(nbdir / "b_broken.ipynb", 'raise RuntimeError("this notebook is broken on purpose")')
    _notebook(nbdir / "c_last.ipynb", GOOD.format(name="c_last"))
    _notebook(nbdir / "d_no_results.ipynb", "x = 1")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: t\n")
    return tmp_path, nbdir, cfg


def test_failing_notebook_does_not_hide_the_others(project):
    root, nbdir, cfg = project
    statuses = run_config(cfg, notebooks_dir=nbdir, reports_dir=root / "reports", progress=False)
    by = {s.notebook: s for s in statuses}
    assert [s.notebook for s in statuses] == ["a_first", "b_broken", "c_last", "d_no_results"]
    assert by["a_first"].ok and by["c_last"].ok
    assert by["b_broken"].status == "failed" and "broken on purpose" in by["b_broken"].error
    assert by["d_no_results"].status == "missing_results"
    out = root / "reports" / "t"
    for name in ("a_first", "b_broken", "c_last"):
        assert (out / f"{name}.ipynb").exists() and (out / f"{name}.html").exists()
    html = (out / "a_first.html").read_text()
    assert "done" in html and "cdnjs" not in html and "require.min.js" not in html
    assert json.loads((out / "a_first.json").read_text())["metrics"]["answer"]["value"] == 42
    run = json.loads((out / "run.json").read_text())
    assert [n["status"] for n in run["notebooks"]] == ["ok", "failed", "ok", "missing_results"]


def test_cli_exits_nonzero_when_a_notebook_fails(project, capsys):
    root, nbdir, cfg = project
    import snrmoe_lib.orchestration.runner as runner

    orig = runner.project_root
    runner.project_root = lambda: root
    try:
        code = main(["run", "--params", str(cfg), "--notebooks", "a_first", "b_broken", "--reports", str(root / "r")])
    finally:
        runner.project_root = orig
    assert code == 1
    assert "failed" in capsys.readouterr().err
    assert (root / "r" / "t" / "a_first.json").exists()


def test_discover_orders_and_names_missing(tmp_path):
    for n in ("zeta", "q1_snr_headroom", "00_data_overview", "q2_error_leakage"):
        (tmp_path / f"{n}.ipynb").write_text("{}")
    assert [p.stem for p in discover_notebooks(tmp_path)] == ["00_data_overview", "q2_error_leakage",
                                                               "q1_snr_headroom", "zeta"]
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_notebooks(tmp_path, ["nope"])


STAMP = '''import time, pathlib
pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
pathlib.Path(output_dir, "{name}.start").write_text(repr(time.time()))
{body}
pathlib.Path(output_dir, "{name}.end").write_text(repr(time.time()))
''' + GOOD


def test_parallel_runs_notebooks_side_by_side_but_after_what_they_read(tmp_path, monkeypatch):
    import snrmoe_lib.orchestration.runner as runner

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "a_slow.ipynb", STAMP.format(name="a_slow", body="time.sleep(4)"))
    _notebook(nbdir / "b_free.ipynb", STAMP.format(name="b_free", body=""))
    reads_a = 'assert pathlib.Path(output_dir, "a_slow.end").exists(), "started before a_slow ended"'
    _notebook(nbdir / "c_reads_a.ipynb", STAMP.format(name="c_reads_a", body=reads_a))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: t\n")
    monkeypatch.setattr(runner, "NOTEBOOK_NEEDS", {"a_slow": (), "b_free": (), "c_reads_a": ("a_slow",)})
    statuses = run_config(cfg, notebooks_dir=nbdir, reports_dir=tmp_path / "reports", progress=False, jobs=2)
    assert [s.notebook for s in statuses] == ["a_slow", "b_free", "c_reads_a"]
    assert all(s.ok for s in statuses), [s.error for s in statuses]
    out = tmp_path / "reports" / "t"
    t = {f.name: float(f.read_text()) for f in out.glob("*.st*")} | {f.name: float(f.read_text()) for f in out.glob("*.end")}
    assert t["b_free.start"] < t["a_slow.end"]  # side by side
    assert t["c_reads_a.start"] >= t["a_slow.end"]  # after what it reads
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "finished" and [n["status"] for n in run["notebooks"]] == ["ok"] * 3


def test_parallel_failure_is_recorded_and_the_rest_runs(project):
    root, nbdir, cfg = project
    statuses = run_config(cfg, notebooks_dir=nbdir, reports_dir=root / "reports", progress=False, jobs=2)
    assert [s.status for s in statuses] == ["ok", "failed", "ok", "missing_results"]
    with pytest.raises(ValueError, match="jobs"):
        run_config(cfg, notebooks_dir=nbdir, reports_dir=root / "reports", progress=False, jobs=0)


def test_notebook_needs_cover_the_shipped_notebooks_and_only_look_back():
    from snrmoe_lib.orchestration.runner import (NOTEBOOK_NEEDS, NOTEBOOK_ORDER, START_PRIORITY, notebook_needs,
                                                 project_root)

    shipped = {p.stem for p in (project_root() / "notebooks").glob("*.py")}
    assert shipped == set(NOTEBOOK_ORDER) == set(NOTEBOOK_NEEDS) == set(START_PRIORITY)
    for i, name in enumerate(NOTEBOOK_ORDER):
        assert set(NOTEBOOK_NEEDS[name]) <= set(NOTEBOOK_ORDER[:i]), name  # no wait on a later notebook: no deadlock
    needs = notebook_needs(["q2_error_leakage", "q3_deployable_gate", "zz_mine"])
    assert needs == {"q2_error_leakage": set(), "q3_deployable_gate": {"q2_error_leakage"},
                     "zz_mine": {"q2_error_leakage", "q3_deployable_gate"}}
    assert notebook_needs(["q3_deployable_gate"]) == {"q3_deployable_gate": set()}  # Q2 not in this run
