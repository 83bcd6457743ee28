"""Command line: ``snrmoe simulate | run | hub | fit | predict``."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

from snrmoe_lib.config import load_params
from snrmoe_lib.data.mock import ensure_mock, mock_is_current, simulate
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
        return _keep_existing(spec, out)
    try:
        paths = simulate(spec, out, overwrite=args.overwrite, progress=True)
    except FileExistsError:
        if args.overwrite or spec.mode != "random" or not out.exists():
            raise
        return _keep_existing(spec, out)  # another simulate of this path held the lock and wrote it first
    for p in paths:
        print(f"wrote {p}")
    return 0


def _keep_existing(spec, out: Path) -> int:
    """An existing random mock: kept when it matches ``spec``; a stale one is an error, not kept silently."""
    current = mock_is_current(spec, out)
    ensure_mock(spec, out, on_stale="raise").close()
    if current:
        print(f"{out} exists and matches the configuration; keeping it (pass --overwrite to replace it)")
    return 0


def _run(args) -> int:
    if len(args.params) > 1 or args.scheduler:
        return _sweep(args)
    failed = 0
    for params_path in args.params:
        statuses = run_config(params_path, notebooks=args.notebooks or None, reports_dir=args.reports,
                              jobs=args.jobs or 1)
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


def _fit(args) -> int:
    """Fit the deployed mixture of a configuration and save it (model folder with its card)."""
    from snrmoe_lib.analyses.deploy import fit_deployed
    from snrmoe_lib.config import PLAIN_NAME
    from snrmoe_lib.data.mock import ensure_dataset
    from snrmoe_lib.reporting.model_card import render_card

    if not PLAIN_NAME.fullmatch(args.model):
        raise ValueError(f"model name {args.model!r}: use letters, digits, '_', '.', '-' (it names a folder)")
    out = Path(args.out) if args.out else Path("models") / args.model
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; refusing to overwrite a saved model (pass --force)")
    params = load_params(args.params)
    reports = Path(args.reports) if args.reports else project_root() / "reports"
    t0 = time.perf_counter()
    with ensure_dataset(params, progress=True) as ds:
        model, _ = fit_deployed(ds, params, family=args.family, results_root=reports, level=args.level,
                                progress="fit")
    dt = time.perf_counter() - t0
    model.record["name"] = args.model
    model.record["fit_seconds"] = dt
    model.save(out, overwrite=args.force, extra_files={"card.html": render_card(model.full_record(), args.model)})
    m, sp = model.record["metrics"], model.record["dataset"]["split"]
    n = sp["n_train"] + sp["n_val"] + sp["n_test"]
    print(f"wrote {out} ({model.family} experts, σ read: {model.error_mode}; frozen test: R² = {m['r2']:.3f} [{m['r2_interval'][0]:.3f}, {m['r2_interval'][1]:.3f}], "
          f"coverage {m['coverage']:.3f} of the {m['level']:g} intervals; fit {dt:.1f} s, {n / dt:.0f} spectra/s)")
    print(f"model card: {out / 'card.html'}")
    return 0


def _predict(args) -> int:
    """Apply a saved model to a pfsspec dataset, writing a catalogue."""
    from snrmoe_lib.orchestration.predict import predict_catalogue

    if Path(args.out).exists() and not args.force:
        raise FileExistsError(f"{args.out} exists; refusing to overwrite the catalogue (pass --force)")
    s = predict_catalogue(args.model, args.data, args.out, noisy=args.noisy, resample=args.resample,
                          on_bad_rows=args.on_bad_rows, seed=args.seed, chunk_size=args.chunk_size,
                          max_bad_fraction=args.max_bad_fraction, overwrite=args.force, progress="predict")
    flags = ", ".join(f"{k} {v}" for k, v in s["flags"].items())
    print(f"wrote {s['path']}: {s['n_rows']} stars ({s['n_predicted']} predicted; flagged: {flags}); "
          f"{s['seconds']:.1f} s, {s['spectra_per_s']:.0f} spectra/s")
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
                   help="with several configurations: how many run at once as local processes (default: CPU "
                        "cores); with one: how many of its notebooks run at once, each when the notebooks it "
                        "reads have finished (default 1)")
    p.add_argument("--scheduler", default=None,
                   help="run the configurations on this Dask cluster (tcp://host:8786) instead of local processes")
    p.add_argument("--hub", action="store_true", help="build reports/index.html and reports/hub.md at the end")
    p.set_defaults(func=_run)

    p = sub.add_parser("hub", help="build reports/index.html and reports/hub.md from every results file")
    p.add_argument("--reports", default=str(Path("reports")), help="reports folder")
    p.set_defaults(func=_hub)

    _fit_predict_parsers(sub)
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


def _fit_predict_parsers(sub) -> None:
    p = sub.add_parser("fit", help="fit a configuration's deployed mixture and save it as a model folder")
    p.add_argument("--params", required=True, help="params/*.yaml (its dataset is generated if it is a missing mock)")
    p.add_argument("--model", required=True, help="the model's name (a plain name)")
    p.add_argument("--out", default=None, help="the model folder (default: models/NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")
    p.add_argument("--level", type=float, default=0.9, help="nominal coverage of the intervals (default 0.9)")
    p.add_argument("--family", default="ridge", choices=("ridge", "boosted", "neural"),
                   help="the experts' family: 'ridge' (Q3's streamed Ridge), 'boosted' (Q4's boosted trees) or "
                        "'neural' (Q4's trunk with SNR heads; CUDA when present), hyper-parameters from the q4 "
                        "section; default ridge")
    p.add_argument("--reports", default=None,
                   help="where the notebooks' results are (Q2's choice, its leak check, the K1 ceiling; "
                        "default: <project>/reports)")
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", help="predict log g for every spectrum of a pfsspec dataset into a catalogue")
    p.add_argument("--model", required=True, help="a model folder written by snrmoe fit")
    p.add_argument("--data", required=True, help="a pfsspec HDF5 file or a sharded folder (shard_index.txt)")
    p.add_argument("--out", required=True, help="the catalogue: .fits, .parquet or .h5")
    p.add_argument("--noisy", action="store_true",
                   help="the flux already carries noise and the error is its σ estimate (observed spectra); "
                        "default: noise-free products, noise drawn by the protocol with --seed")
    p.add_argument("--seed", type=int, default=0, help="noise seed for noise-free products (default 0)")
    p.add_argument("--resample", action="store_true",
                   help="interpolate spectra on another wavelength grid onto the model's (refused otherwise)")
    p.add_argument("--on-bad-rows", choices=("flag", "refuse"), default="flag",
                   help="rows with NaN/inf or error <= 0: keep them flagged without a prediction, or stop")
    p.add_argument("--max-bad-fraction", type=float, default=None,
                   help="flag stars with more masked or non-finite pixels than this fraction "
                        "(default: the training spectra's largest + 0.05)")
    p.add_argument("--chunk-size", type=int, default=1024, help="spectra read at once (memory: a few chunks)")
    p.add_argument("--force", action="store_true", help="replace an existing catalogue")
    p.set_defaults(func=_predict)


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
