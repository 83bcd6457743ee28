"""Command line: ``snrmoe simulate | run | hub``."""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from snrmoe_lib.config import load_params
from snrmoe_lib.data.mock import ensure_mock, simulate
from snrmoe_lib.data.writers import Terminated, install_termination_handler
from snrmoe_lib.orchestration import sweep
from snrmoe_lib.orchestration.runner import project_root, run_config
from snrmoe_lib.reporting.hub import build_hub

__all__ = ["main"]


def _simulate(args) -> int:
    params = load_params(args.params)
    spec = params.data.mock
    if spec is None:
        print(f"{args.params}: no data.mock section: nothing to simulate", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else params.dataset_path
    if out.exists() and not args.overwrite and spec.mode == "random":
        ensure_mock(spec, out, on_stale="raise").close()  # a stale dataset is an error, not kept silently
        print(f"{out} exists and matches the configuration; keeping it (pass --overwrite to replace it)")
        return 0
    paths = simulate(spec, out, overwrite=args.overwrite, progress=True)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _run(args) -> int:
    if len(args.params) > 1 or (args.jobs or 1) > 1 or args.scheduler:
        return _sweep(args)
    failed = 0
    for params_path in args.params:
        statuses = run_config(params_path, notebooks=args.notebooks or None, reports_dir=args.reports)
        failed += sum(not s.ok for s in statuses)
    if args.hub:
        _build_hub(args.reports)
    if failed:
        print(f"{failed} notebook run(s) failed; see the messages above and reports/<config>/run.json", file=sys.stderr)
        return 1
    return 0


def _sweep(args) -> int:
    """Several configurations at once: one task per configuration, local processes or a Dask cluster."""
    outcomes = sweep.run_sweep(args.params, notebooks=args.notebooks or None, reports_dir=args.reports,
                               jobs=args.jobs, scheduler=args.scheduler)
    print(sweep.summary_table(outcomes))
    if args.hub:
        _build_hub(args.reports)
    bad = [o.config for o in outcomes if not o.ok]
    if bad:
        print(f"{len(bad)} configuration(s) did not finish cleanly: {', '.join(bad)}; "
              "see reports/<config>/run.json", file=sys.stderr)
        return 1
    return 0


def _build_hub(reports) -> None:
    for p in build_hub(reports or project_root() / "reports"):
        print(f"wrote {p}")


def _hub(args) -> int:
    _build_hub(args.reports)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snrmoe", description="SNR-aware mixtures of experts for PFS log g")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="generate the mock dataset a configuration points to")
    p.add_argument("--params", required=True, help="params/*.yaml with a data.mock section")
    p.add_argument("--output", help="write here instead of the configured data.path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("run", help="execute the notebooks for one or more configurations")
    p.add_argument("--params", required=True, nargs="+", help="one or more params/*.yaml")
    p.add_argument("--notebooks", nargs="*", help="notebook names (default: all, in order)")
    p.add_argument("--reports", default=None, help="reports folder (default: <project>/reports)")
    p.add_argument("--jobs", type=int, default=None,
                   help="configurations run in parallel as local processes (default with several: CPU cores)")
    p.add_argument("--scheduler", default=None,
                   help="run the configurations on this Dask cluster (tcp://host:8786) instead of local processes")
    p.add_argument("--hub", action="store_true", help="build reports/index.html and reports/hub.md at the end")
    p.set_defaults(func=_run)

    p = sub.add_parser("hub", help="build reports/index.html and reports/hub.md from every results file")
    p.add_argument("--reports", default=str(Path("reports")), help="reports folder")
    p.set_defaults(func=_hub)

    args = parser.parse_args(argv)
    install_termination_handler()  # SIGTERM/SIGHUP unwind like Ctrl-C: temporary files removed, run.json marked
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        sig = exc.signum if isinstance(exc, Terminated) else 2
        print(f"snrmoe {args.command}: interrupted ({exc or 'Ctrl-C'}); nothing half-written was kept"
              + ("; run.json marks the notebook that was running" if args.command == "run" else ""), file=sys.stderr)
        return 128 + sig
    except Exception as exc:  # noqa: BLE001 - every operational error: one line, exit != 0
        if os.environ.get("SNRMOE_TRACEBACK"):
            raise
        print(f"snrmoe {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """An operational error as one line a user can act on (set SNRMOE_TRACEBACK=1 for the traceback)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f"{exc.filename}: " if exc.filename else ""
        hint = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EISDIR: "a folder is in the way of a file", errno.ENOTDIR: "a file is in the way of a folder",
                }.get(exc.errno, exc.strerror or str(exc))
        return f"{where}{hint} ({type(exc).__name__})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (OSError, TimeoutError)) and ("connect" in text.lower() or "timed out" in text.lower()):
        return f"cannot reach the Dask scheduler: {text} ({type(exc).__name__})"
    if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
        return text or type(exc).__name__
    return f"{text} ({type(exc).__name__}; set SNRMOE_TRACEBACK=1 for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
