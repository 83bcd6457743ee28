"""Run many configurations: local processes by default, a Dask cluster when given a scheduler address.

One configuration is one task (:func:`run_one`): it runs every notebook of that configuration with
:func:`snrmoe_lib.orchestration.runner.run_config` into ``reports/<config>/``. Local processes and Dask go through
the *same* code: both are a :class:`concurrent.futures.Executor` (a process pool, or
``distributed.Client.get_executor``), and :func:`run_sweep` submits the same task functions to either.

Failure isolation
    A task never raises: a bad parameter file, a missing dataset or a failing notebook becomes that
    configuration's status, and every other configuration runs to the end (its reports are written by
    its own task as it goes, so nothing finished is ever lost). If a local worker process dies, the
    configurations it had not finished are resubmitted once to a fresh pool.

Datasets
    Configurations that share a dataset (the noise_level sweep re-uses one) must not generate it
    twice at the same time, so a first phase generates each missing mock dataset once (one task per
    distinct path, in parallel), then the second phase runs the configurations. A configuration whose
    dataset could not be made is reported failed with the reason; the others go on.

On a Dask cluster the workers must see the same filesystem paths as the caller (the parameter files,
``notebooks/``, ``data/`` and ``reports/``), and each needs the project environment (papermill
starts a ``python3`` kernel on the worker).

Examples
--------
>>> run_sweep(["params/mag21.5.yaml", "params/mag22.yaml"], jobs=2)                  # doctest: +SKIP
>>> run_sweep(sorted(Path("params").glob("noise*.yaml")), scheduler="tcp://scheduler:8786")  # doctest: +SKIP
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from snrmoe_lib.config import load_params
from snrmoe_lib.data.mock import simulate
from snrmoe_lib.orchestration.runner import local_pool, run_config

__all__ = ["ConfigOutcome", "prepare_dataset", "run_one", "executor", "run_sweep", "summary_table"]


@dataclass
class ConfigOutcome:
    """What happened to one configuration of a sweep.

    ``status``: 'ok' (every notebook ok), 'failed' (some notebook failed; the others' reports are
    written) or 'error' (the configuration could not run at all: bad parameters, no dataset, a dead
    worker).
    """

    params_path: str
    config: str
    status: str
    seconds: float
    notebooks: list[dict] = field(default_factory=list)
    error: str | None = None
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _short_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _config_name(params_path: str) -> str:
    try:
        return load_params(params_path).name
    except Exception:  # noqa: BLE001 - the name is only a label; run_one reports the real error
        return Path(params_path).stem


def _where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def prepare_dataset(params_path: str) -> dict:
    """Task: generate the configuration's mock dataset if it is missing. Never raises.

    Returns ``{"path", "status": 'exists' | 'generated' | 'no_mock' | 'error', "seconds", "error"}``.
    """
    t0 = time.perf_counter()
    try:
        p = load_params(params_path)
        path = p.dataset_path
        if path.exists():
            status = "exists"
        elif p.data.mock is None:
            status = "no_mock"  # run_one will report the missing dataset with its own message
        else:
            try:
                simulate(p.data.mock, path, progress=False)
            except FileExistsError:
                pass  # another process finished it first (the final rename is atomic)
            status = "generated"
        return {"path": str(path), "status": status, "seconds": round(time.perf_counter() - t0, 2), "error": None}
    except Exception as exc:  # noqa: BLE001 - reported, never raised: the other datasets go on
        return {"path": None, "status": "error", "seconds": round(time.perf_counter() - t0, 2),
                "error": _short_error(exc)}


def run_one(params_path: str, notebooks: Sequence[str] | None = None, reports_dir: str | None = None,
            notebooks_dir: str | None = None) -> dict:
    """Task: run one configuration's notebooks into ``reports/<config>/``. Never raises.

    Returns a plain dict (a :class:`ConfigOutcome`'s fields) so it pickles across processes and hosts.
    """
    t0 = time.perf_counter()
    config = _config_name(params_path)
    try:
        statuses = run_config(params_path, notebooks=list(notebooks) if notebooks else None,
                              reports_dir=reports_dir, notebooks_dir=notebooks_dir, progress=False)
        nbs = [asdict(s) for s in statuses]
        bad = [s for s in statuses if not s.ok]
        status = "ok" if not bad else "failed"
        error = "; ".join(f"{s.notebook}: {s.status}" for s in bad) or None
    except Exception as exc:  # noqa: BLE001 - one configuration's failure must not stop the sweep
        nbs, status, error = [], "error", _short_error(exc)
    return asdict(ConfigOutcome(str(params_path), config, status, round(time.perf_counter() - t0, 2), nbs, error,
                                _where()))


@contextlib.contextmanager
def executor(jobs: int | None = None, scheduler: str | None = None) -> Iterator[cf.Executor]:
    """A ``concurrent.futures`` executor: a local process pool, or a Dask cluster's.

    Parameters
    ----------
    jobs
        Local worker processes (default: the number of CPU cores). Ignored with ``scheduler``.
    scheduler
        A ``dask.distributed`` scheduler address (``tcp://host:8786``). The cluster's workers run the
        tasks (one task per worker thread; start workers with ``--nthreads 1``).
    """
    if scheduler:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - distributed is a pinned dependency
            raise RuntimeError("a scheduler address needs the 'distributed' package") from exc
        client = Client(scheduler, set_as_default=False)
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
        return
    with local_pool(int(jobs or os.cpu_count() or 1)) as ex:
        yield ex


def _map_isolated(submit_all: Callable[[cf.Executor, list], dict], items: list, jobs, scheduler,
                  on_done: Callable[[object, dict], None], dead: Callable[[object, str], dict]) -> dict:
    """Run one task per item; a dead local pool is replaced once for the items it had not finished."""
    results: dict = {}
    todo, attempts = list(items), 0
    while todo and attempts < 2:
        attempts += 1
        with executor(jobs, scheduler) as ex:
            futures = submit_all(ex, todo)
            for fut in cf.as_completed(futures):
                item = futures[fut]
                try:
                    res = fut.result()
                except cf.BrokenExecutor as exc:
                    if attempts < 2:
                        continue  # resubmitted below to a fresh pool
                    res = dead(item, f"the worker process died twice: {exc}")
                except Exception as exc:  # noqa: BLE001 - e.g. a Dask KilledWorker: this item only
                    res = dead(item, f"the task failed on the cluster: {_short_error(exc)}")
                results[item] = res
                on_done(item, res)
        todo = [i for i in todo if i not in results]
    return results


def run_sweep(params_paths: Sequence[str | Path], notebooks: Sequence[str] | None = None,
              reports_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
              jobs: int | None = None, scheduler: str | None = None, progress: bool = True) -> list[ConfigOutcome]:
    """Run every configuration (all notebooks, or the named ones), one task per configuration.

    Parameters
    ----------
    params_paths
        ``params/*.yaml`` files; duplicates are run once.
    notebooks
        Notebook names (default: every notebook, in the runner's order).
    reports_dir, notebooks_dir
        As in :func:`snrmoe_lib.orchestration.runner.run_config` (default: the project's ``reports/`` and ``notebooks/``).
    jobs
        Local processes (default: CPU cores, at most one per configuration).
    scheduler
        A Dask scheduler address: run on that cluster instead of local processes (same tasks).
    progress
        Print one line per finished dataset and configuration.

    Returns
    -------
    list of ConfigOutcome
        In the order of ``params_paths``. Never raises for a failing configuration.
    """
    paths = list(dict.fromkeys(str(Path(p).resolve()) for p in params_paths))
    if not paths:
        raise ValueError("no parameter files given")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"parameter file(s) not found: {missing}")
    reports = str(Path(reports_dir).resolve()) if reports_dir else None
    nbdir = str(Path(notebooks_dir).resolve()) if notebooks_dir else None
    jobs = jobs or min(len(paths), os.cpu_count() or 1)
    say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
    where = f"Dask scheduler {scheduler}" if scheduler else f"{jobs} local process(es)"
    say(f"sweep: {len(paths)} configuration(s) on {where}")

    prepared = _prepare_datasets(paths, jobs, scheduler, say)

    # phase 2: the configurations whose dataset is usable
    outcomes: dict[str, dict] = {}
    runnable = []
    for p in paths:
        prep = prepared[_dataset_key(p)]
        if prep["status"] == "error":
            outcomes[p] = asdict(ConfigOutcome(p, _config_name(p), "error", 0.0, [],
                                               f"dataset not prepared: {prep['error']}"))
            say(f"  {'ERROR':>7}  {outcomes[p]['config']}: {outcomes[p]['error']}")
        else:
            runnable.append(p)

    def done(p, r):
        outcomes[p] = r
        say(f"  {r['status'].upper():>7}  {r['config']}  ({r['seconds']:.0f} s, {r['worker']})"
            + (f": {r['error']}" if r["error"] else ""))

    _map_isolated(lambda ex, items: {ex.submit(run_one, p, notebooks, reports, nbdir): p for p in items}, runnable,
                  jobs, scheduler, done,
                  lambda p, why: asdict(ConfigOutcome(p, _config_name(p), "error", 0.0, [], why)))
    result = [ConfigOutcome(**outcomes[p]) for p in paths]
    n_ok = sum(o.ok for o in result)
    say(f"sweep: {n_ok} of {len(result)} configuration(s) ok")
    return result


def _prepare_datasets(paths: list[str], jobs: int, scheduler: str | None, say: Callable[[str], None]) -> dict:
    """Phase 1 of a sweep: each missing mock dataset once (configurations may share one), by dataset key."""
    first_of: dict[str, str] = {}
    for p in paths:
        first_of.setdefault(_dataset_key(p), p)
    return _map_isolated(
        lambda ex, items: {ex.submit(prepare_dataset, first_of[k]): k for k in items}, list(first_of), jobs, scheduler,
        lambda k, r: say(f"  dataset {r['status']:>9}  {r['path'] or k}  ({r['seconds']:.0f} s)"
                         + (f": {r['error']}" if r["error"] else "")),
        lambda k, why: {"path": None, "status": "error", "seconds": 0.0, "error": why})


def _dataset_key(params_path: str) -> str:
    try:
        return str(load_params(params_path).dataset_path)
    except Exception:  # noqa: BLE001 - a bad file gets its own key; run_one reports its error
        return f"unreadable:{params_path}"


def summary_table(outcomes: Sequence[ConfigOutcome]) -> str:
    """A plain-text table: configuration, status, seconds, notebooks ok / total, error."""
    lines = [f"{'configuration':<16} {'status':<7} {'seconds':>8}  notebooks  error"]
    for o in outcomes:
        n_ok = sum(nb["status"] == "ok" for nb in o.notebooks)
        lines.append(f"{o.config:<16} {o.status:<7} {o.seconds:>8.1f}  {n_ok:>3}/{len(o.notebooks):<5}  {o.error or ''}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: snrmoe run --params a.yaml b.yaml [--jobs N | --scheduler tcp://host:8786]")
