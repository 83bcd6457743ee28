"""The faults a user meets: each case injects one, checks the message, and that nothing is left behind.

Cases follow the list of "Nothing lost, nothing stale": names, validation, duplicate shards, the
fingerprint, orphan temporary files (errors and signals), locks, one-line CLI errors, the Hub with
malformed files, interrupted runs, a failed upstream Q2, fresh-machine commands. Dropping bad rows
through every notebook is in ``test_faults_drop.py``.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import h5py
import nbformat
import numpy as np
import pandas as pd
import pytest

from snrmoe_lib.config import ParameterError, load_params, params_from_dict
from snrmoe_lib.data.io import (FLUX_KEY, DatasetError, DatasetWriter, ShardedWriter, dataset_fingerprint,
                                fingerprint_rows, open_dataset)
from snrmoe_lib.data.writers import FileLock, atomic_write_text
from snrmoe_lib.evaluation.records import metric, write_results
from snrmoe_lib.orchestration import cli
from snrmoe_lib.orchestration.runner import discover_notebooks, run_config
from snrmoe_lib.reporting.hub import build_hub, collect

from conftest import make_arrays, write_dataset

ROOT = Path(__file__).resolve().parent.parent


def leftovers(folder: Path) -> list[str]:
    """Temporary files, lock files and moved-aside copies under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock"))


# -------------------------------------------------------------------------------- 3. plain names


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../up", ".hidden", ""])
def test_configuration_name_must_be_plain(tmp_path, name):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: {json.dumps(name)}\n")
    with pytest.raises(ParameterError, match="name: .* not a plain name"):
        load_params(cfg)


def test_plain_names_still_accepted():
    for name in ("default", "mag21.5", "noise0.05", "my-run_2"):
        assert params_from_dict({"name": name}).name == name


def test_notebook_names_must_be_plain(tmp_path, capsys):
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="plain name"):
        discover_notebooks(tmp_path, ["../a"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\n")
    code = cli.main(["run", "--params", str(cfg), "--notebooks", "../../etc/x", "--reports", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "plain name" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- 8. validation gaps


@pytest.mark.parametrize("text, match", [
    ("name: a\nnoise: {noise_level: .nan}\n", "noise.noise_level: must be a finite number"),
    ("name: a\nnoise: {noise_level: .inf}\n", "noise.noise_level: must be a finite number"),
    ("name: a\nnoise: {noise_level: 'nan'}\n", "noise.noise_level: must be a finite number"),
    ("name: a\nnoise: {extra_noise_levels: [0.5, -.inf]}\n", r"extra_noise_levels\[1\]: must be a finite"),
    ("name: a\nseeds: [0, 1, 1]\n", "seeds: .* repeats a seed"),
    ("name: a\nsplit: {n_val: 0}\n", "split.n_val: must be positive"),
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
])
def test_validation_gaps(tmp_path, text, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ParameterError, match=match):
        load_params(cfg)


def test_missing_label_column_is_named(tmp_path):
    from snrmoe_lib.reporting.session import start_run

    wave, flux, error, mask, params = make_arrays(20, 16)
    with DatasetWriter(tmp_path / "nolabel.h5", 20, wave) as w:
        w.write(flux, error, params.drop(columns=["log_g"]), mask)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata: {path: nolabel.h5}\nsplit: {n_train: 10, n_val: 2, n_test: 4}\n")
    with pytest.raises(DatasetError, match=r"no column\(s\) \['log_g'\].*T_eff"):
        start_run("nb", cfg, tmp_path / "out", progress=False)


# -------------------------------------------------------------------- 5. duplicate shards, grids


def _two_shards(tmp_path, index_text, wave2=None):
    wave, flux, error, mask, params = make_arrays(6, 8)
    for name, w_ in (("a", wave), ("b", wave if wave2 is None else wave2)):
        with DatasetWriter(tmp_path / "d" / name / "dataset.h5", 6, w_) as w:
            w.write(flux, error, params, mask)
    (tmp_path / "d" / "shard_index.txt").write_text(index_text)
    return tmp_path / "d"


def test_shard_listed_twice_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="shard 'a' is listed twice"):
        open_dataset(_two_shards(tmp_path, "a\nb\na\n"))


def test_same_shard_under_two_names_is_refused(tmp_path):
    d = _two_shards(tmp_path, "a\nb\nc\n")
    os.symlink(d / "a", d / "c")
    with pytest.raises(DatasetError, match="'c' is the same file as 'a'"):
        open_dataset(d)


def test_shard_with_other_grid_is_refused_by_name(tmp_path):
    d = _two_shards(tmp_path, "a\nb\n", wave2=np.linspace(6000.0, 7000.0, 8))
    with pytest.raises(DatasetError, match=r"b/dataset.h5: wavelength grid differs"):
        open_dataset(d)


@pytest.mark.parametrize("fault, words", [
    ("shard_twice", "shard 'a' is listed twice"),
    ("no_label", r"no column(s) ['log_g']"),
])
def test_run_refuses_a_bad_dataset_once_before_any_notebook(tmp_path, capsys, fault, words):
    if fault == "shard_twice":
        data = _two_shards(tmp_path, "a\nb\na\n")
    else:
        wave, flux, error, mask, params = make_arrays(20, 16)
        data = tmp_path / "nolabel.h5"
        with DatasetWriter(data, 20, wave) as w:
            w.write(flux, error, params.drop(columns=["log_g"]), mask)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: c\ndata: {{path: {data}}}\nsplit: {{n_train: 6, n_val: 2, n_test: 4}}\n")
    reports = tmp_path / "reports"
    assert cli.main(["run", "--params", str(cfg), "--reports", str(reports)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err  # one line, said once, not once per notebook
    assert not (reports / "c").exists(), "nothing is written for a run that cannot start"


# ------------------------------------------------------------------------------- 11. fingerprint


def test_fingerprint_sees_the_middle_rows(tmp_path):
    path = tmp_path / "f.h5"
    write_dataset(path, n=400, p=16)
    with open_dataset(path) as ds:
        before = dataset_fingerprint(ds)
    sampled = fingerprint_rows(400)
    assert 20 <= len(sampled) <= 66 and sampled[0] == 0 and sampled[-1] == 399
    mid = int(sampled[len(sampled) // 2])
    assert 50 < mid < 350
    with h5py.File(path, "r+") as h5:  # one spectrum in the middle
        h5[FLUX_KEY][mid, 3] += 1.0
    with open_dataset(path) as ds:
        after_flux = dataset_fingerprint(ds)
    assert after_flux != before
    params = pd.read_hdf(path, "dataset/params")
    params.loc[200, "log_g"] += 0.1  # one label in the middle, whether or not its spectrum is sampled
    params.to_hdf(path, key="dataset/params", mode="a", format="table")
    with open_dataset(path) as ds:
        assert dataset_fingerprint(ds) not in (before, after_flux)


# --------------------------------------------------------------------------- 7. orphan temp files


@pytest.mark.parametrize("first_sharded", [False, True])
def test_overwrite_switching_file_and_folder(tmp_path, first_sharded):
    wave, flux, error, mask, params = make_arrays(10, 8)

    def write(sharded):
        w = (ShardedWriter(tmp_path / "ds", 10, wave, shard_size=4, overwrite=True) if sharded
             else DatasetWriter(tmp_path / "ds", 10, wave, overwrite=True))
        with w:
            w.write(flux, error, params, mask)

    write(first_sharded)
    write(not first_sharded)
    assert (tmp_path / "ds").is_dir() != first_sharded
    with open_dataset(tmp_path / "ds") as ds:
        np.testing.assert_array_equal(ds.load().flux, flux)
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    import snrmoe_lib.data.writers as writers

    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(writers.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(tmp_path / "run.json", "{}")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


_WRITE_AND_WAIT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path[:0] = [{root!r}, {tests!r}]
    from conftest import make_arrays
    from snrmoe_lib.data.writers import DatasetWriter, install_termination_handler
    assert install_termination_handler()
    wave, flux, error, mask, params = make_arrays(10, 8)
    with DatasetWriter(Path({path!r}), 10, wave) as w:
        w.write(flux[:5], error[:5], params.iloc[:5], mask[:5])
        print("writing", flush=True)
        time.sleep(60)
""")


def test_sigterm_during_a_write_leaves_nothing(tmp_path):
    script = _WRITE_AND_WAIT.format(root=str(ROOT), tests=str(ROOT / "tests"), path=str(tmp_path / "x.h5"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert any(".tmp-" in p.name for p in tmp_path.iterdir()) and (tmp_path / ".x.h5.lock").exists()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == [], "a terminated write left files behind"


# ------------------------------------------------------------------------------- 10. concurrency


def test_second_writer_of_a_path_waits_then_refuses(tmp_path):
    wave, flux, error, mask, params = make_arrays(10, 8)
    target = tmp_path / "x.h5"
    first = DatasetWriter(target, 10, wave)
    outcome = {}

    def second():
        try:
            DatasetWriter(target, 10, wave)
        except FileExistsError as exc:
            outcome["error"] = str(exc)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "the second writer must wait for the first, not race it"
    first.write(flux, error, params, mask)
    first.close()
    t.join(10)
    assert "exists; refusing to overwrite" in outcome["error"]
    assert leftovers(tmp_path) == []


def test_simulate_that_loses_the_race_keeps_the_winners_dataset(tmp_path, monkeypatch, capsys):
    import snrmoe_lib.orchestration.cli as cli_mod

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ndata:\n  path: m.h5\n  mock: {mode: random, n: 40, seed: 1, chunk_size: 20}\n"
                   "split: {n_train: 20, n_val: 8, n_test: 12}\n")
    real = cli_mod.simulate

    def lose_the_race(spec, out, overwrite=False, progress=True):
        real(spec, out, overwrite=overwrite, progress=False)  # the other simulate holds the lock and writes
        return real(spec, out, overwrite=overwrite, progress=False)  # this one then finds the file: refused

    monkeypatch.setattr(cli_mod, "simulate", lose_the_race)
    assert cli.main(["simulate", "--params", str(cfg)]) == 0
    captured = capsys.readouterr()
    assert "exists and matches the configuration; keeping it" in captured.out, captured
    assert captured.err == "" and leftovers(tmp_path) == []


def test_lock_held_by_a_live_process_times_out_with_a_message(tmp_path):
    with FileLock(tmp_path / "x.h5"):
        with pytest.raises(FileExistsError, match=r"being written by pid \d+ .*lock file"):
            FileLock(tmp_path / "x.h5", timeout=0.3).acquire()
    assert leftovers(tmp_path) == []


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".x.h5.lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    wave, flux, error, mask, params = make_arrays(4, 8)
    with DatasetWriter(tmp_path / "x.h5", 4, wave) as w:
        w.write(flux, error, params, mask)
    assert leftovers(tmp_path) == [] and (tmp_path / "x.h5").is_file()


def test_concurrent_figure_saves_use_their_own_temp_names(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snrmoe_lib.reporting.plots.common import save_figure

    figs = [plt.subplots()[0] for _ in range(4)]
    errors = []

    def save(fig):
        try:
            for _ in range(3):
                save_figure(fig, tmp_path, "same_name")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(f,)) for f in figs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [p.name for p in tmp_path.iterdir()] == ["same_name.png"]


# ------------------------------------------------------------------ 6. one line per operational error


@pytest.mark.parametrize("err, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/x.json"), "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system", "/r"), "read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/r"), "permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/r/run.json"), "a folder is in the way"),
    (RuntimeError("something odd"), "something odd (RuntimeError"),
])
def test_cli_operational_errors_are_one_line(tmp_path, monkeypatch, capsys, err, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\n")

    def fail(*a, **k):
        raise err

    monkeypatch.setattr(cli, "run_config", fail)
    code = cli.main(["run", "--params", str(cfg)])
    out = capsys.readouterr().err.strip()
    assert code == 2 and words in out and "Traceback" not in out and len(out.splitlines()) == 1


def test_cli_unreachable_scheduler_is_one_line(tmp_path, capsys):
    import dask

    # distributed must be imported before the override: dask.config.set removes on exit every key it
    # created, so a first import inside the block would lose all of distributed's defaults for the
    # rest of this process (later LocalClusters then fail with KeyError 'distributed').
    pytest.importorskip("distributed")

    cfgs = []
    for n in ("a", "b"):
        cfgs.append(tmp_path / f"{n}.yaml")
        cfgs[-1].write_text(f"name: {n}\n")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = cli.main(["run", "--params", *map(str, cfgs), "--scheduler", "tcp://127.0.0.1:9",
                         "--reports", str(tmp_path / "r")])
    out = capsys.readouterr()
    err = out.err.strip()
    assert code == 2 and "Dask scheduler" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_reports_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "reports").write_text("not a folder")
    assert cli.main(["hub", "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip()
    assert "reports folder not found" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------- 9. the Hub and malformed files


def test_hub_skips_malformed_results_with_a_warning_row(tmp_path):
    r = tmp_path / "reports"
    p = params_from_dict({"name": "c"})
    write_results(r / "c", "q1_snr_headroom", p, dataset={"fingerprint": "f"}, metrics={"x": metric(1.0)})
    bad = {"truncated.json": '{"schema": 1, "notebook"', "list.json": "[1, 2]", "null.json": "null",
           "verdict.json": json.dumps({"schema": 1, "notebook": "q9", "config": "c", "params": {}, "seeds": [0],
                                       "dataset": {}, "code_version": "v", "created": "t", "metrics": {},
                                       "verdicts": ["oops"], "figures": []}),
           "types.json": json.dumps({"schema": 1, "notebook": 3, "config": ["c"], "params": {}, "seeds": 5,
                                     "dataset": "d", "code_version": "v", "created": None, "metrics": [],
                                     "verdicts": [], "figures": "f"})}
    for name, text in bad.items():
        (r / "c" / name).write_text(text)
    (r / "other").mkdir()
    (r / "other" / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    html_path, md_path = build_hub(r)
    data = collect(r)
    assert [run.notebook for run in data.runs] == ["q1_snr_headroom"]
    assert sorted(p for p, _ in data.unreadable) == sorted([f"c/{n}" for n in bad] + ["other/binary.json"])
    page = html_path.read_text()
    runs_table = page.split('id="runs"')[1].split("</table>")[0]
    for name in bad:
        assert name in runs_table
    assert runs_table.count("⚠ not read") == len(bad) + 1 and 'class="warn"' in runs_table
    assert "⚠ not read" in md_path.read_text()


# ------------------------------------------------- 2. interrupted runs and 4. a failed upstream Q2


def _nb(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_path = "default.yaml"\noutput_dir = "out"',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


_WRITES = '''from snrmoe_lib import load_params, write_results, metric
write_results(output_dir, "{name}", load_params(params_path), dataset={{}}, metrics={{"m": metric(1)}})'''


@pytest.fixture
def project(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _nb(nbdir / "a_first.ipynb", _WRITES.format(name="a_first"))
    _nb(nbdir / "b_slow.ipynb", "import time, pathlib\npathlib.Path(output_dir, 'b_started').touch()\n"
                                "time.sleep(float(__import__('os').environ.get('B_SLEEP', '0')))\n"
                                + _WRITES.format(name="b_slow"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: t\n")
    return tmp_path, nbdir, cfg


def test_report_shows_the_injected_parameters(project):
    root, nbdir, cfg = project
    run_config(cfg, notebooks=["a_first"], notebooks_dir=nbdir, reports_dir=root / "reports", progress=False)
    page = (root / "reports" / "t" / "a_first.html").read_text()
    assert "cfg.yaml" in page, "the parameters the run used must be on the page"
    assert "default.yaml" not in page, "the notebook's default parameters cell must not be shown"


_RUN_AND_WAIT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import snrmoe_lib.orchestration.runner as runner
    from pathlib import Path
    runner.project_root = lambda: Path({tmp!r})
    from snrmoe_lib.orchestration.cli import main
    sys.exit(main(["run", "--params", {cfg!r}, "--reports", {reports!r}]))
""")


def test_sigterm_marks_the_run_interrupted_and_hides_the_old_outputs(project):
    root, nbdir, cfg = project
    reports = root / "reports"
    run_config(cfg, notebooks_dir=nbdir, reports_dir=reports, progress=False)  # a complete, earlier run
    out = reports / "t"
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    assert (out / "b_slow.json").exists() and (out / "b_slow.html").exists()
    (out / "b_started").unlink()
    env = dict(os.environ, B_SLEEP="120", PYTHONPATH=str(ROOT), JUPYTER_PREFER_ENV_PATH="1")
    script = _RUN_AND_WAIT.format(root=str(ROOT), tmp=str(root), cfg=str(cfg), reports=str(reports))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "b_started").exists():  # notebook b is executing now
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    status = json.loads((out / "run.json").read_text())
    assert status["state"] == "running"
    assert [n["status"] for n in status["notebooks"]] == ["ok", "running"]  # written as it starts
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # the last line is ours (the dying kernel may log its own shutdown noise before it)
    assert proc.returncode == 128 + signal.SIGTERM and err.strip().splitlines()[-1].startswith("snrmoe run: interrupted")
    assert "Terminated:" not in err and "snrmoe_lib/orchestration" not in err
    status = json.loads((out / "run.json").read_text())
    assert status["state"] == "interrupted"
    assert [n["status"] for n in status["notebooks"]] == ["ok", "interrupted"]
    assert not (out / "b_slow.json").exists() and not (out / "b_slow.html").exists(), "old outputs look current"
    assert leftovers(root) == []
    build_hub(reports)
    row = [r for r in (reports / "hub.md").read_text().splitlines() if "b_slow" in r][0]
    assert "❌ interrupted" in row and "b_slow.html" not in row


def test_killed_run_shows_as_interrupted_on_the_hub(tmp_path):
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "reports" / "t"
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({
        "config": "t", "state": "running", "host": socket.gethostname(), "pid": gone.pid, "started": "2030-01-01",
        "notebooks": [{"notebook": "a", "status": "ok"}, {"notebook": "b", "status": "running"},
                      {"notebook": "c", "status": "pending"}]}))
    (out / "b.html").write_text("<html>an old page</html>")
    statuses = {s["notebook"]: s["status"] for s in collect(tmp_path / "reports").statuses}
    assert statuses == {"a": "ok", "b": "interrupted", "c": "not_run"}
    build_hub(tmp_path / "reports")
    row = [r for r in (tmp_path / "reports" / "hub.md").read_text().splitlines() if "| b" in r][0]
    assert "❌ interrupted" in row and "killed" in row


def test_failed_notebook_keeps_no_visible_old_results(project):
    root, nbdir, cfg = project
    reports = root / "reports"
    run_config(cfg, notebooks=["a_first"], notebooks_dir=nbdir, reports_dir=reports, progress=False)
    _nb(nbdir / "a_first.ipynb", "raise RuntimeError('broken now')")
    st = run_config(cfg, notebooks=["a_first"], notebooks_dir=nbdir, reports_dir=reports, progress=False)
    out = reports / "t"
    assert st[0].status == "failed" and not (out / "a_first.json").exists()
    assert (out / ".a_first.previous.json").exists()  # kept aside, hidden, never read
    assert collect(reports).runs == []


def test_q3_refuses_the_choice_of_a_failed_q2(tmp_path):
    from snrmoe_lib.analyses.q2 import chosen_representation
    from snrmoe_lib.analyses.q3 import resolve_representation

    out = tmp_path / "reports" / "c"
    p = params_from_dict({"name": "c"})
    write_results(out, "q2_error_leakage", p, dataset={}, metrics={}, extra={"chosen_representation": "S2"})
    assert chosen_representation(out, "c") == "S2"  # no runner status: the results speak
    (out / "run.json").write_text(json.dumps({"config": "c", "state": "finished", "notebooks": [
        {"notebook": "q2_error_leakage", "status": "failed", "error": "ValueError: the audit broke"}]}))
    with pytest.raises(RuntimeError, match="did not finish ok .*failed: ValueError: the audit broke"):
        chosen_representation(out, "c")
    with pytest.raises(RuntimeError, match="Q3 needs Q2's choice .*gate.use_q2_choice: false"):
        resolve_representation(p, out)
    off = params_from_dict({"name": "c", "gate": {"use_q2_choice": False}})
    assert resolve_representation(off, out)[0] == off.gate.representation


def test_run_of_some_notebooks_keeps_the_others_status(project):
    root, nbdir, cfg = project
    reports = root / "reports"
    _nb(nbdir / "a_first.ipynb", "raise RuntimeError('broken')")
    run_config(cfg, notebooks_dir=nbdir, reports_dir=reports, progress=False)
    run_config(cfg, notebooks=["b_slow"], notebooks_dir=nbdir, reports_dir=reports, progress=False)
    status = {n["notebook"]: n["status"] for n in json.loads((reports / "t" / "run.json").read_text())["notebooks"]}
    assert status == {"a_first": "failed", "b_slow": "ok"}


# --------------------------------------------------------------------- 12. fresh-machine commands


def _make_n(target: str, path_dirs: list[str]) -> str:
    env = dict(os.environ, PATH=os.pathsep.join(path_dirs))
    env.pop("SNRMOE_CHROMIUM", None)
    # a stamp newer than pyproject.toml, so the dry run plans no install (whatever the checkout's mtimes)
    stamp = Path(tempfile.mkdtemp()) / "installed"
    stamp.touch()
    out = subprocess.run(["make", "-n", target, f"STAMP={stamp}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_test_without_chromium_skips_the_browser_test_and_says_so(tmp_path):
    import shutil

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("make", "sh", "test"):
        os.symlink(shutil.which(tool), bin_ / tool)
    text = _make_n("test", [str(bin_)])
    assert "no chromium found" in text and "SKIPPED" in text
    assert "SNRMOE_ALLOW_NO_BROWSER=1" in text and "pytest" in text


def test_make_lab_allows_root():
    assert "--allow-root" in _make_n("lab", os.environ["PATH"].split(os.pathsep))
