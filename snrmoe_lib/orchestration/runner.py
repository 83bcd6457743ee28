"""Execute the notebooks for one or more configurations with papermill and render HTML reports.

For each configuration ``params/<name>.yaml`` and notebook ``notebooks/<nb>.ipynb``::

    reports/<name>/<nb>.ipynb   executed notebook
    reports/<name>/<nb>.html    rendered report (offline template, code of the parameters cell hidden)
    reports/<name>/<nb>.json    results written by the notebook's last cell
    reports/<name>/run.json     status of every notebook of the run (ok / failed / timeout / dead kernel)

A failing notebook is reported with its error and does not stop the others.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from snrmoe_lib.config import load_params
from snrmoe_lib.data.writers import atomic_write_text

__all__ = ["NOTEBOOK_ORDER", "NotebookStatus", "discover_notebooks", "run_notebook", "render_notebook_html",
           "run_config", "project_root"]

#: Execution order: later notebooks read earlier notebooks' results.
NOTEBOOK_ORDER = ("00_data_overview", "q2_error_leakage", "q1_snr_headroom", "q3_deployable_gate", "fisher_ceiling")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def project_root() -> Path:
    """The checkout this package lives in (the folder holding ``notebooks/`` and ``params/``)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class NotebookStatus:
    notebook: str
    config: str
    status: str  # ok | failed | timeout | dead_kernel | missing_results
    seconds: float
    output: str
    html: str | None = None
    results: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def discover_notebooks(notebooks_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Notebook files in execution order (:data:`NOTEBOOK_ORDER` first, others alphabetically)."""
    notebooks_dir = Path(notebooks_dir)
    found = {p.stem: p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith(".")}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise FileNotFoundError(f"no notebook(s) {missing} in {notebooks_dir}; available: {sorted(found)}")
        wanted = list(names)
    else:
        wanted = list(found)
    rank = {n: i for i, n in enumerate(NOTEBOOK_ORDER)}
    wanted.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return [found[n] for n in wanted]


def render_notebook_html(ipynb: str | Path, html: str | Path | None = None) -> Path:
    """Render an executed notebook to a self-contained HTML page (figures inlined, no CDN scripts)."""
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = {"remove_input", "injected-parameters"}
    cfg.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"}
    exporter = HTMLExporter(config=cfg, template_name="offline",
                            extra_template_basedirs=[str(Path(__file__).resolve().parents[1] / "templates")])
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    atomic_write_text(html, body)
    return html


def run_notebook(notebook: str | Path, params_path: str | Path, output_dir: str | Path,
                 timeout_s: int = 1800, kernel_name: str = "python3") -> NotebookStatus:
    """Execute one notebook with papermill into ``output_dir`` and render its HTML.

    Never raises for a failure inside the notebook: the status says what happened.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook = Path(notebook).resolve()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / notebook.name
    results = output_dir / f"{notebook.stem}.json"
    stale = results.with_name(f".{results.name}.previous")
    if results.exists():  # keep the previous run's results aside until this run succeeds
        results.replace(stale)
    params_path = str(Path(params_path).resolve())
    config = load_params(params_path).name
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(str(notebook), str(out), parameters={"params_path": params_path,
                                                                  "output_dir": str(output_dir)},
                            kernel_name=kernel_name, language="python", execution_timeout=timeout_s,
                            progress_bar=False, cwd=str(notebook.parent))
    except pm.PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}\n" + _ANSI.sub("", "\n".join(exc.traceback[-6:]))
    except CellTimeoutError as exc:
        status, error = "timeout", f"a cell ran past {timeout_s} s: {exc}"
    except DeadKernelError as exc:
        status, error = "dead_kernel", f"the kernel died (out of memory?): {exc}"
    except Exception as exc:  # noqa: BLE001 - any other failure is recorded, the run goes on
        status, error = "failed", "".join(traceback.format_exception_only(type(exc), exc))
    seconds = time.perf_counter() - t0
    html = None
    if out.exists():
        try:
            html = str(render_notebook_html(out))
        except Exception as exc:  # noqa: BLE001
            error = (error or "") + f"\nHTML rendering failed: {exc}"
            if status == "ok":
                status = "failed"
    if status == "ok" and not results.exists():
        status, error = "missing_results", f"the notebook finished but wrote no {results.name}"
    if results.exists():
        stale.unlink(missing_ok=True)
    elif stale.exists():
        stale.replace(output_dir / f"{notebook.stem}.previous.json")
    return NotebookStatus(notebook.stem, config, status, round(seconds, 2), str(out), html,
                          str(results) if results.exists() else None, error)


def run_config(params_path: str | Path, notebooks: Iterable[str] | None = None, reports_dir: str | Path | None = None,
               notebooks_dir: str | Path | None = None, progress: bool = True) -> list[NotebookStatus]:
    """Run every notebook (or the named ones) for one configuration into ``reports/<config>/``."""
    params = load_params(params_path)
    root = project_root()
    reports_dir = Path(reports_dir) if reports_dir else root / "reports"
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    output_dir = reports_dir / params.name
    paths = discover_notebooks(notebooks_dir, list(notebooks) if notebooks else None)
    statuses: list[NotebookStatus] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=f"[{params.name}]", unit="notebook")
    for nb in paths:
        if bar is not None:
            bar.set_postfix_str(nb.stem)
        st = run_notebook(nb, params_path, output_dir, timeout_s=params.runner.timeout_s)
        statuses.append(st)
        if bar is not None:
            bar.update(1)
            bar.write(f"  {st.status.upper():>7}  {st.notebook}  ({st.seconds:.0f} s)")
            if st.error:
                bar.write("           " + st.error.strip().replace("\n", "\n           "))
    if bar is not None:
        bar.close()
    run = {"config": params.name, "params_path": str(Path(params_path).resolve()),
           "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "notebooks": [asdict(s) for s in statuses]}
    atomic_write_text(output_dir / "run.json", json.dumps(run, indent=2))
    return statuses
