"""Every notebook is a jupytext pair whose .py and .ipynb agree, with outputs stripped and a parameters cell."""
import jupytext
import pytest

from conftest import ROOT

PYS = sorted((ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert PYS, "no notebooks/*.py found"


@pytest.mark.parametrize("py", PYS, ids=[p.stem for p in PYS])
def test_pair_in_sync(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{py.name} has no paired {ipynb.name}: run jupytext --to ipynb {py.name}"
    a, b = jupytext.read(py), jupytext.read(ipynb)
    cells_a = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in a.cells]
    cells_b = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in b.cells]
    assert cells_a == cells_b, f"{py.name} and {ipynb.name} differ: regenerate with jupytext --to ipynb"


@pytest.mark.parametrize("py", PYS, ids=[p.stem for p in PYS])
def test_parameters_cell_first_and_outputs_stripped(py):
    nb = jupytext.read(py.with_suffix(".ipynb"))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    assert "params_path" in code[0].source and "output_dir" in code[0].source
    assert all(not c.get("outputs") for c in code), f"{py.stem}.ipynb has committed outputs"


#: A notebook reads like the Hub page it answers: loops, tables and figure set-ups live in snrmoe_lib.
MAX_NOTEBOOK_LINES = 150


@pytest.mark.parametrize("py", PYS, ids=[p.stem for p in PYS])
def test_notebook_stays_short(py):
    n = len(py.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_NOTEBOOK_LINES, (f"{py.name} has {n} lines (> {MAX_NOTEBOOK_LINES}): move loops, tables and "
                                     "figure set-ups into snrmoe_lib.analyses / reporting.plots")
