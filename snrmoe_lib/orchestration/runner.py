"""Execute the notebooks for one or more configurations with papermill and render HTML reports.

For each configuration ``params/<name>.yaml`` and notebook ``notebooks/<nb>.ipynb``::

    reports/<name>/<nb>.ipynb   executed notebook
    reports/<name>/<nb>.html    rendered report (offline template, code of the parameters cell hidden)
    reports/<name>/<nb>.json    results written by the notebook's last cell
    reports/<name>/run.json     status of every notebook, written as each starts and ends (:class:`RunLog`)

A failing notebook is reported with its error and does not stop the others. With ``jobs`` > 1 the
notebooks run that many at a time, each as soon as the notebooks it reads (:data:`NOTEBOOK_NEEDS`) have
finished; the numbers do not depend on it beyond rounding (with one BLAS thread per notebook the
sums run in another order). Before a notebook runs,
its previous results and page are put out of sight, so an interrupted or failed run never leaves an
old "ok" behind. The HTML shows the parameters the run used (papermill's injected cell).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import json
import multiprocessing as mp
import os
import re
import socket
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from snrmoe_lib.config import PLAIN_NAME, Params, load_params
from snrmoe_lib.data.io import open_dataset, require_labels
from snrmoe_lib.data.writers import atomic_write_text

__all__ = ["NOTEBOOK_ORDER", "NOTEBOOK_NEEDS", "START_PRIORITY", "NotebookStatus", "RunLog", "check_dataset",
           "check_name", "discover_notebooks", "local_pool", "notebook_needs", "project_root", "render_notebook_html",
           "run_config", "run_notebook"]

#: Execution order: later notebooks read earlier notebooks' results.
NOTEBOOK_ORDER = ("00_data_overview", "q2_error_leakage", "q1_snr_headroom", "q3_deployable_gate", "q4_stronger_experts",
                  "fisher_ceiling")

#: What each notebook reads from the others' results in the run folder: Q3 and Q4 take the gate's
#: representation chosen by Q2; the Fisher notebook shares the data notebook's lattice Fisher matrices
#: and scores Q1's, Q3's and Q4's per-star predictions against the ceiling. A notebook not listed here
#: (a user's own) waits for every notebook before it.
NOTEBOOK_NEEDS = {
    "00_data_overview": (),
    "q2_error_leakage": (),
    "q1_snr_headroom": (),
    "q3_deployable_gate": ("q2_error_leakage",),
    "q4_stronger_experts": ("q2_error_leakage",),
    "fisher_ceiling": ("00_data_overview", "q1_snr_headroom", "q3_deployable_gate", "q4_stronger_experts"),
}

#: Which ready notebook a parallel run starts first: Q2 (Q3 and Q4 wait for it), then the longest, and
#: the short data notebook last (only the Fisher notebook, itself last, reads it). Others follow in order.
START_PRIORITY = ("q2_error_leakage", "q1_snr_headroom", "q3_deployable_gate", "q4_stronger_experts",
                  "00_data_overview", "fisher_ceiling")

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def project_root() -> Path:
    """The checkout this package lives in (the folder holding ``notebooks/`` and ``params/``)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class NotebookStatus:
    notebook: str
    config: str
    status: str  # ok | failed | timeout | dead_kernel | missing_results (run.json adds running, interrupted, not_run)
    seconds: float
    output: str
    html: str | None = None
    results: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def check_name(name: str, what: str = "notebook name") -> str:
    """``name`` if it is a plain name (letters, digits, ``_ . -``, not starting with a dot); else ValueError."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r}: use a plain name (letters, digits, '_', '.', '-'; no folders, "
                         "not starting with a dot)")
    return name


def discover_notebooks(notebooks_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Notebook files in execution order (:data:`NOTEBOOK_ORDER` first, others alphabetically)."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks folder not found: {notebooks_dir}")
    found = {p.stem: p for p in notebooks_dir.glob("*.ipynb") if not p.name.startswith(".")}
    if names:
        for n in names:
            check_name(n)
        missing = [n for n in names if n not in found]
        if missing:
            raise FileNotFoundError(f"no notebook(s) {missing} in {notebooks_dir}; available: {sorted(found)}")
        wanted = list(dict.fromkeys(names))
    else:
        wanted = list(found)
    rank = {n: i for i, n in enumerate(NOTEBOOK_ORDER)}
    wanted.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return [found[n] for n in wanted]


def render_notebook_html(ipynb: str | Path, html: str | Path | None = None) -> Path:
    """Render an executed notebook to a self-contained HTML page (figures inlined, no CDN scripts).

    The report shows the parameters the run used: papermill's injected cell replaces the notebook's
    default ``parameters`` cell (which is left out when an injected one is present).
    """
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    nb = nbformat.read(ipynb, as_version=4)
    injected = any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    cfg = Config()
    cfg.TagRemovePreprocessor.enabled = True
    cfg.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    cfg.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"} | ({"parameters"} if injected else set())
    exporter = HTMLExporter(config=cfg, template_name="offline",
                            extra_template_basedirs=[str(Path(__file__).resolve().parents[1] / "templates")])
    body, _ = exporter.from_notebook_node(nb)
    atomic_write_text(html, body)
    return html


def _shown_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when both are in the project (what the report shows), else absolute."""
    root = project_root()
    if path.is_relative_to(root) and start.is_relative_to(root):
        return os.path.relpath(path, start)
    return str(path)


def _hide_previous(output_dir: Path, stem: str) -> None:
    """Move the last run's results and pages out of sight before this run starts.

    Until this run finishes, nothing under the notebook's name may look current: an interrupted or
    failed run leaves no old ``.json`` or ``.html`` for the Hub or a later notebook to mistake for
    its outcome. The last results are kept aside (hidden, never read) as ``.<stem>.previous.json``
    (and its per-star predictions as ``.<stem>.previous_predictions.npz``).
    """
    for suffix in (".json", ".html", "_predictions.npz"):
        old = output_dir / f"{stem}{suffix}"
        if old.exists():
            old.replace(output_dir / f".{stem}.previous{suffix}")
    (output_dir / f"{stem}.previous.json").unlink(missing_ok=True)  # the old, visible name of that copy


def run_notebook(notebook: str | Path, params_path: str | Path, output_dir: str | Path,
                 timeout_s: int = 1800, kernel_name: str = "python3") -> NotebookStatus:
    """Execute one notebook with papermill into ``output_dir`` and render its HTML.

    Never raises for a failure inside the notebook: the status says what happened. (An interrupt,
    Ctrl-C or SIGTERM, propagates: :func:`run_config` records it.)
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook = Path(notebook).resolve()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / notebook.name
    results = output_dir / f"{notebook.stem}.json"
    params_path = Path(params_path).resolve()
    config = load_params(params_path).name
    _hide_previous(output_dir, notebook.stem)
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(str(notebook), str(out),
                            parameters={"params_path": _shown_path(params_path, notebook.parent),
                                        "output_dir": _shown_path(output_dir, notebook.parent)},
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
    return NotebookStatus(notebook.stem, config, status, round(seconds, 2), str(out), html,
                          str(results) if results.exists() else None, error)


class RunLog:
    """``reports/<config>/run.json``, rewritten (atomically) as every notebook starts and ends.

    States: the run is ``running`` (with the host and pid that run it), ``finished`` or
    ``interrupted``; a notebook is ``pending``, ``running``, then ok / failed / timeout /
    dead_kernel / missing_results, or ``interrupted`` / ``not_run`` when the run was stopped. A run
    killed outright (SIGKILL, power loss) stays ``running`` with a pid that no longer exists: the
    Hub shows it as interrupted.
    """

    def __init__(self, output_dir: Path, config: str, params_path: Path, names: Sequence[str]):
        self.path = output_dir / "run.json"
        # notebooks of the configuration this run does not execute keep their last status (nothing lost)
        kept = [nb for nb in self._previous() if nb.get("notebook") not in set(names)]
        self.doc = {"config": config, "params_path": str(params_path), "state": "running",
                    "host": socket.gethostname(), "pid": os.getpid(), "started": _now(), "finished": None,
                    "notebooks": kept + [{"notebook": n, "config": config, "status": "pending"} for n in names]}
        self.write()

    def _previous(self) -> list[dict]:
        try:
            old = json.loads(self.path.read_text()).get("notebooks", [])
        except (OSError, ValueError, AttributeError):
            return []
        keep = [nb for nb in old if isinstance(nb, dict) and isinstance(nb.get("notebook"), str)]
        for nb in keep:
            if nb.get("status") in ("running", "pending"):  # that earlier run never finished them
                nb.update(status="interrupted" if nb["status"] == "running" else "not_run",
                          error=nb.get("error") or "an earlier run stopped before this notebook finished")
        return keep

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.doc, indent=2))

    def set(self, name: str, **fields) -> None:
        for nb in self.doc["notebooks"]:
            if nb["notebook"] == name:
                nb.update(fields)
        self.write()

    def end(self, state: str, why: str | None = None) -> None:
        for nb in self.doc["notebooks"]:
            if nb["status"] == "running":
                nb.update(status="interrupted", error=why)
            elif nb["status"] == "pending" and state != "finished":
                nb.update(status="not_run", error=why)
        self.doc.update(state=state, finished=_now())
        self.write()


def check_dataset(params: Params) -> None:
    """Open the configuration's dataset once, before any notebook, when it exists.

    A bad dataset (a shard listed twice, another wavelength grid, bad rows under ``on_bad_rows: raise``,
    no ``log_g`` column) is then one clear error and nothing is written, rather than the same traceback
    from every notebook. A missing dataset is left to the notebooks, which generate a configured mock.
    """
    if params.dataset_path.exists():
        require_labels(open_dataset(params.dataset_path, on_bad_rows=params.data.on_bad_rows),
                       params.ridge.target).close()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def notebook_needs(names: Sequence[str]) -> dict[str, set[str]]:
    """For each notebook of a run (in execution order), the notebooks of that run it waits for
    (:data:`NOTEBOOK_NEEDS`; a notebook not listed there waits for every notebook before it)."""
    names = list(names)
    return {n: set(names[:i]) if NOTEBOOK_NEEDS.get(n) is None else set(NOTEBOOK_NEEDS[n]) & set(names)
            for i, n in enumerate(names)}


def _init_pool_worker(blas_threads: int) -> None:
    # the worker's notebook kernels inherit these: jobs × threads stays within the machine's cores
    for k in _BLAS_VARS:
        os.environ[k] = str(blas_threads)


@contextlib.contextmanager
def local_pool(jobs: int) -> Iterator[cf.ProcessPoolExecutor]:
    """``jobs`` local worker processes, each with (CPU cores // jobs) BLAS threads, which the notebook
    kernels it starts inherit. 'spawn': a clean interpreter per worker (no forked locks or threads of the
    caller). Leaving the block on an exception (Ctrl-C, SIGTERM) stops the workers instead of waiting."""
    n = max(1, int(jobs))
    ex = cf.ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_pool_worker,
                                initargs=(max(1, (os.cpu_count() or 1) // n),))
    try:
        yield ex
    except BaseException:
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.terminate()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_parallel(paths: list[Path], params_path, output_dir: Path, timeout_s: int, jobs: int, on_start, on_end) -> None:
    """Run ``paths`` ``jobs`` at a time, each once the notebooks it needs have finished (ok or not: a
    notebook whose input failed says so itself), in :data:`START_PRIORITY` order among the ready ones."""
    needs = notebook_needs([p.stem for p in paths])
    rank = {n: i for i, n in enumerate(START_PRIORITY)}
    waiting, running, finished = sorted(paths, key=lambda p: rank.get(p.stem, len(rank))), {}, set()
    with local_pool(jobs) as ex:
        while waiting or running:
            for nb in [nb for nb in waiting if needs[nb.stem] <= finished][:jobs - len(running)]:
                waiting.remove(nb)
                on_start(nb)
                running[ex.submit(run_notebook, nb, params_path, output_dir, timeout_s)] = nb
            if not running:
                raise RuntimeError(f"notebooks {[p.stem for p in waiting]} wait for each other")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                nb = running.pop(fut)
                try:
                    st = fut.result()
                except cf.BrokenExecutor as exc:  # the worker died (killed, out of memory): said, not raised
                    st = NotebookStatus(nb.stem, load_params(params_path).name, "dead_kernel", 0.0,
                                        str(output_dir / nb.name), error=f"the notebook's worker process died: {exc}")
                finished.add(nb.stem)
                on_end(st)


def run_config(params_path: str | Path, notebooks: Iterable[str] | None = None, reports_dir: str | Path | None = None,
               notebooks_dir: str | Path | None = None, progress: bool = True, jobs: int = 1) -> list[NotebookStatus]:
    """Run every notebook (or the named ones) for one configuration into ``reports/<config>/``.

    ``run.json`` says at every moment what is running and how each notebook ended; an interrupt
    (Ctrl-C, SIGTERM) is recorded there before it propagates. ``jobs`` > 1: that many notebooks at a
    time, in worker processes, in the order :data:`NOTEBOOK_NEEDS` allows (the same results to rounding,
    less wall time on a machine with that many cores). The statuses come back in execution order either way.
    """
    params = load_params(params_path)
    check_name(params.name, "configuration name")
    if int(jobs) < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    root = project_root()
    reports_dir = Path(reports_dir) if reports_dir else root / "reports"
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else root / "notebooks"
    output_dir = reports_dir / params.name
    paths = discover_notebooks(notebooks_dir, list(notebooks) if notebooks else None)
    check_dataset(params)
    output_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(output_dir, params.name, Path(params_path).resolve(), [p.stem for p in paths])
    statuses: list[NotebookStatus] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=f"[{params.name}]", unit="notebook")

    def start(nb: Path) -> None:
        log.set(nb.stem, status="running", started=_now())
        if bar is not None:
            bar.set_postfix_str(", ".join(n["notebook"] for n in log.doc["notebooks"] if n["status"] == "running"))

    def end(st: NotebookStatus) -> None:
        statuses.append(st)
        log.set(st.notebook, **{k: v for k, v in asdict(st).items() if k != "notebook"}, finished=_now())
        if bar is not None:
            bar.update(1)
            bar.write(f"  {st.status.upper():>7}  {st.notebook}  ({st.seconds:.0f} s)")
            if st.error:
                bar.write("           " + st.error.strip().replace("\n", "\n           "))

    try:
        if int(jobs) > 1 and len(paths) > 1:
            _run_parallel(paths, params_path, output_dir, params.runner.timeout_s, int(jobs), start, end)
        else:
            for nb in paths:
                start(nb)
                end(run_notebook(nb, params_path, output_dir, timeout_s=params.runner.timeout_s))
    except BaseException as exc:
        try:
            log.end("interrupted", f"the run was stopped: {type(exc).__name__}: {exc}".rstrip(": "))
        except OSError:
            pass  # the disk that failed the run may fail this too: the pid in run.json tells the Hub
        raise
    finally:
        if bar is not None:
            bar.close()
    log.end("finished")
    order = {p.stem: i for i, p in enumerate(paths)}
    return sorted(statuses, key=lambda st: order[st.notebook])
